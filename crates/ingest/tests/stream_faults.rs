//! The stream client against a local HTTP server that serves real recorded stream payloads
//! with keep-alive newlines and injects faults: a connection dropped mid-line, 429, 503, a
//! stall longer than the stall timeout, a malformed line, an operational-disconnect message,
//! and finally 401. Every tweet arrives exactly once, the reconnect waits follow X's schedule
//! (recorded on a virtual clock), malformed lines are quarantined with their byte offsets, and
//! the 401 ends the run with a clear error after everything received was written.

use std::time::Duration;

use flagship_ingest::sink::LocalSink;
use flagship_ingest::xstream::{XStream, XStreamConfig};
use flagship_store::storage::{Location, S3Options, Store};
use flagship_testkit::fixture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

enum Part {
    Bytes(Vec<u8>),
    Sleep(u64),
}

enum Step {
    Ok(Vec<Part>),
    Status(u16, &'static str),
}

/// Serves one scripted step per connection, in the order the client connects; each
/// connection runs in its own task, so a stalled one never holds up the next.
async fn serve(listener: tokio::net::TcpListener, steps: Vec<Step>) {
    let mut tasks = Vec::new();
    for step in steps {
        let (sock, _) = listener.accept().await.unwrap();
        tasks.push(tokio::spawn(answer(sock, step)));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

async fn answer(mut sock: tokio::net::TcpStream, step: Step) {
    let mut head = Vec::new();
    let mut b = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = sock.read(&mut b).await.unwrap();
        assert!(n > 0);
        head.extend_from_slice(&b[..n]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("get /2/tweets/search/stream?"), "{head}");
    assert!(head.contains("authorization: bearer test-token"), "{head}");
    assert!(head.contains("expansions=author_id"), "{head}");
    match step {
        Step::Status(code, reason) => {
            let _ = sock
                .write_all(
                    format!(
                        "HTTP/1.1 {code} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                    .as_bytes(),
                )
                .await;
        }
        Step::Ok(parts) => {
            let _ = sock
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
                .await;
            for p in parts {
                match p {
                    Part::Bytes(x) => {
                        if sock.write_all(&x).await.is_err() {
                            break;
                        }
                        let _ = sock.flush().await;
                    }
                    Part::Sleep(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                }
            }
        }
    }
    // Dropping the socket closes the connection.
}

#[tokio::test]
async fn faults_are_survived_and_every_tweet_arrives_once() {
    let text = std::fs::read(fixture("twitter-v2/streaming_output_with_error.jsonl")).unwrap();
    let lines: Vec<Vec<u8>> = text.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    assert_eq!(lines.len(), 8);
    let nl = |l: &[u8]| [l, b"\n"].concat();
    let half = lines[2][..lines[2].len() / 2].to_vec();
    let disconnect = br#"{"errors":[{"title":"operational-disconnect","disconnect_type":"UpstreamOperationalDisconnect","detail":"This stream has been disconnected upstream for operational reasons.","type":"https://api.twitter.com/2/problems/operational-disconnect"}]}"#.to_vec();
    let steps = vec![
        Step::Ok(vec![
            Part::Bytes(nl(&lines[0])),
            Part::Bytes(nl(&lines[1])),
            Part::Bytes(b"\r\n".to_vec()),
            Part::Bytes(half.clone()),
        ]),
        Step::Status(429, "Too Many Requests"),
        Step::Status(503, "Service Unavailable"),
        Step::Ok(vec![
            Part::Bytes(nl(&lines[2])),
            Part::Bytes(nl(&lines[1])),
            Part::Bytes(nl(&lines[3])),
            Part::Sleep(1500),
        ]),
        Step::Ok(vec![
            Part::Bytes(nl(&lines[4])),
            Part::Bytes(nl(&lines[7])),
            Part::Bytes(nl(&disconnect)),
            Part::Bytes(nl(&lines[5])),
            Part::Bytes(nl(&lines[6])),
        ]),
        Step::Status(401, "Unauthorized"),
    ];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(serve(listener, steps));

    let mut cfg = XStreamConfig::new(&base, "test-token".into());
    cfg.stall = Duration::from_millis(300);
    cfg.virtual_waits = true;
    let mut stream = XStream::new(cfg).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let open =
        |p: &str| Store::open(&Location::Local(dir.path().join(p)), &S3Options::default()).unwrap();
    let (raw, quarantine) = (open("raw"), open("quarantine"));
    let sink = LocalSink::new(raw.clone(), "kinesis", "twitter_delivery_stream");
    let totals = flagship_ingest::run(
        &mut stream,
        sink,
        &quarantine,
        "ingest.jsonl",
        &Default::default(),
        std::future::pending(),
        &|_| {},
    )
    .await
    .unwrap();
    server.await.unwrap();
    println!("{totals}");

    let err = totals.error.as_deref().unwrap();
    assert!(
        err.contains("HTTP 401 Unauthorized") && err.contains("bearer token"),
        "{err}"
    );
    assert_eq!(totals.stopped_by, flagship_core::Stop::Error);
    assert_eq!(totals.received, 7);
    assert_eq!(totals.duplicates, 1);
    assert_eq!(totals.keep_alives, 1);
    assert_eq!((totals.api_errors, totals.operational_disconnects), (1, 1));
    assert_eq!(totals.sink.sent, 7);
    assert_eq!(totals.source.stalls, 1);
    assert_eq!(totals.source.connections, 3);
    let ms: Vec<u128> = totals
        .source
        .waits
        .iter()
        .map(Duration::as_millis)
        .collect();
    // drop mid-line → network 250 ms; 429 → 60 s; 503 → 5 s; data resets; stall → 250 ms;
    // data resets; server closes → 250 ms; then 401 is fatal.
    assert_eq!(ms, [250, 60_000, 5_000, 250, 250]);

    // Every tweet exactly once in what the sink wrote (read as combine reads it).
    let mut report = flagship_platforms::jsonl::ReadReport::default();
    for e in raw.list("").await.unwrap() {
        assert!(
            flagship_core::layout::hour_of_key(&e.key).is_some(),
            "{}",
            e.key
        );
        report.read(&e.key, &raw.get(&e.key).await.unwrap(), None);
    }
    assert!(report.bad_lines.is_empty());
    let mut ids: Vec<String> = report.posts.iter().map(|t| t.id.clone()).collect();
    ids.sort();
    let mut expect = flagship_platforms::jsonl::ReadReport::default();
    expect.read("f", &text, None);
    let mut want: Vec<String> = expect.posts.iter().map(|t| t.id.clone()).collect();
    want.sort();
    assert_eq!(ids, want);
    assert!(report.posts.iter().all(|t| t.received_at.is_some()));

    // The cut line and the malformed line, with their offsets in their connections.
    let q = String::from_utf8(quarantine.get("ingest.jsonl").await.unwrap().to_vec()).unwrap();
    let bad: Vec<serde_json::Value> = q
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(bad.len(), 2);
    assert_eq!(bad[0]["source"], "stream#1");
    assert_eq!(
        bad[0]["offset"],
        (lines[0].len() + 1 + lines[1].len() + 1 + 2) as u64
    );
    assert_eq!(bad[0]["raw"], String::from_utf8_lossy(&half).as_ref());
    assert_eq!(bad[1]["source"], "stream#3");
    assert_eq!(bad[1]["offset"], (lines[4].len() + 1) as u64);
}
