//! The free live sources against local servers serving real recorded payloads: a WebSocket
//! server speaking Jetstream (the 152 events of a live capture, honouring `cursor`), and an
//! HTTP server speaking Mastodon's streaming (SSE) and timeline (REST) APIs with the 50 real
//! statuses. Each run goes through `flagship_ingest::run` into the local Firehose layout, and
//! what landed there is read back: a dropped connection, a restart and a gap lose nothing
//! and repeat nothing.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flagship_ingest::jetstream::{Jetstream, JetstreamConfig};
use flagship_ingest::mastodon::{Instance, MastodonConfig, MastodonStream};
use flagship_ingest::sink::LocalSink;
use flagship_ingest::{Options, Totals};
use flagship_store::storage::{Location, S3Options, Store};
use flagship_testkit::fixture;

fn store(dir: &Path) -> Store {
    Store::open(&Location::Local(dir.to_owned()), &S3Options::default()).unwrap()
}

/// Post ids written to the local layout under `dir`, with how often each came.
fn landed(dir: &Path) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    // The sink's objects (its temporary files, dot-named, left out).
    for f in flagship_store::mirror::files_under(dir).unwrap() {
        let text = std::fs::read(dir.join(f)).unwrap();
        for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let p = flagship_platforms::jsonl::parse_record(line, None).unwrap();
            for t in p.posts {
                *out.entry(t.id).or_default() += 1;
            }
        }
    }
    out
}

/// Runs `source` into the local layout at `out`; the totals and the quarantined lines.
async fn ingest_q(
    source: &mut dyn flagship_ingest::source::PostSource,
    out: &Path,
    opts: Options,
) -> (Totals, Vec<serde_json::Value>) {
    let sink = LocalSink::new(store(out), "", "s");
    let q = tempfile::tempdir().unwrap();
    let t = flagship_ingest::run(
        source,
        sink,
        &store(q.path()),
        "q.jsonl",
        &opts,
        std::future::pending(),
        &|_| {},
    )
    .await
    .unwrap();
    let bad = std::fs::read_to_string(q.path().join("q.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (t, bad)
}

async fn ingest(
    source: &mut dyn flagship_ingest::source::PostSource,
    out: &Path,
    opts: Options,
) -> Totals {
    ingest_q(source, out, opts).await.0
}

// ---------------------------------------------------------------- Jetstream

struct FakeJetstream {
    port: u16,
    /// The `cursor` of each connection (`None`: live edge).
    cursors: Arc<Mutex<Vec<Option<u64>>>>,
}

/// Serves the capture: each connection sends the events with `time_us >= cursor` in file
/// order; the first `drop_after` events of the first connection only, then it is cut.
async fn fake_jetstream(drop_after: Option<usize>) -> FakeJetstream {
    let events: Vec<(u64, String)> =
        std::fs::read_to_string(fixture("bluesky-jetstream/capture_v1.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (v["time_us"].as_u64().unwrap(), l.to_owned())
            })
            .collect();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let cursors = Arc::new(Mutex::new(Vec::new()));
    let seen = cursors.clone();
    tokio::spawn(async move {
        let mut n = 0;
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            n += 1;
            let events = events.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                use futures::SinkExt;
                use tokio_tungstenite::tungstenite::Message;
                let cursor = Arc::new(Mutex::new(None));
                let c = cursor.clone();
                #[allow(clippy::result_large_err)] // the callback's type is tungstenite's
                let ws = tokio_tungstenite::accept_hdr_async(
                    tcp,
                    move |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
                          resp| {
                        let q = req.uri().query().unwrap_or("");
                        assert!(q.contains("wantedCollections=app.bsky.feed.post"), "{q}");
                        *c.lock().unwrap() = q
                            .split('&')
                            .find_map(|kv| kv.strip_prefix("cursor="))
                            .map(|v| v.parse::<u64>().unwrap());
                        Ok(resp)
                    },
                )
                .await
                .unwrap();
                let cursor = *cursor.lock().unwrap();
                seen.lock().unwrap().push(cursor);
                let (mut tx, _rx) = futures::StreamExt::split(ws);
                let mut sent = 0;
                for (t, e) in &events {
                    if cursor.is_some_and(|c| *t < c) {
                        continue;
                    }
                    if n == 1 && drop_after.is_some_and(|d| sent >= d) {
                        return; // the connection drops mid-stream
                    }
                    if n == 1 && sent == 30 {
                        // A corrupt frame: quarantined with where it was, never sent.
                        tx.send(Message::text("{\"did\":\"did:plc:x\",\"time_us\":"))
                            .await
                            .unwrap();
                    }
                    tx.send(Message::text(e.clone())).await.unwrap();
                    sent += 1;
                }
                // Then the live edge: nothing more, the connection stays open.
                tokio::time::sleep(Duration::from_secs(3600)).await;
            });
        }
    });
    FakeJetstream { port, cursors }
}

