//! The encoder computes what Hugging Face `transformers` computes, for the same checkpoint and
//! inputs: the real MiniLM (tokens and last hidden state) and tiny random BERT, RoBERTa,
//! DistilBERT and MPNet classifiers (hidden state and logits). References come from
//! `scripts/model_reference.py` and live in `fixtures/model/`; no Python runs here.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use flagship_model::encoder::relative_position_bucket;
use flagship_model::{Checkpoint, HeadSpec, Mode, Precision, SequenceClassifier, TextEncoder};
use flagship_testkit::fixture;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

const TOLERANCE: f64 = 1e-4;

fn base() -> PathBuf {
    Checkpoint::default_base().expect("the base model (run `cargo xtask setup`)")
}

fn reference(path: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(path)
        .unwrap()
        .into_iter()
        .collect()
}

/// Max |a − b| over real (unpadded) tokens of `[batch, seq, hidden]` outputs.
fn max_diff_on_tokens(a: &Tensor, b: &Tensor, mask: &Tensor) -> f64 {
    let keep = mask.unsqueeze(-1).to_kind(Kind::Float);
    ((a - b).abs() * keep).max().double_value(&[])
}

/// Mean |bf16 − `want`| over real tokens and hidden units: the encoder run with bf16 matrix
/// products on `ids`.
fn bf16_mean_diff(model: &SequenceClassifier, ids: &Tensor, mask: &Tensor, want: &Tensor) -> f64 {
    let bf16 = tch::no_grad(|| {
        model.encoder.forward(
            ids,
            Some(mask),
            Mode {
                train: false,
                precision: Precision::Bf16,
            },
        )
    });
    let keep = mask.unsqueeze(-1).to_kind(Kind::Float);
    let width = want.size().last().copied().unwrap_or(1) as f64;
    ((&bf16 - want).abs() * &keep)
        .sum(Kind::Float)
        .double_value(&[])
        / keep.sum(Kind::Float).double_value(&[])
        / width
}

#[test]
fn minilm_tokens_match_transformers() {
    let r: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("model/minilm-reference.json")).unwrap(),
    )
    .unwrap();
    let texts: Vec<&str> = r["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let enc = TextEncoder::from_file(&base().join("tokenizer.json"), 64, 0).unwrap();
    let ours = enc.encode(&texts).unwrap();
    for (i, (mine, want)) in ours.iter().zip(r["ids"].as_array().unwrap()).enumerate() {
        let want: Vec<i64> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        assert_eq!(mine.ids, want, "text {i}: {:?}", texts[i]);
    }
    // Only the 80-word text is cut (to 64 tokens, closing [SEP] kept).
    let cut: Vec<usize> = (0..ours.len()).filter(|&i| ours[i].truncated).collect();
    assert_eq!(cut, vec![6]);
    assert_eq!(ours[6].ids.len(), 64);
    assert_eq!(*ours[6].ids.last().unwrap(), 102);
}

#[test]
fn minilm_hidden_state_matches_transformers() {
    let r = reference(&fixture("model/minilm-reference.safetensors"));
    let (_vs, model, report) =
        SequenceClassifier::load(&base(), HeadSpec::CLS2, Device::Cpu, false).unwrap();
    // The bare encoder checkpoint lacks only the new head; its position_ids buffer is unused.
    assert_eq!(
        report.initialised,
        vec!["classifier.bias".to_string(), "classifier.weight".into()]
    );
    assert_eq!(report.unused, vec!["embeddings.position_ids".to_string()]);
    let (ids, mask) = (&r["input_ids"], &r["attention_mask"]);
    let hidden = tch::no_grad(|| model.encoder.forward(ids, Some(mask), Mode::EVAL));
    let diff = max_diff_on_tokens(&hidden, &r["last_hidden_state"], mask);
    println!("MiniLM last hidden state vs transformers: max abs diff {diff:.2e}");
    assert!(diff <= TOLERANCE, "{diff}");

    // An unpadded batch runs without a mask (the fast attention path) and agrees too.
    let n = mask.get(0).sum(Kind::Int64).int64_value(&[]);
    let alone = tch::no_grad(|| {
        model
            .encoder
            .forward(&ids.narrow(0, 0, 1).narrow(1, 0, n), None, Mode::EVAL)
    });
    let want = r["last_hidden_state"].narrow(0, 0, 1).narrow(1, 0, n);
    let d = (&alone - &want).abs().max().double_value(&[]);
    assert!(d <= TOLERANCE, "unmasked: {d}");

    // bf16 matrix products (the CUDA path) stay close to f32.
    let mean = bf16_mean_diff(&model, ids, mask, &hidden);
    println!("bf16 vs f32: mean abs diff {mean:.3e}");
    assert!(mean < 0.05, "{mean}");
}

