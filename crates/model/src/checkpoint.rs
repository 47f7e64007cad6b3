//! Hugging Face checkpoint folders: find, open, check.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tch::Tensor;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(
        "{path}: missing (a checkpoint folder needs config.json, model.safetensors and tokenizer.json)"
    )]
    MissingFile { path: PathBuf },
    #[error("{path}: {message}")]
    BadFile { path: PathBuf, message: String },
    #[error("{path}: tensor `{tensor}` is missing")]
    MissingTensor { path: PathBuf, tensor: String },
    #[error("{path}: tensor `{tensor}` has shape {found:?}, config.json implies {expected:?}")]
    Shape {
        path: PathBuf,
        tensor: String,
        expected: Vec<i64>,
        found: Vec<i64>,
    },
    #[error(
        "no base model: set model.base in flagship.toml, FLAGSHIP_BASE_MODEL, or run `cargo xtask setup` (installs the MiniLM into .venv/base-model)"
    )]
    NoBaseModel,
}

/// `config.json` of the BERT family, deserialized as the checkpoint writes it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BertConfig {
    #[serde(default = "default_model_type")]
    pub model_type: String,
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub intermediate_size: i64,
    pub max_position_embeddings: i64,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: i64,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub hidden_dropout_prob: f64,
    #[serde(default)]
    pub attention_probs_dropout_prob: f64,
    #[serde(default)]
    pub pad_token_id: i64,
}

fn default_model_type() -> String {
    "bert".into()
}
fn default_type_vocab() -> i64 {
    2
}
fn default_eps() -> f64 {
    1e-12
}

impl BertConfig {
    /// Every encoder tensor's name (without the model prefix) and the shape the config implies.
    pub fn expected_tensors(&self) -> Vec<(String, Vec<i64>)> {
        let (h, i) = (self.hidden_size, self.intermediate_size);
        let mut v = vec![
            (
                "embeddings.word_embeddings.weight".into(),
                vec![self.vocab_size, h],
            ),
            (
                "embeddings.position_embeddings.weight".into(),
                vec![self.max_position_embeddings, h],
            ),
            (
                "embeddings.token_type_embeddings.weight".into(),
                vec![self.type_vocab_size, h],
            ),
            ("embeddings.LayerNorm.weight".into(), vec![h]),
            ("embeddings.LayerNorm.bias".into(), vec![h]),
        ];
        for l in 0..self.num_hidden_layers {
            let p = format!("encoder.layer.{l}");
            for (name, shape) in [
                ("attention.self.query.weight", vec![h, h]),
                ("attention.self.query.bias", vec![h]),
                ("attention.self.key.weight", vec![h, h]),
                ("attention.self.key.bias", vec![h]),
                ("attention.self.value.weight", vec![h, h]),
                ("attention.self.value.bias", vec![h]),
                ("attention.output.dense.weight", vec![h, h]),
                ("attention.output.dense.bias", vec![h]),
                ("attention.output.LayerNorm.weight", vec![h]),
                ("attention.output.LayerNorm.bias", vec![h]),
                ("intermediate.dense.weight", vec![i, h]),
                ("intermediate.dense.bias", vec![i]),
                ("output.dense.weight", vec![h, i]),
                ("output.dense.bias", vec![h]),
                ("output.LayerNorm.weight", vec![h]),
                ("output.LayerNorm.bias", vec![h]),
            ] {
                v.push((format!("{p}.{name}"), shape));
            }
        }
        v
    }
}

/// An opened checkpoint folder: config parsed, weights loaded on the CPU.
pub struct Checkpoint {
    pub dir: PathBuf,
    pub config: BertConfig,
    /// Tensor prefix in the file: "" for a bare encoder, "bert." for a classifier checkpoint.
    pub prefix: String,
    pub tensors: HashMap<String, Tensor>,
}

impl Checkpoint {
    /// The default base model: `FLAGSHIP_BASE_MODEL`, else `$FLAGSHIP_VENV/base-model`
    /// (cargo sets it), else `.venv/base-model` in the current folder or one above it.
    pub fn default_base() -> Result<PathBuf, CheckpointError> {
        if let Some(p) = std::env::var_os("FLAGSHIP_BASE_MODEL") {
            return Ok(PathBuf::from(p));
        }
        let cwd = std::env::current_dir().unwrap_or_default();
        std::env::var_os("FLAGSHIP_VENV")
            .map(PathBuf::from)
            .into_iter()
            .chain(cwd.ancestors().map(|d| d.join(".venv")))
            .map(|v| v.join("base-model"))
            .find(|p| p.join("config.json").is_file())
            .ok_or(CheckpointError::NoBaseModel)
    }

    /// Opens `dir` and checks every tensor the config implies, by name and shape.
    pub fn open(dir: &Path) -> Result<Checkpoint, CheckpointError> {
        let file = |name: &str| {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(CheckpointError::MissingFile { path: p })
            }
        };
        let config_path = file("config.json")?;
        let weights = file("model.safetensors")?;
        file("tokenizer.json")?;
        let bad = |path: &Path, message: String| CheckpointError::BadFile {
            path: path.to_owned(),
            message,
        };
        let text =
            std::fs::read_to_string(&config_path).map_err(|e| bad(&config_path, e.to_string()))?;
        let config: BertConfig =
            serde_json::from_str(&text).map_err(|e| bad(&config_path, e.to_string()))?;
        let tensors: HashMap<String, Tensor> = Tensor::read_safetensors(&weights)
            .map_err(|e| bad(&weights, e.to_string()))?
            .into_iter()
            .collect();
        let prefix = ["", "bert.", "roberta."]
            .into_iter()
            .find(|p| tensors.contains_key(&format!("{p}embeddings.word_embeddings.weight")))
            .unwrap_or("")
            .to_owned();
        for (name, shape) in config.expected_tensors() {
            let full = format!("{prefix}{name}");
            let t = tensors
                .get(&full)
                .ok_or_else(|| CheckpointError::MissingTensor {
                    path: weights.clone(),
                    tensor: full.clone(),
                })?;
            if t.size() != shape {
                return Err(CheckpointError::Shape {
                    path: weights.clone(),
                    tensor: full,
                    expected: shape,
                    found: t.size(),
                });
            }
        }
        Ok(Checkpoint {
            dir: dir.to_owned(),
            config,
            prefix,
            tensors,
        })
    }

    /// Total number of parameters in the file.
    pub fn num_parameters(&self) -> i64 {
        self.tensors
            .values()
            .map(Tensor::numel)
            .map(|n| n as i64)
            .sum()
    }
}
