//! Fine-tuning a pre-trained encoder with a two-label head.
//!
//! AdamW with decoupled weight decay (none on biases and LayerNorm), linear warm-up then
//! linear decay, gradient-norm clipping, dropout, optional class weights (`1 − class
//! frequency`, as the seed did); dynamic padding over length-bucketed batches; early stopping
//! on validation F2 at the tuned threshold; the best epoch's weights are kept. Fixed seeds give
//! identical results on the CPU. On CUDA the matrix products run in bfloat16 and the inner loop
//! never waits for the device (the loss is read for the progress bar every few steps only).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Device, Kind, Reduction, Tensor};

use crate::ModelError;
use crate::checkpoint::Checkpoint;
use crate::encoder::Mode;
use crate::layers::{GROUPS, HEAD_DEPTH, Precision, decays, group_depth};
use crate::sequence::SequenceClassifier;
use crate::tokenize::{Encoded, TextEncoder};
use flagship_core::config::Business;
pub use flagship_core::labels::Example;
use flagship_core::operating::{Points, Settings};
pub use flagship_core::rng::Rng;
use flagship_core::scoring::Choice;

use crate::distill::{Distill, DistillRecord, Teaching};
use crate::linear::{LinearModel, LinearOptions};
use crate::resume::Resume;
use crate::sequence::{HeadSpec, Pooling};

/// Settings of a fine-tuning run (the `[model]` table of `flagship.toml`, plus run limits).
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub epochs: usize,
    pub learning_rate: f64,
    pub batch_size: usize,
    pub weight_decay: f64,
    pub warmup_ratio: f64,
    pub max_length: usize,
    pub seed: u64,
    pub class_weights: bool,
    /// Epochs without a better validation F2 before stopping.
    pub early_stopping_patience: usize,
    /// Share of `need_support` expected in production; the threshold is tuned for it.
    pub expected_need_support_rate: f64,
    pub max_grad_norm: f64,
    /// Stop after this many optimizer steps in all (a short run for tests and benchmarks).
    pub max_steps: Option<usize>,
    pub device: Device,
    /// `None`: `auto` ([`Precision::auto`]).
    pub precision: Option<Precision>,
    pub progress: bool,
    /// `Auto` is resolved against the base (see [`crate::checkpoint::resolve_pooling`]).
    pub pooling: Pooling,
    /// 2 or 3 labels (three-class needs every example's 0/1/2 label).
    pub classes: u8,
    /// Layer-wise learning-rate decay (1.0: off).
    pub layer_decay: f64,
    /// Keep only the base's first this many layers (`None`: all of them).
    pub layers: Option<usize>,
    /// Weight of the linear baseline in the probability average (0: no ensemble).
    pub linear_weight: f64,
    /// The operating point the exported threshold is chosen by.
    pub operating: Settings,
    /// Reading and typing speeds (the `minutes` operating point).
    pub business: Business,
    /// Temperature and weight of the teacher's soft labels (used by [`train_taught`] only).
    pub distill: Distill,
    /// The shares of validation decisions the served model's exits may change, careful and in
    /// a hurry (careful 0: no exits; see [`crate::exit`]).
    pub early_exit: crate::exit::Budgets,
    /// Checkpoints the run resumes from, if it is stopped ([`crate::resume`]; `None`: none).
    pub checkpoint: Option<crate::resume::Checkpointing>,
}

/// Gradient-norm clipping bound (Hugging Face Trainer's default; not a config key).
pub const MAX_GRAD_NORM: f64 = 1.0;

impl Default for TrainOptions {
    /// The `[model]` defaults of `flagship-core`'s `default.toml` — the only source of them.
    fn default() -> Self {
        TrainOptions::from_config(&flagship_core::Config::default().model)
    }
}

impl TrainOptions {
    /// The settings of a config's `[model]` table, on the default device.
    pub fn from_config(m: &flagship_core::config::Model) -> TrainOptions {
        TrainOptions {
            epochs: m.epochs,
            learning_rate: m.learning_rate,
            batch_size: m.batch_size,
            weight_decay: m.weight_decay,
            warmup_ratio: m.warmup_ratio,
            max_length: m.max_length,
            seed: m.seed,
            class_weights: m.class_weights,
            early_stopping_patience: m.early_stopping_patience,
            expected_need_support_rate: m.expected_need_support_rate,
            max_grad_norm: MAX_GRAD_NORM,
            max_steps: None,
            device: crate::device(),
            precision: Some(Precision::of(m.precision, crate::device())),
            progress: false,
            pooling: m.pooling,
            classes: m.classes,
            layer_decay: m.layer_decay,
            layers: m.layers,
            linear_weight: m.linear_weight,
            operating: m.operating(),
            business: flagship_core::Config::default().business,
            distill: Distill {
                temperature: m.distill_temperature,
                alpha: m.distill_alpha,
            },
            early_exit: crate::exit::Budgets {
                careful: m.early_exit,
                hurried: m.early_exit_hurried,
            },
            checkpoint: None,
        }
    }

    pub fn precision(&self) -> Precision {
        self.precision
            .unwrap_or_else(|| Precision::auto(self.device))
    }
}

/// One epoch's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub steps: usize,
    #[serde(deserialize_with = "crate::resume::nan_if_null")]
    pub train_loss: f64,
    #[serde(deserialize_with = "crate::resume::nan_if_null")]
    pub val_loss: f64,
    #[serde(deserialize_with = "crate::resume::nan_if_null")]
    pub val_f2: f64,
    #[serde(deserialize_with = "crate::resume::nan_if_null")]
    pub val_threshold: f64,
    #[serde(deserialize_with = "crate::resume::nan_if_null")]
    pub val_roc_auc: f64,
    #[serde(deserialize_with = "crate::resume::nan_if_null")]
    pub examples_per_second: f64,
}

