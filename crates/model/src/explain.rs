//! Why a post was flagged: the few words that pushed its probability up.
//!
//! What is shown are **units** ([`units`]): a content word, with the negation just before it
//! ("not working", "doesn't load"); function words, mentions, numbers and punctuation are
//! never shown on their own (`flagship_core::words`). How much each unit pushed:
//!
//! - [`Attribution::Occlusion`] (the default): the drop in P(needs support) when the unit is
//!   removed — every unit's variant of the text scored in one batch, no gradients. It holds
//!   up in the deletion test ([`deletion_test`]): removing the top words lowers the
//!   probability far more than removing as many random words.
//! - [`Attribution::Gradient`]: gradient × input on the word embeddings (one forward and one
//!   backward pass per batch, gradients of P(needs support) only — the weights are frozen),
//!   summed over each unit's tokens; cheaper, less faithful.
//! - [`Attribution::GradientWords`]: the same per whitespace word, function words included —
//!   what the desk showed before (kept for the comparison).
//! - [`Attribution::Pooled`]: the drop in P(needs support) when the unit's tokens are left
//!   out of the last layer's mean pool ([`pooled_scores`]) — one forward pass a post, where
//!   occlusion takes one per unit; mean-pooled models only.
//! - Linear model: occlusion, always (each is a sparse dot product, so this is cheap).
//! - Ensemble: the two, weighted like the probabilities.
//!
//! Repeated units are summed. Only units that pushed the probability up are returned, the
//! strongest first, with their contribution (probability units).

use tch::{Device, Kind, Tensor};

use crate::encoder::Mode;
use crate::linear::LinearModel;
use crate::sequence::SequenceClassifier;
use crate::tokenize::TextEncoder;

/// One word and how much it raised P(needs support) (plain data, in the light core).
pub use flagship_core::live::Why;

/// The words of `text`: (byte start, byte end, display form — trimmed, lowercased).
pub fn words(text: &str) -> Vec<(usize, usize, String)> {
    text.split_whitespace()
        .filter_map(|w| {
            let start = w.as_ptr() as usize - text.as_ptr() as usize;
            let shown = w
                .trim_matches(|c: char| !(c.is_alphanumeric() || c == '@' || c == '#'))
                .to_lowercase();
            (!shown.is_empty()).then(|| (start, start + w.len(), shown))
        })
        .collect()
}

/// How the words of an explanation are found (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Attribution {
    #[default]
    Occlusion,
    Gradient,
    GradientWords,
    /// Each unit's tokens left out of the mean pool of the last layer: one forward pass a
    /// post, for models with mean pooling ([`pooled_scores`]).
    Pooled,
    /// [`Attribution::Pooled`] read off the scoring pass itself: each unit's tokens left out
    /// of the mean pool of the layer that decided the post (an exit's or the top), through
    /// that layer's head ([`scored_scores`]). No pass of its own: the words come with the
    /// probability.
    Scored,
}

impl Attribution {
    pub const ALL: [Attribution; 5] = [
        Attribution::Occlusion,
        Attribution::Gradient,
        Attribution::GradientWords,
        Attribution::Pooled,
        Attribution::Scored,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Attribution::Occlusion => "occlusion",
            Attribution::Gradient => "gradient",
            Attribution::GradientWords => "gradient-words",
            Attribution::Pooled => "pooled",
            Attribution::Scored => "scored",
        }
    }
}

impl std::str::FromStr for Attribution {
    type Err = String;
    fn from_str(s: &str) -> Result<Attribution, String> {
        Attribution::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                format!("{s:?}: use occlusion, gradient, gradient-words, pooled or scored")
            })
    }
}

/// One thing an explanation can show: the indices (into [`words`]) of its words and how it
/// reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Unit {
    pub words: Vec<usize>,
    pub shown: String,
}

