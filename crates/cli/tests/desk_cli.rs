//! `flagship desk` through the binary: the desk serves and scores a Mastodon replay live,
//! decisions made over its API (session + CSRF) survive the process, `desk export` writes them
//! in the three formats, `flagship split` with `split.desk_labels` lays them over the labels
//! file, and an exposed address without logins is refused — as is TLS in front
//! (`secure_cookie`) without logins; `desk user add` reads a terminal's password without echo
//! and, like `desk user remove`, ends the user's sessions.
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
    // The today panel names the model — its kind, when trained, its operating point — and
    // never its folder; the live loop embedded the flagged posts for question groups.
    assert!(
        page.contains("TF-IDF + logistic regression, trained "),
        "{page}"
    );
    assert!(page.contains("operating point "), "{page}");
    assert!(!page.contains(&model), "the model's folder: {page}");
    assert!(
        summary.contains("embedded for question groups"),
        "{summary}"
    );
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

/// A desk whose `secure_cookie` says a TLS proxy is in front, with no login method, is
/// refused at start; `desk user add` asks a terminal for the password without echo, and
/// replacing a password or `desk user remove` ends the user's sessions in the desk database.
#[test]
fn desk_logins_refuse_tls_without_users_read_passwords_unseen_and_end_sessions() {
    use flagship_desk::DeskStore;
    use flagship_desk::auth::SessionPolicy;

    let dir = tempfile::tempdir().unwrap();
    let plain = config(dir.path(), false);
    let text = std::fs::read_to_string(&plain).unwrap();
    let tls = dir.path().join("tls.toml");
    std::fs::write(&tls, format!("{text}\n[desk]\nsecure_cookie = true\n")).unwrap();
    let e = flagship_fails(&tls, &["desk", "--no-live", "--bind", "127.0.0.1:0"]);
    assert!(
        e.contains("desk.secure_cookie = true") && e.contains("no login method"),
        "{e}"
    );

    // A terminal: the password is asked for on it, and what is typed never shows.
    let users = dir.path().join("users.txt");
    let typed = "typed-on-a-terminal-123";
    let mut child = Command::new("script")
        .args(["-qec"])
        .arg(format!(
            "{} --config {} desk user add bo --users {}",
            env!("CARGO_BIN_EXE_flagship"),
            plain.display(),
            users.display()
        ))
        .arg("/dev/null")
        .env_remove("FLAGSHIP_DESK_PASSWORD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        while let Ok(n) = std::io::Read::read(&mut out, &mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !String::from_utf8_lossy(&seen).contains("password for bo") {
        assert!(std::time::Instant::now() < deadline, "no prompt: {seen:?}");
        if let Ok(b) = rx.recv_timeout(std::time::Duration::from_millis(100)) {
            seen.extend(b);
        }
    }
    // Echo goes off right after the prompt is written.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, format!("{typed}\r").as_bytes()).unwrap();
    let status = child.wait().unwrap();
    drop(stdin);
    while let Ok(b) = rx.recv_timeout(std::time::Duration::from_millis(500)) {
        seen.extend(b);
    }
    let seen = String::from_utf8_lossy(&seen);
    assert!(status.success(), "{seen}");
    assert!(seen.contains("desk: bo can log in"), "{seen}");
    assert!(!seen.contains(typed), "the password was echoed: {seen}");
    assert!(
        std::fs::read_to_string(&users)
            .unwrap()
            .starts_with("bo:agent:$argon2id$"),
        "a new user is an agent"
    );

    // Sessions end with a new password and with `user remove`.
    let db = dir.path().join("desk/desk.sqlite");
    let policy = SessionPolicy::default();
    let now = chrono::Utc::now().timestamp();
    let (id, _) = DeskStore::open(&db)
        .unwrap()
        .open_session("bo", &policy, now)
        .unwrap();
    let out = common::flagship_env(
        &plain,
        &[
            "desk",
            "user",
            "add",
            "bo",
            "--users",
            users.to_str().unwrap(),
        ],
        &[("FLAGSHIP_DESK_PASSWORD", "another-password-456")],
    );
    assert!(out.contains("1 open session ended"), "{out}");
    let mut store = DeskStore::open(&db).unwrap();
    assert!(store.session(&id, &policy, now).unwrap().is_none());
    // A role change ends the sessions too; a new password keeps the role.
    let (id, _) = store.open_session("bo", &policy, now).unwrap();
    drop(store);
    let out = flagship(
        &plain,
        &[
            "desk",
            "user",
            "role",
            "bo",
            "lead",
            "--users",
            users.to_str().unwrap(),
        ],
    );
    assert!(
        out.contains("bo is now a lead") && out.contains("1 open session ended"),
        "{out}"
    );
    assert!(
        std::fs::read_to_string(&users)
            .unwrap()
            .starts_with("bo:lead:$argon2id$")
    );
    let mut store = DeskStore::open(&db).unwrap();
    assert!(store.session(&id, &policy, now).unwrap().is_none());
    // The first responses by day and the day's summary, as Markdown.
    let report = flagship(&plain, &["desk", "report", "--days", "2"]);
    assert!(
        report.starts_with("# First responses by day (UTC; target 1 h 00 min)"),
        "{report}"
    );
    let summary = flagship(&plain, &["desk", "summary"]);
    assert!(summary.starts_with("# Daily summary — "), "{summary}");
    assert!(summary.contains("| posts seen |"), "{summary}");
    store.open_session("bo", &policy, now).unwrap();
    store.open_session("bo", &policy, now).unwrap();
    drop(store);
    let out = flagship(
        &plain,
        &[
            "desk",
            "user",
            "remove",
            "bo",
            "--users",
            users.to_str().unwrap(),
        ],
    );
    assert!(
        out.contains("bo removed") && out.contains("2 open sessions ended"),
        "{out}"
    );
    assert!(!std::fs::read_to_string(&users).unwrap().contains("bo:"));
    assert_eq!(DeskStore::open(&db).unwrap().sessions_of("bo").unwrap(), 0);
    let e = flagship_fails(
        &plain,
        &[
            "desk",
            "user",
            "remove",
            "bo",
            "--users",
            users.to_str().unwrap(),
        ],
    );
    assert!(e.contains("no user bo"), "{e}");
}
