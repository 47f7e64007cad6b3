//! `flagship`: the one binary that composes the stage crates — what `cargo xtask` forwards to
//! and what a server's systemd unit runs. Each command parses its flags and calls one typed
//! function; `pipeline` calls those functions, never another command's arguments. Progress
//! and logging live here; the work lives in the library crates.
//!
//! Cargo features: `model` (default; train, predict, watch, the desk's live loop, pipeline,
//! check-model — libtorch), `ballista` (`--engine ballista://…`) and `aws` (`flagship aws …`).
//! `--no-default-features` is the streaming host's binary, without libtorch (its desk serves a
//! database or follows a watch's file: `--no-live`, `--attach`).
//!
//! Logs go to stderr through `tracing`, coloured only on a terminal and never with `NO_COLOR`
//! set, so a log file or a pipe holds plain text.

mod config_cmd;
mod desk_cmd;
#[cfg(feature = "model")]
mod distill_cmd;
mod engine;
mod evaluate_cmd;
mod ingest_cmd;
mod inspect;
#[cfg(feature = "model")]
mod model_cmd;
mod monitor_cmd;
#[cfg(feature = "model")]
mod pipeline;
mod shared;
mod stages_cmd;
#[cfg(feature = "model")]
mod watch;

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "flagship",
    version,
    about = "Flags the social-media posts about a space mission that need a reply from its support team."
)]
struct Cli {
    /// Config file (flagship.toml); defaults apply to every key it leaves out.
    #[arg(long, global = true, env = "FLAGSHIP_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every stage in order — ingest (replay), combine, filter, textproc, split, train,
    /// evaluate, monitor — skipping unchanged ones (no config: the bundled demo).
    #[cfg(feature = "model")]
    Pipeline(pipeline::Args),
    /// Stream posts (X API v2 filtered stream, Bluesky, Mastodon, or a replay) into Firehose
    /// or its S3 layout.
    #[command(subcommand)]
    Ingest(ingest_cmd::IngestCmd),
    /// Create, check or delete the bucket, log group, role and Firehose stream ingest uses;
    /// `aws host …`: the mission's streaming host (an EC2 instance running ingest).
    Aws(ingest_cmd::AwsArgs),
    /// Read raw record files (JSONL: X API v2 payloads, Bluesky / Mastodon events) into the
    /// raw schema: counts, Parquet, quarantine.
    Inspect(inspect::Args),
    /// Gather the raw Firehose objects of each hour into one Parquet file (dedup, quarantine).
    Combine(stages_cmd::CombineArgs),
    /// Keep the combined posts about the mission (the profile's term lists), with counts per reason.
    Filter(stages_cmd::Common),
    /// Clean the text and derive features (DataFusion plan; local or Ballista).
    Textproc(stages_cmd::Common),
    /// Chronological train / validation / test splits joined with the labels file.
    Split(stages_cmd::SplitArgs),
    /// Live triage: stream (X, Bluesky, Mastodon, or a replay), filter, clean, classify,
    /// append flagged posts.
    #[cfg(feature = "model")]
    Watch(watch::Args),
    /// The triage desk: a web page of live flagged posts with one-key decisions (SQLite),
    /// decisions exported as labels.
    Desk(desk_cmd::Args),
    /// Print, check or explain the configuration.
    #[command(subcommand)]
    Config(config_cmd::Cmd),
    /// Fine-tune the transformer (or train the linear baseline) and write a model folder.
    #[cfg(feature = "model")]
    Train(model_cmd::TrainArgs),
    /// Score a JSONL/CSV/Parquet file's `text` column with a model folder.
    #[cfg(feature = "model")]
    Predict(model_cmd::PredictArgs),
    /// Fit a trained model's early exits anew: the layer a post may stop reading at once the
    /// full model's decision is sure (`train` fits them for every new model).
    #[cfg(feature = "model")]
    Exits(model_cmd::ExitsArgs),
    /// Why a model would flag each text (its words), and the deletion test of how faithful
    /// those words are.
    #[cfg(feature = "model")]
    Explain(model_cmd::ExplainArgs),
    /// A teacher model's soft labels (its logits) for labelled and unlabelled posts, with
    /// their manifest: what `train --teacher-labels` distils into a student.
    #[cfg(feature = "model")]
    TeacherLabels(distill_cmd::Args),
    /// Metrics of a labelled predictions file: report.json and report.md (F2, minutes wasted
    /// and missed against the naive baseline, the verdict).
    Evaluate(evaluate_cmd::Args),
    /// Drift of a batch of predictions against the model's reference profile (monitor.json/md).
    Monitor(monitor_cmd::Args),
    /// Open a base checkpoint through libtorch and check it (default: the set-up MiniLM).
    #[cfg(feature = "model")]
    CheckModel {
        /// Checkpoint folder (config.json, model.safetensors, tokenizer.json).
        #[arg(long)]
        base: Option<PathBuf>,
        /// A `transformers` reference of the checkpoint (`scripts/model_reference.py
        /// --checkpoint`): its token ids and last hidden state must equal ours within 1e-4.
        #[arg(long)]
        reference: Option<PathBuf>,
    },
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(colour(std::io::stderr().is_terminal()))
        .init();
    let cli = Cli::parse();
    #[cfg(feature = "model")]
    if matches!(cli.command, Command::Watch(_) | Command::Desk(_)) {
        // SAFETY: before any thread of this process starts (no runtime, no libtorch yet).
        unsafe { shared::serving_environment() };
    }
    let config = load_config(cli.config.as_deref())?;
    match cli.command {
        #[cfg(feature = "model")]
        Command::Pipeline(args) => pipeline::run(&config, cli.config.is_some(), args),
        Command::Ingest(cmd) => ingest_cmd::ingest(&config, cmd),
        Command::Aws(args) => ingest_cmd::aws_cmd(&config, cli.config.as_deref(), args),
        Command::Inspect(args) => inspect::run(&config, args),
        Command::Combine(args) => stages_cmd::combine(&config, args).map(drop),
        Command::Filter(args) => stages_cmd::filter(&config, args).map(drop),
        Command::Textproc(args) => stages_cmd::textproc(&config, args),
        Command::Split(args) => stages_cmd::split(&config, args),
        #[cfg(feature = "model")]
        Command::Watch(args) => watch::run(&config, args).map(drop),
        Command::Desk(args) => desk_cmd::run(&config, args),
        Command::Config(cmd) => config_cmd::run(&config, cmd),
        #[cfg(feature = "model")]
        Command::Train(args) => model_cmd::train(&config, args).map(drop),
        #[cfg(feature = "model")]
        Command::Predict(args) => model_cmd::predict(args),
        #[cfg(feature = "model")]
        Command::Exits(args) => model_cmd::exits(&config, args),
        #[cfg(feature = "model")]
        Command::Explain(args) => model_cmd::explain(args),
        #[cfg(feature = "model")]
        Command::TeacherLabels(args) => distill_cmd::run(args),
        Command::Evaluate(args) => evaluate_cmd::run(&config, args).map(drop),
        Command::Monitor(args) => monitor_cmd::run(&config, args).map(drop),
        #[cfg(feature = "model")]
        Command::CheckModel { base, reference } => {
            let ck = check_model(&config, base)?;
            match reference {
                Some(r) => model_cmd::parity(&ck, &r),
                None => Ok(()),
            }
        }
    }
}