/// Validation figures of the kept weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Validation {
    pub rows: usize,
    pub need_support: usize,
    /// Tuned threshold and its F2/precision/recall on validation re-weighted to the expected rate.
    pub tuned: Choice,
    /// Unweighted figures at the tuned threshold.
    pub at_threshold: Choice,
    /// Unweighted F2 at 0.5, for comparison.
    pub f2_at_half: f64,
    pub roc_auc: f64,
    pub loss: f64,
}

/// A fine-tuned model in memory.
pub struct Trained {
    pub vs: VarStore,
    pub model: SequenceClassifier,
    pub encoder: TextEncoder,
    pub base: PathBuf,
    /// How many layers the base has (the model may keep fewer: `TrainOptions::layers`).
    pub base_layers: i64,
    pub validation: Validation,
    pub history: Vec<EpochRecord>,
    pub best_epoch: usize,
    pub steps: usize,
    pub seconds: f64,
    pub truncated: usize,
    pub options: TrainOptions,
    /// The linear half of an ensemble (`linear_weight` > 0).
    pub linear: Option<LinearModel>,
    /// Every operating rule's threshold on validation, and the chosen one.
    pub operating: Points,
    /// A distilled run's teacher, temperature and weight, and how its soft labels were used.
    pub distilled: Option<DistillRecord>,
    /// The exits a served post may leave by (none for an ensemble, or `early_exit` 0).
    pub exits: Option<crate::exit::Fitted>,
}

/// Batches of similar length: shuffle, sort within windows of 50 batches, cut, shuffle batches.
pub fn length_buckets(lengths: &[usize], batch_size: usize, rng: &mut Rng) -> Vec<Vec<usize>> {
    let batch_size = batch_size.max(1);
    let mut idx: Vec<usize> = (0..lengths.len()).collect();
    rng.shuffle(&mut idx);
    let mut batches: Vec<Vec<usize>> = Vec::new();
    for window in idx.chunks_mut(batch_size * 50) {
        window.sort_by_key(|&i| lengths[i]);
        batches.extend(window.chunks(batch_size).map(<[usize]>::to_vec));
    }
    rng.shuffle(&mut batches);
    batches
}

/// Forward passes for texts sorted by length: at most `batch_size` texts each, and a new one
/// when a text is over a quarter (+2 tokens) longer than the pass's shortest, so padding stays
/// small. (A live micro-batch of mixed lengths padded to its longest cost twice the work.)
pub fn length_chunks(sorted_lengths: &[usize], batch_size: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, &len) in sorted_lengths.iter().enumerate() {
        let first = sorted_lengths[start];
        if i > start && (i - start >= batch_size.max(1) || len > first + first / 4 + 2) {
            out.push(start..i);
            start = i;
        }
    }
    if start < sorted_lengths.len() {
        out.push(start..sorted_lengths.len());
    }
    out
}

/// The forward passes that score `encoded`: indices into it, texts of similar length
/// together ([`length_chunks`]), shortest first.
pub fn length_passes(encoded: &[Encoded], batch_size: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..encoded.len()).collect();
    order.sort_by_key(|&i| encoded[i].ids.len());
    let lengths: Vec<usize> = order.iter().map(|&i| encoded[i].ids.len()).collect();
    length_chunks(&lengths, batch_size)
        .into_iter()
        .map(|r| order[r].to_vec())
        .collect()
}

/// The forward passes of packed scoring ([`crate::packing`]), shortest texts first: at most
/// `batch_size` texts each, sorted by length (attention still reads a pass padded to its
/// longest text). Cut into more, equal passes for one-thread workers instead, the live loop's
/// micro-batches of 13 and 40 posts scored 2–8 % slower (docs/model.md#packed-passes).
pub fn sized_passes(encoded: &[Encoded], batch_size: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..encoded.len()).collect();
    order.sort_by_key(|&i| encoded[i].ids.len());
    order
        .chunks(batch_size.max(1))
        .map(<[usize]>::to_vec)
        .collect()
}

/// Posts per scoring pass: a served model's ([`crate::Classifier`], `flagship predict`'s
/// default) and validation's in training (and the exits' fitting), so that the passes that
/// made a card's figures are the ones its model is served in.
pub const SCORING_BATCH: usize = 64;

/// The passes that score `encoded` through `encoder` and whether they are packed: packed
/// passes of up to `batch_size` texts ([`sized_passes`]) where packing is on
/// ([`crate::packing::packed`]) and the family packs ([`crate::encoder::Encoder::packs`]), else
/// padded passes of similar length ([`length_passes`]). Serving, validation, the exits'
/// fitting and the sentence encoder all score so.
pub fn scoring_passes(
    encoder: &crate::encoder::Encoder,
    encoded: &[Encoded],
    batch_size: usize,
) -> (bool, Vec<Vec<usize>>) {
    if crate::packing::packed() && encoder.packs() {
        (true, sized_passes(encoded, batch_size))
    } else {
        (false, length_passes(encoded, batch_size))
    }
}

