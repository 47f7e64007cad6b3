//! `flagship-bench groups`: the desk's question groups measured.
//!
//! - **Pairs**: the base encoder's cosine on a labelled set of same-question / different-
//!   question pairs (`fixtures/paraphrase/pairs.jsonl`), pair precision and recall at each
//!   threshold and at `desk.group_similarity`.
//! - **Cost**: the sentence embedding's time per post, one post at a time as the live loop
//!   embeds (and in batches of 32), beside the classifier's forward pass on the same texts.
//! - **Posts vs cards**: posts go through the live loop's own rules (combine's rows, filter's
//!   and textproc's plans, the model), the flagged ones are embedded and handed to a real
//!   desk database in arrival order, micro-batch by micro-batch, as the loop hands them; then
//!   the cards the queue shows are counted. Keys to clear the queue: one per card (a decision
//!   key; selection moves on by itself), so before groups one per flagged post. On the demo
//!   replay, on the real JWST posts as one burst, and on the written burst of the desk's test.
//!   A group's quiet period runs in the posts' own time (their `created_at`), so a replay
//!   measured in seconds groups as its days would.
//!
//! It prints one JSON line (and a table on standard error).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use arrow::array::Array;
use chrono::{TimeZone, Utc};
use flagship_core::live::{Explained, Scored};
use flagship_core::{Config, Platform, Post};
use flagship_model::{Checkpoint, Classifier, SentenceEncoder};
use serde_json::{Value, json};

#[derive(clap::Args)]
pub struct Args {
    /// The classifier that flags (a folder `flagship train` wrote; the demo's by default).
    #[arg(long, default_value = "data/demo/models/need-support")]
    model: PathBuf,
    /// The labelled pairs.
    #[arg(long, default_value = "fixtures/paraphrase/pairs.jsonl")]
    pairs: PathBuf,
    /// The demo's stream and config.
    #[arg(long, default_value = "fixtures/demo/stream.jsonl.gz")]
    demo: PathBuf,
    #[arg(long, default_value = "fixtures/demo/flagship.toml")]
    config: PathBuf,
    /// The real JWST posts (one burst).
    #[arg(
        long,
        default_value = "fixtures/jwst-samples/jwst_tweets_from_notebook_outputs.jsonl"
    )]
    jwst: PathBuf,
    /// The grouping threshold (default: the config's `desk.group_similarity`).
    #[arg(long)]
    similarity: Option<f32>,
}

pub fn run(a: Args) -> Result<()> {
    let config = Config::load(&a.config)?;
    let similarity = a.similarity.unwrap_or(config.desk.group_similarity);
    let encoder = SentenceEncoder::load(&Checkpoint::default_base()?)?;
    let model = Classifier::load(&a.model)
        .with_context(|| format!("{} (`cargo xtask pipeline` trains it)", a.model.display()))?;
    let mut out = serde_json::Map::new();
    out.insert("similarity".into(), json!(similarity));
    pairs(&a, &encoder, similarity, &mut out)?;

    let demo = demo_posts(&a.demo)?;
    cost(&encoder, &model, &demo, &mut out)?;
    let rt = tokio::runtime::Runtime::new()?;
    let jwst = jwst_posts(&a.jwst)?;
    let burst: Vec<Post> = flagship_desk::testing::BURST
        .iter()
        .enumerate()
        .map(|(n, (author, text))| {
            let line = flagship_desk::testing::x_message(n, author, text);
            let mut p = flagship_platforms::jsonl::parse_payload(line.as_bytes(), None)
                .expect("a stream message")
                .posts;
            p.remove(0)
        })
        .collect();
    for (name, posts) in [("demo", demo), ("jwst", jwst), ("burst", burst)] {
        let r = rt.block_on(cards(&config, &model, &encoder, similarity, posts))?;
        eprintln!(
            "{name}: {} posts, {} kept, {} flagged → {} cards ({} groups of 2 or more, the largest {}); keys to clear the queue {} → {} ({:.1} % fewer)",
            r["posts"],
            r["kept"],
            r["flagged"],
            r["cards"],
            r["groups"],
            r["largest"],
            r["flagged"],
            r["cards"],
            100.0
                * (1.0
                    - r["cards"].as_f64().unwrap_or(0.0)
                        / r["flagged"].as_f64().unwrap_or(1.0).max(1.0))
        );
        if let Value::Object(fields) = r {
            for (k, v) in fields {
                out.insert(format!("{name}_{k}"), v);
            }
        }
    }
    println!("{}", Value::Object(out));
    Ok(())
}

