//! Every real payload in `fixtures/twitter-v2/` parses (or is reported), and every tweet
//! round-trips through the raw Arrow schema and Parquet unchanged.

use std::collections::{BTreeMap, HashSet};

use flagship_core::schema::{self, Stage};
use flagship_platforms::jsonl::ReadReport;
use flagship_store::records;
use flagship_testkit::fixture;

/// Tweets in `data` per file, as the fixtures' SOURCE.md lists them.
const EXPECTED_TWEETS: [(&str, usize); 9] = [
    ("brexit.jsonl", 100),
    ("edited.jsonl", 1),
    ("geo_tweets.jsonl", 2),
    ("kpop.jsonl", 100),
    ("noflat.jsonl", 100),
    ("quoted_edit.jsonl", 1),
    ("streaming_output_with_error.jsonl", 7),
    ("two_tweets.jsonl", 1),
    ("withheld.jsonl", 215),
];

/// An independent count, through untyped JSON, of tweets whose author is in includes.users
/// and of error objects, so the typed parser is checked against something else.
fn independent_counts(bytes: &[u8]) -> (usize, usize) {
    let (mut joined, mut errors) = (0, 0);
    for line in bytes.split(|&b| b == b'\n') {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        let users: HashSet<&str> = v["includes"]["users"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|u| u["id"].as_str())
            .collect();
        let data = match &v["data"] {
            serde_json::Value::Array(a) => a.iter().collect::<Vec<_>>(),
            serde_json::Value::Null => vec![],
            one => vec![one],
        };
        joined += data
            .iter()
            .filter(|t| t["author_id"].as_str().is_some_and(|a| users.contains(a)))
            .count();
        errors += v["errors"].as_array().map_or(0, Vec::len);
    }
    (joined, errors)
}

#[test]
fn all_fixtures_roundtrip_through_raw_schema() {
    let dir = fixture("twitter-v2");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    assert_eq!(
        files.len(),
        EXPECTED_TWEETS.len(),
        "fixture files in {}",
        dir.display()
    );

    let expected: BTreeMap<_, _> = EXPECTED_TWEETS.into_iter().collect();
    let mut total = ReadReport::default();
    for path in &files {
        let name = path.file_name().unwrap().to_str().unwrap();
        let bytes = std::fs::read(path).unwrap();
        let mut r = ReadReport::default();
        r.read(name, &bytes, None);
        let (joined, api_errors) = independent_counts(&bytes);
        println!("{name}: {r}");
        assert_eq!(r.posts.len(), expected[name], "{name}: tweets");
        assert_eq!(r.users_joined, joined, "{name}: users joined");
        assert_eq!(r.api_errors.len(), api_errors, "{name}: api errors");

        // Round trip: tweets -> Arrow -> Parquet -> Arrow -> tweets.
        let batch = records::to_batch(&r.posts).unwrap();
        schema::check(&batch.schema(), Stage::Raw).unwrap();
        let parquet = records::to_parquet(&Stage::Raw.schema(), &[batch]).unwrap();
        let (schema_back, batches) = records::from_parquet(parquet).unwrap();
        schema::check(&schema_back, Stage::Raw).unwrap();
        let back: Vec<_> = batches
            .iter()
            .flat_map(|b| records::from_batch(b).unwrap())
            .collect();
        assert_eq!(back, r.posts, "{name}: round trip");

        total.read(name, &bytes, None);
    }
    println!("total: {total}");
    for b in &total.bad_lines {
        println!("  quarantined: {b}");
    }
    assert_eq!(total.posts.len(), 527);
    // The one real broken stream line: truncated JSON at the end of the 2021 capture.
    assert_eq!(total.bad_lines.len(), 1);
    let bad = &total.bad_lines[0];
    assert_eq!(
        (bad.source.as_str(), bad.line),
        ("streaming_output_with_error.jsonl", 8)
    );
    assert!(bad.error.message.contains("EOF"), "{bad}");
}

