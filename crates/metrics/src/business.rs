//! The support team's view: minutes of reading *wasted* on tweets flagged needlessly and
//! minutes *missed* on tweets that needed a reply, for the model and for the naive baseline
//! (uniform random guesses, repeated with seeds: mean ± sd), and the seed's success verdict.
//!
//! Per tweet of `n` words: reading = n / reading_wpm minutes; reply = n × reply_fraction /
//! typing_wpm minutes; response = reading + reply. Missed = Σ response over false negatives.
//! Wasted = Σ response over false positives (the seed's code — the headline) and, beside it,
//! Σ reading over false positives (what the seed's scope text described).

use flagship_core::config::Business;
use flagship_core::rng::Rng;
use serde::{Deserialize, Serialize};

use crate::classification::Confusion;

/// Seconds to read a tweet of `words` words ([`Business::reading_seconds`]: the rule lives in
/// core, the desk's today panel uses it too).
pub fn reading_seconds(words: u32, b: &Business) -> f64 {
    b.reading_seconds(words)
}

/// Seconds to read it and type a reply ([`Business::response_seconds`]).
pub fn response_seconds(words: u32, b: &Business) -> f64 {
    b.response_seconds(words)
}

/// Minutes and counts of one set of predictions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Times {
    /// Σ response time over false positives (the headline, as the seed's code computed it).
    pub wasted_minutes: f64,
    /// Σ reading time only over false positives (the seed's scope text).
    pub wasted_reading_minutes: f64,
    /// Σ response time over false negatives.
    pub missed_minutes: f64,
    /// Tweets read needlessly / missed, and their shares of all tweets.
    pub wasted_tweets: u64,
    pub missed_tweets: u64,
    pub wasted_fraction: f64,
    pub missed_fraction: f64,
}

impl Times {
    pub fn new(truth: &[bool], predicted: &[bool], words: &[u32], b: &Business) -> Times {
        assert!(
            truth.len() == predicted.len() && truth.len() == words.len(),
            "one prediction and one word count per label"
        );
        let mut t = Times {
            wasted_minutes: 0.0,
            wasted_reading_minutes: 0.0,
            missed_minutes: 0.0,
            wasted_tweets: 0,
            missed_tweets: 0,
            wasted_fraction: 0.0,
            missed_fraction: 0.0,
        };
        for ((&y, &p), &n) in truth.iter().zip(predicted).zip(words) {
            match (y, p) {
                (false, true) => {
                    t.wasted_minutes += response_seconds(n, b) / 60.0;
                    t.wasted_reading_minutes += reading_seconds(n, b) / 60.0;
                    t.wasted_tweets += 1;
                }
                (true, false) => {
                    t.missed_minutes += response_seconds(n, b) / 60.0;
                    t.missed_tweets += 1;
                }
                _ => {}
            }
        }
        let total = truth.len().max(1) as f64;
        t.wasted_fraction = t.wasted_tweets as f64 / total;
        t.missed_fraction = t.missed_tweets as f64 / total;
        t
    }
}

/// Mean and sample standard deviation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeanSd {
    pub mean: f64,
    pub sd: f64,
}

impl MeanSd {
    pub fn of(values: &[f64]) -> MeanSd {
        let n = values.len() as f64;
        if values.is_empty() {
            return MeanSd {
                mean: f64::NAN,
                sd: f64::NAN,
            };
        }
        let mean = values.iter().sum::<f64>() / n;
        let var = if values.len() > 1 {
            values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
        } else {
            0.0
        };
        MeanSd {
            mean,
            sd: var.sqrt(),
        }
    }
}

/// The naive approach: each tweet flagged by a fair coin, `repeats` seeded runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Naive {
    pub repeats: usize,
    pub seed: u64,
    pub f2: MeanSd,
    pub wasted_minutes: MeanSd,
    pub wasted_reading_minutes: MeanSd,
    pub missed_minutes: MeanSd,
}

impl Naive {
    /// Runs the naive baseline (the seed used scikit-learn's `DummyClassifier(strategy="uniform",
    /// random_state=88)` once; its exact draws are numpy's and are not reproduced here).
    pub fn run(truth: &[bool], words: &[u32], b: &Business) -> Naive {
        let mut rng = Rng::from_state(b.naive_seed);
        let (mut f2, mut wasted, mut reading, mut missed) = (vec![], vec![], vec![], vec![]);
        for _ in 0..b.naive_repeats.max(1) {
            let guess: Vec<bool> = truth.iter().map(|_| rng.coin()).collect();
            f2.push(Confusion::from_pairs(truth, &guess).f_beta(2.0));
            let t = Times::new(truth, &guess, words, b);
            wasted.push(t.wasted_minutes);
            reading.push(t.wasted_reading_minutes);
            missed.push(t.missed_minutes);
        }
        Naive {
            repeats: b.naive_repeats.max(1),
            seed: b.naive_seed,
            f2: MeanSd::of(&f2),
            wasted_minutes: MeanSd::of(&wasted),
            wasted_reading_minutes: MeanSd::of(&reading),
            missed_minutes: MeanSd::of(&missed),
        }
    }
}