/// Pair precision / recall of "cosine ≥ t" against the labels.
fn pairs(
    a: &Args,
    encoder: &SentenceEncoder,
    similarity: f32,
    out: &mut serde_json::Map<String, Value>,
) -> Result<()> {
    let text =
        std::fs::read_to_string(&a.pairs).with_context(|| format!("{}", a.pairs.display()))?;
    let mut left = Vec::new();
    let mut right = Vec::new();
    let mut same = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let v: Value = serde_json::from_str(line)
            .with_context(|| format!("{} line {}", a.pairs.display(), i + 1))?;
        let field = |k: &str| {
            v[k].as_str()
                .map(str::to_owned)
                .with_context(|| format!("{} line {}: no `{k}`", a.pairs.display(), i + 1))
        };
        left.push(field("a")?);
        right.push(field("b")?);
        same.push(
            v["same"]
                .as_bool()
                .with_context(|| format!("{} line {}: no `same`", a.pairs.display(), i + 1))?,
        );
    }
    let l = encoder.embed(&left.iter().map(String::as_str).collect::<Vec<_>>())?;
    let r = encoder.embed(&right.iter().map(String::as_str).collect::<Vec<_>>())?;
    let cos: Vec<f32> = l
        .iter()
        .zip(&r)
        .map(|(x, y)| flagship_model::embed::cosine(x, y))
        .collect();
    let at = |t: f32| {
        let (mut tp, mut fp, mut fn_) = (0.0f64, 0.0f64, 0.0f64);
        for (c, s) in cos.iter().zip(&same) {
            match (*c >= t, *s) {
                (true, true) => tp += 1.0,
                (true, false) => fp += 1.0,
                (false, true) => fn_ += 1.0,
                _ => {}
            }
        }
        let p = if tp + fp > 0.0 { tp / (tp + fp) } else { 1.0 };
        let r = tp / (tp + fn_).max(1.0);
        (p, r)
    };
    eprintln!(
        "pairs: {} ({} same)\nthreshold  precision  recall",
        same.len(),
        same.iter().filter(|s| **s).count()
    );
    let mut table = Vec::new();
    for k in 0..=9 {
        let t = 0.50 + 0.05 * k as f32;
        let (p, r) = at(t);
        eprintln!("{t:9.2}  {p:9.3}  {r:6.3}");
        table.push(json!({"threshold": t, "precision": p, "recall": r}));
    }
    let (p, r) = at(similarity);
    out.insert("pairs".into(), json!(same.len()));
    out.insert(
        "pairs_same".into(),
        json!(same.iter().filter(|s| **s).count()),
    );
    out.insert("pair_precision".into(), json!(p));
    out.insert("pair_recall".into(), json!(r));
    out.insert("pair_table".into(), Value::Array(table));
    Ok(())
}

/// The embedding's cost per post one at a time (the loop's) and in batches of 32, beside the
/// classifier's forward pass, on the demo's first 512 texts.
fn cost(
    encoder: &SentenceEncoder,
    model: &Classifier,
    demo: &[Post],
    out: &mut serde_json::Map<String, Value>,
) -> Result<()> {
    let texts: Vec<&str> = demo.iter().take(512).map(|p| p.text.as_str()).collect();
    encoder.embed(&texts[..8])?; // warm
    let timed = |chunk: usize| -> Result<f64> {
        let t = Instant::now();
        for c in texts.chunks(chunk) {
            encoder.embed(c)?;
        }
        Ok(t.elapsed().as_secs_f64() * 1e3 / texts.len() as f64)
    };
    let by1 = timed(1)?;
    let by32 = timed(32)?;
    let t = Instant::now();
    for c in texts.chunks(32) {
        model.predict(c)?;
    }
    let classify = t.elapsed().as_secs_f64() * 1e3 / texts.len() as f64;
    eprintln!(
        "embedding: {by1:.2} ms a post one at a time (the loop's), {by32:.2} ms in batches of 32; the classifier {classify:.2} ms a post in batches of 32"
    );
    out.insert("embed_ms_per_post_one".into(), json!(by1));
    out.insert("embed_ms_per_post_batch32".into(), json!(by32));
    out.insert("classify_ms_per_post_batch32".into(), json!(classify));
    Ok(())
}

/// The demo stream's posts, in order.
pub fn demo_posts(path: &PathBuf) -> Result<Vec<Post>> {
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(path)?),
        &mut text,
    )?;
    let mut posts = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let parsed =
            flagship_platforms::jsonl::parse_payload(line.as_bytes(), None).map_err(|e| {
                anyhow::anyhow!(
                    "{} line {}: {}: {}",
                    path.display(),
                    i + 1,
                    e.path,
                    e.message
                )
            })?;
        posts.extend(parsed.posts);
    }
    Ok(posts)
}