/// The units of `text` ([`words`] → content words, each with the negation just before it).
/// `all_words`: every word its own unit, function words included (the old way).
pub fn units_of(text: &str, all_words: bool) -> Vec<Unit> {
    let ws = words(text);
    if all_words {
        return ws
            .into_iter()
            .enumerate()
            .map(|(i, (_, _, w))| Unit {
                words: vec![i],
                shown: w,
            })
            .collect();
    }
    let mut out = Vec::new();
    for (i, (_, _, w)) in ws.iter().enumerate() {
        if flagship_core::words::is_function_word(w) {
            continue;
        }
        match i
            .checked_sub(1)
            .filter(|&j| flagship_core::words::is_negation(&ws[j].2))
        {
            Some(j) => out.push(Unit {
                words: vec![j, i],
                shown: format!("{} {w}", ws[j].2),
            }),
            None => out.push(Unit {
                words: vec![i],
                shown: w.clone(),
            }),
        }
    }
    out
}

/// The content units of `text` (see [`units_of`]).
pub fn units(text: &str) -> Vec<Unit> {
    units_of(text, false)
}

/// `text` without the words at `drop` (indices into [`words`]).
pub fn without(text: &str, drop: &[usize]) -> String {
    let ws = words(text);
    let mut spans: Vec<(usize, usize)> = drop
        .iter()
        .filter_map(|&i| ws.get(i).map(|&(s, e, _)| (s, e)))
        .collect();
    spans.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (s, e) in spans {
        if s >= at {
            out.push_str(&text[at..s]);
            at = e;
        }
    }
    out.push_str(&text[at..]);
    out
}

/// Occlusion scores of any model: per unit, P(text) − P(text without the unit), every
/// variant scored in one call of `probabilities`.
pub fn occlusion_scores<E>(
    text: &str,
    units: &[Unit],
    probabilities: impl FnOnce(&[&str]) -> Result<Vec<f32>, E>,
) -> Result<Vec<f32>, E> {
    let mut variants = vec![text.to_owned()];
    variants.extend(units.iter().map(|u| without(text, &u.words)));
    let refs: Vec<&str> = variants.iter().map(String::as_str).collect();
    let p = probabilities(&refs)?;
    Ok(p[1..].iter().map(|q| p[0] - q).collect())
}

/// Per-word scores (one per [`words`] entry) summed into `units`.
pub fn unit_scores(word_scores: &[f32], units: &[Unit]) -> Vec<f32> {
    units
        .iter()
        .map(|u| {
            u.words
                .iter()
                .map(|&i| word_scores.get(i).copied().unwrap_or(0.0))
                .sum()
        })
        .collect()
}

/// Per-unit scores → the top `k` positive units, repeated ones summed.
pub fn top_units(units: &[Unit], scores: &[f32], k: usize) -> Vec<Why> {
    let mut by: Vec<(String, f32)> = Vec::new();
    for (u, &s) in units.iter().zip(scores) {
        match by.iter_mut().find(|(x, _)| *x == u.shown) {
            Some(e) => e.1 += s,
            None => by.push((u.shown.clone(), s)),
        }
    }
    by.retain(|(_, s)| *s > 0.0 && s.is_finite());
    by.sort_by(|a, b| b.1.total_cmp(&a.1));
    by.truncate(k);
    by.into_iter()
        .map(|(word, weight)| Why { word, weight })
        .collect()
}

/// Occlusion scores of the linear model, per unit.
pub fn linear_scores(model: &LinearModel, text: &str, units: &[Unit]) -> Vec<f32> {
    occlusion_scores::<std::convert::Infallible>(text, units, |t| Ok(model.probabilities(t)))
        .unwrap_or_else(|e| match e {})
}

