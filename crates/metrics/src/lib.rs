//! flagship-metrics: how good the flags are, for the ML reader and for the support team.
//!
//! Threshold metrics (confusion matrix, accuracy, balanced accuracy, precision, recall, F1,
//! F0.5, F2 — binary for `need_support` and weighted over both classes as the seed reported),
//! ranking metrics of the probabilities (ROC-AUC, average precision, Brier, curves, threshold
//! sweep), and the business view (minutes wasted and missed, the naive random-guess baseline as
//! mean ± sd over seeded runs, the seed's success verdict). Values agree with scikit-learn
//! (fixtures from `scripts/metrics_reference.py`). It reads labels, probabilities and word
//! counts; it never trains, predicts or touches storage.

pub mod business;
pub mod classification;
pub mod evaluation;
pub mod html;
pub mod monitor;
pub mod ranking;
pub mod svg;

pub use business::{
    MeanSd, Naive, Times, Verdict, reading_seconds, response_seconds, verdict_word,
};
pub use classification::{Classification, Confusion, Scores};
pub use evaluation::{Evaluation, Ranking, VerdictSentence};
pub use monitor::{Drift, DriftRule, GroupStats, Profile, Quality};
pub use ranking::{average_precision, brier, curve, roc_auc, sweep};
