//! Burst alerts: when flagged posts arrive much faster than they did in the recent past, or
//! many different people ask the same question at once, the team should hear about it.
//!
//! **What it does.** [`BurstDetector`] counts flagged posts in per-minute buckets and, at
//! each check, compares the last [`BurstRule::window`] with the [`BurstRule::baseline`] just
//! before it; [`replay`] runs the rule over a recorded (time, count) series. [`growing`] counts
//! the distinct authors who posted into one question group lately. [`burst_text`] and
//! [`growth_text`] say either in one line for a person.
//!
//! **What it reads.** Nothing: every time, count and author is a value passed in.
//!
//! **What it never does.** No I/O (no files, no network, no database) and it never reads the
//! clock: "now" is always an argument, so a replay of twelve days runs in a second and gives
//! the same alarms as the live desk would have.
//!
//! # The burst rule
//!
//! At a check time `now`, `observed` is the number of flagged posts in `(now − window, now]`.
//! The baseline rate is the number of posts in the `baseline` span just before that window,
//! divided by `baseline / window`: `expected` posts per window, never less than
//! [`BurstRule::floor`]. The rule alarms when
//!
//! - `observed >= min_count`, and
//! - the one-sided Poisson exact tail `P(X ≥ observed | λ = expected)` is below `p_value`.
//!
//! Why this and not a z-score: the counts are small (0–5 flagged posts per 10 minutes on an
//! ordinary day), and at such counts the normal approximation behind `(observed − λ) / √λ`
//! is wrong exactly where it matters, in the tail. At λ = 1 a window of 4 posts has z = 3,
//! "three sigma" (0.13 % under the normal curve), yet it happens in about 1.9 % of windows —
//! with 144 windows a day that is a few alarms every day, all noise. The exact tail knows that 1 → 4 is common at
//! λ = 1 (P ≈ 0.019) while 1 → 12 is not (P ≈ 8.3 × 10⁻¹⁰). `min_count` keeps a quiet night's
//! 0 → 3 (a real jump, from a floor of 0.5) from paging anyone: three posts are read by
//! whoever opens the desk next. The baseline is the recent past (six hours by default), not
//! the whole day or the week, so a slow rise through the day moves the baseline with it and
//! is not a burst; only a jump within minutes is.
//!
//! After an alarm there is no new burst alarm until [`BurstRule::cooldown`] has passed,
//! unless the observed count is at least double the count of the last alarm (a burst that
//! keeps growing is news again).
//!
//! **Just started.** While there is less than `baseline` of history before the window, the
//! rule uses what history there is, but never less than [`MIN_HISTORY`] (one hour, or the
//! whole `baseline` when that is shorter): before that there is no alarm at all, however
//! many posts arrive — there is nothing yet to call them a burst against. History counts from
//! the minute (rounded down) of the detector's first post or check.
//!
//! **Minutes.** Posts are counted in one-minute buckets, bucket `k` holding the posts in
//! `((k − 1) min, k min]` since the Unix epoch; the window and baseline are rounded up to
//! whole minutes (at least one). A check at a whole minute therefore counts exactly
//! `(now − window, now]`; a check between minutes counts its own minute whole.
//!
//! **Memory** is a ring of `baseline + window` per-minute counts (370 numbers by default),
//! whatever the volume. Posts may arrive out of order: any post still inside the ring is
//! counted where it belongs; one older than the ring is dropped and counted in
//! [`BurstDetector::late`]. A post newer than everything seen so far moves the ring forward
//! to its minute, so the caller should pass times it trusts (the time it read a post, or the
//! post's own time when that is sane).

use std::collections::HashSet;

use chrono::{DateTime, Duration, Utc};

/// When flagged posts make a burst (see the module's documentation for the rule and why).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BurstRule {
    /// The recent span whose posts are counted at each check (`observed`): 10 minutes.
    pub window: Duration,
    /// The span just before the window that gives the usual rate (`expected`): 6 hours.
    pub baseline: Duration,
    /// An alarm needs the Poisson tail `P(X ≥ observed | expected)` below this: 10⁻⁴.
    pub p_value: f64,
    /// An alarm needs at least this many posts in the window: 6.
    pub min_count: u32,
    /// The least expected count per window, however quiet the baseline was: 0.5.
    pub floor: f64,
    /// After an alarm, no other for this long unless the count doubles: 60 minutes.
    pub cooldown: Duration,
}