#[test]
fn fields_come_from_the_payload_structure() {
    let mut r = ReadReport::default();
    for name in [
        "two_tweets.jsonl",
        "edited.jsonl",
        "geo_tweets.jsonl",
        "withheld.jsonl",
        "quoted_edit.jsonl",
    ] {
        r.read(
            name,
            &std::fs::read(fixture(&format!("twitter-v2/{name}"))).unwrap(),
            None,
        );
    }
    let by_id = |id: u64| r.posts.iter().find(|t| t.id == id.to_string()).unwrap();

    // A real retweet: flagged from referenced_tweets, entities from `entities`.
    let rt = by_id(1_394_735_776_701_816_833);
    assert!(rt.is_retweet && !rt.is_quote && !rt.is_reply);
    assert_eq!(rt.retweeted_id, Some(1_391_677_057_810_288_641));
    // The retweeted tweet's full text, from includes.tweets.
    assert_eq!(rt.referenced_text.as_deref(), Some("#POIUYTREWQ"));
    assert_eq!(rt.hashtags, ["POIUYTREWQ"]);
    assert_eq!(rt.mentions, ["bibaigna96"]);
    assert_eq!(rt.source.as_deref(), Some("Twitter for Android"));

    // Edited tweet: the edit history is kept.
    let edited = r
        .posts
        .iter()
        .find(|t| t.edit_history_ids.len() == 2)
        .unwrap();
    assert_eq!(
        edited.edit_history_ids,
        [1_576_994_746_135_764_992, 1_576_994_789_110_992_896]
    );

    // Geo: place joined from includes.places.
    let geo: Vec<_> = r.posts.iter().filter(|t| t.place_id.is_some()).collect();
    assert!(!geo.is_empty());
    assert!(geo.iter().any(|t| t.place_full_name.is_some()));

    // Withheld tweets carry their countries.
    assert!(r.posts.iter().any(|t| !t.withheld_in.is_empty()));

    // Reply with a mention.
    let reply = by_id(1_576_995_594_388_000_768);
    assert!(reply.is_reply || reply.in_reply_to_user_id.is_some());
    assert_eq!(reply.mentions, ["wongmjane"]);
    assert_eq!(
        reply.created_at.unwrap().to_rfc3339(),
        "2022-10-03T18:00:23+00:00"
    );
}

#[test]
fn docs_list_every_column() {
    let doc =
        std::fs::read_to_string(flagship_testkit::workspace_root().join("docs/data.md")).unwrap();
    for stage in Stage::ALL {
        let head = format!("## {} (version {})", stage.name(), schema::VERSION);
        let start = doc
            .find(&head)
            .unwrap_or_else(|| panic!("docs/data.md lacks `{head}`"));
        let section = &doc[start..];
        let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
        let schema = stage.schema();
        // A stage's section lists only the columns it adds to the one before.
        let inherited = Stage::ALL
            .iter()
            .position(|s| *s == stage)
            .and_then(|i| i.checked_sub(1))
            .filter(|_| stage != Stage::Predictions)
            .map(|i| Stage::ALL[i].schema().fields().len())
            .unwrap_or(0);
        for f in &schema.fields()[inherited..] {
            assert!(
                section.contains(&format!("| `{}` |", f.name())),
                "docs/data.md, {}: column `{}`",
                stage.name(),
                f.name()
            );
        }
    }
}

/// A version-2 file (before the reply references) is still read: its posts come back with
/// no references; a version-2 file missing any other column, or an unknown version, is not.
#[test]
fn version_2_files_are_still_read() {
    use std::sync::Arc;
    let mut r = ReadReport::default();
    r.read(
        "brexit.jsonl",
        &std::fs::read(fixture("twitter-v2/brexit.jsonl")).unwrap(),
        None,
    );
    let batch = records::to_batch(&r.posts).unwrap();
    assert!(
        r.posts.iter().any(|p| p.reply_parent.is_some()),
        "the fixture has replies"
    );
    // The same rows as a version-2 writer wrote them: without the three columns.
    let v2 = |drop: &[&str], version: &str| {
        let keep: Vec<usize> = (0..batch.num_columns())
            .filter(|&i| !drop.contains(&batch.schema().field(i).name().as_str()))
            .collect();
        let projected = batch.project(&keep).unwrap();
        let mut meta = projected.schema().metadata().clone();
        meta.insert(schema::META_VERSION.into(), version.into());
        let schema = Arc::new(projected.schema().as_ref().clone().with_metadata(meta));
        arrow::record_batch::RecordBatch::try_new(schema, projected.columns().to_vec()).unwrap()
    };
    let old = v2(&["cid", "reply_parent", "reply_root"], "2");
    let back = records::from_batch(&old).unwrap();
    assert_eq!(back.len(), r.posts.len());
    assert!(
        back.iter()
            .all(|p| p.reply_parent.is_none() && p.cid.is_none())
    );
    assert_eq!(back[0].text, r.posts[0].text);
    let e = schema::check(
        &v2(&["cid", "reply_parent", "reply_root", "lang"], "2").schema(),
        Stage::Raw,
    )
    .unwrap_err();
    assert_eq!(e, schema::SchemaError::MissingField("lang".into()));
    let e = schema::check(&v2(&[], "1").schema(), Stage::Raw).unwrap_err();
    assert!(e.to_string().contains("schema version 1"), "{e}");
    // The current version needs them all.
    let e = schema::check(&v2(&["cid"], schema::VERSION).schema(), Stage::Raw).unwrap_err();
    assert_eq!(e, schema::SchemaError::MissingField("cid".into()));
}
