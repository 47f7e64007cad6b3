//! xtask: flagship's developer and user commands (`cargo xtask <command>`).
//!
//! It installs (Python venv with libtorch, the base model, moto), sets the environment and
//! forwards to the `flagship` binary. It must build in seconds on a machine with no libtorch,
//! so it has no dependencies and never links `tch`. One module per command; every command and
//! flag is declared in [`COMMANDS`] and the `flags` module.

mod bench;
mod flags;
mod forward;
mod setup;
mod test;

use std::process::ExitCode;

/// Every command, with its one-line help. `cargo xtask --help` prints this table.
pub const COMMANDS: &[(&str, &str)] = &[
    (
        "setup",
        "create .venv with torch 2.11.0, the MiniLM base model and moto; point cargo at libtorch",
    ),
    (
        "test",
        "set up, then cargo fmt --check, clippy -D warnings and every crate's tests",
    ),
    (
        "pipeline",
        "set up, then every stage, unchanged ones skipped (`flagship pipeline`; the bundled demo when no --config)",
    ),
    (
        "ingest",
        "stream tweets (X API v2 or --replay) into Firehose or its S3 layout (`flagship ingest run`)",
    ),
    (
        "aws",
        "create | status | destroy the bucket, log group, role and Firehose stream (`flagship aws`)",
    ),
    (
        "combine",
        "raw Firehose objects → one Parquet file per hour (`flagship combine`; dedup, quarantine, incremental)",
    ),
    (
        "filter",
        "keep the tweets about the mission (`flagship filter`; counts per reason)",
    ),
    (
        "textproc",
        "clean text, derive features (`flagship textproc`; --engine ballista://HOST:PORT)",
    ),
    (
        "split",
        "chronological train/val/test with labels (`flagship split`; `split export-for-labeling`)",
    ),
    (
        "train",
        "set up, then fine-tune a model (`flagship train`; --model-kind linear for the baseline)",
    ),
    (
        "predict",
        "set up, then score a file with a model folder (`flagship predict`)",
    ),
    (
        "evaluate",
        "set up, then write report.json/md/html for a labelled predictions file (`flagship evaluate`)",
    ),
    (
        "monitor",
        "set up, then check a batch of predictions for drift against the model's reference (`flagship monitor`)",
    ),
    (
        "watch",
        "live triage: stream (X API or --replay), filter, clean, classify, append flagged tweets (`flagship watch`)",
    ),
    (
        "bench",
        "flagship vs its peer: `bench train` / `bench predict` (transformers), `bench textproc` (PySpark)",
    ),
    (
        "flagship",
        "set up, then run the flagship binary with the remaining arguments",
    ),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        None | Some("-h" | "--help" | "help") => {
            print!("{}", flags::usage());
            Ok(())
        }
        Some("setup") => flags::Setup::parse(&args[1..]).and_then(|f| setup::run(&f).map(drop)),
        Some("test") => flags::Test::parse(&args[1..]).and_then(|f| test::run(&f)),
        Some("pipeline") => forward::pipeline(&args[1..]),
        Some(sub @ ("ingest" | "aws" | "combine" | "filter" | "textproc" | "split" | "watch")) => {
            forward::sub(sub, &args[1..])
        }
        Some("train") => forward::sub("train", &args[1..]),
        Some("predict") => forward::sub("predict", &args[1..]),
        Some("evaluate") => forward::sub("evaluate", &args[1..]),
        Some("monitor") => forward::sub("monitor", &args[1..]),
        Some("bench") => flags::Bench::parse(&args[1..]).and_then(|f| bench::run(&f)),
        Some("flagship") => forward::flagship(&args[1..]),
        Some(other) => Err(format!("unknown command `{other}`\n\n{}", flags::usage())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}
