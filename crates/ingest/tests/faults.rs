//! Fault injection against the Firehose sink: a local fake Firehose
//! (`flagship_ingest::testing::FakeFirehose`) scripted with what moto cannot do — per-record
//! `ErrorCode`s, 5xx storms, hangs, answers with fewer responses than records, an outage —
//! with replays of real recorded tweets. For each case: every tweet id is either delivered or
//! in the spill file, none twice, none lost, and the counts say so.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use flagship_ingest::firehose::FirehoseSink;
use flagship_ingest::source::Replay;
use flagship_ingest::testing::{Call, FakeFirehose};
use flagship_ingest::{Options, Totals};
use flagship_store::storage::{Location, S3Options, Store};
use flagship_testkit::fixture;

fn aws_env() {
    // SAFETY: set before any thread reads them; every test sets the same values.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    }
}

/// Post ids in JSON lines (one record per line).
fn ids(lines: impl IntoIterator<Item = Vec<u8>>) -> Vec<String> {
    lines
        .into_iter()
        .flat_map(|r| {
            r.split(|&b| b == b'\n')
                .filter(|l| !l.trim_ascii().is_empty())
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_slice(l).unwrap();
                    v["data"]["id"].as_str().unwrap().to_owned()
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn spilled(path: &Path) -> Vec<String> {
    match std::fs::read(path) {
        Ok(b) => ids([b]),
        Err(_) => Vec::new(),
    }
}

/// Every received id delivered or spilled, exactly once overall, and the counts agree.
fn accounted(t: &Totals, fake: &FakeFirehose, spill: &Path) -> (usize, usize) {
    let delivered = ids(fake.accepted());
    let spilled = spilled(spill);
    let mut all: BTreeMap<&str, usize> = BTreeMap::new();
    for id in delivered.iter().chain(&spilled) {
        *all.entry(id).or_default() += 1;
    }
    let twice: Vec<_> = all.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "ids delivered or spilled twice: {twice:?}"
    );
    assert_eq!(all.len() as u64, t.received, "{t}");
    assert_eq!(t.sink.sent as usize, delivered.len(), "{t}");
    assert_eq!(t.sink.spilled as usize, spilled.len(), "{t}");
    assert_eq!(t.lost, 0, "{t}");
    (delivered.len(), spilled.len())
}

async fn replay_into(
    fake: &FakeFirehose,
    files: &Path,
    spill: &Path,
    opts: &Options,
    stop: impl std::future::Future<Output = ()>,
    tune: impl FnOnce(FirehoseSink) -> FirehoseSink,
) -> Totals {
    aws_env();
    let dir = tempfile::tempdir().unwrap();
    let q = Store::open(&Location::Local(dir.path().into()), &S3Options::default()).unwrap();
    let client = FirehoseSink::client("us-east-1", Some(&fake.endpoint())).await;
    let sink = tune(FirehoseSink::new(client, "s", spill.to_owned()));
    let mut replay = Replay::new(Replay::files_of(files).unwrap(), None);
    flagship_ingest::run(&mut replay, sink, &q, "q.jsonl", opts, stop, &|_| {})
        .await
        .unwrap()
}

#[tokio::test]
async fn record_errors_5xx_hangs_and_partial_answers_lose_nothing() {
    let fake = FakeFirehose::start(vec![
        Call::Status(500),
        Call::RejectEvery(3),
        Call::Partial,
        Call::Hang(Duration::from_millis(600)),
        Call::Status(429),
        Call::RejectEvery(2),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let spill = dir.path().join("spill.jsonl");
    let t = replay_into(
        &fake,
        &fixture("twitter-v2"),
        &spill,
        &Options::default(),
        std::future::pending(),
        |s| {
            s.with_retries(8, Duration::from_millis(10))
                .with_call_timeout(Duration::from_millis(300))
        },
    )
    .await;
    println!("{t}");
    let (delivered, spilled) = accounted(&t, &fake, &spill);
    // Every fault was retried through: all delivered, nothing spilled.
    assert_eq!((delivered, spilled), (t.received as usize, 0));
    assert!(t.sink.retried > 0, "{t}");
    assert!(fake.calls() >= 7, "{} calls", fake.calls());
}

#[tokio::test]
async fn outage_then_stop_spills_everything_left_within_the_drain_deadline() {
    // Firehose is down for the whole run; a stop comes while the queue is full and a batch
    // is being retried. The drain may last 2 s; then everything left is spilled.
    let fake = FakeFirehose::start(vec![]);
    fake.down_for(Duration::from_secs(3600));
    let dir = tempfile::tempdir().unwrap();
    let spill = dir.path().join("spill.jsonl");
    let opts = Options {
        queue: 1000,
        drain_timeout: Duration::from_secs(2),
        ..Options::default()
    };
    let started = Instant::now();
    let stop = tokio::time::sleep(Duration::from_millis(1500));
    let t = replay_into(
        &fake,
        &fixture("demo/stream.jsonl.gz"),
        &spill,
        &opts,
        stop,
        |s| s.with_retries(6, Duration::from_millis(200)),
    )
    .await;
    let took = started.elapsed();
    println!("{t} — {took:?}");
    assert_eq!(t.stopped_by, flagship_core::Stop::Signal);
    let (delivered, spilled) = accounted(&t, &fake, &spill);
    assert_eq!(delivered, 0);
    assert!(spilled > 500, "{spilled} spilled");
    // Stop at 1.5 s + drain 2 s + one spill: far inside a 90 s TimeoutStopSec.
    assert!(took < Duration::from_secs(8), "{took:?}");
}

#[tokio::test]
async fn firehose_back_after_an_outage_takes_the_rest() {
    let fake = FakeFirehose::start(vec![]);
    fake.down_for(Duration::from_millis(800));
    let dir = tempfile::tempdir().unwrap();
    let spill = dir.path().join("spill.jsonl");
    let t = replay_into(
        &fake,
        &fixture("twitter-v2"),
        &spill,
        &Options::default(),
        std::future::pending(),
        |s| s.with_retries(10, Duration::from_millis(100)),
    )
    .await;
    println!("{t}");
    let (delivered, spilled) = accounted(&t, &fake, &spill);
    assert_eq!((delivered, spilled), (t.received as usize, 0));
    // Batches stay full after the outage (the timer starts when a batch opens, missed ticks
    // are not replayed in a burst): the tweets go in a few calls, not hundreds of tiny ones.
    assert!(t.sink.calls <= 20, "{} calls", t.sink.calls);
}

#[tokio::test]
async fn a_two_member_gzip_replay_is_read_whole() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("two.jsonl.gz");
    let mut bytes = Vec::new();
    let mut expect = BTreeSet::new();
    for name in ["kpop.jsonl", "brexit.jsonl"] {
        let text = std::fs::read(fixture(&format!("twitter-v2/{name}"))).unwrap();
        let mut r = flagship_platforms::jsonl::ReadReport::default();
        r.read(name, &text, None);
        expect.extend(r.posts.iter().map(|t| t.id.clone()));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&text).unwrap();
        bytes.extend(gz.finish().unwrap());
    }
    std::fs::write(&path, bytes).unwrap();
    let fake = FakeFirehose::start(vec![]);
    let spill = dir.path().join("spill.jsonl");
    let t = replay_into(
        &fake,
        &path,
        &spill,
        &Options::default(),
        std::future::pending(),
        |s| s,
    )
    .await;
    let got: BTreeSet<String> = ids(fake.accepted()).into_iter().collect();
    assert_eq!(got, expect, "{t}");
    accounted(&t, &fake, &spill);
}
