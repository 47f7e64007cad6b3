//! Sentence embeddings from the frozen base encoder: what the desk groups questions by and
//! matches saved answers with.
//!
//! The default base (all-MiniLM-L6-v2) is a sentence-transformers checkpoint made for this:
//! its embedding is the mean of the last hidden states over the real tokens, normalised to
//! unit length, so the cosine of two texts is their dot product. [`SentenceEncoder`] loads
//! the bare encoder of any BERT-shaped checkpoint folder (never the fine-tuned classifier:
//! its encoder has drifted towards the labels), never trains, and reads texts only.

use std::path::Path;
use std::sync::Mutex;

use tch::nn::VarStore;
use tch::{Device, Kind};

use crate::ModelError;
use crate::checkpoint::Checkpoint;
use crate::encoder::{Encoder, Mode, Pass};
use crate::layers::Precision;
use crate::tokenize::TextEncoder;

/// Texts per forward pass.
const BATCH: usize = 32;

/// Tokens read per text when the checkpoint does not say (`sentence_bert_config.json`'s
/// `max_seq_length`).
const DEFAULT_MAX_LENGTH: usize = 128;

struct Loaded {
    _vs: VarStore,
    encoder: Encoder,
}

/// A frozen encoder with mean pooling and unit-length output.
pub struct SentenceEncoder {
    /// libtorch tensors may move between threads but not be shared: one pass at a time.
    loaded: Mutex<Loaded>,
    tokens: TextEncoder,
    device: Device,
    precision: Precision,
    /// Names the encoder (its folder's name and size), for logs and the desk's records.
    pub id: String,
    /// The embedding's length (the encoder's hidden size).
    pub dim: usize,
}

impl SentenceEncoder {
    /// Loads the checkpoint folder `dir` (`config.json`, `model.safetensors`,
    /// `tokenizer.json`) onto `device`. Its pooling must be mean pooling: a checkpoint whose
    /// `1_Pooling/config.json` says otherwise is refused (its embedding would not be the one
    /// it was trained to give).
    pub fn load_on(dir: &Path, device: Device) -> Result<SentenceEncoder, ModelError> {
        let pooling = crate::checkpoint::resolve_pooling(dir, crate::sequence::Pooling::Auto);
        if pooling != crate::sequence::Pooling::Mean {
            return Err(ModelError::BadFile {
                path: dir.join("1_Pooling").join("config.json"),
                message: "not a mean-pooling sentence-transformers checkpoint (pooling_mode_mean_tokens is not true)".into(),
            });
        }
        let ck = Checkpoint::open(dir)?;
        let prefix = ck.config.family.prefix();
        let mut vs = VarStore::new(device);
        let encoder = Encoder::new(&(vs.root() / prefix), &ck.config);
        ck.copy_into(&mut vs, prefix, false)?;
        vs.freeze();
        let max_length = std::fs::read_to_string(dir.join("sentence_bert_config.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v.get("max_seq_length").and_then(|m| m.as_u64()))
            .map_or(DEFAULT_MAX_LENGTH, |m| m as usize)
            .min(ck.config.max_position_embeddings as usize);
        let tokens = TextEncoder::from_file(
            &dir.join("tokenizer.json"),
            max_length,
            ck.config.pad_token_id,
        )?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dim = ck.config.hidden_size as usize;
        Ok(SentenceEncoder {
            loaded: Mutex::new(Loaded { _vs: vs, encoder }),
            tokens,
            device,
            precision: Precision::F32,
            id: format!("{name} ({dim} dims, mean pooling)"),
            dim,
        })
    }

    /// [`SentenceEncoder::load_on`] the CPU: the desk's encoder runs beside the classifier
    /// on a host without a GPU as often as with one.
    pub fn load(dir: &Path) -> Result<SentenceEncoder, ModelError> {
        Self::load_on(dir, Device::Cpu)
    }

    /// Matrix products in this arithmetic from now on (f32 by default: the desk's similarity
    /// threshold was measured in f32).
    pub fn set_precision(&mut self, p: Precision) {
        self.precision = p;
    }

    /// One unit-length vector per text, in order (an empty text gives the special tokens'
    /// embedding, like sentence-transformers).
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ModelError> {
        let enc = self
            .tokens
            .encode(texts)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        let loaded = self
            .loaded
            .lock()
            .map_err(|_| ModelError::Data("the sentence encoder's lock was poisoned".into()))?;
        let mode = Mode::serve(self.precision);
        let encoder = &loaded.encoder;
        // The passes a served classifier scores in ([`crate::train::scoring_passes`]: packed,
        // sorted by length).
        let (packed, passes) = crate::train::scoring_passes(encoder, &enc, BATCH);
        let mut out = vec![Vec::new(); texts.len()];
        for chunk in passes {
            let items: Vec<_> = chunk.iter().map(|&i| &enc[i]).collect();
            let lens: Vec<usize> = items.iter().map(|e| e.ids.len()).collect();
            let (ids, mask) = self.tokens.collate(&items, self.device);
            let pooled = tch::no_grad(|| {
                let (hidden, mask) = Pass::new(encoder, &ids, mask, &lens, packed, mode)
                    .through_all(encoder, mode)
                    .view();
                let summed = match &mask {
                    Some(m) => {
                        let m = m.to_kind(Kind::Float).unsqueeze(-1);
                        (&hidden * &m).sum_dim_intlist(1, false, Kind::Float)
                            / m.sum_dim_intlist(1, false, Kind::Float).clamp_min(1e-9)
                    }
                    None => hidden.mean_dim(1, false, Kind::Float),
                };
                let norm = summed
                    .norm_scalaropt_dim(2, [1i64].as_slice(), true)
                    .clamp_min(1e-12);
                (summed / norm).to_device(Device::Cpu).contiguous()
            });
            let flat = Vec::<f32>::try_from(pooled.view([-1]))?;
            for (&i, v) in chunk.iter().zip(flat.chunks(self.dim)) {
                out[i] = v.to_vec();
            }
        }
        Ok(out)
    }
}

impl flagship_core::live::Embed for SentenceEncoder {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        SentenceEncoder::embed(self, texts).map_err(|e| e.to_string())
    }

    fn id(&self) -> &str {
        &self.id
    }
}

/// The cosine of two unit-length vectors (their dot product).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_question_is_closer_to_its_paraphrase_than_to_another_question() {
        let base = Checkpoint::default_base().expect("base model (cargo xtask setup)");
        let enc = SentenceEncoder::load(&base).unwrap();
        let v = enc
            .embed(&[
                "when will webb send its first images?",
                "what date do the first JWST pictures come out?",
                "how do I fix my printer's paper jam",
                "",
            ])
            .unwrap();
        assert_eq!(v.len(), 4);
        for e in &v {
            assert_eq!(e.len(), enc.dim);
            let n: f32 = e.iter().map(|x| x * x).sum();
            assert!((n - 1.0).abs() < 1e-4, "unit length: {n}");
        }
        let same = cosine(&v[0], &v[1]);
        let other = cosine(&v[0], &v[2]);
        assert!(same > other + 0.2, "paraphrase {same} vs unrelated {other}");
        // Padding changes nothing: a text alone and in a batch with a longer one agree.
        let alone = enc
            .embed(&["when will webb send its first images?"])
            .unwrap();
        assert!(cosine(&alone[0], &v[0]) > 0.9999);
    }
}