impl Default for BurstRule {
    fn default() -> BurstRule {
        BurstRule {
            window: Duration::minutes(10),
            baseline: Duration::hours(6),
            p_value: 1e-4,
            min_count: 6,
            floor: 0.5,
            cooldown: Duration::minutes(60),
        }
    }
}

/// The least baseline history before any alarm (or the whole `baseline`, when shorter).
pub const MIN_HISTORY: Duration = Duration::hours(1);

/// One burst alarm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Burst {
    /// The check that raised it.
    pub at: DateTime<Utc>,
    /// Flagged posts in the window ending at `at`.
    pub observed: u32,
    /// Posts the baseline expected in such a window (at least the rule's floor).
    pub expected: f64,
    /// `P(X ≥ observed)` for a Poisson count with mean `expected`.
    pub p_value: f64,
}

/// `P(X ≥ k)` for a Poisson count `X` with mean `lambda`; 1 for `k = 0`, 0 for `lambda ≤ 0`.
///
/// Summed in log space from the largest term outward, so it stays accurate where the terms
/// themselves would overflow or underflow (λ up to thousands, `k` up to tens of thousands):
/// above the mean the tail is summed upward from `k`; at or below it the head
/// `P(X < k)` is summed downward from `k − 1` and subtracted from 1 (the tail is then at
/// least about a half, so nothing cancels). A tail below about 10⁻³⁰⁸ is 0.
pub fn poisson_tail(k: u32, lambda: f64) -> f64 {
    if k == 0 || lambda == f64::INFINITY {
        return 1.0;
    }
    if lambda.is_nan() || lambda <= 0.0 {
        return 0.0;
    }
    let k = f64::from(k);
    if k > lambda {
        upper_tail(k, lambda)
    } else {
        (1.0 - lower_head(k, lambda)).clamp(0.0, 1.0)
    }
}

/// `ln P(X = i)` for a Poisson count with mean `lambda`.
fn ln_pmf(i: f64, lambda: f64) -> f64 {
    -lambda + i * lambda.ln() - ln_factorial(i)
}

/// `ln(n!)` for a whole `n ≥ 0`: exact below 16, Stirling's series (error below 10⁻¹⁵) above.
fn ln_factorial(n: f64) -> f64 {
    if n < 16.0 {
        let mut product = 1.0f64;
        let mut i = 2.0;
        while i <= n {
            product *= i;
            i += 1.0;
        }
        return product.ln();
    }
    let n2 = n * n;
    n * n.ln() - n + 0.5 * (2.0 * std::f64::consts::PI * n).ln() + 1.0 / (12.0 * n)
        - 1.0 / (360.0 * n * n2)
        + 1.0 / (1260.0 * n * n2 * n2)
}

/// `P(X ≥ k)` for `k > lambda`: the terms from `k` on shrink, each `lambda / (i + 1)` of the last.
fn upper_tail(k: f64, lambda: f64) -> f64 {
    let (mut term, mut sum, mut i) = (1.0f64, 1.0f64, k);
    while term > sum * 1e-17 && i < k + 1e7 {
        i += 1.0;
        term *= lambda / i;
        sum += term;
    }
    (ln_pmf(k, lambda) + sum.ln()).exp().min(1.0)
}

/// `P(X < k)` for `1 ≤ k ≤ lambda`: the terms from `k − 1` down shrink, each `i / lambda` of the last.
fn lower_head(k: f64, lambda: f64) -> f64 {
    let (mut term, mut sum, mut i) = (1.0f64, 1.0f64, k - 1.0);
    while i >= 1.0 && term > sum * 1e-17 {
        term *= i / lambda;
        sum += term;
        i -= 1.0;
    }
    (ln_pmf(k - 1.0, lambda) + sum.ln()).exp().min(1.0)
}