/// Probabilities of "needs support" for encoded texts, in input order, and their logits:
/// every layer read, in the passes a served model scores ([`scoring_passes`]; as
/// [`crate::exit::Exits::probabilities`] at full depth), so validation's figures are the
/// served model's own.
pub fn probabilities(
    model: &SequenceClassifier,
    encoder: &TextEncoder,
    encoded: &[Encoded],
    batch_size: usize,
    device: Device,
    precision: Precision,
) -> (Vec<f32>, Tensor) {
    let mut out = vec![0f32; encoded.len()];
    let mode = Mode::serve(precision);
    let (packed, passes) = scoring_passes(&model.encoder, encoded, batch_size);
    let pass = |chunk: &Vec<usize>| {
        let items: Vec<&Encoded> = chunk.iter().map(|&i| &encoded[i]).collect();
        let (ids, mask) = encoder.collate(&items, device);
        let lens: Vec<usize> = items.iter().map(|e| e.ids.len()).collect();
        let logits = model
            .scored(&ids, mask, &lens, packed, mode)
            .to_device(Device::Cpu);
        let p: Vec<f32> =
            Vec::try_from(model.spec.need_probability(&logits)).expect("f32 probabilities");
        (p, logits)
    };
    // SAFETY: a pass reads the model and the encoder; it writes only its own tensors.
    let done =
        unsafe { crate::workers::map(&passes, crate::workers::count(device, passes.len()), pass) };
    let mut logits_all = Vec::with_capacity(passes.len());
    for (chunk, (p, logits)) in passes.iter().zip(done) {
        for (&i, p) in chunk.iter().zip(p) {
            out[i] = p;
        }
        logits_all.push((
            Tensor::from_slice(&chunk.iter().map(|&i| i as i64).collect::<Vec<_>>()),
            logits,
        ));
    }
    // Logits back in input order (for the validation loss).
    let (idx, logits): (Vec<Tensor>, Vec<Tensor>) = logits_all.into_iter().unzip();
    let logits = if logits.is_empty() {
        Tensor::zeros([0, model.spec.classes], (Kind::Float, Device::Cpu))
    } else {
        let idx = Tensor::cat(&idx, 0);
        let logits = Tensor::cat(&logits, 0);
        let inv = idx.argsort(0, false);
        logits.index_select(0, &inv)
    };
    (out, logits)
}

fn texts(s: &[Example]) -> Vec<&str> {
    s.iter().map(|e| e.text.as_str()).collect()
}

/// Class targets: `need_support` (0/1) with two labels, the annotators' 0/1/2 with three.
fn targets(set: &[Example], classes: u8) -> Result<Vec<i64>, ModelError> {
    set.iter()
        .enumerate()
        .map(|(i, e)| match (classes, e.label) {
            (3, Some(l)) if l <= 2 => Ok(l as i64),
            (3, _) => Err(ModelError::Data(format!(
                "three-class training needs every example's 0/1/2 label; example {} has none (set `model.classes = 2`)",
                i + 1
            ))),
            _ => Ok(e.need_support as i64),
        })
        .collect()
}

/// Every operating rule's cut of validation probabilities (re-weighted to `rate`), the
/// `minutes` rule reading each text's reading + reply time from `business`.
pub fn operating_points(
    probs: &[f32],
    labels: &[bool],
    texts: &[&str],
    rate: f64,
    settings: Settings,
    business: &Business,
) -> Points {
    let probs: Vec<f64> = probs.iter().map(|&p| p as f64).collect();
    let seconds: Vec<f64> = texts
        .iter()
        .map(|t| business.response_seconds(t.split_whitespace().count() as u32))
        .collect();
    Points::new(&probs, labels, &seconds, Some(rate), settings)
}

/// Blends the transformer's probabilities with the linear model's (`w` of the latter).
pub fn blend(transformer: &mut [f32], linear: &[f32], w: f64) {
    for (p, l) in transformer.iter_mut().zip(linear) {
        *p = ((1.0 - w) * *p as f64 + w * *l as f64) as f32;
    }
}

/// A line above the progress bar, or on stderr when the bar is hidden (not a terminal).
fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

fn snapshot(vs: &VarStore) -> HashMap<String, Tensor> {
    tch::no_grad(|| {
        vs.variables()
            .into_iter()
            .map(|(k, v)| (k, v.copy()))
            .collect()
    })
}

fn restore(vs: &VarStore, saved: &HashMap<String, Tensor>) {
    tch::no_grad(|| {
        for (k, v) in vs.variables() {
            v.shallow_clone().copy_(&saved[&k]);
        }
    });
}

fn evaluate(
    model: &SequenceClassifier,
    encoder: &TextEncoder,
    encoded: &[Encoded],
    labels: &[bool],
    classes: &[i64],
    opts: &TrainOptions,
) -> (Validation, Vec<f32>) {
    let (probs, logits) = probabilities(
        model,
        encoder,
        encoded,
        SCORING_BATCH,
        opts.device,
        opts.precision(),
    );
    let loss = if labels.is_empty() {
        f64::NAN
    } else {
        logits
            .cross_entropy_loss::<Tensor>(
                &Tensor::from_slice(classes),
                None,
                Reduction::Mean,
                -100,
                0.0,
            )
            .double_value(&[])
    };
    // The same figures as any model's, with the loss of the logits.
    let v = Validation {
        loss,
        ..crate::classifier::validation_of(&probs, labels, opts.expected_need_support_rate)
    };
    (v, probs)
}

/// Fine-tunes the checkpoint in `base` on `train`, early-stopping on `val`.
pub fn train(
    base: &Path,
    train: &[Example],
    val: &[Example],
    opts: &TrainOptions,
) -> Result<Trained, ModelError> {
    train_taught(base, train, val, None, opts)
}

