//! flagship-metrics: how good the flags are, for the ML reader and for the support team.
//!
//! This foundation holds the binary confusion matrix with precision, recall and Fβ (F2 is
//! the headline: a missed tweet costs more than a wasted read; scikit-learn's zero-division
//! convention: 0), and the seed's per-tweet business times from the config's constants.
//! AUCs, weighted averages, the naive baseline, monitoring and reports land with the metrics
//! issue. It reads labels, predictions and word counts; it never trains or predicts.

use flagship_core::config::Business;
use serde::Serialize;

/// Counts for the positive class `need_support`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Confusion {
    pub tp: u64,
    pub fp: u64,
    pub tn: u64,
    pub fn_: u64,
}

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

impl Confusion {
    pub fn from_pairs(truth: &[bool], predicted: &[bool]) -> Confusion {
        assert_eq!(truth.len(), predicted.len(), "one prediction per label");
        let mut c = Confusion::default();
        for (&t, &p) in truth.iter().zip(predicted) {
            match (t, p) {
                (true, true) => c.tp += 1,
                (false, true) => c.fp += 1,
                (false, false) => c.tn += 1,
                (true, false) => c.fn_ += 1,
            }
        }
        c
    }
    pub fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }
    pub fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }
    /// Fβ = (1 + β²)·TP / ((1 + β²)·TP + β²·FN + FP); 0 when undefined.
    pub fn f_beta(&self, beta: f64) -> f64 {
        let b2 = beta * beta;
        let num = (1.0 + b2) * self.tp as f64;
        let den = num + b2 * self.fn_ as f64 + self.fp as f64;
        if den == 0.0 { 0.0 } else { num / den }
    }
}

/// Seconds to read a tweet of `words` words.
pub fn reading_seconds(words: u32, b: &Business) -> f64 {
    words as f64 / b.reading_wpm * 60.0
}

/// Seconds to read it and type a reply (for the share of support tweets that need one).
pub fn response_seconds(words: u32, b: &Business) -> f64 {
    reading_seconds(words, b) + words as f64 * b.reply_fraction / b.typing_wpm * 60.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use flagship_core::Config;

    #[test]
    fn f_beta_by_hand() {
        // 6 need support: 4 caught, 2 missed; 4 do not: 1 flagged needlessly.
        let truth = [
            true, true, true, true, true, true, false, false, false, false,
        ];
        let pred = [
            true, true, true, true, false, false, true, false, false, false,
        ];
        let c = Confusion::from_pairs(&truth, &pred);
        assert_eq!(
            c,
            Confusion {
                tp: 4,
                fp: 1,
                tn: 3,
                fn_: 2
            }
        );
        assert!((c.precision() - 0.8).abs() < 1e-12);
        assert!((c.recall() - 4.0 / 6.0).abs() < 1e-12);
        // F2 = 5·4 / (5·4 + 4·2 + 1) = 20 / 29
        assert!((c.f_beta(2.0) - 20.0 / 29.0).abs() < 1e-12);
        // F1 is the harmonic mean of precision and recall.
        let (p, r) = (c.precision(), c.recall());
        assert!((c.f_beta(1.0) - 2.0 * p * r / (p + r)).abs() < 1e-12);
        // Always flagging: recall 1, F2 of 40% prevalence = 5·0.4 / (4·0.4 + 1) = 0.769…
        let truth: Vec<bool> = (0..100).map(|i| i < 40).collect();
        let all = Confusion::from_pairs(&truth, &[true; 100]);
        assert!((all.f_beta(2.0) - 2.0 / 2.6).abs() < 1e-12);
        assert_eq!(Confusion::default().f_beta(2.0), 0.0);
    }

    #[test]
    fn business_times_use_the_seed_constants() {
        let b = Config::default().business;
        // 27 words: 27/135 min = 12 s reading; 27/40 min = 40.5 s typing.
        assert!((reading_seconds(27, &b) - 12.0).abs() < 1e-9);
        assert!((response_seconds(27, &b) - 52.5).abs() < 1e-9);
    }
}
