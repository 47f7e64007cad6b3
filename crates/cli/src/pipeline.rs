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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use flagship_core::config::{Area, Config};
use flagship_store::fs::write_atomic;
use flagship_store::manifest::Fingerprint;
use flagship_store::mirror::{FileHashes, Mirror, files_under};
use flagship_store::storage::{Location, Store};
use serde::{Deserialize, Serialize};

use crate::engine::Engine;
use crate::ingest_cmd::RunArgs;
use crate::model_cmd::{PredictArgs, TrainArgs};
use crate::stages_cmd::{self, Common};

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

/// The model folder the pipeline trains, under `storage.models`.
pub const MODEL_DIR: &str = "need-support";
/// The record of finished stages, under `storage.reports`.
pub const STATE_FILE: &str = "pipeline.json";
/// The column the model reads: textproc's cleaned text (the live loop's too).
pub use flagship_live::TEXT_COLUMN;

/// A finished stage, as `pipeline.json` records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Done {
    /// SHA-256 over the stage's inputs and settings.
    pub inputs: String,
    /// SHA-256 over what it wrote.
    pub outputs: String,
    pub finished_at: DateTime<Utc>,
    pub seconds: f64,
    pub summary: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub stages: BTreeMap<Stage, Done>,
    /// Content hashes of local files, reused while a file's size and mtime are unchanged.
    #[serde(default)]
    files: FileHashes,
}

