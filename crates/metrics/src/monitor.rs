//! Inference-time trend checks (the seed's monitoring): for a batch of predictions, the
//! predicted probability's count, min, mean, coefficient of variation and standard error,
//! overall and grouped by each dimension present (client, time of day, word-count bin…),
//! compared with the profile saved at training time.
//!
//! Two rules flag a change (`monitor.drift_test`):
//! - `relative` (the seed's): the group's mean or coefficient of variation moved more than the
//!   threshold (default 15 %). On small groups that is mostly noise.
//! - `significant` (the default): it moved more than the threshold **and** the move is
//!   significant for the groups' sizes — a two-sample z-test on the mean (Welch: the two
//!   standard errors) or on the CV (its large-sample standard error, cv·√((1 + 2cv²)/2n)),
//!   at `drift_alpha` divided by the number of statistics compared (Bonferroni).
//!
//! Each change carries its reason in words. When the batch has labels, its F2 and minutes per
//! tweet are compared with the reference by the threshold — the seed's retraining rule.

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
    /// Two-sample z statistic and its two-sided p-value (`None`: not computable).
    #[serde(default)]
    pub z: Option<f64>,
    #[serde(default)]
    pub p_value: Option<f64>,
    pub flagged: bool,
    /// Why it is flagged or not, in words.
    #[serde(default)]
    pub reason: String,
}

/// Which changes [`Drift::compare`] flags.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DriftRule {
    /// Relative change a statistic must exceed.
    pub threshold: f64,
    /// Groups with fewer rows than this (in either profile) are never flagged.
    pub min_count: usize,
    /// `Some(alpha)`: the change must also be significant at alpha / statistics compared;
    /// `None`: the seed's rule (size of the change alone).
    pub alpha: Option<f64>,
}

impl DriftRule {
    /// The seed's rule: a move beyond 15 %, groups of at least 10 rows.
    pub const SEED: DriftRule = DriftRule {
        threshold: 0.15,
        min_count: 10,
        alpha: None,
    };
}

/// The standard normal's two-sided tail probability P(|Z| ≥ |z|).
pub fn two_sided_p(z: f64) -> f64 {
    erfc(z.abs() / std::f64::consts::SQRT_2)
}

/// Complementary error function (Numerical Recipes' `erfcc`: relative error < 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// z of a statistic's change from its value and standard error in each sample.
fn z_of(r: f64, r_se: f64, b: f64, b_se: f64) -> Option<f64> {
    let se = (r_se * r_se + b_se * b_se).sqrt();
    if !(se.is_finite() && r.is_finite() && b.is_finite()) {
        return None;
    }
    if se == 0.0 {
        // No spread on either side (every post scored alike): any move is certain.
        return Some(if b == r {
            0.0
        } else {
            f64::INFINITY.copysign(b - r)
        });
    }
    Some((b - r) / se)
}

/// Large-sample standard error of a coefficient of variation.
fn cv_se(cv: f64, n: usize) -> f64 {
    cv * ((1.0 + 2.0 * cv * cv) / (2.0 * n as f64)).sqrt()
}

