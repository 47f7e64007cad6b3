//! `--metrics ADDR` through the binary: `watch` and `ingest run` serve their figures at
//! `/metrics` while they run; a scrape, parsed by a Prometheus text parser
//! (`prometheus-parse`), agrees with the totals each prints at the end. A non-loopback
//! address is refused.
//!
//! The replay is the Mastodon recording with every status at one instant, then one status a
//! day later: paced (`--speed 1`), the first 50 are handed out at once and the last is held
//! back for a minute, so the figures settle and stay while the run goes on until
//! `--duration` stops it (the held status never read).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flagship_testkit::fixture;
use flagship_testkit::prometheus::{Scrape, Value, parse, value};

mod common;
use common::{flagship_fails, linear_model};

/// The everyday profile (the recorded posts are not about a space mission).
fn config(dir: &Path) -> PathBuf {
    let cfg = dir.join("flagship.toml");
    std::fs::write(
        &cfg,
        r#"[mission.stream]
track = ["the", "a", "and", "to", "is", "of", "in", "for", "on", "with", "de", "it", "you", "this", "i"]

[mission.filter]
min_words = 1
wanted = {}
unwanted = {}

[storage]
raw = "raw"
models = "models"
reports = "reports"
quarantine = "quarantine"
"#,
    )
    .unwrap();
    cfg
}