/// Gradient × input scores of the transformer, per word of each text.
pub fn transformer_scores(
    model: &SequenceClassifier,
    encoder: &TextEncoder,
    texts: &[&str],
    device: Device,
    precision: crate::Precision,
) -> Result<Vec<Vec<f32>>, tokenizers::Error> {
    let mode = Mode::serve(precision);
    let encoded = encoder.encode_with_offsets(texts)?;
    let items: Vec<&crate::tokenize::Encoded> = encoded.iter().map(|(e, _)| e).collect();
    let (ids, mask) = encoder.collate(&items, device);
    let emb = &model.encoder.embeddings;
    let word = emb.lookup(&ids).detach().set_requires_grad(true);
    let hidden = model
        .encoder
        .forward_words(&word, &ids, mask.as_ref(), mode);
    let logits = model.head_forward(&hidden, mask.as_ref(), mode);
    let p = model.spec.need_probability(&logits);
    p.sum(Kind::Float).backward();
    let attr = (word.grad() * &word)
        .sum_dim_intlist(-1, false, Kind::Float)
        .to_device(Device::Cpu);
    let mut out = Vec::with_capacity(texts.len());
    for (row, (text, (_, offsets))) in texts.iter().zip(&encoded).enumerate() {
        let (n, word_of) = token_words(text, offsets);
        let mut scores = vec![0f32; n];
        let a: Vec<f32> = Vec::try_from(attr.get(row as i64)).expect("f32 attributions");
        for (t, w) in word_of.into_iter().enumerate() {
            if let Some(w) = w {
                scores[w] += a.get(t).copied().unwrap_or(0.0);
            }
        }
        out.push(scores);
    }
    Ok(out)
}

/// `text`'s [`words`] (how many) and, for each token of its `offsets`, the word it falls in
/// (`None`: a special token, or a token between words).
fn token_words(text: &str, offsets: &[(usize, usize)]) -> (usize, Vec<Option<usize>>) {
    let ws = words(text);
    let of = offsets
        .iter()
        .map(|&(s, e)| {
            (e > s)
                .then(|| ws.iter().position(|&(a, b, _)| s >= a && s < b))
                .flatten()
        })
        .collect();
    (ws.len(), of)
}

/// Each unit's score by leaving its tokens out of the mean pool of the last layer: P(text) −
/// P(the same vectors pooled without the unit's tokens), through the same head — one forward
/// pass per text where occlusion takes one per unit. It keeps what the other tokens took
/// from the unit through attention, so it can only understate a unit's part; the deletion
/// test says whether its ranking holds up. Needs a mean-pooled model
/// ([`SequenceClassifier::mean_pooled`]); `units` are each text's ([`units_of`]).
pub fn pooled_scores(
    model: &SequenceClassifier,
    encoder: &TextEncoder,
    texts: &[&str],
    units: &[Vec<Unit>],
    device: Device,
    precision: crate::Precision,
) -> Result<Vec<Vec<f32>>, tokenizers::Error> {
    let _no_grad = tch::no_grad_guard();
    let mode = Mode::serve(precision);
    let encoded = encoder.encode_with_offsets(texts)?;
    let items: Vec<&crate::tokenize::Encoded> = encoded.iter().map(|(e, _)| e).collect();
    let (ids, padded) = encoder.collate(&items, device);
    let hidden = model.encoder.forward(&ids, padded.as_ref(), mode);
    let seq = ids.size()[1] as usize;
    let mask: Vec<i64> = match &padded {
        Some(m) => Vec::try_from(m.reshape([-1]).to_kind(Kind::Int64).to_device(Device::Cpu))
            .expect("an int64 mask"),
        None => vec![1; texts.len() * seq],
    };
    // Each text, then the text once per unit with that unit's tokens masked out of the pool.
    let (mut owner, mut rows, mut spans) = (Vec::new(), Vec::new(), Vec::new());
    for (row, ((text, (_, offsets)), us)) in texts.iter().zip(&encoded).zip(units).enumerate() {
        let (_, word_of) = token_words(text, offsets);
        let base = &mask[row * seq..(row + 1) * seq];
        let start = owner.len();
        owner.push(row as i64);
        rows.extend_from_slice(base);
        for u in us {
            owner.push(row as i64);
            rows.extend(base.iter().enumerate().map(|(t, &m)| {
                let dropped = word_of
                    .get(t)
                    .copied()
                    .flatten()
                    .is_some_and(|w| u.words.contains(&w));
                if dropped { 0 } else { m }
            }));
        }
        spans.push(start..owner.len());
    }
    let n = owner.len() as i64;
    let h = hidden.index_select(0, &Tensor::from_slice(&owner).to(device));
    let m = Tensor::from_slice(&rows).view([n, seq as i64]).to(device);
    let p: Vec<f32> = Vec::try_from(
        model
            .spec
            .need_probability(&model.head_forward(&h, Some(&m), mode))
            .to_kind(Kind::Float)
            .to_device(Device::Cpu),
    )
    .expect("f32 probabilities");
    Ok(spans
        .into_iter()
        .map(|r| {
            p[r.start + 1..r.end]
                .iter()
                .map(|q| p[r.start] - q)
                .collect()
        })
        .collect())
}

