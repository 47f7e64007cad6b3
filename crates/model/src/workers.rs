//! Scoring passes spread over workers that each run whole passes on one libtorch thread.
//!
//! On a CPU, one pass at a time on two libtorch threads splits every operator in two, and
//! every operator waits for its slower half; many of a small model's operators are too small to
//! split well (a layer norm, a softmax, the products of a batch of short posts). Two workers
//! that each take whole passes, one libtorch thread each, never wait for each other until the
//! last pass. Measured first with `transformers` (`scripts/bench_model.py`'s model, 2,000
//! held-out texts, bf16 autocast, batches of 32, this 2-core machine, three rounds
//! alternating): one process on two threads 386–404 ex/s, two processes on one thread each
//! 513–516 ex/s (1.27–1.34×); flagship's own figures are in docs/model.md.
//!
//! [`count`] gives as many workers as the caller has libtorch threads (at most one a pass, at
//! most one a core), which [`crate::threads`] matches to the cores other processes leave free:
//! on a busy host the governor's one thread means one worker, on the caller's thread, as
//! before. Fewer passes than threads share them out (16 threads, 2 passes: 8 each). A GPU runs
//! one. [`set_spread`] turns it off, to measure the difference.
//!
//! The workers are the threads of one pool started on first use and kept for the life of the
//! process (rayon's, one thread a core), so a host that scores micro-batches for days starts
//! no thread per call: a 10-minute launch burst is about 10,000 calls. A pool thread is told
//! its libtorch thread count only when it has another.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use tch::Device;

static SPREAD: AtomicBool = AtomicBool::new(true);

/// Whether scoring spreads its passes over workers (the default), or runs them one after
/// another on the caller's libtorch threads (`flagship-bench model predict --one-worker`).
pub fn set_spread(on: bool) {
    SPREAD.store(on, Ordering::Relaxed);
}

/// The cores this process may use (read once): the pool's size, so the most workers a call
/// gets.
fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The workers' pool, started on first use: one thread a core, kept for the process's life.
fn pool() -> &'static rayon::ThreadPool {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(cores())
            .thread_name(|i| format!("{WORKER_NAME}{i}"))
            .build()
            .expect("the scoring workers' threads start")
    })
}

/// The pool's threads are named this and their number.
const WORKER_NAME: &str = "flagship-score-";

/// The workers `passes` passes get on `device`: one per libtorch thread of the caller, at most
/// one per pass and one per core; one on a GPU, or when spreading is off.
pub fn count(device: Device, passes: usize) -> usize {
    if device != Device::Cpu || !SPREAD.load(Ordering::Relaxed) {
        return 1;
    }
    (tch::get_num_threads().max(1) as usize)
        .min(passes)
        .min(cores())
        .max(1)
}

