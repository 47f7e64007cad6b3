//! Early exit: a served model stops reading a post at the first layer that is already sure of
//! what the whole model would decide.
//!
//! After fine-tuning, [`fit`] reads the training texts once and records, for every layer below
//! the top, the mean of the real tokens' vectors, and the full model's P(needs support). An
//! exit head per layer — a ridge regression, one weight per hidden unit and a bias — predicts
//! the full model's log-odds from that layer's vector. On validation each head gets a margin:
//! a post exits at the first layer whose predicted log-odds lie at least that far from the
//! threshold's, the margins chosen lowest layer first so that at most `model.early_exit` of
//! validation decisions differ from the full model's. A post that exits is scored with its
//! head's probability; the others read on ([`Exits::probabilities`]), and what was read is
//! counted ([`Reading`]). Neither labels nor the weights of the model are touched: the full
//! model is the target, and its validation figures stay the card's.
//!
//! The same heads get a second, looser set of margins (`model.early_exit_hurried`): a live
//! loop that has fallen behind — a launch burst — scores its micro-batches at that budget
//! ([`Pace::Hurried`]), reading fewer layers a post, until it has caught up.
//!
//! Reads the model in memory and encoded texts; writes `exit.safetensors` beside the model
//! ([`Exits::write`]) and an [`ExitRecord`] for `flagship.json`. A card whose threshold has
//! moved since the margins were set is served without exits (the classifier's load decides).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::ModelError;
use crate::encoder::{Mode, Pass};
use crate::explain::{Decided, Need};
use crate::layers::Precision;
use crate::linear::sigmoid;
use crate::sequence::{SequenceClassifier, mean_pool};
use crate::tokenize::{Encoded, TextEncoder};
use crate::train::scoring_passes;
use crate::workers;

/// The exit heads' file in a model folder.
pub const FILE: &str = "exit.safetensors";
/// At most this many training texts fit the heads (each has hidden + 1 unknowns).
pub const MAX_FIT_TEXTS: usize = 20_000;
/// The ridge penalty of the exit heads' regression.
const RIDGE: f64 = 1.0;
/// The full model's log-odds are clamped here before the regression: a probability of 1e-6
/// would otherwise pull the fit towards ±14 for nothing (both are far from any threshold).
const LOGIT_CLAMP: f64 = 8.0;
/// Each margin is this many times the one that meets the budget on validation: a margin set
/// at validation's first wrong exit changed 1.2 % of held-out decisions for a 0.2 % budget
/// (TweetEval's test posts are later and more negative than its validation); 1.5 times it,
/// 0.24 % (docs/model.md#early-exit).
pub const SAFETY: f64 = 1.5;

/// How carefully a served post is read: at the card's budget, or at the looser one a live
/// loop that has fallen behind scores with ([`ExitRecord::hurried`]; without those margins,
/// as careful).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pace {
    #[default]
    Careful,
    Hurried,
}

/// What `flagship.json` says of the exits (`early_exit`): the careful margins' set (its
/// fields sit at the top level, as before the hurried ones existed), what they lie around and
/// were fitted on, and the hurried set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// The margins of [`Pace::Careful`] (`model.early_exit`).
    #[serde(flatten)]
    pub careful: MarginSet,
    /// The threshold the margins lie around (the card's at training).
    pub threshold: f64,
    /// Training texts the heads were fitted on.
    pub fitted_on: usize,
    /// Validation posts the margins were set on.
    pub validation: usize,
    /// The looser margins of [`Pace::Hurried`] (`model.early_exit_hurried`), on the same heads
    /// (none in a card written before they existed, or where the hurried budget is not above
    /// the careful one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hurried: Option<MarginSet>,
}

impl ExitRecord {
    /// The margins a post is read by at `pace` (`None`: the card has none for it).
    pub fn at(&self, pace: Pace) -> Option<&MarginSet> {
        match pace {
            Pace::Careful => Some(&self.careful),
            Pace::Hurried => self.hurried.as_ref(),
        }
    }
}

/// One set of margins on the exit heads, and what they do on the validation posts they were
/// set on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarginSet {
    /// The share of validation decisions allowed to differ from the full model's.
    pub budget: f64,
    /// The layers with an exit at this pace, lowest first.
    pub exits: Vec<ExitPoint>,
    /// On validation: the share of decisions equal to the full model's…
    pub agreement: f64,
    /// …and the share of the layers' work done (1.0: every post read every layer).
    pub reading: f64,
}

impl MarginSet {
    /// The set [`choose_margins`] chose within `budget` on `n` validation posts of a model
    /// with `top` layers.
    pub fn of(m: &Margins, budget: f64, n: usize, top: usize) -> MarginSet {
        let exits = m
            .margins
            .iter()
            .zip(&m.exited)
            .enumerate()
            .filter_map(|(k, (margin, out))| {
                Some(ExitPoint {
                    layer: k + 1,
                    margin: (*margin)?,
                    exited: *out as f64 / n as f64,
                })
            })
            .collect();
        MarginSet {
            budget,
            exits,
            agreement: 1.0 - m.wrong as f64 / n as f64,
            reading: m.work as f64 / (n * top) as f64,
        }
    }
}

/// One exit: after `layer` layers, posts whose predicted log-odds lie `margin` or more from
/// the threshold's leave; `exited` is the share of validation posts that did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitPoint {
    pub layer: usize,
    pub margin: f64,
    pub exited: f64,
}

