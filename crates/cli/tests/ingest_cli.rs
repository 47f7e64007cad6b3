//! `flagship ingest run` end to end: a replay of the real payloads into the local Firehose
//! layout, combined back to the same 527 tweets; and SIGTERM mid-stream drains, flushes,
//! prints the totals and exits 0.

use std::process::{Command, Stdio};
use std::time::Duration;

use flagship_testkit::fixture;

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

/// Firehose down for the whole run (the fake answers 503), 9,600 demo tweets replayed, then
/// SIGTERM: the queue drains for `--drain-timeout`, everything left is spilled, the totals
/// line is printed, and every received tweet is in the spill file — well within the unit's
/// TimeoutStopSec.
#[cfg(unix)]
#[test]
fn sigterm_during_a_firehose_outage_spills_everything_and_reports() {
    use flagship_ingest::testing::FakeFirehose;
    let fake = FakeFirehose::start(vec![]);
    fake.down_for(Duration::from_secs(3600));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let spill = dir.path().join("spill.jsonl");
    let child = ingest_to_firehose(&cfg, &fake, &spill)
        .args(["--drain-timeout", "3s"])
        .spawn()
        .unwrap();
    // Let it read, fill its queue and start failing, then stop it.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while fake.calls() < 2 {
        assert!(std::time::Instant::now() < deadline, "no call within 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let stopped = std::time::Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    let took = stopped.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(took < Duration::from_secs(30), "stopped in {took:?}");
    assert!(stdout.contains("stopped by signal"), "{stdout}");
    let totals = stdout
        .lines()
        .find(|l| l.contains("tweets received"))
        .unwrap_or_else(|| panic!("no totals line: {stdout}"));
    let number = |after: &str| -> u64 {
        totals
            .split(after)
            .next()
            .and_then(|s| s.rsplit([' ', '(']).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{after:?} in {totals}"))
    };
    let received = number(" tweets received");
    assert_eq!(number(" sent in"), 0, "{totals}");
    assert_eq!(number(" lost"), 0, "{totals}");
    assert_eq!(number(" spilled"), received, "{totals}");
    let lines = std::fs::read_to_string(&spill).unwrap().lines().count() as u64;
    assert_eq!(lines, received, "{totals}");
    assert!(received > 0, "{totals}");
    println!("{totals} — stopped in {took:?}");
}

/// SIGKILL mid-run, then a restart of the same replay: what the first run delivered comes
/// again (a killed process cannot say what it had sent). Firehose writes each run's records
/// under its own arrival hour; combine keeps every id once — 0 lost, 0 duplicated downstream.
#[cfg(unix)]
#[test]
fn sigkill_then_restart_loses_nothing_and_combine_keeps_each_id_once() {
    use chrono::TimeZone;
    use flagship_ingest::testing::FakeFirehose;
    let fake = FakeFirehose::start(vec![]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let spill = dir.path().join("spill.jsonl");
    let ingest = || {
        let mut c = ingest_to_firehose(&cfg, &fake, &spill);
        c.args(["--buffer-interval", "1s"]);
        c
    };
    let mut child = ingest().args(["--speed", "20000"]).spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while fake.accepted().is_empty() {
        assert!(std::time::Instant::now() < deadline, "nothing sent in 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let killed = Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    child.wait().unwrap();
    let first = fake.accepted().len();
    let out = ingest().output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("0 lost"), "{stdout}");
    let accepted = fake.accepted();
    // Firehose's S3 layout: each run's records under the hour they arrived in.
    let raw = dir.path().join("raw");
    for (n, (hour, records)) in [(1, &accepted[..first]), (2, &accepted[first..])]
        .into_iter()
        .enumerate()
    {
        let at = chrono::Utc
            .with_ymd_and_hms(2026, 11, 30, hour, 0, 0)
            .unwrap();
        let key = flagship_core::layout::object_key("", "flagship", at, &n.to_string());
        let path = raw.join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let text: Vec<u8> = records
            .iter()
            .flat_map(|r| {
                let mut r = r.clone();
                if !r.ends_with(b"\n") {
                    r.push(b'\n');
                }
                r
            })
            .collect();
        std::fs::write(path, text).unwrap();
    }
    let stdout = flagship(&cfg, &["combine"]);
    let rows: Vec<String> = common::posts_in(&dir.path().join("combined"))
        .into_iter()
        .map(|t| t.id)
        .collect();
    let unique: std::collections::HashSet<_> = rows.iter().collect();
    println!(
        "SIGKILL after {first} records delivered; restart delivered {}; combine: {stdout}",
        accepted.len() - first
    );
    assert_eq!(rows.len(), unique.len(), "duplicated downstream");
    assert_eq!(rows.len(), 9600, "{stdout}");
    assert!(
        stdout.contains(&format!("{first} of them first seen in an earlier hour")),
        "{stdout}"
    );
}

/// Every unit in `deploy/` (ingest, watch, desk, the pipeline's service and timer) passes
/// `systemd-analyze verify` (where systemd is installed), and each service is hardened.
#[test]
fn the_systemd_units_verify() {
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-analyze is missing (apt-get install systemd)"
        );
        return;
    };
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let deploy = flagship_testkit::workspace_root().join("deploy");
    let mut units = Vec::new();
    for entry in std::fs::read_dir(&deploy).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.ends_with(".service") || name.ends_with(".timer")) {
            continue;
        }
        let unit = std::fs::read_to_string(&path).unwrap();
        if name.ends_with(".service") {
            for key in [
                "User=flagship",
                "StateDirectory=flagship",
                "NoNewPrivileges=true",
                "ProtectSystem=strict",
                "ProtectHome=true",
                "PrivateTmp=true",
                "PrivateDevices=true",
                "ProtectKernelLogs=true",
                "ProtectClock=true",
                "RestrictNamespaces=true",
                "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
                "SystemCallFilter=@system-service",
                "CapabilityBoundingSet=",
                "UMask=0077",
                "StateDirectoryMode=0750",
            ] {
                assert!(unit.lines().any(|l| l == key), "{name}: no `{key}`");
            }
            // A model unit finds libtorch through the file install-libtorch.sh writes.
            if unit.contains(" watch ") || unit.contains(" desk ") || unit.contains(" pipeline") {
                assert!(
                    unit.lines()
                        .any(|l| l == "EnvironmentFile=/etc/flagship/libtorch.env"),
                    "{name}: no libtorch.env"
                );
            }
            // Secrets come from the environment files, never from the unit itself.
            assert!(
                !unit
                    .lines()
                    .filter(|l| !l.starts_with('#'))
                    .any(|l| l.contains("TOKEN=") || l.contains("SECRET")),
                "{name}: a secret in the unit"
            );
        }
        // The units name the installed binary; verify them against this build instead.
        let unit = unit.replace("/usr/local/bin/flagship", env!("CARGO_BIN_EXE_flagship"));
        let target = dir.path().join(&name);
        std::fs::write(&target, unit).unwrap();
        units.push((name, target));
    }
    units.sort();
    let names: Vec<&str> = units.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "flagship-desk.service",
            "flagship-ingest.service",
            "flagship-pipeline.service",
            "flagship-pipeline.timer",
            "flagship-watch.service",
        ]
    );
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(units.iter().map(|(_, p)| p))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("systemd-analyze verify: {text}");
    let own: Vec<&str> = text
        .lines()
        .filter(|l| names.iter().any(|n| l.contains(n)))
        .collect();
    assert!(own.is_empty() && out.status.success(), "{text}");
    // Each service's exposure as `systemd-analyze security` rates it: ingest takes every
    // key; the libtorch units cannot take MemoryDenyWriteExecute (oneDNN's JIT).
    for (name, path) in units.iter().filter(|(n, _)| n.ends_with(".service")) {
        let goal = if name == "flagship-ingest.service" {
            2.0
        } else {
            3.0
        };
        let exposure = security_exposure(path);
        println!("systemd-analyze security {name}: {exposure} (goal <= {goal})");
        assert!(exposure <= goal, "{name}: exposure {exposure} > {goal}");
    }
}

/// The overall exposure level `systemd-analyze security --offline=true` gives a unit file.
fn security_exposure(unit: &std::path::Path) -> f64 {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(unit)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure level for {}:\n{text}", unit.display()));
    let number = line.rsplit(':').next().unwrap().split_whitespace().next();
    number
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"))
}

/// `flagship ingest run` of the 9,600 demo tweets into the fake Firehose at `fake`, records
/// it would not take spilled to `spill`; output piped.
fn ingest_to_firehose(
    cfg: &std::path::Path,
    fake: &flagship_ingest::testing::FakeFirehose,
    spill: &std::path::Path,
) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flagship"));
    c.env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .arg("--config")
        .arg(cfg)
        .args([
            "ingest",
            "run",
            "--sink",
            "firehose",
            "--region",
            "us-east-1",
        ])
        .args(["--endpoint-url", &fake.endpoint()])
        .arg("--spill")
        .arg(spill)
        .arg("--replay")
        .arg(fixture("demo/stream.jsonl.gz"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// The objects a sink wrote under `dir` (its temporary files, dot-named, left out).
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    flagship_store::mirror::files_under(dir)
        .unwrap()
        .into_iter()
        .map(|f| dir.join(f))
        .collect()
}
