//! libtorch's intra-op threads matched to the cores other processes leave free.
//!
//! Every parallel operator waits for its slowest thread. On a host where another process
//! keeps a core busy, the thread that shares that core runs in half its time slices and
//! every operator waits for it: on this 2-core machine with `stress-ng --cpu 1` beside
//! `flagship watch`, the model's p99 per micro-batch was 280 ms with two threads and 47 ms
//! with one. [`Governor::tick`], called before each micro-batch, samples the host's CPU time
//! (Linux `/proc/stat`) less this process's own (`/proc/self/stat`) at most once a
//! [`Governor::every`] (half a second), and sets libtorch's threads to the cores left free —
//! never more than libtorch started with, never fewer than one, rounded towards fewer
//! ([`DOWN`], [`UP`]). [`Governor::decide`] decides once before the
//! first post: with a two-second period, the first seconds of a run on a busy host were
//! scored on two threads and their posts waited up to 2.5 s. Elsewhere (no `/proc`) it
//! changes nothing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// CPU time counters at one moment, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// All CPUs: busy (not idle, not waiting for I/O) and in all.
    pub busy: u64,
    pub total: u64,
    /// CPUs counted in `/proc/stat`.
    pub cpus: usize,
    /// This process (user + system).
    pub own: u64,
}

impl Sample {
    /// From the texts of `/proc/stat` and `/proc/self/stat`.
    pub fn parse(stat: &str, own_stat: &str) -> Option<Sample> {
        let first = stat.lines().next()?;
        let mut parts = first.split_whitespace();
        if parts.next()? != "cpu" {
            return None;
        }
        // user nice system idle iowait irq softirq steal (guest time is inside user).
        let v: Vec<u64> = parts
            .take(8)
            .map(|x| x.parse().ok())
            .collect::<Option<_>>()?;
        if v.len() < 8 {
            return None;
        }
        let total: u64 = v.iter().sum();
        let busy = total - v[3] - v[4];
        let cpus = stat
            .lines()
            .filter(|l| {
                l.strip_prefix("cpu")
                    .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
            })
            .count();
        // The command name (field 2) may hold spaces: count fields after its ')'.
        let after = &own_stat[own_stat.rfind(')')? + 1..];
        let f: Vec<&str> = after.split_whitespace().collect();
        // Fields 14 and 15 of the whole line (utime, stime) are 12 and 13 after the name.
        let own = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        Some(Sample {
            busy,
            total,
            cpus: cpus.max(1),
            own,
        })
    }

    /// This host's sample now (`None` without `/proc`).
    pub fn now() -> Option<Sample> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let own = std::fs::read_to_string("/proc/self/stat").ok()?;
        Sample::parse(&stat, &own)
    }

    /// Cores' worth of CPU time other processes used between `earlier` and `self`.
    pub fn others_since(&self, earlier: &Sample) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        if total == 0 {
            return 0.0;
        }
        let busy = self.busy.saturating_sub(earlier.busy);
        let own = self.own.saturating_sub(earlier.own);
        busy.saturating_sub(own) as f64 / total as f64 * self.cpus as f64
    }
}

/// How long a run looks at the host before its first post ([`Governor::decide`]): ten of
/// `/proc/stat`'s ticks on each core.
pub const FIRST_LOOK: Duration = Duration::from_millis(100);

/// Free cores are rounded towards fewer threads: a share this far below a whole core still
/// counts as taken ([`threads_for`]). Two threads squeeze a busy neighbour on two cores to
/// about two thirds of a core, and a short sample wobbles by a tenth; rounding to the
/// nearest core kept two threads on such a host in some runs, and two threads that share a
/// core with another process wait for it at every operator (seconds per micro-batch), while
/// one thread too few on a free host costs a third of the speed.
pub const DOWN: f64 = 0.3;

/// More threads only once the cores are this nearly free: between [`DOWN`] and this, the
/// threads in use stay, so a light load does not flip them at every sample.
pub const UP: f64 = 0.1;

/// The threads to use when `current` run, within `1..=max`: fewer as soon as other processes
/// take more than [`DOWN`] of a core beyond them, more once they leave a core all but
/// [`UP`] free.
pub fn threads_for(cores: usize, others: f64, max: usize, current: usize) -> usize {
    let free = cores as f64 - others;
    let down = (free + DOWN).floor();
    let up = (free + UP).floor();
    let want = if down < current as f64 {
        down
    } else if up > current as f64 {
        up
    } else {
        current as f64
    };
    (want.max(1.0) as usize).clamp(1, max.max(1))
}

/// Samples the host now and then and sets libtorch's intra-op threads.
#[derive(Debug)]
pub struct Governor {
    /// How often the host is sampled (and the threads changed) at most.
    pub every: Duration,
    max: usize,
    cores: usize,
    last: Option<(Instant, Sample)>,
    current: usize,
    others: f64,
}