/// The exit heads of a served model.
#[derive(Debug)]
pub struct Exits {
    heads: Vec<Head>,
    threshold_logit: f64,
}

#[derive(Debug)]
struct Head {
    /// Layers read before this exit.
    layer: usize,
    /// `[hidden]` f32, on the model's device.
    weight: Tensor,
    bias: f64,
    /// The margin at each [`Pace`] (`None`: no exit here at that pace).
    margins: [Option<f64>; 2],
}

impl Head {
    fn margin(&self, pace: Pace) -> Option<f64> {
        self.margins[pace as usize]
    }
}

/// Posts scored and layers read since a counter was made.
#[derive(Debug, Default)]
pub struct Reading {
    posts: AtomicU64,
    layers: AtomicU64,
}

impl Reading {
    pub fn add(&self, posts: u64, layers: u64) {
        self.posts.fetch_add(posts, Ordering::Relaxed);
        self.layers.fetch_add(layers, Ordering::Relaxed);
    }

    /// Posts scored, and the layers they read in all.
    pub fn totals(&self) -> (u64, u64) {
        (
            self.posts.load(Ordering::Relaxed),
            self.layers.load(Ordering::Relaxed),
        )
    }
}

fn logit(p: f64) -> f64 {
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    (p / (1.0 - p)).ln()
}

impl Exits {
    /// Writes the heads to `path` (a model folder's [`FILE`], or a temporary name beside it).
    pub fn write(&self, path: &Path) -> Result<(), ModelError> {
        let mut named = Vec::new();
        for h in &self.heads {
            named.push((
                format!("exit.{}.weight", h.layer),
                h.weight.to_device(Device::Cpu),
            ));
            named.push((
                format!("exit.{}.bias", h.layer),
                Tensor::from_slice(&[h.bias as f32]),
            ));
        }
        Tensor::write_safetensors(&named, path)?;
        Ok(())
    }

    /// The heads `record` names, from `dir`'s [`FILE`], for a model with `layers` layers of
    /// `hidden` units; their margins lie around `record.threshold`.
    pub fn load(
        dir: &Path,
        record: &ExitRecord,
        layers: usize,
        hidden: i64,
        device: Device,
    ) -> Result<Exits, ModelError> {
        let path = dir.join(FILE);
        let bad = |message: String| ModelError::BadFile {
            path: path.clone(),
            message,
        };
        let tensors: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(&path)
            .map_err(|e| bad(e.to_string()))?
            .into_iter()
            .collect();
        // Each layer's margin at each pace.
        let mut margins = std::collections::BTreeMap::<usize, [Option<f64>; 2]>::new();
        let paces = [Pace::Careful, Pace::Hurried];
        let points = paces
            .into_iter()
            .filter_map(|pace| Some((pace, record.at(pace)?)))
            .flat_map(|(pace, set)| set.exits.iter().map(move |p| (pace, p)));
        for (pace, p) in points {
            if p.layer == 0 || p.layer >= layers {
                return Err(bad(format!(
                    "an exit after layer {} of a {layers}-layer model",
                    p.layer
                )));
            }
            margins.entry(p.layer).or_default()[pace as usize] = Some(p.margin);
        }
        let mut heads = Vec::new();
        for (layer, margins) in margins {
            let get = |name: String| {
                tensors
                    .get(&name)
                    .ok_or_else(|| bad(format!("tensor `{name}` is missing")))
            };
            let weight = get(format!("exit.{layer}.weight"))?;
            if weight.size() != [hidden] {
                return Err(bad(format!(
                    "exit.{layer}.weight has shape {:?}, want [{hidden}]",
                    weight.size()
                )));
            }
            heads.push(Head {
                layer,
                weight: weight.to_kind(Kind::Float).to_device(device),
                bias: get(format!("exit.{layer}.bias"))?.double_value(&[0]),
                margins,
            });
        }
        Ok(Exits {
            heads,
            threshold_logit: logit(record.threshold),
        })
    }

    /// No exit: every post reads every layer ([`Exits::probabilities`] at full depth).
    pub fn none() -> Exits {
        Exits {
            heads: Vec::new(),
            threshold_logit: 0.0,
        }
    }

    /// Whether there are hurried margins ([`Pace::Hurried`] reads by them; without, as careful).
    pub fn hurries(&self) -> bool {
        self.heads.iter().any(|h| h.margin(Pace::Hurried).is_some())
    }

