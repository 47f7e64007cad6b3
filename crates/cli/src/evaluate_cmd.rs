//! `flagship evaluate`: a labelled predictions file (from `flagship predict`) → `report.json`
//! `report.md` and `report.html` (plots) with ML metrics, business minutes, the naive baseline and the verdict.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use flagship_core::Config;
use flagship_core::operating::Points;
use flagship_metrics::{Evaluation, verdict_word};

use flagship_store::fs::write_atomic;
use flagship_store::table::Table;

#[derive(clap::Args)]
pub struct Args {
    /// Predictions with `label` (0/1/2), `need_support_probability`, `need_support`, and
    /// `num_words` or `text` (words are counted from the text when there is no `num_words`).
    #[arg(long)]
    pub predictions: PathBuf,
    /// Folder for report.json and report.md.
    #[arg(long)]
    pub out: PathBuf,
    /// The model folder the predictions came from: its operating points (thresholds chosen
    /// on validation by each rule) are scored too, and marked on the threshold plots.
    #[arg(long)]
    pub model: Option<PathBuf>,
}

/// Writes the reports and returns the verdict: F2 vs naive, minutes wasted and missed, and
/// the report's path (each line also printed).
pub fn run(config: &Config, args: Args) -> Result<Vec<String>> {
    let t = Table::read(&args.predictions)?;
    let targets = t.targets()?;
    let probs = t.f64_column("need_support_probability")?;
    let flags = t.bool_column("need_support")?;
    let words = crate::shared::words(&t)?;
    let (mut y, mut p, mut f, mut w) = (vec![], vec![], vec![], vec![]);
    let mut skipped = 0;
    for (i, target) in targets.iter().enumerate() {
        match *target {
            Some(need) => {
                y.push(need);
                p.push(probs[i]);
                f.push(flags[i]);
                w.push(words[i]);
            }
            None => skipped += 1,
        }
    }
    if y.is_empty() {
        bail!(
            "{}: no labelled rows to evaluate",
            args.predictions.display()
        );
    }
    if skipped > 0 {
        eprintln!(
            "{}: {skipped} row(s) without a 0/1/2 label left out",
            args.predictions.display()
        );
    }
    let mut e = Evaluation::new(&y, &p, &f, &w, &config.business);
    if let Some(dir) = &args.model
        && let Some(points) = operating_points(dir)?
    {
        e = e.with_operating(&points, &y, &p, &w);
    }
    let write = |name: &str, text: String| write_atomic(&args.out.join(name), text.as_bytes());
    write("report.json", serde_json::to_string_pretty(&e)? + "\n")?;
    let title = format!("Evaluation of {}", args.predictions.display());
    write("report.md", e.to_markdown(&title))?;
    write(
        "report.html",
        flagship_metrics::html::render(
            &flagship_metrics::html::ReportContext::new(config, &args.predictions),
            &e,
            &y,
            &p,
            &w,
            &config.business,
        ),
    )?;
    // The page's stylesheet beside it: a server with a strict CSP (the desk) serves it, as
    // inline styles are blocked there.
    write(
        flagship_metrics::html::REPORT_CSS_HREF,
        flagship_metrics::html::REPORT_CSS.to_owned(),
    )?;
    let lines = verdict(&e, &args.out.join("report.html"));
    for l in &lines {
        println!("{l}");
    }
    Ok(lines)
}

/// The operating points a model folder's `flagship.json` keeps (`None` for a card written
/// before them). Read as core types, so the build without libtorch evaluates too.
fn operating_points(dir: &std::path::Path) -> Result<Option<Points>> {
    let path = dir.join("flagship.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("{}: cannot read the model card", path.display()))?;
    let card: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a model card", path.display()))?;
    match card.get("operating") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(o) => Ok(Some(serde_json::from_value(o.clone()).with_context(
            || format!("{}: field `operating` unreadable", path.display()),
        )?)),
    }
}

/// The three-line verdict and where the report is: F2 against the naive baseline and the
/// 0.80 target, the minutes, and the verdict in the reports' words
/// ([`Evaluation::outcome`]); then each operating point the model does not work at.
pub fn verdict(e: &Evaluation, html: &std::path::Path) -> Vec<String> {
    let v = &e.verdict;
    vec![
        format!(
            "F2 {:.3} vs naive {:.3} ± {:.3}: {}",
            e.model.binary.f2,
            e.naive.f2.mean,
            e.naive.f2.sd,
            if v.f2_above_0_80 && v.f2_above_naive {
                "better"
            } else if v.f2_above_naive {
                "better than naive, below the 0.80 target"
            } else {
                "not better than naive"
            }
        ),
        format!(
            "{}; {}",
            e.wasted_against_naive(),
            e.missed_against_naive()
        ),
        format!("verdict: {} — {}", e.outcome(), html.display()),
    ]
    .into_iter()
    .chain(e.operating.iter().filter(|r| !r.chosen).map(|r| {
        format!(
            "  other point `{}`: threshold {:.3}, {:.0} % flagged, F2 {:.3}, wasted {:.1} / missed {:.1} min: {}",
            r.rule.name(),
            r.threshold,
            100.0 * r.flagged,
            r.f2,
            r.wasted_minutes,
            r.missed_minutes,
            verdict_word(r.success)
        )
    }))
    .collect()
}
