//! `config.json` of a checkpoint, read as the checkpoint writes it.
//!
//! BERT (MiniLM included), RoBERTa and MPNet name their sizes `hidden_size`, `num_hidden_layers`…;
//! DistilBERT names the same things `dim`, `n_layers`…. Both spellings are read into one
//! [`Config`]; nothing is renamed in the weights.

use std::path::Path;

use serde_json::Value;

use crate::checkpoint::CheckpointError;

/// Which architecture a checkpoint is; decides tensor names and a few details of the forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// BERT and its distillations (MiniLM): post-LayerNorm encoder, pooler on `[CLS]`.
    Bert,
    /// RoBERTa: BERT's layers, positions counted from `pad_token_id + 1`, head on `<s>`.
    Roberta,
    /// DistilBERT: no token types, `q_lin`/`sa_layer_norm`/`ffn` names, `pre_classifier` head.
    Distilbert,
    /// MPNet: BERT's post-LayerNorm layers under `attention.attn.{q,k,v,o}` names, no token
    /// types, positions counted from 2 like RoBERTa's, one relative position bias
    /// (`encoder.relative_attention_bias`) shared by every layer, RoBERTa's head on `<s>`.
    Mpnet,
}

/// The largest relative distance MPNet's buckets tell apart (`max_distance` in `transformers`'
/// `relative_position_bucket`, fixed there too).
pub const RELATIVE_MAX_DISTANCE: i64 = 128;
/// The buckets MPNet's relative positions fall into: `transformers` always calls
/// `relative_position_bucket` with 32, whatever `relative_attention_num_buckets` says (which
/// only sizes the embedding).
pub const RELATIVE_BUCKETS: i64 = 32;
/// MPNet's padding index for positions: `transformers` hard-codes 1 (`MPNetEmbeddings.padding_idx`),
/// whatever `pad_token_id` says.
pub const MPNET_POSITION_PAD: i64 = 1;

impl Family {
    /// The name Hugging Face gives the encoder inside a `*ForSequenceClassification` model,
    /// which is also the tensor prefix of such checkpoints.
    pub fn prefix(self) -> &'static str {
        match self {
            Family::Bert => "bert",
            Family::Roberta => "roberta",
            Family::Distilbert => "distilbert",
            Family::Mpnet => "mpnet",
        }
    }

    /// `architectures` entry for an exported classifier (so `transformers` can load it too).
    pub fn classifier_architecture(self) -> &'static str {
        match self {
            Family::Bert => "BertForSequenceClassification",
            Family::Roberta => "RobertaForSequenceClassification",
            Family::Distilbert => "DistilBertForSequenceClassification",
            Family::Mpnet => "MPNetForSequenceClassification",
        }
    }
}

/// Hidden activation of the feed-forward block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact (erf) GELU — Hugging Face's `"gelu"`.
    Gelu,
    /// tanh approximation — `"gelu_new"`, `"gelu_pytorch_tanh"`.
    GeluTanh,
    Relu,
}

/// The sizes and settings of an encoder, from its `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub family: Family,
    pub model_type: String,
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub intermediate_size: i64,
    pub max_position_embeddings: i64,
    /// 0 for DistilBERT and MPNet (no token-type embeddings).
    pub type_vocab_size: i64,
    pub layer_norm_eps: f64,
    pub hidden_dropout_prob: f64,
    pub attention_probs_dropout_prob: f64,
    /// Dropout before the classification head.
    pub classifier_dropout: f64,
    pub pad_token_id: i64,
    pub activation: Activation,
    /// Rows of MPNet's relative position bias (`relative_attention_num_buckets`, at least
    /// [`RELATIVE_BUCKETS`]); 0 for the families without one.
    pub relative_attention_num_buckets: i64,
    /// The whole file, kept so an export writes it back with only the classifier keys changed.
    pub raw: Value,
}

