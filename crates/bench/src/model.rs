//! `flagship-bench model train|predict`: flagship's side of `cargo xtask bench train|predict`
//! (the Hugging Face side is `scripts/bench_model.py`, same settings). Prints one JSON line.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use flagship_model::train::{self, TrainOptions};
use flagship_model::{HeadSpec, Precision, SequenceClassifier, TextEncoder};

use flagship_core::config::Arithmetic;
use flagship_store::table::Table;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum What {
    Train,
    Predict,
    /// The served model's why-words (occlusion) as the live loop works them out: `--job`
    /// posts at a time, `--slice` texts through the model per call (0: a job at once).
    Explain,
}

#[derive(clap::Args)]
pub struct Args {
    #[arg(value_enum)]
    pub what: What,
    #[arg(long)]
    pub base: Option<PathBuf>,
    /// Labelled texts (JSONL/CSV/Parquet); the first rows are used.
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value_t = 30)]
    pub steps: usize,
    #[arg(long, default_value_t = 2000)]
    pub rows: usize,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 64)]
    pub max_length: usize,
    /// Arithmetic of the matrix products: `auto` (bf16 where the hardware has it and it is
    /// faster), `f32`, `bf16`.
    #[arg(long, value_enum, default_value_t = Arith::Auto)]
    pub precision: Arith,
    /// predict: keep the base's first N layers only (a shallower student's shape, as
    /// `flagship train --layers N` makes one).
    #[arg(long)]
    pub layers: Option<usize>,
    /// predict: a trained model folder, served as `flagship predict` serves it (early exit
    /// included) instead of the base with a fresh head.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// predict with `--model`: every post reads every layer (no early exit).
    #[arg(long)]
    pub full_depth: bool,
    /// predict with `--model`: in a hurry, as a live loop that has fallen behind scores (the
    /// exits' looser margins, `model.early_exit_hurried`).
    #[arg(long)]
    pub hurried: bool,
    /// explain: texts through the model per call (0: each job in one call).
    #[arg(long, default_value_t = 0)]
    pub slice: usize,
    /// explain: posts explained together.
    #[arg(long, default_value_t = 1)]
    pub job: usize,
    /// predict: passes one after another on libtorch's threads, not spread over one worker
    /// per thread (`flagship_model::workers`), to measure what the workers give.
    #[arg(long)]
    pub one_worker: bool,
    /// predict: passes computed on padded posts, not packed tokens
    /// (`flagship_model::packing`), to measure what packing gives.
    #[arg(long)]
    pub padded: bool,
    /// predict with `--model`: score the texts in input order, this many at a time, with the
    /// flagged posts' words from the scoring pass — what `watch` does with each micro-batch
    /// (0: all texts in one call, as `flagship predict`).
    #[arg(long, default_value_t = 0)]
    pub micro: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Arith {
    Auto,
    F32,
    Bf16,
}

impl Arith {
    fn arithmetic(self) -> Arithmetic {
        match self {
            Arith::Auto => Arithmetic::Auto,
            Arith::F32 => Arithmetic::F32,
            Arith::Bf16 => Arithmetic::Bf16,
        }
    }

    fn resolve(self, device: tch::Device) -> Precision {
        Precision::of(self.arithmetic(), device)
    }
}

pub fn run(args: Args) -> Result<()> {
    let base = match args.base.clone() {
        Some(b) => b,
        None => flagship_model::Checkpoint::default_base()?,
    };
    let (examples, _) = Table::read(&args.data)?.examples()?;
    let device = flagship_model::device();
    let result = match args.what {
        What::Train => {
            let n = (args.steps * args.batch_size).min(examples.len());
            let opts = TrainOptions {
                epochs: 1,
                max_steps: Some(args.steps),
                batch_size: args.batch_size,
                max_length: args.max_length,
                learning_rate: 5e-5,
                device,
                // Like for like with the Trainer peer: first-token head, two labels.
                pooling: flagship_model::Pooling::Cls,
                classes: 2,
                precision: Some(args.precision.resolve(device)),
                ..TrainOptions::default()
            };
            let val = &examples[n..(n + 64).min(examples.len())];
            let trained = train::train(&base, &examples[..n], val, &opts)?;
            let rec = &trained.history[0];
            serde_json::json!({
                "examples": n,
                "seconds": n as f64 / rec.examples_per_second,
                "examples_per_second": rec.examples_per_second,
            })
        }
        What::Predict => {
            flagship_model::workers::set_spread(!args.one_worker);
            flagship_model::packing::set_packed(!args.padded);
            let n = args.rows.min(examples.len());
            let texts: Vec<&str> = examples[..n].iter().map(|e| e.text.as_str()).collect();
            match &args.model {
                Some(dir) => served(dir, &args, &texts)?,
                None => fresh_head(&base, &args, &texts, device)?,
            }
        }
        What::Explain => {
            let dir = args
                .model
                .as_deref()
                .ok_or_else(|| anyhow::anyhow!("explain: --model DIR"))?;
            let n = args.rows.min(examples.len());
            let texts: Vec<&str> = examples[..n].iter().map(|e| e.text.as_str()).collect();
            explain(dir, &args, &texts)?
        }
    };
    let mut result = result;
    result["peer"] = "flagship".into();
    result["torch_threads"] = tch::get_num_threads().into();
    result["device"] = format!("{device:?}").into();
    result["precision"] = format!("{:?}", args.precision.resolve(device)).into();
    println!("{result}");
    Ok(())
}

