//! The JWST profile on the 194 real sample tweets, through the DataFusion plan on Parquet
//! hour files: kept and dropped exactly as an independent check decides, with counts per
//! reason that add up.

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use flagship_core::{Config, Post, schema::Stage};
use flagship_filter::{KEPT, TermMatcher};
use flagship_store::records;
use flagship_store::storage::{Location, S3Options, Store};

fn samples() -> Vec<String> {
    let text = std::fs::read_to_string(flagship_testkit::fixture(
        "jwst-samples/jwst_tweets_from_notebook_outputs.jsonl",
    ))
    .unwrap();
    text.lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

fn tweet(id: u64, text: &str) -> Post {
    let raw = format!(
        r#"{{"data":{{"id":"{id}","text":{}}}}}"#,
        serde_json::to_string(text).unwrap()
    );
    let mut t = flagship_platforms::jsonl::parse_payload(raw.as_bytes(), None)
        .unwrap()
        .posts
        .remove(0);
    t.created_at = Some(
        Utc.with_ymd_and_hms(2022, 1, 2, 3, 0, 0).unwrap() + chrono::Duration::seconds(id as i64),
    );
    t
}

/// Writes tweets as a combined hour file.
async fn combined_hour(store: &Store, hour: &str, tweets: &[Post]) {
    let raw = records::to_batch(tweets).unwrap();
    let n = raw.num_rows();
    let mut cols = raw.columns().to_vec();
    cols.push(std::sync::Arc::new(arrow::array::StringArray::from(vec![
        "obj";
        n
    ])));
    cols.push(std::sync::Arc::new(
        arrow::array::TimestampMillisecondArray::from(vec![0; n]).with_timezone("UTC"),
    ));
    let batch = arrow::array::RecordBatch::try_new(Stage::Combined.schema(), cols).unwrap();
    store
        .write_parquet(hour, &Stage::Combined.schema(), &[batch])
        .await
        .unwrap();
}

#[tokio::test]
async fn jwst_profile_keeps_and_drops_the_samples_with_counts() {
    let texts = samples();
    assert_eq!(texts.len(), 194);
    let dir = tempfile::tempdir().unwrap();
    let open =
        |p: &str| Store::open(&Location::Local(dir.path().join(p)), &S3Options::default()).unwrap();
    let (input, output) = (open("combined"), open("filtered"));
    let tweets: Vec<Post> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| tweet(i as u64 + 1, t))
        .collect();
    // Two hours, to exercise the per-hour driver.
    combined_hour(&input, "2022010203.parquet", &tweets[..100]).await;
    combined_hour(&input, "2022010204.parquet", &tweets[100..]).await;

    let config = Config::default();
    let filter = &config.mission.filter;
    let ctx = flagship_store::frames::local_session();
    let hours = flagship_filter::run(&ctx, filter, &input, &output, 2, &|_, _, _| {})
        .await
        .unwrap();
    assert_eq!(hours.len(), 2);
    let totals = flagship_filter::totals(&hours);

    // The independent decision: the local matcher (itself checked against tokenising in the
    // unit tests) and a whitespace word count.
    let wanted = TermMatcher::new(&filter.wanted, false).unwrap();
    let unwanted = TermMatcher::new(&filter.unwanted, false).unwrap();
    let mut expect: BTreeMap<String, u64> = BTreeMap::new();
    let mut expect_kept = Vec::new();
    for (t, tw) in texts.iter().zip(&tweets) {
        let m = wanted.matches(t);
        let missing = filter
            .wanted
            .keys()
            .find(|g| !m.iter().any(|(mg, _)| mg == g));
        let reason = if let Some(g) = missing {
            format!("no wanted term: {g}")
        } else if let Some((g, term)) = unwanted.matches(t).first() {
            format!("unwanted term: {g}/{term}")
        } else if t.split_whitespace().count() < filter.min_words as usize {
            "too few words".into()
        } else {
            expect_kept.push(tw.id.clone());
            KEPT.into()
        };
        *expect.entry(reason).or_insert(0) += 1;
    }
    let got: BTreeMap<String, u64> = totals
        .iter()
        .filter(|(k, _)| !k.starts_with("unwanted category"))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    println!("{got:#?}");
    assert_eq!(got, expect);
    assert_eq!(got.values().sum::<u64>(), 194);
    assert!(got[KEPT] > 0 && got[KEPT] < 194);

    let mut kept_ids = Vec::new();
    for h in &hours {
        let (schema, batches) = output.read_parquet(&h.output).await.unwrap();
        flagship_core::schema::check(&schema, Stage::Filtered).unwrap();
        for b in &batches {
            let ids = b
                .column_by_name("id")
                .unwrap()
                .as_any()
                .downcast_ref::<arrow::array::StringArray>()
                .unwrap();
            kept_ids.extend(ids.iter().flatten().map(str::to_owned));
            let terms = b
                .column_by_name("matched_terms")
                .unwrap()
                .as_any()
                .downcast_ref::<arrow::array::ListArray>()
                .unwrap();
            for i in 0..b.num_rows() {
                assert!(
                    terms.value(i).len() >= 2,
                    "a kept tweet matched a word and a phrase"
                );
            }
        }
    }
    assert_eq!(kept_ids, expect_kept);

    // Unchanged inputs and profile: skipped, same counts. A changed profile reruns.
    let again = flagship_filter::run(&ctx, filter, &input, &output, 2, &|_, _, _| {})
        .await
        .unwrap();
    assert!(again.iter().all(|h| h.skipped));
    assert_eq!(flagship_filter::totals(&again), totals);
    let mut seed = filter.clone();
    seed.substring = true;
    let rerun = flagship_filter::run(&ctx, &seed, &input, &output, 2, &|_, _, _| {})
        .await
        .unwrap();
    assert!(rerun.iter().all(|h| !h.skipped));
    let seed_kept = flagship_filter::totals(&rerun)[KEPT];
    println!(
        "kept: word-boundary {} vs the seed's substring matching {seed_kept}",
        got[KEPT]
    );
    assert_ne!(seed_kept, got[KEPT]);

    // An input hour removed upstream (`combine --prune-vanished`) takes its output with it.
    let first = &rerun[0];
    input.delete(&first.output).await.unwrap();
    let pruned = flagship_filter::run(&ctx, &seed, &input, &output, 2, &|_, _, _| {})
        .await
        .unwrap();
    let removed: Vec<&str> = pruned
        .iter()
        .filter(|h| h.removed)
        .map(|h| h.output.as_str())
        .collect();
    assert_eq!(removed, [first.output.as_str()]);
    assert!(!output.exists(&first.output).await.unwrap());
    assert!(
        flagship_store::frames::summary(&pruned)
            .ends_with("1 outputs removed (their input is gone)")
    );
}
