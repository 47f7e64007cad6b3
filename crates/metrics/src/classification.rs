//! Threshold metrics of a binary classifier (`need_support` is the positive class), binary and
//! weighted over both classes as scikit-learn computes them (zero-division convention: 0).

use serde::{Deserialize, Serialize};

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

/// Counts for the positive class `need_support`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confusion {
    pub tp: u64,
    pub fp: u64,
    pub tn: u64,
    pub fn_: u64,
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
        flagship_core::scoring::f_beta(self.tp as f64, self.fp as f64, self.fn_ as f64, beta)
    }

    /// Share of negatives flagged (false-positive rate, the ROC's x axis).
    pub fn fallout(&self) -> f64 {
        ratio(self.fp, self.fp + self.tn)
    }
    pub fn total(&self) -> u64 {
        self.tp + self.fp + self.tn + self.fn_
    }
    /// Accuracy: share of correct predictions.
    pub fn accuracy(&self) -> f64 {
        ratio(self.tp + self.tn, self.total())
    }
    /// The confusion matrix seen from the other class (`does_not_need_support` positive).
    pub fn flipped(&self) -> Confusion {
        Confusion {
            tp: self.tn,
            fp: self.fn_,
            tn: self.tp,
            fn_: self.fp,
        }
    }
    /// Balanced accuracy: mean of the recalls of both classes.
    pub fn balanced_accuracy(&self) -> f64 {
        (self.recall() + self.flipped().recall()) / 2.0
    }
    /// Weighted average of a per-class score by class support (scikit-learn `average="weighted"`).
    pub fn weighted(&self, score: impl Fn(&Confusion) -> f64) -> f64 {
        let pos = self.tp + self.fn_;
        let neg = self.tn + self.fp;
        if pos + neg == 0 {
            return 0.0;
        }
        (score(self) * pos as f64 + score(&self.flipped()) * neg as f64) / (pos + neg) as f64
    }
}

/// Precision, recall and F-scores of one averaging.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub f05: f64,
    pub f2: f64,
}

/// Every threshold metric the reports show: binary (for `need_support`) and weighted (as the
/// seed reported).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Classification {
    pub confusion: Confusion,
    pub accuracy: f64,
    pub balanced_accuracy: f64,
    pub binary: Scores,
    pub weighted: Scores,
}

impl Classification {
    pub fn new(truth: &[bool], predicted: &[bool]) -> Classification {
        Classification::from_confusion(Confusion::from_pairs(truth, predicted))
    }

    pub fn from_confusion(c: Confusion) -> Classification {
        Classification {
            confusion: c,
            accuracy: c.accuracy(),
            balanced_accuracy: c.balanced_accuracy(),
            binary: Scores::of(&c),
            weighted: Scores::weighted(&c),
        }
    }
}

impl Scores {
    /// Scores for the positive class.
    pub fn of(c: &Confusion) -> Scores {
        Scores {
            precision: c.precision(),
            recall: c.recall(),
            f1: c.f_beta(1.0),
            f05: c.f_beta(0.5),
            f2: c.f_beta(2.0),
        }
    }

    /// Each score averaged over both classes, weighted by class support.
    pub fn weighted(c: &Confusion) -> Scores {
        Scores {
            precision: c.weighted(Confusion::precision),
            recall: c.weighted(Confusion::recall),
            f1: c.weighted(|c| c.f_beta(1.0)),
            f05: c.weighted(|c| c.f_beta(0.5)),
            f2: c.weighted(|c| c.f_beta(2.0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn weighted_and_balanced_by_hand() {
        let c = Confusion {
            tp: 4,
            fp: 1,
            tn: 3,
            fn_: 2,
        };
        let m = Classification::from_confusion(c);
        assert!((m.accuracy - 0.7).abs() < 1e-12);
        // Recalls 4/6 and 3/4.
        assert!((m.balanced_accuracy - (4.0 / 6.0 + 0.75) / 2.0).abs() < 1e-12);
        // Weighted precision: 0.8·6/10 + (3/5)·4/10.
        assert!((m.weighted.precision - (0.8 * 0.6 + 0.6 * 0.4)).abs() < 1e-12);
        // Weighted recall equals accuracy.
        assert!((m.weighted.recall - m.accuracy).abs() < 1e-12);
    }
}