fn jetstream(fake: &FakeJetstream, cursor: Option<&Path>) -> Jetstream {
    let mut cfg = JetstreamConfig::new(vec![
        // A dead endpoint first: failover moves on to the next.
        "ws://127.0.0.1:9/subscribe".into(),
        format!("ws://127.0.0.1:{}/subscribe", fake.port),
    ]);
    cfg.cursor_file = cursor.map(Path::to_owned);
    Jetstream::new(cfg).unwrap()
}

fn quick(duration: Duration) -> Options {
    Options {
        duration: Some(duration),
        ..Options::default()
    }
}

#[tokio::test]
async fn jetstream_reconnects_at_the_cursor_and_repeats_nothing() {
    let fake = fake_jetstream(Some(60)).await;
    let out = tempfile::tempdir().unwrap();
    let mut source = jetstream(&fake, None);
    let (t, bad) = ingest_q(&mut source, out.path(), quick(Duration::from_secs(6))).await;
    let got = landed(out.path());
    println!("{t}\noverlap dropped: {}", source.overlap_dropped);
    // 17 posts created in the capture, each exactly once; the deletion and the 134 other
    // events counted, not sent.
    assert_eq!(got.len(), 17, "{t}");
    assert!(got.values().all(|&n| n == 1), "{got:?}");
    assert_eq!((t.received, t.lost, t.quarantined), (17, 0, 1), "{t}");
    // The corrupt frame: which connection, which message, its byte offset there.
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0]["source"], "jetstream#1", "{}", bad[0]);
    assert_eq!(bad[0]["line"], 31, "{}", bad[0]);
    assert!(bad[0]["offset"].as_u64().unwrap() > 0, "{}", bad[0]);
    assert!(t.deletions >= 1 && t.other_events >= 134, "{t}");
    // The second connection resumed 5 s before the last event handled; its repeats of posts
    // already handled were dropped by id.
    let cursors = fake.cursors.lock().unwrap().clone();
    assert_eq!(cursors.len(), 2, "{cursors:?}");
    assert!(cursors[0].is_none() && cursors[1].is_some(), "{cursors:?}");
    assert!(source.overlap_dropped > 0);
    assert_eq!(t.source.reconnects, 1, "{t}");
    // The dead endpoint was tried and left.
    assert!(t.source.network_errors >= 1, "{t}");
}

#[tokio::test]
async fn jetstream_restart_resumes_from_the_saved_point() {
    let fake = fake_jetstream(None).await;
    let (out, state) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cursor = state.path().join("cursor.json");
    let mut first = jetstream(&fake, Some(&cursor));
    let opts = Options {
        max_posts: Some(8),
        ..Options::default()
    };
    let t1 = ingest(&mut first, out.path(), opts).await;
    assert_eq!(t1.received, 8, "{t1}");
    let saved: flagship_ingest::jetstream::Cursor =
        serde_json::from_slice(&std::fs::read(&cursor).unwrap()).unwrap();
    assert!(saved.clean && saved.ids.len() >= 8, "{saved:?}");
    drop(first);
    // A new process: it reads the point, resumes 5 s before it, drops the 8 it had.
    let mut second = jetstream(&fake, Some(&cursor));
    let t2 = ingest(&mut second, out.path(), quick(Duration::from_secs(3))).await;
    let got = landed(out.path());
    println!(
        "first: {t1}\nsecond: {t2}\noverlap dropped: {}",
        second.overlap_dropped
    );
    assert_eq!(got.len(), 17);
    assert!(got.values().all(|&n| n == 1), "{got:?}");
    assert_eq!(t1.received + t2.received, 17);
    assert_eq!(second.overlap_dropped, 8);
    let cursors = fake.cursors.lock().unwrap().clone();
    // The dead endpoint listed first failed, so the working one was reached by a switch:
    // the rewind is the failover one (instances' clocks differ), the repeats still dropped.
    assert_eq!(
        cursors.last().copied().flatten(),
        Some(saved.time_us - flagship_ingest::jetstream::FAILOVER_REWIND.as_micros() as u64)
    );
}

