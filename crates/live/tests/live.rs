//! The live loop on real recorded posts with a real (linear) model trained on TweetEval:
//! a replay of the Bluesky capture and of the Mastodon statuses merged, scored in
//! micro-batches into a sink that keeps everything; then a second run that skips what the
//! first handled.

use std::collections::HashSet;
use std::time::Duration;

use flagship_live::testing::{everyday_config, linear_model, open_replays};
use flagship_live::{Explained, Options, Scored, Sink, SinkError};

/// Keeps every scored post (and the size of each write); explanations join their post.
struct Keep(Vec<Scored>, Vec<usize>);

impl Sink for Keep {
    fn write(&mut self, scored: &[Scored]) -> Result<(), SinkError> {
        self.1.push(scored.len());
        // The live loop explains later: a post is written without its words.
        assert!(scored.iter().all(|s| s.why.is_empty()));
        self.0.extend_from_slice(scored);
        Ok(())
    }

    fn explained(&mut self, why: &[Explained]) -> Result<(), SinkError> {
        for e in why {
            let s = self
                .0
                .iter_mut()
                .find(|s| s.post.id == e.id && s.post.platform == e.platform)
                .ok_or_else(|| SinkError(format!("explained {} before it was written", e.id)))?;
            if !s.why.is_empty() {
                return Err(SinkError(format!("{} explained twice", e.id)));
            }
            s.why = e.why.clone();
        }
        Ok(())
    }
}

#[tokio::test]
async fn merged_replays_are_scored_in_micro_batches_and_a_rerun_skips_them() {
    let dir = tempfile::tempdir().unwrap();
    let model = linear_model(&dir.path().join("model"));
    let cfg = everyday_config();
    let opts = Options {
        max_batch: 8,
        max_wait: Duration::from_millis(50),
        ..Options::default()
    };
    let mut sink = Keep(Vec::new(), Vec::new());
    let telemetry = std::sync::Arc::new(flagship_core::telemetry::Telemetry::live());
    let t = flagship_live::run(
        flagship_live::Run {
            config: &cfg,
            model: &model,
            model_id: "linear",
            handled_before: HashSet::new(),
            embedder: None,
            options: &opts,
            progress: &|_| {},
            telemetry: Some(telemetry.clone()),
        },
        open_replays(),
        &mut sink,
        std::future::pending(),
    )
    .await
    .unwrap();
    println!("{}", serde_json::to_string(&t).unwrap());
    // 17 Bluesky + 50 Mastodon posts: seen or set aside by the track terms, none lost.
    assert_eq!(t.seen + t.unmatched, 67, "{t:?}");
    assert_eq!(t.stopped_by, flagship_core::Stop::EndOfInput);
    assert_eq!(sink.0.len() as u64, t.kept);
    assert!(
        sink.1.iter().all(|&n| n <= 8),
        "batched by at most 8: {t:?}"
    );
    // Every flagged post was explained after its write; the budget saw every batch.
    assert_eq!((t.explained, t.unexplained), (t.flagged, 0), "{t:?}");
    let b = &t.budget;
    assert!(b.model.total_s > 0.0 && b.prepare.total_s > 0.0 && b.write.total_s > 0.0);
    assert!(
        b.explain.total_s > 0.0 && b.model.p99_ms >= b.model.p50_ms,
        "{b:?}"
    );
    let platforms: HashSet<_> = sink.0.iter().map(|s| s.post.platform).collect();
    assert_eq!(platforms.len(), 2);
    for s in &sink.0 {
        assert_eq!(
            s.need_support,
            f64::from(s.probability) >= s.threshold,
            "{s:?}"
        );
        assert!(s.post.url.is_some() && !s.text_model.is_empty(), "{s:?}");
        // A flagged post says why: its own words, strongest first; an unflagged one does not.
        if s.need_support {
            assert!(!s.why.is_empty() && s.why.len() <= 3, "{s:?}");
            let text = s.text_model.to_lowercase();
            for w in &s.why {
                assert!(text.contains(&w.word) && w.weight > 0.0, "{w:?} in {text}");
            }
            assert!(s.why.windows(2).all(|p| p[0].weight >= p[1].weight));
        } else {
            assert!(s.why.is_empty());
        }
    }
    assert_eq!(
        t.flagged as usize,
        sink.0.iter().filter(|s| s.need_support).count()
    );
    // The telemetry counted the same, per platform.
    let tel = &telemetry;
    assert_eq!(
        (tel.seen.sum(), tel.off_track.sum(), tel.duplicate.sum()),
        (t.seen, t.unmatched, t.duplicates)
    );
    assert_eq!(
        (tel.kept.sum(), tel.flagged.sum(), tel.explained.sum()),
        (t.kept, t.flagged, t.explained)
    );
    assert_eq!(tel.batches.get(), t.batches);
    let latency = tel.latency.snapshot();
    assert_eq!(latency.count, t.seen);
    assert!(latency.sum * 1e3 <= t.latency_max_ms * t.seen as f64 + 1e-6);
    for p in [
        flagship_core::Platform::Bluesky,
        flagship_core::Platform::Mastodon,
    ] {
        let kept = sink.0.iter().filter(|s| s.post.platform == p).count() as u64;
        assert_eq!(tel.kept.get(p), kept, "{p}");
    }

    // What was handled is never scored again.
    let before: HashSet<String> = sink.0.iter().map(|s| s.post.id.clone()).collect();
    let mut again = Keep(Vec::new(), Vec::new());
    let t2 = flagship_live::run(
        flagship_live::Run {
            config: &cfg,
            model: &model,
            model_id: "linear",
            handled_before: before.clone(),
            embedder: None,
            options: &opts,
            progress: &|_| {},
            telemetry: None,
        },
        open_replays(),
        &mut again,
        std::future::pending(),
    )
    .await
    .unwrap();
    assert_eq!(t2.duplicates as usize, before.len(), "{t2:?}");
    assert!(again.0.iter().all(|s| !before.contains(&s.post.id)));
}

