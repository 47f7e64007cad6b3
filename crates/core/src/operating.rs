//! The operating point: the threshold the support team works at, chosen by what the team
//! cares about rather than by F2 alone.
//!
//! [`sweep`] walks every distinct probability of a labelled set as a cut-off (re-weighted to
//! the expected share of posts needing support, like [`crate::scoring::tune`]) and records,
//! per cut, F2, precision, recall, the share of posts flagged and the minutes wasted and missed
//! per 100 posts. [`choose`] picks one cut by a rule:
//!
//! - `f2`: the highest F2 (the seed's rule);
//! - `minutes`: the fewest minutes wasted + `miss_cost` × minutes missed;
//! - `capacity`: the most posts caught while flagging at most `capacity_share` of them;
//! - `recall`: the highest threshold whose recall still reaches `recall_floor`.
//!
//! Ties go to the higher threshold (less to read). The model crate stores every rule's point
//! and a thinned curve in `flagship.json`; the metrics crate reports them on the test set.

use serde::{Deserialize, Serialize};

pub use crate::config::OperatingRule as Rule;
use crate::scoring::{f_beta, prevalence_weights};

/// What the threshold is chosen for (`[model]`'s `operating_point` and its parameters).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub rule: Rule,
    pub miss_cost: f64,
    pub capacity_share: f64,
    pub recall_floor: f64,
}

/// One cut-off and what it gives on the (re-weighted) set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Cut {
    /// Flag when the probability is at least this.
    pub threshold: f64,
    pub f2: f64,
    pub precision: f64,
    pub recall: f64,
    /// Share of posts flagged.
    pub flagged: f64,
    /// Minutes spent on needless flags, and minutes of support posts left unflagged, per 100
    /// posts (reading + reply time, as the metrics count them).
    pub wasted_per_100: f64,
    pub missed_per_100: f64,
}

impl Cut {
    /// `wasted + miss_cost × missed`, per 100 posts.
    pub fn cost(&self, miss_cost: f64) -> f64 {
        self.wasted_per_100 + miss_cost * self.missed_per_100
    }
}

/// Every cut of `probs` (highest threshold first, starting with "flag nothing"). `seconds`:
/// each post's reading + reply time; `rate`: re-weight positives to this share.
pub fn sweep(probs: &[f64], labels: &[bool], seconds: &[f64], rate: Option<f64>) -> Vec<Cut> {
    assert!(probs.len() == labels.len() && probs.len() == seconds.len());
    let (wp, wn) = rate
        .and_then(|r| prevalence_weights(labels, r))
        .unwrap_or((1.0, 1.0));
    let n = probs.len().max(1) as f64;
    let total_pos: f64 = labels.iter().filter(|&&y| y).count() as f64 * wp;
    let pos_minutes: f64 = labels
        .iter()
        .zip(seconds)
        .filter(|(y, _)| **y)
        .map(|(_, s)| s * wp / 60.0)
        .sum();
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    let (mut tp, mut fp, mut caught_min, mut wasted_min) = (0.0, 0.0, 0.0, 0.0);
    let cut = |threshold, tp: f64, fp: f64, caught: f64, wasted: f64| Cut {
        threshold,
        f2: f_beta(tp, fp, total_pos - tp, 2.0),
        precision: if tp + fp > 0.0 { tp / (tp + fp) } else { 0.0 },
        recall: if total_pos > 0.0 { tp / total_pos } else { 0.0 },
        flagged: (tp + fp) / n,
        wasted_per_100: 100.0 * wasted / n,
        missed_per_100: 100.0 * (pos_minutes - caught) / n,
    };
    let top = order.first().map_or(1.0, |&i| probs[i]);
    let mut cuts = vec![cut(f64::max(1.0, top) + 1e-9, 0.0, 0.0, 0.0, 0.0)];
    let mut i = 0;
    while i < order.len() {
        let p = probs[order[i]];
        while i < order.len() && probs[order[i]].total_cmp(&p).is_eq() {
            let k = order[i];
            if labels[k] {
                tp += wp;
                caught_min += seconds[k] * wp / 60.0;
            } else {
                fp += wn;
                wasted_min += seconds[k] * wn / 60.0;
            }
            i += 1;
        }
        // Halfway to the next lower probability (see `scoring::tune`).
        let threshold = match order.get(i) {
            Some(&next) => (p + probs[next]) / 2.0,
            None => p,
        };
        cuts.push(cut(threshold, tp, fp, caught_min, wasted_min));
    }
    cuts
}

/// The cut a rule picks from [`sweep`]'s list (never empty: it starts with "flag nothing").
pub fn choose(cuts: &[Cut], rule: Rule, s: &Settings) -> Cut {
    let mut best = cuts[0];
    match rule {
        Rule::F2 => {
            for c in cuts {
                if c.f2 > best.f2 {
                    best = *c;
                }
            }
        }
        Rule::Minutes => {
            for c in cuts {
                if c.cost(s.miss_cost) < best.cost(s.miss_cost) - 1e-12 {
                    best = *c;
                }
            }
        }
        Rule::Capacity => {
            for c in cuts {
                if c.flagged <= s.capacity_share + 1e-12 {
                    best = *c;
                }
            }
        }
        Rule::Recall => {
            best = *cuts
                .iter()
                .find(|c| c.recall >= s.recall_floor - 1e-12)
                .unwrap_or(cuts.last().expect("never empty"));
        }
    }
    best
}

