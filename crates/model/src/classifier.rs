//! Exported model folders and the [`Classifier`] that serves them.
//!
//! A transformer export is a checkpoint folder `transformers` can open too — `config.json`,
//! `model.safetensors`, `tokenizer.json` — plus `flagship.json` ([`ModelCard`]): threshold,
//! label map, base model, data hashes, validation figures, seed. A linear export has
//! `linear.safetensors` and the same `flagship.json`. Files are written to a temporary folder
//! beside the target and renamed into place, so a crash leaves no half-written model.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::Device;
use tch::nn::VarStore;

use crate::ModelError;
use crate::checkpoint::Checkpoint;
use crate::config::Family;
use crate::layers::Precision;
use crate::linear::LinearModel;
use crate::sequence::SequenceClassifier;
use crate::tokenize::TextEncoder;
use crate::train::{self, EpochRecord, Trained, Validation};
use flagship_core::config::Business;
use flagship_core::operating::{Points, Settings};
use flagship_core::scoring::Choice;

use crate::exit::{Exits, Pace, Reading};
use crate::explain::{self, Why};
use crate::sequence::{HeadSpec, Pooling};

pub const CARD_FORMAT: &str = "flagship-model/1";

pub use flagship_core::config::ModelKind;

/// A file the model was trained from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataRef {
    pub path: String,
    pub sha256: String,
    pub rows: usize,
}

/// How training went (the run's settings and per-epoch history).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingRecord {
    pub seed: u64,
    pub epochs: usize,
    pub best_epoch: usize,
    pub steps: usize,
    pub learning_rate: f64,
    pub batch_size: usize,
    pub weight_decay: f64,
    pub warmup_ratio: f64,
    pub class_weights: bool,
    pub device: String,
    pub seconds: f64,
    /// Training texts cut to `max_length` tokens.
    pub truncated: usize,
    pub history: Vec<EpochRecord>,
    /// The matrix products' arithmetic (`F32`, `Bf16`; absent in older cards).
    #[serde(default)]
    pub precision: Option<String>,
    /// The base's first layers kept, and how many it has (absent: all; older cards).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers: Option<[i64; 2]>,
}

/// `flagship.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub format: String,
    pub kind: ModelKind,
    /// Predict `need_support` when the probability is at least this.
    pub threshold: f64,
    /// Output index → name.
    pub labels: BTreeMap<String, String>,
    /// Annotators' labels (0/1/2) → name; `need_support` = label in `need_support_labels`.
    pub source_labels: BTreeMap<String, String>,
    pub need_support_labels: Vec<u8>,
    pub expected_need_support_rate: f64,
    pub max_length: usize,
    pub family: Option<Family>,
    /// Base checkpoint folder and the SHA-256 of its weights.
    pub base_model: Option<DataRef>,
    pub data: BTreeMap<String, DataRef>,
    pub validation: Validation,
    pub training: Option<TrainingRecord>,
    pub flagship_version: String,
    /// How tokens are pooled (`cls`: the family's head, as `transformers` reads the folder).
    #[serde(default = "cls")]
    pub pooling: Pooling,
    /// Labels of the head: 2 (index 1 needs support) or 3 (negative, neutral, positive).
    #[serde(default = "two")]
    pub classes: u8,
    /// Weight of `linear.safetensors` in the probability average (0: the transformer alone).
    #[serde(default)]
    pub linear_weight: f64,
    /// Every operating rule's threshold on validation; `threshold` is the chosen one's.
    #[serde(default)]
    pub operating: Option<Points>,
    /// A distilled student's teacher, temperature and soft labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distillation: Option<crate::distill::DistillRecord>,
    /// The exits a served post may leave by before the top layer (`exit.safetensors`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_exit: Option<crate::exit::ExitRecord>,
}

fn cls() -> Pooling {
    Pooling::Cls
}

fn two() -> u8 {
    2
}

impl ModelCard {
    fn new(kind: ModelKind, threshold: f64, validation: Validation, rate: f64) -> ModelCard {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        ModelCard {
            format: CARD_FORMAT.into(),
            kind,
            threshold,
            labels: map(&[("0", "does_not_need_support"), ("1", "needs_support")]),
            source_labels: map(&[("0", "negative"), ("1", "neutral"), ("2", "positive")]),
            need_support_labels: vec![0, 1],
            expected_need_support_rate: rate,
            max_length: 0,
            family: None,
            base_model: None,
            data: BTreeMap::new(),
            validation,
            training: None,
            flagship_version: env!("CARGO_PKG_VERSION").into(),
            pooling: Pooling::Cls,
            classes: 2,
            linear_weight: 0.0,
            operating: None,
            distillation: None,
            early_exit: None,
        }
    }

