//! The live loop writing into the desk: the Bluesky and Mastodon recordings scored by a real
//! linear model land in SQLite once each, flagged ones in the queue; a second run of the same
//! replays adds nothing.

use std::collections::HashSet;

use flagship_core::labels::Example;
use flagship_core::testing::fixture;
use flagship_desk::{DeskStore, Order};
use flagship_ingest::source::{Merged, Replay, TweetSource};

fn examples(file: &str, n: usize) -> Vec<Example> {
    std::fs::read_to_string(fixture(file))
        .unwrap()
        .lines()
        .take(n)
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            Example {
                text: v["text"].as_str().unwrap().to_owned(),
                need_support: v["label"].as_u64().unwrap() < 2,
            }
        })
        .collect()
}

fn sources() -> Box<dyn TweetSource> {
    Box::new(Merged::new(vec![
        Box::new(
            Replay::new(vec![fixture("bluesky-jetstream/capture_v1.jsonl")], None)
                .platform(flagship_core::Platform::Bluesky),
        ),
        Box::new(
            Replay::new(
                vec![fixture("mastodon/public_timeline_statuses.jsonl")],
                None,
            )
            .platform(flagship_core::Platform::Mastodon),
        ),
    ]))
}

async fn run(
    cfg: &flagship_core::Config,
    model: &flagship_model::Classifier,
    desk: &mut DeskStore,
) -> flagship_live::Totals {
    flagship_live::run(
        cfg,
        model,
        "linear",
        sources(),
        HashSet::new(),
        desk,
        &flagship_live::Options::default(),
        std::future::pending(),
        &|_| {},
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn scored_posts_land_in_the_desk_once() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("model");
    flagship_model::classifier::train_linear(
        &examples("tweeteval-sentiment/val.jsonl", 800),
        &examples("tweeteval-sentiment/test_pool.jsonl", 300),
        &Default::default(),
        0.4,
        &model_dir,
        Default::default(),
    )
    .unwrap();
    let model = flagship_model::Classifier::load(&model_dir).unwrap();
    let cfg = flagship_core::Config::from_toml_str(
        r#"[mission.stream]
track = ["the", "a", "and", "to", "is", "of", "in", "for", "on", "with", "de", "it", "you", "this", "i"]
[mission.filter]
min_words = 1
wanted = {}
unwanted = {}
"#,
        std::path::Path::new("test.toml"),
        std::path::Path::new("."),
    )
    .unwrap();
    let path = dir.path().join("desk.sqlite");
    let mut desk = DeskStore::open(&path).unwrap();
    let t = run(&cfg, &model, &mut desk).await;
    let since = chrono::Utc::now() - chrono::Duration::hours(1);
    let today = desk.today(since).unwrap();
    println!("{t:?}\n{today:?}");
    assert_eq!(today.seen, t.kept);
    assert_eq!(today.flagged, t.flagged);
    let queue = desk.queue(Order::Probability, 1000).unwrap();
    assert_eq!(queue.len() as u64, t.flagged);
    assert!(
        queue
            .windows(2)
            .all(|w| w[0].probability >= w[1].probability)
    );
    assert!(queue.iter().all(|i| i.url.is_some() && i.need_support));
    // The same posts again (a restarted loop that forgot its place): still once each.
    run(&cfg, &model, &mut desk).await;
    assert_eq!(desk.today(since).unwrap().seen, t.kept);
}
