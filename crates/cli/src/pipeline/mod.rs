//! `flagship pipeline`: every stage in order — ingest (a replay) → combine → filter → textproc
//! → split → train → evaluate → monitor — over the config's locations (no config: the bundled
//! demo, `fixtures/demo/flagship.toml`).
//!
//! Each stage is keyed by a hash of its inputs (file contents, or S3 ETags) and of the settings
//! it reads. When a stage finishes, its key and a hash of its outputs go to
//! `<reports>/pipeline.json`; a later run skips a stage whose key and outputs are unchanged, so
//! a second run takes seconds and an interrupted run resumes at the stage it was in (combine,
//! filter and textproc also resume hour by hour through their own manifests). `--from STAGE`
//! re-runs that stage and goes on from it, `--to STAGE` stops after it, `--force` re-runs all.
//!
//! Every location may be a path or `s3://`. The model stages work on files: where splits,
//! models or reports are on S3, a stage pulls what it reads into a local mirror (the user's
//! cache folder) and pushes what it wrote back (`flagship_store::mirror`).
//!
//! Each stage is the typed function its own command calls (`stages_cmd::filter`,
//! `model_cmd::train`, …); the pipeline never builds another command's arguments.
//!
//! - this module: the stages' order, the run loop and its resolved places ([`Run`]);
//! - [`keys`]: when a stage can be skipped — each stage's input key and output hash;
//! - [`stages`]: what each stage does, through the commands' typed functions;
//! - [`state`]: `pipeline.json` (finished stages) and the lock that keeps runs apart.

mod keys;
mod stages;
mod state;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use chrono::Utc;
use flagship_core::config::{Area, Config};
use flagship_store::manifest::Fingerprint;
use flagship_store::mirror::Mirror;
use flagship_store::storage::Store;
use serde::{Deserialize, Serialize};

use crate::engine::Engine;
use crate::stages_cmd;

use self::state::{Done, LOCK_FILE, Lock, STATE_FILE, State};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Ingest,
    Combine,
    Filter,
    Textproc,
    Split,
    Train,
    Evaluate,
    Monitor,
}

impl Stage {
    pub const ALL: [Stage; 8] = [
        Stage::Ingest,
        Stage::Combine,
        Stage::Filter,
        Stage::Textproc,
        Stage::Split,
        Stage::Train,
        Stage::Evaluate,
        Stage::Monitor,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Ingest => "ingest",
            Stage::Combine => "combine",
            Stage::Filter => "filter",
            Stage::Textproc => "textproc",
            Stage::Split => "split",
            Stage::Train => "train",
            Stage::Evaluate => "evaluate",
            Stage::Monitor => "monitor",
        }
    }
}

#[derive(clap::Args)]
pub struct Args {
    /// The config run when no --config is given: the bundled demo.
    #[arg(long, default_value = "fixtures/demo/flagship.toml")]
    pub demo: PathBuf,
    /// Start here: this stage re-runs even if unchanged; earlier stages are left as they are.
    #[arg(long, value_enum)]
    pub from: Option<Stage>,
    /// Stop after this stage.
    #[arg(long, value_enum)]
    pub to: Option<Stage>,
    /// Re-run every selected stage, changed or not.
    #[arg(long)]
    pub force: bool,
    /// Where filter and textproc run: `local`, `ballista://HOST:PORT`, `ballista://standalone`.
    #[arg(long, default_value = "local")]
    pub engine: Engine,
    /// S3 endpoint (moto, MinIO) for the `s3://` locations; overrides `storage.s3.endpoint_url`.
    #[arg(long)]
    pub endpoint_url: Option<String>,
}

/// The column the model reads: textproc's cleaned text (the live loop's too).
pub use flagship_live::TEXT_COLUMN;

/// Opens a storage area as local files.
fn mirror(config: &Config, area: Area) -> Result<Mirror> {
    Ok(Mirror::open(&config.location(area)?, &config.storage.s3)?)
}

fn parquet_rows(path: &Path) -> Result<i64> {
    use parquet::file::reader::FileReader;
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let r = parquet::file::reader::SerializedFileReader::new(f)
        .with_context(|| format!("{}: not a Parquet file", path.display()))?;
    Ok(r.metadata().file_metadata().num_rows())
}

/// The monitoring batches split wrote (`batch-0002.parquet`, …), in order.
fn batch_files(splits: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = match std::fs::read_dir(splits) {
        Ok(d) => d
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("batch-") && n.ends_with(".parquet"))
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", splits.display())),
    };
    v.sort();
    Ok(v)
}

/// The resolved places and settings of one pipeline run.
struct Run<'a> {
    config: &'a Config,
    engine: Engine,
    splits: Mirror,
    models: Mirror,
    reports: Mirror,
    /// `models.dir/need-support`.
    model: PathBuf,
    rt: tokio::runtime::Runtime,
}

impl Run<'_> {
    /// A data stage's whole location, into a stage key.
    async fn add_area(&self, st: &mut State, f: &mut Fingerprint, area: Area) -> Result<()> {
        Ok(mirror(self.config, area)?
            .digest(&mut st.files, f, "")
            .await?)
    }

    /// The files of `m` under `prefix`, into a stage key.
    async fn add(
        &self,
        m: &Mirror,
        st: &mut State,
        f: &mut Fingerprint,
        prefix: &str,
    ) -> Result<()> {
        Ok(m.digest(&mut st.files, f, prefix).await?)
    }

    fn store(&self, area: Area) -> Result<Store> {
        Ok(Store::open(
            &self.config.location(area)?,
            &self.config.storage.s3,
        )?)
    }

    fn replay(&self) -> Option<PathBuf> {
        let r = self.config.pipeline.replay.as_ref()?;
        Some(self.config.base_dir.join(r))
    }

    fn labels(&self) -> Option<PathBuf> {
        let l = self.config.split.labels.as_ref()?;
        Some(self.config.base_dir.join(l))
    }

    fn base_model(&self) -> Result<PathBuf> {
        Ok(match &self.config.model.base {
            Some(b) => self.config.base_dir.join(b),
            None => flagship_model::Checkpoint::default_base()?,
        })
    }
}