/// Colour codes in logs: only on a terminal, and never when `NO_COLOR` is set (no-color.org).
fn colour(terminal: bool) -> bool {
    terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn load_config(path: Option<&std::path::Path>) -> Result<flagship_core::Config> {
    Ok(match path {
        Some(p) => flagship_core::Config::load(p)?,
        None => flagship_core::Config::default(),
    })
}

/// Opens the base checkpoint and prints what libtorch sees.
#[cfg(feature = "model")]
pub fn check_model(
    config: &flagship_core::Config,
    base: Option<PathBuf>,
) -> Result<flagship_model::Checkpoint> {
    let dir = match base.or_else(|| config.model.base.as_ref().map(|b| config.base_dir.join(b))) {
        Some(d) => d,
        None => flagship_model::Checkpoint::default_base()?,
    };
    let ck = flagship_model::Checkpoint::open(&dir)?;
    // Every encoder tensor by name and shape, as fine-tuning will load them.
    flagship_model::SequenceClassifier::from_checkpoint(
        &ck,
        flagship_model::sequence::HeadSpec::CLS2,
        tch::Device::Cpu,
        false,
    )?;
    println!(
        "base model {}: {} ({} layers, {} wide), {:.1} M parameters, device {:?}",
        dir.display(),
        ck.config.model_type,
        ck.config.num_hidden_layers,
        ck.config.hidden_size,
        ck.num_parameters() as f64 / 1e6,
        flagship_model::device()
    );
    Ok(ck)
}
