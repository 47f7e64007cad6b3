//! What each stage does, through the typed function its own command calls.

use std::path::Path;

use anyhow::{Context, Result, bail};
use flagship_core::config::Area;
use flagship_core::config::MODEL_DIR;
use flagship_store::mirror::files_under;
use flagship_store::storage::Location;

use super::{EVALUATE_FILES, MODEL_PREFIX, Run, Stage, TEXT_COLUMN, batch_files, parquet_rows};
use crate::engine::Engine;
use crate::ingest_cmd::RunArgs;
use crate::model_cmd::{PredictArgs, TrainArgs};
use crate::stages_cmd::{self, Common};

impl Run<'_> {
    /// Runs one stage; returns its summary lines.
    pub(super) fn run(&self, stage: Stage) -> Result<Vec<String>> {
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
                if totals.stopped_by == flagship_core::Stop::Signal {
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
        for name in ["train.parquet", "val.parquet", "test.parquet"] {
            self.rt.block_on(self.splits.pull(name))?;
        }
        let (train, val) = (
            self.splits.dir.join("train.parquet"),
            self.splits.dir.join("val.parquet"),
        );
        let mut args = TrainArgs::new(train, val, tmp.clone());
        args.text_column = TEXT_COLUMN.into();
        // A teacher (model.teacher_labels) may have seen the test days' posts: none of them
        // enters training as an unlabelled post (the validation days never do).
        args.holdout = vec![self.splits.dir.join("test.parquet")];
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
        args.scoring.text_column = TEXT_COLUMN.into();
        crate::model_cmd::predict(args)
    }
}