/// Loads `fixtures/model/tiny-{name}`, checks its hidden state and logits against
/// `transformers`', and returns the model and the reference for further checks.
fn tiny_family(name: &str) -> (VarStore, SequenceClassifier, HashMap<String, Tensor>) {
    let src = fixture(&format!("model/tiny-{name}"));
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    // Any tokenizer satisfies the folder check; these tests feed ids directly.
    std::fs::copy(
        base().join("tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    let r = reference(&src.join("reference.safetensors"));
    // strict: every variable, head included, must come from the file.
    let (vs, model, report) =
        SequenceClassifier::load(dir.path(), HeadSpec::CLS2, Device::Cpu, true).unwrap();
    assert!(report.initialised.is_empty());
    let (ids, mask) = (&r["input_ids"], &r["attention_mask"]);
    let (hidden, logits) = tch::no_grad(|| {
        (
            model.encoder.forward(ids, Some(mask), Mode::EVAL),
            model.forward(ids, Some(mask), Mode::EVAL),
        )
    });
    let dh = max_diff_on_tokens(&hidden, &r["last_hidden_state"], mask);
    let dl = (&logits - &r["logits"]).abs().max().double_value(&[]);
    println!("tiny {name}: hidden max abs diff {dh:.2e}, logits {dl:.2e}");
    assert!(dh <= TOLERANCE && dl <= TOLERANCE, "{dh} {dl}");
    (vs, model, r)
}

#[test]
fn tiny_bert_matches_transformers() {
    tiny_family("bert");
}

#[test]
fn tiny_roberta_matches_transformers() {
    tiny_family("roberta");
}

#[test]
fn tiny_distilbert_matches_transformers() {
    tiny_family("distilbert");
}

/// MPNet: its layer names, positions from 2, the relative position bias shared by the layers
/// (rows of 150, 60, 12 and 3 tokens, so every bucket a relative position can fall in is used,
/// the last one, for distances of 91 and more, past max_distance 128 included) and RoBERTa's
/// head.
#[test]
fn tiny_mpnet_matches_transformers() {
    let (vs, model, r) = tiny_family("mpnet");
    let (ids, mask) = (&r["input_ids"], &r["attention_mask"]);

    // Buckets agree with transformers' relative_position_bucket for every relative position
    // in -300..300, exactly.
    let buckets = relative_position_bucket(&r["relative_position"], 32, 128);
    assert_eq!(buckets, r["relative_bucket"]);

    // The unpadded first row (150 tokens) runs with the bias alone as its mask.
    let n = mask.get(0).sum(Kind::Int64).int64_value(&[]);
    assert_eq!(n, ids.size()[1]);
    let alone = tch::no_grad(|| {
        model
            .encoder
            .forward(&ids.narrow(0, 0, 1), None, Mode::EVAL)
    });
    let want = r["last_hidden_state"].narrow(0, 0, 1);
    let d = (&alone - &want).abs().max().double_value(&[]);
    println!("tiny mpnet, unpadded row: max abs diff {d:.2e}");
    assert!(d <= TOLERANCE, "unmasked: {d}");

    // bf16 matrix products take the bias in bf16 and stay finite and close.
    let mean = bf16_mean_diff(&model, ids, mask, &r["last_hidden_state"]);
    println!("tiny mpnet bf16 vs transformers f32: mean abs diff {mean:.3e}");
    assert!(mean < 0.05, "{mean}");

    // The shared bias learns: a gradient reaches it through the attention's additive mask.
    let logits = model.forward(ids, Some(mask), Mode::EVAL);
    logits.select(1, 1).sum(Kind::Float).backward();
    let grad = vs.variables()["mpnet.encoder.relative_attention_bias.weight"].grad();
    let g = grad.abs().sum(Kind::Float).double_value(&[]);
    assert!(g.is_finite() && g > 0.0, "{g}");
}