/// Lines of a recording handed out `gap` apart (after the first `burst` at once).
struct Paced {
    lines: std::vec::IntoIter<Vec<u8>>,
    gap: Duration,
    burst: usize,
    given: u64,
}

#[async_trait::async_trait]
impl flagship_ingest::source::PostSource for Paced {
    async fn next_line(
        &mut self,
    ) -> Result<Option<flagship_ingest::source::SourceLine>, flagship_ingest::IngestError> {
        let Some(bytes) = self.lines.next() else {
            return Ok(None);
        };
        self.given += 1;
        if self.given > self.burst as u64 {
            tokio::time::sleep(self.gap).await;
        }
        Ok(Some(flagship_ingest::source::SourceLine {
            platform: flagship_core::Platform::Mastodon,
            unfiltered: true,
            bytes: bytes.into(),
            origin: "paced".into(),
            line: self.given,
            offset: 0,
        }))
    }

    fn stats(&self) -> flagship_ingest::source::SourceStats {
        Default::default()
    }
}

fn mastodon_lines(n: usize) -> Vec<Vec<u8>> {
    let path = flagship_testkit::fixture("mastodon/public_timeline_statuses.jsonl");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(n)
        .map(|l| l.as_bytes().to_vec())
        .collect()
}

/// Batching adapts to load: posts arriving apart are each scored at once, alone; a burst
/// that arrives together is scored in batches, not one by one.
#[tokio::test]
async fn a_post_alone_is_scored_at_once_and_a_burst_is_batched() {
    let dir = tempfile::tempdir().unwrap();
    let model = linear_model(&dir.path().join("model"));
    let cfg = everyday_config();
    let opts = Options::default();
    let run = |lines: Vec<Vec<u8>>, gap: Duration, burst: usize| {
        let (cfg, model, opts) = (&cfg, &model, &opts);
        async move {
            let mut sink = Keep(Vec::new(), Vec::new());
            let source = Box::new(Paced {
                lines: lines.into_iter(),
                gap,
                burst,
                given: 0,
            });
            let t = flagship_live::run(
                flagship_live::Run {
                    config: cfg,
                    model,
                    model_id: "linear",
                    handled_before: HashSet::new(),
                    embedder: None,
                    options: opts,
                    progress: &|_| {},
                    telemetry: None,
                },
                source,
                &mut sink,
                std::future::pending(),
            )
            .await
            .unwrap();
            (t, sink)
        }
    };
    // Apart: 6 posts 300 ms apart, far longer than a batch takes: six batches of one.
    let (t, sink) = run(mastodon_lines(6), Duration::from_millis(300), 0).await;
    println!("apart: {}", serde_json::to_string(&t).unwrap());
    assert!(t.seen >= 3, "{t:?}");
    assert!(sink.1.iter().all(|&n| n == 1), "{:?}", sink.1);
    assert_eq!(t.batches, t.seen, "{t:?}");
    // Together: all 50 at once: far fewer batches than posts, none over `max_batch`.
    let (t, sink) = run(mastodon_lines(50), Duration::ZERO, 50).await;
    println!("burst: {}", serde_json::to_string(&t).unwrap());
    assert!(t.batches * 4 <= t.seen, "{t:?} {:?}", sink.1);
    assert!(sink.1.iter().all(|&n| n <= opts.max_batch), "{:?}", sink.1);
}

