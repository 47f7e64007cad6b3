//! flagship-model: pre-trained transformers on libtorch (through `tch`), CPU or CUDA.
//!
//! Reads a Hugging Face checkpoint folder (`config.json`, `model.safetensors`,
//! `tokenizer.json`), checks every tensor against the config by name and shape — the names
//! mirror the checkpoint's, so loading is a name match, never a conversion — and (with the
//! training issue) fine-tunes and exports classifiers. It reads checkpoints and writes model
//! folders; it knows nothing of tweets' storage or the other stages.

pub mod checkpoint;

pub use checkpoint::{BertConfig, Checkpoint, CheckpointError};

/// CUDA when libtorch sees a GPU, else the CPU (all cores).
pub fn device() -> tch::Device {
    tch::Device::cuda_if_available()
}
