//! Encoder + two-label classification head, laid out like Hugging Face's
//! `*ForSequenceClassification` (`bert.…` + `bert.pooler.dense` + `classifier`; `roberta.…` +
//! `classifier.dense`/`classifier.out_proj`, and so `mpnet.…`; `distilbert.…` + `pre_classifier` +
//! `classifier`),
//! so a base checkpoint loads by name and an exported model opens in `transformers` as well.

use std::path::Path;

use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::checkpoint::{Checkpoint, CheckpointError, LoadReport};
use crate::config::{Config, Family};
use crate::dropout::dropout;
use crate::encoder::{Encoder, Mode, Pass};
use crate::layers::Linear;
pub use flagship_core::config::Pooling;

/// Labels of a two-label head: index 1 is "needs support".
pub const NUM_LABELS: i64 = 2;

/// The head's shape: how tokens are pooled and how many labels it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadSpec {
    /// [`Pooling::Cls`] or [`Pooling::Mean`] (resolved: never `Auto`).
    pub pooling: Pooling,
    /// 2 (index 1 needs support) or 3 (negative, neutral, positive).
    pub classes: i64,
}

impl HeadSpec {
    /// `transformers`' layout: first token through the family's head, two labels.
    pub const CLS2: HeadSpec = HeadSpec {
        pooling: Pooling::Cls,
        classes: NUM_LABELS,
    };

    /// P(needs support) from logits `[batch, classes]`: softmax index 1 with two labels;
    /// P(negative) + P(neutral) = 1 − P(positive) with three.
    pub fn need_probability(&self, logits: &Tensor) -> Tensor {
        let p = logits.softmax(-1, Kind::Float);
        if self.classes == 3 {
            p.select(1, 2).neg() + 1.0
        } else {
            p.select(1, 1)
        }
    }

    /// [`HeadSpec::need_probability`] of one row's logits, on the CPU.
    pub fn need_of(&self, logits: &[f32]) -> f32 {
        let top = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f32> = logits.iter().map(|l| (l - top).exp()).collect();
        let sum: f32 = e.iter().sum();
        if self.classes == 3 {
            1.0 - e[2] / sum
        } else {
            e[1] / sum
        }
    }
}

#[derive(Debug)]
enum Head {
    /// BERT: tanh(pooler(h[CLS])) → dropout → classifier.
    Pooler { pooler: Linear, classifier: Linear },
    /// RoBERTa and MPNet: dropout → tanh(dense(h[<s>])) → dropout → out_proj.
    Roberta { dense: Linear, out_proj: Linear },
    /// DistilBERT: relu(pre_classifier(h[CLS])) → dropout → classifier.
    Distil {
        pre_classifier: Linear,
        classifier: Linear,
    },
    /// Any family: mean of the real tokens → dropout → classifier (sentence-transformers'
    /// pooling, what all-MiniLM-L6-v2 was trained with).
    Mean { classifier: Linear },
}

#[derive(Debug)]
pub struct SequenceClassifier {
    pub config: Config,
    pub encoder: Encoder,
    pub spec: HeadSpec,
    head: Head,
}

impl SequenceClassifier {
    pub fn new(vs: &VarStore, c: &Config, spec: HeadSpec) -> SequenceClassifier {
        let root = vs.root();
        let enc = &root / c.family.prefix();
        let h = c.hidden_size;
        let k = spec.classes;
        let head = match (spec.pooling, c.family) {
            (Pooling::Mean, _) => Head::Mean {
                classifier: Linear::new(&(&root / "classifier"), h, k),
            },
            (_, Family::Bert) => Head::Pooler {
                pooler: Linear::new(&(&enc / "pooler" / "dense"), h, h),
                classifier: Linear::new(&(&root / "classifier"), h, k),
            },
            (_, Family::Roberta | Family::Mpnet) => Head::Roberta {
                dense: Linear::new(&(&root / "classifier" / "dense"), h, h),
                out_proj: Linear::new(&(&root / "classifier" / "out_proj"), h, k),
            },
            (_, Family::Distilbert) => Head::Distil {
                pre_classifier: Linear::new(&(&root / "pre_classifier"), h, h),
                classifier: Linear::new(&(&root / "classifier"), h, k),
            },
        };
        SequenceClassifier {
            config: c.clone(),
            encoder: Encoder::new(&enc, c),
            spec,
            head,
        }
    }

    /// Builds the model on `device` and fills it from `ck` (see [`Checkpoint::copy_into`]).
    pub fn from_checkpoint(
        ck: &Checkpoint,
        spec: HeadSpec,
        device: Device,
        strict: bool,
    ) -> Result<(VarStore, SequenceClassifier, LoadReport), CheckpointError> {
        let mut vs = VarStore::new(device);
        let model = SequenceClassifier::new(&vs, &ck.config, spec);
        let report = ck.copy_into(&mut vs, ck.config.family.prefix(), strict)?;
        Ok((vs, model, report))
    }

