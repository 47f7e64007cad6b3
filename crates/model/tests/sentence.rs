//! The desk's sentence embeddings, on the real base model (all-MiniLM-L6-v2): equal to
//! sentence-transformers' on real posts, and good enough at the desk's threshold on the
//! hand-labelled pairs of real posts in `fixtures/paraphrase` (pair precision and recall).

use flagship_model::embed::cosine;
use flagship_model::{Checkpoint, SentenceEncoder};
use flagship_testkit::fixture;

struct Pair {
    a: String,
    b: String,
    same: bool,
}

fn pairs() -> Vec<Pair> {
    std::fs::read_to_string(fixture("paraphrase/pairs.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            Pair {
                a: v["a"].as_str().unwrap().to_owned(),
                b: v["b"].as_str().unwrap().to_owned(),
                same: v["same"].as_bool().unwrap(),
            }
        })
        .collect()
}

fn cosines(enc: &SentenceEncoder, pairs: &[Pair]) -> Vec<f32> {
    let a: Vec<&str> = pairs.iter().map(|p| p.a.as_str()).collect();
    let b: Vec<&str> = pairs.iter().map(|p| p.b.as_str()).collect();
    let (a, b) = (enc.embed(&a).unwrap(), enc.embed(&b).unwrap());
    a.iter().zip(&b).map(|(x, y)| cosine(x, y)).collect()
}

#[test]
fn embeddings_equal_sentence_transformers_and_group_real_questions() {
    let base = Checkpoint::default_base().expect("base model (cargo xtask setup)");
    let enc = SentenceEncoder::load(&base).unwrap();
    let pairs = pairs();
    assert!(pairs.len() >= 300, "{} pairs", pairs.len());
    let cos = cosines(&enc, &pairs);
    // sentence-transformers 6.3.0 on the same pairs (scripts/paraphrase_threshold.py).
    let reference = [0.407589f32, -0.005243, -0.041889, 0.662862, 0.410628];
    for (i, (got, want)) in cos.iter().zip(reference).enumerate() {
        assert!((got - want).abs() < 1e-4, "pair {i}: {got} vs {want}");
    }
    // At the desk's default threshold (measured: precision 0.874, recall 0.582).
    let t = flagship_core::Config::default().desk.group_similarity;
    let (mut tp, mut fp, mut fn_) = (0, 0, 0);
    for (c, p) in cos.iter().zip(&pairs) {
        match (*c >= t, p.same) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fn_ += 1,
            _ => {}
        }
    }
    let precision = tp as f64 / (tp + fp) as f64;
    let recall = tp as f64 / (tp + fn_) as f64;
    println!("at {t}: pair precision {precision:.3}, recall {recall:.3}");
    assert!(precision >= 0.85, "precision {precision:.3}");
    assert!(recall >= 0.55, "recall {recall:.3}");
}