/// A verdict in words, as every report and the command line say it: `success` when the seed's
/// rule is met, `not yet` when it is not.
pub fn verdict_word(success: bool) -> &'static str {
    if success { "success" } else { "not yet" }
}

/// The seed's success rule, spelled out.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub f2_above_0_80: bool,
    pub f2_above_naive: bool,
    pub wasted_below_naive: bool,
    pub missed_below_naive: bool,
    /// Percent reduction against the naive mean (positive = the model saves time).
    pub wasted_reduction_percent: f64,
    pub missed_reduction_percent: f64,
    pub success: bool,
}

impl Verdict {
    pub fn new(f2: f64, times: &Times, naive: &Naive) -> Verdict {
        let cut = |model: f64, base: f64| {
            if base > 0.0 {
                100.0 * (base - model) / base
            } else {
                0.0
            }
        };
        let wasted_reduction_percent = cut(times.wasted_minutes, naive.wasted_minutes.mean);
        let missed_reduction_percent = cut(times.missed_minutes, naive.missed_minutes.mean);
        let v = Verdict {
            f2_above_0_80: f2 > 0.80,
            f2_above_naive: f2 > naive.f2.mean,
            wasted_below_naive: times.wasted_minutes < naive.wasted_minutes.mean,
            missed_below_naive: times.missed_minutes < naive.missed_minutes.mean,
            wasted_reduction_percent,
            missed_reduction_percent,
            success: false,
        };
        Verdict {
            success: v.f2_above_0_80
                && v.f2_above_naive
                && v.wasted_below_naive
                && v.missed_below_naive
                && wasted_reduction_percent > 0.0
                && missed_reduction_percent > 0.0,
            ..v
        }
    }

    /// This verdict in words ([`verdict_word`]).
    pub fn word(&self) -> &'static str {
        verdict_word(self.success)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flagship_core::Config;

    #[test]
    fn business_times_use_the_seed_constants() {
        let b = Config::default().business;
        // 27 words: 27/135 min = 12 s reading; 27/40 min = 40.5 s typing.
        assert!((reading_seconds(27, &b) - 12.0).abs() < 1e-9);
        assert!((response_seconds(27, &b) - 52.5).abs() < 1e-9);
    }

    #[test]
    fn times_count_false_positives_and_negatives() {
        let b = Config::default().business;
        let truth = [true, true, false, false];
        let pred = [true, false, true, false];
        let t = Times::new(&truth, &pred, &[10, 27, 27, 5], &b);
        // Missed: the 27-word support tweet, 52.5 s; wasted: the 27-word other one.
        assert!((t.missed_minutes - 52.5 / 60.0).abs() < 1e-12);
        assert!((t.wasted_minutes - 52.5 / 60.0).abs() < 1e-12);
        assert!((t.wasted_reading_minutes - 12.0 / 60.0).abs() < 1e-12);
        assert_eq!((t.wasted_tweets, t.missed_tweets), (1, 1));
        assert_eq!(t.wasted_fraction, 0.25);
    }

    #[test]
    fn naive_is_seeded_and_a_perfect_model_beats_it() {
        let b = Config::default().business;
        let truth: Vec<bool> = (0..600).map(|i| i % 5 < 2).collect();
        let words: Vec<u32> = (0..600).map(|i| 5 + (i * 7) % 40).collect();
        let a = Naive::run(&truth, &words, &b);
        assert_eq!(a, Naive::run(&truth, &words, &b));
        assert_eq!(a.repeats, 100);
        // A fair coin at 40 % prevalence: F2 ≈ 2.5p / (4.5p + 0.5(1 − p)) = 0.476.
        assert!((a.f2.mean - 0.476).abs() < 0.02, "{:?}", a.f2);
        assert!(a.f2.sd > 0.0 && a.f2.sd < 0.05);
        let perfect = Times::new(&truth, &truth, &words, &b);
        let v = Verdict::new(1.0, &perfect, &a);
        assert!(v.success && v.wasted_reduction_percent == 100.0);
        let worst: Vec<bool> = truth.iter().map(|y| !y).collect();
        let t = Times::new(&truth, &worst, &words, &b);
        let v = Verdict::new(0.0, &t, &a);
        assert!(!v.success && !v.f2_above_naive && v.missed_reduction_percent < 0.0);
    }
}