impl Default for Governor {
    fn default() -> Governor {
        Governor::new()
    }
}

impl Governor {
    /// Starts from libtorch's threads now (its ceiling from then on).
    pub fn new() -> Governor {
        let max = tch::get_num_threads().max(1) as usize;
        let cores = std::thread::available_parallelism().map_or(max, |n| n.get());
        Governor {
            every: Duration::from_millis(500),
            max,
            cores,
            last: Sample::now().map(|s| (Instant::now(), s)),
            current: max,
            others: 0.0,
        }
    }

    /// Cores' worth of CPU other processes used over the last sampled period.
    pub fn others(&self) -> f64 {
        self.others
    }

    /// libtorch's threads now.
    pub fn threads(&self) -> usize {
        self.current
    }

    /// Samples the host if [`Governor::every`] has passed and sets the threads it leaves
    /// free; returns them. Call it on the thread that runs the model next: libtorch keeps
    /// the setting per OS thread (OpenMP's), so a loop that a multi-threaded runtime moves
    /// between threads has it set again wherever it runs.
    pub fn tick(&mut self) -> usize {
        if matches!(self.last, Some((at, _)) if at.elapsed() >= self.every) {
            self.decide();
        }
        if tch::get_num_threads() != self.current as i32 {
            tch::set_num_threads(self.current as i32);
        }
        self.current
    }

    /// Samples the host now, whatever the time since the last sample, and sets the threads
    /// it left free since then; returns them. [`Governor::new`] takes the first sample: a
    /// run calls this [`FIRST_LOOK`] after it, before any work, so the first
    /// [`Governor::every`] on a busy host is not scored on a core it shares.
    pub fn decide(&mut self) -> usize {
        let Some((_, earlier)) = self.last else {
            return self.current;
        };
        let Some(now) = Sample::now() else {
            return self.current;
        };
        self.others = now.others_since(&earlier);
        self.last = Some((Instant::now(), now));
        let want = threads_for(self.cores, self.others, self.max, self.current);
        tracing::debug!(
            "host: {:.2} of {} cores busy with other processes; libtorch threads {}",
            self.others,
            self.cores,
            want
        );
        if want != self.current {
            tracing::info!(
                "libtorch threads {} → {want}: {:.1} of {} cores busy with other processes",
                self.current,
                self.others,
                self.cores
            );
            tch::set_num_threads(want as i32);
            self.current = want;
        }
        self.current
    }
}

/// Elements per unit of work shared between the threads of [`for_chunks`].
pub(crate) const CHUNK: usize = 1 << 16;

/// Every `(item, start, end)` chunk of items `lens` long.
pub(crate) fn chunks(lens: &[usize]) -> Vec<(usize, usize, usize)> {
    let mut out = Vec::new();
    for (i, &len) in lens.iter().enumerate() {
        let mut s = 0;
        while s < len {
            let e = (s + CHUNK).min(len);
            out.push((i, s, e));
            s = e;
        }
    }
    out
}