// ---------------------------------------------------------------- Mastodon

/// The 50 real statuses, oldest first (Mastodon ids grow with time).
fn statuses() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> =
        std::fs::read_to_string(fixture("mastodon/public_timeline_statuses.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let s = &v["status"];
                (s["id"].as_str().unwrap().to_owned(), s.to_string())
            })
            .collect();
    v.sort_by(|a, b| (a.0.len(), &a.0).cmp(&(b.0.len(), &b.0)));
    v
}

struct FakeMastodon {
    port: u16,
    streams: Arc<AtomicUsize>,
    rest_calls: Arc<Mutex<Vec<String>>>,
}

/// Connection 1 streams statuses 0..20 (with heartbeats, a delete, a `status.update` and
/// a notification), then dies half-way through status 20's event. Statuses 20..30 are
/// posted while it is away: only the REST timeline has them (paged 4 at a time, the first
/// page answering with its rate limit spent). Connection 2 streams 30..50 and stays open.
fn fake_mastodon() -> FakeMastodon {
    let all = statuses();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let streams = Arc::new(AtomicUsize::new(0));
    let rest_calls = Arc::new(Mutex::new(Vec::new()));
    let (s2, r2) = (streams.clone(), rest_calls.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (all, streams, rest) = (all.clone(), s2.clone(), r2.clone());
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                let mut request = String::new();
                reader.read_line(&mut request).unwrap();
                let mut auth = None;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap() == 0 || h.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("authorization:") {
                        auth = Some(v.trim().to_owned());
                    }
                }
                assert_eq!(auth.as_deref(), Some("bearer t0ken"), "{request}");
                let path = request.split(' ').nth(1).unwrap().to_owned();
                if path.starts_with("/api/v1/streaming/hashtag?tag=jwst") {
                    let n = streams.fetch_add(1, Ordering::SeqCst) + 1;
                    write!(
                        conn,
                        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n:)\n\n"
                    )
                    .unwrap();
                    let event = |conn: &mut std::net::TcpStream, name: &str, data: &str| {
                        write!(conn, "event: {name}\ndata: {data}\n\n").unwrap();
                        conn.flush().unwrap();
                    };
                    let range = if n == 1 { 0..20 } else { 30..50 };
                    for (i, (_, s)) in all[range].iter().enumerate() {
                        event(&mut conn, "update", s);
                        if i % 7 == 0 {
                            write!(conn, ":thump\n\n").unwrap();
                        }
                    }
                    if n == 1 {
                        event(&mut conn, "delete", "109999");
                        event(&mut conn, "status.update", &all[3].1);
                        event(&mut conn, "notification", "{\"id\":\"1\"}");
                        // A corrupt status: quarantined, never sent.
                        event(&mut conn, "update", "{\"id\": \"12\", \"uri\": 7}");
                        // Cut half-way through an event: never delivered as one.
                        let half = &all[20].1[..all[20].1.len() / 2];
                        write!(conn, "event: update\ndata: {half}").unwrap();
                        return;
                    }
                    std::thread::sleep(Duration::from_secs(3600));
                } else if let Some(q) = path.strip_prefix("/api/v1/timelines/tag/jwst?") {
                    rest.lock().unwrap().push(q.to_owned());
                    let min_id = q
                        .split('&')
                        .find_map(|kv| kv.strip_prefix("min_id="))
                        .unwrap();
                    let after = all.iter().position(|(id, _)| id == min_id).unwrap() + 1;
                    // Posted while away: up to status 30; a page holds 4, newest first.
                    let page: Vec<&str> = all[after.min(30)..(after + 4).min(30)]
                        .iter()
                        .rev()
                        .map(|(_, s)| s.as_str())
                        .collect();
                    let body = format!("[{}]", page.join(","));
                    let first = rest.lock().unwrap().len() == 1;
                    let limits = if first {
                        let reset = (chrono::Utc::now() + chrono::Duration::seconds(1))
                            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                        format!("X-RateLimit-Remaining: 0\r\nX-RateLimit-Reset: {reset}\r\n")
                    } else {
                        "X-RateLimit-Remaining: 250\r\n".to_owned()
                    };
                    write!(
                        conn,
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{limits}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .unwrap();
                } else {
                    write!(conn, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n").unwrap();
                }
            });
        }
    });
    FakeMastodon {
        port,
        streams,
        rest_calls,
    }
}

