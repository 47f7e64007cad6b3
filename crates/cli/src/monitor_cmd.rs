//! `flagship monitor`: a batch of predictions against the reference profile saved beside the
//! model at training time (`monitor-reference.json`), flagging groups whose probability mean or
//! spread moved more than `monitor.drift_threshold`; with labels, the retraining rule too.

use std::path::PathBuf;

use anyhow::{Context, Result};
use flagship_core::Config;
use flagship_core::config::DriftTest;
use flagship_metrics::{Drift, Profile};
use flagship_store::fs::write_atomic;
use flagship_store::table::Table;

use crate::shared::{REFERENCE, profile};

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
    let m = &config.monitor;
    let rule = flagship_metrics::DriftRule {
        threshold: m.drift_threshold,
        min_count: 10,
        alpha: match m.drift_test {
            DriftTest::Significant => Some(m.drift_alpha),
            DriftTest::Relative => None,
        },
    };
    let d = Drift::compare(&reference, &batch, &rule);
    // Live quality from the team's decisions on the desk, when there is a desk.
    let desk = desk_quality(config)?;
    let report = serde_json::json!({
        "reference": reference,
        "batch": batch,
        "drift": d,
        "desk": desk,
    });
    let title = format!("Monitoring of {}", args.predictions.display());
    let md = d.to_markdown(&title, batch.overall.count);
    let retrain = d.retrain_verdict();
    let html = flagship_metrics::html::render_drift(
        &flagship_metrics::html::ReportContext::new(config, &args.predictions),
        &d,
        batch.overall.count,
    );
    for (name, text) in [
        (
            "monitor.json",
            serde_json::to_string_pretty(&report)? + "\n",
        ),
        ("monitor.md", md),
        ("monitor.html", html),
        // The page's stylesheet, for a server with a strict CSP (the desk).
        (
            flagship_metrics::html::REPORT_CSS_HREF,
            flagship_metrics::html::REPORT_CSS.to_owned(),
        ),
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
    if let Some(q) = &desk {
        println!("{}", q["summary"].as_str().unwrap_or_default());
    }
    Ok(line)
}

/// Precision and recall of the flags from the desk's decisions (all time): precision over
/// the flagged posts decided; recall over the posts decided as needing a reply (the misses
/// are those found among unflagged posts, so it is an upper bound). `None` without a desk.
fn desk_quality(config: &Config) -> Result<Option<serde_json::Value>> {
    let db = config.desk_database();
    if !db.is_file() {
        return Ok(None);
    }
    let t = flagship_desk::DeskStore::open_existing(&db)?.today(chrono::DateTime::UNIX_EPOCH)?;
    let found = t.flagged_needed + t.missed_found;
    let recall = (found > 0).then(|| t.flagged_needed as f64 / found as f64);
    let pct = |v: Option<f64>| v.map_or("–".into(), |v| format!("{:.1} %", 100.0 * v));
    let summary = format!(
        "desk decisions ({}): precision of flags {} ({} of {} flagged posts decided needed a reply); recall {} ({} misses found among unflagged posts; an upper bound)",
        db.display(),
        pct(t.precision),
        t.flagged_needed,
        t.flagged_decided,
        pct(recall),
        t.missed_found
    );
    Ok(Some(serde_json::json!({
        "flagged_decided": t.flagged_decided,
        "flagged_needed": t.flagged_needed,
        "missed_found": t.missed_found,
        "precision": t.precision,
        "recall_upper_bound": recall,
        "summary": summary,
    })))
}
