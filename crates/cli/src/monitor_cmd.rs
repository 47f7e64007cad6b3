//! `flagship monitor`: a batch of predictions against the reference profile saved beside the
//! model at training time (`monitor-reference.json`), flagging groups whose probability mean or
//! spread moved more than `monitor.drift_threshold`; with labels, the retraining rule too.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use flagship_core::Config;
use flagship_core::config::Business;
use flagship_metrics::{Confusion, Drift, Profile, Quality, Times};

use crate::table::{Table, write_atomic};

pub const REFERENCE: &str = "monitor-reference.json";

#[derive(clap::Args)]
pub struct Args {
    /// Model folder (holds monitor-reference.json).
    #[arg(long)]
    pub model: PathBuf,
    /// Predictions of one inference batch (from `flagship predict`); a `label` column adds the
    /// retraining check.
    #[arg(long)]
    pub predictions: PathBuf,
    /// Folder for monitor.json, monitor.md and monitor.html (drift bars).
    #[arg(long)]
    pub out: PathBuf,
}

/// Word counts: `num_words` if present, else counted from `text`.
pub fn words(t: &Table) -> Result<Vec<u32>> {
    Ok(if t.has_column("num_words") {
        t.f64_column("num_words")?
            .iter()
            .map(|&w| w as u32)
            .collect()
    } else {
        t.texts()?
            .iter()
            .map(|s| s.split_whitespace().count() as u32)
            .collect()
    })
}

/// The grouping dimensions a table supports: client (`source`), time of day (`time_of_day`,
/// or from `created_at`), word-count bin (`word_bin`, or from the word count).
fn dimensions(t: &Table, words: &[u32]) -> Result<Vec<(String, Vec<String>)>> {
    let mut dims = Vec::new();
    let text_col = |name: &str| -> Result<Vec<String>> {
        Ok(t.string_column(name)?
            .into_iter()
            .map(|v| v.unwrap_or_else(|| "unknown".into()))
            .collect())
    };
    for name in ["source", "client"] {
        if t.has_column(name) {
            dims.push(("client".to_string(), text_col(name)?));
            break;
        }
    }
    if t.has_column("time_of_day") {
        dims.push(("time_of_day".into(), text_col("time_of_day")?));
    } else if t.has_column("created_at") {
        let v = text_col("created_at")?
            .iter()
            .map(|s| {
                chrono::DateTime::parse_from_rfc3339(s)
                    .ok()
                    .and_then(|d| {
                        use chrono::Timelike;
                        flagship_textproc::time_of_day(d.naive_utc().hour())
                    })
                    .unwrap_or("unknown")
                    .to_string()
            })
            .collect();
        dims.push(("time_of_day".into(), v));
    }
    let bins = if t.has_column("word_bin") {
        text_col("word_bin")?
    } else {
        words
            .iter()
            .map(|&w| flagship_textproc::word_bin(w))
            .collect()
    };
    dims.push(("word_bin".into(), bins));
    Ok(dims)
}

/// The profile of a predictions table (probabilities, flags, optional labels).
pub fn profile(t: &Table, probs: &[f64], flags: &[bool], business: &Business) -> Result<Profile> {
    let w = words(t)?;
    let dims = dimensions(t, &w)?;
    let quality = if t.has_column("label") {
        let labels = t.labels()?;
        let (mut y, mut f, mut ww) = (vec![], vec![], vec![]);
        for (i, l) in labels.iter().enumerate() {
            if let Ok(l) = l {
                y.push(*l <= 1);
                f.push(flags[i]);
                ww.push(w[i]);
            }
        }
        (!y.is_empty()).then(|| {
            let times = Times::new(&y, &f, &ww, business);
            let per100 = 100.0 / y.len() as f64;
            Quality {
                f2: Confusion::from_pairs(&y, &f).f_beta(2.0),
                wasted_minutes_per_100: times.wasted_minutes * per100,
                missed_minutes_per_100: times.missed_minutes * per100,
            }
        })
    } else {
        None
    };
    Ok(Profile::new(probs, &dims, quality))
}

/// Writes `dir/monitor-reference.json` (atomically).
pub fn save_reference(dir: &Path, p: &Profile) -> Result<()> {
    write_atomic(
        &dir.join(REFERENCE),
        (serde_json::to_string_pretty(p)? + "\n").as_bytes(),
    )?;
    Ok(())
}