    /// P(needs support) of `encoded`, in input order, each post read until its first sure
    /// exit at `pace` (or to the top); how many layers were read in all; and for each post whose
    /// probability is `keep` or more, how the head that decided it read its tokens
    /// ([`Decided`]: what its words are found from, [`crate::explain::scored_scores`]). `keep`
    /// `None`, or a head that reads the first token only: none kept.
    #[allow(clippy::too_many_arguments)]
    pub fn probabilities(
        &self,
        model: &SequenceClassifier,
        encoder: &TextEncoder,
        encoded: &[Encoded],
        batch_size: usize,
        device: Device,
        precision: Precision,
        keep: Option<f32>,
        pace: Pace,
    ) -> (Vec<f32>, u64, Vec<Option<Decided>>) {
        let mode = Mode::serve(precision);
        let keep = keep.filter(|_| model.mean_pooled());
        let mut out = vec![0f32; encoded.len()];
        let mut decided: Vec<Option<Decided>> = vec![None; encoded.len()];
        let mut read = 0u64;
        let (packed, passes) = scoring_passes(&model.encoder, encoded, batch_size);
        let pass = |chunk: &Vec<usize>| {
            let items: Vec<&Encoded> = chunk.iter().map(|&i| &encoded[i]).collect();
            let lens: Vec<usize> = items.iter().map(|e| e.ids.len()).collect();
            let (ids, mask) = encoder.collate(&items, device);
            let mut got = Vec::with_capacity(chunk.len());
            let at = Scoring {
                mode,
                keep,
                pace,
                packed,
            };
            let read = self.chunk(model, &ids, mask, at, &lens, |row, p, d| {
                got.push((chunk[row], p, d));
            });
            (read, got)
        };
        // SAFETY: a pass reads the model, the exits and the encoder; it writes only its own.
        let done = unsafe { workers::map(&passes, workers::count(device, passes.len()), pass) };
        for (r, got) in done {
            read += r;
            for (i, p, d) in got {
                out[i] = p;
                decided[i] = d;
            }
        }
        (out, read, decided)
    }

    /// One pass (a batch of posts as collated); `put(row, p, tokens)` receives each row's
    /// probability (and, where it is `at.keep` or more, its tokens as the deciding head read
    /// them; `lens`: each row's real tokens). Returns the layers read by all rows together.
    fn chunk(
        &self,
        model: &SequenceClassifier,
        ids: &Tensor,
        mask: Option<Tensor>,
        at: Scoring,
        lens: &[usize],
        mut put: impl FnMut(usize, f32, Option<Decided>),
    ) -> u64 {
        let Scoring {
            mode,
            keep,
            pace,
            packed,
        } = at;
        let enc = &model.encoder;
        let mut pass = Pass::new(enc, ids, mask, lens, packed, mode);
        // Which of the batch's rows are still reading, by their index in it.
        let mut rows: Vec<i64> = (0..ids.size()[0]).collect();
        let mut read = 0u64;
        let mut heads = self.heads.iter().peekable();
        for (l, layer) in enc.layers.iter().enumerate() {
            pass.through(layer, mode);
            read += rows.len() as u64;
            let Some((head, margin)) = heads
                .next_if(|h| h.layer == l + 1)
                .and_then(|h| Some((h, h.margin(pace)?)))
            else {
                continue;
            };
            let (seen, seen_mask) = pass.view();
            let z = mean_pool(&seen, seen_mask.as_ref()).mv(&head.weight) + head.bias;
            let z: Vec<f32> = Vec::try_from(z.to_device(Device::Cpu)).expect("f32 log-odds");
            let mut stay = Vec::with_capacity(rows.len());
            let mut left = Vec::new();
            for (i, &zi) in z.iter().enumerate() {
                if (zi as f64 - self.threshold_logit).abs() >= margin {
                    left.push((i, sigmoid(zi), lens[rows[i] as usize]));
                } else {
                    stay.push(i as i64);
                }
            }
            // The exit head is linear in the mean pool: each token's log-odds through it.
            let tokens = |xs: &Tensor, at: &[i64]| {
                (xs.index_select(0, &Tensor::from_slice(at).to_device(xs.device()))
                    .to_kind(Kind::Float)
                    .matmul(&head.weight)
                    + head.bias)
                    .unsqueeze(-1)
            };
            let words = kept(&seen, &left, keep, tokens, Need::LogOdds);
            for ((i, p, _), d) in left.into_iter().zip(words) {
                put(rows[i] as usize, p, d);
            }
            if stay.is_empty() {
                return read;
            }
            if stay.len() < rows.len() {
                pass.keep(&stay);
                rows = stay.iter().map(|&i| rows[i as usize]).collect();
            }
        }
        let (xs, mask) = pass.view();
        let logits = model.head_forward(&xs, mask.as_ref(), mode);
        let p: Vec<f32> =
            Vec::try_from(model.spec.need_probability(&logits).to_device(Device::Cpu))
                .expect("f32 probabilities");
        let done: Vec<(usize, f32, usize)> = p
            .into_iter()
            .enumerate()
            .map(|(i, p)| (i, p, lens[rows[i] as usize]))
            .collect();
        let tokens = |xs: &Tensor, at: &[i64]| {
            let at = Tensor::from_slice(at).to_device(xs.device());
            model
                .token_logits(&xs.index_select(0, &at), mode)
                .expect("a mean-pooled head")
        };
        let words = kept(&xs, &done, keep, tokens, Need::Head(model.spec));
        for ((i, p, _), d) in done.into_iter().zip(words) {
            put(rows[i] as usize, p, d);
        }
        read
    }
}

/// How a pass is scored ([`Exits::chunk`]): its arithmetic, whose tokens are kept, at which
/// pace, and whether the layers compute on the real tokens only ([`Pass`]; not for MPNet).
#[derive(Debug, Clone, Copy)]
struct Scoring {
    mode: Mode,
    keep: Option<f32>,
    pace: Pace,
    packed: bool,
}

