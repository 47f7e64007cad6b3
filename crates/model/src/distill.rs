//! Distillation: a teacher's soft labels, and the student's loss on them.
//!
//! A larger model (the teacher) scores texts once — `flagship teacher-labels` writes its logits
//! per text into a soft-label file ([`SoftLabels`]) — and a student of the served shape learns
//! from them (`flagship train --teacher-labels FILE`): the KL divergence between the teacher's
//! and the student's class distributions at a temperature *T* (scaled by *T*², Hinton et al.
//! 2015), mixed with the usual cross-entropy on the hard labels by `alpha`.
//!
//! A soft label is keyed by [`key`] (a hash of the text as trained, after the training text's
//! un-escaping), so labelled rows need no copy of their text; unlabelled posts carry their text
//! and are added to the training set with the teacher's label only.
//!
//! **The leak guard** ([`teaching`]): the teacher may have trained on posts the student is
//! scored on (the demo's posts are TweetEval training rows). A soft label is therefore used only
//! for one of the student's own training examples, or for an unlabelled post that is in none of
//! the run's held-out sets (its validation set and whatever else the caller names); every soft
//! label left out is counted, by reason.
//!
//! It reads and writes the soft-label file (JSONL, gzip when named `.gz`) and never loads the
//! teacher: scoring is [`crate::Classifier::class_logits`]' job.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::{Kind, Reduction, Tensor};

use crate::ModelError;
use crate::classifier::DataRef;
use crate::train::Example;

/// One text's soft label: the teacher's logits, one per class (negative, neutral, positive).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SoftLabel {
    /// [`key`] of the text.
    pub key: String,
    /// The text itself, for an unlabelled post (labelled rows are matched by key only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Where the text came from (the input file's name).
    #[serde(default)]
    pub source: String,
    pub logits: Vec<f32>,
}

impl SoftLabel {
    /// An unlabelled post: it joins the training set with this label only.
    pub fn is_unlabelled(&self) -> bool {
        self.text.is_some()
    }
}

/// The soft-label key of a text: the first 16 bytes of its SHA-256, hex.
pub fn key(text: &str) -> String {
    Sha256::digest(text.as_bytes())[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A soft-label file in memory.
#[derive(Debug, Clone, Default)]
pub struct SoftLabels {
    pub rows: Vec<SoftLabel>,
}

impl SoftLabels {
    /// Classes per label (every row has the same number).
    pub fn classes(&self) -> usize {
        self.rows.first().map_or(0, |r| r.logits.len())
    }

    /// Reads a soft-label file; a malformed line is an error naming the file, line and field.
    pub fn read(path: &Path) -> Result<SoftLabels, ModelError> {
        let bad = |line: usize, message: String| ModelError::BadFile {
            path: path.to_owned(),
            message: format!("line {line}: {message}"),
        };
        let file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
        let reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
            Box::new(flate2::read::GzDecoder::new(file))
        } else {
            Box::new(file)
        };
        let mut rows: Vec<SoftLabel> = Vec::new();
        for (i, line) in BufReader::new(reader).lines().enumerate() {
            let line = line.map_err(|e| ModelError::io(path, e))?;
            if line.trim().is_empty() {
                continue;
            }
            let row: SoftLabel =
                serde_json::from_str(&line).map_err(|e| bad(i + 1, e.to_string()))?;
            if !(2..=3).contains(&row.logits.len()) {
                return Err(bad(
                    i + 1,
                    format!("`logits` has {} values, expected 2 or 3", row.logits.len()),
                ));
            }
            if let Some(first) = rows.first()
                && first.logits.len() != row.logits.len()
            {
                return Err(bad(
                    i + 1,
                    format!(
                        "`logits` has {} values, the first line {}",
                        row.logits.len(),
                        first.logits.len()
                    ),
                ));
            }
            if row.logits.iter().any(|v| !v.is_finite()) {
                return Err(bad(
                    i + 1,
                    "`logits` holds a value that is not finite".into(),
                ));
            }
            if row.text.as_deref().is_some_and(|t| key(t) != row.key) {
                return Err(bad(i + 1, "`key` is not the key of `text`".into()));
            }
            rows.push(row);
        }
        if rows.is_empty() {
            return Err(bad(0, "no soft labels".into()));
        }
        Ok(SoftLabels { rows })
    }

    /// Writes the file (gzip when named `.gz`) under a temporary name, then renames it.
    pub fn write(&self, path: &Path) -> Result<(), ModelError> {
        let tmp = tmp_name(path);
        let file = std::fs::File::create(&tmp).map_err(|e| ModelError::io(&tmp, e))?;
        let mut out: Box<dyn Write> = if path.extension().is_some_and(|e| e == "gz") {
            Box::new(flate2::write::GzEncoder::new(
                file,
                flate2::Compression::best(),
            ))
        } else {
            Box::new(file)
        };
        let write = |out: &mut Box<dyn Write>| -> std::io::Result<()> {
            for r in &self.rows {
                // Four decimals: far below what a temperature-scaled softmax can tell apart.
                let rounded = SoftLabel {
                    logits: r.logits.iter().map(|v| (v * 1e4).round() / 1e4).collect(),
                    ..r.clone()
                };
                serde_json::to_writer(&mut *out, &rounded)?;
                out.write_all(b"\n")?;
            }
            out.flush()
        };
        write(&mut out).map_err(|e| ModelError::io(&tmp, e))?;
        drop(out);
        std::fs::rename(&tmp, path).map_err(|e| ModelError::io(path, e))
    }
}

fn tmp_name(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// What the student learns from the teacher: the temperature and the soft loss's weight.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Distill {
    /// Softmax temperature of both distributions (> 0; 1 = the teacher's own probabilities).
    pub temperature: f64,
    /// Weight of the soft loss; the hard labels' cross-entropy gets `1 − alpha`.
    pub alpha: f64,
}

impl Distill {
    pub fn check(&self) -> Result<(), ModelError> {
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(ModelError::Data(format!(
                "distillation temperature must be > 0, got {}",
                self.temperature
            )));
        }
        if !(0.0..=1.0).contains(&self.alpha) {
            return Err(ModelError::Data(format!(
                "distillation alpha must lie in [0, 1], got {}",
                self.alpha
            )));
        }
        Ok(())
    }
}