/// The Mastodon recording, every status at one instant, then one more (a fresh id) a day
/// later.
fn held_replay(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(fixture("mastodon/public_timeline_statuses.jsonl")).unwrap();
    let mut lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for l in &mut lines {
        l["status"]["created_at"] = "2025-07-17T20:00:00.000Z".into();
    }
    let mut late = lines[0].clone();
    late["status"]["id"] = "999999999999999999".into();
    late["status"]["created_at"] = "2025-07-18T20:00:00.000Z".into();
    lines.push(late);
    let path = dir.join("held.jsonl");
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, body).unwrap();
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET /metrics`: the answer's status line, headers and body, or `None` while nothing
/// listens.
fn scrape(port: u16) -> Option<(String, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    Some((head.to_owned(), body.to_owned()))
}

/// Runs `flagship ARGS` (it serves `/metrics` on `port`) and scrapes it until two scrapes a
/// second apart are the same: the figures have settled. Returns that scrape and, after the
/// command ended by itself, its stdout.
fn settled_scrape(cfg: &Path, args: &[&str], port: u16) -> (String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flagship"))
        .env("RUST_BACKTRACE", "0")
        .arg("--config")
        .arg(cfg)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut last: Option<String> = None;
    let settled = loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no settled scrape in a minute: {last:?}"
        );
        std::thread::sleep(Duration::from_millis(1000));
        let Some((head, body)) = scrape(port) else {
            assert!(child.try_wait().unwrap().is_none(), "flagship ended early");
            continue;
        };
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4"),
            "{head}"
        );
        let seen = value(
            &parse(&body),
            "flagship_posts_seen_total",
            &[("platform", "mastodon")],
        );
        if seen > 0.0 && last.as_deref() == Some(&body) {
            break body;
        }
        last = Some(body);
    };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The listener stopped with the command.
    assert!(scrape(port).is_none());
    (settled, stdout)
}

/// Checks a histogram family as written: buckets cumulative, the last `+Inf` and equal to
/// `_count`.
fn histogram(s: &Scrape, name: &str) -> (Vec<(f64, f64)>, f64) {
    let h = s
        .samples
        .iter()
        .find(|x| x.metric == name)
        .unwrap_or_else(|| panic!("no {name}"));
    let Value::Histogram(buckets) = &h.value else {
        panic!("{name}: {:?}", h.value)
    };
    let b: Vec<(f64, f64)> = buckets.iter().map(|c| (c.less_than, c.count)).collect();
    assert!(
        b.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
        "{b:?}"
    );
    assert_eq!(b.last().unwrap().0, f64::INFINITY);
    let count = value(s, &format!("{name}_count"), &[]);
    assert_eq!(b.last().unwrap().1, count);
    (b, count)
}

#[test]
fn watch_serves_its_figures_while_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let model = linear_model(dir.path(), &cfg);
    let replay = held_replay(dir.path());
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let out = dir.path().join("flagged.jsonl");
    let (text, stdout) = settled_scrape(
        &cfg,
        &[
            "watch",
            "--model",
            &model,
            "--source",
            "mastodon",
            "--replay",
            replay.to_str().unwrap(),
            "--speed",
            "1",
            "--duration",
            "8s",
            "--out",
            out.to_str().unwrap(),
            "--metrics",
            &addr,
        ],
        port,
    );
    println!("{text}");
    assert!(stdout.contains(&format!("watch: metrics at http://{addr}/metrics")));
    let t: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    println!("{t}");
    assert_eq!(t["stopped_by"], "duration", "{t}");
    let s = parse(&text);
    let n = |k: &str| t[k].as_u64().unwrap() as f64;
    let m = [("platform", "mastodon")];
    assert_eq!(
        n("seen") + n("unmatched"),
        50.0,
        "the held status never read"
    );
    for (metric, total) in [
        ("flagship_posts_seen_total", "seen"),
        ("flagship_posts_kept_total", "kept"),
        ("flagship_posts_flagged_total", "flagged"),
        ("flagship_posts_explained_total", "explained"),
        ("flagship_posts_unexplained_total", "unexplained"),
    ] {
        assert_eq!(value(&s, metric, &m), n(total), "{metric}");
        assert_eq!(value(&s, metric, &[("platform", "bluesky")]), 0.0);
    }
    assert!(n("flagged") > 0.0 && n("explained") == n("flagged"), "{t}");
    for (reason, total) in [
        ("duplicate", "duplicates"),
        ("off_track", "unmatched"),
        ("malformed", "malformed"),
    ] {
        let labels = [("platform", "mastodon"), ("reason", reason)];
        assert_eq!(value(&s, "flagship_posts_dropped_total", &labels), n(total));
    }
    assert_eq!(value(&s, "flagship_live_batches_total", &[]), n("batches"));
    assert_eq!(
        value(&s, "flagship_source_reconnects_total", &[]),
        n("reconnects")
    );
    // Every post seen has its latency; the largest is within the last finite bucket or +Inf.
    let (buckets, count) = histogram(&s, "flagship_live_latency_seconds");
    assert_eq!(count, n("seen"));
    let max_s = t["latency_max_ms"].as_f64().unwrap() / 1e3;
    let first_full = buckets.iter().find(|(_, c)| *c == count).unwrap().0;
    assert!(first_full >= max_s, "{buckets:?} {max_s}");
    let sum = value(&s, "flagship_live_latency_seconds_sum", &[]);
    assert!(sum > 0.0 && sum <= max_s * count + 1e-9, "{sum}");
    // The live unit's families only.
    assert!(!text.contains("flagship_sink_"), "{text}");
}

#[test]
fn ingest_run_serves_its_figures_while_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let replay = held_replay(dir.path());
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let (text, stdout) = settled_scrape(
        &cfg,
        &[
            "ingest",
            "run",
            "--source",
            "mastodon",
            "--replay",
            replay.to_str().unwrap(),
            "--speed",
            "1",
            "--duration",
            "6s",
            "--sink",
            "local",
            "--buffer-interval",
            "1s",
            "--metrics",
            &addr,
        ],
        port,
    );
    println!("{text}\n{stdout}");
    assert!(stdout.contains(&format!("ingest: metrics at http://{addr}/metrics")));
    // "ingest: N tweets received (D duplicates dropped, U not matching the track terms), S
    // sent in C calls (R retried, P spilled, L lost), Q malformed lines quarantined, …, K
    // reconnects; stopped by …"
    let line = stdout
        .lines()
        .find(|l| l.contains(" tweets received"))
        .unwrap();
    // (a count the line leaves out when it is 0 reads 0)
    let before = |what: &str| -> f64 {
        if !line.contains(what) {
            return 0.0;
        }
        line.split(what)
            .next()
            .and_then(|h| h.rsplit([' ', '(']).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{what} in {line}"))
    };
    assert!(line.contains("stopped by duration"), "{line}");
    let s = parse(&text);
    let m = [("platform", "mastodon")];
    assert_eq!(
        before(" tweets received") + before(" not matching the track terms"),
        50.0
    );
    assert_eq!(
        value(&s, "flagship_posts_seen_total", &m),
        before(" tweets received")
    );
    for (reason, what) in [
        ("duplicate", " duplicates dropped"),
        ("off_track", " not matching the track terms"),
        ("malformed", " malformed lines quarantined"),
    ] {
        let labels = [("platform", "mastodon"), ("reason", reason)];
        assert_eq!(
            value(&s, "flagship_posts_dropped_total", &labels),
            before(what)
        );
    }
    for (metric, what) in [
        ("flagship_sink_records_sent_total", " sent in"),
        ("flagship_sink_records_retried_total", " retried"),
        ("flagship_sink_records_spilled_total", " spilled"),
        ("flagship_source_reconnects_total", " reconnects"),
    ] {
        assert_eq!(value(&s, metric, &[]), before(what), "{metric}");
    }
    assert!(before(" sent in") > 0.0);
    assert!(value(&s, "flagship_ingest_queue_depth", &[]) >= 0.0);
    // The ingest unit's families only.
    assert!(!text.contains("flagship_live_"), "{text}");
}

#[test]
fn a_metrics_address_off_loopback_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let replay = held_replay(dir.path());
    let err = flagship_fails(
        &cfg,
        &[
            "ingest",
            "run",
            "--source",
            "mastodon",
            "--replay",
            replay.to_str().unwrap(),
            "--metrics",
            "0.0.0.0:9464",
        ],
    );
    assert!(err.contains("not a loopback address"), "{err}");
}
