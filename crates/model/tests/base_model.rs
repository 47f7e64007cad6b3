//! The real pre-trained MiniLM (installed by `cargo xtask setup`) opens through libtorch, and
//! broken checkpoints are refused with the file and tensor named.

use std::path::Path;

use flagship_model::{Checkpoint, CheckpointError, HeadSpec, SequenceClassifier};
use tch::Device;

fn base() -> std::path::PathBuf {
    Checkpoint::default_base().expect("the base model (run `cargo xtask setup`)")
}

#[test]
fn minilm_opens_and_matches_its_config() {
    let ck = Checkpoint::open(&base()).unwrap();
    assert_eq!(ck.config.model_type, "bert");
    assert_eq!(
        (ck.config.num_hidden_layers, ck.config.hidden_size),
        (6, 384)
    );
    // MiniLM-L6-H384: 22.7 M parameters.
    let n = ck.num_parameters();
    println!(
        "MiniLM-L6-H384 from {}: {n} parameters, libtorch device {:?}",
        ck.dir.display(),
        flagship_model::device()
    );
    assert!((22_000_000..23_500_000).contains(&n), "{n}");
    // libtorch computes on the weights: LayerNorm gains are near 1, not garbage.
    let gain = ck.tensors["embeddings.LayerNorm.weight"]
        .mean(tch::Kind::Float)
        .double_value(&[]);
    assert!(gain > 0.2 && gain < 2.0, "{gain}");
}

fn copy_checkpoint(to: &Path) {
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(base().join(f), to.join(f)).unwrap();
    }
}

#[test]
fn missing_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    copy_checkpoint(dir.path());
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    let e = Checkpoint::open(dir.path()).err().unwrap();
    assert!(matches!(e, CheckpointError::MissingFile { .. }));
    assert!(e.to_string().contains("tokenizer.json"), "{e}");
}

#[test]
fn config_that_does_not_fit_the_weights_names_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    copy_checkpoint(dir.path());
    let cfg = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    let load = |v: &serde_json::Value| {
        std::fs::write(dir.path().join("config.json"), v.to_string()).unwrap();
        SequenceClassifier::load(dir.path(), HeadSpec::CLS2, Device::Cpu, false)
            .err()
            .unwrap()
            .to_string()
    };
    v["intermediate_size"] = 1024.into();
    let e = load(&v);
    assert!(
        e.contains("tensor `encoder.layer.0.intermediate.dense.bias` has shape [1536], config.json implies [1024]"),
        "{e}"
    );

    v["intermediate_size"] = 1536.into();
    v["num_hidden_layers"] = 7.into();
    let e = load(&v);
    assert!(
        e.contains("model.safetensors: tensor `encoder.layer.6.")
            && e.contains("is missing (and 15 more)"),
        "{e}"
    );

    v["num_hidden_layers"] = 6.into();
    v["model_type"] = "gpt2".into();
    let e = load(&v);
    assert!(e.contains("config.json") && e.contains("gpt2"), "{e}");
}