/// [`train`], and with `teaching` a distilled run: each example with a soft label learns from
/// it too (weight `opts.distill.alpha`, temperature `opts.distill.temperature`), and the
/// unlabelled posts join the training set with their soft label only (see [`crate::distill`]).
pub fn train_taught(
    base: &Path,
    train: &[Example],
    val: &[Example],
    teaching: Option<&Teaching>,
    opts: &TrainOptions,
) -> Result<Trained, ModelError> {
    check_sets(train, val, opts)?;
    if let Some(t) = teaching {
        opts.distill.check()?;
        if t.soft.len() != train.len() {
            return Err(ModelError::Data(format!(
                "{} soft labels lined up with {} training examples",
                t.soft.len(),
                train.len()
            )));
        }
    }
    let started = Instant::now();
    tch::manual_seed(opts.seed as i64);
    let mut ck = Checkpoint::open(base)?;
    let base_layers = ck.config.num_hidden_layers;
    if let Some(n) = opts.layers {
        // The layers above are dropped: their weights stay unused and the exported
        // config.json says how many remain.
        ck.config
            .keep_layers(n)
            .map_err(|e| ModelError::Data(format!("{}: {e}", base.display())))?;
    }
    let spec = HeadSpec {
        pooling: crate::checkpoint::resolve_pooling(base, opts.pooling),
        classes: if opts.classes == 3 { 3 } else { 2 },
    };
    let mut train_classes = targets(train, opts.classes)?;
    let val_classes = targets(val, opts.classes)?;
    let (vs, model) = load_base(&ck, base, spec, opts)?;
    drop(ck);
    let encoder = TextEncoder::from_file(
        &base.join("tokenizer.json"),
        opts.max_length,
        model.config.pad_token_id,
    )?;
    let tok_err = |e: tokenizers::Error| ModelError::Tokenizer(e.to_string());
    let mut train_enc = encoder.encode(&texts(train)).map_err(tok_err)?;
    let truncated = train_enc.iter().filter(|e| e.truncated).count();
    let soft = match teaching {
        Some(t) => {
            let extra: Vec<&str> = t.unlabelled.iter().map(|(s, _)| s.as_str()).collect();
            train_enc.extend(encoder.encode(&extra).map_err(tok_err)?);
            // An unlabelled post has no hard target: the cross-entropy ignores it.
            train_classes.extend(std::iter::repeat_n(-100, extra.len()));
            Some(SoftTargets::new(t, spec.classes as usize, opts.device))
        }
        None => None,
    };
    let held = Held {
        encoded: encoder.encode(&texts(val)).map_err(tok_err)?,
        labels: val.iter().map(|e| e.need_support).collect(),
        classes: val_classes,
    };

    let mut fit = Fit::new(
        &vs,
        &model,
        &encoder,
        &train_enc,
        &train_classes,
        spec,
        opts,
    )?;
    fit.soft = soft;
    let mut resume = match &opts.checkpoint {
        Some(c) => {
            let (soft, unlabelled) =
                teaching.map_or((&[][..], &[][..]), |t| (&t.soft[..], &t.unlabelled[..]));
            let print = crate::resume::fingerprint(base, train, val, soft, unlabelled, opts);
            Some(Resume::open(c, print)?)
        }
        None => None,
    };
    let (history, best_epoch) = fit.epochs(&vs, &held, resume.as_mut())?;
    let before = fit.before;
    let val_texts = texts(val);
    let Served {
        validation,
        probs,
        linear,
    } = fit.served(&held, train, &val_texts)?;
    let operating = operating_points(
        &probs,
        &held.labels,
        &val_texts,
        opts.expected_need_support_rate,
        opts.operating,
        &opts.business,
    );
    let steps = fit.step;
    drop(fit);
    let exits = if linear.is_none() {
        crate::exit::fit(
            &model,
            &encoder,
            &train_enc,
            &held.encoded,
            operating.chosen.threshold,
            opts.early_exit,
            SCORING_BATCH,
            opts.device,
            opts.precision(),
        )?
    } else {
        None
    };
    Ok(Trained {
        vs,
        model,
        encoder,
        base: base.to_owned(),
        base_layers,
        validation,
        history,
        best_epoch,
        steps,
        seconds: before + started.elapsed().as_secs_f64(),
        truncated,
        options: opts.clone(),
        linear,
        operating,
        distilled: teaching.map(|t| DistillRecord::new(t, opts.distill)),
        exits,
    })
}

/// The teacher's logits for every training row (labelled examples, then unlabelled posts),
/// zeros where a row has none, and which rows have one — on the device for the whole run.
struct SoftTargets {
    logits: Tensor,
    mask: Tensor,
}

impl SoftTargets {
    fn new(t: &Teaching, classes: usize, device: Device) -> SoftTargets {
        let rows = t.soft.len() + t.unlabelled.len();
        let mut logits = vec![0f32; rows * classes];
        let mut mask = vec![0f32; rows];
        let all = t
            .soft
            .iter()
            .map(Option::as_ref)
            .chain(t.unlabelled.iter().map(|(_, l)| Some(l)));
        for (i, l) in all.enumerate() {
            if let Some(l) = l {
                logits[i * classes..(i + 1) * classes].copy_from_slice(l);
                mask[i] = 1.0;
            }
        }
        SoftTargets {
            logits: Tensor::from_slice(&logits)
                .view([rows as i64, classes as i64])
                .to_device(device),
            mask: Tensor::from_slice(&mask).to_device(device),
        }
    }
}

