//! The live loop on real recorded posts with a real (linear) model trained on TweetEval:
//! a replay of the Bluesky capture and of the Mastodon statuses merged, scored in
//! micro-batches into a sink that keeps everything; then a second run that skips what the
//! first handled.

use std::collections::HashSet;
use std::time::Duration;

use flagship_live::testing::{everyday_config, linear_model, open_replays};
use flagship_live::{Options, Scored, Sink};

struct Keep(Vec<Scored>, usize);

impl Sink for Keep {
    fn write(&mut self, scored: &[Scored]) -> Result<(), String> {
        self.1 += 1;
        self.0.extend_from_slice(scored);
        Ok(())
    }
}

#[tokio::test]
async fn merged_replays_are_scored_in_micro_batches_and_a_rerun_skips_them() {
    let dir = tempfile::tempdir().unwrap();
    let model = linear_model(&dir.path().join("model"));
    let cfg = everyday_config();
    let opts = Options {
        max_batch: 8,
        max_wait: Duration::from_millis(50),
        ..Options::default()
    };
    let mut sink = Keep(Vec::new(), 0);
    let t = flagship_live::run(
        &cfg,
        &model,
        "linear",
        open_replays(),
        HashSet::new(),
        &mut sink,
        &opts,
        std::future::pending(),
        &|_| {},
    )
    .await
    .unwrap();
    println!("{}", serde_json::to_string(&t).unwrap());
    // 17 Bluesky + 50 Mastodon posts: seen or set aside by the track terms, none lost.
    assert_eq!(t.seen + t.unmatched, 67, "{t:?}");
    assert_eq!(t.stopped_by, "end of input");
    assert_eq!(sink.0.len() as u64, t.kept);
    assert!(sink.1 as u64 >= t.seen / 8, "batched by at most 8: {t:?}");
    let platforms: HashSet<_> = sink.0.iter().map(|s| s.tweet.platform).collect();
    assert_eq!(platforms.len(), 2);
    for s in &sink.0 {
        assert_eq!(
            s.need_support,
            f64::from(s.probability) >= s.threshold,
            "{s:?}"
        );
        assert!(s.tweet.url.is_some() && !s.text_model.is_empty(), "{s:?}");
        // A flagged post says why: its own words, strongest first; an unflagged one does not.
        if s.need_support {
            assert!(!s.why.is_empty() && s.why.len() <= 3, "{s:?}");
            let text = s.text_model.to_lowercase();
            for w in &s.why {
                assert!(text.contains(&w.word) && w.weight > 0.0, "{w:?} in {text}");
            }
            assert!(s.why.windows(2).all(|p| p[0].weight >= p[1].weight));
        } else {
            assert!(s.why.is_empty());
        }
    }
    assert_eq!(
        t.flagged as usize,
        sink.0.iter().filter(|s| s.need_support).count()
    );

    // What was handled is never scored again.
    let before: HashSet<String> = sink.0.iter().map(|s| s.tweet.id.clone()).collect();
    let mut again = Keep(Vec::new(), 0);
    let t2 = flagship_live::run(
        &cfg,
        &model,
        "linear",
        open_replays(),
        before.clone(),
        &mut again,
        &opts,
        std::future::pending(),
        &|_| {},
    )
    .await
    .unwrap();
    assert_eq!(t2.duplicates as usize, before.len(), "{t2:?}");
    assert!(again.0.iter().all(|s| !before.contains(&s.tweet.id)));
}
