//! Why a post was flagged: the few words that pushed its probability up.
//!
//! - Transformer: gradient × input on the word embeddings (one forward and one backward pass
//!   per batch, gradients of P(needs support) only — the weights are frozen), summed over each
//!   word's tokens.
//! - Linear model: occlusion — the probability drop when the word is removed (each is a sparse
//!   dot product, so this is cheap).
//! - Ensemble: the two, weighted like the probabilities.
//!
//! Words are the text's whitespace-separated words with surrounding punctuation trimmed;
//! repeated words are summed. Only words that pushed the probability up are returned, the
//! strongest first, with their contribution (probability units, approximately additive).

use tch::{Device, Kind};

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

/// Per-word scores (one per [`words`] entry) → the top `k` positive ones, repeated words summed.
fn top(text: &str, scores: &[f32], k: usize) -> Vec<Why> {
    let mut by: Vec<(String, f32)> = Vec::new();
    for ((_, _, w), &s) in words(text).iter().zip(scores) {
        match by.iter_mut().find(|(x, _)| x == w) {
            Some(e) => e.1 += s,
            None => by.push((w.clone(), s)),
        }
    }
    by.retain(|(_, s)| *s > 0.0 && s.is_finite());
    by.sort_by(|a, b| b.1.total_cmp(&a.1));
    by.truncate(k);
    by.into_iter()
        .map(|(word, weight)| Why { word, weight })
        .collect()
}

/// Occlusion scores of the linear model: P(text) − P(text without the word), per word.
pub fn linear_scores(model: &LinearModel, text: &str) -> Vec<f32> {
    let ws = words(text);
    let full = model.probabilities(&[text])[0];
    let without: Vec<String> = ws
        .iter()
        .map(|&(s, e, _)| format!("{}{}", &text[..s], &text[e..]))
        .collect();
    let refs: Vec<&str> = without.iter().map(String::as_str).collect();
    model
        .probabilities(&refs)
        .into_iter()
        .map(|p| full - p)
        .collect()
}

/// Gradient × input scores of the transformer, per word of each text.
pub fn transformer_scores(
    model: &SequenceClassifier,
    encoder: &TextEncoder,
    texts: &[&str],
    device: Device,
    precision: crate::Precision,
) -> Result<Vec<Vec<f32>>, tokenizers::Error> {
    let mode = Mode {
        train: false,
        precision,
    };
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
        let ws = words(text);
        let mut scores = vec![0f32; ws.len()];
        let a: Vec<f32> = Vec::try_from(attr.get(row as i64)).expect("f32 attributions");
        for (t, &(s, e)) in offsets.iter().enumerate() {
            if e <= s {
                continue; // special tokens
            }
            if let Some(w) = ws.iter().position(|&(ws, we, _)| s >= ws && s < we) {
                scores[w] += a.get(t).copied().unwrap_or(0.0);
            }
        }
        out.push(scores);
    }
    Ok(out)
}

/// The top `k` words of each text from per-word scores.
pub fn explain_scores(texts: &[&str], scores: &[Vec<f32>], k: usize) -> Vec<Vec<Why>> {
    texts
        .iter()
        .zip(scores)
        .map(|(t, s)| top(t, s, k))
        .collect()
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
        let w = top(t, &[0.1, 0.2, -0.3, 0.05], 2);
        assert_eq!(w[0].word, "late");
        assert!((w[0].weight - 0.3).abs() < 1e-6);
        assert_eq!(w[1].word, "fine");
        assert_eq!(w.len(), 2);
    }
}