/// The real JWST posts (texts from the original's notebooks) as one burst of X posts.
pub fn jwst_posts(path: &PathBuf) -> Result<Vec<Post>> {
    let text = std::fs::read_to_string(path)?;
    let t0 = Utc.with_ymd_and_hms(2022, 7, 12, 14, 0, 0).unwrap();
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            let v: Value = serde_json::from_str(l)
                .with_context(|| format!("{} line {}", path.display(), i + 1))?;
            Ok(Post {
                platform: Platform::X,
                id: format!("{}", 9_300_000_000_000_000_000u64 + i as u64),
                created_at: Some(t0 + chrono::Duration::seconds(3 * i as i64)),
                text: v["text"].as_str().unwrap_or_default().to_owned(),
                author_username: Some(format!("jwst_author_{i}")),
                ..Post::default()
            })
        })
        .collect()
}

/// `posts` through the loop's rules and the model, the flagged ones embedded into a real
/// desk database in micro-batches of 32, in arrival order; the cards the queue shows.
async fn cards(
    config: &Config,
    model: &Classifier,
    encoder: &SentenceEncoder,
    similarity: f32,
    posts: Vec<Post>,
) -> Result<Value> {
    let dir = tempfile::tempdir()?;
    let mut store = flagship_desk::DeskStore::open(&dir.path().join("desk.sqlite"))?;
    store.set_grouping(flagship_desk::groups::Rules {
        similarity,
        quiet: chrono::Duration::seconds(config.desk.group_quiet_s as i64),
        max_open: config.desk.group_max_open,
    })?;
    let ctx = flagship_store::frames::micro_batch_session();
    let n = posts.len();
    let (mut kept, mut flagged) = (0usize, 0usize);
    for chunk in posts.chunks(32) {
        let rows: Vec<(Post, String)> = chunk.iter().map(|p| (p.clone(), "bench".into())).collect();
        let processed = flagship_live::prepare(&ctx, config, &rows).await?;
        let ids = flagship_live::strings(&processed, "id")?;
        let texts = flagship_live::strings(&processed, flagship_live::TEXT_COLUMN)?;
        let refs: Vec<&str> = (0..texts.len()).map(|i| texts.value(i)).collect();
        let preds = model.predict(&refs)?;
        kept += refs.len();
        let mut scored = Vec::new();
        for (i, p) in preds.iter().enumerate() {
            let Some(post) = chunk.iter().find(|x| x.id == ids.value(i)) else {
                continue;
            };
            scored.push(Scored {
                post: post.clone(),
                text_model: texts.value(i).to_owned(),
                matched: vec![],
                client: None,
                probability: p.probability,
                need_support: p.need_support,
                threshold: model.threshold(),
                model_id: "bench".into(),
                scored_at: Utc::now(),
                latency_ms: 0.0,
                hurried: false,
                why: vec![],
            });
        }
        store.add(&scored)?;
        let flagged_now: Vec<&Scored> = scored.iter().filter(|s| s.need_support).collect();
        flagged += flagged_now.len();
        let texts: Vec<&str> = flagged_now.iter().map(|s| s.text_model.as_str()).collect();
        let vectors = encoder.embed(&texts)?;
        let explained: Vec<Explained> = flagged_now
            .iter()
            .zip(vectors)
            .map(|(s, embedding)| Explained {
                platform: s.post.platform,
                id: s.post.id.clone(),
                why: vec![],
                embedding,
            })
            .collect();
        // Groups close after their quiet period in the posts' own time, not the bench's.
        let at = chunk
            .iter()
            .filter_map(|p| p.created_at)
            .max()
            .unwrap_or_else(Utc::now);
        store.explain_at(&explained, at)?;
    }
    let queue = store.queue(flagship_desk::Order::Newest, usize::MAX / 2)?;
    let mut sizes: std::collections::HashMap<i64, usize> = Default::default();
    let mut alone = 0usize;
    for item in &queue {
        match item.group {
            Some(g) => *sizes.entry(g).or_default() += 1,
            None => alone += 1,
        }
    }
    let cards = alone + sizes.len();
    // The largest groups, three posts of each, for a person to judge.
    let mut largest: Vec<(&i64, &usize)> = sizes.iter().filter(|(_, n)| **n >= 3).collect();
    largest.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (g, n) in largest.iter().take(3) {
        let texts: Vec<String> = queue
            .iter()
            .filter(|i| i.group == Some(**g))
            .take(3)
            .map(|i| i.text.chars().take(90).collect())
            .collect();
        eprintln!("  group of {n}: {texts:?}");
    }
    let groups = sizes.values().filter(|s| **s >= 2).count();
    let grouped_posts: usize = sizes.values().filter(|s| **s >= 2).sum();
    Ok(json!({
        "posts": n,
        "kept": kept,
        "flagged": flagged,
        "cards": cards,
        "groups": groups,
        "posts_in_groups": grouped_posts,
        "largest": sizes.values().max().copied().unwrap_or(0),
    }))
}
