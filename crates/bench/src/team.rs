//! `flagship-bench team`: a scripted team on a burst replay — the first-response clock's
//! figures (p50 / p90, overdue, late, per person) when three people on shifts answer one
//! demo day's flagged posts with a burst injected, against the same day without it, and when
//! the burst alert fired. The desk's own store and figures ([`flagship_desk::summary`]) do
//! the counting; the clock is simulated (no sleeping).
//!
//! - **Posts**: the demo day's posts whose label needs support (as `bench alerts`), at their
//!   `created_at`; the burst: 60 posts of one question from 60 people over 15 minutes at
//!   14:00 UTC.
//! - **The team**: ana 06–14, bo 10–18, cy 14–22 (UTC); each answer takes `--handle-min`
//!   (4) minutes; a free person takes the post with the least time left (the oldest), as
//!   the desk's "by time left" order lists them, and marks it done when answered.
//!
//! It prints one JSON line (and a summary on standard error).

use anyhow::Result;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use flagship_core::live::Scored;
use flagship_desk::alerts::{BurstRule, replay};
use flagship_desk::{Decision, DeskStore};
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    files: crate::alerts::DemoFiles,
    /// The day replayed (UTC).
    #[arg(long, default_value = "2022-07-13")]
    day: NaiveDate,
    /// Minutes one answer takes.
    #[arg(long, default_value_t = 4)]
    handle_min: i64,
    /// The first-response target, minutes.
    #[arg(long, default_value_t = 60)]
    target_min: i64,
}

/// Who works when (UTC hours, from–to).
const SHIFTS: [(&str, u32, u32); 3] = [("ana", 6, 14), ("bo", 10, 18), ("cy", 14, 22)];
const BURST_POSTS: i64 = 60;
const BURST_AT_HOUR: u32 = 14;

pub fn run(a: Args) -> Result<()> {
    let (_, flagged) = crate::alerts::flagged_posts(&a.files.demo, &a.files.labels)?;
    let start = a.day.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    let end = start + Duration::days(1);
    let day: Vec<&flagship_core::Post> = flagged
        .iter()
        .filter(|p| p.created_at.is_some_and(|t| t >= start && t < end))
        .collect();
    anyhow::ensure!(!day.is_empty(), "no flagged post on {}", a.day);
    let burst_start = start + Duration::hours(i64::from(BURST_AT_HOUR));
    let burst: Vec<flagship_core::Post> = (0..BURST_POSTS)
        .map(|i| flagship_core::Post {
            platform: flagship_core::Platform::Bluesky,
            id: format!("burst-{i}"),
            created_at: Some(burst_start + Duration::seconds(i * 15 * 60 / BURST_POSTS)),
            text: "is the webb livestream down? it stopped for everyone".into(),
            author_username: Some(format!("asker{i}.bsky.social")),
            ..Default::default()
        })
        .collect();
    let target = Duration::minutes(a.target_min);
    let handle = Duration::minutes(a.handle_min);
    let steady = simulate(&day, start, target, handle)?;
    let mut with_burst: Vec<&flagship_core::Post> = day.clone();
    with_burst.extend(burst.iter());
    with_burst.sort_by_key(|p| p.created_at);
    let bursty = simulate(&with_burst, start, target, handle)?;

    // The burst alert on the same posts (the day before gives the rule its history).
    let series: Vec<(DateTime<Utc>, u32)> = flagged
        .iter()
        .chain(burst.iter())
        .filter_map(|p| p.created_at)
        .filter(|t| *t >= start - Duration::days(1) && *t < end)
        .map(|t| (t, 1))
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_iter()
        .collect();
    let mut series = series;
    series.sort();
    let alarms = replay(&series, &BurstRule::default(), Duration::minutes(1));
    let detected = alarms
        .iter()
        .find(|b| b.at >= burst_start && b.at <= burst_start + Duration::minutes(25))
        .map(|b| (b.at - burst_start).num_seconds() as f64 / 60.0);
    let false_alarms = alarms
        .iter()
        .filter(|b| b.at >= start && b.at < end)
        .filter(|b| !(b.at >= burst_start && b.at <= burst_start + Duration::minutes(85)))
        .count();
    eprintln!(
        "team: {} flagged on {} (+{BURST_POSTS} in a burst at {BURST_AT_HOUR}:00); first response p50 / p90: steady {} / {}, with the burst {} / {}; the alert after {:?} min",
        day.len(),
        a.day,
        minutes(steady["p50_min"].as_f64()),
        minutes(steady["p90_min"].as_f64()),
        minutes(bursty["p50_min"].as_f64()),
        minutes(bursty["p90_min"].as_f64()),
        detected
    );
    println!(
        "{}",
        json!({
            "day": a.day.to_string(),
            "flagged": day.len(),
            "burst_posts": BURST_POSTS,
            "burst_start": burst_start.to_rfc3339(),
            "team": SHIFTS.iter().map(|(n, f, t)| format!("{n} {f:02}-{t:02}")).collect::<Vec<_>>(),
            "handle_min": a.handle_min,
            "target_min": a.target_min,
            "steady": steady,
            "with_burst": bursty,
            "alert_delay_min": detected,
            "other_alarms_that_day": false_alarms,
            "steady_p50_min": steady["p50_min"],
            "steady_p90_min": steady["p90_min"],
            "steady_overdue": steady["overdue_at_midnight"],
            "burst_p50_min": bursty["p50_min"],
            "burst_p90_min": bursty["p90_min"],
            "burst_overdue": bursty["overdue_at_midnight"],
        })
    );
    Ok(())
}

