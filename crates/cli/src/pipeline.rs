//! `flagship pipeline`: every stage that is built so far, in order, with progress.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use flagship_core::storage::Location;

use crate::inspect;

#[derive(clap::Args)]
pub struct Args {
    /// Recorded X API v2 payloads replayed when no --config is given.
    #[arg(long, default_value = "fixtures/twitter-v2")]
    pub demo_input: PathBuf,
    /// Where the demo run writes its outputs.
    #[arg(long, default_value = "data/demo")]
    pub demo_output: PathBuf,
}

/// Stages still to come, with the issue that builds each.
const NOT_BUILT: &str = "the resumable end-to-end pipeline, the labeled demo and live triage (#7); ingest, combine/filter/textproc/split, train, evaluate and monitor are their own commands";

pub fn run(config: &flagship_core::Config, has_config: bool, args: Args) -> Result<()> {
    if has_config {
        bail!(
            "a configured end-to-end run over storage.raw ({}) is not wired yet; run the stages \
             one by one (`flagship combine`, `filter`, `textproc`, `split`, `train`, …) or \
             run without --config for the bundled demo. Not built: {NOT_BUILT}",
            config.location(flagship_core::config::Area::Raw)?
        );
    }
    let start = Instant::now();
    println!(
        "flagship pipeline — demo (no config: mission `{}`, bundled payloads)",
        config.mission.name
    );

    println!("[1/2] replay: {} → raw schema", args.demo_input.display());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&args.demo_input)
        .with_context(|| format!("demo input {}", args.demo_input.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    let report = inspect::read_files(&files)?;
    inspect::print_report(&report);
    let out = Location::Local(config.base_dir.join(&args.demo_output));
    tokio::runtime::Runtime::new()?.block_on(inspect::write_outputs(
        &report,
        &out,
        &config.storage.s3,
    ))?;

    println!("[2/2] model: base checkpoint through libtorch");
    crate::check_model(config, None)?;

    println!(
        "done in {:.1} s. Not built yet: {NOT_BUILT}.",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