/// The bucket of `at`: `k` with `at` in `((k − 1) min, k min]` since the epoch.
fn bucket(at: DateTime<Utc>) -> i64 {
    let secs = at.timestamp();
    let whole = secs.rem_euclid(60) == 0 && at.timestamp_subsec_nanos() == 0;
    secs.div_euclid(60) + i64::from(!whole)
}

/// `at`'s minute, rounded down (minutes since the epoch).
fn floor_minute(at: DateTime<Utc>) -> i64 {
    at.timestamp().div_euclid(60)
}

/// `d` in whole minutes, rounded up, at least one.
fn whole_minutes(d: Duration) -> i64 {
    let secs = d.num_seconds() + i64::from(d.subsec_nanos() > 0);
    ((secs + 59).div_euclid(60)).max(1)
}

/// Counts flagged posts minute by minute and applies a [`BurstRule`] when asked.
///
/// Memory: `baseline + window` minute counts, whatever the volume (see the module's docs).
#[derive(Debug, Clone)]
pub struct BurstDetector {
    rule: BurstRule,
    /// The rule's window and baseline in whole minutes, and the least baseline for an alarm.
    window: i64,
    baseline: i64,
    least: i64,
    /// The ring: bucket `k` at `k mod len`, holding buckets `(head − len, head]`.
    counts: Vec<u32>,
    /// The newest bucket, and the minute history begins at; `None` before the first call.
    head: Option<i64>,
    since: i64,
    /// The last alarm, for the cooldown.
    last: Option<Burst>,
    late: u64,
}

impl BurstDetector {
    pub fn new(rule: BurstRule) -> BurstDetector {
        let window = whole_minutes(rule.window);
        let baseline = whole_minutes(rule.baseline);
        let len = usize::try_from(window + baseline).unwrap_or(usize::MAX / 8);
        BurstDetector {
            rule,
            window,
            baseline,
            least: whole_minutes(MIN_HISTORY).min(baseline),
            counts: vec![0; len],
            head: None,
            since: 0,
            last: None,
            late: 0,
        }
    }

    /// The rule it applies.
    pub fn rule(&self) -> &BurstRule {
        &self.rule
    }

    /// Posts dropped because they were older than the ring when they arrived.
    pub fn late(&self) -> u64 {
        self.late
    }

    /// The last alarm raised, if any.
    pub fn last_alarm(&self) -> Option<&Burst> {
        self.last.as_ref()
    }

    /// One flagged post at `at`.
    pub fn observe(&mut self, at: DateTime<Utc>) {
        self.add(at, 1);
    }

    /// `n` flagged posts at `at`.
    fn add(&mut self, at: DateTime<Utc>, n: u32) {
        let b = bucket(at);
        let head = self.start(at);
        if b > head {
            self.advance(b);
        } else if b <= head - self.len() {
            self.late += u64::from(n);
            return;
        }
        let slot = self.slot(b);
        self.counts[slot] = self.counts[slot].saturating_add(n);
    }

    /// Moves the ring to `now`, then applies the rule and the cooldown: the burst, if this
    /// check raises an alarm.
    pub fn check(&mut self, now: DateTime<Utc>) -> Option<Burst> {
        let n = bucket(now);
        self.start(now);
        self.advance(n);
        let history = n - self.since - self.window;
        if history < self.least {
            return None;
        }
        let base = history.min(self.baseline);
        let observed = u32::try_from(self.count(n - self.window, n)).unwrap_or(u32::MAX);
        if observed < self.rule.min_count {
            return None;
        }
        let before = self.count(n - self.window - base, n - self.window) as f64;
        let expected = (before * self.window as f64 / base as f64).max(self.rule.floor);
        let p_value = poisson_tail(observed, expected);
        if p_value >= self.rule.p_value || self.cooling(now, observed) {
            return None;
        }
        let burst = Burst {
            at: now,
            observed,
            expected,
            p_value,
        };
        self.last = Some(burst);
        Some(burst)
    }