/// Runs `work(item, start, end)` on every chunk of items `lens` long, over `threads` threads;
/// returns the sum of what each returned.
pub(crate) fn for_chunks(
    lens: &[usize],
    threads: usize,
    work: &(dyn Fn(usize, usize, usize) -> f64 + Sync),
) -> f64 {
    let jobs = chunks(lens);
    let next = AtomicUsize::new(0);
    let run = || {
        let mut acc = 0.0;
        loop {
            let j = next.fetch_add(1, Ordering::Relaxed);
            let Some(&(i, s, e)) = jobs.get(j) else {
                return acc;
            };
            acc += work(i, s, e);
        }
    };
    let threads = threads.min(jobs.len()).max(1);
    std::thread::scope(|scope| {
        let others: Vec<_> = (1..threads).map(|_| scope.spawn(run)).collect();
        let mine = run();
        mine + others
            .into_iter()
            .map(|h| h.join().expect("a worker thread panicked"))
            .sum::<f64>()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  1000 10 200 5000 50 5 5 30 0 0\ncpu0 500 5 100 2500 25 2 2 15 0 0\ncpu1 500 5 100 2500 25 3 3 15 0 0\nintr 1\n";
    const OWN: &str =
        "4242 (flag ship) S 1 4242 4242 0 -1 4194560 100 0 0 0 300 40 0 0 20 0 9 0 100 1 1";

    #[test]
    fn proc_texts_are_read() {
        let s = Sample::parse(STAT, OWN).unwrap();
        assert_eq!(
            s,
            Sample {
                busy: 1250,
                total: 6300,
                cpus: 2,
                own: 340
            }
        );
        assert_eq!(Sample::parse("intr 1\n", OWN), None);
        assert_eq!(Sample::parse(STAT, "4242 (x) S 1"), None);
    }

    #[test]
    fn others_are_the_busy_time_less_our_own() {
        let a = Sample {
            busy: 1000,
            total: 4000,
            cpus: 2,
            own: 100,
        };
        // 200 ticks of 2 CPUs pass: 150 busy, 50 of them ours → 100 others = one core.
        let b = Sample {
            busy: 1150,
            total: 4200,
            cpus: 2,
            own: 150,
        };
        assert!((b.others_since(&a) - 1.0).abs() < 1e-9);
        assert_eq!(a.others_since(&a), 0.0);
    }

    #[test]
    fn threads_follow_the_free_cores() {
        assert_eq!(threads_for(2, 0.05, 2, 2), 2);
        assert_eq!(threads_for(2, 1.0, 2, 2), 1);
        assert_eq!(threads_for(2, 1.9, 2, 2), 1);
        assert_eq!(threads_for(16, 3.2, 8, 8), 8);
        assert_eq!(threads_for(16, 12.4, 8, 8), 3);
        // Two threads squeeze a busy neighbour to two thirds of a core, and a short sample
        // wobbles: one thread all the same.
        for squeezed in [0.45, 0.55, 0.67, 0.75] {
            assert_eq!(threads_for(2, squeezed, 2, 2), 1, "{squeezed}");
        }
        // The neighbour stops: back to two.
        assert_eq!(threads_for(2, 0.05, 2, 1), 2);
        assert_eq!(threads_for(16, 12.4, 8, 1), 3);
    }

    #[test]
    fn a_light_load_keeps_the_threads_in_use() {
        // A fifth of a core taken: whichever runs stays, rather than flipping at every sample.
        assert_eq!(threads_for(2, 0.2, 2, 1), 1);
        assert_eq!(threads_for(2, 0.2, 2, 2), 2);
        // Never outside 1..=max, whatever `current` says.
        assert_eq!(threads_for(2, 0.0, 2, 4), 2);
        assert_eq!(threads_for(2, 2.0, 2, 0), 1);
    }

    /// A shell's busy loop beside this process, running a tenth of a second before it is
    /// handed over; stopped when dropped.
    #[cfg(target_os = "linux")]
    struct Busy(std::process::Child);

    #[cfg(target_os = "linux")]
    impl Busy {
        fn start() -> Busy {
            let child = std::process::Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .spawn()
                .expect("sh");
            std::thread::sleep(Duration::from_millis(100));
            Busy(child)
        }
    }

    #[cfg(target_os = "linux")]
    impl Drop for Busy {
        fn drop(&mut self) {
            self.0.kill().ok();
            self.0.wait().ok();
        }
    }

    /// A real busy process beside this one is seen as about a core of other work.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_busy_process_beside_us_is_seen() {
        let busy = Busy::start();
        let a = Sample::now().expect("/proc on Linux");
        std::thread::sleep(Duration::from_millis(600));
        let b = Sample::now().unwrap();
        drop(busy);
        let others = b.others_since(&a);
        assert!(others > 0.7, "a busy loop beside us: {others:.2} cores");
    }

    /// A run's first look sees a busy process beside it within [`FIRST_LOOK`] and gives up
    /// the core it takes, before any work (the two-second period alone left the first
    /// seconds of a run on a shared core).
    #[cfg(target_os = "linux")]
    #[test]
    fn the_first_look_gives_up_a_busy_core() {
        let _count = crate::thread_count_lock();
        let busy = Busy::start();
        let before = tch::get_num_threads();
        let mut g = Governor::new();
        std::thread::sleep(FIRST_LOOK);
        let threads = g.decide();
        drop(busy);
        let now = tch::get_num_threads();
        tch::set_num_threads(before);
        let ceiling = (g.cores.saturating_sub(1)).clamp(1, g.max);
        assert!(
            threads <= ceiling && now as usize == threads,
            "{:.2} cores busy beside us: {threads} threads (libtorch {now}) of {} cores",
            g.others(),
            g.cores
        );
    }

    #[test]
    fn work_is_split_into_disjoint_chunks_covering_every_element() {
        let lens = [CHUNK * 2 + 3, 5];
        let c = chunks(&lens);
        assert_eq!(
            c,
            vec![
                (0, 0, CHUNK),
                (0, CHUNK, 2 * CHUNK),
                (0, 2 * CHUNK, 2 * CHUNK + 3),
                (1, 0, 5)
            ]
        );
        let counted = for_chunks(&lens, 3, &|_, s, e| (e - s) as f64);
        assert_eq!(counted as usize, 2 * CHUNK + 3 + 5);
    }
}