impl State {
    pub fn load(path: &Path) -> Result<State> {
        match std::fs::read_to_string(path) {
            Ok(s) => serde_json::from_str(&s)
                .with_context(|| format!("{}: not a pipeline state file", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    fn save(&self, path: &Path) -> Result<()> {
        Ok(write_atomic(
            path,
            (serde_json::to_string_pretty(self)? + "\n").as_bytes(),
        )?)
    }
}

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

    /// The key of a stage: its name, the settings it reads, and its inputs' contents.
    async fn inputs(&self, stage: Stage, st: &mut State) -> Result<String> {
        let c = self.config;
        let mut f = Fingerprint::new(stage.name());
        match stage {
            Stage::Ingest => {
                let p = self.replay().context("no pipeline.replay")?;
                // Names and contents, not where the checkout lives.
                for file in flagship_ingest::source::Replay::files_of(&p)? {
                    let name = file.file_name().unwrap_or_default().to_string_lossy();
                    f.add(name.as_bytes()).add(st.files.sha256(&file)?);
                }
            }
            Stage::Combine => self.add_area(st, &mut f, Area::Raw).await?,
            Stage::Filter => {
                f.add(json(&c.mission.filter));
                self.add_area(st, &mut f, Area::Combined).await?;
            }
            Stage::Textproc => self.add_area(st, &mut f, Area::Filtered).await?,
            Stage::Split => {
                f.add(json(&c.split))
                    .add(json(&c.pipeline.split_until))
                    .add(c.monitor.batch_size.to_string());
                if let Some(l) = self.labels() {
                    f.add(st.files.sha256(&l)?);
                }
                if c.split.desk_labels {
                    // The team's decisions are labels too: a new one reruns split and on.
                    let db = crate::desk_cmd::database(c);
                    f.add(json(
                        &flagship_desk::DeskStore::open_existing(&db)?.labels()?,
                    ));
                }
                self.add_area(st, &mut f, Area::Processed).await?;
            }
            Stage::Train => {
                f.add(json(&c.model)).add(json(&c.pipeline.max_steps));
                for name in ["train.parquet", "val.parquet"] {
                    self.add(&self.splits, st, &mut f, name).await?;
                }
                let base = self.base_model()?;
                for name in ["config.json", "model.safetensors", "tokenizer.json"] {
                    let p = base.join(name);
                    if p.is_file() {
                        f.add(name).add(st.files.sha256(&p)?);
                    }
                }
            }
            Stage::Evaluate => {
                f.add(json(&c.business));
                self.add(&self.models, st, &mut f, MODEL_PREFIX).await?;
                self.add(&self.splits, st, &mut f, "test.parquet").await?;
            }
            Stage::Monitor => {
                f.add(json(&c.business)).add(json(&c.monitor));
                self.add(&self.models, st, &mut f, MODEL_PREFIX).await?;
                self.add(&self.splits, st, &mut f, "batch-").await?;
            }
        }
        Ok(f.finish())
    }

    /// The hash of what a stage wrote.
    async fn outputs(&self, stage: Stage, st: &mut State) -> Result<String> {
        let mut f = Fingerprint::new(stage.name());
        match stage {
            Stage::Ingest => self.add_area(st, &mut f, Area::Raw).await?,
            Stage::Combine => self.add_area(st, &mut f, Area::Combined).await?,
            Stage::Filter => self.add_area(st, &mut f, Area::Filtered).await?,
            Stage::Textproc => self.add_area(st, &mut f, Area::Processed).await?,
            Stage::Split => self.add(&self.splits, st, &mut f, "").await?,
            Stage::Train => self.add(&self.models, st, &mut f, MODEL_PREFIX).await?,
            Stage::Evaluate => {
                for name in EVALUATE_FILES {
                    f.add(name);
                    self.add(&self.reports, st, &mut f, name).await?;
                }
            }
            Stage::Monitor => self.add(&self.reports, st, &mut f, "monitor/").await?,
        }
        Ok(f.finish())
    }

    /// Runs one stage; returns its summary lines.
    fn run(&self, stage: Stage) -> Result<Vec<String>> {
        let config = self.config;
        let common = |engine: &Engine| Common {
            engine: engine.clone(),
            input: None,
            output: None,
        };
        match stage {
            Stage::Ingest => {
                let replay = self.replay().context("no pipeline.replay")?;
                let raw = self.store(Area::Raw)?;
                let rt = &self.rt;
                // What an earlier replay wrote goes first, so a changed recording never mixes
                // with the old one. Only the replay's own objects (named after its stream):
                // anything else in storage.raw — a production stream's — is left alone.
                let stream = format!("flagship-{}", config.mission.name);
                let own = format!("{stream}-1-");
                let old: Vec<_> = rt
                    .block_on(raw.list(""))?
                    .into_iter()
                    .filter(|e| {
                        e.key
                            .rsplit('/')
                            .next()
                            .is_some_and(|n| n.starts_with(&own))
                    })
                    .collect();
                for e in &old {
                    rt.block_on(raw.delete(&e.key))?;
                }
                if !old.is_empty() {
                    println!(
                        "ingest: {} objects of the previous replay removed from {}",
                        old.len(),
                        raw.location()
                    );
                }
                let a = RunArgs::replay_into_raw(replay, &stream);
                let totals = rt.block_on(crate::ingest_cmd::run(config, a))?;
                if totals.stopped_by == "signal" {
                    bail!("ingest interrupted by a signal; run the pipeline again to redo it");
                }
                Ok(vec![format!("ingest: {totals}")])
            }
            Stage::Combine => {
                let r = stages_cmd::combine(
                    config,
                    stages_cmd::CombineArgs {
                        common: common(&Engine::Local),
                        prefix: String::new(),
                        prune_vanished: false,
                    },
                )?;
                Ok(vec![format!("combine: {r}")])
            }
            Stage::Filter => {
                let totals = stages_cmd::filter(config, common(&self.engine))?;
                let kept = totals.get(flagship_filter::KEPT).copied().unwrap_or(0);
                let all: u64 = totals
                    .iter()
                    .filter(|(k, _)| !k.starts_with("unwanted category"))
                    .map(|(_, v)| v)
                    .sum();
                Ok(vec![format!(
                    "filter: {kept} of {all} tweets kept (profile `{}`)",
                    config.mission.name
                )])
            }
            Stage::Textproc => {
                stages_cmd::textproc(config, common(&self.engine))?;
                let rows = self.rows_in(Area::Processed)?;
                Ok(vec![format!("textproc: {rows} rows processed")])
            }
            Stage::Split => self.split(),
            Stage::Train => self.train(),
            Stage::Evaluate => {
                self.rt.block_on(self.splits.pull("test.parquet"))?;
                self.rt.block_on(self.models.pull(MODEL_PREFIX))?;
                let predictions = self.reports.dir.join("test-predictions.parquet");
                self.predict(&self.splits.dir.join("test.parquet"), &predictions)?;
                let verdict = crate::evaluate_cmd::run(
                    config,
                    crate::evaluate_cmd::Args {
                        predictions,
                        out: self.reports.dir.clone(),
                        model: Some(self.model.clone()),
                    },
                )?;
                for name in EVALUATE_FILES {
                    self.rt.block_on(self.reports.push(name))?;
                }
                Ok(verdict)
            }
            Stage::Monitor => {
                self.rt.block_on(self.splits.pull("batch-"))?;
                self.rt.block_on(self.models.pull(MODEL_PREFIX))?;
                let lines = self.monitor()?;
                self.rt.block_on(self.reports.push("monitor/"))?;
                Ok(lines)
            }
        }
    }

    fn monitor(&self) -> Result<Vec<String>> {
        let dir = self.reports.dir.join("monitor");
        let batches = batch_files(&self.splits.dir)?;
        if batches.is_empty() {
            return Ok(vec![
                "monitor: no monitoring batches (set pipeline.split_until to keep later tweets for monitoring)".into(),
            ]);
        }
        let mut lines = Vec::new();
        for b in batches {
            let name = b
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("batch")
                .to_owned();
            let predictions = dir.join(format!("{name}-predictions.parquet"));
            self.predict(&b, &predictions)?;
            let line = crate::monitor_cmd::run(
                self.config,
                crate::monitor_cmd::Args {
                    model: self.model.clone(),
                    predictions,
                    out: dir.join(&name),
                },
            )?;
            lines.push(format!("monitor {name}: {line}"));
        }
        Ok(lines)
    }

    fn rows_in(&self, area: Area) -> Result<i64> {
        let Location::Local(dir) = self.config.location(area)? else {
            return Ok(-1);
        };
        files_under(&dir)?
            .iter()
            .filter(|f| f.ends_with(".parquet"))
            .map(|f| parquet_rows(&dir.join(f)))
            .sum()
    }

    fn split(&self) -> Result<Vec<String>> {
        // Batches are rebuilt from the new split, never mixed with an older one's.
        for e in self.rt.block_on(self.splits.store.list(""))? {
            if e.key.starts_with("batch-") {
                self.rt.block_on(self.splits.store.delete(&e.key))?;
            }
        }
        for b in batch_files(&self.splits.dir)? {
            std::fs::remove_file(&b).with_context(|| format!("cannot remove {}", b.display()))?;
        }
        let common = Common {
            engine: Engine::Local,
            input: None,
            output: None,
        };
        stages_cmd::split(
            self.config,
            stages_cmd::SplitArgs {
                cmd: None,
                common: common.clone(),
                labels: None,
                until: self.config.pipeline.split_until,
            },
        )?;
        if self.config.pipeline.split_until.is_some() {
            stages_cmd::split(
                self.config,
                stages_cmd::SplitArgs {
                    cmd: Some(stages_cmd::SplitCmd::Append {
                        common: common.clone(),
                        labels: None,
                    }),
                    common,
                    labels: None,
                    until: None,
                },
            )?;
        }
        self.rt.block_on(self.splits.pull(""))?;
        let mut line = String::from("split:");
        for name in ["train.parquet", "val.parquet", "test.parquet"] {
            line += &format!(" {name} {}", parquet_rows(&self.splits.dir.join(name))?);
        }
        for b in batch_files(&self.splits.dir)? {
            line += &format!(
                ", {} {}",
                b.file_name().unwrap_or_default().to_string_lossy(),
                parquet_rows(&b)?
            );
        }
        Ok(vec![line + " rows"])
    }

    fn train(&self) -> Result<Vec<String>> {
        let parent = self.model.parent().context("model folder")?;
        let tmp = parent.join(format!(".{MODEL_DIR}.tmp"));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        for name in ["train.parquet", "val.parquet"] {
            self.rt.block_on(self.splits.pull(name))?;
        }
        let (train, val) = (
            self.splits.dir.join("train.parquet"),
            self.splits.dir.join("val.parquet"),
        );
        let mut args = TrainArgs::new(train, val, tmp.clone());
        args.text_column = TEXT_COLUMN.into();
        args.max_steps = self.config.pipeline.max_steps;
        crate::model_cmd::train(self.config, args)?;
        // The new model replaces the old one whole, or not at all.
        flagship_model::classifier::replace_dir(&tmp, &self.model)?;
        self.rt.block_on(self.models.push(MODEL_PREFIX))?;
        let card = flagship_model::classifier::ModelCard::read(&self.model)?;
        let v = &card.validation;
        Ok(vec![format!(
            "train: model {} — validation F2 {:.3} at threshold {:.3}, ROC-AUC {:.3}{}",
            self.model.display(),
            v.tuned.f_beta,
            v.tuned.threshold,
            v.roc_auc,
            card.training
                .as_ref()
                .map(|t| format!(", {} steps in {:.0} s", t.steps, t.seconds))
                .unwrap_or_default()
        )])
    }

    fn predict(&self, input: &Path, output: &Path) -> Result<()> {
        let mut args = PredictArgs::new(self.model.clone(), input.into(), output.into());
        args.text_column = TEXT_COLUMN.into();
        crate::model_cmd::predict(args)
    }
}

/// Held while a pipeline runs on a reports location, so two runs never interleave stages.
const LOCK_FILE: &str = "pipeline.lock";

/// An exclusive OS lock (`flock`) on the lock file, held for the whole run and released by the
/// OS however the process ends; the file holds the holder's process id, for the message.
struct Lock {
    _file: std::fs::File,
}

impl Lock {
    fn take(path: &Path) -> Result<Lock> {
        use std::io::Write;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {
                file.set_len(0)?;
                writeln!(file, "{}", std::process::id())?;
                Ok(Lock { _file: file })
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(path).unwrap_or_default();
                bail!(
                    "another pipeline (pid {}) is running on these locations (lock {}); wait for it or stop it",
                    holder.trim(),
                    path.display()
                )
            }
            Err(std::fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
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
    let config = &config;
    let models = mirror(config, Area::Models)?;
    let run = Run {
        config,
        engine: args.engine.clone(),
        splits: mirror(config, Area::Splits)?,
        model: models.dir.join(MODEL_DIR),
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
    let rt = &run.rt;
    rt.block_on(run.reports.pull(STATE_FILE))?;
    let mut state = State::load(&state_path)?;
    let n = Stage::ALL.len();
    for (i, &stage) in Stage::ALL.iter().enumerate() {
        if stage < from || stage > to {
            continue;
        }
        let tag = format!("[{}/{n}] {}", i + 1, stage.name());
        if stage == Stage::Ingest && run.replay().is_none() {
            println!(
                "{tag}: no pipeline.replay — storage.raw is fed by `flagship ingest run`; nothing to do"
            );
            continue;
        }
        let t = Instant::now();
        let inputs = rt.block_on(run.inputs(stage, &mut state))?;
        let forced = args.force || args.from == Some(stage);
        if !forced && let Some(done) = state.stages.get(&stage).cloned() {
            let outputs = rt.block_on(run.outputs(stage, &mut state))?;
            if done.inputs == inputs && done.outputs == outputs {
                println!(
                    "{tag}: unchanged since {}, skipped ({:.1} s)",
                    done.finished_at.format("%Y-%m-%d %H:%M:%S UTC"),
                    t.elapsed().as_secs_f64()
                );
                for l in &done.summary {
                    println!("    {l}");
                }
                continue;
            }
        }
        println!("{tag} …");
        let summary = run
            .run(stage)
            .with_context(|| format!("pipeline stage {}", stage.name()))?;
        let outputs = rt.block_on(run.outputs(stage, &mut state))?;
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
        state.save(&state_path)?;
        rt.block_on(run.reports.push(STATE_FILE))?;
        println!("{tag}: done in {seconds:.1} s");
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
        println!(
            "report: {}",
            if run.reports.remote {
                run.reports.store.location().join("report.html").to_string()
            } else {
                run.reports.dir.join("report.html").display().to_string()
            }
        );
        for l in &done.summary {
            println!("{l}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pipeline_at_a_time_and_a_dead_ones_lock_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reports").join(LOCK_FILE);
        let held = Lock::take(&path).unwrap();
        let e = Lock::take(&path).err().expect("a second run is refused");
        assert!(
            e.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
        drop(held);
        // The file a finished (or killed) run leaves behind holds no lock: the next run takes it.
        std::fs::write(&path, "4194305\n").unwrap();
        let _again = Lock::take(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().trim(),
            std::process::id().to_string()
        );
    }
}