#[tokio::test]
async fn mastodon_backfills_the_gap_after_a_reconnect() {
    let fake = fake_mastodon();
    let out = tempfile::tempdir().unwrap();
    let mut cfg = MastodonConfig::new(
        &[Instance::new(
            &format!("http://127.0.0.1:{}", fake.port),
            Some("t0ken".into()),
        )],
        &["jwst".into()],
        false,
    );
    cfg.stall = Duration::from_secs(30);
    let mut source = MastodonStream::start(cfg).unwrap();
    let (t, bad) = ingest_q(&mut source, out.path(), quick(Duration::from_secs(6))).await;
    let got = landed(out.path());
    let calls = fake.rest_calls.lock().unwrap().clone();
    println!("{t}\nREST calls: {calls:?}");
    // All 50 statuses, each once: 0..20 streamed, 20..30 backfilled, 30..50 streamed.
    assert_eq!(got.len(), 50, "{t}");
    assert!(got.values().all(|&n| n == 1), "{got:?}");
    assert_eq!(fake.streams.load(Ordering::SeqCst), 2);
    // The edit repeats a status already had: a duplicate, dropped.
    assert_eq!((t.received, t.duplicates, t.lost), (50, 1, 0), "{t}");
    assert_eq!(
        (t.deletions, t.other_events, t.quarantined),
        (1, 1, 1),
        "{t}"
    );
    assert!(
        bad[0]["source"].as_str().unwrap().ends_with("#jwst#1")
            && bad[0]["error"].as_str().unwrap().contains("uri"),
        "{}",
        bad[0]
    );
    // Paged forward from the newest status of the first connection, until an empty page.
    let all = statuses();
    assert!(
        calls[0].contains(&format!("min_id={}", all[19].0)),
        "{calls:?}"
    );
    assert!(calls.len() >= 4, "{calls:?}");
    for id in got.keys() {
        assert!(id.starts_with("https://"), "{id}");
    }
}

/// Both at once through `Merged`: Jetstream's failover and reconnect and Mastodon's
/// reconnect-and-backfill run while the other source's lines win races — nothing cancelled,
/// every post of both lands once.
#[tokio::test]
async fn merged_sources_lose_nothing() {
    let jet = fake_jetstream(Some(60)).await;
    let masto = fake_mastodon();
    let out = tempfile::tempdir().unwrap();
    let mut cfg = MastodonConfig::new(
        &[Instance::new(
            &format!("http://127.0.0.1:{}", masto.port),
            Some("t0ken".into()),
        )],
        &["jwst".into()],
        false,
    );
    cfg.stall = Duration::from_secs(30);
    let mut merged = flagship_ingest::source::Merged::new(vec![
        Box::new(jetstream(&jet, None)),
        Box::new(MastodonStream::start(cfg).unwrap()),
    ]);
    let t = ingest(&mut merged, out.path(), quick(Duration::from_secs(8))).await;
    let got = landed(out.path());
    println!("{t}");
    let bluesky = got.keys().filter(|k| k.starts_with("at://")).count();
    assert_eq!((bluesky, got.len() - bluesky), (17, 50), "{t}");
    assert!(got.values().all(|&n| n == 1), "{got:?}");
    assert_eq!((t.received, t.lost), (67, 0), "{t}");
    assert_eq!(t.source.reconnects, 2, "{t}");
}

