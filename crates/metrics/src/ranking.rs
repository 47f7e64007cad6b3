//! Metrics of the predicted probabilities themselves: ROC-AUC, average precision (PR-AUC),
//! Brier score, the curves behind them, and a threshold sweep. Ties are grouped as
//! scikit-learn groups them (every threshold is a distinct score).

use serde::{Deserialize, Serialize};

use crate::classification::Confusion;

/// Positions sorted by score, highest first, cut into runs of equal score.
fn descending_runs(scores: &[f64]) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < scores.len() {
        let mut j = i + 1;
        while j < scores.len() && scores[j] == scores[i] {
            j += 1;
        }
        runs.push(i..j);
        i = j;
    }
    runs
}

/// Scores and labels ordered by score, highest first (stable).
fn sorted(scores: &[f64], labels: &[bool]) -> (Vec<f64>, Vec<bool>) {
    assert_eq!(scores.len(), labels.len(), "one score per label");
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    (
        idx.iter().map(|&i| scores[i]).collect(),
        idx.iter().map(|&i| labels[i]).collect(),
    )
}

/// One point of a curve: the cut-off and the counts flagged at or above it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    pub threshold: f64,
    pub confusion: Confusion,
}

/// Confusion at every distinct score, from the highest (flag few) to the lowest (flag all).
pub fn curve(scores: &[f64], labels: &[bool]) -> Vec<CurvePoint> {
    let (s, y) = sorted(scores, labels);
    let pos = y.iter().filter(|&&v| v).count() as u64;
    let neg = y.len() as u64 - pos;
    let (mut tp, mut fp) = (0u64, 0u64);
    descending_runs(&s)
        .into_iter()
        .map(|run| {
            for &v in &y[run.clone()] {
                if v { tp += 1 } else { fp += 1 }
            }
            CurvePoint {
                threshold: s[run.start],
                confusion: Confusion {
                    tp,
                    fp,
                    tn: neg - fp,
                    fn_: pos - tp,
                },
            }
        })
        .collect()
}

/// ROC curve points `(false-positive rate, true-positive rate)`, starting at (0, 0).
pub fn roc_points(scores: &[f64], labels: &[bool]) -> Vec<(f64, f64)> {
    let mut pts = vec![(0.0, 0.0)];
    for p in curve(scores, labels) {
        let c = p.confusion;
        pts.push((c.fallout(), c.recall()));
    }
    pts
}

/// Area under the ROC curve (Mann–Whitney, ties counted half; the same value as the
/// trapezoids under [`roc_points`]). `NaN` when only one class is present. The rule lives in
/// `flagship-core`, shared with the model's training report.
pub use flagship_core::scoring::roc_auc;

/// Precision–recall points `(recall, precision)` at every distinct threshold, highest first.
pub fn pr_points(scores: &[f64], labels: &[bool]) -> Vec<(f64, f64)> {
    curve(scores, labels)
        .into_iter()
        .map(|p| (p.confusion.recall(), p.confusion.precision()))
        .collect()
}

/// Average precision, scikit-learn's PR-AUC: Σ (Rₙ − Rₙ₋₁)·Pₙ over distinct thresholds.
/// `NaN` without positives.
pub fn average_precision(scores: &[f64], labels: &[bool]) -> f64 {
    if !labels.iter().any(|&v| v) {
        return f64::NAN;
    }
    let mut prev_recall = 0.0;
    let mut ap = 0.0;
    for (r, p) in pr_points(scores, labels) {
        ap += (r - prev_recall) * p;
        prev_recall = r;
    }
    ap
}

/// Mean squared difference between probability and outcome (0 is perfect).
pub fn brier(probs: &[f64], labels: &[bool]) -> f64 {
    assert_eq!(probs.len(), labels.len(), "one probability per label");
    if probs.is_empty() {
        return f64::NAN;
    }
    probs
        .iter()
        .zip(labels)
        .map(|(&p, &y)| (p - if y { 1.0 } else { 0.0 }).powi(2))
        .sum::<f64>()
        / probs.len() as f64
}

/// Confusion at each given threshold (flag when probability ≥ threshold).
pub fn sweep(probs: &[f64], labels: &[bool], thresholds: &[f64]) -> Vec<CurvePoint> {
    thresholds
        .iter()
        .map(|&t| {
            let flagged: Vec<bool> = probs.iter().map(|&p| p >= t).collect();
            CurvePoint {
                threshold: t,
                confusion: Confusion::from_pairs(labels, &flagged),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_reversed_and_tied_rankings() {
        let y = [false, false, true, true];
        assert_eq!(roc_auc(&[0.1, 0.2, 0.8, 0.9], &y), 1.0);
        assert_eq!(roc_auc(&[0.9, 0.8, 0.2, 0.1], &y), 0.0);
        assert_eq!(roc_auc(&[0.5; 4], &y), 0.5);
        assert_eq!(average_precision(&[0.1, 0.2, 0.8, 0.9], &y), 1.0);
        assert_eq!(average_precision(&[0.5; 4], &y), 0.5);
        assert!(roc_auc(&[0.3, 0.4], &[true, true]).is_nan());
        assert_eq!(brier(&[1.0, 0.0], &[true, false]), 0.0);
        assert_eq!(brier(&[0.5, 0.5], &[true, false]), 0.25);
    }

    #[test]
    fn curve_ends_flagging_everything() {
        let y = [true, false, true, false, false];
        let c = curve(&[0.9, 0.9, 0.4, 0.2, 0.1], &y);
        assert_eq!(c.len(), 4);
        assert_eq!(
            c[0].confusion,
            Confusion {
                tp: 1,
                fp: 1,
                tn: 2,
                fn_: 1
            }
        );
        let last = c.last().unwrap().confusion;
        assert_eq!((last.tp, last.fp, last.tn, last.fn_), (2, 3, 0, 0));
        let s = sweep(&[0.9, 0.9, 0.4, 0.2, 0.1], &y, &[0.4]);
        assert_eq!(s[0].confusion, c[1].confusion);
    }
}
