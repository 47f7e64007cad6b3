//! Test helpers shared by the crates that test the live loop (live, desk, cli): the real
//! recordings of the open platforms merged, a profile that keeps every topic, and a real
//! linear model trained on TweetEval. Not used by the product.

use std::path::Path;

use flagship_core::labels::Example;
use flagship_ingest::source::{Merged, PostSource, Replay};
use flagship_testkit::fixture;

/// A mission profile that keeps every topic, with everyday words as track terms: the
/// recorded Bluesky and Mastodon posts are not about a space mission, and most match.
pub const EVERYDAY_PROFILE: &str = r#"[mission.stream]
track = ["the", "a", "and", "to", "is", "of", "in", "for", "on", "with", "de", "it", "you", "this", "i"]

[mission.filter]
min_words = 1
wanted = {}
unwanted = {}
"#;

/// [`EVERYDAY_PROFILE`] over the defaults.
pub fn everyday_config() -> flagship_core::Config {
    flagship_core::Config::from_toml_str(EVERYDAY_PROFILE, Path::new("test.toml"), Path::new("."))
        .expect("the profile parses")
}

/// The first `n` TweetEval rows of `file` as training examples.
pub fn tweeteval(file: &str, n: usize) -> Vec<Example> {
    std::fs::read_to_string(fixture(file))
        .expect("a TweetEval fixture")
        .lines()
        .take(n)
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("JSON");
            Example {
                text: v["text"].as_str().expect("text").to_owned(),
                need_support: v["label"].as_u64().expect("label") < 2,
                label: None,
            }
        })
        .collect()
}

/// A linear model trained on 800 TweetEval rows (validated on 300) into `dir`, loaded.
pub fn linear_model(dir: &Path) -> flagship_model::Classifier {
    flagship_model::classifier::train_linear(
        &tweeteval("tweeteval-sentiment/val.jsonl", 800),
        &tweeteval("tweeteval-sentiment/test_pool.jsonl", 300),
        &Default::default(),
        flagship_model::classifier::Tuning {
            expected_rate: 0.4,
            operating: flagship_core::Config::default().model.operating(),
            business: &flagship_core::Config::default().business,
        },
        dir,
        Default::default(),
    )
    .expect("trains");
    flagship_model::Classifier::load(dir).expect("loads")
}

/// The Bluesky capture (17 posts) and the Mastodon statuses (50) replayed, merged.
pub fn open_replays() -> Box<dyn PostSource> {
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
