//! Inference-time trend checks (the seed's monitoring): for a batch of predictions, the
//! predicted probability's count, min, mean, coefficient of variation and standard error,
//! overall and grouped by each dimension present (client, time of day, word-count bin…),
//! compared with the profile saved at training time. A group whose mean or coefficient of
//! variation moves more than the threshold (default 15 %) is flagged. When the batch has labels,
//! its F2 and minutes per tweet are compared with the reference the same way — the seed's
//! retraining rule.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Statistics of the predicted probability in one group.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GroupStats {
    pub count: usize,
    pub min: f64,
    pub mean: f64,
    /// Standard deviation / mean.
    pub cv: f64,
    /// Standard error of the mean.
    pub se: f64,
}

impl GroupStats {
    pub fn of(values: &[f64]) -> GroupStats {
        let n = values.len();
        if n == 0 {
            return GroupStats {
                count: 0,
                min: f64::NAN,
                mean: f64::NAN,
                cv: f64::NAN,
                se: f64::NAN,
            };
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let sd = if n > 1 {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        GroupStats {
            count: n,
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            mean,
            cv: if mean != 0.0 { sd / mean } else { f64::NAN },
            se: sd / (n as f64).sqrt(),
        }
    }
}

/// Quality figures of a labelled set, per tweet so sets of any size compare.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    pub f2: f64,
    pub wasted_minutes_per_100: f64,
    pub missed_minutes_per_100: f64,
}

/// The probability profile of a set of predictions (saved beside a model as the reference).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub overall: GroupStats,
    /// dimension → group → statistics.
    pub groups: BTreeMap<String, BTreeMap<String, GroupStats>>,
    pub quality: Option<Quality>,
}

impl Profile {
    /// `dims`: for each dimension name, each row's group (same length as `probs`).
    pub fn new(probs: &[f64], dims: &[(String, Vec<String>)], quality: Option<Quality>) -> Profile {
        let mut groups = BTreeMap::new();
        for (name, values) in dims {
            assert_eq!(values.len(), probs.len(), "one group per row for `{name}`");
            let mut by: BTreeMap<String, Vec<f64>> = BTreeMap::new();
            for (g, &p) in values.iter().zip(probs) {
                by.entry(g.clone()).or_default().push(p);
            }
            groups.insert(
                name.clone(),
                by.into_iter()
                    .map(|(g, v)| (g, GroupStats::of(&v)))
                    .collect(),
            );
        }
        Profile {
            overall: GroupStats::of(probs),
            groups,
            quality,
        }
    }
}

/// One compared statistic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub dimension: String,
    pub group: String,
    pub statistic: String,
    pub reference: f64,
    pub batch: f64,
    /// (batch − reference) / |reference|.
    pub relative: f64,
    pub flagged: bool,
}

/// The comparison of a batch with the reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drift {
    pub threshold: f64,
    /// Groups with fewer rows than this (in either profile) are listed but never flagged.
    pub min_count: usize,
    pub changes: Vec<Change>,
    /// Groups of the batch the reference never saw.
    pub new_groups: Vec<(String, String)>,
    pub flagged: usize,
    /// The retraining rule: labelled batch whose F2 or minutes moved beyond the threshold.
    pub retrain: Option<bool>,
}

fn relative(reference: f64, batch: f64) -> f64 {
    if reference == 0.0 {
        if batch == 0.0 { 0.0 } else { f64::INFINITY }
    } else {
        (batch - reference) / reference.abs()
    }
}

