//! Inference-time trend checks (the seed's monitoring): for a batch of predictions, the
//! predicted probability's count, min, mean, coefficient of variation and standard error,
//! overall and grouped by each dimension present (client, time of day, word-count bin…),
//! compared with the profile saved at training time. A group whose mean or coefficient of
//! variation moves more than the threshold (default 15 %) is flagged. When the batch has labels,
//! its F2 and minutes per tweet are compared with the reference the same way — the seed's
//! retraining rule.

use std::collections::BTreeMap;

use flagship_core::config::Business;
use flagship_core::features::{time_of_day, word_bin};
use serde::{Deserialize, Serialize};

use crate::business::Times;
use crate::classification::Confusion;

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

impl Drift {
    /// The seed's retraining rule, in words.
    pub fn retrain_verdict(&self) -> &'static str {
        match self.retrain {
            Some(true) => "labelled batch: F2 or minutes moved beyond the threshold — retrain",
            Some(false) => "labelled batch: F2 and minutes within the threshold of the reference",
            None => "no labels in the batch: quality not checked",
        }
    }

    /// The monitoring report as markdown: every compared statistic, new groups, the verdict.
    pub fn to_markdown(&self, title: &str, rows: usize) -> String {
        let mut md = format!(
            "# {title}\n\n{rows} rows; {} of {} compared statistics moved more than {:.0} % (groups under {} rows never flagged).\n\n| dimension | group | statistic | reference | batch | change | flagged |\n|---|---|---|---|---|---|---|\n",
            self.flagged,
            self.changes.len(),
            100.0 * self.threshold,
            self.min_count
        );
        for c in &self.changes {
            md.push_str(&format!(
                "| {} | {} | {} | {:.4} | {:.4} | {:+.1} % | {} |\n",
                c.dimension,
                c.group,
                c.statistic,
                c.reference,
                c.batch,
                100.0 * c.relative,
                if c.flagged { "**yes**" } else { "" }
            ));
        }
        for (dim, g) in &self.new_groups {
            md.push_str(&format!("\nNew group, not in the reference: {dim} = {g}\n"));
        }
        md.push_str(&format!("\n{}.\n", self.retrain_verdict()));
        md
    }
}

/// The columns of a predictions table that monitoring groups by, as the caller read them
/// (each `None` when the table lacks it; values `None` where a row has none).
#[derive(Debug, Clone, Default)]
pub struct GroupColumns {
    /// The posting client (`source`, or `client`).
    pub client: Option<Vec<Option<String>>>,
    /// textproc's `time_of_day`.
    pub time_of_day: Option<Vec<Option<String>>>,
    /// RFC 3339 creation times, bucketed when there is no `time_of_day`.
    pub created_at: Option<Vec<Option<String>>>,
    /// textproc's `word_bin`; else binned from the word counts.
    pub word_bin: Option<Vec<Option<String>>>,
}

/// The grouping dimensions a table supports: client, time of day (from `time_of_day` or
/// `created_at`), word-count bin (from `word_bin` or the word counts). Missing values and
/// unreadable times are the group "unknown".
pub fn dimensions(cols: &GroupColumns, words: &[u32]) -> Vec<(String, Vec<String>)> {
    let known = |v: &[Option<String>]| -> Vec<String> {
        v.iter()
            .map(|s| s.clone().unwrap_or_else(|| "unknown".into()))
            .collect()
    };
    let mut dims = Vec::new();
    if let Some(c) = &cols.client {
        dims.push(("client".to_string(), known(c)));
    }
    if let Some(t) = &cols.time_of_day {
        dims.push(("time_of_day".into(), known(t)));
    } else if let Some(c) = &cols.created_at {
        let v = c
            .iter()
            .map(|s| {
                s.as_deref()
                    .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                    .and_then(|d| {
                        use chrono::Timelike;
                        time_of_day(d.naive_utc().hour())
                    })
                    .unwrap_or("unknown")
                    .to_string()
            })
            .collect();
        dims.push(("time_of_day".into(), v));
    }
    let bins = match &cols.word_bin {
        Some(b) => known(b),
        None => words.iter().map(|&w| word_bin(w)).collect(),
    };
    dims.push(("word_bin".into(), bins));
    dims
}

/// The profile of a batch of predictions: probabilities by group, and with labels
/// (`need_support` per row, `None` where unlabelled) its quality per 100 posts.
pub fn profile_of(
    probs: &[f64],
    flags: &[bool],
    words: &[u32],
    need_support: Option<&[Option<bool>]>,
    cols: &GroupColumns,
    business: &Business,
) -> Profile {
    let dims = dimensions(cols, words);
    let quality = need_support.and_then(|labels| {
        let (mut y, mut f, mut w) = (vec![], vec![], vec![]);
        for (i, l) in labels.iter().enumerate() {
            if let Some(l) = l {
                y.push(*l);
                f.push(flags[i]);
                w.push(words[i]);
            }
        }
        (!y.is_empty()).then(|| {
            let times = Times::new(&y, &f, &w, business);
            let per100 = 100.0 / y.len() as f64;
            Quality {
                f2: Confusion::from_pairs(&y, &f).f_beta(2.0),
                wasted_minutes_per_100: times.wasted_minutes * per100,
                missed_minutes_per_100: times.missed_minutes * per100,
            }
        })
    });
    Profile::new(probs, &dims, quality)
}

#[cfg(test)]
mod tests {
    #[test]
    fn groups_by_client_time_of_day_and_word_bin() {
        let some = |v: &[&str]| Some(v.iter().map(|s| Some(s.to_string())).collect::<Vec<_>>());
        let cols = GroupColumns {
            client: some(&[
                "Twitter for iPhone",
                "Twitter Web App",
                "Twitter for iPhone",
            ]),
            created_at: Some(vec![
                Some("2022-07-12T14:30:00Z".into()),
                Some("2022-07-12T02:10:00Z".into()),
                Some("not a time".into()),
            ]),
            ..GroupColumns::default()
        };
        let words = [4, 7, 0];
        let dims = dimensions(&cols, &words);
        let get = |name: &str| dims.iter().find(|(n, _)| n == name).unwrap().1.clone();
        assert_eq!(
            get("client"),
            [
                "Twitter for iPhone",
                "Twitter Web App",
                "Twitter for iPhone"
            ]
        );
        // 14:30 UTC is in (12, 16] → Afternoon; 02:10 in (0, 4] → Late Night; bad → unknown.
        assert_eq!(get("time_of_day"), ["Afternoon", "Late Night", "unknown"]);
        assert_eq!(get("word_bin"), ["0-5", "6-10", "0-5"]);
        let business = flagship_core::Config::default().business;
        let p = profile_of(
            &[0.2, 0.9, 0.5],
            &[false, true, true],
            &words,
            None,
            &cols,
            &business,
        );
        assert_eq!(p.groups["client"]["Twitter for iPhone"].count, 2);
        assert!(p.quality.is_none());
        // Labels: two rows labelled, both flagged correctly or not → quality from those only.
        let labels = [Some(false), Some(true), None];
        let q = profile_of(
            &[0.2, 0.9, 0.5],
            &[false, true, true],
            &words,
            Some(&labels),
            &cols,
            &business,
        )
        .quality
        .unwrap();
        assert_eq!(q.f2, 1.0);
        assert_eq!(q.missed_minutes_per_100, 0.0);
    }

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