/// Why soft labels went unused, counted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Guard {
    /// Training examples with a soft label.
    pub matched: usize,
    /// Training examples without one (hard label only).
    pub unmatched: usize,
    /// Unlabelled posts added to the training set.
    pub unlabelled: usize,
    /// Unlabelled posts left out because a held-out set holds their text (the leak guard).
    pub held_out: usize,
    /// Unlabelled posts left out because they repeat a training text or an earlier post.
    pub repeated: usize,
    /// Labelled soft labels no training example matched (another run's examples).
    pub unused: usize,
}

/// The soft labels of one run, lined up with its examples.
#[derive(Debug, Clone, Default)]
pub struct Teaching {
    /// The teacher's logits for each training example, in order (`None`: hard label only).
    pub soft: Vec<Option<Vec<f32>>>,
    /// Unlabelled posts and their logits, appended to the training set.
    pub unlabelled: Vec<(String, Vec<f32>)>,
    /// The unlabelled posts kept, by source.
    pub sources: BTreeMap<String, usize>,
    pub guard: Guard,
    /// Who the teacher was (the soft-label file's manifest says; the caller fills it in).
    pub teacher: String,
    /// The soft-label file (the caller fills it in).
    pub file: Option<DataRef>,
}

/// What a distilled model's card (`flagship.json`) records of its teacher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DistillRecord {
    pub teacher: String,
    pub soft_labels: Option<DataRef>,
    pub temperature: f64,
    pub alpha: f64,
    /// The unlabelled posts trained on, by source.
    pub unlabelled: BTreeMap<String, usize>,
    pub guard: Guard,
}

impl DistillRecord {
    pub fn new(t: &Teaching, d: Distill) -> DistillRecord {
        DistillRecord {
            teacher: t.teacher.clone(),
            soft_labels: t.file.clone(),
            temperature: d.temperature,
            alpha: d.alpha,
            unlabelled: t.sources.clone(),
            guard: t.guard.clone(),
        }
    }
}

/// A soft-label file's manifest (`FILE.json` beside `FILE`): the teacher that made it, what it
/// scored and the file's SHA-256, so a student's card can name its teacher without its weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The teacher: its folder, family, base and validation figures, in words.
    pub teacher: String,
    /// The teacher's card, as it was.
    pub teacher_card: serde_json::Value,
    pub soft_labels: DataRef,
    /// Rows scored, by input file: labelled (matched by key) and unlabelled (with their text).
    pub labelled: BTreeMap<String, usize>,
    pub unlabelled: BTreeMap<String, usize>,
    /// Posts left out because a held-out file holds their text, by that file.
    pub held_out: BTreeMap<String, usize>,
}

impl Manifest {
    /// The manifest's path for a soft-label file.
    pub fn path_for(soft_labels: &Path) -> PathBuf {
        let name = soft_labels
            .file_name()
            .unwrap_or_default()
            .to_string_lossy();
        soft_labels.with_file_name(format!("{name}.json"))
    }

