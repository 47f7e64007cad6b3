//! Encoder + two-label classification head, laid out like Hugging Face's
//! `*ForSequenceClassification` (`bert.…` + `bert.pooler.dense` + `classifier`; `roberta.…` +
//! `classifier.dense`/`classifier.out_proj`; `distilbert.…` + `pre_classifier` + `classifier`),
//! so a base checkpoint loads by name and an exported model opens in `transformers` as well.

use std::path::Path;

use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::checkpoint::{Checkpoint, CheckpointError, LoadReport};
use crate::config::{Config, Family};
use crate::encoder::{Encoder, Mode};
use crate::layers::Linear;

/// Labels of the head: index 1 is "needs support".
pub const NUM_LABELS: i64 = 2;

#[derive(Debug)]
enum Head {
    /// BERT: tanh(pooler(h[CLS])) → dropout → classifier.
    Pooler { pooler: Linear, classifier: Linear },
    /// RoBERTa: dropout → tanh(dense(h[<s>])) → dropout → out_proj.
    Roberta { dense: Linear, out_proj: Linear },
    /// DistilBERT: relu(pre_classifier(h[CLS])) → dropout → classifier.
    Distil {
        pre_classifier: Linear,
        classifier: Linear,
    },
}

#[derive(Debug)]
pub struct SequenceClassifier {
    pub config: Config,
    pub encoder: Encoder,
    head: Head,
}

impl SequenceClassifier {
    pub fn new(vs: &VarStore, c: &Config) -> SequenceClassifier {
        let root = vs.root();
        let enc = &root / c.family.prefix();
        let h = c.hidden_size;
        let head = match c.family {
            Family::Bert => Head::Pooler {
                pooler: Linear::new(&(&enc / "pooler" / "dense"), h, h),
                classifier: Linear::new(&(&root / "classifier"), h, NUM_LABELS),
            },
            Family::Roberta => Head::Roberta {
                dense: Linear::new(&(&root / "classifier" / "dense"), h, h),
                out_proj: Linear::new(&(&root / "classifier" / "out_proj"), h, NUM_LABELS),
            },
            Family::Distilbert => Head::Distil {
                pre_classifier: Linear::new(&(&root / "pre_classifier"), h, h),
                classifier: Linear::new(&(&root / "classifier"), h, NUM_LABELS),
            },
        };
        SequenceClassifier {
            config: c.clone(),
            encoder: Encoder::new(&enc, c),
            head,
        }
    }

    /// Builds the model on `device` and fills it from `ck` (see [`Checkpoint::copy_into`]).
    pub fn from_checkpoint(
        ck: &Checkpoint,
        device: Device,
        strict: bool,
    ) -> Result<(VarStore, SequenceClassifier, LoadReport), CheckpointError> {
        let mut vs = VarStore::new(device);
        let model = SequenceClassifier::new(&vs, &ck.config);
        let report = ck.copy_into(&mut vs, ck.config.family.prefix(), strict)?;
        Ok((vs, model, report))
    }

    /// Opens a checkpoint folder and loads it (see [`SequenceClassifier::from_checkpoint`]).
    pub fn load(
        dir: &Path,
        device: Device,
        strict: bool,
    ) -> Result<(VarStore, SequenceClassifier, LoadReport), CheckpointError> {
        Self::from_checkpoint(&Checkpoint::open(dir)?, device, strict)
    }

    /// Logits `[batch, 2]` (f32) for `ids`/`mask` `[batch, seq]` (`mask` `None`: no padding).
    pub fn forward(&self, ids: &Tensor, mask: Option<&Tensor>, mode: Mode) -> Tensor {
        let hidden = self.encoder.forward(ids, mask, mode);
        let first = hidden.select(1, 0);
        let p = mode.precision;
        let drop = self.config.classifier_dropout;
        let logits = match &self.head {
            Head::Pooler { pooler, classifier } => {
                let pooled = pooler.forward(&first, p).tanh().dropout(drop, mode.train);
                classifier.forward(&pooled, p)
            }
            Head::Roberta { dense, out_proj } => {
                let x = first.dropout(drop, mode.train);
                let x = dense.forward(&x, p).tanh().dropout(drop, mode.train);
                out_proj.forward(&x, p)
            }
            Head::Distil {
                pre_classifier,
                classifier,
            } => {
                let x = pre_classifier
                    .forward(&first, p)
                    .relu()
                    .dropout(drop, mode.train);
                classifier.forward(&x, p)
            }
        };
        logits.to_kind(Kind::Float)
    }
}
