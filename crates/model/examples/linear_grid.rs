//! Settings search for the linear baseline: trains on TweetEval train, tunes the threshold on
//! val (re-weighted to 40 %), scores the 40 % held-out set.
//! `cargo run --release -p flagship-model --example linear_grid`

use flagship_core::scoring::{score_at, tune};
use flagship_model::{Example, LinearModel, LinearOptions};
use std::io::{BufRead, Read};

fn read(path: &str) -> Vec<Example> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    let text = if path.ends_with(".gz") {
        let mut s = String::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_string(&mut s)
            .unwrap();
        s
    } else {
        String::from_utf8(bytes).unwrap()
    };
    text.as_bytes()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(&l.unwrap()).unwrap();
            Example {
                text: v["text"].as_str().unwrap().into(),
                need_support: v["label"].as_i64().unwrap() <= 1,
                label: None,
            }
        })
        .collect()
}

fn main() {
    let d = "fixtures/tweeteval-sentiment";
    let train = read(&format!("{d}/train.jsonl.gz"));
    let val = read(&format!("{d}/val.jsonl"));
    let test = read(&format!("{d}/heldout-40.jsonl"));
    let args: Vec<f64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    for pair in args.chunks(3) {
        let opts = LinearOptions {
            l2: pair[0],
            epochs: pair[1] as usize,
            learning_rate: pair[2],
            ..LinearOptions::default()
        };
        let m = LinearModel::train(&train, &opts).unwrap();
        let score = |set: &[Example]| {
            let t: Vec<&str> = set.iter().map(|e| e.text.as_str()).collect();
            let y: Vec<bool> = set.iter().map(|e| e.need_support).collect();
            (m.probabilities(&t), y)
        };
        let (pv, yv) = score(&val);
        let c = tune(&pv, &yv, Some(0.4), 2.0);
        let (pt, yt) = score(&test);
        let s = score_at(&pt, &yt, c.threshold, 2.0);
        println!(
            "l2 {} epochs {} lr {}: threshold {:.3}, held-out F2 {:.4}, AUC {:.4}",
            pair[0],
            pair[1],
            pair[2],
            c.threshold,
            s.f_beta,
            flagship_core::scoring::roc_auc(&pt, &yt)
        );
    }
}
