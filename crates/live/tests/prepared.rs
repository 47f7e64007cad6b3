//! The micro-batch plans built once ([`flagship_live::Prepared`], what the loop runs) give
//! exactly what planning them on every batch gives ([`flagship_live::prepare`]), on real
//! posts: the demo stream's and the real JWST posts, with the seed's mission terms and with
//! a profile that keeps every topic; each plan run again and again, on repeated ids and on
//! an empty batch.

use chrono::TimeZone;
use flagship_core::{Config, Platform, Post};
use flagship_testkit::fixture;

fn demo_posts(n: usize) -> Vec<Post> {
    let text = std::io::read_to_string(flate2::read::GzDecoder::new(
        std::fs::File::open(fixture("demo/stream.jsonl.gz")).unwrap(),
    ))
    .unwrap();
    text.lines()
        .take(n)
        .flat_map(|l| {
            flagship_platforms::jsonl::parse_payload(l.as_bytes(), None)
                .unwrap()
                .posts
        })
        .collect()
}

fn jwst_posts() -> Vec<Post> {
    let t0 = chrono::Utc.with_ymd_and_hms(2022, 7, 12, 14, 0, 0).unwrap();
    std::fs::read_to_string(fixture(
        "jwst-samples/jwst_tweets_from_notebook_outputs.jsonl",
    ))
    .unwrap()
    .lines()
    .enumerate()
    .map(|(i, l)| {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        Post {
            platform: Platform::X,
            id: (1_600_000_000_000_000_000u64 + i as u64).to_string(),
            created_at: Some(t0 + chrono::Duration::seconds(i as i64)),
            text: v["text"].as_str().unwrap().to_owned(),
            ..Post::default()
        }
    })
    .collect()
}

#[tokio::test]
async fn plans_built_once_give_what_planning_each_batch_gives() {
    let mut posts = jwst_posts();
    posts.extend(demo_posts(200));
    // Interleave the two so every batch mixes them; repeat ids inside a batch.
    posts.sort_by_key(|p| p.id.bytes().rev().collect::<Vec<u8>>());
    let everyday = flagship_live::testing::everyday_config();
    let mut compiled = Vec::new();
    for (name, config) in [("seed", Config::default()), ("everyday", everyday)] {
        let ctx = flagship_store::frames::micro_batch_session();
        let prepared = flagship_live::Prepared::new(&ctx, &config).await.unwrap();
        // Textproc's five replacements and its word count hold their patterns compiled.
        assert!(
            prepared.compiled_once() >= 6,
            "{name}: {} compiled once",
            prepared.compiled_once()
        );
        compiled.push(prepared.compiled_once());
        let (mut kept, mut dropped) = (0, 0);
        for (i, chunk) in posts.chunks(32).enumerate() {
            let mut rows: Vec<(Post, String)> =
                chunk.iter().map(|p| (p.clone(), "a".to_owned())).collect();
            // The same post again from a later object: combine keeps one.
            rows.push((chunk[0].clone(), "b".to_owned()));
            let planned = flagship_live::prepare(&ctx, &config, &rows).await.unwrap();
            for round in 0..2 {
                let once = prepared.run(&rows).await.unwrap();
                assert_eq!(once, planned, "{name}: batch {i}, round {round}");
            }
            kept += planned.num_rows();
            dropped += chunk.len() - planned.num_rows();
        }
        // Both profiles did something: the seed drops most of the demo's topics.
        assert!(kept > 0, "{name}: nothing kept");
        if name == "seed" {
            assert!(
                dropped > 100 && kept >= 20,
                "seed: kept {kept}, dropped {dropped}"
            );
        }
        let empty = prepared.run(&[]).await.unwrap();
        assert_eq!(empty.num_rows(), 0);
        assert_eq!(
            empty.schema(),
            flagship_core::schema::Stage::Processed.schema()
        );
    }
    // The seed's mission terms (a pattern each, through `regexp_like`) are held compiled
    // too: far more of them than the everyday profile's.
    assert!(
        compiled[0] > compiled[1] + 50,
        "compiled once: {compiled:?}"
    );
}

/// A plan run batch after batch for days holds no more than after its first batches: the
/// operators' metrics (DataFusion adds a set on every run) do not pile up.
#[tokio::test]
async fn plans_run_again_and_again_hold_no_more() {
    let posts = demo_posts(64);
    let config = flagship_live::testing::everyday_config();
    let ctx = flagship_store::frames::micro_batch_session();
    let prepared = flagship_live::Prepared::new(&ctx, &config).await.unwrap();
    let rows: Vec<(Post, String)> = posts.iter().map(|p| (p.clone(), "a".to_owned())).collect();
    let rss = || -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap()
    };
    for _ in 0..10 {
        prepared.run(&rows[..8]).await.unwrap();
    }
    let (held, before) = (prepared.metrics_held(), rss());
    for i in 0..2000 {
        prepared.run(&rows[i % 8..i % 8 + 8]).await.unwrap();
    }
    let after = rss();
    eprintln!(
        "metrics {held} -> {}; rss {before} -> {after} kB",
        prepared.metrics_held(),
    );
    assert_eq!(prepared.metrics_held(), held);
    // Without the copy per run: 3,580 metrics → 719,580 and +309 MB over these 2,000 runs
    // (a debug build). The other test of this file may run beside this one: a wide bound.
    assert!(
        after < before + 100_000,
        "{before} → {after} kB over 2,000 micro-batches"
    );
}
