//! `flagship-bench alerts`: the desk's burst alarm ([`flagship_desk::alerts`]) measured on the
//! demo replay, on a paused clock (no sleeping: twelve simulated days in seconds).
//!
//! - **Flagged posts**: the demo stream's posts (`fixtures/demo/stream.jsonl.gz`) whose label
//!   (`fixtures/demo/labels.csv`) needs support — 0 (negative) or 1 (neutral) — at their
//!   `created_at`. The model's flags approximate these labels; the labels keep the bench
//!   independent of a trained model.
//! - **Steady replay**: the flagged posts at their real times, checked every minute; every
//!   alarm is a false alarm (the demo has no bursts: 800 posts a day on a smooth daily
//!   profile), reported per simulated day.
//! - **Injected bursts**: 15, 30 and 60 extra flagged posts spread evenly over 15 minutes,
//!   injected one at a time into the steady series at 24 times — every 11 hours from 06:07 on
//!   the first day, so the 24 start at each hour of the day once. A burst is detected when the
//!   replay alarms between its start and the end of its last post's window (its start plus
//!   15 minutes plus the rule's window); the delay is that alarm's time minus the start. An
//!   injection whose span already holds one of the steady replay's false alarms is counted
//!   like the others and reported (`overlapping_false_alarms`).
//!
//! It prints one JSON line (and a table on standard error).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use chrono::{DateTime, Duration, DurationRound, Utc};
use flagship_desk::alerts::{Burst, BurstRule, replay};
use serde_json::{Value, json};

/// The demo's files the flagged posts are read from (`bench alerts`, `bench team`).
#[derive(clap::Args)]
pub(crate) struct DemoFiles {
    /// The demo's stream.
    #[arg(long, default_value = "fixtures/demo/stream.jsonl.gz")]
    pub(crate) demo: PathBuf,
    /// The demo's labels (`id,label`; 0 or 1 needs support).
    #[arg(long, default_value = "fixtures/demo/labels.csv")]
    pub(crate) labels: PathBuf,
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    files: DemoFiles,
    /// The rule's window, minutes (default: the rule's).
    #[arg(long)]
    window_min: Option<i64>,
    /// The rule's baseline, minutes.
    #[arg(long)]
    baseline_min: Option<i64>,
    /// The rule's p-value.
    #[arg(long)]
    p_value: Option<f64>,
    /// The rule's least count in a window.
    #[arg(long)]
    min_count: Option<u32>,
    /// The rule's least expected count per window.
    #[arg(long)]
    floor: Option<f64>,
    /// The rule's cooldown, minutes.
    #[arg(long)]
    cooldown_min: Option<i64>,
}

/// Extra flagged posts in each injected burst.
const SIZES: [u32; 3] = [15, 30, 60];
/// How long an injected burst lasts.
const BURST: Duration = Duration::minutes(15);
/// Injections per size.
const INJECTIONS: i64 = 24;

