//! When a stage can be skipped: the key of its inputs (the settings it reads and its input
//! files' contents) and the hash of its outputs, as `pipeline.json` records them.

use anyhow::{Context, Result};
use flagship_core::config::Area;
use flagship_store::manifest::Fingerprint;

use super::state::State;
use super::{EVALUATE_FILES, MODEL_PREFIX, Run, Stage, json};

impl Run<'_> {
    /// The key of a stage: its name, the settings it reads, and its inputs' contents.
    pub(super) async fn inputs(&self, stage: Stage, st: &mut State) -> Result<String> {
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
                    let db = c.desk_database();
                    f.add(json(
                        &flagship_desk::DeskStore::open_existing(&db)?
                            .labels(c.split.desk_bulk_labels)?,
                    ));
                }
                self.add_area(st, &mut f, Area::Processed).await?;
            }
            Stage::Train => {
                f.add(json(&c.model)).add(json(&c.pipeline.max_steps));
                // test.parquet: the leak guard keeps its texts out of a distilled run.
                for name in ["train.parquet", "val.parquet", "test.parquet"] {
                    self.add(&self.splits, st, &mut f, name).await?;
                }
                // A teacher's soft labels are an input by content, not by their path.
                if let Some(p) = &c.model.teacher_labels {
                    f.add(st.files.sha256(&c.base_dir.join(p))?);
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
    pub(super) async fn outputs(&self, stage: Stage, st: &mut State) -> Result<String> {
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
}