/// `texts` scored by the model folder `dir` as `flagship predict` serves it (length-sorted
/// passes of `--batch-size`, early exit unless `--full-depth`), after a warm-up pass.
fn served(dir: &std::path::Path, args: &Args, texts: &[&str]) -> Result<serde_json::Value> {
    let mut model = flagship_model::Classifier::load(dir)?;
    model.batch_size = args.batch_size;
    model.set_precision(args.precision.arithmetic());
    model.set_early_exit(!args.full_depth);
    // A warm-up of two passes: the workers' one-thread kernels are made as well.
    model.predict(&texts[..(2 * args.batch_size).min(texts.len())])?;
    let pace = model
        .pace(args.hurried)
        .with_context(|| format!("--hurried: {}", dir.display()))?;
    let before = model.reading().unwrap_or_default();
    let started = Instant::now();
    let (p, tokenise) = if args.micro == 0 {
        model.predict_timed(texts, pace)?
    } else {
        let (mut p, mut tokenise) = (Vec::with_capacity(texts.len()), Duration::ZERO);
        for batch in texts.chunks(args.micro) {
            let w = model.predict_worded(batch, 3, pace)?;
            p.extend(w.predictions);
            tokenise += w.tokenise;
        }
        (p, tokenise)
    };
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(p.len(), texts.len());
    let after = model.reading().unwrap_or_default();
    let (posts, read) = (after.0 - before.0, after.1 - before.1);
    Ok(serde_json::json!({
        "examples": texts.len(),
        "seconds": secs,
        "examples_per_second": texts.len() as f64 / secs,
        "layers_read": read as f64 / (posts.max(1) as f64 * after.2.max(1) as f64),
        "tokenise_seconds": tokenise.as_secs_f64(),
        "micro": args.micro,
        "packed": flagship_model::packing::packed(),
        "flagged": p.iter().filter(|p| p.need_support).count(),
        "mean_probability": p.iter().map(|p| f64::from(p.probability)).sum::<f64>() / p.len().max(1) as f64,
    }))
}

/// `texts`' why-words by the model folder `dir`, as the live loop works them out, after a
/// warm-up job.
fn explain(dir: &std::path::Path, args: &Args, texts: &[&str]) -> Result<serde_json::Value> {
    let mut model = flagship_model::Classifier::load(dir)?;
    model.set_precision(args.precision.arithmetic());
    let slice = if args.slice == 0 {
        usize::MAX
    } else {
        args.slice
    };
    let job = args.job.max(1);
    let words = |ts: &[&str]| -> Result<usize> {
        let mut calls = 0;
        for posts in ts.chunks(job) {
            let mut e = model.explanation(posts, 3);
            loop {
                calls += 1;
                if model.advance(&mut e, slice)? {
                    break;
                }
            }
        }
        Ok(calls)
    };
    words(&texts[..job.min(texts.len())])?;
    let started = Instant::now();
    let calls = words(texts)?;
    let secs = started.elapsed().as_secs_f64();
    Ok(serde_json::json!({
        "examples": texts.len(),
        "seconds": secs,
        "ms_per_post": secs * 1e3 / texts.len().max(1) as f64,
        "calls": calls,
        "slice": args.slice,
        "job": job,
    }))
}

/// `texts` scored by the base `base` with a fresh two-label head (`--layers`: its first
/// layers only), frozen as `flagship predict` serves a model, after a warm-up pass.
fn fresh_head(
    base: &std::path::Path,
    args: &Args,
    texts: &[&str],
    device: tch::Device,
) -> Result<serde_json::Value> {
    let mut ck = flagship_model::Checkpoint::open(base)?;
    if let Some(n) = args.layers {
        ck.config.keep_layers(n).map_err(anyhow::Error::msg)?;
    }
    let (mut vs, model, _) =
        SequenceClassifier::from_checkpoint(&ck, HeadSpec::CLS2, device, false)?;
    drop(ck);
    // As `flagship predict` serves a model: frozen, so the bf16 weights are cast
    // once and query, key and value are one product.
    vs.freeze();
    let enc = TextEncoder::from_file(
        &base.join("tokenizer.json"),
        args.max_length,
        model.config.pad_token_id,
    )?;
    let precision = args.precision.resolve(device);
    // Warm-up pass (allocator, kernels), as the peer's first batch would be: the timed passes'
    // own path (packed, as served).
    let e = enc
        .encode(&texts[..8.min(texts.len())])
        .map_err(|e| anyhow::anyhow!("tokenizer: {e}"))?;
    let _ = train::probabilities(&model, &enc, &e, args.batch_size, device, precision);
    let started = Instant::now();
    let encoded = enc
        .encode(texts)
        .map_err(|e| anyhow::anyhow!("tokenizer: {e}"))?;
    let (p, _) = train::probabilities(&model, &enc, &encoded, args.batch_size, device, precision);
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(p.len(), texts.len());
    Ok(serde_json::json!({
        "examples": texts.len(),
        "seconds": secs,
        "examples_per_second": texts.len() as f64 / secs,
    }))
}
