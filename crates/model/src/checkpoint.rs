//! Hugging Face checkpoint folders: find, open, and copy into a model by tensor name.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use tch::Tensor;
use tch::nn::VarStore;

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(
        "{path}: missing (a checkpoint folder needs config.json, model.safetensors and tokenizer.json)"
    )]
    MissingFile { path: PathBuf },
    #[error("{path}: {message}")]
    BadFile { path: PathBuf, message: String },
    #[error(
        "{path}: pickled PyTorch weights, which are never loaded (unpickling can run code); the folder needs model.safetensors (convert it, e.g. `save_pretrained(folder, safe_serialization=True)` in transformers)"
    )]
    Pickled { path: PathBuf },
    #[error("{path}: tensor `{tensor}` is missing{}", more_note(*.more))]
    MissingTensor {
        path: PathBuf,
        tensor: String,
        /// How many other expected tensors are missing too.
        more: usize,
    },
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
    #[error("{0}")]
    Torch(#[from] tch::TchError),
}

fn more_note(more: usize) -> String {
    if more == 0 {
        String::new()
    } else {
        format!(" (and {more} more)")
    }
}

/// Weight files in PyTorch's pickle format, named so a folder holding only one is refused with
/// a reason rather than "model.safetensors missing".
const PICKLED: [&str; 4] = [
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "model.pt",
    "model.pth",
];

/// An opened checkpoint folder: config parsed, weights read on the CPU.
pub struct Checkpoint {
    pub dir: PathBuf,
    pub config: Config,
    /// Encoder prefix in the file: "" for a bare encoder, "bert." (etc.) for a classifier.
    pub prefix: String,
    pub tensors: HashMap<String, Tensor>,
}