    /// Opens a checkpoint folder and loads it (see [`SequenceClassifier::from_checkpoint`]).
    pub fn load(
        dir: &Path,
        spec: HeadSpec,
        device: Device,
        strict: bool,
    ) -> Result<(VarStore, SequenceClassifier, LoadReport), CheckpointError> {
        Self::from_checkpoint(&Checkpoint::open(dir)?, spec, device, strict)
    }

    /// Logits `[batch, classes]` (f32) for `ids`/`mask` `[batch, seq]` (`mask` `None`: no
    /// padding).
    pub fn forward(&self, ids: &Tensor, mask: Option<&Tensor>, mode: Mode) -> Tensor {
        self.forward_words(&self.encoder.embeddings.lookup(ids), ids, mask, mode)
    }

    /// Logits `[rows, classes]` (f32) of a scoring pass ([`Pass`]: packed or padded, every
    /// layer read, no dropout): `ids`/`mask` `[rows, seq]` as collated, `lens` each row's
    /// real tokens.
    pub fn scored(
        &self,
        ids: &Tensor,
        mask: Option<Tensor>,
        lens: &[usize],
        packed: bool,
        mode: Mode,
    ) -> Tensor {
        let pass = Pass::new(&self.encoder, ids, mask, lens, packed, mode)
            .through_all(&self.encoder, mode);
        let (xs, mask) = pass.view();
        self.head_forward(&xs, mask.as_ref(), mode)
    }

    /// [`SequenceClassifier::forward`] from given word embeddings `[batch, seq, hidden]` (see
    /// [`Encoder::forward_words`]).
    pub fn forward_words(
        &self,
        words: &Tensor,
        ids: &Tensor,
        mask: Option<&Tensor>,
        mode: Mode,
    ) -> Tensor {
        let hidden = self.encoder.forward_words(words, ids, mask, mode);
        self.head_forward(&hidden, mask, mode)
    }

    /// The head reads the mean of the token vectors (what [`crate::explain::pooled_scores`]
    /// needs).
    pub fn mean_pooled(&self) -> bool {
        matches!(self.head, Head::Mean { .. })
    }

    /// Each token's logits through a mean-pooled head, `[batch, seq, classes]` f32: the head
    /// is linear, so a text's logits are the mean of its real tokens' (what
    /// [`crate::explain::scored_scores`] reads). `None`: the head reads the first token.
    pub fn token_logits(&self, hidden: &Tensor, mode: Mode) -> Option<Tensor> {
        match &self.head {
            Head::Mean { classifier } => Some(
                classifier
                    .forward(hidden, mode.precision)
                    .to_kind(Kind::Float),
            ),
            _ => None,
        }
    }

    /// The head on the encoder's last hidden state `[batch, seq, hidden]`.
    pub fn head_forward(&self, hidden: &Tensor, mask: Option<&Tensor>, mode: Mode) -> Tensor {
        let first = hidden.select(1, 0);
        let p = mode.precision;
        let drop = self.config.classifier_dropout;
        let logits = match &self.head {
            Head::Pooler { pooler, classifier } => {
                let pooled = dropout(&pooler.forward(&first, p).tanh(), drop, mode.train);
                classifier.forward(&pooled, p)
            }
            Head::Roberta { dense, out_proj } => {
                let x = dropout(&first, drop, mode.train);
                let x = dropout(&dense.forward(&x, p).tanh(), drop, mode.train);
                out_proj.forward(&x, p)
            }
            Head::Distil {
                pre_classifier,
                classifier,
            } => {
                let x = dropout(&pre_classifier.forward(&first, p).relu(), drop, mode.train);
                classifier.forward(&x, p)
            }
            Head::Mean { classifier } => {
                classifier.forward(&dropout(&mean_pool(hidden, mask), drop, mode.train), p)
            }
        };
        logits.to_kind(Kind::Float)
    }
}

/// The mean of the real tokens' vectors: `hidden` `[batch, seq, hidden]`, `mask` `[batch, seq]`
/// (1 on real tokens; `None`: nothing padded) → `[batch, hidden]` f32.
pub fn mean_pool(hidden: &Tensor, mask: Option<&Tensor>) -> Tensor {
    match mask {
        Some(m) => {
            let m = m.to_kind(Kind::Float).unsqueeze(-1);
            (hidden * &m).sum_dim_intlist(1, false, Kind::Float)
                / m.sum_dim_intlist(1, false, Kind::Float).clamp_min(1e-9)
        }
        None => hidden.mean_dim(1, false, Kind::Float),
    }
}
