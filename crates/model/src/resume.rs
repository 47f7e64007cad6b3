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
/// SHA-256 of the options (but where the checkpoint goes, the progress bar and the arithmetic),
/// the base's path, every training and validation example and the teacher's labels. The
/// arithmetic is not the run's identity: `auto` is measured in each process
/// ([`crate::layers::cpu_bf16_pays`]), and a machine near the margin must not find its own
/// checkpoint refused as another run's; a run resumed in the other arithmetic goes on in it.
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
        precision: None,
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
    /// Held while the run lasts: no second run writes the same checkpoint meanwhile.
    _lock: std::fs::File,
}

impl Resume {
    /// Opens `c.dir`: a checkpoint of this run (`fingerprint`) is loaded to go on from, one
    /// of another run is refused.
    pub fn open(c: &Checkpointing, fingerprint: String) -> Result<Resume, ModelError> {
        let lock = lock(&c.dir)?;
        if let Some(from) = recover(&c.dir, &fingerprint)? {
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
            _lock: lock,
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
        // The record last, and whole: a folder holding `state.json` is complete ([`recover`]),
        // on the disk too (a reboot) before the swap.
        let part = tmp.join(STATE).with_extension("part");
        std::fs::write(&part, json).map_err(|e| ModelError::io(&part, e))?;
        for f in [TENSORS, BEST].map(|f| tmp.join(f)).iter().chain([&part]) {
            if f.exists() {
                sync(f)?;
            }
        }
        std::fs::rename(&part, tmp.join(STATE)).map_err(|e| ModelError::io(&tmp, e))?;
        sync(&tmp)?;
        crate::classifier::replace_dir(&tmp, &self.dir)?;
        sync(crate::classifier::parent_of(&self.dir))?;
        self.last = Instant::now();
        Ok(())
    }
}

/// Flushes `path` (a file or a folder) to the disk.
fn sync(path: &Path) -> Result<(), ModelError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| ModelError::io(path, e))
}

/// `.NAME.lock` beside the checkpoint `dir`.
fn lock_path(dir: &Path) -> PathBuf {
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    crate::classifier::parent_of(dir).join(format!(".{name}.lock"))
}

/// Takes the checkpoint's lock (held until the run's [`Resume`] goes): a second run of the same
/// output meanwhile is refused, never left to write over the first one's folders.
fn lock(dir: &Path) -> Result<std::fs::File, ModelError> {
    let path = lock_path(dir);
    let parent = crate::classifier::parent_of(dir);
    std::fs::create_dir_all(parent).map_err(|e| ModelError::io(parent, e))?;
    let file = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| ModelError::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(ModelError::BadFile {
            path: dir.to_owned(),
            message: format!(
                "another run is training into this checkpoint now ({} is locked): let it \
                 finish or stop it first",
                path.display()
            ),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(ModelError::io(&path, e)),
    }
}

/// Whose a checkpoint folder is and how far it went: the part of its record [`recover`] reads.
#[derive(Deserialize)]
struct Head {
    fingerprint: String,
    step: usize,
}

fn head(dir: &Path) -> Option<Head> {
    serde_json::from_str(&std::fs::read_to_string(dir.join(STATE)).ok()?).ok()
}

/// What an earlier process left beside the checkpoint `dir`: `replace_dir` moves the folder
/// to `.NAME.old-PID` and then the finished `.NAME.tmp-PID` onto `NAME`, so a process killed
/// between the two leaves no `NAME`, and one killed after finishing `tmp` (its record
/// written last) leaves a newer complete folder beside an older `NAME`. The newest complete
/// leftover of this run (`fingerprint`) newer than what `NAME` holds is put in its place and
/// returned; with no `NAME` at all, another run's newest one (which [`Resume::open`] then
/// refuses by name). `NAME` holding another run's checkpoint is left alone. Every other leftover
/// is removed (a teacher's checkpoint is over a gigabyte). The caller holds the lock: no
/// other run writes these folders now, whatever process id it had.
fn recover(dir: &Path, fingerprint: &str) -> Result<Option<PathBuf>, ModelError> {
    let Some(name) = dir.file_name() else {
        return Ok(None);
    };
    let Ok(entries) = std::fs::read_dir(crate::classifier::parent_of(dir)) else {
        return Ok(None);
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    let left: Vec<(PathBuf, Option<Head>)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            file.strip_prefix(&prefix)
                .and_then(|rest| {
                    rest.strip_prefix("old-")
                        .or_else(|| rest.strip_prefix("tmp-"))
                })
                .is_some_and(|pid| pid.parse::<u32>().is_ok())
        })
        .map(|e| (e.path(), head(&e.path())))
        .collect();
    let pick = match head(dir) {
        Some(h) if h.fingerprint != fingerprint => None,
        in_place => {
            let floor = in_place.map(|h| h.step);
            left.iter()
                .filter_map(|(d, h)| Some((d, h.as_ref()?)))
                .filter(|(_, h)| {
                    let ours = h.fingerprint == fingerprint;
                    (ours || floor.is_none()) && floor.is_none_or(|f| h.step > f)
                })
                .max_by_key(|(_, h)| (h.fingerprint == fingerprint, h.step))
                .map(|(d, _)| d.clone())
        }
    };
    if let Some(best) = &pick {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::rename(best, dir).map_err(|e| ModelError::io(dir, e))?;
    }
    for (d, _) in left.iter().filter(|(d, _)| Some(d) != pick.as_ref()) {
        let _ = std::fs::remove_dir_all(d);
    }
    Ok(pick)
}