/// What a copy from a checkpoint into a model did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct LoadReport {
    /// Model variables filled from the file.
    pub loaded: usize,
    /// Model variables the file lacks and that keep their fresh initialisation (a new head).
    pub initialised: Vec<String>,
    /// File tensors no variable asked for (e.g. `embeddings.position_ids`, a pretraining head).
    pub unused: Vec<String>,
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

    /// Opens `dir`: the three files must exist, `config.json` must parse, weights are read.
    /// Names and shapes are checked when the weights are copied into a model ([`Checkpoint::copy_into`]).
    /// Weights are read from `model.safetensors` only: a folder with pickled weights alone
    /// (`pytorch_model.bin`…) is refused with [`CheckpointError::Pickled`], never unpickled.
    pub fn open(dir: &Path) -> Result<Checkpoint, CheckpointError> {
        let config_path = Self::file(dir, "config.json")?;
        if !dir.join("model.safetensors").is_file()
            && let Some(pickle) = PICKLED
                .iter()
                .map(|name| dir.join(name))
                .find(|p| p.is_file())
        {
            return Err(CheckpointError::Pickled { path: pickle });
        }
        let weights = Self::file(dir, "model.safetensors")?;
        Self::file(dir, "tokenizer.json")?;
        let config = Config::from_file(&config_path)?;
        let tensors: HashMap<String, Tensor> = Tensor::read_safetensors(&weights)
            .map_err(|e| CheckpointError::BadFile {
                path: weights.clone(),
                message: e.to_string(),
            })?
            .into_iter()
            .collect();
        let family = config.family.prefix();
        let prefix = ["", "bert.", "roberta.", "distilbert.", "mpnet."]
            .into_iter()
            .find(|p| tensors.contains_key(&format!("{p}embeddings.word_embeddings.weight")))
            .unwrap_or(if tensors.keys().any(|k| k.starts_with(family)) {
                family
            } else {
                ""
            })
            .to_owned();
        Ok(Checkpoint {
            dir: dir.to_owned(),
            config,
            prefix,
            tensors,
        })
    }

    fn file(dir: &Path, name: &str) -> Result<PathBuf, CheckpointError> {
        let p = dir.join(name);
        if p.is_file() {
            Ok(p)
        } else {
            Err(CheckpointError::MissingFile { path: p })
        }
    }

    pub fn weights_path(&self) -> PathBuf {
        self.dir.join("model.safetensors")
    }

    /// Copies the file's tensors into `vs` by name. A model variable `bert.X` (the encoder
    /// inside a classifier) is looked up as `<file prefix>X`, so a bare encoder checkpoint and
    /// an exported classifier both load; any other variable (pooler, head) by its own name.
    /// Encoder variables must all be present with the right shape; with `strict`, every
    /// variable must (loading an exported model); otherwise missing head variables keep their
    /// initialisation and are listed in the report.
    pub fn copy_into(
        &self,
        vs: &mut VarStore,
        encoder_root: &str,
        strict: bool,
    ) -> Result<LoadReport, CheckpointError> {
        let vars = vs.variables();
        let mut names: Vec<&String> = vars.keys().collect();
        names.sort();
        let mut report = LoadReport::default();
        let mut used = BTreeSet::new();
        let mut missing: Vec<String> = Vec::new();
        let root = if encoder_root.is_empty() {
            String::new()
        } else {
            format!("{encoder_root}.")
        };
        for name in names {
            let var = &vars[name];
            let (file_name, required) = match name.strip_prefix(&root) {
                Some(rest) if !rest.starts_with("pooler.") => {
                    (format!("{}{rest}", self.prefix), true)
                }
                Some(rest) => (format!("{}{rest}", self.prefix), strict),
                None => (name.clone(), strict),
            };
            match self.tensors.get(&file_name) {
                Some(t) => {
                    if t.size() != var.size() {
                        return Err(CheckpointError::Shape {
                            path: self.weights_path(),
                            tensor: file_name,
                            expected: var.size(),
                            found: t.size(),
                        });
                    }
                    tch::no_grad(|| var.shallow_clone().copy_(t));
                    used.insert(file_name);
                    report.loaded += 1;
                }
                None if required => missing.push(file_name),
                None => report.initialised.push(name.clone()),
            }
        }
        if let Some(first) = missing.first() {
            return Err(CheckpointError::MissingTensor {
                path: self.weights_path(),
                tensor: first.clone(),
                more: missing.len() - 1,
            });
        }
        report.unused = self
            .tensors
            .keys()
            .filter(|k| !used.contains(*k))
            .cloned()
            .collect();
        report.unused.sort();
        Ok(report)
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

/// The pooling to train with: `auto` becomes what the base was trained with — mean when its
/// sentence-transformers `1_Pooling/config.json` sets `pooling_mode_mean_tokens`, else the
/// first token through the family's head.
pub fn resolve_pooling(base: &Path, pooling: crate::sequence::Pooling) -> crate::sequence::Pooling {
    use crate::sequence::Pooling;
    if pooling != Pooling::Auto {
        return pooling;
    }
    let mean = std::fs::read_to_string(base.join("1_Pooling").join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("pooling_mode_mean_tokens").and_then(|b| b.as_bool()))
        .unwrap_or(false);
    if mean { Pooling::Mean } else { Pooling::Cls }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pickled_weights_are_refused_never_read() {
        let dir = tempfile::tempdir().unwrap();
        let config = r#"{"model_type": "bert", "vocab_size": 10, "hidden_size": 8,
            "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16}"#;
        std::fs::write(dir.path().join("config.json"), config).unwrap();
        std::fs::write(dir.path().join("tokenizer.json"), "{}").unwrap();
        // Not even a valid pickle: it must be refused by name, never opened.
        std::fs::write(
            dir.path().join("pytorch_model.bin"),
            b"\x80\x02not a pickle",
        )
        .unwrap();
        let e = Checkpoint::open(dir.path()).err().unwrap();
        assert!(matches!(e, CheckpointError::Pickled { .. }), "{e}");
        let m = e.to_string();
        assert!(
            m.contains("pytorch_model.bin") && m.contains("model.safetensors"),
            "{m}"
        );
        // Without any weights it is the ordinary missing file.
        std::fs::remove_file(dir.path().join("pytorch_model.bin")).unwrap();
        let e = Checkpoint::open(dir.path()).err().unwrap();
        assert!(matches!(e, CheckpointError::MissingFile { .. }), "{e}");
    }
}