/// The model folder's keys in `storage.models`.
const MODEL_PREFIX: &str = "need-support/";

const EVALUATE_FILES: [&str; 5] = [
    "test-predictions.parquet",
    "report.json",
    "report.md",
    "report.html",
    flagship_metrics::html::REPORT_CSS_HREF,
];

/// Settings as JSON, for stage keys.
fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("settings serialize")
}

pub fn run(config: &Config, has_config: bool, args: Args) -> Result<()> {
    let start = Instant::now();
    let config = &run_config(config, has_config, &args)?;
    let models = mirror(config, Area::Models)?;
    let run = Run {
        config,
        engine: args.engine.clone(),
        splits: mirror(config, Area::Splits)?,
        model: models.dir.join(flagship_core::config::MODEL_DIR),
        models,
        reports: mirror(config, Area::Reports)?,
        rt: stages_cmd::runtime()?,
    };
    let from = args.from.unwrap_or(Stage::Ingest);
    let to = args.to.unwrap_or(Stage::Monitor);
    if from > to {
        bail!("--from {} comes after --to {}", from.name(), to.name());
    }
    println!(
        "flagship pipeline — mission `{}`{}, stages {} … {}",
        config.mission.name,
        if has_config {
            String::new()
        } else {
            format!(" (demo: {})", args.demo.display())
        },
        from.name(),
        to.name()
    );
    let state_path = run.reports.dir.join(STATE_FILE);
    let _lock = Lock::take(&run.reports.dir.join(LOCK_FILE))?;
    run.rt.block_on(run.reports.pull(STATE_FILE))?;
    let mut state = State::load(&state_path)?;
    let n = Stage::ALL.len();
    for (i, &stage) in Stage::ALL.iter().enumerate() {
        if stage < from || stage > to {
            continue;
        }
        let tag = format!("[{}/{n}] {}", i + 1, stage.name());
        let forced = args.force || args.from == Some(stage);
        run.stage(stage, &tag, forced, &mut state, &state_path)?;
    }
    // Content hashes of files this run did not look at are forgotten.
    state.files.prune();
    state.save(&state_path)?;
    println!(
        "pipeline finished in {:.1} s (state: {})",
        start.elapsed().as_secs_f64(),
        state_path.display()
    );
    if to >= Stage::Evaluate
        && let Some(done) = state.stages.get(&Stage::Evaluate)
    {
        run.print_report(done);
    }
    Ok(())
}

/// The config a run works on: the user's, or the demo's when none was given; `--endpoint-url`
/// over its S3 endpoint.
fn run_config(config: &Config, has_config: bool, args: &Args) -> Result<Config> {
    let mut config = if has_config {
        config.clone()
    } else {
        Config::load(&args.demo).with_context(|| {
            format!(
                "the demo config {} (run from the repository root, or pass --config)",
                args.demo.display()
            )
        })?
    };
    if let Some(url) = &args.endpoint_url {
        config.storage.s3.endpoint_url = Some(url.clone());
    }
    Ok(config)
}

impl Run<'_> {
    /// One stage: skipped when its inputs' key and its outputs are unchanged (and it is not
    /// `forced`), else run and recorded in `pipeline.json`.
    fn stage(
        &self,
        stage: Stage,
        tag: &str,
        forced: bool,
        state: &mut State,
        state_path: &Path,
    ) -> Result<()> {
        let rt = &self.rt;
        if stage == Stage::Ingest && self.replay().is_none() {
            println!(
                "{tag}: no pipeline.replay — storage.raw is fed by `flagship ingest run`; nothing to do"
            );
            return Ok(());
        }
        let t = Instant::now();
        let inputs = rt.block_on(self.inputs(stage, state))?;
        if !forced && let Some(done) = state.stages.get(&stage).cloned() {
            let outputs = rt.block_on(self.outputs(stage, state))?;
            if done.inputs == inputs && done.outputs == outputs {
                println!(
                    "{tag}: unchanged since {}, skipped ({:.1} s)",
                    done.finished_at.format("%Y-%m-%d %H:%M:%S UTC"),
                    t.elapsed().as_secs_f64()
                );
                for l in &done.summary {
                    println!("    {l}");
                }
                return Ok(());
            }
        }
        println!("{tag} …");
        let summary = self
            .run(stage)
            .with_context(|| format!("pipeline stage {}", stage.name()))?;
        let outputs = rt.block_on(self.outputs(stage, state))?;
        let seconds = t.elapsed().as_secs_f64();
        state.stages.insert(
            stage,
            Done {
                inputs,
                outputs,
                finished_at: Utc::now(),
                seconds,
                summary,
            },
        );
        state.save(state_path)?;
        rt.block_on(self.reports.push(STATE_FILE))?;
        println!("{tag}: done in {seconds:.1} s");
        Ok(())
    }

    /// Where the report is, and the evaluation's summary (the verdict).
    fn print_report(&self, done: &Done) {
        println!(
            "report: {}",
            if self.reports.remote {
                self.reports
                    .store
                    .location()
                    .join("report.html")
                    .to_string()
            } else {
                self.reports.dir.join("report.html").display().to_string()
            }
        );
        for l in &done.summary {
            println!("{l}");
        }
    }
}
