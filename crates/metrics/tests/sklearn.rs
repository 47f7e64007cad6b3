//! Agreement with scikit-learn on fixed cases (fixtures/metrics/sklearn-reference.json, from
//! scripts/metrics_reference.py), and properties that must hold on any input.

use flagship_core::rng::Rng;
use flagship_metrics::{Classification, Confusion, average_precision, brier, roc_auc};
use flagship_testkit::fixture;

const EPS: f64 = 1e-12;

fn close(name: &str, ours: f64, theirs: &serde_json::Value) {
    let theirs = theirs.as_f64().unwrap();
    assert!(
        (ours - theirs).abs() <= EPS,
        "{name}: flagship {ours}, scikit-learn {theirs}"
    );
}

#[test]
fn agrees_with_scikit_learn() {
    let r: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("metrics/sklearn-reference.json")).unwrap(),
    )
    .unwrap();
    let cases = r["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let y: Vec<bool> = c["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_bool().unwrap())
            .collect();
        let p: Vec<f64> = c["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let t = c["threshold"].as_f64().unwrap();
        let pred: Vec<bool> = p.iter().map(|&v| v >= t).collect();
        let m = Classification::new(&y, &pred);
        let e = &c["expected"];
        close(&format!("{name} accuracy"), m.accuracy, &e["accuracy"]);
        close(
            &format!("{name} balanced"),
            m.balanced_accuracy,
            &e["balanced_accuracy"],
        );
        for (avg, s) in [("binary", m.binary), ("weighted", m.weighted)] {
            let x = &e[avg];
            close(
                &format!("{name} {avg} precision"),
                s.precision,
                &x["precision"],
            );
            close(&format!("{name} {avg} recall"), s.recall, &x["recall"]);
            close(&format!("{name} {avg} f1"), s.f1, &x["f1"]);
            close(&format!("{name} {avg} f0.5"), s.f05, &x["f05"]);
            close(&format!("{name} {avg} f2"), s.f2, &x["f2"]);
        }
        close(&format!("{name} roc_auc"), roc_auc(&p, &y), &e["roc_auc"]);
        close(
            &format!("{name} AP"),
            average_precision(&p, &y),
            &e["average_precision"],
        );
        close(&format!("{name} brier"), brier(&p, &y), &e["brier"]);
    }
}

#[test]
fn properties_hold_on_generated_cases() {
    let mut rng = Rng::from_state(5);
    for case in 0..300 {
        let n = 1 + (rng.next_u64() % 60) as usize;
        let y: Vec<bool> = (0..n).map(|_| rng.unit() < 0.4).collect();
        // Coarse probabilities so ties are common.
        let p: Vec<f64> = (0..n).map(|_| (rng.unit() * 10.0).round() / 10.0).collect();
        let pred: Vec<bool> = p.iter().map(|&v| v >= 0.5).collect();
        let c = Confusion::from_pairs(&y, &pred);
        let (pr, re) = (c.precision(), c.recall());
        for beta in [0.5, 1.0, 2.0, 3.0] {
            let f = c.f_beta(beta);
            if pr > 0.0 && re > 0.0 {
                assert!(
                    f >= pr.min(re) - EPS && f <= pr.max(re) + EPS,
                    "case {case}: F{beta} {f} outside [{pr}, {re}]"
                );
            }
        }
        let m = Classification::from_confusion(c);
        assert!((m.weighted.recall - m.accuracy).abs() < EPS, "case {case}");
        let b = brier(&p, &y);
        assert!((0.0..=1.0).contains(&b));
        let pos = y.iter().filter(|&&v| v).count();
        if pos > 0 && pos < n {
            let auc = roc_auc(&p, &y);
            assert!((0.0..=1.0).contains(&auc));
            // Reversing the scores mirrors the AUC; ranking by the labels themselves is perfect.
            let rev: Vec<f64> = p.iter().map(|v| 1.0 - v).collect();
            assert!(
                (roc_auc(&rev, &y) - (1.0 - auc)).abs() < 1e-9,
                "case {case}"
            );
            let perfect: Vec<f64> = y.iter().map(|&v| if v { 0.9 } else { 0.1 }).collect();
            assert_eq!(roc_auc(&perfect, &y), 1.0);
            assert_eq!(average_precision(&perfect, &y), 1.0);
            // All scores tied: AUC 0.5 and AP = prevalence.
            let flat = vec![0.5; n];
            assert!((roc_auc(&flat, &y) - 0.5).abs() < EPS);
            assert!((average_precision(&flat, &y) - pos as f64 / n as f64).abs() < EPS);
        }
    }
}
