//! `flagship train` / `flagship predict` on real labelled tweets in every file format, with
//! broken rows: bad labels are skipped and named, malformed lines quarantined with their line
//! number, every input column survives into the predictions.

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Output};

use flagship_testkit::{fixture, workspace_root};

fn flagship(args: &[&str], dir: &Path) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_flagship"))
        .current_dir(dir)
        .env("RUST_BACKTRACE", "0")
        .env("FLAGSHIP_VENV", workspace_root().join(".venv"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "flagship {args:?}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn rows(rel: &str, n: usize) -> Vec<serde_json::Value> {
    std::io::BufReader::new(std::fs::File::open(fixture(rel)).unwrap())
        .lines()
        .take(n)
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect()
}

#[test]
fn linear_train_and_predict_across_formats_with_bad_rows() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Training file as CSV (quotes, commas and newlines inside texts), two bad labels.
    let mut w = csv_writer(&d.join("train.csv"));
    w.write_record(["id", "text", "label"]).unwrap();
    for r in rows("tweeteval-sentiment/val.jsonl", 800) {
        w.write_record([
            r["id"].as_str().unwrap(),
            r["text"].as_str().unwrap(),
            &r["label"].to_string(),
        ])
        .unwrap();
    }
    w.write_record(["bad-1", "a label out of range", "5"])
        .unwrap();
    w.write_record(["bad-2", "no label at all", ""]).unwrap();
    w.flush().unwrap();
    drop(w);
    // Validation as JSONL with a malformed line.
    let mut val = String::new();
    for r in rows("tweeteval-sentiment/test_pool.jsonl", 300) {
        // Key order as written (id, text, label) must survive into the output.
        val.push_str(&format!(
            "{{\"id\": {}, \"text\": {}, \"label\": {}}}\n",
            r["id"], r["text"], r["label"]
        ));
    }
    val.push_str("{\"id\": \"broken\", \"text\": \"cut off\n");
    std::fs::write(d.join("val.jsonl"), &val).unwrap();

    let o = flagship(
        &[
            "train",
            "--model-kind",
            "linear",
            "--train",
            "train.csv",
            "--val",
            "val.jsonl",
            "--out",
            "linear-model",
        ],
        d,
    );
    let t = text(&o);
    assert!(
        t.contains(
            "train.csv: 2 row(s) without a 0/1/2 label skipped, first at line 802 (label `5`)"
        ),
        "{t}"
    );
    assert!(
        t.contains("val.jsonl: 1 malformed line(s) skipped, first at line 301"),
        "{t}"
    );
    assert!(t.contains("train: 800 examples"), "{t}");
    let card: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.join("linear-model/flagship.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(card["kind"], "linear");
    assert_eq!(card["data"]["train"]["rows"], 800);
    assert_eq!(card["data"]["train"]["sha256"].as_str().unwrap().len(), 64);

    // Predict JSONL → Parquet: input columns kept, bad line quarantined, labels scored.
    let o = flagship(
        &[
            "predict",
            "--model",
            "linear-model",
            "--input",
            "val.jsonl",
            "--output",
            "pred.parquet",
        ],
        d,
    );
    let t = text(&o);
    assert!(t.contains("300 rows → pred.parquet"), "{t}");
    assert!(
        t.contains("1 malformed line(s) quarantined to pred.bad.jsonl (first: line 301)"),
        "{t}"
    );
    assert!(t.contains("labelled: 300 rows"), "{t}");
    let q = std::fs::read_to_string(d.join("pred.bad.jsonl")).unwrap();
    let q: serde_json::Value = serde_json::from_str(q.lines().next().unwrap()).unwrap();
    assert_eq!(q["line"], 301);
    let f = std::fs::File::open(d.join("pred.parquet")).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<_> = reader.map(Result::unwrap).collect();
    let schema = batches[0].schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        [
            "id",
            "text",
            "label",
            "need_support_probability",
            "need_support"
        ]
    );
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 300);

    // Evaluate the predictions: report.json with stable keys, report.md with the verdict.
    let o = flagship(
        &[
            "evaluate",
            "--predictions",
            "pred.parquet",
            "--out",
            "report",
        ],
        d,
    );
    let t = text(&o);
    assert!(t.contains("verdict: "), "{t}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("report/report.json")).unwrap())
            .unwrap();
    assert_eq!(r["rows"], 300);
    assert_eq!(r["naive"]["repeats"], 100);
    let f2 = r["model"]["binary"]["f2"].as_f64().unwrap();
    assert!(f2 > r["naive"]["f2"]["mean"].as_f64().unwrap(), "{r}");
    for key in ["roc_auc", "average_precision", "brier"] {
        assert!(r["ranking"][key].is_number(), "{key}");
    }
    for key in ["wasted_minutes", "missed_minutes", "wasted_reading_minutes"] {
        assert!(r["times"][key].is_number(), "{key}");
    }
    assert!(r["verdict"]["success"].is_boolean());
    let md = std::fs::read_to_string(d.join("report/report.md")).unwrap();
    assert!(
        md.contains("**Verdict:") && md.contains("| **F2** |"),
        "{md}"
    );

    // Monitoring: the model folder holds its reference; its own validation predictions do not
    // drift, and carry labels, so the retraining check runs.
    assert!(d.join("linear-model/monitor-reference.json").is_file());
    let o = flagship(
        &[
            "monitor",
            "--model",
            "linear-model",
            "--predictions",
            "pred.parquet",
            "--out",
            "mon",
        ],
        d,
    );
    let t = text(&o);
    assert!(
        t.contains("300 rows: 0 of ") && t.contains("within the threshold of the reference"),
        "{t}"
    );
    // A batch of texts padded with complaints: probabilities rise, the drift is flagged.
    let mut long = String::new();
    for r in rows("tweeteval-sentiment/test_pool.jsonl", 200) {
        let text = format!(
            "{} {}",
            r["text"].as_str().unwrap(),
            "awful broken terrible sad hate worst ".repeat(6)
        );
        long.push_str(&serde_json::json!({"text": text}).to_string());
        long.push('\n');
    }
    std::fs::write(d.join("long.jsonl"), long).unwrap();
    flagship(
        &[
            "predict",
            "--model",
            "linear-model",
            "--input",
            "long.jsonl",
            "--output",
            "long-pred.jsonl",
        ],
        d,
    );
    let o = flagship(
        &[
            "monitor",
            "--model",
            "linear-model",
            "--predictions",
            "long-pred.jsonl",
            "--out",
            "mon2",
        ],
        d,
    );
    let t = text(&o);
    assert!(t.contains("no labels in the batch"), "{t}");
    assert!(d.join("mon2/monitor.html").is_file());
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("mon2/monitor.json")).unwrap())
            .unwrap();
    let overall_mean = m["drift"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["dimension"] == "overall" && c["statistic"] == "mean")
        .unwrap()
        .clone();
    assert!(
        overall_mean["relative"].as_f64().unwrap() > 0.15,
        "{overall_mean}"
    );
    assert_eq!(overall_mean["flagged"], true);
    assert!(m["drift"]["flagged"].as_u64().unwrap() >= 1);

    // Predict CSV → CSV.
    flagship(
        &[
            "predict",
            "--model",
            "linear-model",
            "--input",
            "train.csv",
            "--output",
            "pred.csv",
        ],
        d,
    );
    let mut r = csv::Reader::from_path(d.join("pred.csv")).unwrap();
    let headers = r.headers().unwrap().clone();
    assert_eq!(headers.get(3), Some("need_support_probability"));
    assert_eq!(r.records().count(), 802);
}