/// Both sets hold examples of both classes, and the ensemble weight and layer decay are in
/// range; refused before anything is loaded.
fn check_sets(train: &[Example], val: &[Example], opts: &TrainOptions) -> Result<(), ModelError> {
    if train.is_empty() || val.is_empty() {
        return Err(ModelError::Data(format!(
            "need training and validation examples (got {} and {})",
            train.len(),
            val.len()
        )));
    }
    for (name, set) in [("training", train), ("validation", val)] {
        let pos = set.iter().filter(|e| e.need_support).count();
        if pos == 0 || pos == set.len() {
            return Err(ModelError::Data(format!(
                "the {name} set has only one class ({pos} of {} need support)",
                set.len()
            )));
        }
    }
    if !(0.0..=1.0).contains(&opts.linear_weight) {
        return Err(ModelError::Data(format!(
            "linear_weight must lie in [0, 1], got {}",
            opts.linear_weight
        )));
    }
    if !(opts.layer_decay > 0.0 && opts.layer_decay <= 1.0) {
        return Err(ModelError::Data(format!(
            "layer_decay must lie in (0, 1], got {}",
            opts.layer_decay
        )));
    }
    Ok(())
}

/// The base checkpoint's encoder with a fresh `spec` head, on the run's device.
fn load_base(
    ck: &Checkpoint,
    base: &Path,
    spec: HeadSpec,
    opts: &TrainOptions,
) -> Result<(VarStore, SequenceClassifier), ModelError> {
    let (vs, model, report) = SequenceClassifier::from_checkpoint(ck, spec, opts.device, false)?;
    tracing::info!(
        base = %base.display(),
        pooling = ?spec.pooling,
        classes = spec.classes,
        loaded = report.loaded,
        initialised = ?report.initialised,
        "base model loaded"
    );
    Ok((vs, model))
}

/// Layer-wise decay of each group's learning rate: the head learns at the full rate, layer
/// n at decay^(layers − n), the embeddings one step below the lowest layer.
fn layer_scales(model: &SequenceClassifier, opts: &TrainOptions) -> Vec<f64> {
    let layers = model.config.num_hidden_layers as usize;
    (0..GROUPS)
        .map(|g| match group_depth(g) {
            HEAD_DEPTH => 1.0,
            d => opts.layer_decay.powi((layers + 1).saturating_sub(d) as i32),
        })
        .collect()
}

/// The loss's class weights when `class_weights` is on: 1 − class frequency, per class (the
/// seed's weighting, for two or three classes).
fn class_weights(classes: &[i64], spec: HeadSpec, opts: &TrainOptions) -> Option<Tensor> {
    opts.class_weights.then(|| {
        let k = spec.classes as usize;
        let mut count = vec![0f32; k];
        // An unlabelled post's target (−100) has no class.
        let labelled = classes.iter().filter(|&&c| c >= 0);
        for &c in labelled.clone() {
            count[c as usize] += 1.0;
        }
        let n = labelled.count().max(1) as f32;
        let w: Vec<f32> = count.iter().map(|c| 1.0 - c / n).collect();
        Tensor::from_slice(&w).to_device(opts.device)
    })
}

/// The learning rate over the run: linear warm-up, then linear decay to zero at the last
/// step.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    rate: f64,
    total_steps: usize,
    warmup: usize,
}

impl Schedule {
    /// For `examples` training examples: every epoch's batches, or `max_steps` if fewer.
    fn new(examples: usize, opts: &TrainOptions) -> Schedule {
        let per_epoch = examples.div_ceil(opts.batch_size.max(1));
        let total_steps =
            (per_epoch * opts.epochs.max(1)).min(opts.max_steps.unwrap_or(usize::MAX));
        Schedule {
            rate: opts.learning_rate,
            total_steps,
            warmup: ((total_steps as f64) * opts.warmup_ratio).ceil() as usize,
        }
    }

    fn rate_at(&self, step: usize) -> f64 {
        let (total, warmup) = (self.total_steps, self.warmup);
        if step < warmup {
            self.rate * (step + 1) as f64 / warmup as f64
        } else {
            self.rate * (total - step) as f64 / (total - warmup).max(1) as f64
        }
    }
}

/// The progress bar (hidden unless `progress`): steps, running loss and speed, time left.
fn progress_bar(opts: &TrainOptions, total_steps: usize) -> ProgressBar {
    let bar = if opts.progress {
        ProgressBar::new(total_steps as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>9} [{bar:30}] {pos}/{len} steps · {msg} · eta {eta}",
        )
        .expect("template")
        .progress_chars("=> "),
    );
    bar
}

/// The validation set, encoded: what each epoch is scored on.
struct Held {
    encoded: Vec<Encoded>,
    labels: Vec<bool>,
    classes: Vec<i64>,
}

impl Held {
    /// The model's figures on the set, and its probabilities.
    fn evaluate(
        &self,
        model: &SequenceClassifier,
        encoder: &TextEncoder,
        opts: &TrainOptions,
    ) -> (Validation, Vec<f32>) {
        evaluate(
            model,
            encoder,
            &self.encoded,
            &self.labels,
            &self.classes,
            opts,
        )
    }
}

/// The running loss of an epoch (summed on the device, read back every tenth step only),
/// the examples seen and when it started.
struct EpochLoss {
    sum: Tensor,
    steps: usize,
    seen: usize,
    /// Of `seen`, the examples a resumed epoch had before its stop.
    seen_before: usize,
    started: Instant,
}

