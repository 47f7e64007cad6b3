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
//! [`count`] gives as many workers as the caller has libtorch threads (at most one a pass),
//! which [`crate::threads`] matches to the cores other processes leave free: on a busy host the
//! governor's one thread means one worker, on the caller's thread, as before. Fewer passes than
//! threads share them out (16 threads, 2 passes: 8 each). A GPU runs one.
//! [`set_spread`] turns it off, to measure the difference.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tch::Device;

static SPREAD: AtomicBool = AtomicBool::new(true);

/// Whether scoring spreads its passes over workers (the default), or runs them one after
/// another on the caller's libtorch threads (`flagship-bench model predict --one-worker`).
pub fn set_spread(on: bool) {
    SPREAD.store(on, Ordering::Relaxed);
}

/// The workers `passes` passes get on `device`: one per libtorch thread of the caller, at most
/// one per pass; one on a GPU, or when spreading is off.
pub fn count(device: Device, passes: usize) -> usize {
    if device != Device::Cpu || !SPREAD.load(Ordering::Relaxed) {
        return 1;
    }
    (tch::get_num_threads().max(1) as usize).min(passes).max(1)
}

/// `f` over `items` with gradients off, in `items`' order. One worker: on the caller's thread
/// and its libtorch threads, as they are. More: on as many scoped threads, sharing the
/// caller's libtorch threads (one each on two cores; eight each where 16 serve two passes),
/// every worker taking the next item left, the last items first (passes are sorted by
/// length: the longest go first, so no worker is left with a long one at the end). The
/// caller's thread count is set back afterwards, after a panic too, and one spread runs at a
/// time (libtorch's count is global: two at once could leave the process on one thread). A
/// worker's panic is the caller's.
///
/// # Safety
///
/// `f` is called from several threads at once. It must only read what it shares: `tch`'s
/// tensors are `Send` but not `Sync`, and a forward pass in inference reads its weights, which
/// libtorch allows from several threads at once; nothing may write them while `map` runs.
pub(crate) unsafe fn map<T, R: Send>(items: &[T], workers: usize, f: impl Fn(&T) -> R) -> Vec<R> {
    if workers <= 1 || items.len() <= 1 {
        return tch::no_grad(|| items.iter().map(&f).collect());
    }
    /// What the workers share: the items and `f`, read only (the caller's promise above).
    struct Shared<'a, T, F>(&'a [T], &'a F);
    // SAFETY: `map`'s contract: `f` only reads what it shares, and so do the workers.
    unsafe impl<T, F> Sync for Shared<'_, T, F> {}
    /// Sets the caller's libtorch threads back when the spread ends, however it ends (a
    /// worker's `set_num_threads` is also libtorch's default for threads started later).
    struct Restore(i32);
    impl Drop for Restore {
        fn drop(&mut self) {
            tch::set_num_threads(self.0);
        }
    }
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let shared = Shared(items, &f);
    let next = AtomicUsize::new(0);
    let caller = tch::get_num_threads();
    let _restore = Restore(caller);
    let each = (caller.max(1) as usize / workers).max(1) as i32;
    let done: Vec<Vec<(usize, R)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let (shared, next) = (&shared, &next);
                s.spawn(move || {
                    tch::set_num_threads(each);
                    tch::no_grad(|| {
                        let mut got = Vec::new();
                        loop {
                            let k = next.fetch_add(1, Ordering::Relaxed);
                            let Some(i) = shared.0.len().checked_sub(k + 1) else {
                                break got;
                            };
                            got.push((i, (shared.1)(&shared.0[i])));
                        }
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    let mut out: Vec<Option<R>> = (0..items.len()).map(|_| None).collect();
    for (i, r) in done.into_iter().flatten() {
        out[i] = Some(r);
    }
    out.into_iter()
        .map(|r| r.expect("every item taken by a worker"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    #[test]
    fn workers_give_what_one_thread_gives_in_order_and_leave_the_threads_as_they_were() {
        let _rng = crate::torch_rng();
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
        // At least as many workers as libtorch threads, so each worker gets one thread on any
        // machine (fewer workers share the threads out: 4 threads, 2 workers, 2 each).
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
        // A worker's panic reaches the caller.
        let caught = std::panic::catch_unwind(|| unsafe {
            map(&items, 2, |&r: &i64| {
                assert!(r != 12, "pass of 12");
                r
            })
        });
        assert!(caught.is_err());
        // libtorch's global count, which a thread started later takes, is the caller's again.
        let fresh = std::thread::spawn(tch::get_num_threads).join().unwrap();
        assert_eq!(fresh, before, "set back after a panic too");
    }

    #[test]
    fn one_worker_on_a_gpu_or_when_spreading_is_off() {
        assert_eq!(count(Device::Cuda(0), 8), 1);
        assert_eq!(count(Device::Cpu, 1), 1);
        assert!(count(Device::Cpu, 8) <= tch::get_num_threads().max(1) as usize);
        assert!(count(Device::Cpu, 0) >= 1);
    }
}
