//! Checkpoints a fine-tuning run resumes from: a long run (the MPNet teacher: about 50
//! minutes an epoch on two cores) that is stopped — a reboot, a killed session, `--pause-at`
//! — goes on from its last checkpoint instead of starting again.
//!
//! Every [`Checkpointing::every`] the run writes, to a folder beside its output, everything
//! the rest of the run depends on: every variable, the optimizer's moments and step counts,
//! the best epoch's weights so far, the epochs' records, the shuffle's state at the start of
//! the epoch and how many of its batches are done, the epoch's loss so far. A run that finds a
//! checkpoint of the *same* run (its [`fingerprint`]: the options, the base, the training,
//! validation and teacher's data) takes it up there; a checkpoint of another run is refused,
//! named, never mixed in.
//!
//! A checkpointed run draws its dropout masks from libtorch's generator seeded anew at every
//! step from the run's seed and the step ([`step_seed`]), so that a resumed run draws what
//! the uninterrupted one drew: it ends with the same weights (a test checks it). A run
//! without checkpoints seeds once, as before, so its results are those of earlier versions.
//!
//! Writes the folder through a temporary name and a rename; reads nothing but its own files.
//! A run killed in the middle of that swap (the old folder moved aside, the new one not yet
//! in place) is taken up from the newer complete one of the two ([`Resume::open`]), never
//! started afresh in silence; a diverged run's NaNs (JSON `null`) read back as NaN.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};
use tch::Tensor;
use tch::nn::VarStore;

use crate::ModelError;
use crate::train::{EpochRecord, Example, TrainOptions};

/// Where and how often a run writes its checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpointing {
    /// The checkpoint's folder ([`beside`] the output, for `flagship train`).
    pub dir: PathBuf,
    /// At most this long between checkpoints (zero: after every step).
    pub every: Duration,
    /// Stop after this many steps in all, the checkpoint written, as if interrupted
    /// ([`ModelError::Paused`]): to train in parts.
    pub pause_at: Option<usize>,
}

/// The checkpoint folder of a run that writes `out`: `OUT.checkpoint` beside it.
pub fn beside(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".checkpoint");
    out.with_file_name(name)
}

/// What names a run, so that a checkpoint is only ever taken up by the run that wrote it:
/// SHA-256 of the options (but where the checkpoint goes and the progress bar), the base's
/// path, every training and validation example and the teacher's labels.
pub fn fingerprint(
    base: &Path,
    train: &[Example],
    val: &[Example],
    soft: &[Option<Vec<f32>>],
    unlabelled: &[(String, Vec<f32>)],
    opts: &TrainOptions,
) -> String {
    let mut h = Sha256::new();
    let options = TrainOptions {
        checkpoint: None,
        progress: false,
        ..opts.clone()
    };
    h.update(format!("{options:?}\0{}\0", base.display()));
    for set in [train, val] {
        h.update(set.len().to_le_bytes());
        for e in set {
            h.update(format!("{:?}\0{}\0{:?}\0", e.text, e.need_support, e.label));
        }
    }
    h.update(format!("{soft:?}\0{unlabelled:?}"));
    format!("{:x}", h.finalize())
}

/// The seed of libtorch's generator at `step` of a checkpointed run seeded `seed`.
pub fn step_seed(seed: u64, step: usize) -> i64 {
    let mut r = flagship_core::rng::Rng::new(seed ^ (step as u64).wrapping_mul(0x9E37_79B9));
    (r.next_u64() >> 1) as i64
}

/// A checkpoint's record (`state.json`); the tensors are beside it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct State {
    pub fingerprint: String,
    /// Optimizer steps taken in all.
    pub step: usize,
    /// The epoch under way, from 1…
    pub epoch: usize,
    /// …and how many of its batches are done.
    pub done: usize,
    /// The shuffle's state when that epoch began.
    pub rng: u64,
    /// The epoch's loss so far: sum, steps, examples.
    #[serde(deserialize_with = "loss_nan_if_null")]
    pub loss: (f64, usize, usize),
    /// The finished epochs' records.
    pub history: Vec<EpochRecord>,
    /// The best validation F2 so far and its epoch (its weights: `best.safetensors`).
    pub best: Option<(f64, usize)>,
    pub since_best: usize,
    /// The optimizer's step count, per parameter.
    pub adam_steps: Vec<i32>,
    /// Seconds of training before this checkpoint.
    pub seconds: f64,
}

/// serde_json writes a NaN or an infinity as `null`: read `null` back as NaN, so that the
/// record of a run whose loss went NaN still reads.
pub(crate) fn nan_if_null<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

fn loss_nan_if_null<'de, D: Deserializer<'de>>(d: D) -> Result<(f64, usize, usize), D::Error> {
    let (sum, steps, examples) = <(Option<f64>, usize, usize)>::deserialize(d)?;
    Ok((sum.unwrap_or(f64::NAN), steps, examples))
}