/// `f` over `items` with gradients off, in `items`' order. One worker: on the caller's thread
/// and its libtorch threads, as they are; so too when the caller is itself a thread of a
/// rayon pool (a call from within `f`, or from a pool such as tokenizers'), where waiting for
/// the workers could wait for itself. More: on as many threads of the pool, sharing the
/// caller's libtorch threads (one each on two cores; eight each where 16 serve two passes),
/// every worker taking the next item left, the last items first (passes are sorted by
/// length: the longest go first, so no worker is left with a long one at the end). The call
/// returns when every worker has stopped; after a worker's panic the others take no new
/// item, and the panic is the caller's. One spread runs at a time, and where a worker's
/// count changed, libtorch's default for threads started later (global: a worker's
/// `set_num_threads` writes it) is the caller's again afterwards, after a panic too.
///
/// # Safety
///
/// `f` is called from several threads at once. It must only read what it shares: `tch`'s
/// tensors are `Send` but not `Sync`, and a forward pass in inference reads its weights, which
/// libtorch allows from several threads at once; nothing may write them while `map` runs.
pub(crate) unsafe fn map<T, R: Send>(items: &[T], workers: usize, f: impl Fn(&T) -> R) -> Vec<R> {
    let workers = workers.min(cores());
    if workers <= 1 || items.len() <= 1 || rayon::current_thread_index().is_some() {
        let _no_grad = tch::no_grad_guard();
        return items.iter().map(&f).collect();
    }
    /// What the workers share: the items and `f`, read only (the caller's promise above).
    struct Shared<'a, T, F>(&'a [T], &'a F);
    // SAFETY: `map`'s contract: `f` only reads what it shares, and so do the workers.
    unsafe impl<T, F> Sync for Shared<'_, T, F> {}
    /// Sets libtorch's default count back to the caller's when the spread ends, however it
    /// ends, if a worker changed it.
    struct Restore<'a>(i32, &'a AtomicBool);
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            if self.1.load(Ordering::Relaxed) {
                tch::set_num_threads(self.0);
            }
        }
    }
    /// On a worker's panic, leaves the other workers no item to take.
    struct StopOnPanic<'a>(&'a AtomicUsize, usize);
    impl Drop for StopOnPanic<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                self.0.store(self.1, Ordering::Relaxed);
            }
        }
    }
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let shared = Shared(items, &f);
    let next = AtomicUsize::new(0);
    let changed = AtomicBool::new(false);
    let results: Vec<Mutex<Option<R>>> = (0..items.len()).map(|_| Mutex::new(None)).collect();
    let caller = tch::get_num_threads();
    let _restore = Restore(caller, &changed);
    let each = (caller.max(1) as usize / workers).max(1) as i32;
    // rayon's scope returns once every worker has stopped, and then resumes a worker's panic.
    pool().scope(|s| {
        for _ in 0..workers {
            let (shared, next, changed, results) = (&shared, &next, &changed, &results);
            s.spawn(move |_| {
                // Read on this thread, this also runs libtorch's first-use set-up of it,
                // which would otherwise take the global default at its first operator.
                if tch::get_num_threads() != each {
                    tch::set_num_threads(each);
                    changed.store(true, Ordering::Relaxed);
                }
                let _no_grad = tch::no_grad_guard();
                let len = shared.0.len();
                let _stop = StopOnPanic(next, len);
                while let Some(i) = len.checked_sub(next.fetch_add(1, Ordering::Relaxed) + 1) {
                    let r = (shared.1)(&shared.0[i]);
                    *results[i].lock().unwrap_or_else(PoisonError::into_inner) = Some(r);
                }
            });
        }
    });
    results
        .into_iter()
        .map(|r| {
            r.into_inner()
                .unwrap_or_else(PoisonError::into_inner)
                .expect("every item taken by a worker")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    #[test]
    fn workers_give_what_one_thread_gives_in_order_and_leave_the_threads_as_they_were() {
        let _rng = crate::torch_rng();
        let _count = crate::thread_count_lock();
        tch::manual_seed(7);
        let w = Tensor::randn([64, 64], (Kind::Float, Device::Cpu));
        // Passes of different sizes, as length-sorted ones are.
        let items: Vec<i64> = (1..=9).map(|i| i * 3).collect();
        let pass = |&rows: &i64| -> Vec<f32> {
            let x = Tensor::ones([rows, 64], (Kind::Float, Device::Cpu)) * (rows as f64);
            assert!(
                !tch::Tensor::ones([1], (Kind::Float, Device::Cpu))
                    .set_requires_grad(true)
                    .multiply_scalar(2.0)
                    .requires_grad()
            );
            Vec::try_from(x.matmul(&w).tanh().sum_dim_intlist(1, false, Kind::Float)).unwrap()
        };
        let before = tch::get_num_threads();
        // At least as many workers as libtorch threads, and one more: both calls get the same
        // workers, with the same threads each (one each, unless libtorch has more threads than
        // the cores the pool is capped at; fewer workers would share the threads out).
        let n = (before.max(1) as usize).max(2);
        // SAFETY: `pass` only reads `w`.
        let one = unsafe { map(&items, 1, pass) };
        let two = unsafe { map(&items, n, pass) };
        let three = unsafe { map(&items, n + 1, pass) };
        assert_eq!(one.len(), 9);
        assert_eq!(one[4].len(), 15);
        // The same sums, each pass's in its own order: one libtorch thread splits a product
        // otherwise than two (the last digit of an f32 moves).
        let near = |a: &[Vec<f32>], b: &[Vec<f32>]| {
            a.len() == b.len()
                && a.iter().zip(b).all(|(x, y)| {
                    x.len() == y.len()
                        && x.iter()
                            .zip(y)
                            .all(|(u, v)| (u - v).abs() <= 1e-5 * u.abs())
                })
        };
        assert!(near(&one, &two), "{one:?} vs {two:?}");
        assert!(near(&one, &three));
        assert_eq!(
            two, three,
            "one thread a worker: the same sums, whichever worker"
        );
        assert_eq!(tch::get_num_threads(), before);
    }

    /// The pool's threads, call after call, each with its share of the caller's libtorch
    /// threads; the default for threads started later is the caller's again afterwards.
    #[test]
    fn the_pool_threads_take_the_callers_threads_shared_out() {
        let _count = crate::thread_count_lock();
        if cores() < 2 {
            eprintln!("one core: every call runs on the caller's thread");
            return;
        }
        let before = tch::get_num_threads();
        let items: Vec<u32> = (0..16).collect();
        let mut seen = std::collections::HashSet::new();
        // Two workers: one libtorch thread each, then two, then one again.
        for caller in [2, 4, 2] {
            tch::set_num_threads(caller);
            // SAFETY: the closure reads nothing shared.
            let got = unsafe {
                map(&items, 2, |_| {
                    let me = std::thread::current();
                    (
                        me.id(),
                        me.name().map(str::to_owned),
                        tch::get_num_threads(),
                    )
                })
            };
            assert_eq!(got.len(), 16);
            for (id, name, threads) in got {
                assert!(
                    name.as_deref().is_some_and(|n| n.starts_with(WORKER_NAME)),
                    "{name:?}"
                );
                assert_eq!(
                    threads,
                    caller / 2,
                    "{name:?} with {caller} threads to share"
                );
                seen.insert(id);
            }
            assert_eq!(tch::get_num_threads(), caller);
            let later = std::thread::spawn(tch::get_num_threads).join().unwrap();
            assert_eq!(later, caller, "a thread started later: the caller's count");
        }
        // Fresh threads on every call would give up to six here.
        assert!(
            seen.len() <= cores(),
            "{} threads, {} cores",
            seen.len(),
            cores()
        );
        tch::set_num_threads(before);
    }

    /// A worker's panic is the caller's, the other workers take no item after it, and the
    /// default count for later threads is set back even so.
    #[test]
    fn a_workers_panic_stops_the_others_and_reaches_the_caller() {
        let _count = crate::thread_count_lock();
        if cores() < 2 {
            eprintln!("one core: every call runs on the caller's thread");
            return;
        }
        let before = tch::get_num_threads();
        // Two threads a worker, where the last test or call left them one (or the reverse).
        let caller = if before >= 4 { 2 } else { 4 };
        tch::set_num_threads(caller);
        let items: Vec<u32> = (0..64).collect();
        let (calls, panicked) = (AtomicUsize::new(0), AtomicBool::new(false));
        let caught = std::panic::catch_unwind(|| unsafe {
            map(&items, 2, |_| {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    panicked.store(true, Ordering::SeqCst);
                    panic!("the first pass");
                }
                while !panicked.load(Ordering::SeqCst) {
                    std::hint::spin_loop();
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            })
        });
        assert!(caught.is_err());
        // The others stop once the panic unwinds, after its hook has printed it (a debug
        // build's backtrace: 7 passes here): 3 s of passes would be all 64.
        let calls = calls.load(Ordering::SeqCst);
        assert!(calls < 64, "{calls} of 64 passes after a panic");
        let later = std::thread::spawn(tch::get_num_threads).join().unwrap();
        assert_eq!(later, caller, "set back after a panic too");
        // Gradients are on again on the caller's thread, and on every pool thread, the one
        // that panicked too (they live on: a panic must not leave one with gradients off).
        let grad_on = || {
            Tensor::ones([1], (Kind::Float, Device::Cpu))
                .set_requires_grad(true)
                .multiply_scalar(2.0)
                .requires_grad()
        };
        assert!(grad_on());
        assert!(pool().broadcast(|_| grad_on()).into_iter().all(|on| on));
        tch::set_num_threads(before);
    }

    #[test]
    fn one_worker_on_a_gpu_or_when_spreading_is_off() {
        assert_eq!(count(Device::Cuda(0), 8), 1);
        assert_eq!(count(Device::Cpu, 1), 1);
        assert!(count(Device::Cpu, 8) <= tch::get_num_threads().max(1) as usize);
        assert!(count(Device::Cpu, 0) >= 1);
    }
}
