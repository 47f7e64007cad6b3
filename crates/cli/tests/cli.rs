//! The `flagship` binary end to end: `inspect` writes real Parquet and a quarantine file,
//! `check-model` opens the real MiniLM; a bad config fails with the key named; logs into a
//! pipe carry no colour codes.

use std::process::Command;

use flagship_testkit::{fixture, workspace_root};

fn flagship() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flagship"));
    c.env("RUST_BACKTRACE", "0");
    c
}

#[test]
fn inspect_writes_parquet_and_quarantine_and_the_model_opens() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let mut files: Vec<_> = std::fs::read_dir(fixture("twitter-v2"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    let run = flagship()
        .arg("inspect")
        .args(&files)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.contains("527 tweets (521 with their author joined)"),
        "{stdout}"
    );
    // Logs off a terminal are plain text: the quarantine's warning, with no colour codes.
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("WARN") && stderr.contains("quarantined"),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\x1b'),
        "colour codes in a piped log: {stderr:?}"
    );
    let model = flagship()
        .current_dir(dir.path())
        .env("FLAGSHIP_VENV", workspace_root().join(".venv"))
        .arg("check-model")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&model.stdout);
    assert!(said.contains("22.7 M parameters"), "{said}");

    let bytes = std::fs::read(out.join("raw.parquet")).unwrap();
    let (_, batches) = flagship_store::records::from_parquet(bytes.into()).unwrap();
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 527);
    let q = std::fs::read_to_string(out.join("quarantine.jsonl")).unwrap();
    let bad: serde_json::Value = serde_json::from_str(q.lines().next().unwrap()).unwrap();
    assert_eq!(bad["source"], "streaming_output_with_error.jsonl");
    assert_eq!(bad["line"], 8);
}

#[test]
fn bad_config_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("flagship.toml");
    std::fs::write(&cfg, "[business]\nreading_wpm = 135\ntyping_wpn = 40\n").unwrap();
    let run = flagship()
        .arg("--config")
        .arg(&cfg)
        .args(["config", "check"])
        .output()
        .unwrap();
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("key `business.typing_wpn`: unknown field `typing_wpn`"),
        "{err}"
    );

    std::fs::write(&cfg, "[split]\ntest_size = 300\n").unwrap();
    let run = flagship()
        .arg("--config")
        .arg(&cfg)
        .args(["config", "show"])
        .output()
        .unwrap();
    assert!(run.status.success());
    let shown = String::from_utf8_lossy(&run.stdout);
    assert!(
        shown.contains("test_size = 300") && shown.contains("val_size = 600"),
        "{shown}"
    );
}
