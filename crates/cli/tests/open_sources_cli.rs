//! The open sources through the binary: `watch --source bluesky|mastodon --replay` flags real
//! recorded posts with their platform and a link to open; `ingest run --source …` of all
//! three platforms into one raw area, then every stage after ingest on the mixed data:
//! combine, filter, textproc, split (labels by post id of any platform), train, predict,
//! evaluate.

use std::path::Path;

use flagship_testkit::fixture;

mod common;
use common::{flagship, linear_model};

/// A profile that keeps every topic: the recorded Bluesky and Mastodon posts are not about
/// a space mission, and the track terms are everyday words so most of them match.
fn config(dir: &Path) -> std::path::PathBuf {
    let cfg = dir.join("flagship.toml");
    std::fs::write(
        &cfg,
        r#"[mission.stream]
track = ["the", "a", "and", "to", "is", "of", "in", "for", "on", "with", "de", "it", "you", "this", "i"]

[mission.filter]
min_words = 1
wanted = {}
unwanted = {}

[split]
test_size = 20
val_size = 20

[storage]
raw = "raw"
combined = "combined"
filtered = "filtered"
processed = "processed"
splits = "splits"
models = "models"
reports = "reports"
quarantine = "quarantine"
"#,
    )
    .unwrap();
    cfg
}

/// The flagged file's lines: flagged posts, and the lines saying why each was flagged
/// (written after it), checked to pair up one to one.
fn rows(path: &Path) -> Vec<serde_json::Value> {
    let all: Vec<serde_json::Value> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (why, flagged): (Vec<_>, Vec<_>) =
        all.into_iter().partition(|r| r.get("explains").is_some());
    let mut explained: Vec<&str> = why
        .iter()
        .map(|w| w["explains"].as_str().unwrap())
        .collect();
    let mut ids: Vec<&str> = flagged.iter().map(|r| r["id"].as_str().unwrap()).collect();
    explained.sort();
    ids.sort();
    assert_eq!(
        explained, ids,
        "every flagged post, and only those, explained once"
    );
    for w in &why {
        assert!(w["why"].is_array() && w["platform"].is_string(), "{w}");
    }
    flagged
}

#[test]
fn watch_flags_bluesky_and_mastodon_posts_with_their_links() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let model = linear_model(dir.path(), &cfg);
    for (platform, replay, posts, link) in [
        (
            "bluesky",
            "bluesky-jetstream/capture_v1.jsonl",
            17,
            "https://bsky.app/profile/did:",
        ),
        (
            "mastodon",
            "mastodon/public_timeline_statuses.jsonl",
            50,
            "https://",
        ),
    ] {
        let out = dir.path().join(format!("flagged-{platform}.jsonl"));
        let stdout = flagship(
            &cfg,
            &[
                "watch",
                "--model",
                &model,
                "--source",
                platform,
                "--replay",
                fixture(replay).to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
        );
        println!("{stdout}");
        let summary: serde_json::Value =
            serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        let (seen, unmatched) = (
            summary["seen"].as_u64().unwrap(),
            summary["unmatched"].as_u64().unwrap(),
        );
        // Every post is either seen or set aside by the track terms, none lost.
        assert_eq!(seen + unmatched, posts, "{stdout}");
        assert!(seen > posts / 2, "{stdout}");
        let flagged = rows(&out);
        assert!(!flagged.is_empty(), "{stdout}");
        for r in &flagged {
            assert_eq!(r["platform"], platform, "{r}");
            assert!(r["url"].as_str().unwrap().starts_with(link), "{r}");
            let id = r["id"].as_str().unwrap();
            assert_eq!(
                id.parse::<flagship_core::Platform>().ok(),
                None,
                "an id, not a platform"
            );
            assert_eq!(
                flagship_core::Platform::of_id(id).map(|p| p.to_string()),
                Some(platform.to_owned()),
                "{r}"
            );
            assert!(
                r["need_support_probability"].as_f64().unwrap() >= r["threshold"].as_f64().unwrap()
            );
        }
        println!(
            "{platform}: {} flagged of {seen} seen; first: {} {}",
            flagged.len(),
            flagged[0]["url"],
            flagged[0]["text"]
        );
    }
}