/// One post as the head that decided it read it ([`crate::exit::Exits::probabilities`]):
/// each real token's logits through that head, `classes` a token, in order. A mean-pooled
/// head is linear, so the post's logits are the mean of its tokens' — and its logits without
/// some tokens, the mean of the others'.
#[derive(Debug, Clone, PartialEq)]
pub struct Decided {
    pub classes: usize,
    pub logits: Vec<f32>,
    pub need: Need,
}

/// How a head's logits make P(needs support).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Need {
    /// An exit head's one log-odds.
    LogOdds,
    /// The model's own head.
    Head(crate::sequence::HeadSpec),
}

impl Need {
    pub fn of(self, logits: &[f32]) -> f32 {
        match self {
            Need::LogOdds => crate::linear::sigmoid(logits[0]),
            Need::Head(spec) => spec.need_of(logits),
        }
    }
}

/// Each unit's score from the scoring pass ([`Attribution::Scored`]): P(the post's tokens
/// pooled) − P(pooled without the unit's tokens), both through the head that decided the
/// post — what [`pooled_scores`] computes with a pass of its own, here from the tokens'
/// logits the scoring kept ([`Decided`]). `offsets` are the post's tokens' byte spans.
pub fn scored_scores(
    text: &str,
    offsets: &[(usize, usize)],
    units: &[Unit],
    d: &Decided,
) -> Vec<f32> {
    let c = d.classes.max(1);
    let n = d.logits.len() / c;
    let (_, word_of) = token_words(text, &offsets[..n.min(offsets.len())]);
    let mut total = vec![0f32; c];
    for t in d.logits.chunks(c) {
        total.iter_mut().zip(t).for_each(|(a, b)| *a += b);
    }
    let mean = |sum: &[f32], m: usize| sum.iter().map(|x| x / m as f32).collect::<Vec<f32>>();
    let full = d.need.of(&mean(&total, n.max(1)));
    units
        .iter()
        .map(|u| {
            let mut rest = total.clone();
            let mut left = n;
            for (t, w) in word_of.iter().enumerate() {
                if w.is_some_and(|w| u.words.contains(&w)) {
                    let own = &d.logits[t * c..(t + 1) * c];
                    rest.iter_mut().zip(own).for_each(|(a, b)| *a -= b);
                    left -= 1;
                }
            }
            if left == n || left == 0 {
                return 0.0;
            }
            full - d.need.of(&mean(&rest, left))
        })
        .collect()
}

/// What the deletion test found ([`deletion_test`]): over `texts` with an explanation, the
/// mean drop in P(needs support) when their top words are removed, and when as many random
/// words are (the mean over the draws), and the share of texts where the top words' drop is
/// the larger.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Deletion {
    pub texts: usize,
    /// Texts left out: no word raised their probability.
    pub unexplained: usize,
    /// Words removed per text, on average.
    pub words_removed: f64,
    pub top_drop: f64,
    pub random_drop: f64,
    pub top_beats_random: f64,
}