    /// Takes the operating points and works at the chosen one.
    fn operate(&mut self, points: Points) {
        if points.chosen.flagged == 0.0 {
            tracing::warn!(
                rule = points.settings.rule.name(),
                threshold = points.chosen.threshold,
                "the operating point flags no validation post: the model will flag nothing (loosen the rule's bound)"
            );
        }
        self.threshold = points.chosen.threshold;
        self.operating = Some(points);
    }

    fn head(&self) -> HeadSpec {
        HeadSpec {
            pooling: if self.pooling == Pooling::Mean {
                Pooling::Mean
            } else {
                Pooling::Cls
            },
            classes: if self.classes == 3 { 3 } else { 2 },
        }
    }

    pub fn read(dir: &Path) -> Result<ModelCard, ModelError> {
        let path = dir.join("flagship.json");
        let text = std::fs::read_to_string(&path).map_err(|e| ModelError::BadFile {
            path: path.clone(),
            message: format!("{e} (is this a model folder written by `flagship train`?)"),
        })?;
        let card: ModelCard = serde_json::from_str(&text).map_err(|e| ModelError::BadFile {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if card.format != CARD_FORMAT {
            return Err(ModelError::BadFile {
                path,
                message: format!("format `{}`, this build reads `{CARD_FORMAT}`", card.format),
            });
        }
        Ok(card)
    }
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The folder `path` is in (`.` for a bare name).
pub(crate) fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// A hidden sibling of `path` for this process: `.{name}.{tag}-{pid}`.
pub(crate) fn beside(path: &Path, tag: &str) -> std::path::PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    parent_of(path).join(format!(".{name}.{tag}-{}", std::process::id()))
}

/// Writes a folder atomically: `fill` populates a temporary sibling, which then replaces `dir`.
fn write_dir_atomically(
    dir: &Path,
    fill: impl FnOnce(&Path) -> Result<(), ModelError>,
) -> Result<(), ModelError> {
    let parent = parent_of(dir);
    std::fs::create_dir_all(parent).map_err(|e| ModelError::io(parent, e))?;
    let tmp = beside(dir, "tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| ModelError::io(&tmp, e))?;
    if let Err(e) = fill(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    replace_dir(&tmp, dir)
}

/// Moves the finished folder `tmp` onto `dir` (a sibling), replacing what was there: the one
/// place a model folder is swapped in.
pub fn replace_dir(tmp: &Path, dir: &Path) -> Result<(), ModelError> {
    if dir.exists() {
        let old = beside(dir, "old");
        // (A process of the same id killed here before leaves one: renaming onto it fails.)
        let _ = std::fs::remove_dir_all(&old);
        std::fs::rename(dir, &old).map_err(|e| ModelError::io(dir, e))?;
        std::fs::rename(tmp, dir).map_err(|e| ModelError::io(dir, e))?;
        let _ = std::fs::remove_dir_all(&old);
    } else {
        std::fs::rename(tmp, dir).map_err(|e| ModelError::io(dir, e))?;
    }
    Ok(())
}

/// Writes `path` through `fill` on a temporary name beside it, then renames it into place.
fn replace_file(
    path: &Path,
    fill: impl FnOnce(&Path) -> Result<(), ModelError>,
) -> Result<(), ModelError> {
    let tmp = beside(path, "tmp");
    if let Err(e) = fill(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).map_err(|e| ModelError::io(path, e))
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<(), ModelError> {
    let text = serde_json::to_string_pretty(value).expect("serialisable");
    std::fs::write(path, text + "\n").map_err(|e| ModelError::io(path, e))
}

impl Trained {
    /// Writes the model folder; `data` names the training files (path, hash, rows).
    pub fn export(
        &self,
        dir: &Path,
        data: BTreeMap<String, DataRef>,
    ) -> Result<ModelCard, ModelError> {
        let v = &self.validation;
        let mut card = ModelCard::new(
            ModelKind::Transformer,
            v.tuned.threshold,
            v.clone(),
            self.options.expected_need_support_rate,
        );
        card.max_length = self.encoder.max_length();
        card.family = Some(self.model.config.family);
        card.pooling = self.model.spec.pooling;
        card.classes = self.model.spec.classes as u8;
        card.linear_weight = if self.linear.is_some() {
            self.options.linear_weight
        } else {
            0.0
        };
        card.operate(self.operating.clone());
        if self.model.spec.classes == 3 {
            card.labels = card.source_labels.clone();
        }
        let weights = self.base.join("model.safetensors");
        card.base_model = Some(DataRef {
            path: self.base.display().to_string(),
            sha256: sha256_file(&weights).map_err(|e| ModelError::io(&weights, e))?,
            rows: 0,
        });
        card.data = data;
        card.distillation = self.distilled.clone();
        card.early_exit = self.exits.as_ref().map(|f| f.record.clone());
        let o = &self.options;
        card.training = Some(TrainingRecord {
            seed: o.seed,
            epochs: o.epochs,
            best_epoch: self.best_epoch,
            steps: self.steps,
            learning_rate: o.learning_rate,
            batch_size: o.batch_size,
            weight_decay: o.weight_decay,
            warmup_ratio: o.warmup_ratio,
            class_weights: o.class_weights,
            device: format!("{:?}", o.device),
            seconds: self.seconds,
            truncated: self.truncated,
            history: self.history.clone(),
            precision: Some(format!("{:?}", o.precision())),
            layers: o
                .layers
                .map(|_| [self.model.config.num_hidden_layers, self.base_layers]),
        });
        write_dir_atomically(dir, |tmp| {
            write_json(
                &tmp.join("config.json"),
                &self.model.config.classifier_json(self.model.spec.classes),
            )?;
            if let Some(lin) = &self.linear {
                lin.save(tmp)?;
            }
            if let Some(f) = &self.exits {
                f.exits.write(&tmp.join(crate::exit::FILE))?;
            }
            self.vs.save(tmp.join("model.safetensors"))?;
            let tok = self.base.join("tokenizer.json");
            std::fs::copy(&tok, tmp.join("tokenizer.json")).map_err(|e| ModelError::io(&tok, e))?;
            write_json(&tmp.join("flagship.json"), &card)
        })?;
        Ok(card)
    }
}

/// How a model's threshold is chosen on validation, as the transformer's is: the share of
/// posts expected to need support in production (validation is re-weighted to it), the
/// operating rule, and the reading and typing speeds the `minutes` rule counts with.
#[derive(Debug, Clone, Copy)]
pub struct Tuning<'a> {
    pub expected_rate: f64,
    pub operating: Settings,
    pub business: &'a Business,
}

/// Trains the linear baseline and writes its folder (threshold tuned like the transformer's);
/// `data` names the sets it was trained and validated on, for its card.
pub fn train_linear(
    train_set: &[train::Example],
    val: &[train::Example],
    opts: &crate::linear::LinearOptions,
    tuning: Tuning<'_>,
    dir: &Path,
    data: BTreeMap<String, DataRef>,
) -> Result<ModelCard, ModelError> {
    let Tuning {
        expected_rate,
        operating,
        business,
    } = tuning;
    let started = std::time::Instant::now();
    let model = LinearModel::train(train_set, opts)?;
    let texts: Vec<&str> = val.iter().map(|e| e.text.as_str()).collect();
    let labels: Vec<bool> = val.iter().map(|e| e.need_support).collect();
    let probs = model.probabilities(&texts);
    let validation = validation_of(&probs, &labels, expected_rate);
    let mut card = ModelCard::new(
        ModelKind::Linear,
        validation.tuned.threshold,
        validation,
        expected_rate,
    );
    card.operate(train::operating_points(
        &probs,
        &labels,
        &texts,
        expected_rate,
        operating,
        business,
    ));
    card.data = data;
    card.training = Some(TrainingRecord {
        seed: opts.seed,
        epochs: opts.epochs,
        best_epoch: opts.epochs,
        steps: opts.epochs * train_set.len(),
        learning_rate: opts.learning_rate,
        batch_size: 1,
        weight_decay: opts.l2,
        warmup_ratio: 0.0,
        class_weights: false,
        device: "Cpu".into(),
        seconds: started.elapsed().as_secs_f64(),
        truncated: 0,
        history: Vec::new(),
        precision: None,
        layers: None,
    });
    write_dir_atomically(dir, |tmp| {
        model.save(tmp)?;
        write_json(&tmp.join("flagship.json"), &card)
    })?;
    Ok(card)
}

/// Validation figures from probabilities (no loss for models without logits).
pub fn validation_of(probs: &[f32], labels: &[bool], rate: f64) -> Validation {
    use flagship_core::scoring::{roc_auc, score_at, tune};
    let tuned: Choice = tune(probs, labels, Some(rate), 2.0);
    let loss = probs
        .iter()
        .zip(labels)
        .map(|(&p, &y)| {
            let p = (p as f64).clamp(1e-7, 1.0 - 1e-7);
            if y { -p.ln() } else { -(1.0 - p).ln() }
        })
        .sum::<f64>()
        / labels.len().max(1) as f64;
    Validation {
        rows: labels.len(),
        need_support: labels.iter().filter(|&&y| y).count(),
        at_threshold: score_at(probs, labels, tuned.threshold, 2.0),
        tuned,
        f2_at_half: score_at(probs, labels, 0.5, 2.0).f_beta,
        roc_auc: roc_auc(probs, labels),
        loss,
    }
}

struct Transformer {
    _vs: VarStore,
    model: SequenceClassifier,
    encoder: TextEncoder,
    device: Device,
    /// `model.precision`, resolved where a pass runs ([`Transformer::precision`]): loading
    /// never measures bf16 for a model told its arithmetic.
    arithmetic: flagship_core::config::Arithmetic,
    /// The linear half of an ensemble and its weight.
    linear: Option<(LinearModel, f64)>,
    /// The exits a post may leave by before the top layer, and whether they are used.
    exits: Option<Exits>,
    early_exit: bool,
}

impl Transformer {
    /// The arithmetic its passes run in (`auto` resolved once a process, [`Precision::auto`]).
    fn precision(&self) -> Precision {
        Precision::of(self.arithmetic, self.device)
    }

    fn encode(&self, texts: &[&str]) -> Result<Vec<crate::tokenize::Encoded>, ModelError> {
        self.encoder
            .encode(texts)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))
    }

    /// P(needs support) of the transformer alone, and its logits, in input order.
    fn score(
        &self,
        enc: &[crate::tokenize::Encoded],
        batch_size: usize,
    ) -> (Vec<f32>, tch::Tensor) {
        train::probabilities(
            &self.model,
            &self.encoder,
            enc,
            batch_size,
            self.device,
            self.precision(),
        )
    }
}

enum Inner {
    Transformer(Box<Transformer>),
    Linear(LinearModel),
}

/// One prediction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    pub probability: f32,
    pub need_support: bool,
    /// The text was cut to the model's `max_length` tokens.
    pub truncated: bool,
}

/// What [`Classifier::predict_worded`] gives.
#[derive(Debug, Clone)]
pub struct Worded {
    pub predictions: Vec<Prediction>,
    /// Each flagged post's words from the scoring pass (empty for the others).
    pub words: Vec<Vec<Why>>,
    /// How long tokenising took.
    pub tokenise: std::time::Duration,
}

/// A post's units and their scores, where the scoring pass kept its tokens.
type UnitScores = Option<(Vec<explain::Unit>, Vec<f32>)>;

/// Whose words a scoring pass works out ([`Classifier::scored`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Words {
    None,
    /// The posts it flags (what the live loop shows).
    Flagged,
    /// Every post (`explain`, the deletion test).
    Every,
}