/// For each row of `done` (index in `xs`, probability, real tokens): when its probability is
/// `keep` or more, its tokens' logits through the deciding head (`tokens`: `[rows, seq,
/// classes]` f32 of the rows at the given indices); `None` for the others.
fn kept(
    xs: &Tensor,
    done: &[(usize, f32, usize)],
    keep: Option<f32>,
    tokens: impl Fn(&Tensor, &[i64]) -> Tensor,
    need: Need,
) -> Vec<Option<Decided>> {
    let wanted = |p: f32| keep.is_some_and(|k| p >= k);
    let at: Vec<i64> = done
        .iter()
        .filter(|d| wanted(d.1))
        .map(|d| d.0 as i64)
        .collect();
    if at.is_empty() {
        return vec![None; done.len()];
    }
    let t = tokens(xs, &at).to_device(Device::Cpu);
    let (seq, classes) = (t.size()[1] as usize, t.size()[2] as usize);
    let flat = Vec::<f32>::try_from(t.reshape([-1])).expect("f32 token logits");
    let mut rows = flat.chunks(seq * classes);
    done.iter()
        .map(|&(_, p, len)| {
            if !wanted(p) {
                return None;
            }
            let row = rows.next()?;
            Some(Decided {
                classes,
                logits: row[..len.min(seq) * classes].to_vec(),
                need,
            })
        })
        .collect()
}

/// Exit heads fitted on a trained model, and what the card says of them.
#[derive(Debug)]
pub struct Fitted {
    pub exits: Exits,
    pub record: ExitRecord,
}

/// The shares of validation decisions the exits may change: careful (`model.early_exit`),
/// and in a hurry (`model.early_exit_hurried`; no hurried margins unless it is the larger).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budgets {
    pub careful: f64,
    pub hurried: f64,
}

impl Budgets {
    /// Careful margins only (`budget` 0: no exits).
    pub fn careful(budget: f64) -> Budgets {
        Budgets {
            careful: budget,
            hurried: 0.0,
        }
    }
}

/// Fits exit heads for `model` at `threshold` (see the module's doc): `train` fits the heads,
/// `val` sets the margins within each of `budgets`. `None` when the model has one layer, the
/// careful budget is 0, or no layer can exit within either.
#[allow(clippy::too_many_arguments)]
pub fn fit(
    model: &SequenceClassifier,
    encoder: &TextEncoder,
    train: &[Encoded],
    val: &[Encoded],
    threshold: f64,
    budgets: Budgets,
    batch_size: usize,
    device: Device,
    precision: Precision,
) -> Result<Option<Fitted>, ModelError> {
    let top = model.encoder.layers.len();
    let budget = budgets.careful;
    if top < 2 || budget <= 0.0 || train.is_empty() || val.is_empty() {
        return Ok(None);
    }
    let stride = train.len().div_ceil(MAX_FIT_TEXTS);
    let sample: Vec<Encoded> = train.iter().step_by(stride).cloned().collect();
    tracing::info!(texts = sample.len(), "fitting the early exits");
    let (features, probs) = pooled_states(model, encoder, &sample, batch_size, device, precision);
    let targets: Vec<f64> = probs
        .iter()
        .map(|&p| logit(p).clamp(-LOGIT_CLAMP, LOGIT_CLAMP))
        .collect();
    let fits: Vec<(Tensor, f64)> = features
        .iter()
        .map(|x| ridge(x, &targets))
        .collect::<Result<_, _>>()?;

    let (val_features, val_probs) =
        pooled_states(model, encoder, val, batch_size, device, precision);
    let full: Vec<bool> = val_probs.iter().map(|&p| p >= threshold).collect();
    let z: Vec<Vec<f64>> = fits
        .iter()
        .zip(&val_features)
        .map(|((w, b), x)| {
            let z = x.mv(w) + *b;
            Vec::<f64>::try_from(z.to_kind(Kind::Double)).map_err(ModelError::Torch)
        })
        .collect::<Result<_, _>>()?;
    let t = logit(threshold);
    let n = val.len();
    let chosen = choose_margins(&z, &full, t, budget, SAFETY);
    let hurried = (budgets.hurried > budget)
        .then(|| choose_margins(&z, &full, t, budgets.hurried, SAFETY))
        .filter(|m| m.margins.iter().any(Option::is_some));
    let mut heads = Vec::new();
    for (k, (w, b)) in fits.into_iter().enumerate() {
        let margins = [
            chosen.margins[k],
            hurried.as_ref().and_then(|h| h.margins[k]),
        ];
        if margins.iter().any(Option::is_some) {
            heads.push(Head {
                layer: k + 1,
                weight: w.to_device(device),
                bias: b,
                margins,
            });
        }
    }
    if heads.is_empty() {
        return Ok(None);
    }
    let record = ExitRecord {
        careful: MarginSet::of(&chosen, budget, n, top),
        threshold,
        fitted_on: sample.len(),
        validation: n,
        hurried: hurried
            .as_ref()
            .map(|h| MarginSet::of(h, budgets.hurried, n, top)),
    };
    Ok(Some(Fitted {
        exits: Exits {
            heads,
            threshold_logit: t,
        },
        record,
    }))
}

