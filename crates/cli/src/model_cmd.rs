//! `flagship train` and `flagship predict`: example files in, model folder or predictions out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use flagship_core::config::ModelKind;
use flagship_core::labels::Example;
use flagship_core::rng::Rng;
use flagship_core::{Config, scoring};
use flagship_model::classifier::{self, sha256_file};
use flagship_model::{Classifier, DataRef, LinearOptions, TrainOptions};
use flagship_store::table::{self, Table};
use indicatif::{ProgressBar, ProgressStyle};

/// The column `train` and `predict` read texts from unless told otherwise.
pub const TEXT_COLUMN: &str = "text";
/// Texts per forward pass in `predict`: the passes a model's card was validated in.
pub const PREDICT_BATCH: usize = flagship_model::train::SCORING_BATCH;

#[derive(clap::Args)]
pub struct TrainArgs {
    /// Training examples: JSONL, CSV or Parquet with `text` and `label` (0/1/2).
    #[arg(long)]
    pub train: PathBuf,
    /// Validation examples (early stopping and threshold), same format.
    #[arg(long)]
    pub val: PathBuf,
    /// Model folder to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Model kind, `transformer` or `linear` (default: `model.kind` of the config).
    #[arg(long)]
    pub model_kind: Option<ModelKind>,
    /// Base checkpoint folder (default: `model.base`, else the set-up MiniLM).
    #[arg(long)]
    pub base: Option<PathBuf>,
    /// Use a seeded random sample of this many training rows.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Use a seeded random sample of this many validation rows.
    #[arg(long)]
    pub val_limit: Option<usize>,
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Stop after this many optimizer steps in all.
    #[arg(long)]
    pub max_steps: Option<usize>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    #[arg(long)]
    pub max_length: Option<usize>,
    #[arg(long)]
    pub learning_rate: Option<f64>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Expected share of posts needing support; the threshold is tuned for it.
    #[arg(long)]
    pub expected_rate: Option<f64>,
    /// Class-weighted loss on or off (default: `model.class_weights`).
    #[arg(long)]
    pub class_weights: Option<bool>,
    /// Token pooling, `auto`, `cls` or `mean` (default: `model.pooling`).
    #[arg(long)]
    pub pooling: Option<flagship_core::config::Pooling>,
    /// Labels of the head, 2 or 3 (default: `model.classes`).
    #[arg(long, value_parser = clap::value_parser!(u8).range(2..=3))]
    pub classes: Option<u8>,
    /// Layer-wise learning-rate decay, (0, 1] (default: `model.layer_decay`).
    #[arg(long)]
    pub layer_decay: Option<f64>,
    /// Keep only the base's first N layers: a shallower, faster model (default:
    /// `model.layers`, else all).
    #[arg(long)]
    pub layers: Option<usize>,
    /// Weight of the linear baseline in the probability average (default: `model.linear_weight`).
    #[arg(long)]
    pub linear_weight: Option<f64>,
    /// `f2`, `minutes`, `capacity` or `recall` (default: `model.operating_point`).
    #[arg(long)]
    pub operating_point: Option<flagship_core::config::OperatingRule>,
    /// Matrix arithmetic, `auto`, `f32` or `bf16` (default: `model.precision`).
    #[arg(long)]
    pub precision: Option<flagship_core::config::Arithmetic>,
    /// The column holding the texts (`text_model` for textproc's cleaned text).
    #[arg(long, default_value = TEXT_COLUMN)]
    pub text_column: String,
    /// Train on the texts as the files write them: no un-escaping of written-out `\uXXXX`
    /// and HTML entities (TweetEval's files hold them; live posts never do). The ablation's
    /// "before".
    #[arg(long)]
    pub keep_escapes: bool,
    /// A teacher's soft labels (`flagship teacher-labels`): distil them into this model
    /// (default: `model.teacher_labels`).
    #[arg(long)]
    pub teacher_labels: Option<PathBuf>,
    /// Softmax temperature of a distilled run (default: `model.distill_temperature`).
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Weight of the soft labels' loss (default: `model.distill_alpha`).
    #[arg(long)]
    pub alpha: Option<f64>,
    /// An evaluation set (same formats) whose texts no unlabelled soft label may bring into
    /// training: the leak guard (the validation set is always held out). Repeatable.
    #[arg(long)]
    pub holdout: Vec<PathBuf>,
    /// Write a checkpoint this often (`10m`; absent: none) to `OUT.checkpoint` beside the
    /// model: the same command, run again after a stop, goes on from it; removed once the
    /// model is written.
    #[arg(long, value_parser = crate::shared::parse_duration)]
    pub checkpoint_every: Option<std::time::Duration>,
    /// Stop after this many steps in all, the checkpoint written: to train in parts (needs
    /// `--checkpoint-every`).
    #[arg(long, requires = "checkpoint_every")]
    pub pause_at: Option<usize>,
}