    pub fn read(path: &Path) -> Result<Manifest, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| ModelError::BadFile {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    pub fn write(&self, path: &Path) -> Result<(), ModelError> {
        let tmp = tmp_name(path);
        let text = serde_json::to_string_pretty(self).expect("serialisable") + "\n";
        std::fs::write(&tmp, text).map_err(|e| ModelError::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| ModelError::io(path, e))
    }
}

/// Lines up `labels` with the training examples `train` (by [`key`] of their text) and keeps
/// the unlabelled posts none of `held_out` holds (the run's validation texts and any other
/// evaluation set: the leak guard). Refuses a soft-label file whose class count is not
/// `classes`.
pub fn teaching(
    labels: &SoftLabels,
    train: &[Example],
    held_out: &[&str],
    classes: usize,
) -> Result<Teaching, ModelError> {
    if labels.classes() != classes {
        return Err(ModelError::Data(format!(
            "the soft labels have {} classes, the student {classes}: train the student with \
             the teacher's classes",
            labels.classes()
        )));
    }
    // A key's first row counts (a later one repeats it).
    let mut by_key: HashMap<&str, &SoftLabel> = HashMap::new();
    for r in &labels.rows {
        by_key.entry(r.key.as_str()).or_insert(r);
    }
    let held: HashSet<String> = held_out.iter().map(|t| key(t)).collect();
    let mut seen: HashSet<String> = HashSet::new();
    let mut guard = Guard::default();
    let soft: Vec<Option<Vec<f32>>> = train
        .iter()
        .map(|e| {
            let k = key(&e.text);
            let hit = by_key.get(k.as_str()).map(|r| r.logits.clone());
            seen.insert(k);
            match hit {
                Some(l) => {
                    guard.matched += 1;
                    Some(l)
                }
                None => {
                    guard.unmatched += 1;
                    None
                }
            }
        })
        .collect();
    let mut unlabelled = Vec::new();
    let mut sources = BTreeMap::new();
    for r in &labels.rows {
        match &r.text {
            None => {
                if !seen.contains(&r.key) {
                    guard.unused += 1;
                }
            }
            Some(text) => {
                if held.contains(&r.key) {
                    guard.held_out += 1;
                } else if !seen.insert(r.key.clone()) {
                    guard.repeated += 1;
                } else {
                    guard.unlabelled += 1;
                    *sources.entry(r.source.clone()).or_default() += 1;
                    unlabelled.push((text.clone(), r.logits.clone()));
                }
            }
        }
    }
    Ok(Teaching {
        soft,
        unlabelled,
        sources,
        guard,
        teacher: String::new(),
        file: None,
    })
}

/// The soft loss of a batch: KL(teacher ‖ student) at temperature `t`, times `t`², averaged
/// over the rows whose `mask` is 1 (0 where no row has a soft label).
pub fn soft_loss(student: &Tensor, teacher: &Tensor, mask: &Tensor, t: f64) -> Tensor {
    let log_s = (student.to_kind(Kind::Float) / t).log_softmax(-1, Kind::Float);
    let log_t = (teacher / t).log_softmax(-1, Kind::Float);
    let kl = (log_t.exp() * (&log_t - log_s)).sum_dim_intlist(-1, false, Kind::Float);
    (kl * mask).sum(Kind::Float) / mask.sum(Kind::Float).clamp_min(1.0) * (t * t)
}

/// The hard loss of a batch: cross-entropy over the rows with a label (`target` ≠ −100),
/// averaged over them (0 where none has one).
pub fn hard_loss(student: &Tensor, target: &Tensor, weights: Option<&Tensor>) -> Tensor {
    let per_row = student.cross_entropy_loss(target, weights, Reduction::None, -100, 0.0);
    let labelled = target.ne(-100).to_kind(Kind::Float);
    per_row.sum(Kind::Float) / labelled.sum(Kind::Float).clamp_min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(text: &str) -> Example {
        Example {
            text: text.into(),
            need_support: true,
            label: Some(0),
        }
    }

    fn row(text: &str, unlabelled: bool, logits: [f32; 3]) -> SoftLabel {
        SoftLabel {
            key: key(text),
            text: unlabelled.then(|| text.to_owned()),
            source: "t".into(),
            logits: logits.to_vec(),
        }
    }

    #[test]
    fn the_leak_guard_keeps_held_out_posts_out_and_counts_every_label() {
        let labels = SoftLabels {
            rows: vec![
                row("a", false, [1.0, 0.0, -1.0]),
                row("other run", false, [0.0, 0.0, 0.0]),
                row("val text", true, [0.0, 1.0, 0.0]),
                row("new post", true, [2.0, 0.0, 0.0]),
                row("a", true, [2.0, 0.0, 0.0]),
                row("new post", true, [2.0, 0.0, 0.0]),
            ],
        };
        let t = teaching(&labels, &[ex("a"), ex("b")], &["val text"], 3).unwrap();
        assert_eq!(t.soft, vec![Some(vec![1.0, 0.0, -1.0]), None]);
        assert_eq!(
            t.unlabelled,
            vec![("new post".to_owned(), vec![2.0, 0.0, 0.0])]
        );
        assert_eq!(
            t.guard,
            Guard {
                matched: 1,
                unmatched: 1,
                unlabelled: 1,
                held_out: 1,
                repeated: 2,
                unused: 1,
            }
        );
        let e = teaching(&labels, &[ex("a")], &[], 2).unwrap_err();
        assert!(e.to_string().contains("3 classes, the student 2"), "{e}");
    }

    #[test]
    fn a_soft_label_file_round_trips_and_bad_lines_are_named() {
        let dir = std::env::temp_dir().join(format!("flagship-soft-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("soft.jsonl.gz");
        let labels = SoftLabels {
            rows: vec![
                row("a", false, [1.23456, 0.0, -1.0]),
                row("b", true, [0.0, 1.0, 2.0]),
            ],
        };
        labels.write(&path).unwrap();
        let back = SoftLabels::read(&path).unwrap();
        assert_eq!(back.rows[0].logits, vec![1.2346, 0.0, -1.0]);
        assert_eq!(back.rows[1], labels.rows[1]);

        let plain = dir.join("bad.jsonl");
        let good = serde_json::to_string(&labels.rows[0]).unwrap();
        for (line, want) in [
            (
                r#"{"key":"x","logits":[1.0]}"#,
                "line 2: `logits` has 1 values",
            ),
            (
                r#"{"key":"x","logits":[1.0,2.0]}"#,
                "line 2: `logits` has 2 values, the first line 3",
            ),
            (
                r#"{"key":"x","text":"b","logits":[1,2,3]}"#,
                "line 2: `key` is not the key",
            ),
            (r#"{"key":"x"}"#, "line 2: missing field `logits`"),
        ] {
            std::fs::write(&plain, format!("{good}\n{line}\n")).unwrap();
            let e = SoftLabels::read(&plain).unwrap_err().to_string();
            assert!(e.contains("bad.jsonl") && e.contains(want), "{e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_soft_loss_is_zero_at_the_teacher_and_grows_away_from_it() {
        let teacher = Tensor::from_slice2(&[[2.0f32, 0.0, -1.0], [0.0, 0.0, 3.0]]);
        let mask = Tensor::from_slice(&[1.0f32, 1.0]);
        let same = soft_loss(&teacher, &teacher, &mask, 2.0).double_value(&[]);
        assert!(same.abs() < 1e-6, "{same}");
        let other = Tensor::from_slice2(&[[-1.0f32, 0.0, 2.0], [3.0, 0.0, 0.0]]);
        let away = soft_loss(&other, &teacher, &mask, 2.0).double_value(&[]);
        assert!(away > 0.1, "{away}");
        // Rows without a soft label do not count; none at all gives 0, never NaN.
        let first = Tensor::from_slice(&[1.0f32, 0.0]);
        let one = soft_loss(&other, &teacher, &first, 2.0).double_value(&[]);
        let only = soft_loss(
            &other.narrow(0, 0, 1),
            &teacher.narrow(0, 0, 1),
            &first.narrow(0, 0, 1),
            2.0,
        )
        .double_value(&[]);
        assert!((one - only).abs() < 1e-6);
        let none = soft_loss(&other, &teacher, &Tensor::from_slice(&[0.0f32, 0.0]), 2.0);
        assert_eq!(none.double_value(&[]), 0.0);
        // The hard loss averages over labelled rows only.
        let target = Tensor::from_slice(&[0i64, -100]);
        let hard = hard_loss(&other, &target, None).double_value(&[]);
        let alone = other
            .narrow(0, 0, 1)
            .cross_entropy_for_logits(&Tensor::from_slice(&[0i64]))
            .double_value(&[]);
        assert!((hard - alone).abs() < 1e-6, "{hard} {alone}");
        let unlabelled = Tensor::from_slice(&[-100i64, -100]);
        assert_eq!(hard_loss(&other, &unlabelled, None).double_value(&[]), 0.0);
    }
}
