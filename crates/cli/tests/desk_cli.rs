//! `flagship desk` through the binary: the desk serves and scores a Mastodon replay live,
//! decisions made over its API (session + CSRF) survive the process, `desk export` writes them
//! in the three formats, `flagship split` with `split.desk_labels` lays them over the labels
//! file, and an exposed address without logins is refused.
#![cfg(feature = "model")]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use flagship_desk::testing::{cookie_of, csrf_of, form, http};
use flagship_testkit::fixture;

mod common;
use common::{flagship, flagship_fails, linear_model};

fn config(dir: &Path, desk_labels: bool) -> std::path::PathBuf {
    let cfg = dir.join("flagship.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[mission]
name = "fediverse-test"

[mission.stream]
track = ["the", "a", "and", "to", "is", "of", "in", "for", "on", "with", "de", "it", "you", "this", "i"]

[mission.filter]
min_words = 1
wanted = {{}}
unwanted = {{}}

[split]
test_size = 5
val_size = 5
labels = "labels.csv"
desk_labels = {desk_labels}

[storage]
raw = "raw"
combined = "combined"
filtered = "filtered"
processed = "processed"
splits = "splits"
models = "models"
reports = "reports"
quarantine = "quarantine"
desk = "desk/desk.sqlite"
"#
        ),
    )
    .unwrap();
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_desk_binary_serves_scores_decides_and_exports() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), false);
    let model = linear_model(dir.path(), &cfg);
    let replay = fixture("mastodon/public_timeline_statuses.jsonl");

    // An exposed address with no login method is refused.
    let e = flagship_fails(&cfg, &["desk", "--no-live", "--bind", "0.0.0.0:0"]);
    assert!(e.contains("is not a loopback address"), "{e}");

    let mut child = Command::new(env!("CARGO_BIN_EXE_flagship"))
        .env("RUST_LOG", "warn")
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "desk",
            "--source",
            "mastodon",
        ])
        .args(["--replay", replay.to_str().unwrap(), "--model", &model])
        .args(["--bind", "127.0.0.1:0", "--duration", "120s"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut addr = None;
    let mut summary = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        println!("{line}");
        if let Some(rest) = line.strip_prefix("desk: http://") {
            addr = rest.split('/').next().map(|a| a.parse().unwrap());
        }
        if line.contains("posts seen") {
            summary = line;
            break;
        }
    }
    let addr: std::net::SocketAddr = addr.expect("the desk's address");
    assert!(
        summary.contains(" flagged; arrival → stored p50"),
        "{summary}"
    );

    // The page opens a local session (loopback, no login configured).
    let (status, h, page) = http(addr, "GET", "/", &[], "").await;
    assert_eq!(status, 200);
    assert!(page.contains("flagship desk · <bdi>fediverse-test</bdi>"));
    let cookie = cookie_of(&h).unwrap();
    let csrf = csrf_of(&page).unwrap();
    let (status, _, body) = http(
        addr,
        "GET",
        "/api/queue?limit=1000",
        &[("Cookie", &cookie)],
        "",
    )
    .await;
    assert_eq!(status, 200);
    let queue: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert!(
        queue.len() >= 2,
        "flagged Mastodon posts in the queue: {body}"
    );
    assert!(
        queue
            .iter()
            .all(|p| p["platform"] == "mastodon" && p["url"].is_string())
    );
    let ids: Vec<String> = queue[..2]
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect();
    for (id, decision) in ids.iter().zip(["needs_reply", "no_reply"]) {
        let (status, _, body) = http(
            addr,
            "POST",
            "/api/decide",
            &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
            &form(&[("id", id), ("decision", decision)]),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(decision), "{body}");
    }

    // SIGTERM: a clean stop.
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status} {rest:?}");
    assert_eq!(
        rest.last().map(String::as_str),
        Some("desk: stopped"),
        "{rest:?}"
    );

    // The decisions outlived the process: the exports.
    let out = |name: &str| dir.path().join(name).display().to_string();
    flagship(
        &cfg,
        &[
            "desk",
            "export",
            "--format",
            "labels",
            "--out",
            &out("labels-desk.csv"),
        ],
    );
    let labels = std::fs::read_to_string(dir.path().join("labels-desk.csv")).unwrap();
    let mut want = [format!("{},0", ids[0]), format!("{},2", ids[1])];
    want.sort();
    assert_eq!(labels, format!("id,label\n{}\n{}\n", want[0], want[1]));
    flagship(
        &cfg,
        &[
            "desk",
            "export",
            "--format",
            "label-studio",
            "--out",
            &out("ls.json"),
        ],
    );
    let tasks: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(dir.path().join("ls.json")).unwrap()).unwrap();
    assert_eq!(tasks.len(), 2);
    for t in &tasks {
        let choice = &t["annotations"][0]["result"][0]["value"]["choices"][0];
        let want = if t["data"]["post_id"] == ids[0].as_str() {
            "needs_reply"
        } else {
            "no_reply"
        };
        assert_eq!(choice, want, "{t}");
        assert!(t["predictions"][0]["score"].is_f64());
    }
    let argilla = flagship(&cfg, &["desk", "export", "--format", "argilla"]);
    let records: Vec<serde_json::Value> = argilla
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 2);
    assert!(
        records
            .iter()
            .all(|r| r["responses"][0]["question_name"] == "need_support")
    );

    // The decisions as labels for the split stage, over the labels file.
    flagship(
        &cfg,
        &[
            "ingest",
            "run",
            "--source",
            "mastodon",
            "--replay",
            replay.to_str().unwrap(),
        ],
    );
    for stage in ["combine", "filter", "textproc"] {
        flagship(&cfg, &[stage]);
    }
    let mut file = String::from("id,label\n");
    for t in common::posts_in(&dir.path().join("processed")) {
        file += &format!("{},1\n", t.id);
    }
    std::fs::write(dir.path().join("labels.csv"), file).unwrap();
    let without = flagship(&cfg, &["split"]);
    assert!(!without.contains("from the desk"), "{without}");
    let cfg = config(dir.path(), true);
    let with = flagship(&cfg, &["split"]);
    assert!(
        with.contains("split: 2 labels from the desk's decisions")
            && with.contains(
                "0 new, 2 replacing the file's label (1 of them changing need_support), 0 agreeing with it"
            ),
        "{with}"
    );
    // Without a desk database, desk_labels is a clear error.
    std::fs::remove_dir_all(dir.path().join("desk")).unwrap();
    let e = flagship_fails(&cfg, &["split"]);
    assert!(
        e.contains("desk database") && e.contains("does not exist"),
        "{e}"
    );
}