impl TrainArgs {
    /// A run on the config's settings (what the pipeline asks for; a caller sets the fields
    /// it changes).
    pub fn new(train: PathBuf, val: PathBuf, out: PathBuf) -> TrainArgs {
        TrainArgs {
            train,
            val,
            out,
            model_kind: None,
            base: None,
            limit: None,
            val_limit: None,
            epochs: None,
            max_steps: None,
            batch_size: None,
            max_length: None,
            learning_rate: None,
            seed: None,
            expected_rate: None,
            class_weights: None,
            pooling: None,
            classes: None,
            layer_decay: None,
            layers: None,
            linear_weight: None,
            operating_point: None,
            precision: None,
            text_column: TEXT_COLUMN.into(),
            keep_escapes: false,
            teacher_labels: None,
            temperature: None,
            alpha: None,
            holdout: Vec::new(),
            checkpoint_every: None,
            pause_at: None,
        }
    }

    /// The soft-label file of this run: the flag, else the config's (relative to it).
    fn teacher_labels(&self, config: &Config) -> Option<PathBuf> {
        self.teacher_labels.clone().or_else(|| {
            config
                .model
                .teacher_labels
                .as_ref()
                .map(|p| config.base_dir.join(p))
        })
    }
}

#[derive(clap::Args)]
pub struct PredictArgs {
    /// Model folder written by `flagship train`.
    #[arg(long)]
    pub model: PathBuf,
    /// JSONL, CSV or Parquet with a `text` column (a `label` column is scored if present).
    #[arg(long)]
    pub input: PathBuf,
    /// Output file: the input's columns plus `need_support_probability` and `need_support`.
    #[arg(long)]
    pub output: PathBuf,
    /// Score in a hurry, as a live loop that has fallen behind does (the exits' looser
    /// margins, `model.early_exit_hurried`): what its decisions would be.
    #[arg(long, conflicts_with = "full_depth")]
    pub hurried: bool,
    #[command(flatten)]
    pub scoring: Scoring,
}

/// How a model scores a file's texts: the flags `predict` and `teacher-labels` share.
#[derive(clap::Args)]
pub struct Scoring {
    /// Texts per forward pass.
    #[arg(long, default_value_t = PREDICT_BATCH)]
    pub batch_size: usize,
    /// Matrix arithmetic, `auto` (bf16 where the hardware has it and it is faster), `f32` or
    /// `bf16`.
    #[arg(long, default_value = "auto")]
    pub precision: flagship_core::config::Arithmetic,
    /// The column holding the texts (`text_model` for textproc's cleaned text).
    #[arg(long, default_value = TEXT_COLUMN)]
    pub text_column: String,
    /// Every post reads every layer (no early exit: the card's validation figures' way).
    #[arg(long)]
    pub full_depth: bool,
}

impl Default for Scoring {
    fn default() -> Scoring {
        Scoring {
            batch_size: PREDICT_BATCH,
            precision: flagship_core::config::Arithmetic::Auto,
            text_column: TEXT_COLUMN.into(),
            full_depth: false,
        }
    }
}

impl Scoring {
    /// The model folder `dir`, loaded to score with these settings.
    pub fn load(&self, dir: &Path) -> Result<Classifier> {
        let mut model = Classifier::load(dir)?;
        model.batch_size = self.batch_size.max(1);
        model.set_precision(self.precision);
        model.set_early_exit(!self.full_depth);
        Ok(model)
    }
}

impl PredictArgs {
    pub fn new(model: PathBuf, input: PathBuf, output: PathBuf) -> PredictArgs {
        PredictArgs {
            model,
            input,
            output,
            hurried: false,
            scoring: Scoring::default(),
        }
    }
}