/// An explanation in the making ([`Classifier::explanation`], [`Classifier::advance`]): the
/// texts, their units and, for occlusion, every variant and its probability so far.
#[derive(Debug)]
pub struct Explanation {
    texts: Vec<String>,
    k: usize,
    how: explain::Attribution,
    /// Worked out by occlusion (in slices); otherwise in one go.
    occlusion: bool,
    units: Vec<Vec<explain::Unit>>,
    /// Occlusion: each text, then the text without each of its units.
    variants: Vec<String>,
    /// Each text's range in `variants`.
    spans: Vec<std::ops::Range<usize>>,
    /// The probabilities of `variants[..len]`, scored so far.
    probabilities: Vec<f32>,
    /// Each unit's score, once done.
    scores: Option<Vec<Vec<f32>>>,
}

impl Explanation {
    /// Each text's `k` strongest units, once [`Classifier::advance`] said it is done.
    pub fn words(&self) -> Option<Vec<Vec<Why>>> {
        let scores = self.scores.as_ref()?;
        Some(
            self.units
                .iter()
                .zip(scores)
                .map(|(u, s)| explain::top_units(u, s, self.k))
                .collect(),
        )
    }

    /// Texts through the model still to go (occlusion's variants; another attribution: the
    /// texts until done).
    pub fn remaining(&self) -> usize {
        match (&self.scores, self.occlusion) {
            (Some(_), _) => 0,
            (None, true) => self.variants.len() - self.probabilities.len(),
            (None, false) => self.texts.len(),
        }
    }
}

