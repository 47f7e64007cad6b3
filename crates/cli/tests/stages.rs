//! combine → filter → textproc → split through the `flagship` binary on real payloads laid
//! out as Firehose writes them (plus a legacy TSV object and a repeated delivery), and the
//! same filter / textproc plans on an in-process Ballista cluster giving byte-identical files.

use std::path::Path;

use chrono::{TimeZone, Utc};
use flagship_core::layout::object_key;
use flagship_testkit::fixture;

mod common;
use common::{flagship, flagship_fails};

fn legacy_record(values: &[(&str, &str)]) -> String {
    let cols = flagship_combine::legacy::COLUMNS;
    let mut f: Vec<String> = cols.iter().map(|_| "None".to_owned()).collect();
    for (k, v) in values {
        f[cols.iter().position(|c| c == k).unwrap()] = (*v).to_owned();
    }
    f.iter().map(|x| format!("{x}\t")).collect::<String>() + "\n"
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".parquet"))
        .collect();
    v.sort();
    v
}

#[test]
fn stages_end_to_end_and_on_ballista() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = d.join("raw");
    // Real payload files, one Firehose object each, spread over two arrival hours.
    let mut names: Vec<_> = std::fs::read_dir(fixture("twitter-v2"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    names.sort();
    let t0 = Utc.with_ymd_and_hms(2022, 1, 9, 22, 10, 0).unwrap();
    for (i, p) in names.iter().enumerate() {
        let at = t0 + chrono::Duration::minutes(9 * i as i64);
        let key = object_key("kinesis", "twitter_delivery_stream", at, &format!("{i:04}"));
        std::fs::create_dir_all(raw.join(&key).parent().unwrap()).unwrap();
        std::fs::copy(p, raw.join(&key)).unwrap();
    }
    // Firehose delivered one object twice (same hour): the repeats are dropped.
    let again = object_key(
        "kinesis",
        "twitter_delivery_stream",
        t0 + chrono::Duration::minutes(1),
        "dup",
    );
    std::fs::copy(fixture("twitter-v2/kpop.jsonl"), raw.join(&again)).unwrap();
    // A legacy archive hour: two good records, one split by a tab in the location.
    let legacy = object_key(
        "kinesis",
        "twitter_delivery_stream",
        Utc.with_ymd_and_hms(2021, 12, 31, 19, 58, 0).unwrap(),
        "legacy",
    );
    std::fs::create_dir_all(raw.join(&legacy).parent().unwrap()).unwrap();
    let rec = |id: &str, text: &str, loc: &str| {
        legacy_record(&[
            ("id", id),
            ("created_at", "Fri Dec 31 19:58:56 +0000 2021"),
            ("source_text", "Twitter for iPhone"),
            ("user_location", loc),
            ("text", text),
        ])
    };
    std::fs::write(
        raw.join(&legacy),
        rec(
            "1476998279540404227",
            "the webb telescope is on its way",
            "Paris",
        ) + &rec(
            "1476998279540404228",
            "what a launch for the new telescope",
            "None",
        ) + &rec(
            "1476998279540404229",
            "split record text here",
            "Paris\tFrance",
        ),
    )
    .unwrap();

    let cfg = d.join("flagship.toml");
    std::fs::write(
        &cfg,
        r#"
[storage]
raw = "raw/kinesis"
combined = "combined"
filtered = "filtered"
processed = "processed"
splits = "splits"
quarantine = "quarantine"

[mission.filter]
min_words = 3
[mission.filter.wanted]
common = ["the", "a", "to", "and", "i", "you", "is", "of", "in", "for", "on"]
[mission.filter.unwanted]
topic = ["brexit"]

[split]
test_size = 20
val_size = 20

[monitor]
batch_size = 10
"#,
    )
    .unwrap();

    let out = flagship(&cfg, &["combine"]);
    println!("{out}");
    assert!(out.contains("malformed lines quarantined"), "{out}");
    let report = out.lines().find(|l| l.starts_with("combine: ")).unwrap();
    assert!(
        report.contains("3 hours (0 unchanged, skipped), 11 objects"),
        "{report}"
    );
    assert!(report.contains("2 legacy TSV records"), "{report}");
    // 527 tweets + 2 legacy; the repeated kpop object's tweets are dropped.
    let kpop = {
        let mut r = flagship_platforms::jsonl::ReadReport::default();
        r.read(
            "k",
            &std::fs::read(fixture("twitter-v2/kpop.jsonl")).unwrap(),
            None,
        );
        r.posts
            .iter()
            .map(|t| t.id.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    // (No tweet id repeats across the fixture files themselves.)
    assert!(report.contains("→ 529 rows"), "{report}");
    assert!(
        report.contains(&format!("({kpop} duplicate ids dropped")),
        "{report}"
    );
    assert!(report.contains("2 malformed lines quarantined"), "{report}");
    // The quarantine names the object key and line of each bad line.
    let q = std::fs::read_dir(d.join("quarantine/combine"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect::<String>();
    let bad: Vec<serde_json::Value> = q
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(bad.len(), 2);
    assert!(bad.iter().any(|b| {
        b["line"] == 3
            && b["source"].as_str().unwrap().ends_with("-legacy")
            && b["error"]["message"]
                .as_str()
                .unwrap()
                .contains("a tab inside a field")
    }));
    assert!(bad.iter().any(|b| b["line"] == 8 && b["offset"] == 30091));
    // Unchanged raw objects: every hour skipped.
    let again = flagship(&cfg, &["combine"]);
    assert!(again.contains("3 hours (3 unchanged, skipped)"), "{again}");

    let out = flagship(&cfg, &["filter"]);
    println!("{out}");
    assert!(out.contains("unwanted term: topic/brexit"), "{out}");
    let out = flagship(&cfg, &["textproc"]);
    println!("{out}");

    // The same plans on Ballista (scheduler + executor in this process): identical bytes.
    // Without the `ballista` feature the binary says how to get it instead.
    if cfg!(feature = "ballista") {
        for (stage, input, local) in [
            ("filter", "combined", "filtered"),
            ("textproc", "filtered", "processed"),
        ] {
            let on = d.join(format!("{stage}-ballista"));
            let out = flagship(
                &cfg,
                &[
                    stage,
                    "--engine",
                    "ballista://standalone",
                    "--input",
                    d.join(input).to_str().unwrap(),
                    "--output",
                    on.to_str().unwrap(),
                ],
            );
            println!("{out}");
            let (a, b) = (files(&d.join(local)), files(&on));
            assert_eq!(a, b);
            assert_eq!(a.len(), 3);
            for f in &a {
                let (x, y) = (
                    std::fs::read(d.join(local).join(f)).unwrap(),
                    std::fs::read(on.join(f)).unwrap(),
                );
                assert!(
                    x == y,
                    "{stage} {f}: Ballista's Parquet differs from local DataFusion's"
                );
            }
        }
    } else {
        let e = flagship_fails(&cfg, &["filter", "--engine", "ballista://standalone"]);
        assert!(e.contains("--features ballista"), "{e}");
    }

    // split: refuses while tweets are unlabeled, exports them, then splits.
    let labels = d.join("labels.csv");
    std::fs::write(&labels, "id,label\n").unwrap();
    let e = flagship_fails(&cfg, &["split", "--labels", labels.to_str().unwrap()]);
    assert!(
        e.contains("have no label (")
            && e.contains(" in test")
            && e.contains("export-for-labeling"),
        "{e}"
    );
    let out = flagship(&cfg, &["split", "export-for-labeling"]);
    assert!(out.contains("unlabeled candidate tweets written"), "{out}");
    let csv = std::fs::read_to_string(d.join("splits/to-label.csv")).unwrap();
    let mut lines = String::from("id,label\n");
    for rec in csv::Reader::from_reader(csv.as_bytes()).records() {
        let rec = rec.unwrap();
        let id: u64 = rec[0].parse().unwrap();
        lines.push_str(&format!("{id},{}\n", id % 3));
    }
    std::fs::write(&labels, lines).unwrap();
    let out = flagship(&cfg, &["split", "--labels", labels.to_str().unwrap()]);
    println!("{out}");
    // The set-aside counts, each under the first rule a row fails, against the processed files.
    let (mut rows, mut rts, mut quotes, mut empty) = (0, 0, 0, 0);
    for b in &common::parquet_batches(&d.join("processed")) {
        let flag = |name: &str| {
            b.column_by_name(name)
                .unwrap()
                .as_any()
                .downcast_ref::<arrow::array::BooleanArray>()
                .unwrap()
                .clone()
        };
        let (rt, q) = (flag("is_retweet"), flag("is_quote"));
        let text = b
            .column_by_name("text_model")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap()
            .clone();
        for i in 0..b.num_rows() {
            rows += 1;
            if rt.value(i) {
                rts += 1;
            } else if q.value(i) {
                quotes += 1;
            } else if text.value(i).is_empty() {
                empty += 1;
            }
        }
    }
    assert!(
        out.contains(&format!(
            "split: {rows} processed rows → {} candidates ({rts} retweets, {quotes} quotes, 0 without time, {empty} empty after cleaning, 0 repeated ids, 0 repeated texts set aside)",
            rows - rts - quotes - empty
        )),
        "{out}"
    );
    let mut spans = Vec::new();
    for part in ["train", "val", "test"] {
        let bytes = std::fs::read(d.join("splits").join(format!("{part}.parquet"))).unwrap();
        let (schema, batches) = flagship_store::records::from_parquet(bytes.into()).unwrap();
        flagship_core::schema::check(&schema, flagship_core::schema::Stage::Split).unwrap();
        let mut keys = Vec::new();
        for b in &batches {
            let t = b
                .column_by_name("created_at")
                .unwrap()
                .as_any()
                .downcast_ref::<arrow::array::TimestampMillisecondArray>()
                .unwrap();
            let id = b
                .column_by_name("id")
                .unwrap()
                .as_any()
                .downcast_ref::<arrow::array::StringArray>()
                .unwrap();
            let rt = b
                .column_by_name("is_retweet")
                .unwrap()
                .as_any()
                .downcast_ref::<arrow::array::BooleanArray>()
                .unwrap();
            for i in 0..b.num_rows() {
                keys.push((t.value(i), id.value(i).to_owned()));
                assert!(!rt.value(i), "retweets are not candidates");
            }
        }
        if part != "train" {
            assert_eq!(keys.len(), 20, "{part}");
        }
        spans.push((
            keys.iter().min().cloned().unwrap(),
            keys.iter().max().cloned().unwrap(),
        ));
    }
    assert!(
        spans[0].1 < spans[1].0 && spans[1].1 < spans[2].0,
        "no later tweet in an earlier split: {spans:?}"
    );
}
