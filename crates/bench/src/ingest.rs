//! `flagship-bench ingest corpus|run`: `cargo xtask bench ingest` — replay N stream messages
//! (built from the real payloads in `fixtures/twitter-v2`, tweet ids varied) into the local
//! Firehose-layout sink; one JSON line with tweets/s and this process's peak RSS.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use flagship_ingest::sink::LocalSink;
use flagship_ingest::source::{PostSource, Replay};
use flagship_store::storage::{Location, Store};

#[derive(clap::Subcommand)]
pub enum Cmd {
    /// Write N stream messages (one per line) to FILE.
    Corpus {
        #[arg(long)]
        file: PathBuf,
        #[arg(long, default_value_t = 1_000_000)]
        tweets: usize,
        #[arg(long, default_value = "fixtures/twitter-v2")]
        payloads: PathBuf,
    },
    /// Each platform's parser on its recorded posts (posts/s).
    Parsers,
    /// Replay FILE into the local sink at OUT (emptied first).
    Run {
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(cmd: Cmd) -> Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    match cmd {
        Cmd::Corpus { file, tweets, payloads } => rt.block_on(async {
            // The real tweets as stream messages (pages split, includes trimmed per tweet).
            let mut replay = Replay::new(Replay::files_of(&payloads)?, None);
            let mut base: Vec<serde_json::Value> = Vec::new();
            while let Some(l) = replay.next_line().await? {
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&l.bytes)
                    && v.pointer("/data/id").is_some()
                {
                    base.push(v);
                }
            }
            anyhow::ensure!(!base.is_empty(), "no tweets in {}", payloads.display());
            if let Some(d) = file.parent() {
                std::fs::create_dir_all(d)?;
            }
            let mut w = std::io::BufWriter::new(std::fs::File::create(&file).with_context(|| file.display().to_string())?);
            for i in 0..tweets {
                let mut m = base[i % base.len()].clone();
                m["data"]["id"] = serde_json::Value::String((1_500_000_000_000_000_000u64 + i as u64).to_string());
                serde_json::to_writer(&mut w, &m)?;
                w.write_all(b"\n")?;
            }
            w.flush()?;
            println!("{}", serde_json::json!({"corpus": file, "tweets": tweets, "from_real_tweets": base.len(), "bytes": std::fs::metadata(&file)?.len()}));
            Ok(())
        }),
        Cmd::Parsers => {
            println!("{}", parsers()?);
            Ok(())
        }
        Cmd::Run { file, out } => rt.block_on(async {
            if out.exists() {
                std::fs::remove_dir_all(&out)?;
            }
            let store = Store::open(&Location::Local(out.clone()), &Default::default())?;
            let quarantine = Store::open(&Location::Local(out.join("_quarantine")), &Default::default())?;
            let mut replay = Replay::new(vec![file], None);
            let sink = LocalSink::new(store, "", "twitter_delivery_stream");
            let start = Instant::now();
            let t = flagship_ingest::run(&mut replay, sink, &quarantine, "q.jsonl", &Default::default(), std::future::pending(), &|_| {}).await?;
            let secs = start.elapsed().as_secs_f64();
            println!(
                "{}",
                serde_json::json!({
                    "tweets": t.received, "sent": t.sink.sent, "objects": t.sink.objects,
                    "seconds": secs, "tweets_per_second": t.received as f64 / secs,
                    "peak_rss_mib": crate::textproc::peak_rss_mib(),
                })
            );
            Ok(())
        }),
    }
}

/// A recorded line and the record ingest makes of it.
type Pair = (Vec<u8>, Vec<u8>);

/// Each platform's recorded posts through ingest's check ([`classify`]) and through the parse
/// to the post record ([`parse_record`], what combine and watch run), for at least a second
/// each: posts per second, one JSON line of flat keys.
pub fn parsers() -> Result<serde_json::Value> {
    use flagship_core::Platform;
    use flagship_ingest::record::{Line, classify};
    use flagship_platforms::jsonl::parse_record;
    // xtask runs the benchmarks from the workspace root.
    let fixtures = std::path::Path::new("fixtures");
    let lines = |rel: &str| -> Result<Vec<Vec<u8>>> {
        let p = fixtures.join(rel);
        Ok(std::fs::read(&p)
            .with_context(|| p.display().to_string())?
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect())
    };
    let now = chrono::Utc::now();
    let mut out = serde_json::Map::new();
    for (platform, rel) in [
        (Platform::X, "twitter-v2/streaming_output_with_error.jsonl"),
        (Platform::Bluesky, "bluesky-jetstream/capture_v1.jsonl"),
        (
            Platform::Mastodon,
            "mastodon/public_timeline_statuses.jsonl",
        ),
    ] {
        // Posts only (Jetstream's likes and follows are not what is measured), as ingest
        // writes them: the record `classify` returns is what `parse_record` reads later.
        let records: Vec<Pair> = lines(rel)?
            .into_iter()
            .filter_map(|l| match classify(platform, &l, now) {
                Line::Post { record, .. } => Some((l, record.to_vec())),
                _ => None,
            })
            .collect();
        anyhow::ensure!(!records.is_empty(), "no posts in {rel}");
        let time = |f: &dyn Fn(&Pair) -> usize| {
            let start = Instant::now();
            let mut n = 0usize;
            while start.elapsed().as_secs_f64() < 1.0 {
                for r in &records {
                    n += f(r);
                }
            }
            n as f64 / start.elapsed().as_secs_f64()
        };
        let check =
            time(&|(l, _)| usize::from(matches!(classify(platform, l, now), Line::Post { .. })));
        let record = time(&|(_, r)| parse_record(r, None).map_or(0, |p| p.posts.len()));
        out.insert(format!("{platform}_posts"), records.len().into());
        out.insert(format!("{platform}_classify_per_second"), check.into());
        out.insert(format!("{platform}_record_per_second"), record.into());
    }
    Ok(serde_json::Value::Object(out))
}