pub fn run(a: Args) -> Result<()> {
    let rule = rule(&a);
    let (posts, flagged) = flagged(&a.files.demo, &a.files.labels)?;
    let (Some(&first), Some(&last)) = (flagged.first(), flagged.last()) else {
        anyhow::bail!("no flagged posts in {}", a.files.demo.display());
    };
    let days = (last - first).num_seconds() as f64 / 86_400.0;
    let series: Vec<(DateTime<Utc>, u32)> = flagged.iter().map(|t| (*t, 1)).collect();
    let step = Duration::minutes(1);
    let steady = replay(&series, &rule, step);
    for b in &steady {
        eprintln!(
            "false alarm at {}: {} in the window, {:.2} expected, p = {:.2e}",
            b.at, b.observed, b.expected, b.p_value
        );
    }
    let per_10min = flagged.len() as f64 / (days * 144.0);
    eprintln!(
        "alerts: {} posts, {} flagged over {days:.2} days ({per_10min:.2} per 10 minutes); {} false alarms ({:.3} a day)",
        posts,
        flagged.len(),
        steady.len(),
        steady.len() as f64 / days
    );
    let mut out = serde_json::Map::new();
    out.insert("days".into(), json!(round(days, 3)));
    out.insert("posts".into(), json!(posts));
    out.insert("flagged".into(), json!(flagged.len()));
    out.insert("flagged_per_10min".into(), json!(round(per_10min, 3)));
    out.insert(
        "flagged_from".into(),
        json!("labels 0 or 1 (needs support); the model's flags approximate them"),
    );
    out.insert("check_every_min".into(), json!(step.num_minutes()));
    out.insert("window_min".into(), json!(rule.window.num_minutes()));
    out.insert("baseline_min".into(), json!(rule.baseline.num_minutes()));
    out.insert("p_value".into(), json!(rule.p_value));
    out.insert("min_count".into(), json!(rule.min_count));
    out.insert("floor".into(), json!(rule.floor));
    out.insert("cooldown_min".into(), json!(rule.cooldown.num_minutes()));
    out.insert("false_alarms".into(), json!(steady.len()));
    out.insert(
        "false_alarms_per_day".into(),
        json!(round(steady.len() as f64 / days, 4)),
    );
    out.insert("burst_minutes".into(), json!(BURST.num_minutes()));
    let starts = starts(first);
    // Injections whose detection span already holds a false alarm of the steady replay: a
    // detection there may owe something to it (reported, not removed).
    let overlaps: Vec<DateTime<Utc>> = starts
        .iter()
        .copied()
        .filter(|&s| first_alarm(&steady, s, s + BURST + rule.window).is_some())
        .collect();
    for s in &overlaps {
        eprintln!("the burst at {s} overlaps a false alarm of the steady replay");
    }
    out.insert("overlapping_false_alarms".into(), json!(overlaps.len()));
    eprintln!("burst  detected  within 10 min  delay p50 / p90 / max (minutes)");
    for size in SIZES {
        let delays = injected(&series, &rule, step, &starts, size);
        let r = summary(&delays, starts.len());
        for (s, d) in starts.iter().zip(&delays) {
            match d {
                None => eprintln!("{size} posts from {s}: missed"),
                Some(d) if *d > 10.0 => eprintln!("{size} posts from {s}: after {d} minutes"),
                Some(_) => {}
            }
        }
        eprintln!(
            "{size:5}  {:>8}  {:>13}  {} / {} / {}",
            format!("{}/{}", r["detected"], r["injected"]),
            r["detected_10min"],
            r["delay_p50_min"],
            r["delay_p90_min"],
            r["delay_max_min"]
        );
        if let Value::Object(fields) = r {
            for (k, v) in fields {
                out.insert(format!("burst{size}_{k}"), v);
            }
        }
    }
    println!("{}", Value::Object(out));
    Ok(())
}

/// The default rule with the command line's changes.
fn rule(a: &Args) -> BurstRule {
    let d = BurstRule::default();
    BurstRule {
        window: a.window_min.map_or(d.window, Duration::minutes),
        baseline: a.baseline_min.map_or(d.baseline, Duration::minutes),
        p_value: a.p_value.unwrap_or(d.p_value),
        min_count: a.min_count.unwrap_or(d.min_count),
        floor: a.floor.unwrap_or(d.floor),
        cooldown: a.cooldown_min.map_or(d.cooldown, Duration::minutes),
    }
}

/// The stream's post count and the times of its flagged posts, in order.
fn flagged(stream: &Path, labels: &Path) -> Result<(usize, Vec<DateTime<Utc>>)> {
    let (posts, flagged) = flagged_posts(stream, labels)?;
    let mut times: Vec<DateTime<Utc>> = flagged.iter().filter_map(|p| p.created_at).collect();
    times.sort();
    Ok((posts, times))
}