/// The margin of each layer's exit (`None`: no exit there), lowest layer first. `z[k][i]` is
/// the head after layer k + 1's log-odds for validation post i, `full[i]` the full model's
/// decision, `t` the threshold's log-odds. A layer's margin is `safety` times the smallest
/// that lets no more of the posts still reading exit on a wrong decision than its share of
/// `budget` allows (the budget split evenly across the layers, what one layer leaves unused
/// passing to the next).
pub fn choose_margins(z: &[Vec<f64>], full: &[bool], t: f64, budget: f64, safety: f64) -> Margins {
    let n = full.len();
    let mut alive = vec![true; n];
    let mut out = Margins {
        margins: Vec::with_capacity(z.len()),
        exited: Vec::with_capacity(z.len()),
        wrong: 0,
        work: 0,
    };
    for (k, zk) in z.iter().enumerate() {
        // Each post still reading reads this layer.
        out.work += alive.iter().filter(|&&a| a).count();
        let wrong = out.wrong;
        let allowed = (budget * n as f64 * (k + 1) as f64 / z.len() as f64 + 1e-9).floor() as usize;
        // The posts still reading, surest first.
        let mut cand: Vec<(f64, bool)> = (0..n)
            .filter(|&i| alive[i])
            .map(|i| ((zk[i] - t).abs(), (zk[i] >= t) != full[i]))
            .collect();
        cand.sort_by(|a, b| b.0.total_cmp(&a.0));
        // The longest run from the top that stays within the budget and ends where the
        // distance changes (posts at the same distance exit together).
        let (mut taken, mut bad, mut best) = (0usize, 0usize, None);
        while taken < cand.len() {
            let d = cand[taken].0;
            let mut j = taken;
            let mut extra = 0;
            while j < cand.len() && cand[j].0 == d {
                extra += usize::from(cand[j].1);
                j += 1;
            }
            if wrong + bad + extra > allowed {
                break;
            }
            bad += extra;
            taken = j;
            best = Some(d);
        }
        let best = best.map(|m| m * safety);
        let mut exited = 0;
        if let Some(m) = best {
            for i in 0..n {
                if alive[i] && (zk[i] - t).abs() >= m {
                    alive[i] = false;
                    exited += 1;
                    out.wrong += usize::from((zk[i] >= t) != full[i]);
                }
            }
        }
        out.margins.push(best);
        out.exited.push(exited);
    }
    // The top layer, read by every post still reading.
    out.work += alive.iter().filter(|&&a| a).count();
    out
}

/// What [`choose_margins`] chose, and what those margins do on the posts they were set on.
#[derive(Debug, Clone, PartialEq)]
pub struct Margins {
    /// Each layer's margin, lowest layer first (`None`: no exit there).
    pub margins: Vec<Option<f64>>,
    /// The posts that exit at each layer.
    pub exited: Vec<usize>,
    /// The posts whose decision differs from the full model's.
    pub wrong: usize,
    /// The layers read by all posts together (every post reads the first and, unless it
    /// exits, the ones above, the top included).
    pub work: usize,
}

/// Ridge regression of `z` on the rows of `x` `[n, hidden]` (f32) with an intercept (not
/// penalised): the weights `[hidden]` (f32) and the intercept.
fn ridge(x: &Tensor, z: &[f64]) -> Result<(Tensor, f64), ModelError> {
    let (n, h) = x.size2().map_err(ModelError::Torch)?;
    let x = Tensor::cat(
        &[
            x.to_kind(Kind::Double),
            Tensor::ones([n, 1], (Kind::Double, x.device())),
        ],
        1,
    );
    let y = Tensor::from_slice(z).to_device(x.device()).view([n, 1]);
    let mut penalty = vec![RIDGE; (h + 1) as usize];
    penalty[h as usize] = 0.0;
    let a = x.tr().mm(&x) + Tensor::from_slice(&penalty).to_device(x.device()).diag(0);
    let w = Tensor::f_linalg_solve(&a, &x.tr().mm(&y), true)?.squeeze_dim(1);
    Ok((w.narrow(0, 0, h).to_kind(Kind::Float), w.double_value(&[h])))
}