/// A table whose texts are in column `text`; its malformed lines (left out) are reported.
pub fn read_texts(path: &Path, text: &str) -> Result<Table> {
    let t = Table::read(path)?.with_text_column(text);
    if let Some(b) = t.bad_lines.first() {
        eprintln!(
            "{}: {} malformed line(s) skipped, first at line {}: {}",
            path.display(),
            t.bad_lines.len(),
            b.line,
            b.error
        );
    }
    Ok(t)
}

/// Examples from a labelled file; rows with a bad label are reported and left out.
fn examples(
    path: &Path,
    text: &str,
    limit: Option<usize>,
    seed: u64,
    unescape: bool,
) -> Result<(Vec<Example>, DataRef)> {
    let t = read_texts(path, text)?;
    let (mut ex, bad) = t.examples()?;
    if unescape {
        let mut changed = 0usize;
        for e in &mut ex {
            changed += usize::from(unescape_in_place(&mut e.text));
        }
        if changed > 0 {
            eprintln!(
                "{}: {changed} text(s) un-escaped (written-out \\uXXXX, HTML entities)",
                path.display()
            );
        }
    }
    if let Some((line, label)) = bad.first() {
        eprintln!(
            "{}: {} row(s) without a 0/1/2 label skipped, first at line {line} (label `{label}`)",
            path.display(),
            bad.len(),
        );
    }
    if let Some(n) = limit.filter(|&n| n < ex.len()) {
        Rng::new(seed).shuffle(&mut ex);
        ex.truncate(n);
    }
    let data = DataRef {
        path: path.display().to_string(),
        sha256: sha256_file(path).with_context(|| format!("cannot read {}", path.display()))?,
        rows: ex.len(),
    };
    Ok((ex, data))
}

/// What a person typed: collected files escape it (TweetEval: `\u2019`, `&amp;`). Whether
/// `text` changed. The one rule for training texts, validation texts and the texts a teacher
/// labels (their keys must match).
pub fn unescape_in_place(text: &mut String) -> bool {
    match flagship_platforms::html::unescape_collected(text) {
        std::borrow::Cow::Owned(clean) if clean != *text => {
            *text = clean;
            true
        }
        _ => false,
    }
}

/// Trains and writes the model folder `args.out` with its monitoring reference; returns its
/// card.
pub fn train(config: &Config, args: TrainArgs) -> Result<classifier::ModelCard> {
    let m = &config.model;
    let seed = args.seed.unwrap_or(m.seed);
    let unescape = !args.keep_escapes;
    let (train_set, train_ref) =
        examples(&args.train, &args.text_column, args.limit, seed, unescape)?;
    let (val_set, val_ref) = examples(
        &args.val,
        &args.text_column,
        args.val_limit,
        seed ^ 1,
        unescape,
    )?;
    let share =
        |s: &[Example]| s.iter().filter(|e| e.need_support).count() as f64 / s.len().max(1) as f64;
    println!(
        "train: {} examples ({:.1}% need support) from {}; validation: {} ({:.1}%) from {}",
        train_set.len(),
        100.0 * share(&train_set),
        args.train.display(),
        val_set.len(),
        100.0 * share(&val_set),
        args.val.display()
    );
    let data = BTreeMap::from([
        ("train".to_string(), train_ref),
        ("val".to_string(), val_ref),
    ]);
    let rate = args.expected_rate.unwrap_or(m.expected_need_support_rate);
    let mut operating = m.operating();
    if let Some(rule) = args.operating_point {
        operating.rule = rule;
    }
    let teacher_labels = args.teacher_labels(config);
    let card = match args.model_kind.unwrap_or(m.kind) {
        ModelKind::Linear if args.teacher_labels.is_some() => {
            bail!(
                "distillation (--teacher-labels) needs a transformer student, not the linear model"
            )
        }
        ModelKind::Linear => classifier::train_linear(
            &train_set,
            &val_set,
            &LinearOptions {
                seed,
                ..LinearOptions::default()
            },
            classifier::Tuning {
                expected_rate: rate,
                operating,
                business: &config.business,
            },
            &args.out,
            data,
        )?,
        ModelKind::Transformer => {
            let (base, opts) = transformer_options(config, &args, seed, rate, operating)?;
            // (The linear model leaves a config's `model.teacher_labels` to the transformer.)
            let teaching = match &teacher_labels {
                Some(path) => Some(crate::distill_cmd::teaching(
                    path,
                    &train_set,
                    &val_set,
                    &args,
                    opts.classes,
                )?),
                None => None,
            };
            let trained = flagship_model::train::train_taught(
                &base,
                &train_set,
                &val_set,
                teaching.as_ref(),
                &opts,
            )?;
            let card = trained.export(&args.out, data)?;
            if let Some(c) = &opts.checkpoint {
                flagship_model::resume::clear(&c.dir)?;
            }
            card
        }
    };
    save_monitor_reference(config, &args)?;
    print_card(&card, &args.out, rate);
    Ok(card)
}