/// A loaded model folder, ready to score texts.
pub struct Classifier {
    pub dir: PathBuf,
    pub card: ModelCard,
    inner: Inner,
    /// Texts per forward pass.
    pub batch_size: usize,
    /// How [`Classifier::explain`] finds a post's words.
    pub attribution: explain::Attribution,
    /// What the served posts read (see [`Classifier::reading`]).
    reading: Reading,
}

impl Classifier {
    /// Loads a folder written by `flagship train` onto [`crate::device`].
    pub fn load(dir: &Path) -> Result<Classifier, ModelError> {
        Self::load_on(dir, crate::device())
    }

    pub fn load_on(dir: &Path, device: Device) -> Result<Classifier, ModelError> {
        let card = ModelCard::read(dir)?;
        let inner = match card.kind {
            ModelKind::Linear => Inner::Linear(LinearModel::load(dir)?),
            ModelKind::Transformer => {
                let ck = Checkpoint::open(dir)?;
                let (mut vs, model, _) =
                    SequenceClassifier::from_checkpoint(&ck, card.head(), device, true)?;
                // Served, never trained: explanations take gradients of the inputs only.
                vs.freeze();
                let encoder = TextEncoder::from_file(
                    &dir.join("tokenizer.json"),
                    card.max_length.max(2),
                    model.config.pad_token_id,
                )?;
                check_fits(dir, &model.config, &encoder)?;
                let exits = match &card.early_exit {
                    Some(r) if (r.threshold - card.threshold).abs() > 1e-9 => {
                        tracing::warn!(
                            model = %dir.display(),
                            exits_at = r.threshold,
                            threshold = card.threshold,
                            "the card's threshold moved since the exits were fitted: every post reads every layer"
                        );
                        None
                    }
                    Some(r) => Some(Exits::load(
                        dir,
                        r,
                        model.encoder.layers.len(),
                        model.config.hidden_size,
                        device,
                    )?),
                    None => None,
                };
                Inner::Transformer(Box::new(Transformer {
                    _vs: vs,
                    model,
                    encoder,
                    device,
                    arithmetic: flagship_core::config::Arithmetic::Auto,
                    linear: if card.linear_weight > 0.0 {
                        Some((LinearModel::load(dir)?, card.linear_weight))
                    } else {
                        None
                    },
                    exits,
                    early_exit: true,
                }))
            }
        };
        Ok(Classifier {
            dir: dir.to_owned(),
            card,
            inner,
            batch_size: train::SCORING_BATCH,
            attribution: explain::Attribution::default(),
            reading: Reading::default(),
        })
    }