    /// Whether the last alarm's cooldown silences a count of `observed` at `now`.
    fn cooling(&self, now: DateTime<Utc>, observed: u32) -> bool {
        self.last.is_some_and(|last| {
            now.signed_duration_since(last.at) < self.rule.cooldown
                && u64::from(observed) < 2 * u64::from(last.observed)
        })
    }

    /// The newest bucket, starting history at `at`'s minute on the first call.
    fn start(&mut self, at: DateTime<Utc>) -> i64 {
        match self.head {
            Some(h) => h,
            None => {
                let b = bucket(at);
                self.head = Some(b);
                self.since = floor_minute(at);
                b
            }
        }
    }

    fn len(&self) -> i64 {
        self.counts.len() as i64
    }

    fn slot(&self, b: i64) -> usize {
        b.rem_euclid(self.len()) as usize
    }

    /// Moves the newest bucket to `b` (when later), emptying the buckets it passes.
    fn advance(&mut self, b: i64) {
        let Some(head) = self.head else { return };
        if b <= head {
            return;
        }
        if b - head >= self.len() {
            self.counts.fill(0);
        } else {
            for k in head + 1..=b {
                let slot = self.slot(k);
                self.counts[slot] = 0;
            }
        }
        self.head = Some(b);
    }

    /// Posts in buckets `(lo, hi]`, as far as the ring still holds them.
    fn count(&self, lo: i64, hi: i64) -> u64 {
        let Some(head) = self.head else { return 0 };
        let lo = lo.max(head - self.len());
        let hi = hi.min(head);
        (lo + 1..=hi)
            .map(|k| u64::from(self.counts[self.slot(k)]))
            .sum()
    }
}

/// The rule as a function of a recorded series: each `(time, count)` is `count` flagged posts
/// at `time`, fed to a fresh [`BurstDetector`] in time order, with a check every `step` from
/// the first time (rounded up to a whole minute) until a check at or after the last time.
/// Posts at a check's own time are fed before it. A `step` of zero or less is one minute.
/// The alarms, in order.
pub fn replay(
    series: &[(DateTime<Utc>, u32)],
    rule: &BurstRule,
    step: chrono::Duration,
) -> Vec<Burst> {
    let mut sorted = series.to_vec();
    sorted.sort_by_key(|(at, _)| *at);
    let (Some(&(first, _)), Some(&(last, _))) = (sorted.first(), sorted.last()) else {
        return Vec::new();
    };
    let step = if step > Duration::zero() {
        step
    } else {
        Duration::minutes(1)
    };
    let mut detector = BurstDetector::new(*rule);
    let mut now = DateTime::<Utc>::from_timestamp(bucket(first) * 60, 0).unwrap_or(first);
    let mut next = sorted.iter().peekable();
    let mut alarms = Vec::new();
    loop {
        while let Some((at, n)) = next.next_if(|(at, _)| *at <= now) {
            detector.add(*at, *n);
        }
        alarms.extend(detector.check(now));
        match now.checked_add_signed(step) {
            Some(later) if now < last => now = later,
            _ => break,
        }
    }
    alarms
}

/// When a question group is growing: many different people in a short time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GrowthRule {
    /// The recent span whose authors are counted: 15 minutes.
    pub window: Duration,
    /// The least number of distinct authors in the window for a "growing" notice: 10.
    pub min_authors: u32,
}

impl Default for GrowthRule {
    fn default() -> GrowthRule {
        GrowthRule {
            window: Duration::minutes(15),
            min_authors: 10,
        }
    }
}

/// The number of distinct authors among one question group's `arrivals` (time, author) in
/// `(now − window, now]`, when it is at least `min_authors`. Many posts from a few people are
/// not a growing question; the same question from many people is.
pub fn growing(
    arrivals: &[(DateTime<Utc>, &str)],
    now: DateTime<Utc>,
    rule: &GrowthRule,
) -> Option<u32> {
    let from = now
        .checked_sub_signed(rule.window)
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let authors: HashSet<&str> = arrivals
        .iter()
        .filter(|(at, _)| *at > from && *at <= now)
        .map(|(_, author)| *author)
        .collect();
    let n = u32::try_from(authors.len()).unwrap_or(u32::MAX);
    (n >= rule.min_authors).then_some(n)
}

