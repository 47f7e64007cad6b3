//! Running the `flagship` binary from the integration tests.
#![allow(dead_code)] // each test file uses its own subset

use std::path::Path;
use std::process::{Command, Output};

use flagship_testkit::{fixture, workspace_root};

fn run(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flagship"))
        .env("RUST_BACKTRACE", "0")
        .env("FLAGSHIP_VENV", workspace_root().join(".venv"))
        .envs(env.iter().copied())
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

/// `flagship --config CONFIG ARGS…` with extra environment; its stdout, after it succeeded.
pub fn flagship_env(config: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = run(config, args, env);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "flagship {args:?}\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

pub fn flagship(config: &Path, args: &[&str]) -> String {
    flagship_env(config, args, &[])
}

/// The same, expected to fail: its stderr.
pub fn flagship_fails(config: &Path, args: &[&str]) -> String {
    let out = run(config, args, &[]);
    assert!(!out.status.success(), "flagship {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The record batches of every Parquet file directly in `dir` (a stage's output folder).
pub fn parquet_batches(dir: &Path) -> Vec<arrow::array::RecordBatch> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|p| {
            flagship_store::records::from_parquet(std::fs::read(p).unwrap().into())
                .unwrap()
                .1
        })
        .collect()
}

/// The posts of every Parquet file directly in `dir`.
pub fn posts_in(dir: &Path) -> Vec<flagship_core::Post> {
    parquet_batches(dir)
        .iter()
        .flat_map(|b| flagship_store::records::from_batch(b).unwrap())
        .collect()
}

/// A linear model trained on TweetEval (seconds).
pub fn linear_model(dir: &Path, cfg: &Path) -> String {
    for (file, n, out) in [
        ("tweeteval-sentiment/val.jsonl", 800, "train.csv"),
        ("tweeteval-sentiment/test_pool.jsonl", 300, "val.csv"),
    ] {
        let mut w = csv::Writer::from_path(dir.join(out)).unwrap();
        w.write_record(["id", "text", "label"]).unwrap();
        for l in std::fs::read_to_string(fixture(file))
            .unwrap()
            .lines()
            .take(n)
        {
            let r: serde_json::Value = serde_json::from_str(l).unwrap();
            w.write_record([
                r["id"].as_str().unwrap(),
                r["text"].as_str().unwrap(),
                &r["label"].to_string(),
            ])
            .unwrap();
        }
        w.flush().unwrap();
    }
    let model = dir.join("model").display().to_string();
    flagship(
        cfg,
        &[
            "train",
            "--model-kind",
            "linear",
            "--train",
            &dir.join("train.csv").display().to_string(),
            "--val",
            &dir.join("val.csv").display().to_string(),
            "--out",
            &model,
        ],
    );
    model
}