/// Each layer below the top's mean-pooled vectors `[n, hidden]` (f32, on the CPU) and the
/// full model's P(needs support), for `encoded` in length order (the same order in both).
fn pooled_states(
    model: &SequenceClassifier,
    encoder: &TextEncoder,
    encoded: &[Encoded],
    batch_size: usize,
    device: Device,
    precision: Precision,
) -> (Vec<Tensor>, Vec<f64>) {
    let mode = Mode::serve(precision);
    let top = model.encoder.layers.len();
    let mut pooled: Vec<Vec<Tensor>> = (1..top).map(|_| Vec::new()).collect();
    let mut probs = Vec::with_capacity(encoded.len());
    let (packed, passes) = scoring_passes(&model.encoder, encoded, batch_size);
    tch::no_grad(|| {
        for chunk in passes {
            let items: Vec<&Encoded> = chunk.iter().map(|&i| &encoded[i]).collect();
            let (ids, mask) = encoder.collate(&items, device);
            let lens: Vec<usize> = items.iter().map(|e| e.ids.len()).collect();
            let mut pass = Pass::new(&model.encoder, &ids, mask, &lens, packed, mode);
            for (l, layer) in model.encoder.layers.iter().enumerate() {
                pass.through(layer, mode);
                if l + 1 < top {
                    let (xs, mask) = pass.view();
                    pooled[l].push(mean_pool(&xs, mask.as_ref()).to_device(Device::Cpu));
                }
            }
            let (xs, mask) = pass.view();
            let logits = model.head_forward(&xs, mask.as_ref(), mode);
            let p: Vec<f32> =
                Vec::try_from(model.spec.need_probability(&logits).to_device(Device::Cpu))
                    .expect("f32 probabilities");
            probs.extend(p.into_iter().map(f64::from));
        }
    });
    (pooled.iter().map(|v| Tensor::cat(v, 0)).collect(), probs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each row's probability and its deciding head's token logits, and the layers read.
    type Scored = Vec<(f32, Option<Vec<f32>>)>;

    /// One pass scored packed, then padded (`keep`: whose token logits come back).
    fn both_ways(
        exits: &Exits,
        model: &SequenceClassifier,
        enc: &TextEncoder,
        texts: &[&str],
        precision: Precision,
        keep: Option<f32>,
        pace: Pace,
    ) -> [(Scored, u64); 2] {
        let encoded = enc.encode(texts).unwrap();
        let items: Vec<&Encoded> = encoded.iter().collect();
        let lens: Vec<usize> = items.iter().map(|e| e.ids.len()).collect();
        [true, false].map(|packed| {
            let (ids, mask) = enc.collate(&items, Device::Cpu);
            let mut out: Scored = vec![(f32::NAN, None); texts.len()];
            let read = tch::no_grad(|| {
                let at = Scoring {
                    mode: Mode::serve(precision),
                    keep,
                    pace,
                    packed,
                };
                exits.chunk(model, &ids, mask, at, &lens, |row, p, d| {
                    out[row] = (p, d.map(|d| d.logits))
                })
            });
            (out, read)
        })
    }

    /// The base MiniLM with a fresh head of `spec`, frozen as served, and its tokenizer.
    fn served_base(spec: crate::HeadSpec) -> (tch::nn::VarStore, SequenceClassifier, TextEncoder) {
        let base = crate::Checkpoint::default_base().expect("base model (cargo xtask setup)");
        let ck = crate::Checkpoint::open(&base).unwrap();
        let (mut vs, model, _) =
            SequenceClassifier::from_checkpoint(&ck, spec, Device::Cpu, false).unwrap();
        vs.freeze();
        let enc = TextEncoder::from_file(&base.join("tokenizer.json"), 64, 0).unwrap();
        (vs, model, enc)
    }

    /// `flagship.json`'s `early_exit` reads and writes as before the margin sets: the careful
    /// set's fields at the top level, the hurried set under `hurried` (a card of the demo's
    /// model), and a card written before hurried margins existed has none.
    #[test]
    fn the_exit_record_keeps_its_shape() {
        let card = serde_json::json!({
            "budget": 0.002, "threshold": 0.398, "fitted_on": 5998, "validation": 600,
            "exits": [{"layer": 1, "margin": 2.65, "exited": 0.098},
                      {"layer": 5, "margin": 0.21, "exited": 0.26}],
            "agreement": 1.0, "reading": 0.625,
            "hurried": {"budget": 0.05, "agreement": 0.96, "reading": 0.395,
                        "exits": [{"layer": 1, "margin": 1.63, "exited": 0.31}]}
        });
        let r: ExitRecord = serde_json::from_value(card.clone()).unwrap();
        assert_eq!(r.careful.budget, 0.002);
        assert_eq!(r.careful.exits.len(), 2);
        assert_eq!(r.validation, 600);
        let h = r.at(Pace::Hurried).unwrap();
        assert_eq!((h.budget, h.exits[0].layer), (0.05, 1));
        assert_eq!(serde_json::to_value(&r).unwrap(), card);

        let mut before = card;
        before.as_object_mut().unwrap().remove("hurried");
        let r: ExitRecord = serde_json::from_value(before.clone()).unwrap();
        assert!(r.at(Pace::Hurried).is_none());
        assert_eq!(r.at(Pace::Careful), Some(&r.careful));
        assert_eq!(serde_json::to_value(&r).unwrap(), before);
    }

    /// [`MarginSet::of`]: the exits where a margin was chosen, each layer's share of the
    /// posts, the agreement and the reading as shares.
    #[test]
    fn a_margin_set_states_its_margins_as_shares() {
        let m = Margins {
            margins: vec![Some(2.0), None, Some(0.5)],
            exited: vec![3, 0, 4],
            wrong: 1,
            work: 25,
        };
        let s = MarginSet::of(&m, 0.1, 10, 4);
        let layers: Vec<(usize, f64, f64)> = s
            .exits
            .iter()
            .map(|e| (e.layer, e.margin, e.exited))
            .collect();
        assert_eq!(layers, vec![(1, 2.0, 0.3), (3, 0.5, 0.4)]);
        assert_eq!((s.budget, s.agreement, s.reading), (0.1, 0.9, 0.625));
    }

    #[test]
    fn a_packed_pass_scores_as_the_padded_one_with_and_without_exits() {
        let _rng = crate::torch_rng();
        tch::manual_seed(7);
        // Lengths from 3 to 40-odd tokens, two of the same length, one cut at 64; then posts
        // of one length (nothing padded), then one post alone.
        let long = "the telescope's mirror is cold and the images are late again ".repeat(12);
        let texts = [
            "ok",
            "webb is broken?",
            "why are the first images not out yet, it was promised for today",
            "webb is great!",
            "my order never arrived and nobody at support answers my emails or calls",
            long.as_str(),
            "launch day",
        ];
        let passes: [&[&str]; 3] = [&texts, &["webb is great!", "webb is broken?"], &["ok"]];
        let mean = crate::HeadSpec {
            pooling: crate::Pooling::Mean,
            classes: 3,
        };
        // No exits: every row to the top, through the model's own head (the mean pool's
        // tokens, or the first token's pooler).
        for (spec, keep) in [(mean, Some(0.0)), (crate::HeadSpec::CLS2, None)] {
            let (_vs, model, enc) = served_base(spec);
            for pass in passes {
                for precision in [Precision::F32, Precision::Bf16] {
                    let [(packed, read_p), (padded, read_d)] = both_ways(
                        &Exits::none(),
                        &model,
                        &enc,
                        pass,
                        precision,
                        keep,
                        Pace::Careful,
                    );
                    assert_eq!(read_p, read_d);
                    assert_eq!(read_p, (pass.len() * model.encoder.layers.len()) as u64);
                    match precision {
                        Precision::F32 => agree(&packed, &padded, 1e-5, 1e-4),
                        _ => agree(&packed, &padded, 2e-2, 1.0),
                    }
                }
            }
        }
        // An exit after layer 2 that lets four of the seven rows out: the layer-2 log-odds of
        // a random direction, its margin between their third and fourth distances from the
        // threshold.
        let (_vs, model, enc) = served_base(mean);
        let weight = Tensor::randn([model.config.hidden_size], (Kind::Float, Device::Cpu)) * 0.05;
        let encoded = enc.encode(&texts).unwrap();
        let items: Vec<&Encoded> = encoded.iter().collect();
        let (ids, mask) = enc.collate(&items, Device::Cpu);
        let lens: Vec<usize> = items.iter().map(|e| e.ids.len()).collect();
        let z: Vec<f64> = tch::no_grad(|| {
            let mut pass = Pass::new(&model.encoder, &ids, mask, &lens, false, Mode::EVAL);
            for layer in &model.encoder.layers[..2] {
                pass.through(layer, Mode::EVAL);
            }
            let (xs, mask) = pass.view();
            let z = mean_pool(&xs, mask.as_ref()).mv(&weight);
            Vec::<f32>::try_from(z)
                .unwrap()
                .into_iter()
                .map(f64::from)
                .collect()
        });
        let mut distance: Vec<f64> = z.iter().map(|z| z.abs()).collect();
        distance.sort_by(f64::total_cmp);
        let margin = (distance[2] + distance[3]) / 2.0;
        let exits = |margins| Exits {
            heads: vec![Head {
                layer: 2,
                weight: weight.shallow_clone(),
                bias: 0.0,
                margins,
            }],
            threshold_logit: 0.0,
        };
        let layers = model.encoder.layers.len() as u64;
        let n = texts.len() as u64;
        let careful = exits([Some(margin), None]);
        assert!(!careful.hurries());
        let [(packed, read_p), (padded, read_d)] = both_ways(
            &careful,
            &model,
            &enc,
            &texts,
            Precision::F32,
            Some(0.0),
            Pace::Careful,
        );
        assert_eq!(read_p, read_d);
        assert_eq!(read_p, 2 * n + 3 * (layers - 2), "three rows read on");
        agree(&packed, &padded, 1e-5, 1e-4);
        // An exit for a loop in a hurry only: careful posts read every layer; hurried ones
        // leave as above, with the same probabilities.
        let hurried = exits([None, Some(margin)]);
        assert!(hurried.hurries());
        let at = |pace| {
            both_ways(
                &hurried,
                &model,
                &enc,
                &texts,
                Precision::F32,
                Some(0.0),
                pace,
            )
        };
        let [(_, read_careful), _] = at(Pace::Careful);
        assert_eq!(read_careful, n * layers, "careful: no exit");
        let [(fast, read_fast), _] = at(Pace::Hurried);
        assert_eq!(read_fast, read_p);
        agree(&fast, &packed, 1e-6, 1e-6);
    }

    #[test]
    fn validation_in_training_scores_as_the_served_model() {
        let _rng = crate::torch_rng();
        tch::manual_seed(7);
        let base = crate::Checkpoint::default_base().expect("base model (cargo xtask setup)");
        let ck = crate::Checkpoint::open(&base).unwrap();
        let spec = crate::HeadSpec {
            pooling: crate::Pooling::Mean,
            classes: 2,
        };
        let (mut vs, model, _) =
            SequenceClassifier::from_checkpoint(&ck, spec, Device::Cpu, false).unwrap();
        let enc = TextEncoder::from_file(&base.join("tokenizer.json"), 64, 0).unwrap();
        let long = "the mirror is cold and the images are late again ".repeat(9);
        let texts = [
            "ok",
            "webb is broken?",
            "why are the first images not out yet, it was promised for today",
            long.as_str(),
            "launch day",
        ];
        let encoded = enc.encode(&texts).unwrap();
        let items: Vec<&Encoded> = encoded.iter().collect();
        let lens: Vec<usize> = items.iter().map(|e| e.ids.len()).collect();
        // The top layer's token vectors of one packed pass, and the probabilities of
        // validation's scoring.
        let scored = |p: Precision| {
            let mode = Mode::serve(p);
            let (ids, mask) = enc.collate(&items, Device::Cpu);
            let hidden = tch::no_grad(|| {
                Pass::new(&model.encoder, &ids, mask, &lens, true, mode)
                    .through_all(&model.encoder, mode)
                    .view()
                    .0
            });
            let probs = crate::train::probabilities(&model, &enc, &encoded, 64, Device::Cpu, p).0;
            (hidden, probs)
        };
        let precisions = [Precision::F32, Precision::Bf16];
        // In training (weights that take gradients: query, key and value as three products,
        // casts per call, rows as they come), then frozen as served (one stacked product, the
        // casts kept, rows padded to a few counts).
        assert!(!vs.trainable_variables().is_empty());
        let training = precisions.map(scored);
        vs.freeze();
        for (p, (hidden, validation)) in precisions.into_iter().zip(training) {
            let (served_hidden, _) = scored(p);
            let (served, _, _) = Exits::none().probabilities(
                &model,
                &enc,
                &encoded,
                64,
                Device::Cpu,
                p,
                None,
                Pace::Careful,
            );
            let d = (&hidden - &served_hidden).abs().max().double_value(&[]);
            println!("{p:?}: the top layer's vectors differ by {d:.2e} at most");
            // Identical on this machine's CPU in both (0 difference); other kernels may round
            // the stacked product otherwise than the three.
            let (tol, p_tol) = match p {
                Precision::F32 => (1e-5, 1e-6),
                Precision::Bf16 => (2e-2, 1e-3),
            };
            assert!(d < tol, "{p:?}: hidden states differ by {d}");
            for (i, (v, s)) in validation.iter().zip(&served).enumerate() {
                assert!(
                    (v - s).abs() < p_tol,
                    "{p:?} row {i}: {v} in training, {s} served"
                );
            }
        }
    }

    /// Each row's probability within `tol`, and its real tokens' logits (as many) within
    /// `token_tol`.
    fn agree(packed: &Scored, padded: &Scored, tol: f32, token_tol: f32) {
        for (i, ((p, w), (q, v))) in packed.iter().zip(padded).enumerate() {
            assert!((p - q).abs() < tol, "row {i}: {p} packed, {q} padded");
            let (Some(w), Some(v)) = (w, v) else {
                assert_eq!(w.is_none(), v.is_none(), "row {i}: tokens one way only");
                continue;
            };
            assert_eq!(w.len(), v.len(), "row {i}: its real tokens' logits");
            let d = w
                .iter()
                .zip(v)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(d < token_tol, "row {i}: token logits differ by {d}");
        }
    }

    #[test]
    fn margins_keep_wrong_exits_within_the_budget_lowest_layer_first() {
        // Ten posts, threshold log-odds 0; the full model flags the first five.
        let full: Vec<bool> = (0..10).map(|i| i < 5).collect();
        // Layer 1: sure and right on posts 0 and 9, sure and wrong on post 4 (|z| 2.5).
        let mut z1 = vec![0.1; 10];
        z1[0] = 3.0;
        z1[9] = -3.0;
        z1[4] = -2.5;
        // Layer 2: right everywhere, surer on some.
        let z2: Vec<f64> = (0..10)
            .map(|i| if i < 5 { 1.0 + i as f64 } else { -1.0 })
            .collect();
        // No wrong decision allowed: layer 1 stops above post 4's distance.
        let m = choose_margins(&[z1.clone(), z2.clone()], &full, 0.0, 0.0, 1.0).margins;
        assert_eq!(m, vec![Some(3.0), Some(1.0)]);
        // With a safety factor nobody is sure enough at layer 1 (3.0 < 4.5); layer 2's margin
        // is then set on all ten posts, all right there.
        let m = choose_margins(&[z1.clone(), z2.clone()], &full, 0.0, 0.0, 1.5).margins;
        assert_eq!(m, vec![Some(4.5), Some(1.5)]);
        // One wrong decision in ten allowed (split over two layers: none at layer 1, one by
        // layer 2): still none at layer 1, and layer 2 takes everyone left.
        let m = choose_margins(&[z1.clone(), z2.clone()], &full, 0.0, 0.1, 1.0).margins;
        assert_eq!(m, vec![Some(3.0), Some(1.0)]);
        // Two allowed (one a layer): layer 1 lets post 4 out wrongly, down to distance 2.5.
        let m = choose_margins(&[z1, z2], &full, 0.0, 0.2, 1.0);
        assert_eq!(m.margins, vec![Some(2.5), Some(1.0)]);
        // What they do: posts 0, 9 and (wrongly) 4 leave after layer 1, the other seven after
        // layer 2; ten posts read layer 1, seven layer 2, none the top.
        assert_eq!((m.exited, m.wrong, m.work), (vec![3, 7], 1, 17));
        // A layer where the surest post is wrong gets no exit.
        let z = vec![vec![-5.0, 0.0], vec![1.0, -1.0]];
        let m = choose_margins(&z, &[true, false], 0.0, 0.0, 1.0).margins;
        assert_eq!(m, vec![None, Some(1.0)]);
    }

    #[test]
    fn ridge_recovers_a_linear_target() {
        let _rng = crate::torch_rng();
        tch::manual_seed(3);
        let x = Tensor::randn([400, 8], (Kind::Float, Device::Cpu));
        let w = Tensor::from_slice(&[1.0f32, -2.0, 0.5, 0.0, 3.0, 0.0, -1.0, 0.25]);
        let z: Vec<f64> = Vec::try_from((x.mv(&w) + 1.5).to_kind(Kind::Double)).unwrap();
        let (fw, fb) = ridge(&x, &z).unwrap();
        let diff = (fw - &w).abs().max().double_value(&[]);
        assert!(diff < 0.02, "weights off by {diff}");
        assert!((fb - 1.5).abs() < 0.02, "intercept {fb}");
    }
}