    /// Whether posts may leave by the exits the card names (on by default where it names
    /// some; off: every post reads every layer, as the card's validation figures were made).
    pub fn set_early_exit(&mut self, on: bool) {
        if let Inner::Transformer(t) = &mut self.inner {
            t.early_exit = on;
        }
    }

    /// Fits early exits for this model on `train` texts, their margins on `val` texts within
    /// `budgets` (see [`crate::exit`]), serves with them, and writes them into its folder:
    /// `exit.safetensors`, then the card's `early_exit`, each to a temporary name renamed into
    /// place. `None` (and neither file names an exit) when no layer can exit within the
    /// budget. A transformer alone only: an ensemble's or the linear model's decisions are
    /// not the transformer's.
    pub fn fit_exits(
        &mut self,
        train: &[&str],
        val: &[&str],
        budgets: crate::exit::Budgets,
    ) -> Result<Option<crate::exit::ExitRecord>, ModelError> {
        let Inner::Transformer(t) = &mut self.inner else {
            return Err(ModelError::Data(
                "the linear model has no layers to exit".into(),
            ));
        };
        if t.linear.is_some() {
            return Err(ModelError::Data(
                "an ensemble's decisions are not the transformer's: exits need linear_weight 0"
                    .into(),
            ));
        }
        let fitted = crate::exit::fit(
            &t.model,
            &t.encoder,
            &t.encode(train)?,
            &t.encode(val)?,
            self.card.threshold,
            budgets,
            self.batch_size,
            t.device,
            t.precision(),
        )?;
        let file = self.dir.join(crate::exit::FILE);
        let mut card = self.card.clone();
        card.early_exit = fitted.as_ref().map(|f| f.record.clone());
        if let Some(f) = &fitted {
            replace_file(&file, |tmp| f.exits.write(tmp))?;
        }
        replace_file(&self.dir.join("flagship.json"), |tmp| {
            write_json(tmp, &card)
        })?;
        if fitted.is_none() {
            let _ = std::fs::remove_file(&file);
        }
        self.card = card;
        t.exits = fitted.map(|f| f.exits);
        Ok(self.card.early_exit.clone())
    }

    /// Posts scored since loading, the layers they read in all, and the layers each would
    /// read without exits (`None` for the linear model).
    pub fn reading(&self) -> Option<(u64, u64, usize)> {
        match &self.inner {
            Inner::Transformer(t) => {
                let (posts, layers) = self.reading.totals();
                Some((posts, layers, t.model.encoder.layers.len()))
            }
            Inner::Linear(_) => None,
        }
    }

    pub fn threshold(&self) -> f64 {
        self.card.threshold
    }

    /// Scores with this arithmetic from now on (`model.precision`; `auto` until told). Resolved
    /// here, so that `auto`'s one measurement of bf16 ([`crate::layers::cpu_bf16_pays`]) comes
    /// at set-up rather than in a first pass.
    pub fn set_precision(&mut self, a: flagship_core::config::Arithmetic) {
        if let Inner::Transformer(t) = &mut self.inner {
            t.arithmetic = a;
            let _ = t.precision();
        }
    }

    /// The arithmetic a transformer scores with (`None` for the linear model).
    pub fn precision(&self) -> Option<Precision> {
        match &self.inner {
            Inner::Transformer(t) => Some(t.precision()),
            Inner::Linear(_) => None,
        }
    }

    /// Scores `texts` (any length, empty strings allowed), in order.
    pub fn predict(&self, texts: &[&str]) -> Result<Vec<Prediction>, ModelError> {
        self.predict_timed(texts, Pace::Careful).map(|(p, _)| p)
    }

    /// [`Classifier::predict`], and how long tokenising took (zero for the linear model).
    pub fn predict_timed(
        &self,
        texts: &[&str],
        pace: Pace,
    ) -> Result<(Vec<Prediction>, std::time::Duration), ModelError> {
        self.scored(texts, Words::None, pace)
            .map(|(p, _, t)| (p, t))
    }