/// The comparison of a batch with the reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drift {
    pub threshold: f64,
    /// Groups with fewer rows than this (in either profile) are listed but never flagged.
    pub min_count: usize,
    /// The significance level of the `significant` rule (`None`: the seed's rule).
    #[serde(default)]
    pub alpha: Option<f64>,
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
    pub fn compare(reference: &Profile, batch: &Profile, rule: &DriftRule) -> Drift {
        let (threshold, min_count) = (rule.threshold, rule.min_count);
        let mut changes = Vec::new();
        let mut new_groups = Vec::new();
        let mut push = |dimension: &str, group: &str, r: &GroupStats, b: &GroupStats| {
            let enough = r.count >= min_count && b.count >= min_count;
            for (statistic, rv, bv, z) in [
                ("mean", r.mean, b.mean, z_of(r.mean, r.se, b.mean, b.se)),
                (
                    "cv",
                    r.cv,
                    b.cv,
                    z_of(r.cv, cv_se(r.cv, r.count), b.cv, cv_se(b.cv, b.count)),
                ),
            ] {
                let rel = relative(rv, bv);
                changes.push(Change {
                    dimension: dimension.into(),
                    group: group.into(),
                    statistic: statistic.into(),
                    reference: rv,
                    batch: bv,
                    relative: rel,
                    z,
                    p_value: z.map(two_sided_p),
                    // Decided below, once the number of tests is known.
                    flagged: enough && rel.abs() > threshold,
                    reason: if enough {
                        String::new()
                    } else {
                        format!(
                            "too few rows ({} and {}, under {min_count})",
                            r.count, b.count
                        )
                    },
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
        let tests = changes
            .iter()
            .filter(|c| c.reason.is_empty())
            .count()
            .max(1);
        for c in changes.iter_mut().filter(|c| c.reason.is_empty()) {
            let size = format!(
                "{} {:+.0} % ({:.3} → {:.3})",
                c.statistic,
                100.0 * c.relative,
                c.reference,
                c.batch
            );
            let big = c.relative.abs() > threshold;
            match rule.alpha {
                None => {
                    c.reason = if big {
                        format!("{size}: beyond ±{:.0} %", 100.0 * threshold)
                    } else {
                        format!("{size}: within ±{:.0} %", 100.0 * threshold)
                    };
                }
                Some(alpha) => {
                    let bound = alpha / tests as f64;
                    let p = c.p_value.unwrap_or(1.0);
                    let test = format!(
                        "z {:.1}, p {p:.2e} {} {bound:.1e} ({alpha} over {tests} tests)",
                        c.z.unwrap_or(0.0),
                        if p < bound { "<" } else { "≥" }
                    );
                    c.flagged = big && p < bound;
                    c.reason = match (big, p < bound) {
                        (true, true) => format!("{size}, significant: {test}"),
                        (true, false) => format!("{size}, but within noise for its size: {test}"),
                        (false, true) => format!(
                            "{size}: significant but within ±{:.0} %: {test}",
                            100.0 * threshold
                        ),
                        (false, false) => format!("{size}: small and within noise: {test}"),
                    };
                }
            }
        }
        let flagged = changes.iter().filter(|c| c.flagged).count();
        Drift {
            threshold,
            min_count,
            alpha: rule.alpha,
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
            "# {title}\n\n{rows} rows; {} of {} compared statistics flagged: moved more than {:.0} %{} (groups under {} rows never flagged).\n\n| dimension | group | statistic | reference | batch | change | flagged, and why |\n|---|---|---|---|---|---|---|\n",
            self.flagged,
            self.changes.len(),
            100.0 * self.threshold,
            match self.alpha {
                Some(a) => format!(" and significant at {a} over the statistics compared"),
                None => " (the seed's rule)".into(),
            },
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
                if c.flagged {
                    format!("**yes**: {}", c.reason)
                } else {
                    c.reason.clone()
                }
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
        let d = Drift::compare(&reference, &batch, &DriftRule::SEED);
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
        assert_eq!(
            Drift::compare(&reference, &reference, &DriftRule::SEED).flagged,
            0
        );
    }

    #[test]
    fn the_significant_rule_ignores_noise_in_small_groups_but_not_real_shifts() {
        // The same 20 % rise of the mean, in a group of 12 rows and in one of 400.
        let spread = |n: usize, scale: f64| -> Vec<f64> {
            (0..n)
                .map(|i| scale * (0.1 + 0.8 * ((i * 37) % 100) as f64 / 100.0))
                .collect()
        };
        let (small_ref, big_ref) = (spread(12, 1.0), spread(400, 1.0));
        let (small_new, big_new) = (spread(12, 1.2), spread(400, 1.2));
        let profile = |a: &[f64], b: &[f64]| {
            let probs: Vec<f64> = a.iter().chain(b).copied().collect();
            let groups: Vec<&str> = a
                .iter()
                .map(|_| "small")
                .chain(b.iter().map(|_| "big"))
                .collect();
            Profile::new(&probs, &dims(&groups), None)
        };
        let reference = profile(&small_ref, &big_ref);
        let batch = profile(&small_new, &big_new);
        let flagged = |d: &Drift| -> Vec<String> {
            d.changes
                .iter()
                .filter(|c| c.flagged)
                .map(|c| format!("{}/{}", c.group, c.statistic))
                .collect()
        };
        let seed = Drift::compare(&reference, &batch, &DriftRule::SEED);
        assert_eq!(flagged(&seed), ["all/mean", "big/mean", "small/mean"]);
        let rule = DriftRule {
            alpha: Some(0.05),
            ..DriftRule::SEED
        };
        let sig = Drift::compare(&reference, &batch, &rule);
        assert_eq!(flagged(&sig), ["all/mean", "big/mean"]);
        let small = sig
            .changes
            .iter()
            .find(|c| c.group == "small" && c.statistic == "mean")
            .unwrap();
        assert!(small.reason.contains("within noise"), "{}", small.reason);
        let big = sig
            .changes
            .iter()
            .find(|c| c.group == "big" && c.statistic == "mean")
            .unwrap();
        assert!(
            big.reason.contains("significant") && big.p_value.unwrap() < 1e-4,
            "{}",
            big.reason
        );
        // A group scored all alike before and after (a bot repeating one text): any move is
        // certain, and flagged.
        let flat = |p: f64| Profile::new(&[p; 12], &dims(&["bot"; 12]), None);
        let d = Drift::compare(&flat(0.2), &flat(0.8), &rule);
        assert!(
            d.changes
                .iter()
                .any(|c| c.group == "bot" && c.statistic == "mean" && c.flagged),
            "{:?}",
            d.changes
        );
        assert_eq!(two_sided_p(f64::INFINITY), 0.0);
        // The p-value of the normal tail, by hand: P(|Z| ≥ 1.96) = 0.05.
        assert!((two_sided_p(1.959964) - 0.05).abs() < 1e-6);
        assert!((two_sided_p(0.0) - 1.0).abs() < 1e-6);
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
            Drift::compare(&r, &p(q(0.80, 11.0, 5.5)), &DriftRule::SEED).retrain,
            Some(false)
        );
        assert_eq!(
            Drift::compare(&r, &p(q(0.70, 10.0, 5.0)), &DriftRule::SEED).retrain,
            Some(true)
        );
        assert_eq!(
            Drift::compare(&r, &p(q(0.85, 10.0, 6.0)), &DriftRule::SEED).retrain,
            Some(true)
        );
    }
}