impl Config {
    /// Reads and checks `path` (a `config.json`).
    pub fn from_file(path: &Path) -> Result<Config, CheckpointError> {
        let bad = |message: String| CheckpointError::BadFile {
            path: path.to_owned(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let raw: Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        Config::from_value(raw).map_err(bad)
    }

    /// Interprets a parsed `config.json`; the error names the offending key.
    pub fn from_value(raw: Value) -> Result<Config, String> {
        let model_type = raw
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or("bert")
            .to_owned();
        let family = match model_type.as_str() {
            "bert" => Family::Bert,
            "roberta" => Family::Roberta,
            "distilbert" => Family::Distilbert,
            "mpnet" => Family::Mpnet,
            other => {
                return Err(format!(
                    "model_type `{other}` is not supported (bert, roberta, distilbert, mpnet)"
                ));
            }
        };
        // First of `keys` present; DistilBERT spells most sizes differently.
        let int = |keys: &[&str], default: Option<i64>| -> Result<i64, String> {
            match keys.iter().find_map(|k| raw.get(*k)) {
                Some(v) => v
                    .as_i64()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| format!("`{}` must be a non-negative integer", keys[0])),
                None => default.ok_or_else(|| format!("`{}` is missing", keys[0])),
            }
        };
        let float = |keys: &[&str], default: f64| -> Result<f64, String> {
            match keys
                .iter()
                .find_map(|k| raw.get(*k))
                .filter(|v| !v.is_null())
            {
                Some(v) => v
                    .as_f64()
                    .ok_or_else(|| format!("`{}` must be a number", keys[0])),
                None => Ok(default),
            }
        };
        let hidden_dropout_prob = float(&["hidden_dropout_prob", "dropout"], 0.1)?;
        let act = raw
            .get("hidden_act")
            .or_else(|| raw.get("activation"))
            .and_then(Value::as_str)
            .unwrap_or("gelu");
        let activation = match act {
            "gelu" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            other => return Err(format!("hidden_act `{other}` is not supported")),
        };
        if let Some(kind) = raw.get("position_embedding_type").and_then(Value::as_str)
            && kind != "absolute"
        {
            return Err(format!(
                "position_embedding_type `{kind}` is not supported (absolute only)"
            ));
        }
        let config = Config {
            family,
            vocab_size: int(&["vocab_size"], None)?,
            hidden_size: int(&["hidden_size", "dim"], None)?,
            num_hidden_layers: int(&["num_hidden_layers", "n_layers"], None)?,
            num_attention_heads: int(&["num_attention_heads", "n_heads"], None)?,
            intermediate_size: int(&["intermediate_size", "hidden_dim"], None)?,
            max_position_embeddings: int(&["max_position_embeddings"], Some(512))?,
            type_vocab_size: match family {
                Family::Distilbert | Family::Mpnet => 0,
                _ => int(&["type_vocab_size"], Some(2))?,
            },
            layer_norm_eps: match family {
                // DistilBERT hard-codes 1e-12 in its modules.
                Family::Distilbert => 1e-12,
                _ => float(&["layer_norm_eps"], 1e-12)?,
            },
            hidden_dropout_prob,
            attention_probs_dropout_prob: float(
                &["attention_probs_dropout_prob", "attention_dropout"],
                0.1,
            )?,
            classifier_dropout: match family {
                Family::Distilbert => float(&["seq_classif_dropout"], 0.2)?,
                // MPNetClassificationHead drops out with hidden_dropout_prob.
                Family::Mpnet => hidden_dropout_prob,
                _ => float(&["classifier_dropout"], hidden_dropout_prob)?,
            },
            pad_token_id: int(
                &["pad_token_id"],
                Some(if matches!(family, Family::Roberta | Family::Mpnet) {
                    1
                } else {
                    0
                }),
            )?,
            activation,
            relative_attention_num_buckets: match family {
                Family::Mpnet => int(&["relative_attention_num_buckets"], Some(32))?,
                _ => 0,
            },
            model_type,
            raw,
        };
        if config.hidden_size % config.num_attention_heads.max(1) != 0 {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                config.hidden_size, config.num_attention_heads
            ));
        }
        if family == Family::Mpnet && config.relative_attention_num_buckets < RELATIVE_BUCKETS {
            return Err(format!(
                "relative_attention_num_buckets {} is less than the {RELATIVE_BUCKETS} buckets MPNet's relative positions fall into",
                config.relative_attention_num_buckets
            ));
        }
        Ok(config)
    }

    /// The token id whose positions stay at the padding row when positions are counted from
    /// it + 1 (RoBERTa: `pad_token_id`; MPNet: 1), or `None` where positions are 0, 1, 2….
    pub fn position_pad(&self) -> Option<i64> {
        match self.family {
            Family::Roberta => Some(self.pad_token_id),
            Family::Mpnet => Some(MPNET_POSITION_PAD),
            Family::Bert | Family::Distilbert => None,
        }
    }

    /// The position embedding of a sequence's first token (the rows below it are never used
    /// by a real token).
    pub fn first_position(&self) -> i64 {
        self.position_pad().map_or(0, |pad| pad + 1)
    }

    pub fn head_dim(&self) -> i64 {
        self.hidden_size / self.num_attention_heads
    }

    /// Keeps the first `n` layers only: the size and the `config.json` an export writes say
    /// `n` (under the key the checkpoint spelt it with). `n` must lie in 1..=the layers there are.
    pub fn keep_layers(&mut self, n: usize) -> Result<(), String> {
        let have = self.num_hidden_layers;
        if n == 0 || n as i64 > have {
            return Err(format!(
                "layers = {n}: the base has {have} layers; keep 1 to {have}"
            ));
        }
        let n = n as i64;
        self.num_hidden_layers = n;
        if let Some(m) = self.raw.as_object_mut() {
            let key = if m.contains_key("n_layers") && !m.contains_key("num_hidden_layers") {
                "n_layers"
            } else {
                "num_hidden_layers"
            };
            m.insert(key.into(), n.into());
        }
        Ok(())
    }

    /// The config an exported two-label classifier is written with: the base's keys, plus
    /// `architectures`, `id2label`, `label2id`, so `transformers` opens it too.
    pub fn classifier_json(&self, classes: i64) -> Value {
        let mut v = self.raw.clone();
        let (id2label, label2id) = if classes == 3 {
            (
                serde_json::json!({"0": "negative", "1": "neutral", "2": "positive"}),
                serde_json::json!({"negative": 0, "neutral": 1, "positive": 2}),
            )
        } else {
            (
                serde_json::json!({"0": "does_not_need_support", "1": "needs_support"}),
                serde_json::json!({"does_not_need_support": 0, "needs_support": 1}),
            )
        };
        if let Some(m) = v.as_object_mut() {
            m.insert(
                "architectures".into(),
                serde_json::json!([self.family.classifier_architecture()]),
            );
            m.insert("id2label".into(), id2label);
            m.insert("label2id".into(), label2id);
            m.remove("_name_or_path");
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn distilbert_spelling_is_read() {
        let c = Config::from_value(json!({
            "model_type": "distilbert", "vocab_size": 100, "dim": 32, "n_layers": 2,
            "n_heads": 4, "hidden_dim": 64, "max_position_embeddings": 40,
            "dropout": 0.1, "attention_dropout": 0.1, "activation": "gelu", "pad_token_id": 0
        }))
        .unwrap();
        assert_eq!(c.family, Family::Distilbert);
        let mut kept = c.clone();
        assert!(kept.keep_layers(3).is_err());
        kept.keep_layers(1).unwrap();
        assert_eq!(kept.num_hidden_layers, 1);
        assert_eq!(kept.classifier_json(2)["n_layers"], 1);
        assert_eq!(
            Config::from_value(kept.classifier_json(2))
                .unwrap()
                .num_hidden_layers,
            1
        );
        assert_eq!(
            (c.hidden_size, c.intermediate_size, c.head_dim()),
            (32, 64, 8)
        );
        assert_eq!(c.type_vocab_size, 0);
        assert_eq!(c.classifier_dropout, 0.2);
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::from_value(json!({"model_type": "bert", "vocab_size": 10})).unwrap_err();
        assert!(e.contains("`hidden_size` is missing"), "{e}");
        let e = Config::from_value(json!({"model_type": "gpt2"})).unwrap_err();
        assert!(e.contains("gpt2"), "{e}");
        let e = Config::from_value(json!({
            "vocab_size": 10, "hidden_size": 30, "num_hidden_layers": 1, "num_attention_heads": 4,
            "intermediate_size": 8
        }))
        .unwrap_err();
        assert!(e.contains("multiple"), "{e}");
    }

    #[test]
    fn mpnet_is_read() {
        let c = Config::from_value(json!({
            "model_type": "mpnet", "vocab_size": 30527, "hidden_size": 768,
            "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
            "max_position_embeddings": 514, "layer_norm_eps": 1e-5,
            "relative_attention_num_buckets": 32, "hidden_act": "gelu", "pad_token_id": 1
        }))
        .unwrap();
        assert_eq!(c.family, Family::Mpnet);
        assert_eq!(c.family.prefix(), "mpnet");
        assert_eq!(
            (c.type_vocab_size, c.relative_attention_num_buckets),
            (0, 32)
        );
        assert_eq!((c.position_pad(), c.first_position()), (Some(1), 2));
        assert_eq!(c.layer_norm_eps, 1e-5);
        assert_eq!(
            c.classifier_json(2)["architectures"][0],
            "MPNetForSequenceClassification"
        );
        let small = json!({
            "model_type": "mpnet", "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
            "num_attention_heads": 2, "intermediate_size": 16, "relative_attention_num_buckets": 16
        });
        let e = Config::from_value(small).unwrap_err();
        assert!(e.contains("relative_attention_num_buckets"), "{e}");
    }

    #[test]
    fn roberta_pads_with_one_by_default() {
        let c = Config::from_value(json!({
            "model_type": "roberta", "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
            "num_attention_heads": 2, "intermediate_size": 16
        }))
        .unwrap();
        assert_eq!(c.pad_token_id, 1);
        assert_eq!(
            c.classifier_json(2)["architectures"][0],
            "RobertaForSequenceClassification"
        );
    }
}