    /// Whether scoring at [`Pace::Hurried`] reads less than careful scoring: the card has
    /// hurried margins (`model.early_exit_hurried`) and the exits are on.
    pub fn hurries(&self) -> bool {
        match &self.inner {
            Inner::Transformer(t) => t.early_exit && t.exits.as_ref().is_some_and(Exits::hurries),
            Inner::Linear(_) => false,
        }
    }

    /// The pace a caller asks for (`hurried`: as a live loop that has fallen behind scores):
    /// [`Pace::Hurried`] only where it reads less ([`Classifier::hurries`]); an error that says
    /// why not otherwise, rather than a hurried run that is careful in fact.
    pub fn pace(&self, hurried: bool) -> Result<Pace, ModelError> {
        match (hurried, self.hurries()) {
            (false, _) => Ok(Pace::Careful),
            (true, true) => Ok(Pace::Hurried),
            (true, false) => Err(ModelError::Data(
                "no hurried exits in use: fitted before they existed (`flagship exits --model` \
                 with the model's folder fits them), or the card's threshold moved since they were \
                 fitted"
                    .into(),
            )),
        }
    }

    /// [`Classifier::predict_timed`], and the `k` words of each post it flags from the
    /// scoring pass itself ([`explain::Attribution::Scored`]: the deciding layer's mean pool
    /// without each unit, through its head — no pass of its own). Posts not flagged get
    /// none, and so does every post of a model that cannot ([`Classifier::explains_pooled`]).
    pub fn predict_worded(
        &self,
        texts: &[&str],
        k: usize,
        pace: Pace,
    ) -> Result<Worded, ModelError> {
        let (predictions, scores, tokenise) = self.scored(texts, Words::Flagged, pace)?;
        let words = scores
            .into_iter()
            .zip(&predictions)
            .map(|(s, p)| match s {
                Some((units, s)) if p.need_support => explain::top_units(&units, &s, k),
                _ => Vec::new(),
            })
            .collect();
        Ok(Worded {
            predictions,
            words,
            tokenise,
        })
    }

    /// Scores `texts` at `pace`, and the units and their scores by
    /// [`explain::Attribution::Scored`] of the posts `words` names (`None` for the others, and
    /// where the model cannot).
    fn scored(
        &self,
        texts: &[&str],
        words: Words,
        pace: Pace,
    ) -> Result<(Vec<Prediction>, Vec<UnitScores>, std::time::Duration), ModelError> {
        let mut tokenise = std::time::Duration::ZERO;
        let mut why = vec![None; texts.len()];
        let (probs, truncated) = match &self.inner {
            Inner::Linear(m) => (m.probabilities(texts), vec![false; texts.len()]),
            Inner::Transformer(t) => {
                let words = if t.model.mean_pooled() {
                    words
                } else {
                    Words::None
                };
                let started = std::time::Instant::now();
                let (enc, offsets) = match words {
                    Words::Flagged | Words::Every => t
                        .encoder
                        .encode_with_offsets(texts)
                        .map_err(|e| ModelError::Tokenizer(e.to_string()))?
                        .into_iter()
                        .unzip(),
                    Words::None => (t.encode(texts)?, Vec::new()),
                };
                tokenise = started.elapsed();
                // Without exits (or with them off), a pass with none: every layer, packed.
                let none = Exits::none();
                let exits = match &t.exits {
                    Some(x) if t.early_exit => x,
                    _ => &none,
                };
                let (mut p, read, decided) = exits.probabilities(
                    &t.model,
                    &t.encoder,
                    &enc,
                    self.batch_size,
                    t.device,
                    t.precision(),
                    self.keep(words, t.linear.is_some()),
                    pace,
                );
                self.reading.add(enc.len() as u64, read);
                if let Some((lin, w)) = &t.linear {
                    train::blend(&mut p, &lin.probabilities(texts), *w);
                }
                for (i, d) in decided.iter().enumerate() {
                    // (An ensemble kept every post's tokens: the blend decides here.)
                    let flagged = p[i] as f64 >= self.card.threshold;
                    let Some(d) = d.as_ref().filter(|_| words == Words::Every || flagged) else {
                        continue;
                    };
                    let units = explain::units(texts[i]);
                    let mut scores = explain::scored_scores(texts[i], &offsets[i], &units, d);
                    if let Some((lin, w)) = &t.linear {
                        let linear = explain::linear_scores(lin, texts[i], &units);
                        train::blend(&mut scores, &linear, *w);
                    }
                    why[i] = Some((units, scores));
                }
                (p, enc.iter().map(|e| e.truncated).collect())
            }
        };
        let preds = probs
            .into_iter()
            .zip(truncated)
            .map(|(probability, truncated)| Prediction {
                probability,
                need_support: probability as f64 >= self.card.threshold,
                truncated,
            })
            .collect();
        Ok((preds, why, tokenise))
    }

