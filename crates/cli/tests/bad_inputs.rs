//! A bad-input corpus through the binary: each case's exit status and the words of its message
//! (file, key, line) — never a panic, never silence.

use std::path::Path;
use std::process::{Command, Output};

use flagship_testkit::workspace_root;

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flagship"))
        .current_dir(dir)
        .env("RUST_BACKTRACE", "0")
        .env("FLAGSHIP_VENV", workspace_root().join(".venv"))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Fails with exit status 1 (an error, not a panic's 101) and says every one of `words`.
fn fails(dir: &Path, args: &[&str], words: &[&str]) {
    let o = run(dir, args);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {t}");
    for w in words {
        assert!(t.contains(w), "{args:?} should say {w:?}: {t}");
    }
}

#[test]
fn config_settings_no_run_can_use() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let long = "x".repeat(610);
    for (name, toml, key) in [
        (
            "empty-track",
            "[mission.stream]\ntrack = []\n",
            "mission.stream.track",
        ),
        (
            "long-rule",
            &format!("[mission.stream]\ntrack = [\"{long}\"]\n")[..],
            "mission.stream.track",
        ),
        (
            "max-length",
            "[model]\nmax_length = 100000\n",
            "model.max_length",
        ),
        ("test-size", "[split]\ntest_size = 0\n", "split.test_size"),
        ("typo", "[model]\nepochz = 2\n", "model.epochz"),
    ] {
        let f = d.join(format!("{name}.toml"));
        std::fs::write(&f, toml).unwrap();
        fails(
            d,
            &["--config", f.to_str().unwrap(), "config", "check"],
            &[&format!("{name}.toml"), &format!("key `{key}`")],
        );
    }
}

#[test]
fn stage_inputs_that_do_not_exist_are_errors_not_empty_runs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let missing = d.join("no-such-folder");
    for stage in ["combine", "filter", "textproc"] {
        fails(
            d,
            &[
                stage,
                "--input",
                missing.to_str().unwrap(),
                "--output",
                "out",
            ],
            &[stage, "does not exist", "no-such-folder"],
        );
        assert!(!missing.exists(), "{stage} created its missing input");
    }
}

#[test]
fn predictions_files_with_bad_rows_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A labelled predictions file with a label 7 and a missing probability.
    let f = d.join("preds.csv");
    std::fs::write(
        &f,
        "id,text,label,need_support_probability,need_support\n\
         1,the feed is down,0,0.9,true\n\
         2,lovely image,2,0.1,false\n\
         3,what is this,7,0.5,true\n",
    )
    .unwrap();
    let o = run(d, &["evaluate", "--predictions", "preds.csv", "--out", "r"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("1 row(s) without a 0/1/2 label left out"),
        "{}",
        text(&o)
    );
    std::fs::write(
        &f,
        "id,text,label,need_support_probability,need_support\n1,x,0,,true\n",
    )
    .unwrap();
    fails(
        d,
        &["evaluate", "--predictions", "preds.csv", "--out", "r"],
        &["preds.csv", "line 2", "need_support_probability"],
    );
}

#[cfg(feature = "model")]
#[test]
fn predict_sets_aside_lines_that_are_not_utf8() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A linear model trained on real labelled tweets (instant), then a JSONL input with a
    // line of Latin-1 bytes.
    let train = flagship_testkit::fixture("tweeteval-sentiment/val.jsonl");
    let o = run(
        d,
        &[
            "train",
            "--model-kind",
            "linear",
            "--train",
            train.to_str().unwrap(),
            "--val",
            train.to_str().unwrap(),
            "--limit",
            "300",
            "--val-limit",
            "100",
            "--out",
            "m",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let mut input = b"{\"text\":\"the stream is down again\"}\n".to_vec();
    input.extend_from_slice(b"{\"text\":\"caf\xe9 au lait\"}\n");
    input.extend_from_slice(b"{\"text\":\"what a view\"}\n");
    std::fs::write(d.join("in.jsonl"), input).unwrap();
    let o = run(
        d,
        &[
            "predict",
            "--model",
            "m",
            "--input",
            "in.jsonl",
            "--output",
            "out.jsonl",
        ],
    );
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("2 rows"), "{t}");
    assert!(t.contains("1 malformed line(s) quarantined"), "{t}");
    let q = std::fs::read_to_string(d.join("out.bad.jsonl")).unwrap();
    assert!(q.contains("not UTF-8") && q.contains("\"line\":2"), "{q}");
}