/// Every rule's point, the chosen one, and the curve a report draws.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Points {
    pub settings: Settings,
    pub chosen: Cut,
    /// `(rule, its cut)` for every rule, in [`Rule::ALL`] order.
    pub points: Vec<(Rule, Cut)>,
    /// At most [`CURVE_POINTS`] cuts, highest threshold first.
    pub curve: Vec<Cut>,
}

/// Cuts kept in [`Points::curve`].
pub const CURVE_POINTS: usize = 200;

impl Points {
    pub fn new(
        probs: &[f64],
        labels: &[bool],
        seconds: &[f64],
        rate: Option<f64>,
        s: Settings,
    ) -> Points {
        let cuts = sweep(probs, labels, seconds, rate);
        let points: Vec<(Rule, Cut)> = Rule::ALL
            .iter()
            .map(|&r| (r, choose(&cuts, r, &s)))
            .collect();
        let step = cuts.len().div_ceil(CURVE_POINTS).max(1);
        let mut curve: Vec<Cut> = cuts.iter().step_by(step).copied().collect();
        if let Some(last) = cuts.last().filter(|l| curve.last() != Some(l)) {
            curve.push(*last);
        }
        Points {
            settings: s,
            chosen: choose(&cuts, s.rule, &s),
            points,
            curve,
        }
    }

    pub fn of(&self, rule: Rule) -> Option<Cut> {
        self.points
            .iter()
            .find(|(r, _)| *r == rule)
            .map(|(_, c)| *c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scoring::tune;

    fn settings(rule: Rule) -> Settings {
        Settings {
            rule,
            miss_cost: 1.0,
            capacity_share: 0.3,
            recall_floor: 0.75,
        }
    }

    fn set() -> (Vec<f64>, Vec<bool>, Vec<f64>) {
        let probs = vec![0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1];
        let labels = vec![
            true, true, false, true, false, true, false, false, true, false,
        ];
        (probs, labels, vec![60.0; 10])
    }

    #[test]
    fn f2_agrees_with_tune_and_each_rule_meets_its_bound() {
        let (p, y, s) = set();
        let cuts = sweep(&p, &y, &s, None);
        assert_eq!(cuts.len(), 11);
        let f2 = choose(&cuts, Rule::F2, &settings(Rule::F2));
        let t = tune(&p, &y, None, 2.0);
        assert_eq!(f2.threshold, t.threshold);
        assert!((f2.f2 - t.f_beta).abs() < 1e-12);

        let cap = choose(&cuts, Rule::Capacity, &settings(Rule::Capacity));
        assert!((cap.flagged - 0.3).abs() < 1e-12, "{cap:?}");
        assert_eq!(cap.threshold, 0.75);

        let rec = choose(&cuts, Rule::Recall, &settings(Rule::Recall));
        // Three of five positives by 0.7, the fourth at 0.5: recall 0.8 ≥ 0.75 first there.
        assert!((rec.recall - 0.8).abs() < 1e-12, "{rec:?}");
        assert_eq!(rec.threshold, 0.45);

        // Minutes with equal costs: one minute per post, so each cut costs FP + FN.
        let min = choose(&cuts, Rule::Minutes, &settings(Rule::Minutes));
        let best = cuts
            .iter()
            .map(|c| c.cost(1.0))
            .fold(f64::INFINITY, f64::min);
        assert!((min.cost(1.0) - best).abs() < 1e-12);
        // A dearer miss can only lower the threshold.
        let dear = choose(
            &cuts,
            Rule::Minutes,
            &Settings {
                miss_cost: 10.0,
                ..settings(Rule::Minutes)
            },
        );
        assert!(
            dear.threshold <= min.threshold && dear.recall == 1.0,
            "{dear:?}"
        );
    }

    #[test]
    fn minutes_are_per_100_posts_and_reweighted() {
        let (p, y, s) = set();
        let cuts = sweep(&p, &y, &s, None);
        // Flag nothing: all five support posts missed, one minute each, of 10 posts.
        assert_eq!(cuts[0].missed_per_100, 50.0);
        assert_eq!(cuts[0].flagged, 0.0);
        // Flag all: five needless reads.
        let all = cuts.last().unwrap();
        assert_eq!(
            (all.wasted_per_100, all.missed_per_100, all.flagged),
            (50.0, 0.0, 1.0)
        );
        // Re-weighted to 20 % positives, flagging everything wastes 80 minutes per 100.
        let w = sweep(&p, &y, &s, Some(0.2));
        assert!((w.last().unwrap().wasted_per_100 - 80.0).abs() < 1e-9);
    }

    #[test]
    fn a_nan_probability_ends_the_sweep() {
        let cuts = sweep(&[f64::NAN, 0.3, 0.3], &[true, false, true], &[1.0; 3], None);
        assert_eq!(cuts.len(), 3);
    }

    #[test]
    fn points_keep_every_rule_and_a_thinned_curve() {
        let probs: Vec<f64> = (0..1000).map(|i| i as f64 / 1000.0).collect();
        let labels: Vec<bool> = (0..1000).map(|i| (i * 7919) % 1000 < i).collect();
        let secs = vec![30.0; 1000];
        let pts = Points::new(&probs, &labels, &secs, Some(0.4), settings(Rule::Capacity));
        assert!(pts.curve.len() <= CURVE_POINTS + 1);
        assert_eq!(pts.points.len(), 4);
        assert_eq!(pts.of(Rule::Capacity), Some(pts.chosen));
        assert!(pts.chosen.flagged <= 0.3 + 1e-12);
    }
}