impl EpochLoss {
    fn mean(&self) -> f64 {
        self.sum.double_value(&[]) / self.steps.max(1) as f64
    }
}

/// What a trained model serves on validation: its figures, its probabilities and, for an
/// ensemble, the linear half blended in.
struct Served {
    validation: Validation,
    probs: Vec<f32>,
    linear: Option<LinearModel>,
}

/// A fine-tuning run under way: the model, its optimizer, and what stays fixed over the run.
struct Fit<'a> {
    opts: &'a TrainOptions,
    model: &'a SequenceClassifier,
    encoder: &'a TextEncoder,
    train: &'a [Encoded],
    /// AdamW with decoupled weight decay (none on biases and LayerNorm), the clipping
    /// folded in ([`crate::adamw`]).
    opt: crate::adamw::AdamW,
    /// Each training example's class target, on the device.
    labels: Tensor,
    weights: Option<Tensor>,
    /// A distilled run's soft targets (set after [`Fit::new`]).
    soft: Option<SoftTargets>,
    group_scale: Vec<f64>,
    schedule: Schedule,
    lengths: Vec<usize>,
    rng: Rng,
    mode: Mode,
    bar: ProgressBar,
    /// Optimizer steps taken so far.
    step: usize,
    /// When this process began training, and the seconds a resumed run had trained before.
    started: Instant,
    before: f64,
}

/// What a run has learnt of its epochs so far (a checkpoint keeps it besides the weights):
/// their records, the best validation F2, its epoch and weights, the epochs since.
#[derive(Default)]
struct Progress {
    history: Vec<EpochRecord>,
    best: Option<(f64, usize, HashMap<String, Tensor>)>,
    since_best: usize,
}

/// Where a resumed run is within its epoch: batches done, and the loss so far (sum, steps,
/// examples).
#[derive(Default)]
struct Within {
    done: usize,
    loss: (f64, usize, usize),
}

