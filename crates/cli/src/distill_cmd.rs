//! `flagship teacher-labels`: a teacher model scores labelled and unlabelled posts once; its
//! logits become a soft-label file and its manifest. And the other half, for `flagship train
//! --teacher-labels`: the file read back, checked against its manifest, and lined up with a
//! run's examples behind the leak guard ([`flagship_model::distill::teaching`]).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use flagship_core::labels::Example;
use flagship_model::classifier::{DataRef, sha256_file};
use flagship_model::distill::{self, Manifest, SoftLabel, SoftLabels, Teaching};
use indicatif::{ProgressBar, ProgressStyle};

use crate::model_cmd::{Scoring, TrainArgs, read_texts, unescape_in_place};

#[derive(clap::Args)]
pub struct Args {
    /// The teacher: a transformer model folder written by `flagship train`.
    #[arg(long)]
    pub model: PathBuf,
    /// A file to score (JSONL, CSV or Parquet with a `text` column). One with a `label`
    /// column is labelled: its rows are matched to a student's training examples by their
    /// text's key. One without is unlabelled posts: their text is kept, to train on. A
    /// `source` column names each row's source (else the file's name). Repeatable.
    #[arg(long = "input", required = true)]
    pub inputs: Vec<PathBuf>,
    /// An evaluation set whose texts are never scored (the leak guard). Repeatable.
    #[arg(long)]
    pub holdout: Vec<PathBuf>,
    /// The soft-label file to write (`.jsonl.gz` or `.jsonl`); its manifest is `OUT.json`.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub scoring: Scoring,
    /// Key the texts as the files write them (as `train --keep-escapes` trains on them).
    #[arg(long)]
    pub keep_escapes: bool,
}

/// Texts as a run trains on them (un-escaped unless `keep_escapes`).
fn clean(mut texts: Vec<String>, keep_escapes: bool) -> Vec<String> {
    if !keep_escapes {
        for t in &mut texts {
            unescape_in_place(t);
        }
    }
    texts
}

/// The keys of every text in the held-out files (un-escaped as training texts are).
fn held_out_keys(
    files: &[PathBuf],
    column: &str,
    keep_escapes: bool,
) -> Result<Vec<(String, HashSet<String>)>> {
    files
        .iter()
        .map(|f| {
            let t = read_texts(f, column)?;
            let keys = clean(t.texts()?, keep_escapes)
                .iter()
                .map(|s| distill::key(s))
                .collect();
            Ok((f.display().to_string(), keys))
        })
        .collect()
}