/// The deletion test of explanations `why` (one per text; the words as shown): each text's
/// probability `p0`, then without the words of its shown units, then without as many words
/// drawn at random from all of its words (`draws` times, seeded). `probabilities` scores a
/// batch of texts.
pub fn deletion_test<E>(
    texts: &[&str],
    p0: &[f32],
    why: &[Vec<Why>],
    draws: usize,
    seed: u64,
    mut probabilities: impl FnMut(&[&str]) -> Result<Vec<f32>, E>,
) -> Result<Deletion, E> {
    let mut rng = flagship_core::rng::Rng::new(seed);
    let (mut variants, mut owners) = (Vec::new(), Vec::new());
    let mut d = Deletion::default();
    let mut removed = 0usize;
    for (i, (text, w)) in texts.iter().zip(why).enumerate() {
        if w.is_empty() {
            d.unexplained += 1;
            continue;
        }
        // Every unit whose shown form is among the words (each unit's words all go).
        let us = units_of(text, false)
            .into_iter()
            .chain(units_of(text, true))
            .filter(|u| w.iter().any(|x| x.word == u.shown));
        let mut drop: Vec<usize> = us.flat_map(|u| u.words).collect();
        drop.sort_unstable();
        drop.dedup();
        let n = words(text).len();
        removed += drop.len();
        variants.push(without(text, &drop));
        owners.push((i, true));
        for _ in 0..draws {
            let mut all: Vec<usize> = (0..n).collect();
            rng.shuffle(&mut all);
            all.truncate(drop.len());
            variants.push(without(text, &all));
            owners.push((i, false));
        }
        d.texts += 1;
    }
    if d.texts == 0 {
        return Ok(d);
    }
    let mut p = Vec::with_capacity(variants.len());
    for chunk in variants.chunks(256) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        p.extend(probabilities(&refs)?);
    }
    let mut per: std::collections::BTreeMap<usize, (f64, f64)> = Default::default();
    for (&(i, top), q) in owners.iter().zip(&p) {
        let e = per.entry(i).or_default();
        let drop = f64::from(p0[i] - q);
        if top {
            e.0 = drop;
        } else {
            e.1 += drop / draws.max(1) as f64;
        }
    }
    let n = per.len() as f64;
    d.words_removed = removed as f64 / n;
    d.top_drop = per.values().map(|v| v.0).sum::<f64>() / n;
    d.random_drop = per.values().map(|v| v.1).sum::<f64>() / n;
    d.top_beats_random = per.values().filter(|v| v.0 > v.1).count() as f64 / n;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_keep_byte_spans_and_trim_punctuation() {
        let ws = words("  Webb's mirror, BROKEN?! @nasa #jwst …");
        let shown: Vec<&str> = ws.iter().map(|(_, _, w)| w.as_str()).collect();
        assert_eq!(shown, ["webb's", "mirror", "broken", "@nasa", "#jwst"]);
        assert_eq!(ws[1].0, "  Webb's ".len());
        let t = "  Webb's mirror, BROKEN?! @nasa #jwst …";
        assert_eq!(&t[ws[2].0..ws[2].1], "BROKEN?!");
    }

    #[test]
    fn top_sums_repeats_and_keeps_positive_words() {
        let t = "late late again fine";
        let us = units_of(t, true);
        let w = top_units(&us, &[0.1, 0.2, -0.3, 0.05], 2);
        assert_eq!(w[0].word, "late");
        assert!((w[0].weight - 0.3).abs() < 1e-6);
        assert_eq!(w[1].word, "fine");
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn units_are_content_words_with_their_negation() {
        let t = "I have been waiting for the #JWST feed, it doesn't load at all @nasa 2022";
        let shown: Vec<String> = units(t).into_iter().map(|u| u.shown).collect();
        assert_eq!(shown, ["waiting", "#jwst", "feed", "doesn't load"]);
        let us = units(t);
        assert_eq!(
            without(t, &us[3].words),
            "I have been waiting for the #JWST feed, it   at all @nasa 2022"
        );
        // Occlusion on a toy model: P = share of the word "broken".
        let p = |ts: &[&str]| -> Result<Vec<f32>, ()> {
            Ok(ts
                .iter()
                .map(|t| if t.contains("broken") { 0.9 } else { 0.2 })
                .collect())
        };
        let t = "the mirror is broken again";
        let us = units(t);
        let s = occlusion_scores(t, &us, p).unwrap();
        let w = top_units(&us, &s, 3);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].word, "broken");
        // The deletion test on that toy: the top word's removal drops 0.7; random ones less.
        let d = deletion_test(&[t], &[0.9], &[w], 20, 7, p).unwrap();
        assert_eq!((d.texts, d.words_removed), (1, 1.0));
        assert!((d.top_drop - 0.7).abs() < 1e-6, "{d:?}");
        assert!(d.random_drop < 0.3, "{d:?}");
        assert_eq!(d.top_beats_random, 1.0);
    }
}