/// The base checkpoint and the fine-tuning options: the flags over the config.
fn transformer_options(
    config: &Config,
    args: &TrainArgs,
    seed: u64,
    rate: f64,
    operating: flagship_core::operating::Settings,
) -> Result<(PathBuf, TrainOptions)> {
    let m = &config.model;
    let base = match args
        .base
        .clone()
        .or_else(|| m.base.as_ref().map(|b| config.base_dir.join(b)))
    {
        Some(b) => b,
        None => flagship_model::Checkpoint::default_base()?,
    };
    let from_config = TrainOptions::from_config(m);
    let opts = TrainOptions {
        epochs: args.epochs.unwrap_or(m.epochs),
        learning_rate: args.learning_rate.unwrap_or(m.learning_rate),
        batch_size: args.batch_size.unwrap_or(m.batch_size),
        max_length: args.max_length.unwrap_or(m.max_length),
        seed,
        class_weights: args.class_weights.unwrap_or(m.class_weights),
        expected_need_support_rate: rate,
        max_steps: args.max_steps,
        progress: true,
        pooling: args.pooling.unwrap_or(m.pooling),
        classes: args.classes.unwrap_or(m.classes),
        layer_decay: args.layer_decay.unwrap_or(m.layer_decay),
        layers: args.layers.or(m.layers),
        linear_weight: args.linear_weight.unwrap_or(m.linear_weight),
        operating,
        business: config.business.clone(),
        distill: flagship_model::distill::Distill {
            temperature: args.temperature.unwrap_or(m.distill_temperature),
            alpha: args.alpha.unwrap_or(m.distill_alpha),
        },
        precision: Some(flagship_model::Precision::of(
            args.precision.unwrap_or(m.precision),
            from_config.device,
        )),
        checkpoint: args
            .checkpoint_every
            .map(|every| flagship_model::resume::Checkpointing {
                dir: flagship_model::resume::beside(&args.out),
                every,
                pause_at: args.pause_at,
            }),
        ..from_config
    };
    println!(
        "fine-tuning {} on {:?} ({} threads, {:?}): {} epoch(s), batch {}, lr {}, max length {}",
        base.display(),
        opts.device,
        tch::get_num_threads(),
        opts.precision(),
        opts.epochs,
        opts.batch_size,
        opts.learning_rate,
        opts.max_length
    );
    Ok((base, opts))
}

/// The monitoring reference beside the model: its probabilities on the validation file, by
/// group.
fn save_monitor_reference(config: &Config, args: &TrainArgs) -> Result<()> {
    let val_table = Table::read(&args.val)?.with_text_column(&args.text_column);
    let model = Classifier::load(&args.out)?;
    let texts = val_table.texts()?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let preds = model.predict(&refs)?;
    let probs: Vec<f64> = preds.iter().map(|p| p.probability as f64).collect();
    let flags: Vec<bool> = preds.iter().map(|p| p.need_support).collect();
    let profile = crate::shared::profile(&val_table, &probs, &flags, &config.business)?;
    crate::shared::save_reference(&args.out, &profile)
}

