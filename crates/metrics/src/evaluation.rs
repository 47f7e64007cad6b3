//! One evaluation of a labelled prediction set: everything `report.json` and `report.md` hold,
//! and the verdict sentence every report and `flagship evaluate` state ([`VerdictSentence`]).

use flagship_core::config::Business;
use flagship_core::operating::{Points, Rule};
use serde::{Deserialize, Serialize};

use crate::business::{Naive, Times, Verdict, verdict_word};
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
    /// Each operating rule's threshold (chosen on validation, from the model's card) applied to
    /// this set; empty when the model's card has none.
    #[serde(default)]
    pub operating: Vec<OperatingRow>,
}

impl OperatingRow {
    /// The rule's name, marked when the model works at it: `recall (chosen)`.
    pub fn label(&self) -> String {
        format!(
            "{}{}",
            self.rule.name(),
            if self.chosen { " (chosen)" } else { "" }
        )
    }
}

/// The verdict as the reports state it (`report.md` and `report.html`, word for word): the
/// conclusion, then the figures it rests on. [`Evaluation::verdict_sentence`] writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerdictSentence {
    /// `Verdict: success at the minutes operating point (threshold 0.605, 39 % flagged).`
    pub headline: String,
    /// `F2 0.840 (naive 0.492 ± 0.037); minutes wasted 16.6 vs 48.1 naive (65 % saved),
    /// minutes missed 14.5 vs 46.6 naive (69 % saved).`
    pub figures: String,
}

/// One operating point on the evaluated set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatingRow {
    pub rule: Rule,
    /// The rule the model works at (its card's threshold).
    pub chosen: bool,
    pub threshold: f64,
    pub f2: f64,
    pub precision: f64,
    pub recall: f64,
    /// Share of posts flagged.
    pub flagged: f64,
    pub wasted_minutes: f64,
    pub missed_minutes: f64,
    /// The seed's verdict at this threshold.
    pub success: bool,
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
            operating: Vec::new(),
        }
    }

    /// Adds every operating rule's point of `points` (from the model's card), scored here.
    pub fn with_operating(
        mut self,
        points: &Points,
        truth: &[bool],
        probs: &[f64],
        words: &[u32],
    ) -> Evaluation {
        self.operating = points
            .points
            .iter()
            .map(|&(rule, cut)| {
                let flags: Vec<bool> = probs.iter().map(|&p| p >= cut.threshold).collect();
                let c = Classification::new(truth, &flags);
                let times = Times::new(truth, &flags, words, &self.business);
                OperatingRow {
                    rule,
                    chosen: rule == points.settings.rule,
                    threshold: cut.threshold,
                    f2: c.binary.f2,
                    precision: c.binary.precision,
                    recall: c.binary.recall,
                    flagged: flags.iter().filter(|&&f| f).count() as f64
                        / flags.len().max(1) as f64,
                    wasted_minutes: times.wasted_minutes,
                    missed_minutes: times.missed_minutes,
                    success: Verdict::new(c.binary.f2, &times, &self.naive).success,
                }
            })
            .collect();
        self
    }

    /// " at the recall operating point (threshold 0.346, 54 % flagged)" — where the verdict
    /// was reached (empty without operating points).
    pub fn at_operating_point(&self) -> String {
        self.operating
            .iter()
            .find(|r| r.chosen)
            .map(|r| {
                format!(
                    " at the {} operating point (threshold {:.3}, {:.0} % flagged)",
                    r.rule.name(),
                    r.threshold,
                    100.0 * r.flagged
                )
            })
            .unwrap_or_default()
    }

    /// The verdict and where it was reached: `success at the minutes operating point
    /// (threshold 0.605, 39 % flagged)`; without operating points, `success` or `not yet`.
    pub fn outcome(&self) -> String {
        format!("{}{}", self.verdict.word(), self.at_operating_point())
    }

    /// `minutes wasted 16.6 vs 48.1 naive (65 % saved)`: the model's against the naive mean.
    pub fn wasted_against_naive(&self) -> String {
        format!(
            "minutes wasted {:.1} vs {:.1} naive ({:.0} % saved)",
            self.times.wasted_minutes,
            self.naive.wasted_minutes.mean,
            self.verdict.wasted_reduction_percent
        )
    }

    /// `minutes missed 14.5 vs 46.6 naive (69 % saved)`: the model's against the naive mean.
    pub fn missed_against_naive(&self) -> String {
        format!(
            "minutes missed {:.1} vs {:.1} naive ({:.0} % saved)",
            self.times.missed_minutes,
            self.naive.missed_minutes.mean,
            self.verdict.missed_reduction_percent
        )
    }

    /// The verdict sentence: [`Evaluation::outcome`], then F2 and the minutes against the
    /// naive baseline. The one place it is written; `report.md`, `report.html` and
    /// `flagship evaluate` all say it from here.
    pub fn verdict_sentence(&self) -> VerdictSentence {
        let (f2, naive) = (self.model.binary.f2, &self.naive.f2);
        VerdictSentence {
            headline: format!("Verdict: {}.", self.outcome()),
            figures: format!(
                "F2 {f2:.3} (naive {:.3} ± {:.3}); {}, {}.",
                naive.mean,
                naive.sd,
                self.wasted_against_naive(),
                self.missed_against_naive()
            ),
        }
    }

    /// The operating points as a markdown table (empty without them).
    pub fn operating_markdown(&self) -> String {
        if self.operating.is_empty() {
            return String::new();
        }
        let mut s = String::from(
            "## Operating points\n\nThresholds chosen on validation by each rule (`model.operating_point`), applied to this set.\n\n| rule | threshold | flagged | precision | recall | F2 | minutes wasted | minutes missed | verdict |\n|---|---|---|---|---|---|---|---|---|\n",
        );
        for r in &self.operating {
            s.push_str(&format!(
                "| {} | {:.3} | {:.0} % | {:.3} | {:.3} | {:.3} | {:.1} | {:.1} | {} |\n",
                r.label(),
                r.threshold,
                100.0 * r.flagged,
                r.precision,
                r.recall,
                r.f2,
                r.wasted_minutes,
                r.missed_minutes,
                verdict_word(r.success),
            ));
        }
        s.push('\n');
        s
    }

    /// `report.md`: the verdict first, then the tables.
    pub fn to_markdown(&self, title: &str) -> String {
        let v = &self.verdict;
        let yes = |b: bool| if b { "yes" } else { "**no**" };
        let m = &self.model;
        let n = &self.naive;
        let t = &self.times;
        let verdict = self.verdict_sentence();
        let mut s = format!(
            "# {title}\n\n**{}** {}\n\n",
            verdict.headline, verdict.figures
        );
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
        s.push('\n');
        s.push_str(&self.operating_markdown());
        s
    }
}
