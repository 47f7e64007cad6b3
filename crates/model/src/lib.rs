//! flagship-model: pre-trained transformers fine-tuned on libtorch (through `tch`), CPU or CUDA,
//! and an instant TF-IDF + logistic-regression baseline.
//!
//! Reads Hugging Face checkpoint folders (`config.json`, `model.safetensors`, `tokenizer.json`;
//! BERT/MiniLM, RoBERTa, DistilBERT, MPNet) whose tensor names are the model's variable paths, so
//! loading is a name match, never a conversion. Fine-tunes a two-label head on labelled texts
//! ([`train::train`]), tunes the decision threshold for the expected `need_support` rate, and
//! writes model folders ([`Classifier`] serves them). It takes texts and booleans, not files or
//! tweets: reading tables and storage is the caller's job, and it never downloads anything.
//! The rules it shares with the rest of the workspace — the label → target map, the seeded
//! generator, F-beta / ROC-AUC / threshold tuning, the model kinds and the default settings —
//! come from `flagship-core` (light: no DataFusion, object_store or AWS here).

pub mod adamw;
pub mod checkpoint;
pub mod classifier;
pub mod config;
pub mod distill;
pub mod dropout;
pub mod embed;
pub mod encoder;
pub mod exit;
pub mod explain;
pub mod layers;
pub mod linear;
pub mod packing;
pub mod resume;
pub mod sequence;
pub mod threads;
pub mod tokenize;
pub mod train;
pub mod workers;

use std::path::{Path, PathBuf};

pub use checkpoint::{Checkpoint, CheckpointError, LoadReport};
pub use classifier::{Classifier, DataRef, Explanation, ModelCard, ModelKind, Prediction, Worded};
pub use config::{Config, Family};
pub use embed::SentenceEncoder;
pub use encoder::Mode;
pub use exit::Pace;
pub use explain::Why;
pub use layers::Precision;
pub use linear::{LinearModel, LinearOptions};
pub use sequence::{HeadSpec, Pooling, SequenceClassifier};
pub use tokenize::TextEncoder;
pub use train::{Example, TrainOptions, Trained};

/// Errors of this crate; each names the file (and tensor or key) at fault where there is one.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{path}: {message}")]
    BadFile { path: PathBuf, message: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("{0}")]
    Data(String),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// A checkpointed run stopped where it was asked to ([`resume::Checkpointing::pause_at`]).
    #[error("paused after step {step}: the same run goes on from {}", dir.display())]
    Paused { step: usize, dir: PathBuf },
}

impl ModelError {
    pub(crate) fn io(path: &Path, e: std::io::Error) -> ModelError {
        ModelError::BadFile {
            path: path.to_owned(),
            message: e.to_string(),
        }
    }
}

/// CUDA when libtorch sees a GPU, else the CPU (all cores).
pub fn device() -> tch::Device {
    tch::Device::cuda_if_available()
}

/// Held by every unit test that seeds or draws from libtorch's one global generator: tests run
/// on several threads, and one test's draws between another's `manual_seed` and its `randn`
/// change what that test computes.
#[cfg(test)]
pub(crate) fn torch_rng() -> std::sync::MutexGuard<'static, ()> {
    static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
    RNG.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Held by tests that change libtorch's thread count (the caller's, a worker's, the default for
/// threads started later), so that one test's change does not land in another's assertions.
#[cfg(test)]
pub(crate) fn thread_count_lock() -> std::sync::MutexGuard<'static, ()> {
    static COUNT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    COUNT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