impl Drift {
    pub fn compare(
        reference: &Profile,
        batch: &Profile,
        threshold: f64,
        min_count: usize,
    ) -> Drift {
        let mut changes = Vec::new();
        let mut new_groups = Vec::new();
        let mut push = |dimension: &str, group: &str, r: &GroupStats, b: &GroupStats| {
            let enough = r.count >= min_count && b.count >= min_count;
            for (statistic, rv, bv) in [("mean", r.mean, b.mean), ("cv", r.cv, b.cv)] {
                let rel = relative(rv, bv);
                changes.push(Change {
                    dimension: dimension.into(),
                    group: group.into(),
                    statistic: statistic.into(),
                    reference: rv,
                    batch: bv,
                    relative: rel,
                    flagged: enough && rel.abs() > threshold,
                });
            }
        };
        push("overall", "all", &reference.overall, &batch.overall);
        for (dim, groups) in &batch.groups {
            for (g, b) in groups {
                match reference.groups.get(dim).and_then(|r| r.get(g)) {
                    Some(r) => push(dim, g, r, b),
                    None => new_groups.push((dim.clone(), g.clone())),
                }
            }
        }
        let retrain = match (reference.quality, batch.quality) {
            (Some(r), Some(b)) => Some(
                relative(r.f2, b.f2) < -threshold
                    || relative(r.wasted_minutes_per_100, b.wasted_minutes_per_100) > threshold
                    || relative(r.missed_minutes_per_100, b.missed_minutes_per_100) > threshold,
            ),
            _ => None,
        };
        let flagged = changes.iter().filter(|c| c.flagged).count();
        Drift {
            threshold,
            min_count,
            changes,
            new_groups,
            flagged,
            retrain,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims(v: &[&str]) -> Vec<(String, Vec<String>)> {
        vec![("client".into(), v.iter().map(|s| s.to_string()).collect())]
    }

    #[test]
    fn stats_by_hand() {
        let s = GroupStats::of(&[0.2, 0.4, 0.6]);
        assert_eq!(s.count, 3);
        assert!((s.mean - 0.4).abs() < 1e-12);
        assert!((s.cv - 0.5).abs() < 1e-12); // sd 0.2
        assert!((s.se - 0.2 / 3f64.sqrt()).abs() < 1e-12);
        assert_eq!(s.min, 0.2);
    }

    #[test]
    fn a_shifted_group_is_flagged_and_a_steady_one_is_not() {
        let n = 40;
        let probs: Vec<f64> = (0..2 * n).map(|i| 0.3 + (i % 7) as f64 * 0.05).collect();
        let groups: Vec<&str> = (0..2 * n)
            .map(|i| if i % 2 == 0 { "iPhone" } else { "Web" })
            .collect();
        let reference = Profile::new(&probs, &dims(&groups), None);
        // Web's probabilities rise by 30 %; iPhone's stay.
        let shifted: Vec<f64> = probs
            .iter()
            .zip(&groups)
            .map(|(&p, g)| if *g == "Web" { p * 1.3 } else { p })
            .collect();
        let mut g2 = groups.clone();
        g2.push("Android");
        let mut s2 = shifted.clone();
        s2.push(0.5);
        let batch = Profile::new(&s2, &dims(&g2), None);
        let d = Drift::compare(&reference, &batch, 0.15, 10);
        let flagged: Vec<(&str, &str)> = d
            .changes
            .iter()
            .filter(|c| c.flagged)
            .map(|c| (c.group.as_str(), c.statistic.as_str()))
            .collect();
        assert_eq!(flagged, vec![("Web", "mean")]);
        assert_eq!(
            d.new_groups,
            vec![("client".to_string(), "Android".to_string())]
        );
        assert_eq!(d.retrain, None);
        // Identical batch: nothing moves.
        assert_eq!(Drift::compare(&reference, &reference, 0.15, 10).flagged, 0);
    }

    #[test]
    fn retraining_rule_follows_quality() {
        let q = |f2, w, m| Quality {
            f2,
            wasted_minutes_per_100: w,
            missed_minutes_per_100: m,
        };
        let p = |quality| Profile::new(&[0.5; 20], &[], Some(quality));
        let r = p(q(0.85, 10.0, 5.0));
        assert_eq!(
            Drift::compare(&r, &p(q(0.80, 11.0, 5.5)), 0.15, 10).retrain,
            Some(false)
        );
        assert_eq!(
            Drift::compare(&r, &p(q(0.70, 10.0, 5.0)), 0.15, 10).retrain,
            Some(true)
        );
        assert_eq!(
            Drift::compare(&r, &p(q(0.85, 10.0, 6.0)), 0.15, 10).retrain,
            Some(true)
        );
    }
}
