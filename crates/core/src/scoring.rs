//! Scoring rules written once: F-beta, ROC-AUC, and choosing the decision threshold. The
//! model crate tunes its threshold with them; the metrics crate reports with them.
//!
//! F2 depends on prevalence: a threshold that maximises F2 on a validation set with 60 %
//! `need_support` is too low for a stream with 40 %. [`tune`] therefore re-weights the
//! validation examples so positives make up the expected rate, then sweeps every distinct
//! probability as a cut-off.

use serde::{Deserialize, Serialize};

/// Weights `(positive, negative)` that make positives `rate` of the total weight.
/// `None` when the labels hold only one class or `rate` is not in (0, 1).
pub fn prevalence_weights(labels: &[bool], rate: f64) -> Option<(f64, f64)> {
    let n = labels.len() as f64;
    let pos = labels.iter().filter(|&&y| y).count() as f64;
    if pos == 0.0 || pos == n || !(rate > 0.0 && rate < 1.0) {
        return None;
    }
    Some((rate * n / pos, (1.0 - rate) * n / (n - pos)))
}

/// F-beta of (possibly weighted) counts: (1 + β²)·TP / ((1 + β²)·TP + β²·FN + FP); 0 when
/// undefined.
pub fn f_beta(tp: f64, fp: f64, fn_: f64, beta: f64) -> f64 {
    let b2 = beta * beta;
    let denom = (1.0 + b2) * tp + b2 * fn_ + fp;
    if denom == 0.0 {
        0.0
    } else {
        (1.0 + b2) * tp / denom
    }
}

/// A chosen cut-off: predict "needs support" when probability ≥ `threshold`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    pub threshold: f64,
    /// F-beta, precision and recall at the threshold, on the (re-weighted) set.
    pub f_beta: f64,
    pub precision: f64,
    pub recall: f64,
}

/// The threshold maximising F-beta; with `rate`, on the set re-weighted to that prevalence.
/// Ties prefer the higher threshold (fewer tweets to read for the same score). The threshold
/// lies halfway between the lowest flagged probability and the highest unflagged one.
pub fn tune<P: Copy + Into<f64>>(
    probs: &[P],
    labels: &[bool],
    rate: Option<f64>,
    beta: f64,
) -> Choice {
    let probs: Vec<f64> = probs.iter().map(|&p| p.into()).collect();
    assert_eq!(probs.len(), labels.len());
    let (wp, wn) = rate
        .and_then(|r| prevalence_weights(labels, r))
        .unwrap_or((1.0, 1.0));
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    let total_pos: f64 = labels.iter().filter(|&&y| y).count() as f64 * wp;
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut best = Choice {
        threshold: f64::INFINITY,
        f_beta: 0.0,
        precision: 0.0,
        recall: 0.0,
    };
    let mut i = 0;
    while i < order.len() {
        let p = probs[order[i]];
        // Everything with this exact probability is flagged together.
        while i < order.len() && probs[order[i]].total_cmp(&p).is_eq() {
            if labels[order[i]] {
                tp += wp;
            } else {
                fp += wn;
            }
            i += 1;
        }
        let f = f_beta(tp, fp, total_pos - tp, beta);
        if f > best.f_beta {
            // Halfway to the next lower probability: the same texts are flagged, and a text
            // scored at the cut in another run (a rounding bit lower) still is.
            let threshold = match order.get(i) {
                Some(&next) => (p + probs[next]) / 2.0,
                None => p,
            };
            best = Choice {
                threshold,
                f_beta: f,
                precision: tp / (tp + fp),
                recall: if total_pos > 0.0 { tp / total_pos } else { 0.0 },
            };
        }
    }
    best
}