/// What the model card says of validation, the operating point and the training run.
fn print_card(card: &classifier::ModelCard, out: &Path, rate: f64) {
    let v = &card.validation;
    println!(
        "model written to {}: validation F2 {:.4} at its best threshold {:.4} (re-weighted to {:.0}% need support; precision {:.3}, recall {:.3}), unweighted F2 {:.4}, ROC-AUC {:.4}",
        out.display(),
        v.tuned.f_beta,
        v.tuned.threshold,
        100.0 * rate,
        v.tuned.precision,
        v.tuned.recall,
        v.at_threshold.f_beta,
        v.roc_auc
    );
    if let Some(o) = &card.operating {
        let c = &o.chosen;
        println!(
            "operating point `{}`: threshold {:.4} (flags {:.0}% of validation at the expected rate; precision {:.3}, recall {:.3}, F2 {:.4})",
            o.settings.rule.name(),
            card.threshold,
            100.0 * c.flagged,
            c.precision,
            c.recall,
            c.f2
        );
    }
    if let Some(t) = &card.training {
        println!(
            "training: {} step(s), best epoch {}, {:.1} s, {} text(s) truncated",
            t.steps, t.best_epoch, t.seconds, t.truncated
        );
    }
}

pub fn predict(args: PredictArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let t = Table::read(&args.input)?.with_text_column(&args.scoring.text_column);
    let texts = t.texts()?;
    let model = args.scoring.load(&args.model)?;
    let pace = model
        .pace(args.hurried)
        .with_context(|| format!("--hurried: {}", args.model.display()))?;
    let bar = ProgressBar::new(texts.len() as u64).with_style(
        ProgressStyle::with_template(
            "{msg:>10} [{bar:30}] {pos}/{len} texts · {per_sec} · eta {eta}",
        )
        .expect("template"),
    );
    bar.set_message("predicting");
    let mut probs = Vec::with_capacity(texts.len());
    let mut flags = Vec::with_capacity(texts.len());
    let mut truncated = 0;
    for chunk in texts.chunks(1024) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        for p in model.predict_timed(&refs, pace)?.0 {
            probs.push(p.probability);
            flags.push(p.need_support);
            truncated += p.truncated as usize;
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    t.write_with_predictions(&args.output, &probs, &flags)?;
    let empty = texts.iter().filter(|s| s.trim().is_empty()).count();
    let cut = match model.card.max_length {
        0 => String::new(),
        n => format!(", {truncated} truncated to {n} tokens"),
    };
    println!(
        "{} rows → {}: {} flagged need_support (threshold {:.4}), {} empty text ({} missing){cut}, {:.1} s",
        texts.len(),
        args.output.display(),
        flags.iter().filter(|&&f| f).count(),
        model.threshold(),
        empty,
        t.null_texts(),
        started.elapsed().as_secs_f64()
    );
    if let Some((posts, read, top)) = model.reading()
        && posts > 0
    {
        println!(
            "read: {:.1}% of the layers' work ({read} layer passes for {posts} posts of {top} layers){}",
            100.0 * read as f64 / (posts as f64 * top as f64),
            if read < posts * top as u64 {
                " — early exit (`--full-depth` reads them all)"
            } else {
                ""
            }
        );
    }
    if !t.bad_lines.is_empty() {
        let q = args.output.with_extension("bad.jsonl");
        table::write_bad_lines(&q, &args.input, &t.bad_lines)?;
        println!(
            "{} malformed line(s) quarantined to {} (first: line {})",
            t.bad_lines.len(),
            q.display(),
            t.bad_lines[0].line
        );
    }
    if t.batch.column_by_name("label").is_some() {
        score_labelled(&t, &probs, model.threshold())?;
    }
    Ok(())
}

/// With labels in the input: F2 at the model's threshold, ROC-AUC and the trivial baselines.
fn score_labelled(t: &Table, probs: &[f32], threshold: f64) -> Result<()> {
    let targets = t.targets()?;
    let (mut p, mut y) = (Vec::new(), Vec::new());
    for (prob, target) in probs.iter().zip(&targets) {
        if let Some(need) = *target {
            p.push(*prob);
            y.push(need);
        }
    }
    if y.is_empty() {
        bail!("{}: no valid labels to score", t.path.display());
    }
    if y.len() < targets.len() {
        eprintln!(
            "{}: {} row(s) without a 0/1/2 label left out of the scores",
            t.path.display(),
            targets.len() - y.len()
        );
    }
    let at = scoring::score_at(&p, &y, threshold, 2.0);
    let always = scoring::score_at(&p, &y, f64::NEG_INFINITY, 2.0);
    let prevalence = y.iter().filter(|&&v| v).count() as f64 / y.len() as f64;
    // Uniform random guessing flags half of each class: TP = P/2, FN = P/2, FP = N/2.
    let random = 2.5 * prevalence / (4.5 * prevalence + 0.5 * (1.0 - prevalence));
    println!(
        "labelled: {} rows, {:.1}% need support — F2 {:.4} (precision {:.3}, recall {:.3}) at threshold {:.4}, ROC-AUC {:.4}; always-flag F2 {:.4}, random-guess F2 {:.4}",
        y.len(),
        100.0 * prevalence,
        at.f_beta,
        at.precision,
        at.recall,
        threshold,
        scoring::roc_auc(&p, &y),
        always.f_beta,
        random
    );
    Ok(())
}

#[derive(clap::Args)]
pub struct ExplainArgs {
    /// Model folder written by `flagship train`.
    #[arg(long)]
    pub model: PathBuf,
    /// JSONL, CSV or Parquet with a `text` column.
    #[arg(long)]
    pub input: PathBuf,
    /// Each text's words (JSONL: `text`, `probability`, `why`); written to a temporary name,
    /// then renamed.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Words (units) per text.
    #[arg(long, default_value_t = 3)]
    pub words: usize,
    /// `occlusion` (what the desk refines its words with), `scored` (the unit left out of the
    /// mean pool of the layer that decided the post, off the scoring pass: the words a
    /// flagged post comes with), `pooled` (the same at the last layer, one pass a post),
    /// `gradient` or `gradient-words` (before).
    #[arg(long, default_value = "occlusion")]
    pub attribution: flagship_model::explain::Attribution,
    /// Only the texts the model flags (what the desk explains).
    #[arg(long)]
    pub flagged: bool,
    /// At most this many texts (a seeded sample).
    #[arg(long)]
    pub limit: Option<usize>,
    /// The deletion test of every attribution: each text's top words removed against as many
    /// random words (3 draws); prints one JSON line per attribution and a table.
    #[arg(long)]
    pub deletion_test: bool,
    /// The column holding the texts.
    #[arg(long, default_value = TEXT_COLUMN)]
    pub text_column: String,
    /// Every variant reads every layer (no early exit), as the words were found before.
    #[arg(long)]
    pub full_depth: bool,
}

/// `flagship explain`: why a model would flag each text, and how faithful that is.
pub fn explain(args: ExplainArgs) -> Result<()> {
    use flagship_model::explain::Attribution;
    let t = Table::read(&args.input)?.with_text_column(&args.text_column);
    let mut texts = t.texts()?;
    let mut model = Classifier::load(&args.model)?;
    model.set_early_exit(!args.full_depth);
    if let Some(n) = args.limit.filter(|&n| n < texts.len()) {
        Rng::new(7).shuffle(&mut texts);
        texts.truncate(n);
    }
    let mut refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let p0 = model.predict(&refs)?;
    if args.flagged {
        refs = refs
            .iter()
            .zip(&p0)
            .filter(|(_, p)| p.need_support)
            .map(|(t, _)| *t)
            .collect();
    }
    eprintln!(
        "explain: {} texts from {}{}",
        refs.len(),
        args.input.display(),
        if args.flagged {
            " (the flagged ones)"
        } else {
            ""
        }
    );
    if let Some(out) = &args.output {
        let why = model.explain_with(&refs, args.words, args.attribution)?;
        let p = model.predict(&refs)?;
        let mut lines = String::new();
        for ((text, w), p) in refs.iter().zip(&why).zip(&p) {
            lines.push_str(&serde_json::to_string(&serde_json::json!({
                "text": text,
                "probability": p.probability,
                "why": w,
            }))?);
            lines.push('\n');
        }
        let tmp = flagship_store::fs::temp_beside(out)?;
        std::fs::write(tmp.path(), lines)?;
        flagship_store::fs::persist(tmp, out)?;
        println!("explain: {} texts' words → {}", refs.len(), out.display());
    }
    if args.deletion_test {
        println!(
            "| attribution | texts | words removed | P drop, top words | P drop, as many random words | top > random | function words shown | ms / text |\n|---|---|---|---|---|---|---|---|"
        );
        for how in Attribution::ALL {
            let started = std::time::Instant::now();
            let why = match model.explain_with(&refs, args.words, how) {
                Ok(w) => w,
                // Not every model has what an attribution needs (a mean pool).
                Err(e) if matches!(how, Attribution::Pooled | Attribution::Scored) => {
                    println!("| {} | — ({e}) | | | | | | |", how.as_str());
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let ms = started.elapsed().as_secs_f64() * 1e3 / refs.len().max(1) as f64;
            let shown: Vec<&str> = why.iter().flatten().map(|w| w.word.as_str()).collect();
            let function = shown
                .iter()
                .filter(|w| flagship_core::words::is_function_word(w))
                .count() as f64
                / shown.len().max(1) as f64;
            let d = model.deletion_test(&refs, args.words, how, 3, 11)?;
            eprintln!(
                "{}",
                serde_json::json!({
                    "attribution": how.as_str(),
                    "texts": d.texts,
                    "unexplained": d.unexplained,
                    "words_removed": d.words_removed,
                    "top_drop": d.top_drop,
                    "random_drop": d.random_drop,
                    "top_beats_random": d.top_beats_random,
                    "function_words_shown": function,
                    "ms_per_text": ms,
                })
            );
            println!(
                "| {} | {} | {:.2} | {:.3} | {:.3} | {:.0} % | {:.0} % | {:.1} |",
                how.as_str(),
                d.texts,
                d.words_removed,
                d.top_drop,
                d.random_drop,
                d.top_beats_random * 100.0,
                function * 100.0,
                ms
            );
        }
    }
    Ok(())
}

/// The parity check of a base checkpoint against `transformers` (`check-model --reference`):
/// the reference's texts tokenised here must give its token ids, and the encoder's last hidden
/// state on them must equal its own within 1e-4 (f32, over real tokens).
pub fn parity(ck: &flagship_model::Checkpoint, reference: &Path) -> Result<()> {
    use tch::{Device, Kind, Tensor};
    const TOLERANCE: f64 = 1e-4;
    let r: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(reference)
        .with_context(|| format!("cannot read {}", reference.display()))?
        .into_iter()
        .collect();
    let side = reference.with_extension("json");
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&side)
            .with_context(|| format!("cannot read {}", side.display()))?,
    )
    .with_context(|| format!("{}: not JSON", side.display()))?;
    let texts: Vec<&str> = meta["texts"]
        .as_array()
        .context("the reference names no texts")?
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    let max_length = meta["max_length"].as_u64().unwrap_or(64) as usize;
    let enc = flagship_model::TextEncoder::from_file(&ck.dir.join("tokenizer.json"), max_length, 0)
        .map_err(|e| anyhow::anyhow!("{}: {e}", ck.dir.join("tokenizer.json").display()))?;
    let ours = enc
        .encode(&texts)
        .map_err(|e| anyhow::anyhow!("tokenising: {e}"))?;
    let want = meta["ids"].as_array().context("the reference has no ids")?;
    for (i, (mine, want)) in ours.iter().zip(want).enumerate() {
        let want: Vec<i64> = want
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_i64()).collect())
            .unwrap_or_default();
        if mine.ids != want {
            bail!(
                "text {i} ({:?}): token ids differ from transformers'",
                texts[i]
            );
        }
    }
    let (_vs, model, _) = flagship_model::SequenceClassifier::from_checkpoint(
        ck,
        flagship_model::HeadSpec::CLS2,
        Device::Cpu,
        false,
    )?;
    let (ids, mask, want) = (
        &r["input_ids"],
        &r["attention_mask"],
        &r["last_hidden_state"],
    );
    let hidden = tch::no_grad(|| {
        model
            .encoder
            .forward(ids, Some(mask), flagship_model::Mode::EVAL)
    });
    let keep = mask.unsqueeze(-1).to_kind(Kind::Float);
    let diff = ((&hidden - want).abs() * keep).max().double_value(&[]);
    let tokens = mask.sum(Kind::Int64).int64_value(&[]);
    println!(
        "parity with transformers: {} texts, {tokens} tokens, token ids equal; last hidden state largest |Δ| {diff:.2e} (tolerance {TOLERANCE:.0e})",
        texts.len()
    );
    if diff > TOLERANCE {
        bail!("the last hidden state differs from transformers' by {diff:.2e} (> {TOLERANCE:.0e})");
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct ExitsArgs {
    /// Model folder written by `flagship train` (its exits are replaced).
    #[arg(long)]
    pub model: PathBuf,
    /// Texts the exit heads are fitted on (default: the training file the card names).
    #[arg(long)]
    pub train: Option<PathBuf>,
    /// Texts the margins are set on (default: the validation file the card names).
    #[arg(long)]
    pub val: Option<PathBuf>,
    /// The share of validation decisions the exits may change (default: `model.early_exit`).
    #[arg(long)]
    pub budget: Option<f64>,
    /// …and in a hurry, while a live loop has fallen behind (default:
    /// `model.early_exit_hurried`; at most `--budget`: none).
    #[arg(long)]
    pub hurried_budget: Option<f64>,
    /// The column holding the texts.
    #[arg(long, default_value = TEXT_COLUMN)]
    pub text_column: String,
}

/// `flagship exits`: fits a trained model's early exits anew (a model trained before exits
/// existed, another budget, other texts) — `train` does it for every new model.
pub fn exits(config: &Config, args: ExitsArgs) -> Result<()> {
    let mut model = Classifier::load(&args.model)?;
    let budgets = flagship_model::exit::Budgets {
        careful: args.budget.unwrap_or(config.model.early_exit),
        hurried: args
            .hurried_budget
            .unwrap_or(config.model.early_exit_hurried),
    };
    flagship_core::config::check_early_exit(budgets.careful)
        .map_err(|e| anyhow::anyhow!("--budget: {e}"))?;
    flagship_core::config::check_early_exit(budgets.hurried)
        .map_err(|e| anyhow::anyhow!("--hurried-budget: {e}"))?;
    let file = |given: &Option<PathBuf>, key: &str| -> Result<PathBuf> {
        match given {
            Some(p) => Ok(p.clone()),
            None => model
                .card
                .data
                .get(key)
                .map(|d| PathBuf::from(&d.path))
                .with_context(|| {
                    format!(
                        "{}: the card names no `{key}` file: pass --{key} FILE",
                        args.model.display()
                    )
                }),
        }
    };
    let (train_path, val_path) = (file(&args.train, "train")?, file(&args.val, "val")?);
    let read = |p: &Path| -> Result<Vec<String>> {
        Ok(Table::read(p)?
            .with_text_column(&args.text_column)
            .texts()?)
    };
    let (train, val) = (read(&train_path)?, read(&val_path)?);
    let train: Vec<&str> = train.iter().map(String::as_str).collect();
    let val: Vec<&str> = val.iter().map(String::as_str).collect();
    let started = std::time::Instant::now();
    let at = |exits: &[flagship_model::exit::ExitPoint]| -> String {
        let at: Vec<String> = exits
            .iter()
            .map(|e| {
                format!(
                    "after layer {}: {:.1}% (margin {:.2})",
                    e.layer,
                    100.0 * e.exited,
                    e.margin
                )
            })
            .collect();
        if at.is_empty() {
            "none".to_owned()
        } else {
            at.join(", ")
        }
    };
    match model.fit_exits(&train, &val, budgets)? {
        Some(r) => {
            let set = |s: &flagship_model::exit::MarginSet| {
                format!(
                    "{} — {:.2}% of decisions as the full model's, {:.1}% of the layers' work",
                    at(&s.exits),
                    100.0 * s.agreement,
                    100.0 * s.reading
                )
            };
            println!(
                "exits: {}, on validation ({} posts); fitted on {} texts in {:.1} s",
                set(&r.careful),
                r.validation,
                r.fitted_on,
                started.elapsed().as_secs_f64()
            );
            match &r.hurried {
                Some(h) => println!("exits in a hurry (budget {}): {}", h.budget, set(h)),
                None => println!(
                    "exits in a hurry: none (a budget of {} reads no less)",
                    budgets.hurried
                ),
            }
        }
        None => println!(
            "exits: none within a budget of {} — every post reads every layer",
            budgets.careful
        ),
    }
    Ok(())
}
