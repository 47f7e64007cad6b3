//! Reconnect waits for the v2 filtered stream, exactly as X documents them:
//! - network errors (TCP/TLS, stalls): linear, +250 ms per attempt, capped at 16 s;
//! - HTTP errors (5xx and other retryable statuses): exponential from 5 s, capped at 320 s;
//! - rate limiting (429): exponential from 60 s (capped here at 15 min);
//! - 400 / 401 / 403 / 404 are fatal: credentials or rules are wrong, retrying cannot help.
//!
//! Each kind keeps its own attempt count; a connection that delivers data resets them all.

use std::time::Duration;

/// What ended (or refused) a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Network,
    Http,
    RateLimited,
}

/// What to do about an HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Retry(Failure),
    Fatal,
}

/// Classifies a non-200 response status.
pub fn classify_status(status: u16) -> Disposition {
    match status {
        429 => Disposition::Retry(Failure::RateLimited),
        400 | 401 | 403 | 404 => Disposition::Fatal,
        _ => Disposition::Retry(Failure::Http),
    }
}

const NETWORK_STEP: Duration = Duration::from_millis(250);
const NETWORK_CAP: Duration = Duration::from_secs(16);
const HTTP_START: Duration = Duration::from_secs(5);
const HTTP_CAP: Duration = Duration::from_secs(320);
const RATE_START: Duration = Duration::from_secs(60);
const RATE_CAP: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Clone, Default)]
pub struct Backoff {
    network: u32,
    http: u32,
    rate: u32,
}

impl Backoff {
    /// The wait before the next attempt after `failure`.
    pub fn next_delay(&mut self, failure: Failure) -> Duration {
        let exp = |start: Duration, cap: Duration, n: u32| {
            start
                .checked_mul(1u32.checked_shl(n).unwrap_or(u32::MAX))
                .map_or(cap, |d| d.min(cap))
        };
        match failure {
            Failure::Network => {
                self.network = self.network.saturating_add(1);
                (NETWORK_STEP * self.network).min(NETWORK_CAP)
            }
            Failure::Http => {
                self.http = self.http.saturating_add(1);
                exp(HTTP_START, HTTP_CAP, self.http - 1)
            }
            Failure::RateLimited => {
                self.rate = self.rate.saturating_add(1);
                exp(RATE_START, RATE_CAP, self.rate - 1)
            }
        }
    }

    /// A connection delivered data: start every schedule over.
    pub fn reset(&mut self) {
        *self = Backoff::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(b: &mut Backoff, f: Failure, n: usize) -> Vec<f64> {
        (0..n).map(|_| b.next_delay(f).as_secs_f64()).collect()
    }

    #[test]
    fn network_is_linear_to_16s() {
        let mut b = Backoff::default();
        let d = secs(&mut b, Failure::Network, 70);
        assert_eq!(&d[..4], &[0.25, 0.5, 0.75, 1.0]);
        assert_eq!(d[63], 16.0);
        assert!(d.iter().all(|&s| s <= 16.0));
    }

    #[test]
    fn http_is_exponential_5s_to_320s() {
        let mut b = Backoff::default();
        assert_eq!(
            secs(&mut b, Failure::Http, 9),
            [5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 320.0, 320.0]
        );
        // Thousands of failures never overflow.
        for _ in 0..10_000 {
            assert_eq!(b.next_delay(Failure::Http), HTTP_CAP);
        }
    }

    #[test]
    fn rate_limit_starts_at_a_minute_and_schedules_are_independent() {
        let mut b = Backoff::default();
        assert_eq!(secs(&mut b, Failure::RateLimited, 3), [60.0, 120.0, 240.0]);
        assert_eq!(secs(&mut b, Failure::Network, 1), [0.25]);
        assert_eq!(secs(&mut b, Failure::RateLimited, 1), [480.0]);
        b.reset();
        assert_eq!(secs(&mut b, Failure::RateLimited, 1), [60.0]);
    }

    #[test]
    fn statuses() {
        assert_eq!(
            classify_status(429),
            Disposition::Retry(Failure::RateLimited)
        );
        assert_eq!(classify_status(503), Disposition::Retry(Failure::Http));
        for s in [400, 401, 403, 404] {
            assert_eq!(classify_status(s), Disposition::Fatal, "{s}");
        }
    }
}