/// Counts at a fixed threshold: F-beta, precision, recall (unweighted).
pub fn score_at<P: Copy + Into<f64>>(
    probs: &[P],
    labels: &[bool],
    threshold: f64,
    beta: f64,
) -> Choice {
    let (mut tp, mut fp, mut fn_) = (0.0, 0.0, 0.0);
    for (&p, &y) in probs.iter().zip(labels) {
        match (p.into() >= threshold, y) {
            (true, true) => tp += 1.0,
            (true, false) => fp += 1.0,
            (false, true) => fn_ += 1.0,
            _ => {}
        }
    }
    Choice {
        threshold,
        f_beta: f_beta(tp, fp, fn_, beta),
        precision: if tp + fp > 0.0 { tp / (tp + fp) } else { 0.0 },
        recall: if tp + fn_ > 0.0 { tp / (tp + fn_) } else { 0.0 },
    }
}

/// Area under the ROC curve (Mann–Whitney, ties counted half). `NaN` with one class only.
pub fn roc_auc<P: Copy + Into<f64>>(probs: &[P], labels: &[bool]) -> f64 {
    let probs: Vec<f64> = probs.iter().map(|&p| p.into()).collect();
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[a].total_cmp(&probs[b]));
    // Average ranks over ties.
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j < order.len() && probs[order[j]].total_cmp(&probs[order[i]]).is_eq() {
            j += 1;
        }
        let avg_rank = (i + 1 + j) as f64 / 2.0;
        rank_sum_pos += order[i..j].iter().filter(|&&k| labels[k]).count() as f64 * avg_rank;
        i = j;
    }
    let pos = labels.iter().filter(|&&y| y).count() as f64;
    let neg = labels.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return f64::NAN;
    }
    (rank_sum_pos - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_move_prevalence() {
        let y = [true, true, true, false, false];
        let (wp, wn) = prevalence_weights(&y, 0.4).unwrap();
        let pos = 3.0 * wp;
        let neg = 2.0 * wn;
        assert!((pos / (pos + neg) - 0.4).abs() < 1e-12);
        assert!((pos + neg - 5.0).abs() < 1e-12);
        assert_eq!(prevalence_weights(&[true, true], 0.4), None);
    }

    #[test]
    fn auc_perfect_reversed_and_ties() {
        let y = [false, false, true, true];
        assert_eq!(roc_auc(&[0.1f32, 0.2, 0.8, 0.9], &y), 1.0);
        assert_eq!(roc_auc(&[0.9, 0.8, 0.2, 0.1], &y), 0.0);
        assert_eq!(roc_auc(&[0.5f32, 0.5, 0.5, 0.5], &y), 0.5);
        assert!(roc_auc(&[0.3, 0.4], &[true, true]).is_nan());
        // sklearn.metrics.roc_auc_score([0,0,1,1,0,1],[.1,.4,.35,.8,.35,.35]) == 0.6666…
        let y = [false, false, true, true, false, true];
        let p = [0.1, 0.4, 0.35, 0.8, 0.35, 0.35];
        assert!((roc_auc(&p, &y) - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn tuning_finds_the_separating_cut_and_lower_prevalence_raises_it() {
        let probs = [0.1f32, 0.2, 0.3, 0.55, 0.6, 0.7, 0.9];
        let y = [false, false, true, false, true, true, true];
        let c = tune(&probs, &y, None, 2.0);
        // Flagging from 0.3 catches every positive with one false alarm: F2 = 20/21; the cut
        // lies halfway to 0.2, the highest probability left unflagged.
        assert_eq!(c.threshold, (0.3f32 as f64 + 0.2f32 as f64) / 2.0);
        assert!((c.f_beta - 20.0 / 21.0).abs() < 1e-9);
        assert_eq!(c.recall, 1.0);
        // Fewer positives expected → false alarms weigh more → the cut can only go up.
        let low = tune(&probs, &y, Some(0.1), 2.0);
        assert!(low.threshold >= c.threshold, "{low:?}");
        // The chosen threshold's F2 is the best of all cut-offs.
        for &t in &probs {
            assert!(score_at(&probs, &y, t as f64, 2.0).f_beta <= c.f_beta + 1e-12);
        }
    }
}
