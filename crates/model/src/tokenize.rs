//! Texts → token ids with the checkpoint's own `tokenizer.json` (Hugging Face `tokenizers`),
//! and ids → padded batches (dynamic padding: each batch as long as its longest text).

use std::path::Path;

use tch::{Device, Kind, Tensor};
use tokenizers::Tokenizer;

use crate::checkpoint::CheckpointError;

/// One text's token ids, special tokens included.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub ids: Vec<i64>,
    /// The text was longer than `max_length` tokens and was cut.
    pub truncated: bool,
}

/// Each token's byte span in its text.
pub type Offsets = Vec<(usize, usize)>;

pub struct TextEncoder {
    tokenizer: Tokenizer,
    max_length: usize,
    pad_id: i64,
}

impl TextEncoder {
    /// Loads `tokenizer.json`; `max_length` counts special tokens (as `transformers` does).
    pub fn from_file(
        path: &Path,
        max_length: usize,
        pad_id: i64,
    ) -> Result<TextEncoder, CheckpointError> {
        let mut tokenizer = Tokenizer::from_file(path).map_err(|e| CheckpointError::BadFile {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let pad_id = tokenizer
            .get_padding()
            .map(|p| p.pad_id as i64)
            .unwrap_or(pad_id);
        // Truncation and padding are done here (counted, per batch), not by the file's settings.
        tokenizer
            .with_truncation(None)
            .map_err(|e| CheckpointError::BadFile {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
        tokenizer.with_padding(None);
        Ok(TextEncoder {
            tokenizer,
            max_length: max_length.max(2),
            pad_id,
        })
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Tokens the tokenizer can produce (added tokens included).
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    pub fn pad_id(&self) -> i64 {
        self.pad_id
    }

    /// Encodes all texts (in parallel). Over-long texts keep their first tokens and the
    /// closing special token, like `transformers`' truncation of a single sequence.
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<Encoded>, tokenizers::Error> {
        let encodings = self.tokenizer.encode_batch(texts.to_vec(), true)?;
        Ok(encodings.iter().map(|e| self.cut(e, false).0).collect())
    }

    /// Like [`TextEncoder::encode`], with each kept token's byte span in its text (`(0, 0)`
    /// for special tokens).
    pub fn encode_with_offsets(
        &self,
        texts: &[&str],
    ) -> Result<Vec<(Encoded, Offsets)>, tokenizers::Error> {
        let encodings = self.tokenizer.encode_batch(texts.to_vec(), true)?;
        Ok(encodings.iter().map(|e| self.cut(e, true)).collect())
    }

    /// One encoding cut to `max_length` — its first tokens and the closing special token —
    /// with the kept tokens' byte spans when `offsets` is asked for (else none).
    fn cut(&self, e: &tokenizers::Encoding, offsets: bool) -> (Encoded, Offsets) {
        let mut ids: Vec<i64> = e.get_ids().iter().map(|&i| i as i64).collect();
        let mut spans = if offsets {
            e.get_offsets().to_vec()
        } else {
            Vec::new()
        };
        let truncated = ids.len() > self.max_length;
        if truncated {
            let last = *ids.last().expect("non-empty");
            ids.truncate(self.max_length - 1);
            ids.push(last);
            if offsets {
                spans.truncate(self.max_length - 1);
                spans.push((0, 0));
            }
        }
        (Encoded { ids, truncated }, spans)
    }

    /// `[batch, longest]` ids (padded with the pad id) and mask (1 on real tokens), on `device`.
    /// No mask when every text has the same length (common in length-sorted batches): the
    /// attention then runs unmasked, which is libtorch's fastest path.
    pub fn collate(&self, items: &[&Encoded], device: Device) -> (Tensor, Option<Tensor>) {
        let longest = items.iter().map(|e| e.ids.len()).max().unwrap_or(1).max(1);
        let padded = items.iter().any(|e| e.ids.len() != longest);
        let mut ids = Vec::with_capacity(items.len() * longest);
        let mut mask = Vec::with_capacity(items.len() * longest);
        for e in items {
            ids.extend_from_slice(&e.ids);
            mask.extend(std::iter::repeat_n(1i64, e.ids.len()));
            ids.extend(std::iter::repeat_n(self.pad_id, longest - e.ids.len()));
            mask.extend(std::iter::repeat_n(0i64, longest - e.ids.len()));
        }
        let shape = [items.len() as i64, longest as i64];
        (
            Tensor::from_slice(&ids).view(shape).to_device(device),
            padded.then(|| {
                Tensor::from_slice(&mask)
                    .view(shape)
                    .to_kind(Kind::Int64)
                    .to_device(device)
            }),
        )
    }
}
