//! One evaluation of a labelled prediction set: everything `report.json` and `report.md` hold.

use flagship_core::config::Business;
use serde::{Deserialize, Serialize};

use crate::business::{Naive, Times, Verdict};
use crate::classification::Classification;
use crate::ranking;

/// Ranking metrics of the probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Ranking {
    pub roc_auc: f64,
    pub average_precision: f64,
    pub brier: f64,
}

/// `report.json`'s content (stable keys).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub rows: usize,
    pub need_support: usize,
    pub prevalence: f64,
    pub model: Classification,
    pub ranking: Ranking,
    pub times: Times,
    pub naive: Naive,
    /// The seed's success rule against the naive baseline.
    pub verdict: Verdict,
    pub business: Business,
}

impl Evaluation {
    /// `truth`: needs support; `probs`: the model's probabilities; `predicted`: its flags;
    /// `words`: each tweet's word count.
    pub fn new(
        truth: &[bool],
        probs: &[f64],
        predicted: &[bool],
        words: &[u32],
        business: &Business,
    ) -> Evaluation {
        let model = Classification::new(truth, predicted);
        let times = Times::new(truth, predicted, words, business);
        let naive = Naive::run(truth, words, business);
        let need = truth.iter().filter(|&&y| y).count();
        Evaluation {
            rows: truth.len(),
            need_support: need,
            prevalence: need as f64 / truth.len().max(1) as f64,
            ranking: Ranking {
                roc_auc: ranking::roc_auc(probs, truth),
                average_precision: ranking::average_precision(probs, truth),
                brier: ranking::brier(probs, truth),
            },
            verdict: Verdict::new(model.binary.f2, &times, &naive),
            model,
            times,
            naive,
            business: business.clone(),
        }
    }

    /// `report.md`: the verdict first, then the tables.
    pub fn to_markdown(&self, title: &str) -> String {
        let v = &self.verdict;
        let yes = |b: bool| if b { "yes" } else { "**no**" };
        let m = &self.model;
        let n = &self.naive;
        let t = &self.times;
        let mut s = format!("# {title}\n\n");
        s.push_str(&format!(
            "**Verdict: {}.** F2 {:.3} (naive {:.3} ± {:.3}); minutes wasted {:.1} vs {:.1} naive ({:.0} % saved), minutes missed {:.1} vs {:.1} naive ({:.0} % saved).\n\n",
            if v.success { "success" } else { "not yet" },
            m.binary.f2,
            n.f2.mean,
            n.f2.sd,
            t.wasted_minutes,
            n.wasted_minutes.mean,
            v.wasted_reduction_percent,
            t.missed_minutes,
            n.missed_minutes.mean,
            v.missed_reduction_percent,
        ));
        s.push_str(&format!(
            "{} tweets, {} need support ({:.1} %).\n\n| rule (the seed's) | met |\n|---|---|\n| F2 > 0.80 | {} |\n| F2 above naive | {} |\n| time wasted below naive | {} |\n| time missed below naive | {} |\n\n",
            self.rows,
            self.need_support,
            100.0 * self.prevalence,
            yes(v.f2_above_0_80),
            yes(v.f2_above_naive),
            yes(v.wasted_below_naive),
            yes(v.missed_below_naive),
        ));
        s.push_str("| metric | binary (need_support) | weighted |\n|---|---|---|\n");
        for (name, b, w) in [
            ("precision", m.binary.precision, m.weighted.precision),
            ("recall", m.binary.recall, m.weighted.recall),
            ("F1", m.binary.f1, m.weighted.f1),
            ("F0.5", m.binary.f05, m.weighted.f05),
            ("**F2**", m.binary.f2, m.weighted.f2),
        ] {
            s.push_str(&format!("| {name} | {b:.4} | {w:.4} |\n"));
        }
        let c = m.confusion;
        s.push_str(&format!(
            "\naccuracy {:.4}, balanced accuracy {:.4}; ROC-AUC {:.4}, average precision {:.4}, Brier {:.4}.\n\nConfusion: {} caught, {} missed, {} flagged needlessly, {} rightly left.\n\n",
            m.accuracy,
            m.balanced_accuracy,
            self.ranking.roc_auc,
            self.ranking.average_precision,
            self.ranking.brier,
            c.tp,
            c.fn_,
            c.fp,
            c.tn
        ));
        s.push_str(&format!(
            "| minutes | model | naive (mean ± sd of {} seeded runs) |\n|---|---|---|\n| wasted (reading + reply, the seed's code; headline) | {:.1} | {:.1} ± {:.1} |\n| wasted (reading only, the seed's scope) | {:.1} | {:.1} ± {:.1} |\n| missed (reading + reply) | {:.1} | {:.1} ± {:.1} |\n\nReading {} wpm, typing {} wpm, reply fraction {}.\n",
            n.repeats,
            t.wasted_minutes,
            n.wasted_minutes.mean,
            n.wasted_minutes.sd,
            t.wasted_reading_minutes,
            n.wasted_reading_minutes.mean,
            n.wasted_reading_minutes.sd,
            t.missed_minutes,
            n.missed_minutes.mean,
            n.missed_minutes.sd,
            self.business.reading_wpm,
            self.business.typing_wpm,
            self.business.reply_fraction,
        ));
        s
    }
}