/// Each request an instance saw: its path and its `Authorization` header.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// A Mastodon instance that records each request's path and `Authorization` header: the
/// `jwst` stream sends one status and stays open; `moved` answers a redirect to the instance
/// at `redirect_to`.
fn recording_instance(redirect_to: Option<u16>) -> (u16, Seen) {
    let status = statuses().remove(0).1;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (log, status) = (log.clone(), status.clone());
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                let mut request = String::new();
                reader.read_line(&mut request).unwrap();
                let mut auth = None;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap() == 0 || h.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("authorization:") {
                        auth = Some(v.trim().to_owned());
                    }
                }
                let path = request.split(' ').nth(1).unwrap_or_default().to_owned();
                log.lock().unwrap().push((path.clone(), auth));
                match (path.contains("tag=moved"), redirect_to) {
                    (true, Some(to)) => write!(
                        conn,
                        "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{to}/api/v1/streaming/hashtag?tag=jwst\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                    .unwrap(),
                    _ => {
                        write!(
                            conn,
                            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\nevent: update\ndata: {status}\n\n"
                        )
                        .unwrap();
                        conn.flush().unwrap();
                        std::thread::sleep(Duration::from_secs(3600));
                    }
                }
            });
        }
    });
    (port, seen)
}

/// Two instances, two tokens: each instance sees only its own, a redirect from one to the
/// other carries none, an instance without a token gets no `Authorization`, and a plain-HTTP
/// instance off this machine is refused before anything is sent.
#[tokio::test]
async fn each_mastodon_instance_gets_only_its_own_token() {
    let (b_port, b_seen) = recording_instance(None);
    let (a_port, a_seen) = recording_instance(Some(b_port));
    let (c_port, c_seen) = recording_instance(None);
    let cfg = MastodonConfig::new(
        &[
            Instance::new(
                &format!("http://127.0.0.1:{a_port}"),
                Some("token-a".into()),
            ),
            Instance::new(
                &format!("http://127.0.0.1:{b_port}/"),
                Some("token-b".into()),
            ),
            Instance::new(&format!("http://localhost:{c_port}"), None),
        ],
        &["jwst".into(), "moved".into()],
        false,
    );
    let source = MastodonStream::start(cfg).unwrap();
    // Every timeline has connected: A's two (one redirected to B), B's two and C's two.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while (
        a_seen.lock().unwrap().len(),
        b_seen.lock().unwrap().len(),
        c_seen.lock().unwrap().len(),
    ) < (2, 3, 2)
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(source);
    let (a, b, c) = (
        a_seen.lock().unwrap().clone(),
        b_seen.lock().unwrap().clone(),
        c_seen.lock().unwrap().clone(),
    );
    println!("A: {a:?}\nB: {b:?}\nC: {c:?}");
    assert!(a.iter().any(|(p, _)| p.contains("tag=moved")), "{a:?}");
    assert!(
        a.iter()
            .all(|(_, t)| t.as_deref() == Some("bearer token-a")),
        "{a:?}"
    );
    // B: its own two streams with its token, and A's redirect without any.
    assert_eq!(b.len(), 3, "{b:?}");
    assert!(
        b.iter()
            .all(|(_, t)| t.as_deref() != Some("bearer token-a")),
        "A's token reached B: {b:?}"
    );
    assert_eq!(
        b.iter()
            .filter(|(_, t)| t.as_deref() == Some("bearer token-b"))
            .count(),
        2,
        "{b:?}"
    );
    assert!(c.iter().all(|(_, t)| t.is_none()), "{c:?}");

    let refused = MastodonStream::start(MastodonConfig::new(
        &[
            Instance::new(&format!("http://127.0.0.1:{a_port}"), None),
            Instance::new("http://mastodon.example", Some("token-x".into())),
        ],
        &["jwst".into()],
        false,
    ));
    let e = refused.err().expect("refused").to_string();
    assert!(e.contains("http://mastodon.example"), "{e}");
}