    /// The transformer's own probability from which a post's tokens are kept for `words`:
    /// none kept for none; every post's for all, or for an ensemble, whose blend decides
    /// later; else those at the threshold (a hair below: the card compares in f64).
    fn keep(&self, words: Words, blended: bool) -> Option<f32> {
        match words {
            Words::None => None,
            Words::Every => Some(0.0),
            Words::Flagged if blended => Some(0.0),
            Words::Flagged => Some(self.card.threshold as f32 - 1e-6),
        }
    }
}

impl Classifier {
    /// Each text's logits over the head's classes, in order — what a teacher's soft labels
    /// are ([`crate::distill`]). A transformer's only: the linear model has no logits.
    pub fn class_logits(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ModelError> {
        let Inner::Transformer(t) = &self.inner else {
            return Err(ModelError::Data(
                "the linear model has no class logits to teach with".into(),
            ));
        };
        if t.linear.is_some() {
            return Err(ModelError::Data(
                "an ensemble's probabilities are not one model's logits: teach with a \
                 transformer alone (linear_weight 0)"
                    .into(),
            ));
        }
        let (_, logits) = t.score(&t.encode(texts)?, self.batch_size);
        let classes = t.model.spec.classes;
        let flat: Vec<f32> = Vec::try_from(logits.to_kind(tch::Kind::Float).reshape([-1]))
            .map_err(ModelError::Torch)?;
        Ok(flat.chunks(classes as usize).map(<[f32]>::to_vec).collect())
    }

    /// Why each text would be flagged: its `k` units (content words, a negation with its
    /// word) that raised P(needs support) most, by [`Classifier::attribution`] (see
    /// [`crate::explain`]).
    pub fn explain(&self, texts: &[&str], k: usize) -> Result<Vec<Vec<Why>>, ModelError> {
        self.explain_with(texts, k, self.attribution)
    }

    /// [`Classifier::explain`] by attribution `how`.
    pub fn explain_with(
        &self,
        texts: &[&str],
        k: usize,
        how: explain::Attribution,
    ) -> Result<Vec<Vec<Why>>, ModelError> {
        let mut e = self.explanation_with(texts, k, how);
        while !self.advance(&mut e, usize::MAX)? {}
        Ok(e.words().unwrap_or_default())
    }

    /// Whether [`explain::Attribution::Pooled`] works for this model (a transformer with mean
    /// pooling).
    pub fn explains_pooled(&self) -> bool {
        matches!(&self.inner, Inner::Transformer(t) if t.model.mean_pooled())
    }

    /// [`Classifier::explain`], to be worked out a slice at a time by
    /// [`Classifier::advance`]: the live loop stops between slices for a post that arrives.
    pub fn explanation(&self, texts: &[&str], k: usize) -> Explanation {
        self.explanation_with(texts, k, self.attribution)
    }

    /// [`Classifier::explanation`] by attribution `how`.
    pub fn explanation_with(
        &self,
        texts: &[&str],
        k: usize,
        how: explain::Attribution,
    ) -> Explanation {
        use explain::Attribution;
        let units: Vec<Vec<explain::Unit>> = texts
            .iter()
            .map(|t| explain::units_of(t, how == Attribution::GradientWords))
            .collect();
        // Occlusion scores what is served: the ensemble's blended probability included.
        let occlusion = how == Attribution::Occlusion || matches!(self.inner, Inner::Linear(_));
        let mut variants: Vec<String> = Vec::new();
        let mut spans = Vec::new();
        if occlusion {
            for (text, us) in texts.iter().zip(&units) {
                let start = variants.len();
                variants.push((*text).to_owned());
                variants.extend(us.iter().map(|u| explain::without(text, &u.words)));
                spans.push(start..variants.len());
            }
        }
        Explanation {
            texts: texts.iter().map(|t| (*t).to_owned()).collect(),
            k,
            how,
            occlusion,
            units,
            probabilities: Vec::with_capacity(variants.len()),
            variants,
            spans,
            scores: None,
        }
    }

    /// Works `e` out by `n` more texts through the model at most (occlusion: `n` of its
    /// variants, each text without one unit; another attribution: all at once) and says
    /// whether it is done ([`Explanation::words`]).
    pub fn advance(&self, e: &mut Explanation, n: usize) -> Result<bool, ModelError> {
        if e.scores.is_some() {
            return Ok(true);
        }
        if e.occlusion {
            let from = e.probabilities.len();
            let to = from.saturating_add(n.max(1)).min(e.variants.len());
            let refs: Vec<&str> = e.variants[from..to].iter().map(String::as_str).collect();
            e.probabilities
                .extend(self.predict(&refs)?.into_iter().map(|p| p.probability));
            if e.probabilities.len() < e.variants.len() {
                return Ok(false);
            }
            let p = &e.probabilities;
            e.scores = Some(
                e.spans
                    .iter()
                    .map(|r| {
                        p[r.start + 1..r.end]
                            .iter()
                            .map(|q| p[r.start] - q)
                            .collect()
                    })
                    .collect(),
            );
            return Ok(true);
        }
        let Inner::Transformer(t) = &self.inner else {
            unreachable!("a linear model is explained by occlusion")
        };
        let texts: Vec<&str> = e.texts.iter().map(String::as_str).collect();
        let tokenizer = |e: tokenizers::Error| ModelError::Tokenizer(e.to_string());
        if e.how == explain::Attribution::Scored {
            if !t.model.mean_pooled() {
                return Err(ModelError::Data(
                    "the scored attribution needs a mean-pooled model: use occlusion".into(),
                ));
            }
            let (_, scored, _) = self.scored(&texts, Words::Every, Pace::Careful)?;
            e.scores = Some(
                scored
                    .into_iter()
                    .zip(&e.units)
                    .map(|(s, u)| s.map_or_else(|| vec![0.0; u.len()], |(_, s)| s))
                    .collect(),
            );
            return Ok(true);
        }
        let mut scores: Vec<Vec<f32>> = Vec::with_capacity(texts.len());
        if e.how == explain::Attribution::Pooled {
            if !t.model.mean_pooled() {
                return Err(ModelError::Data(
                    "the pooled attribution needs a mean-pooled model: use occlusion".into(),
                ));
            }
            for (chunk, units) in texts.chunks(32).zip(e.units.chunks(32)) {
                scores.extend(
                    explain::pooled_scores(
                        &t.model,
                        &t.encoder,
                        chunk,
                        units,
                        t.device,
                        t.precision(),
                    )
                    .map_err(tokenizer)?,
                );
            }
        } else {
            for (chunk, units) in texts.chunks(32).zip(e.units.chunks(32)) {
                let words = explain::transformer_scores(
                    &t.model,
                    &t.encoder,
                    chunk,
                    t.device,
                    t.precision(),
                )
                .map_err(tokenizer)?;
                scores.extend(
                    words
                        .iter()
                        .zip(units)
                        .map(|(w, u)| explain::unit_scores(w, u)),
                );
            }
        }
        if let Some((lin, w)) = &t.linear {
            for ((s, text), u) in scores.iter_mut().zip(&texts).zip(&e.units) {
                train::blend(s, &explain::linear_scores(lin, text, u), *w);
            }
        }
        e.scores = Some(scores);
        Ok(true)
    }

    /// The deletion test of this classifier's explanations by `how` on `texts` (their top
    /// `k` units removed, against as many random words, `draws` times): see
    /// [`explain::deletion_test`].
    pub fn deletion_test(
        &self,
        texts: &[&str],
        k: usize,
        how: explain::Attribution,
        draws: usize,
        seed: u64,
    ) -> Result<explain::Deletion, ModelError> {
        let p0: Vec<f32> = self
            .predict(texts)?
            .into_iter()
            .map(|p| p.probability)
            .collect();
        let why = self.explain_with(texts, k, how)?;
        explain::deletion_test(texts, &p0, &why, draws, seed, |v| {
            self.predict(v)
                .map(|ps| ps.into_iter().map(|p| p.probability).collect())
        })
    }
}

/// Ids the tokenizer can produce must have embeddings, and `max_length` tokens positions;
/// otherwise libtorch would abort mid-prediction. Checked when a folder is loaded.
fn check_fits(dir: &Path, config: &crate::Config, encoder: &TextEncoder) -> Result<(), ModelError> {
    let bad = |message: String| ModelError::BadFile {
        path: dir.to_owned(),
        message,
    };
    if encoder.vocab_size() as i64 > config.vocab_size {
        return Err(bad(format!(
            "tokenizer.json has {} tokens but the model embeds {} (config.json vocab_size): they do not belong together",
            encoder.vocab_size(),
            config.vocab_size
        )));
    }
    // RoBERTa and MPNet number positions from their padding id + 1.
    let positions = config.max_position_embeddings - config.first_position();
    if encoder.max_length() as i64 > positions {
        return Err(bad(format!(
            "max_length {} is more than the model's {positions} positions",
            encoder.max_length()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_length_beyond_the_positions_or_a_foreign_tokenizer_is_refused_at_load() {
        let base = Checkpoint::default_base().expect("base model (cargo xtask setup)");
        let ck = Checkpoint::open(&base).unwrap();
        let tok = base.join("tokenizer.json");
        let fits = TextEncoder::from_file(&tok, 128, 0).unwrap();
        check_fits(&base, &ck.config, &fits).unwrap();
        let long = TextEncoder::from_file(&tok, 100_000, 0).unwrap();
        let e = check_fits(&base, &ck.config, &long).unwrap_err();
        assert!(e.to_string().contains("positions"), "{e}");
        let mut small = ck.config.clone();
        small.vocab_size = 1000;
        let e = check_fits(&base, &small, &fits).unwrap_err();
        assert!(e.to_string().contains("vocab_size"), "{e}");
    }
}