/// A checkpoint read back: its record, every tensor it holds by name, the best weights.
pub(crate) struct Loaded {
    pub state: State,
    pub tensors: HashMap<String, Tensor>,
    pub best: Option<HashMap<String, Tensor>>,
}

const STATE: &str = "state.json";
const TENSORS: &str = "weights.safetensors";
const BEST: &str = "best.safetensors";

/// A run's checkpointing under way.
pub(crate) struct Resume {
    pub every: Duration,
    pub pause_at: Option<usize>,
    dir: PathBuf,
    fingerprint: String,
    last: Instant,
    /// What the folder held when the run began (taken by the run when it starts).
    pub loaded: Option<Loaded>,
}

impl Resume {
    /// Opens `c.dir`: a checkpoint of this run (`fingerprint`) is loaded to go on from, one
    /// of another run is refused.
    pub fn open(c: &Checkpointing, fingerprint: String) -> Result<Resume, ModelError> {
        if let Some(from) = recover(&c.dir)? {
            tracing::warn!(
                checkpoint = %c.dir.display(),
                from = %from.display(),
                "a run was stopped while its checkpoint was being replaced: taken up from the newer complete one"
            );
        }
        let state_file = c.dir.join(STATE);
        let loaded = if state_file.is_file() {
            let bad = |message: String| ModelError::BadFile {
                path: state_file.clone(),
                message,
            };
            let text =
                std::fs::read_to_string(&state_file).map_err(|e| ModelError::io(&state_file, e))?;
            let state: State = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
            if state.fingerprint != fingerprint {
                return Err(bad(format!(
                    "a checkpoint of another run (other options, base or data): remove {} to \
                     start this one afresh",
                    c.dir.display()
                )));
            }
            let read = |name: &str| -> Result<HashMap<String, Tensor>, ModelError> {
                let path = c.dir.join(name);
                Ok(Tensor::read_safetensors(&path)
                    .map_err(|e| ModelError::BadFile {
                        path: path.clone(),
                        message: e.to_string(),
                    })?
                    .into_iter()
                    .collect())
            };
            let best = match state.best {
                Some(_) => Some(read(BEST)?),
                None => None,
            };
            Some(Loaded {
                tensors: read(TENSORS)?,
                best,
                state,
            })
        } else {
            None
        };
        Ok(Resume {
            every: c.every,
            pause_at: c.pause_at,
            dir: c.dir.clone(),
            fingerprint,
            last: Instant::now(),
            loaded,
        })
    }

    /// The checkpoint's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Time for a checkpoint (or the pause is reached at `step`).
    pub fn due(&self, step: usize) -> bool {
        self.last.elapsed() >= self.every || self.pause_at == Some(step)
    }

    /// Writes the checkpoint: `state` (its fingerprint set here), the var store's variables
    /// and `optimizer` tensors, the best weights.
    pub fn save(
        &mut self,
        mut state: State,
        vs: &VarStore,
        optimizer: Vec<(String, Tensor)>,
        best: Option<&HashMap<String, Tensor>>,
    ) -> Result<(), ModelError> {
        state.fingerprint = self.fingerprint.clone();
        let tmp = crate::classifier::beside(&self.dir, "tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| ModelError::io(&tmp, e))?;
        let cpu = |t: &Tensor| t.to_device(tch::Device::Cpu);
        let mut named: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .map(|(k, v)| (k, cpu(&v)))
            .collect();
        named.extend(optimizer.into_iter().map(|(k, v)| (k, cpu(&v))));
        Tensor::write_safetensors(&named, tmp.join(TENSORS))?;
        if let Some(b) = best {
            let b: Vec<(String, Tensor)> = b.iter().map(|(k, v)| (k.clone(), cpu(v))).collect();
            Tensor::write_safetensors(&b, tmp.join(BEST))?;
        }
        let json =
            serde_json::to_string_pretty(&state).map_err(|e| ModelError::Data(e.to_string()))?;
        // The record last, and whole: a folder holding `state.json` is complete ([`recover`]).
        let part = tmp.join(STATE).with_extension("part");
        std::fs::write(&part, json).map_err(|e| ModelError::io(&part, e))?;
        std::fs::rename(&part, tmp.join(STATE)).map_err(|e| ModelError::io(&tmp, e))?;
        crate::classifier::replace_dir(&tmp, &self.dir)?;
        self.last = Instant::now();
        Ok(())
    }
}

/// What an earlier process left beside the checkpoint `dir`: `replace_dir` moves the folder
/// to `.NAME.old-PID` and then the finished `.NAME.tmp-PID` onto `NAME`, so a process killed
/// between the two leaves no `NAME`, and one killed while writing leaves a partial `tmp`.
/// Where `dir` holds no record, the leftover folder with a record and the most steps is put
/// back (returned); every other leftover of another process is removed (a teacher's checkpoint
/// is over a gigabyte).
fn recover(dir: &Path) -> Result<Option<PathBuf>, ModelError> {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return Ok(None);
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Ok(None);
    };
    let name = name.to_string_lossy();
    let ours = std::process::id();
    let mut left: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            let rest = file.strip_prefix(&format!(".{name}."))?;
            let pid = rest
                .strip_prefix("old-")
                .or_else(|| rest.strip_prefix("tmp-"))?;
            (pid.parse::<u32>().ok()? != ours).then(|| e.path())
        })
        .collect();
    let steps = |d: &Path| -> Option<usize> {
        let text = std::fs::read_to_string(d.join(STATE)).ok()?;
        Some(serde_json::from_str::<State>(&text).ok()?.step)
    };
    let mut taken = None;
    if !dir.join(STATE).is_file() {
        left.sort_by_key(|d| steps(d));
        if let Some(best) = left.pop_if(|d| steps(d).is_some()) {
            let _ = std::fs::remove_dir_all(dir);
            std::fs::rename(&best, dir).map_err(|e| ModelError::io(dir, e))?;
            taken = Some(best);
        }
    }
    for d in left {
        let _ = std::fs::remove_dir_all(d);
    }
    Ok(taken)
}