fn minutes(v: Option<f64>) -> String {
    v.map(|m| format!("{m:.0} min"))
        .unwrap_or_else(|| "–".into())
}

/// The team answers `posts` through the day (minute by minute); the desk's figures at the
/// day's end.
fn simulate(
    posts: &[&flagship_core::Post],
    start: DateTime<Utc>,
    target: Duration,
    handle: Duration,
) -> Result<serde_json::Value> {
    let dir = tempfile::tempdir()?;
    let mut store = DeskStore::open(&dir.path().join("desk.sqlite"))?;
    let scored: Vec<Scored> = posts
        .iter()
        .map(|p| Scored {
            post: (*p).clone(),
            text_model: p.text.clone(),
            matched: vec![],
            client: None,
            probability: 0.9,
            need_support: true,
            threshold: 0.5,
            model_id: "labels".into(),
            scored_at: p.created_at.expect("a time"),
            latency_ms: 0.0,
            hurried: false,
            why: vec![],
        })
        .collect();
    store.add(&scored)?;
    let end = start + Duration::days(1);
    // Posts waiting (oldest first) and when each person is free again.
    let mut next = 0usize;
    let mut waiting: std::collections::VecDeque<&flagship_core::Post> = Default::default();
    let mut free_at: Vec<DateTime<Utc>> = vec![start; SHIFTS.len()];
    let mut now = start;
    while now < end {
        while next < posts.len() && posts[next].created_at.is_some_and(|t| t <= now) {
            waiting.push_back(posts[next]);
            next += 1;
        }
        for (i, (who, from, to)) in SHIFTS.iter().enumerate() {
            let on = (start + Duration::hours(i64::from(*from))
                ..start + Duration::hours(i64::from(*to)))
                .contains(&now);
            if on
                && free_at[i] <= now
                && let Some(p) = waiting.pop_front()
            {
                let done = now + handle;
                store.decide_at(&p.id, Decision::Done, who, done)?;
                free_at[i] = done;
            }
        }
        now += Duration::minutes(1);
    }
    let s = flagship_desk::summary::Summary::of(
        &store,
        start.date_naive(),
        chrono_tz::UTC,
        target,
        end,
    )?;
    let f = &s.responses.all;
    Ok(json!({
        "needing": f.needing,
        "answered": f.answered,
        "p50_min": f.p50_s.map(|v| (v / 60.0 * 10.0).round() / 10.0),
        "p90_min": f.p90_s.map(|v| (v / 60.0 * 10.0).round() / 10.0),
        "overdue_at_midnight": f.overdue,
        "late": f.late,
        "per_person": s.responses.by_person.iter().map(|(n, p)| json!({
            "who": n,
            "answered": p.answered,
            "p50_min": p.p50_s.map(|v| (v / 60.0 * 10.0).round() / 10.0),
            "p90_min": p.p90_s.map(|v| (v / 60.0 * 10.0).round() / 10.0),
        })).collect::<Vec<_>>(),
    }))
}