/// Writes the monitoring reports; returns (and prints) the one-line result.
pub fn run(config: &Config, args: Args) -> Result<String> {
    let ref_path = args.model.join(REFERENCE);
    let reference: Profile =
        serde_json::from_str(&std::fs::read_to_string(&ref_path).with_context(|| {
            format!(
                "{}: no reference profile (train the model with this version)",
                ref_path.display()
            )
        })?)
        .with_context(|| format!("{}: not a reference profile", ref_path.display()))?;
    let t = Table::read(&args.predictions)?;
    let probs = t.f64_column("need_support_probability")?;
    let flags = t.bool_column("need_support")?;
    let batch = profile(&t, &probs, &flags, &config.business)?;
    let d = Drift::compare(&reference, &batch, config.monitor.drift_threshold, 10);
    let report = serde_json::json!({ "reference": reference, "batch": batch, "drift": d });
    let mut md = format!(
        "# Monitoring of {}\n\n{} rows; {} of {} compared statistics moved more than {:.0} % (groups under {} rows never flagged).\n\n| dimension | group | statistic | reference | batch | change | flagged |\n|---|---|---|---|---|---|---|\n",
        args.predictions.display(),
        batch.overall.count,
        d.flagged,
        d.changes.len(),
        100.0 * d.threshold,
        d.min_count
    );
    for c in &d.changes {
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
    for (dim, g) in &d.new_groups {
        md.push_str(&format!("\nNew group, not in the reference: {dim} = {g}\n"));
    }
    let retrain = match d.retrain {
        Some(true) => "labelled batch: F2 or minutes moved beyond the threshold — retrain",
        Some(false) => "labelled batch: F2 and minutes within the threshold of the reference",
        None => "no labels in the batch: quality not checked",
    };
    md.push_str(&format!("\n{retrain}.\n"));
    let html = flagship_metrics::html::render_drift(
        &format!("Monitoring of {}", args.predictions.display()),
        &d,
        &md,
    );
    for (name, text) in [
        (
            "monitor.json",
            serde_json::to_string_pretty(&report)? + "\n",
        ),
        ("monitor.md", md),
        ("monitor.html", html),
    ] {
        write_atomic(&args.out.join(name), text.as_bytes())?;
    }
    let line = format!(
        "{} rows: {} of {} statistics drifted more than {:.0} %; {retrain}; {}",
        batch.overall.count,
        d.flagged,
        d.changes.len(),
        100.0 * d.threshold,
        args.out.join("monitor.html").display()
    );
    println!("{line}");
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_by_client_time_of_day_and_word_bin() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("batch.csv");
        std::fs::write(
            &f,
            "id,created_at,source,text,need_support_probability,need_support\n\
             1,2022-07-12T14:30:00Z,Twitter for iPhone,the mirror is stunning,0.2,false\n\
             2,2022-07-12T02:10:00Z,Twitter Web App,why is the feed down again today,0.9,true\n\
             3,not a time,Twitter for iPhone,,0.5,true\n",
        )
        .unwrap();
        let t = Table::read(&f).unwrap();
        let w = words(&t).unwrap();
        assert_eq!(w, vec![4, 7, 0]);
        let dims = dimensions(&t, &w).unwrap();
        let get = |name: &str| dims.iter().find(|(n, _)| n == name).unwrap().1.clone();
        assert_eq!(
            get("client"),
            vec![
                "Twitter for iPhone",
                "Twitter Web App",
                "Twitter for iPhone"
            ]
        );
        // 14:30 UTC is in (12, 16] → Afternoon; 02:10 in (0, 4] → Late Night; bad → unknown.
        assert_eq!(
            get("time_of_day"),
            vec!["Afternoon", "Late Night", "unknown"]
        );
        assert_eq!(get("word_bin"), vec!["0-5", "6-10", "0-5"]);
        let p = profile(
            &t,
            &[0.2, 0.9, 0.5],
            &[false, true, true],
            &Config::default().business,
        )
        .unwrap();
        assert_eq!(p.groups["client"]["Twitter for iPhone"].count, 2);
        assert!(p.quality.is_none());
    }
}