fn csv_writer(path: &Path) -> csv::Writer<std::fs::File> {
    csv::Writer::from_path(path).unwrap()
}

#[test]
fn transformer_train_and_predict_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let val = fixture("tweeteval-sentiment/val.jsonl");
    // A small validation file: the model's monitoring reference is computed on all of it.
    let pool = d.join("val.jsonl");
    let mut v = String::new();
    for r in rows("tweeteval-sentiment/test_pool.jsonl", 96) {
        v.push_str(&r.to_string());
        v.push('\n');
    }
    std::fs::write(&pool, v).unwrap();
    let train = [
        "train",
        "--train",
        val.to_str().unwrap(),
        "--val",
        pool.to_str().unwrap(),
        "--out",
        "m",
        "--limit",
        "64",
        "--val-limit",
        "64",
        "--max-steps",
        "2",
        "--batch-size",
        "32",
        "--max-length",
        "32",
        "--checkpoint-every",
        "10m",
    ];
    // Stopped after its first step, the run says where it goes on from…
    let paused = Command::new(env!("CARGO_BIN_EXE_flagship"))
        .current_dir(d)
        .env("FLAGSHIP_VENV", workspace_root().join(".venv"))
        .args(train)
        .args(["--pause-at", "1"])
        .output()
        .unwrap();
    let t = text(&paused);
    assert!(!paused.status.success(), "{t}");
    assert!(t.contains("paused after step 1"), "{t}");
    assert!(d.join("m.checkpoint/state.json").is_file(), "{t}");
    assert!(!d.join("m").exists());
    // …and the same command goes on from there; the checkpoint goes once the model is written.
    let o = flagship(&train, d);
    let t = text(&o);
    assert!(t.contains("resuming from step 1 of 2"), "{t}");
    assert!(!d.join("m.checkpoint").exists());
    assert!(t.contains("model written to m: validation F2"), "{t}");
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "flagship.json",
    ] {
        assert!(d.join("m").join(f).is_file(), "{f}");
    }
    std::fs::write(
        d.join("in.jsonl"),
        "{\"text\": \"\"}\n{\"text\": null}\n{\"text\": \"the mirror is stunning\"}\n",
    )
    .unwrap();
    // `predict` of in.jsonl by the model `m` to `out`, with `flags`.
    let predict = |out: &str, flags: &[&str]| {
        let args = [
            "predict", "--model", "m", "--input", "in.jsonl", "--output", out,
        ];
        flagship(&[&args[..], flags].concat(), d)
    };
    let o = predict("out.jsonl", &[]);
    let t = text(&o);
    assert!(
        t.contains("3 rows → out.jsonl") && t.contains("2 empty text (1 missing)"),
        "{t}"
    );
    let out = std::fs::read_to_string(d.join("out.jsonl")).unwrap();
    assert_eq!(out.lines().count(), 3);
    for l in out.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let p = v["need_support_probability"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&p), "{l}");
    }

    // Live: by default a flagged post's words come with its line, from the scoring pass,
    // and occlusion refines them afterwards (a line of its own). Without them
    // (`--scored-words false`), a post that waited `--explain-behind` gets the pooled words
    // (one pass a post): `0ms`, every flagged post; `1h`, none. Every flagged post is
    // explained either way.
    for (behind, scored) in [("1h", true), ("0ms", false), ("1h", false)] {
        let file = format!("watch-{behind}-{scored}.jsonl");
        let scored_words = scored.to_string();
        let (t, totals) = watch_demo(
            d,
            &file,
            &["--explain-behind", behind, "--scored-words", &scored_words],
        );
        let n = |k: &str| totals[k].as_u64().unwrap();
        // The final seconds of explaining may leave a few without words (counted).
        assert!(n("explained") > 0, "{t}");
        assert_eq!(n("explained") + n("unexplained"), n("flagged"), "{t}");
        let pooled = if behind == "0ms" { n("explained") } else { 0 };
        assert_eq!(n("explained_pooled"), pooled, "{behind}: {t}");
        let lines = std::fs::read_to_string(d.join(&file)).unwrap();
        let whys = lines.lines().filter(|l| l.contains("\"explains\"")).count() as u64;
        let with_line = lines
            .lines()
            .filter(|l| l.contains("\"need_support_probability\"") && l.contains("\"why\""))
            .count() as u64;
        assert_eq!(with_line, n("explained_scored"), "{lines}");
        if scored {
            // Every flagged post with a word that raised its probability has it on its line.
            assert!(n("explained_scored") > 0, "{t}");
        } else {
            assert_eq!((n("explained_scored"), n("refined")), (0, 0), "{t}");
        }
        // A line of words after a post: its first words, or occlusion's refinement.
        assert_eq!(
            whys,
            n("explained") - n("explained_scored") + n("refined"),
            "{lines}"
        );
    }

    // In a hurry: exits refitted with looser margins for a loop that has fallen behind;
    // `--hurry-after 0ms` scores every micro-batch with them (each line marked), `1h` none.
    let o = flagship(
        &[
            "exits",
            "--model",
            "m",
            "--budget",
            "0.002",
            "--hurried-budget",
            "0.05",
        ],
        d,
    );
    let t = text(&o);
    assert!(
        t.contains("exits in a hurry (budget 0.05): after layer"),
        "{t}"
    );
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("m/flagship.json")).unwrap()).unwrap();
    let hurried = &card["early_exit"]["hurried"];
    assert_eq!(hurried["budget"], 0.05, "{card}");
    assert!(hurried["reading"].as_f64().unwrap() < 1.0, "{card}");
    // `predict --hurried`: the decisions such a loop makes, and the layers it reads.
    let o = predict("hurried.jsonl", &["--hurried"]);
    let t = text(&o);
    assert!(
        o.status.success() && t.contains("3 rows → hurried.jsonl"),
        "{t}"
    );
    for after in ["0ms", "1h"] {
        let file = format!("watch-hurry-{after}.jsonl");
        let (t, totals) = watch_demo(d, &file, &["--hurry-after", after]);
        let n = |k: &str| totals[k].as_u64().unwrap();
        let lines = std::fs::read_to_string(d.join(&file)).unwrap();
        let flagged: Vec<serde_json::Value> = lines
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|v: &serde_json::Value| v.get("need_support_probability").is_some())
            .collect();
        assert!(n("kept") > 0 && !flagged.is_empty(), "{t}");
        let marked = flagged.iter().filter(|v| v["hurried"] == true).count();
        if after == "0ms" {
            assert_eq!(
                (n("hurried"), n("hurried_batches")),
                (n("kept"), n("batches")),
                "{t}"
            );
            assert_eq!(marked, flagged.len(), "{lines}");
        } else {
            assert_eq!(
                (n("hurried"), n("hurried_batches"), marked),
                (0, 0, 0),
                "{t}"
            );
        }
    }
}

