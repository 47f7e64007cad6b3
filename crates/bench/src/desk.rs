//! `flagship-bench desk`: `cargo xtask bench desk` — the desk store's views on a database of
//! N scored posts (texts from the real TweetEval rows, times spread over a day, a tenth
//! decided): milliseconds per `queue`, `uncertain`, `today` and `decide`, best of 5.

use std::time::Instant;

use anyhow::Result;
use chrono::{Duration, Utc};
use flagship_core::{Platform, Tweet};
use flagship_desk::{Decision, DeskStore, Order};
use flagship_live::Scored;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 100_000)]
    posts: usize,
}

fn best_ms(mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(best)
}

pub fn run(a: Args) -> Result<()> {
    let texts: Vec<String> = std::fs::read_to_string("fixtures/tweeteval-sentiment/val.jsonl")?
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["text"].as_str().map(str::to_owned))
        .collect();
    anyhow::ensure!(
        !texts.is_empty(),
        "no TweetEval texts (run from the workspace root)"
    );
    let dir = tempfile::tempdir()?;
    let mut store = DeskStore::open(&dir.path().join("desk.sqlite"))?;
    let t0 = Utc::now() - Duration::days(1);
    let start = Instant::now();
    for chunk in (0..a.posts).collect::<Vec<_>>().chunks(1000) {
        let batch: Vec<Scored> = chunk
            .iter()
            .map(|&i| {
                let p = ((i * 7919) % 1000) as f32 / 1000.0;
                Scored {
                    tweet: Tweet {
                        platform: Platform::X,
                        id: (1_600_000_000_000_000_000u64 + i as u64).to_string(),
                        url: Some(format!("https://x.com/i/web/status/{i}")),
                        created_at: Some(t0 + Duration::milliseconds(i as i64 * 800)),
                        text: texts[i % texts.len()].clone(),
                        ..Tweet::default()
                    },
                    text_model: texts[i % texts.len()].clone(),
                    client: None,
                    probability: p,
                    need_support: p >= 0.4,
                    threshold: 0.4,
                    model_id: "bench".into(),
                    scored_at: Utc::now(),
                    latency_ms: 0.0,
                }
            })
            .collect();
        store.add(&batch)?;
    }
    let load_s = start.elapsed().as_secs_f64();
    for i in (0..a.posts).step_by(10) {
        let id = (1_600_000_000_000_000_000u64 + i as u64).to_string();
        store.decide(&id, Decision::NoReply, "bench")?;
    }
    let queue = best_ms(|| {
        store.queue(Order::Newest, 50)?;
        Ok(())
    })?;
    let by_p = best_ms(|| {
        store.queue(Order::Probability, 50)?;
        Ok(())
    })?;
    let unsure = best_ms(|| {
        store.uncertain(0.05, 50)?;
        Ok(())
    })?;
    let today = best_ms(|| {
        store.today(t0)?;
        Ok(())
    })?;
    let mut n = 0u64;
    let decide = best_ms(|| {
        n += 1;
        let id = (1_600_000_000_000_000_001u64 + n).to_string();
        store.decide(&id, Decision::NeedsReply, "bench")?;
        Ok(())
    })?;
    println!(
        "{}",
        serde_json::json!({
            "posts": a.posts,
            "load_seconds": load_s,
            "queue_newest_ms": queue,
            "queue_probability_ms": by_p,
            "uncertain_ms": unsure,
            "today_ms": today,
            "decide_ms": decide,
        })
    );
    Ok(())
}
