//! `flagship-bench desk`: `cargo xtask bench desk` — the desk store's views on a database of
//! N scored posts (texts from the real TweetEval rows, times spread over a day, a tenth
//! decided): milliseconds per `queue`, `uncertain`, `today` and `decide`, best of 5; then the
//! whole desk page over HTTP (the server on loopback: `GET /` with the queue, the today panel
//! and 50 posts rendered, and the uncertain tab), best of 5.

use std::time::Instant;

use anyhow::Result;
use chrono::{Duration, Utc};
use flagship_core::{Platform, Post};
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
                    post: Post {
                        platform: Platform::X,
                        id: (1_600_000_000_000_000_000u64 + i as u64).to_string(),
                        url: Some(format!("https://x.com/i/web/status/{i}")),
                        created_at: Some(t0 + Duration::milliseconds(i as i64 * 800)),
                        text: texts[i % texts.len()].clone(),
                        ..Post::default()
                    },
                    text_model: texts[i % texts.len()].clone(),
                    matched: vec![],
                    client: None,
                    probability: p,
                    need_support: p >= 0.4,
                    threshold: 0.4,
                    model_id: "bench".into(),
                    scored_at: Utc::now(),
                    latency_ms: 0.0,
                    hurried: false,
                    why: Vec::new(),
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
    let (page, page_uncertain) = page_ms(store)?;
    println!(
        "{}",
        serde_json::json!({
            "posts": a.posts,
            "page_queue_ms": page,
            "page_uncertain_ms": page_uncertain,
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

/// `GET /` and `GET /?view=uncertain` of a desk serving `store`, best of 5 each (ms).
fn page_ms(store: DeskStore) -> Result<(f64, f64)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let config = flagship_core::Config::default();
        let mut settings = flagship_desk::server::Settings::from_config(&config);
        settings.reports = None;
        let loopback: std::net::SocketAddr = "127.0.0.1:0".parse()?;
        let desk = flagship_desk::server::Desk::new(
            store,
            flagship_desk::auth::Methods::default(),
            settings,
            loopback,
        )?;
        let (listener, addr) = flagship_desk::server::bind(loopback).await?;
        tokio::spawn(flagship_desk::server::serve(
            desk,
            listener,
            std::future::pending(),
        ));
        async fn get(
            addr: std::net::SocketAddr,
            path: &str,
            cookie: &str,
        ) -> Result<(String, String)> {
            let mut s = tokio::net::TcpStream::connect(addr).await?;
            s.write_all(
                format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
            let mut out = Vec::new();
            s.read_to_end(&mut out).await?;
            let text = String::from_utf8_lossy(&out).into_owned();
            anyhow::ensure!(text.starts_with("HTTP/1.1 200"), "GET {path}: {}", text.lines().next().unwrap_or(""));
            let cookie = text
                .lines()
                .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
                .and_then(|l| l["set-cookie:".len()..].trim().split(';').next())
                .unwrap_or_default()
                .to_owned();
            Ok((cookie, text))
        }
        // The first visit opens the local session (loopback, no login configured).
        let (cookie, first) = get(addr, "/", "").await?;
        anyhow::ensure!(first.matches("<article").count() == 50, "50 posts on the page");
        let mut best = [f64::MAX; 2];
        for (i, path) in ["/", "/?view=uncertain"].iter().enumerate() {
            for _ in 0..5 {
                let t = Instant::now();
                get(addr, path, &cookie).await?;
                best[i] = best[i].min(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        Ok((best[0], best[1]))
    })
}