pub fn run(args: Args) -> Result<()> {
    let started = std::time::Instant::now();
    let teacher = args.scoring.load(&args.model)?;
    let column = &args.scoring.text_column;
    let held = held_out_keys(&args.holdout, column, args.keep_escapes)?;
    let mut rows: Vec<SoftLabel> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let (mut labelled, mut unlabelled, mut held_out) =
        (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    for input in &args.inputs {
        let t = read_texts(input, column)?;
        let texts = clean(t.texts()?, args.keep_escapes);
        let has_label = t.has_column("label");
        let name = input
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let sources: Vec<String> = if t.has_column("source") {
            t.string_column("source")?
                .into_iter()
                .map(|s| s.unwrap_or_else(|| name.clone()))
                .collect()
        } else {
            vec![name.clone(); texts.len()]
        };
        let mut todo: Vec<(String, String, String)> = Vec::new();
        for (text, source) in texts.into_iter().zip(sources) {
            let k = distill::key(&text);
            if let Some((file, _)) = held.iter().find(|(_, keys)| keys.contains(&k)) {
                *held_out.entry(file.clone()).or_insert(0usize) += 1;
                continue;
            }
            if text.trim().is_empty() || !seen.insert(k.clone()) {
                continue;
            }
            todo.push((k, text, source));
        }
        let bar = ProgressBar::new(todo.len() as u64).with_style(
            ProgressStyle::with_template(
                "{msg:>10} [{bar:30}] {pos}/{len} texts · {per_sec} · eta {eta}",
            )
            .expect("template"),
        );
        bar.set_message(name.clone());
        for chunk in todo.chunks(1024) {
            let refs: Vec<&str> = chunk.iter().map(|(_, t, _)| t.as_str()).collect();
            let logits = teacher.class_logits(&refs)?;
            for ((k, text, source), logits) in chunk.iter().zip(logits) {
                rows.push(SoftLabel {
                    key: k.clone(),
                    text: (!has_label).then(|| text.clone()),
                    source: source.clone(),
                    logits,
                });
            }
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        let tally = if has_label {
            &mut labelled
        } else {
            &mut unlabelled
        };
        tally.insert(name.clone(), todo.len());
        println!(
            "{}: {} {} text(s) scored",
            input.display(),
            todo.len(),
            if has_label { "labelled" } else { "unlabelled" }
        );
    }
    if rows.is_empty() {
        bail!("nothing to label: every input text was empty, repeated or held out");
    }
    if let Some(dir) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let labels = SoftLabels { rows };
    labels.write(&args.out)?;
    let sha256 = sha256_file(&args.out)?;
    let card = &teacher.card;
    let v = &card.validation;
    let manifest = Manifest {
        teacher: format!(
            "{} ({}, {} classes) fine-tuned from {}, validation F2 {:.4} at {:.3}, ROC-AUC {:.4}",
            args.model.display(),
            card.family.map(|f| f.prefix()).unwrap_or("linear"),
            card.classes,
            card.base_model
                .as_ref()
                .map(|b| format!(
                    "{} (weights {})",
                    b.path,
                    &b.sha256[..b.sha256.len().min(12)]
                ))
                .unwrap_or_else(|| "?".into()),
            v.tuned.f_beta,
            v.tuned.threshold,
            v.roc_auc
        ),
        teacher_card: serde_json::to_value(card)?,
        soft_labels: DataRef {
            path: args.out.display().to_string(),
            sha256: sha256.clone(),
            rows: labels.rows.len(),
        },
        labelled,
        unlabelled,
        held_out,
    };
    let manifest_path = Manifest::path_for(&args.out);
    manifest.write(&manifest_path)?;
    println!(
        "{} soft label(s) → {} (sha256 {sha256}), manifest {}; {} held out; {:.1} s",
        labels.rows.len(),
        args.out.display(),
        manifest_path.display(),
        manifest.held_out.values().sum::<usize>(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The soft labels of a training run: the file read and checked against its manifest (its
/// SHA-256; a file with no manifest is used with its teacher unnamed), lined up with `train`,
/// with the validation texts and `args.holdout`'s kept out of the unlabelled posts.
pub fn teaching(
    path: &Path,
    train: &[Example],
    val: &[Example],
    args: &TrainArgs,
    classes: u8,
) -> Result<Teaching> {
    let labels = SoftLabels::read(path)?;
    let sha256 = sha256_file(path).with_context(|| format!("cannot read {}", path.display()))?;
    let manifest_path = Manifest::path_for(path);
    let teacher = if manifest_path.exists() {
        let m = Manifest::read(&manifest_path)?;
        if m.soft_labels.sha256 != sha256 {
            bail!(
                "{}: SHA-256 {sha256}, its manifest {} says {}: the file changed after the teacher wrote it",
                path.display(),
                manifest_path.display(),
                m.soft_labels.sha256
            );
        }
        m.teacher
    } else {
        eprintln!(
            "{}: no manifest ({}): the teacher is unnamed in the card",
            path.display(),
            manifest_path.display()
        );
        "unnamed (no manifest)".into()
    };
    let mut held: Vec<String> = val.iter().map(|e| e.text.clone()).collect();
    for f in &args.holdout {
        let t = read_texts(f, &args.text_column)?;
        held.extend(clean(t.texts()?, args.keep_escapes));
    }
    let held: Vec<&str> = held.iter().map(String::as_str).collect();
    let mut t = distill::teaching(&labels, train, &held, usize::from(classes))?;
    t.teacher = teacher;
    t.file = Some(DataRef {
        path: path.display().to_string(),
        sha256,
        rows: labels.rows.len(),
    });
    let g = &t.guard;
    let sources = if t.sources.is_empty() {
        String::new()
    } else {
        let each: Vec<String> = t.sources.iter().map(|(s, n)| format!("{s} {n}")).collect();
        format!(" ({})", each.join(", "))
    };
    println!(
        "distillation: {} of {} training examples have a soft label; {} unlabelled post(s) \
         added{sources}; left out: {} held out (leak guard), {} repeated",
        g.matched,
        train.len(),
        g.unlabelled,
        g.held_out,
        g.repeated
    );
    Ok(t)
}