/// Removes a run's checkpoint once its model is written (nothing there: nothing done).
pub fn clear(dir: &Path) -> Result<(), ModelError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ModelError::io(dir, e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(step: usize, loss: f64) -> State {
        State {
            fingerprint: "f".into(),
            step,
            epoch: 1,
            done: step,
            rng: 7,
            loss: (loss, step, step * 32),
            history: vec![],
            best: None,
            since_best: 0,
            adam_steps: vec![step as i32],
            seconds: 1.0,
        }
    }

    fn folder(path: &Path, record: Option<&State>) {
        std::fs::create_dir_all(path).unwrap();
        std::fs::write(path.join(TENSORS), b"weights").unwrap();
        if let Some(s) = record {
            std::fs::write(path.join(STATE), serde_json::to_string(s).unwrap()).unwrap();
        }
    }

    #[test]
    fn a_diverged_runs_record_reads_back_with_its_nans() {
        let mut s = state(3, f64::NAN);
        s.history.push(EpochRecord {
            epoch: 1,
            steps: 3,
            train_loss: f64::NAN,
            val_loss: f64::INFINITY,
            val_f2: 0.0,
            val_threshold: 0.5,
            val_roc_auc: f64::NAN,
            examples_per_second: 10.0,
        });
        let text = serde_json::to_string(&s).unwrap();
        assert!(
            text.contains("null"),
            "serde_json writes NaN as null: {text}"
        );
        let back: State = serde_json::from_str(&text).unwrap();
        assert!(back.loss.0.is_nan());
        assert_eq!((back.loss.1, back.loss.2), (3, 96));
        assert!(back.history[0].train_loss.is_nan() && back.history[0].val_loss.is_nan());
        assert_eq!(back.history[0].val_f2, 0.0);
    }

    #[test]
    fn a_run_killed_between_the_renames_goes_on_from_the_newer_complete_checkpoint() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("model.checkpoint");
        // Killed between the renames: the old one moved aside, the new one complete.
        folder(
            &tmp.path().join(".model.checkpoint.old-4000000001"),
            Some(&state(10, 0.5)),
        );
        folder(
            &tmp.path().join(".model.checkpoint.tmp-4000000001"),
            Some(&state(20, 0.4)),
        );
        // A write cut off earlier (no record), and another process's unrelated folder.
        folder(&tmp.path().join(".model.checkpoint.tmp-4000000002"), None);
        folder(
            &tmp.path().join(".other.checkpoint.old-4000000001"),
            Some(&state(5, 0.5)),
        );
        let from = recover(&dir).unwrap().expect("a checkpoint put back");
        assert!(from.ends_with(".model.checkpoint.tmp-4000000001"));
        let back: State =
            serde_json::from_str(&std::fs::read_to_string(dir.join(STATE)).unwrap()).unwrap();
        assert_eq!(back.step, 20);
        let mut names: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [".other.checkpoint.old-4000000001", "model.checkpoint"]
        );
        // With a checkpoint in place, leftovers go and nothing is replaced.
        folder(
            &tmp.path().join(".model.checkpoint.old-4000000003"),
            Some(&state(99, 0.1)),
        );
        assert_eq!(recover(&dir).unwrap(), None);
        assert!(!tmp.path().join(".model.checkpoint.old-4000000003").exists());
        let kept: State =
            serde_json::from_str(&std::fs::read_to_string(dir.join(STATE)).unwrap()).unwrap();
        assert_eq!(kept.step, 20);
    }
}