/// "31 people asked about “the delay” in 15 minutes" (the topic at most 80 characters).
pub fn growth_text(authors: u32, window: chrono::Duration, topic: &str) -> String {
    let people = if authors == 1 { "person" } else { "people" };
    format!(
        "{authors} {people} asked about “{}” in {}",
        shorten(topic.trim(), 80),
        span_text(window)
    )
}

/// "Burst: 14 flagged posts in 10 minutes (about 2.1 expected)".
pub fn burst_text(b: &Burst, window: chrono::Duration) -> String {
    let posts = if b.observed == 1 { "post" } else { "posts" };
    format!(
        "Burst: {} flagged {posts} in {} (about {:.1} expected)",
        b.observed,
        span_text(window),
        b.expected
    )
}

/// `text` cut to at most `max` characters (on a character boundary), ending in "…" when cut.
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.truncate(out.trim_end().len());
    out.push('…');
    out
}

/// A span for a person: "1 hour", "2 hours", "15 minutes", "1 minute", "30 seconds".
fn span_text(d: Duration) -> String {
    let secs = d.num_seconds();
    let (n, unit) = if secs >= 3600 && secs % 3600 == 0 {
        (secs / 3600, "hour")
    } else if secs >= 60 && secs % 60 == 0 {
        (secs / 60, "minute")
    } else {
        (secs, "second")
    };
    let s = if n == 1 { "" } else { "s" };
    format!("{n} {unit}{s}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 3, 4, 0, 0, 0).unwrap()
    }

    fn minutes(m: i64) -> Duration {
        Duration::minutes(m)
    }

    /// splitmix64: a small deterministic generator for the simulated series.
    struct SplitMix(u64);

    impl SplitMix {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        /// Uniform in [0, 1).
        fn uniform(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }

        /// A Poisson draw (Knuth's product of uniforms; fine for small means).
        fn poisson(&mut self, lambda: f64) -> u32 {
            let limit = (-lambda).exp();
            let (mut k, mut p) = (0u32, self.uniform());
            while p > limit {
                k += 1;
                p *= self.uniform();
            }
            k
        }
    }

    /// `days` of flagged posts, minute by minute, at 2.2 per 10 minutes on average with a
    /// daily shape (peak 18:00 UTC at 1.6×, trough 06:00 at 0.4×), each post at a random
    /// second of its minute.
    fn steady(days: i64, seed: u64) -> Vec<(DateTime<Utc>, u32)> {
        let mut rng = SplitMix(seed);
        let mut series = Vec::new();
        for m in 0..days * 24 * 60 {
            let hour = (m % (24 * 60)) as f64 / 60.0;
            let shape = 1.0 + 0.6 * (2.0 * std::f64::consts::PI * (hour - 18.0) / 24.0).cos();
            for _ in 0..rng.poisson(0.22 * shape) {
                let second = 1 + (rng.next() % 59) as i64;
                series.push((t0() + minutes(m) + Duration::seconds(second), 1));
            }
        }
        series
    }

    /// `n` posts spread evenly over 15 minutes from `start`.
    fn burst(start: DateTime<Utc>, n: i64) -> Vec<(DateTime<Utc>, u32)> {
        (0..n)
            .map(|j| (start + Duration::seconds(15 * 60 * j / n), 1))
            .collect()
    }

    /// One post every 5 minutes from `t0` for `hours` (2 per 10-minute window).
    fn flat(hours: i64) -> Vec<(DateTime<Utc>, u32)> {
        (0..hours * 12)
            .map(|k| (t0() + minutes(5 * k), 1))
            .collect()
    }

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance * b.abs().max(1e-300)
    }

    #[test]
    fn poisson_tail_matches_known_values() {
        assert_eq!(poisson_tail(0, 1.0), 1.0);
        assert_eq!(poisson_tail(0, 0.0), 1.0);
        assert_eq!(poisson_tail(3, 0.0), 0.0);
        assert!(close(poisson_tail(1, 1.0), 1.0 - (-1.0f64).exp(), 1e-12));
        assert!(close(poisson_tail(5, 2.0), 0.052_653_017_343_711_1, 1e-9));
        // P(X ≥ 4 | 1) = 1 − e⁻¹ (1 + 1 + 1/2 + 1/6); P(X ≥ 12 | 1) ≈ 8.3e-10.
        let four = 1.0 - (-1.0f64).exp() * (1.0 + 1.0 + 0.5 + 1.0 / 6.0);
        assert!(close(poisson_tail(4, 1.0), four, 1e-12));
        assert!(close(poisson_tail(12, 1.0), 8.316_107_426_882e-10, 1e-9));
        // At the mean and below it, the head is subtracted: P(X ≥ 10 | 10) ≈ 0.542070.
        assert!(close(poisson_tail(10, 10.0), 0.542_070_285_528_9, 1e-9));
        assert!(close(poisson_tail(3, 10.0), 0.997_230_604_284_2, 1e-12));
    }

    #[test]
    fn poisson_tail_is_small_positive_and_monotone_for_large_counts() {
        let p = poisson_tail(600, 500.0);
        // The regularised gamma function P(600, 500) (mpmath, 30 digits): 7.785272561880e-6.
        assert!(close(p, 7.785_272_561_880e-6, 1e-8), "{p}");
        let mut last = 1.0;
        for k in (400..=700).step_by(10) {
            let p = poisson_tail(k, 500.0);
            assert!(p > 0.0 && p <= last, "k = {k}: {p} after {last}");
            last = p;
        }
        assert!(close(poisson_tail(1000, 1000.0), 0.504_205_244_180_2, 1e-9));
        assert!(close(
            poisson_tail(1200, 1000.0),
            4.684_203_855_872e-10,
            1e-8
        ));
        assert_eq!(poisson_tail(5000, 1000.0), 0.0); // below f64's range, not NaN
        assert!(close(
            poisson_tail(5000, 4900.0),
            0.077_944_956_226_51,
            1e-8
        ));
    }

    #[test]
    fn a_steady_week_gives_at_most_one_false_alarm_a_day() {
        let series = steady(7, 30);
        let posts: u32 = series.iter().map(|(_, n)| n).sum();
        // About 2.2 posts per 10 minutes: 7 × 144 × 2.2 ≈ 2218.
        assert!((2000..2450).contains(&posts), "{posts}");
        let alarms = replay(&series, &BurstRule::default(), minutes(1));
        assert!(
            alarms.len() <= 7,
            "{} false alarms: {alarms:?}",
            alarms.len()
        );
    }

    #[test]
    fn an_injected_burst_alarms_within_ten_minutes() {
        let mut series = steady(7, 30);
        let start = t0() + Duration::days(3) + Duration::hours(14) + minutes(7);
        let before = replay(&series, &BurstRule::default(), minutes(1));
        let near = |b: &&Burst| b.at >= start && b.at <= start + minutes(25);
        assert_eq!(before.iter().filter(near).count(), 0);
        series.extend(burst(start, 30));
        let alarms = replay(&series, &BurstRule::default(), minutes(1));
        let first = alarms.iter().find(near).expect("the burst raises an alarm");
        let delay = first.at - start;
        assert!(delay <= minutes(10), "after {delay}: {first:?}");
        assert!(first.observed >= 10 && first.p_value < 1e-4, "{first:?}");
    }

    #[test]
    fn the_cooldown_holds_unless_the_count_doubles() {
        let mut series = flat(8);
        let at = |m: i64| t0() + minutes(m);
        series.push((at(180), 12)); // alarms
        series.push((at(210), 12)); // within the cooldown, not double: silent
        series.push((at(225), 40)); // within it, but more than double: alarms
        series.push((at(300), 20)); // 75 minutes later: alarms again
        let alarms = replay(&series, &BurstRule::default(), minutes(1));
        let times: Vec<_> = alarms.iter().map(|b| b.at).collect();
        assert_eq!(times, vec![at(180), at(225), at(300)], "{alarms:?}");
        assert_eq!(alarms[0].observed, 14); // the 12 and two of the flat posts
        assert!(close(alarms[0].expected, 2.0, 1e-12), "{alarms:?}");
    }

    #[test]
    fn no_alarm_before_an_hour_of_history() {
        let rule = BurstRule::default();
        let mut series = flat(2);
        series.push((t0() + minutes(40), 50));
        assert_eq!(replay(&series, &rule, minutes(1)), vec![]);

        // The window's 10 minutes plus 60 of baseline from the first post's minute.
        let mut d = BurstDetector::new(rule);
        d.observe(t0());
        for _ in 0..30 {
            d.observe(t0() + minutes(69));
        }
        assert_eq!(d.check(t0() + minutes(69)), None);
        let b = d.check(t0() + minutes(70)).expect("an hour of baseline");
        assert_eq!((b.observed, b.expected), (30, 0.5));
    }

    #[test]
    fn a_quiet_night_needs_min_count() {
        // Nothing for hours, then 4 posts: far beyond the floor's tail, under min_count.
        let rule = BurstRule {
            floor: 0.1,
            ..BurstRule::default()
        };
        let mut d = BurstDetector::new(rule);
        d.observe(t0());
        let at = t0() + Duration::hours(3);
        for _ in 0..4 {
            d.observe(at);
        }
        assert!(poisson_tail(4, 0.1) < rule.p_value);
        assert_eq!(d.check(at), None);
        for _ in 0..2 {
            d.observe(at);
        }
        assert_eq!(d.check(at).map(|b| b.observed), Some(6));
    }

    #[test]
    fn late_posts_outside_the_ring_are_counted_not_kept() {
        let mut d = BurstDetector::new(BurstRule::default());
        d.observe(t0());
        d.check(t0() + Duration::hours(7));
        d.observe(t0() + Duration::minutes(5)); // before the ring (6 h 10 min)
        d.observe(t0() + Duration::hours(7) - minutes(3)); // out of order, in the window
        assert_eq!(d.late(), 1);
        assert_eq!(d.count(bucket(t0()) + 410, bucket(t0()) + 420), 1);
    }

    #[test]
    fn growth_counts_distinct_authors_in_the_window() {
        let now = t0() + Duration::hours(1);
        let rule = GrowthRule::default();
        let names: Vec<String> = (0..10).map(|i| format!("author{i}")).collect();
        let many: Vec<(DateTime<Utc>, &str)> = names
            .iter()
            .enumerate()
            .map(|(i, a)| (now - minutes(i as i64), a.as_str()))
            .collect();
        assert_eq!(growing(&many, now, &rule), Some(10));
        assert_eq!(growing(&many[..9], now, &rule), None);
        let two: Vec<(DateTime<Utc>, &str)> = (0..10)
            .map(|i| (now - minutes(i), if i % 2 == 0 { "a" } else { "b" }))
            .collect();
        assert_eq!(growing(&two, now, &rule), None);
        // One of the ten 15 minutes ago is outside (now − 15 min, now].
        let mut edge = many.clone();
        edge[9].0 = now - minutes(15);
        assert_eq!(growing(&edge, now, &rule), None);
    }

    #[test]
    fn texts_read_as_a_person_would_write_them() {
        let b = Burst {
            at: t0(),
            observed: 14,
            expected: 2.1,
            p_value: 1e-6,
        };
        assert_eq!(
            burst_text(&b, minutes(10)),
            "Burst: 14 flagged posts in 10 minutes (about 2.1 expected)"
        );
        assert_eq!(
            growth_text(31, minutes(15), "the delay"),
            "31 people asked about “the delay” in 15 minutes"
        );
        assert_eq!(
            growth_text(1, Duration::hours(1), " x "),
            "1 person asked about “x” in 1 hour"
        );
        let long = "é".repeat(100);
        let text = growth_text(12, minutes(15), &long);
        let topic = text.split('“').nth(1).unwrap().split('”').next().unwrap();
        assert_eq!(topic.chars().count(), 80);
        assert!(topic.ends_with('…'));
    }
}