/// `flagship watch` of the demo's first 40 replayed posts with the model `m` in `d`, flagged
/// posts to `out`, with `flags`: what it printed, and its totals (the last JSON line).
fn watch_demo(d: &Path, out: &str, flags: &[&str]) -> (String, serde_json::Value) {
    let (config, replay) = (
        fixture("demo/flagship.toml"),
        fixture("demo/stream.jsonl.gz"),
    );
    let mut args = vec![
        "--config",
        config.to_str().unwrap(),
        "watch",
        "--replay",
        replay.to_str().unwrap(),
        "--model",
        "m",
        "--max-posts",
        "40",
        "--out",
        out,
    ];
    args.extend_from_slice(flags);
    let t = text(&flagship(&args, d));
    let totals = t
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no totals: {t}"));
    (t, totals)
}

fn jsonl(path: &Path, rows: &[serde_json::Value]) {
    let mut s = String::new();
    for r in rows {
        s.push_str(&r.to_string());
        s.push('\n');
    }
    std::fs::write(path, s).unwrap();
}

/// A teacher labels labelled and unlabelled posts once (its manifest names it and the file's
/// SHA-256; held-out texts are never scored); a student trains on the soft labels, its card
/// names the teacher and the temperature; a soft-label file changed afterwards is refused.
#[test]
fn teacher_labels_are_distilled_into_a_student_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let labelled = rows("tweeteval-sentiment/val.jsonl", 64);
    jsonl(&d.join("train.jsonl"), &labelled);
    jsonl(
        &d.join("val.jsonl"),
        &rows("tweeteval-sentiment/test_pool.jsonl", 64),
    );
    // The evaluation set: one of the "unlabelled" posts is its text, written with an entity
    // the training text's un-escaping removes (the keys must still match).
    jsonl(
        &d.join("eval.jsonl"),
        &[serde_json::json!({"text": "the livestream froze & nobody says why", "label": 0})],
    );
    jsonl(
        &d.join("posts.jsonl"),
        &[
            serde_json::json!({"text": "the livestream froze &amp; nobody says why", "source": "bluesky"}),
            serde_json::json!({"text": "when is the next deep field release?", "source": "mastodon"}),
            serde_json::json!({"text": "when is the next deep field release?", "source": "mastodon"}),
            serde_json::json!({"text": "what a picture of the Carina nebula", "source": "mastodon"}),
        ],
    );
    let small = [
        "--max-steps",
        "2",
        "--batch-size",
        "32",
        "--max-length",
        "32",
    ];
    let mut args = vec![
        "train",
        "--train",
        "train.jsonl",
        "--val",
        "val.jsonl",
        "--out",
        "teacher",
    ];
    args.extend(small);
    flagship(&args, d);
    let o = flagship(
        &[
            "teacher-labels",
            "--model",
            "teacher",
            "--input",
            "train.jsonl",
            "--input",
            "posts.jsonl",
            "--holdout",
            "eval.jsonl",
            "--out",
            "soft/labels.jsonl.gz",
        ],
        d,
    );
    let t = text(&o);
    assert!(t.contains("train.jsonl: 64 labelled text(s) scored"), "{t}");
    assert!(
        t.contains("posts.jsonl: 2 unlabelled text(s) scored"),
        "{t}"
    );
    assert!(
        t.contains("66 soft label(s)") && t.contains("1 held out"),
        "{t}"
    );
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.join("soft/labels.jsonl.gz.json")).unwrap(),
    )
    .unwrap();
    assert!(
        manifest["teacher"]
            .as_str()
            .unwrap()
            .starts_with("teacher ("),
        "{manifest}"
    );
    assert_eq!(manifest["held_out"]["eval.jsonl"], 1);
    assert_eq!(manifest["unlabelled"]["posts.jsonl"], 2);
    assert_eq!(manifest["soft_labels"]["rows"], 66);

    let mut args = vec![
        "train",
        "--train",
        "train.jsonl",
        "--val",
        "val.jsonl",
        "--out",
        "student",
        "--teacher-labels",
        "soft/labels.jsonl.gz",
        "--temperature",
        "3",
    ];
    args.extend(small);
    let t = text(&flagship(&args, d));
    assert!(
        t.contains("distillation: 64 of 64 training examples have a soft label; 2 unlabelled post(s) added (mastodon 2)"),
        "{t}"
    );
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("student/flagship.json")).unwrap())
            .unwrap();
    let dist = &card["distillation"];
    assert_eq!(dist["temperature"], 3.0);
    assert_eq!(dist["alpha"], 0.5);
    assert_eq!(dist["teacher"], manifest["teacher"]);
    assert_eq!(
        dist["soft_labels"]["sha256"],
        manifest["soft_labels"]["sha256"]
    );

    // A soft-label file that is not what its manifest recorded is refused, by name.
    let soft = d.join("soft/labels.jsonl.gz");
    let mut bytes = std::fs::read(&soft).unwrap();
    let other = flate2::read::GzDecoder::new(&bytes[..]);
    let mut plain = String::new();
    std::io::Read::read_to_string(&mut { other }, &mut plain).unwrap();
    // One more (well-formed) line: the file reads, its SHA-256 is not the manifest's.
    let first = plain.lines().next().unwrap().to_owned();
    plain.push_str(&first);
    plain.push('\n');
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, plain.as_bytes()).unwrap();
    bytes = gz.finish().unwrap();
    std::fs::write(&soft, bytes).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_flagship"))
        .current_dir(d)
        .env("FLAGSHIP_VENV", workspace_root().join(".venv"))
        .args(&args)
        .output()
        .unwrap();
    let t = text(&o);
    assert!(!o.status.success());
    assert!(
        t.contains("labels.jsonl.gz: SHA-256")
            && t.contains("the file changed after the teacher wrote it"),
        "{t}"
    );
}
