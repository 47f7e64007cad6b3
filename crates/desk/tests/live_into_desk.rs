//! The live loop writing into the desk: the Bluesky and Mastodon recordings scored by a real
//! linear model land in SQLite once each, flagged ones in the queue; a second run of the same
//! replays adds nothing.

use std::collections::HashSet;

use flagship_desk::{DeskStore, Order};
use flagship_live::testing::{everyday_config, linear_model, open_replays};

async fn run(
    cfg: &flagship_core::Config,
    model: &flagship_live::Classifier,
    desk: &mut DeskStore,
) -> flagship_live::Totals {
    flagship_live::run(
        flagship_live::Run {
            config: cfg,
            model,
            model_id: "linear",
            handled_before: HashSet::new(),
            embedder: None,
            options: &flagship_live::Options::default(),
            progress: &|_| {},
            telemetry: None,
        },
        open_replays(),
        desk,
        std::future::pending(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn scored_posts_land_in_the_desk_once() {
    let dir = tempfile::tempdir().unwrap();
    let model = linear_model(&dir.path().join("model"));
    let cfg = everyday_config();
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