impl<'a> Fit<'a> {
    fn new(
        vs: &VarStore,
        model: &'a SequenceClassifier,
        encoder: &'a TextEncoder,
        train: &'a [Encoded],
        classes: &[i64],
        spec: HeadSpec,
        opts: &'a TrainOptions,
    ) -> Result<Fit<'a>, ModelError> {
        let opt = crate::adamw::AdamW::new(vs, crate::adamw::Hyper::default());
        let group_scale = layer_scales(model, opts);
        let weights = class_weights(classes, spec, opts);
        let schedule = Schedule::new(train.len(), opts);
        Ok(Fit {
            opts,
            model,
            encoder,
            train,
            opt,
            labels: Tensor::from_slice(classes).to_device(opts.device),
            weights,
            soft: None,
            group_scale,
            schedule,
            lengths: train.iter().map(|e| e.ids.len()).collect(),
            rng: Rng::new(opts.seed),
            mode: Mode {
                train: true,
                precision: opts.precision(),
            },
            bar: progress_bar(opts, schedule.total_steps),
            step: 0,
            started: Instant::now(),
            before: 0.0,
        })
    }

    /// Epochs until the steps are spent or validation F2 stops improving; the best epoch's
    /// weights are restored into `vs`. Returns every epoch's record and the best epoch.
    /// With `resume`, it goes on from the checkpoint found there and writes new ones.
    fn epochs(
        &mut self,
        vs: &VarStore,
        held: &Held,
        mut resume: Option<&mut Resume>,
    ) -> Result<(Vec<EpochRecord>, usize), ModelError> {
        let opts = self.opts;
        let mut run = Progress::default();
        let (mut first, mut at) = (1, Within::default());
        if let Some(l) = resume.as_deref_mut().and_then(|r| r.loaded.take()) {
            (first, at) = self.take_up(vs, l, &mut run)?;
        }
        for epoch in first..=opts.epochs.max(1) {
            let loss = self.epoch(
                epoch,
                std::mem::take(&mut at),
                vs,
                &run,
                resume.as_deref_mut(),
            )?;
            let secs = loss.started.elapsed().as_secs_f64();
            // (A resumed epoch's examples before the stop took no time here.)
            let seen_here = loss.seen - loss.seen_before;
            let (v, _) = held.evaluate(self.model, self.encoder, opts);
            let record = EpochRecord {
                epoch,
                steps: self.step,
                train_loss: loss.mean(),
                val_loss: v.loss,
                val_f2: v.tuned.f_beta,
                val_threshold: v.tuned.threshold,
                val_roc_auc: v.roc_auc,
                examples_per_second: seen_here as f64 / secs,
            };
            self.report(&record);
            run.history.push(record);
            if run
                .best
                .as_ref()
                .is_none_or(|(f, _, _)| v.tuned.f_beta > *f)
            {
                run.best = Some((v.tuned.f_beta, epoch, snapshot(vs)));
                run.since_best = 0;
            } else {
                run.since_best += 1;
                if run.since_best >= opts.early_stopping_patience.max(1) {
                    say(
                        &self.bar,
                        format!(
                            "early stop: no better validation F2 for {} epoch(s)",
                            run.since_best
                        ),
                    );
                    break;
                }
            }
            if self.step >= self.schedule.total_steps {
                break;
            }
        }
        self.bar.finish_and_clear();
        let (_, best_epoch, saved) = run.best.expect("at least one epoch");
        restore(vs, &saved);
        Ok((run.history, best_epoch))
    }

    /// Takes up checkpoint `l`: its weights, the optimizer's state, the epochs so far; returns
    /// the epoch to go on with and where within it.
    fn take_up(
        &mut self,
        vs: &VarStore,
        l: crate::resume::Loaded,
        run: &mut Progress,
    ) -> Result<(usize, Within), ModelError> {
        let missing = |m: String| ModelError::Data(format!("the checkpoint: {m}"));
        for (k, v) in vs.variables() {
            let saved = l
                .tensors
                .get(&k)
                .ok_or_else(|| missing(format!("`{k}` is missing")))?;
            tch::no_grad(|| v.shallow_clone().copy_(saved));
        }
        self.opt
            .restore(&l.tensors, &l.state.adam_steps)
            .map_err(missing)?;
        let s = l.state;
        run.history = s.history;
        run.since_best = s.since_best;
        run.best = match (s.best, l.best) {
            (Some((f, e)), Some(w)) => Some((f, e, w)),
            _ => None,
        };
        self.step = s.step;
        self.before = s.seconds;
        self.rng = Rng::from_state(s.rng);
        self.bar.set_position(s.step as u64);
        say(
            &self.bar,
            format!(
                "resuming from step {} of {} (epoch {}, its batch {})",
                s.step, self.schedule.total_steps, s.epoch, s.done
            ),
        );
        Ok((
            s.epoch,
            Within {
                done: s.done,
                loss: s.loss,
            },
        ))
    }

    /// One pass over the training set in length buckets, stopping early when the run's steps
    /// are spent; `at`: where a resumed run is in it. Writes `resume`'s checkpoints when due.
    fn epoch(
        &mut self,
        epoch: usize,
        at: Within,
        vs: &VarStore,
        run: &Progress,
        mut resume: Option<&mut Resume>,
    ) -> Result<EpochLoss, ModelError> {
        self.bar.set_prefix(format!("epoch {epoch}"));
        let mut loss = EpochLoss {
            sum: Tensor::from(at.loss.0 as f32).to_device(self.opts.device),
            steps: at.loss.1,
            seen: at.loss.2,
            seen_before: at.loss.2,
            started: Instant::now(),
        };
        let shuffle = self.rng.state();
        let buckets = length_buckets(&self.lengths, self.opts.batch_size, &mut self.rng);
        for (b, batch) in buckets.iter().enumerate().skip(at.done) {
            if self.step >= self.schedule.total_steps {
                break;
            }
            if resume.is_some() {
                // Each step's dropout from the seed and the step: a resumed run draws the same.
                tch::manual_seed(crate::resume::step_seed(self.opts.seed, self.step));
            }
            loss.sum += self.train_step(batch);
            loss.steps += 1;
            self.step += 1;
            loss.seen += batch.len();
            self.bar.inc(1);
            if self.step.is_multiple_of(10) {
                self.show(epoch, &loss);
            }
            let Some(r) = resume.as_deref_mut().filter(|r| r.due(self.step)) else {
                continue;
            };
            let (optimizer, adam_steps) = self.opt.state();
            let state = crate::resume::State {
                fingerprint: String::new(),
                step: self.step,
                epoch,
                done: b + 1,
                rng: shuffle,
                loss: (loss.sum.double_value(&[]), loss.steps, loss.seen),
                history: run.history.clone(),
                best: run.best.as_ref().map(|(f, e, _)| (*f, *e)),
                since_best: run.since_best,
                adam_steps,
                seconds: self.before + self.started.elapsed().as_secs_f64(),
            };
            r.save(state, vs, optimizer, run.best.as_ref().map(|(_, _, w)| w))?;
            if r.pause_at == Some(self.step) {
                self.bar.finish_and_clear();
                return Err(ModelError::Paused {
                    step: self.step,
                    dir: r.dir().to_owned(),
                });
            }
        }
        Ok(loss)
    }

    /// One optimizer step on the examples `batch`: forward, weighted cross-entropy (mixed
    /// with the soft loss in a distilled run), clipped
    /// gradients, the step's learning rate. Returns the loss, detached, on the device.
    fn train_step(&mut self, batch: &[usize]) -> Tensor {
        let device = self.opts.device;
        let items: Vec<&Encoded> = batch.iter().map(|&i| &self.train[i]).collect();
        let (ids, mask) = self.encoder.collate(&items, device);
        let idx = Tensor::from_slice(&batch.iter().map(|&i| i as i64).collect::<Vec<_>>())
            .to_device(device);
        let y = self.labels.index_select(0, &idx);
        // The word embeddings through a leaf of the rows this batch reads, so the backward
        // pass makes their gradient alone ([`crate::adamw::RowLeaf`]).
        let embeddings = &self.model.encoder.embeddings;
        let word = embeddings.word_weight();
        let (rows, words) = if word.requires_grad() {
            let (rows, renumbered) = crate::adamw::RowLeaf::gather(word, &ids);
            let words = Tensor::embedding(&rows.leaf, &renumbered, -1, false, false);
            (Some(rows), words)
        } else {
            (None, embeddings.lookup(&ids))
        };
        let logits = self
            .model
            .forward_words(&words, &ids, mask.as_ref(), self.mode);
        let loss = match &self.soft {
            None => {
                logits.cross_entropy_loss(&y, self.weights.as_ref(), Reduction::Mean, -100, 0.0)
            }
            Some(soft) => {
                let d = self.opts.distill;
                let teacher = soft.logits.index_select(0, &idx);
                let has = soft.mask.index_select(0, &idx);
                let hard = crate::distill::hard_loss(&logits, &y, self.weights.as_ref());
                let taught = crate::distill::soft_loss(&logits, &teacher, &has, d.temperature);
                hard * (1.0 - d.alpha) + taught * d.alpha
            }
        };
        let grads = self.opt.gradients(&loss, rows.as_ref());
        let lr = self.schedule.rate_at(self.step);
        let scale = &self.group_scale;
        let layered = self.opts.layer_decay < 1.0;
        let wd = self.opts.weight_decay;
        self.opt.step_with(
            grads,
            self.opts.max_grad_norm,
            &|g| if layered { lr * scale[g] } else { lr },
            &|g| if decays(g) { wd } else { 0.0 },
        );
        loss.detach()
    }

    /// The running loss and speed on the bar — the only read-back in the loop; not on a
    /// terminal (a log file, CI), a plain line every 100 steps instead.
    fn show(&self, epoch: usize, loss: &EpochLoss) {
        let msg = format!(
            "loss {:.4} · {:.1} ex/s",
            loss.sum.double_value(&[]) / loss.steps as f64,
            loss.seen as f64 / loss.started.elapsed().as_secs_f64()
        );
        if self.bar.is_hidden() && self.step.is_multiple_of(100) {
            eprintln!(
                "epoch {epoch}: step {}/{} · {msg}",
                self.step, self.schedule.total_steps
            );
        }
        self.bar.set_message(msg);
    }

    /// What the model serves on validation, after [`Fit::epochs`]: the figures and the
    /// probabilities of the kept weights — of an ensemble (`linear_weight` > 0) the blend with
    /// the linear half, trained here on `train` with the run's seed, which is returned too.
    fn served(
        &self,
        held: &Held,
        train: &[Example],
        val_texts: &[&str],
    ) -> Result<Served, ModelError> {
        let opts = self.opts;
        let (validation, mut probs) = held.evaluate(self.model, self.encoder, opts);
        if opts.linear_weight > 0.0 {
            say(&self.bar, "training the linear half of the ensemble".into());
            let lin = LinearModel::train(
                train,
                &LinearOptions {
                    seed: opts.seed,
                    ..LinearOptions::default()
                },
            )?;
            blend(
                &mut probs,
                &lin.probabilities(val_texts),
                opts.linear_weight,
            );
            // The served probabilities' figures (the loss becomes their binary log-loss).
            let blended = crate::classifier::validation_of(
                &probs,
                &held.labels,
                opts.expected_need_support_rate,
            );
            Ok(Served {
                validation: blended,
                probs,
                linear: Some(lin),
            })
        } else {
            Ok(Served {
                validation,
                probs,
                linear: None,
            })
        }
    }

    /// An epoch's line above the bar (or on stderr), and in the debug log.
    fn report(&self, record: &EpochRecord) {
        say(
            &self.bar,
            format!(
                "epoch {}: train loss {:.4}, val loss {:.4}, val F2 {:.4} at threshold {:.3} (expected rate {:.2}), ROC-AUC {:.4}, {:.1} ex/s",
                record.epoch,
                record.train_loss,
                record.val_loss,
                record.val_f2,
                record.val_threshold,
                self.opts.expected_need_support_rate,
                record.val_roc_auc,
                record.examples_per_second
            ),
        );
        tracing::debug!(?record, "epoch done");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_example_once_and_are_seeded() {
        let lengths: Vec<usize> = (0..1000).map(|i| (i * 37) % 61 + 3).collect();
        let a = length_buckets(&lengths, 32, &mut Rng::new(1));
        let b = length_buckets(&lengths, 32, &mut Rng::new(1));
        let c = length_buckets(&lengths, 32, &mut Rng::new(2));
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut all: Vec<usize> = a.iter().flatten().copied().collect();
        all.sort();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
        // Bucketing pads far less than random batches would.
        let pad = |bs: &[Vec<usize>]| -> usize {
            bs.iter()
                .map(|b| {
                    let m = b.iter().map(|&i| lengths[i]).max().unwrap();
                    b.iter().map(|&i| m - lengths[i]).sum::<usize>()
                })
                .sum()
        };
        let mut rng = Rng::new(1);
        let mut idx: Vec<usize> = (0..1000).collect();
        rng.shuffle(&mut idx);
        let random: Vec<Vec<usize>> = idx.chunks(32).map(<[usize]>::to_vec).collect();
        assert!(
            pad(&a) * 5 < pad(&random),
            "{} vs {}",
            pad(&a),
            pad(&random)
        );
    }

    #[test]
    fn passes_cover_every_text_once_and_cut_where_lengths_jump() {
        let mut lengths: Vec<usize> = (0..200).map(|i| (i * 37) % 61 + 3).collect();
        lengths.sort();
        let chunks = length_chunks(&lengths, 32);
        let covered: Vec<usize> = chunks.iter().flat_map(|r| r.clone()).collect();
        assert_eq!(covered, (0..200).collect::<Vec<_>>());
        for r in &chunks {
            assert!(r.len() <= 32);
            let (lo, hi) = (lengths[r.start], lengths[r.end - 1]);
            assert!(hi <= lo + lo / 4 + 2, "{lo}..{hi}");
        }
        // Similar lengths fill whole passes; a live batch of mixed lengths is cut.
        assert_eq!(length_chunks(&[20; 70], 32), [0..32, 32..64, 64..70]);
        assert_eq!(
            length_chunks(&[8, 9, 10, 30, 31, 60], 32),
            [0..3, 3..5, 5..6]
        );
        assert!(length_chunks(&[], 32).is_empty());
    }
}