/// Removes a run's checkpoint once its model is written (nothing there: nothing done).
pub fn clear(dir: &Path) -> Result<(), ModelError> {
    let _ = std::fs::remove_file(lock_path(dir));
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
        let at = |name: &str| tmp.path().join(name);
        let dir = at("model.checkpoint");
        let names = || {
            let mut n: Vec<String> = std::fs::read_dir(tmp.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            n.sort();
            n
        };
        let step = || head(&dir).unwrap().step;
        // Killed between the renames: the old one moved aside, the new one complete; the
        // process had this one's id (a container's restart).
        let pid = std::process::id();
        folder(
            &at(&format!(".model.checkpoint.old-{pid}")),
            Some(&state(10, 0.5)),
        );
        folder(
            &at(&format!(".model.checkpoint.tmp-{pid}")),
            Some(&state(20, 0.4)),
        );
        // A write cut off earlier (no record), another run's newer one, and neighbours.
        folder(&at(".model.checkpoint.tmp-4000000002"), None);
        let mut other = state(90, 0.3);
        other.fingerprint = "another run".into();
        folder(&at(".model.checkpoint.old-4000000003"), Some(&other));
        folder(
            &at(".other.checkpoint.old-4000000001"),
            Some(&state(5, 0.5)),
        );
        folder(
            &at(".model.checkpoint2.tmp-4000000001"),
            Some(&state(5, 0.5)),
        );
        let from = recover(&dir, "f").unwrap().expect("a checkpoint put back");
        assert!(from.ends_with(format!(".model.checkpoint.tmp-{pid}")));
        assert_eq!(step(), 20);
        let kept = [
            ".model.checkpoint2.tmp-4000000001",
            ".other.checkpoint.old-4000000001",
            "model.checkpoint",
        ];
        assert_eq!(names(), kept);
        // Killed after finishing a newer one, before the swap: the newer one goes in.
        folder(
            &at(".model.checkpoint.tmp-4000000004"),
            Some(&state(30, 0.3)),
        );
        assert!(recover(&dir, "f").unwrap().is_some());
        assert_eq!(step(), 30);
        assert_eq!(names(), kept);
        // An older one, or another run's, beside it: removed, nothing replaced.
        folder(
            &at(".model.checkpoint.old-4000000005"),
            Some(&state(25, 0.1)),
        );
        folder(&at(".model.checkpoint.old-4000000006"), Some(&other));
        assert_eq!(recover(&dir, "f").unwrap(), None);
        assert_eq!(step(), 30);
        assert_eq!(names(), kept);
        // With nothing in place but another run's leftover, that one is put back, for
        // `open` to refuse by name rather than start afresh over it.
        std::fs::remove_dir_all(&dir).unwrap();
        folder(&at(".model.checkpoint.old-4000000007"), Some(&other));
        assert!(recover(&dir, "f").unwrap().is_some());
        assert_eq!(head(&dir).unwrap().fingerprint, "another run");
    }

    #[test]
    fn a_second_run_into_the_same_checkpoint_is_refused_while_the_first_goes_on() {
        let tmp = tempfile::tempdir().unwrap();
        let c = Checkpointing {
            dir: tmp.path().join("out/model.checkpoint"),
            every: Duration::from_secs(600),
            pause_at: None,
        };
        let first = Resume::open(&c, "f".into()).unwrap();
        let e = Resume::open(&c, "f".into()).err().expect("refused");
        assert!(e.to_string().contains("another run is training"), "{e}");
        drop(first);
        let again = Resume::open(&c, "f".into()).unwrap();
        drop(again);
        clear(&c.dir).unwrap();
        assert_eq!(
            std::fs::read_dir(tmp.path().join("out")).unwrap().count(),
            0
        );
    }
}