/// A sentence encoder that counts its calls, failing when asked to.
struct Encoder {
    fail: bool,
    calls: std::sync::atomic::AtomicUsize,
}

impl flagship_live::Embed for Encoder {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self.fail {
            return Err("out of memory (a test's encoder)".into());
        }
        Ok(texts.iter().map(|t| vec![t.len() as f32, 1.0]).collect())
    }

    fn id(&self) -> &str {
        "counting"
    }
}

/// Keeps the embeddings the loop hands on, by post id.
struct Vectors(std::collections::HashMap<String, Vec<f32>>, usize);

impl Sink for Vectors {
    fn write(&mut self, scored: &[Scored]) -> Result<(), SinkError> {
        self.1 += scored.iter().filter(|s| s.need_support).count();
        Ok(())
    }

    fn explained(&mut self, why: &[Explained]) -> Result<(), SinkError> {
        for e in why {
            if self.0.insert(e.id.clone(), e.embedding.clone()).is_some() {
                return Err(SinkError(format!("{} handed on twice", e.id)));
            }
        }
        Ok(())
    }
}

/// The question groups' vectors come with the words, off the latency path, one per flagged
/// post (without words asked for, by themselves); an encoder that fails costs the posts
/// their group (counted), never the run or their words.
#[tokio::test]
async fn flagged_posts_get_their_sentence_embeddings_and_a_failing_encoder_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let model = linear_model(&dir.path().join("model"));
    let cfg = everyday_config();
    for (fail, explain) in [(false, 3), (true, 3), (false, 0), (true, 0)] {
        let options = Options {
            explain,
            ..Options::default()
        };
        let encoder = std::sync::Arc::new(Encoder {
            fail,
            calls: Default::default(),
        });
        let telemetry = std::sync::Arc::new(flagship_core::telemetry::Telemetry::live());
        let mut sink = Vectors(Default::default(), 0);
        let t = flagship_live::run(
            flagship_live::Run {
                config: &cfg,
                model: &model,
                model_id: "linear",
                handled_before: HashSet::new(),
                embedder: Some(encoder.clone()),
                options: &options,
                progress: &|_| {},
                telemetry: Some(telemetry.clone()),
            },
            open_replays(),
            &mut sink,
            std::future::pending(),
        )
        .await
        .unwrap();
        assert!(t.flagged > 5, "{t:?}");
        assert_eq!(sink.1 as u64, t.flagged);
        // Each handed on once: with its words, or with its vector alone (nothing when
        // neither came).
        let handed = if fail && explain == 0 { 0 } else { t.flagged };
        assert_eq!(sink.0.len() as u64, handed, "{t:?}");
        assert!(encoder.calls.load(std::sync::atomic::Ordering::Relaxed) > 0);
        let words = if explain > 0 { t.flagged } else { 0 };
        assert_eq!(t.explained, words, "the words come either way: {t:?}");
        let unembedded: u64 = flagship_core::Platform::ALL
            .iter()
            .map(|p| telemetry.unembedded.get(*p))
            .sum();
        if fail {
            assert_eq!((t.embedded, t.unembedded), (0, t.flagged), "{t:?}");
            assert_eq!(unembedded, t.flagged);
            assert!(sink.0.values().all(Vec::is_empty));
        } else {
            assert_eq!((t.embedded, t.unembedded), (t.flagged, 0), "{t:?}");
            assert_eq!(unembedded, 0);
            assert!(sink.0.values().all(|v| v.len() == 2));
            assert!(t.budget.embed.total_s > 0.0, "{:?}", t.budget);
            assert!(
                t.embed_delay_max_ms > 0.0
                    && t.embed_delay_max_ms < flagship_live::EMBED_WITHIN.as_secs_f64() * 1e3,
                "{t:?}"
            );
        }
    }
}