#[test]
fn three_platforms_in_one_raw_area_through_every_stage() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let ingest = |source: &str, replay: &str| {
        flagship(
            &cfg,
            &[
                "ingest",
                "run",
                "--source",
                source,
                "--replay",
                fixture(replay).to_str().unwrap(),
            ],
        )
    };
    let x = ingest("x", "twitter-v2/kpop.jsonl");
    let b = ingest("bluesky", "bluesky-jetstream/capture_v1.jsonl");
    let m = ingest("mastodon", "mastodon/public_timeline_statuses.jsonl");
    println!("{x}{b}{m}");
    let received = |s: &str| -> u64 {
        s.split(" tweets received")
            .next()
            .and_then(|h| h.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{s}"))
    };
    // Each post either sent or set aside by the track terms, never counted twice.
    for (s, posts) in [(&b, 17), (&m, 50)] {
        let unmatched: u64 = s
            .split(" not matching the track terms")
            .next()
            .and_then(|h| h.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert_eq!(received(s) + unmatched, posts, "{s}");
        assert!(s.contains("(0 duplicates dropped"), "{s}");
    }
    let total = received(&x) + received(&b) + received(&m);
    let combine = flagship(&cfg, &["combine"]);
    assert!(
        combine.contains(&format!("→ {total} rows (0 duplicate ids dropped")),
        "{combine}"
    );
    assert!(
        combine.contains("0 malformed lines quarantined"),
        "{combine}"
    );
    flagship(&cfg, &["filter"]);
    flagship(&cfg, &["textproc"]);
    let mut platforms = std::collections::BTreeMap::new();
    let mut ids = Vec::new();
    for t in common::posts_in(&dir.path().join("processed")) {
        assert!(t.url.is_some(), "{t:?}");
        *platforms.entry(t.platform.to_string()).or_insert(0) += 1;
        ids.push(t.id);
    }
    println!("processed rows by platform: {platforms:?}");
    assert_eq!(
        platforms.keys().collect::<Vec<_>>(),
        ["bluesky", "mastodon", "x"]
    );

    // Labels by post id — X numbers, at:// and https:// URIs in one file (not real
    // judgements: this checks that ids of every platform travel through the stages).
    let mut labels = String::from("id,label\n");
    for (i, id) in ids.iter().enumerate() {
        labels += &format!("{id},{}\n", i % 3);
    }
    std::fs::write(dir.path().join("labels.csv"), labels).unwrap();
    let split = flagship(
        &cfg,
        &[
            "split",
            "--labels",
            dir.path().join("labels.csv").to_str().unwrap(),
        ],
    );
    assert!(split.contains("test      20 rows"), "{split}");
    let path = |p: &str| dir.path().join(p).display().to_string();
    flagship(
        &cfg,
        &[
            "train",
            "--model-kind",
            "linear",
            "--train",
            &path("splits/train.parquet"),
            "--val",
            &path("splits/val.parquet"),
            "--out",
            &path("model"),
        ],
    );
    flagship(
        &cfg,
        &[
            "predict",
            "--model",
            &path("model"),
            "--input",
            &path("splits/test.parquet"),
            "--output",
            &path("predictions.parquet"),
            "--text-column",
            "text_model",
        ],
    );
    let (_, batches) = flagship_store::records::from_parquet(
        std::fs::read(dir.path().join("predictions.parquet"))
            .unwrap()
            .into(),
    )
    .unwrap();
    let mut scored: std::collections::BTreeMap<String, usize> = Default::default();
    for b in &batches {
        let p = b
            .column_by_name("platform")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap();
        for v in p.iter().flatten() {
            *scored.entry(v.to_owned()).or_default() += 1;
        }
    }
    println!("test split scored by platform: {scored:?}");
    assert_eq!(scored.values().sum::<usize>(), 20);
    let report = flagship(
        &cfg,
        &[
            "evaluate",
            "--predictions",
            &path("predictions.parquet"),
            "--out",
            &path("report"),
        ],
    );
    assert!(dir.path().join("report/report.json").is_file(), "{report}");
}
