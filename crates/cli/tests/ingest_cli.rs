//! `flagship ingest run` end to end: a replay of the real payloads into the local Firehose
//! layout, combined back to the same 527 tweets; and SIGTERM mid-stream drains, flushes,
//! prints the totals and exits 0.

use std::process::{Command, Stdio};
use std::time::Duration;

use flagship_core::testing::fixture;

mod common;
use common::flagship;

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let cfg = dir.join("flagship.toml");
    std::fs::write(
        &cfg,
        "[storage]\nraw = \"raw\"\ncombined = \"combined\"\nquarantine = \"quarantine\"\n",
    )
    .unwrap();
    cfg
}

#[test]
fn replay_into_the_local_layout_then_combine() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let replay = fixture("twitter-v2");
    let stdout = flagship(
        &cfg,
        &["ingest", "run", "--replay", replay.to_str().unwrap()],
    );
    assert!(
        stdout.contains("527 tweets received (0 duplicates dropped), 527 sent"),
        "{stdout}"
    );
    assert!(stdout.contains("1 malformed lines quarantined"), "{stdout}");
    assert!(stdout.contains("stopped by end of input"), "{stdout}");
    let stdout = flagship(&cfg, &["combine"]);
    assert!(
        stdout.contains("→ 527 rows (0 duplicate ids dropped"),
        "{stdout}"
    );
    assert!(stdout.contains("0 malformed lines quarantined"), "{stdout}");
}

#[cfg(unix)]
#[test]
fn sigterm_drains_flushes_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    // Paced replay: the 2021 stream capture's 7 tweets span minutes; at 1× it would take long.
    let child = Command::new(env!("CARGO_BIN_EXE_flagship"))
        .arg("--config")
        .arg(&cfg)
        .args([
            "ingest",
            "run",
            "--speed",
            "1",
            "--buffer-interval",
            "1s",
            "--replay",
        ])
        .arg(fixture("twitter-v2/streaming_output_with_error.jsonl"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the sink has written its first object (1 s buffer), however slow the start.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while walk(&dir.path().join("raw")).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no object within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("stopped by signal"), "{stdout}");
    // What was received before the signal was written.
    let received: u64 = stdout
        .split("ingest: ")
        .nth(2)
        .and_then(|s| s.split(" tweets received").next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!((1..7).contains(&received), "{stdout}");
    let written: usize = walk(&dir.path().join("raw"))
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap().lines().count())
        .sum();
    assert_eq!(written as u64, received);
}

fn walk(p: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(p) else {
        return out;
    };
    for e in entries {
        let path = e.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