/// The demo's posts (how many), and those whose label needs support, in time order (each
/// with its `created_at`).
pub(crate) fn flagged_posts(
    stream: &Path,
    labels: &Path,
) -> Result<(usize, Vec<flagship_core::Post>)> {
    let needs = needs_support(labels)?;
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(
            std::fs::File::open(stream).with_context(|| format!("{}", stream.display()))?,
        ),
        &mut text,
    )?;
    let (mut posts, mut times) = (0usize, Vec::new());
    for (i, line) in text.lines().enumerate() {
        let parsed =
            flagship_platforms::jsonl::parse_payload(line.as_bytes(), None).map_err(|e| {
                anyhow::anyhow!(
                    "{} line {}: {}: {}",
                    stream.display(),
                    i + 1,
                    e.path,
                    e.message
                )
            })?;
        for p in parsed.posts {
            posts += 1;
            if needs.contains(&p.id) {
                p.created_at.with_context(|| {
                    format!("{} line {}: no created_at", stream.display(), i + 1)
                })?;
                times.push(p);
            }
        }
    }
    times.sort_by_key(|p| p.created_at);
    Ok((posts, times))
}

/// The ids whose label needs support (0 negative or 1 neutral).
fn needs_support(path: &Path) -> Result<HashSet<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let mut ids = HashSet::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let (id, label) = line
            .split_once(',')
            .with_context(|| format!("{} line {}: not `id,label`", path.display(), i + 1))?;
        match label.trim() {
            "0" | "1" => {
                ids.insert(id.trim().to_owned());
            }
            "2" => {}
            other => anyhow::bail!("{} line {}: label {other:?}", path.display(), i + 1),
        }
    }
    Ok(ids)
}

/// The bursts' start times: every 11 hours from 06:07 on the first post's day.
fn starts(first: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let day = first.duration_trunc(Duration::days(1)).unwrap_or(first);
    (0..INJECTIONS)
        .map(|i| day + Duration::hours(6 + 11 * i) + Duration::minutes(7))
        .collect()
}

/// Each start's detection delay in minutes (`None`: missed) for bursts of `size` posts.
fn injected(
    series: &[(DateTime<Utc>, u32)],
    rule: &BurstRule,
    step: Duration,
    starts: &[DateTime<Utc>],
    size: u32,
) -> Vec<Option<f64>> {
    starts
        .iter()
        .map(|&start| {
            let mut with = series.to_vec();
            let spacing = BURST.num_milliseconds() / i64::from(size);
            with.extend(
                (0..i64::from(size)).map(|j| (start + Duration::milliseconds(spacing * j), 1)),
            );
            let alarms = replay(&with, rule, step);
            first_alarm(&alarms, start, start + BURST + rule.window)
                .map(|b| (b.at - start).num_seconds() as f64 / 60.0)
        })
        .collect()
}

/// The first alarm in `[from, to]`.
fn first_alarm(alarms: &[Burst], from: DateTime<Utc>, to: DateTime<Utc>) -> Option<&Burst> {
    alarms.iter().find(|b| b.at >= from && b.at <= to)
}

/// Detections and delay percentiles (nearest rank) of one burst size.
fn summary(delays: &[Option<f64>], injected: usize) -> Value {
    let mut found: Vec<f64> = delays.iter().flatten().copied().collect();
    found.sort_by(f64::total_cmp);
    let within = found.iter().filter(|d| **d <= 10.0).count();
    let rank = |q: f64| {
        let n = found.len();
        (n > 0).then(|| found[((q * n as f64).ceil() as usize).clamp(1, n) - 1])
    };
    json!({
        "injected": injected,
        "detected": found.len(),
        "detected_10min": within,
        "detection_rate": round(found.len() as f64 / injected.max(1) as f64, 4),
        "rate_10min": round(within as f64 / injected.max(1) as f64, 4),
        "delay_p50_min": rank(0.5),
        "delay_p90_min": rank(0.9),
        "delay_max_min": found.last(),
    })
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}
