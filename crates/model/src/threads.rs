//! libtorch's intra-op threads matched to the cores other processes leave free.
//!
//! Every parallel operator waits for its slowest thread. On a host where another process
//! keeps a core busy, the thread that shares that core runs in half its time slices and
//! every operator waits for it: on this 2-core machine with `stress-ng --cpu 1` beside
//! `flagship watch`, the model's p99 per micro-batch was 280 ms with two threads and 47 ms
//! with one. [`Governor::tick`], called before each micro-batch, samples the host's CPU time
//! (Linux `/proc/stat`) less this process's own (`/proc/self/stat`) at most once a
//! [`Governor::every`], and sets libtorch's threads to the cores left free — never more than
//! libtorch started with, never fewer than one. Elsewhere (no `/proc`) it changes nothing.

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

/// The threads to use: the cores other processes leave free (to the nearest core), within
/// `1..=max`.
pub fn threads_for(cores: usize, others: f64, max: usize) -> usize {
    let free = (cores as f64 - others).round();
    (free.max(1.0) as usize).clamp(1, max.max(1))
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
            every: Duration::from_secs(2),
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
    /// free; returns them.
    pub fn tick(&mut self) -> usize {
        let Some((at, earlier)) = self.last else {
            return self.current;
        };
        if at.elapsed() < self.every {
            return self.current;
        }
        let Some(now) = Sample::now() else {
            return self.current;
        };
        self.others = now.others_since(&earlier);
        self.last = Some((Instant::now(), now));
        let want = threads_for(self.cores, self.others, self.max);
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
        assert_eq!(threads_for(2, 0.1, 2), 2);
        assert_eq!(threads_for(2, 1.0, 2), 1);
        assert_eq!(threads_for(2, 1.9, 2), 1);
        assert_eq!(threads_for(16, 3.2, 8), 8);
        assert_eq!(threads_for(16, 12.4, 8), 4);
    }

    /// A real busy process beside this one is seen as about a core of other work.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_busy_process_beside_us_is_seen() {
        let mut busy = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .expect("sh");
        std::thread::sleep(Duration::from_millis(100));
        let a = Sample::now().expect("/proc on Linux");
        std::thread::sleep(Duration::from_millis(600));
        let b = Sample::now().unwrap();
        busy.kill().ok();
        busy.wait().ok();
        let others = b.others_since(&a);
        assert!(others > 0.7, "a busy loop beside us: {others:.2} cores");
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
