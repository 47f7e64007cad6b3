//! Alerts to a webhook: the payload — Slack-compatible `{"text": …}`, or the alert's fields
//! as JSON —, its HMAC-SHA256 signature, one delivery attempt with a timeout, and the backoff
//! between attempts. The desk keeps each alert's delivery state in its database (pending,
//! delivered, failed) and retries across restarts (`server`); a receiver that answered 2xx is
//! never sent the same alert again.
//!
//! Every request carries `X-Flagship-Alert` (the alert's id: a receiver drops repeats by it)
//! and `X-Flagship-Timestamp` (Unix seconds); with a secret, `X-Flagship-Signature:
//! sha256=<hex>` — the HMAC-SHA256 of `<timestamp>.<body>` under the secret, which the
//! receiver recomputes (and rejects old timestamps, against replays). It reads nothing but
//! what it is given; the secret comes from the environment and is never logged.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

use crate::Alert;

/// The webhook's secret: never shown (its `Debug` says so).
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Secret {
        Secret(s.trim().to_owned())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// What the webhook receives.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Format {
    /// `{"text": "…"}`: Slack's incoming webhooks, Mattermost, Rocket.Chat, Teams' Slack
    /// endpoint. The alert's id closes the text.
    Slack,
    /// The alert's fields: `id`, `kind`, `at`, `text`, `detail`.
    Json,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "slack" => Some(Format::Slack),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
}

/// Where alerts go and how (its `Debug` shows the URL's scheme and host only).
#[derive(Clone)]
pub struct Webhook {
    pub url: String,
    pub format: Format,
    pub secret: Option<Secret>,
    /// One attempt's limit.
    pub timeout: Duration,
    /// Attempts in all before the delivery is given up (`failed`).
    pub max_attempts: u32,
    /// The first retry's wait; each next one doubles, up to an hour.
    pub retry: Duration,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &flagship_core::config::redacted_url(&self.url))
            .field("format", &self.format)
            .field("secret", &self.secret)
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .field("retry", &self.retry)
            .finish()
    }
}

impl Webhook {
    /// The webhook `desk.alerts` names, if any, with `secret`.
    pub fn from_config(
        a: &flagship_core::config::Alerts,
        secret: Option<Secret>,
    ) -> Option<Webhook> {
        (!a.webhook.is_empty()).then(|| Webhook {
            url: a.webhook.clone(),
            format: Format::parse(&a.webhook_format).unwrap_or(Format::Slack),
            secret,
            timeout: Duration::from_secs(a.webhook_timeout_s),
            max_attempts: a.webhook_max_attempts,
            retry: Duration::from_secs(a.webhook_retry_s),
        })
    }

    /// The wait before the next attempt after `failed` failed ones; `None` when they are
    /// all used (the delivery is given up).
    pub fn backoff(&self, failed: u32) -> Option<chrono::Duration> {
        if failed >= self.max_attempts {
            return None;
        }
        let wait = self
            .retry
            .saturating_mul(1u32 << failed.saturating_sub(1).min(16))
            .min(Duration::from_secs(3600));
        chrono::Duration::from_std(wait).ok()
    }
}

#[derive(Serialize)]
struct SlackBody {
    text: String,
}

#[derive(Serialize)]
struct JsonBody<'a> {
    id: &'a str,
    kind: &'a str,
    at: String,
    text: &'a str,
    detail: &'a serde_json::Value,
}

/// The request body for `a` in `format`.
pub fn payload(a: &Alert, format: Format) -> Vec<u8> {
    let body = match format {
        Format::Slack => serde_json::to_vec(&SlackBody {
            text: format!(":rotating_light: {} (flagship alert {})", a.text, a.id),
        }),
        Format::Json => serde_json::to_vec(&JsonBody {
            id: &a.id,
            kind: &a.kind,
            at: a.at.to_rfc3339(),
            text: &a.text,
            detail: &a.detail,
        }),
    };
    body.expect("an alert serialises")
}

/// `sha256=<hex>`: the HMAC-SHA256 of `<timestamp>.<body>` under `secret`.
pub fn signature(secret: &Secret, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.0.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// How one attempt ended: the receiver's status, or why there was none (refused, timed
/// out — a dead receiver costs at most the timeout, on the delivery task only).
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Status(u16),
    Error(String),
}

impl Outcome {
    /// A 2xx: delivered.
    pub fn delivered(&self) -> bool {
        matches!(self, Outcome::Status(s) if (200..300).contains(s))
    }
}

/// One attempt to deliver `a` to `hook` at `timestamp` (Unix seconds).
pub async fn attempt(
    client: &reqwest::Client,
    hook: &Webhook,
    a: &Alert,
    timestamp: i64,
) -> Outcome {
    let body = payload(a, hook.format);
    let mut req = client
        .post(&hook.url)
        .timeout(hook.timeout)
        .header("content-type", "application/json")
        .header("x-flagship-alert", &a.id)
        .header("x-flagship-timestamp", timestamp.to_string());
    if let Some(secret) = &hook.secret {
        req = req.header("x-flagship-signature", signature(secret, timestamp, &body));
    }
    match req.body(body).send().await {
        Ok(r) => Outcome::Status(r.status().as_u16()),
        Err(e) if e.is_timeout() => Outcome::Error(format!("no answer within {:?}", hook.timeout)),
        Err(e) if e.is_connect() => Outcome::Error("connection refused or unreachable".into()),
        Err(e) => Outcome::Error(format!("request failed: {}", without_url(&e))),
    }
}

/// An HTTP error's text without its URL (a webhook URL can carry a token: Slack's do).
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(url) = e.url() {
        s = s.replace(url.as_str(), "(the webhook)");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert() -> Alert {
        Alert {
            id: "a1b2".into(),
            kind: "burst".into(),
            at: chrono::DateTime::parse_from_rfc3339("2026-12-06T10:00:00Z")
                .unwrap()
                .with_timezone(&chrono::Utc),
            text: "Burst: 14 flagged posts in 10 minutes".into(),
            detail: serde_json::json!({"observed": 14}),
        }
    }

    #[test]
    fn payloads_and_signatures() {
        let slack: serde_json::Value =
            serde_json::from_slice(&payload(&alert(), Format::Slack)).unwrap();
        assert_eq!(
            slack,
            serde_json::json!({"text": ":rotating_light: Burst: 14 flagged posts in 10 minutes (flagship alert a1b2)"})
        );
        let json: serde_json::Value =
            serde_json::from_slice(&payload(&alert(), Format::Json)).unwrap();
        assert_eq!(json["id"], "a1b2");
        assert_eq!(json["detail"]["observed"], 14);
        // The receiver's check: the HMAC of "<timestamp>.<body>" under the secret.
        let secret = Secret::new("Jefe".into());
        let sig = signature(&secret, 1_765_000_000, b"{}");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"1765000000.{}");
        let hex = sig.strip_prefix("sha256=").unwrap();
        let raw: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        assert!(mac.verify_slice(&raw).is_ok());
        assert_ne!(signature(&secret, 1_765_000_001, b"{}"), sig);
        assert_eq!(format!("{secret:?}"), "Secret(…)");
    }

    #[test]
    fn backoff_doubles_and_gives_up() {
        let hook = Webhook {
            url: "https://example.org/hook".into(),
            format: Format::Slack,
            secret: None,
            timeout: Duration::from_secs(10),
            max_attempts: 4,
            retry: Duration::from_secs(30),
        };
        let secs = |n| hook.backoff(n).map(|d| d.num_seconds());
        assert_eq!((secs(1), secs(2), secs(3)), (Some(30), Some(60), Some(120)));
        assert_eq!(secs(4), None, "four attempts in all");
        let long = Webhook {
            max_attempts: 100,
            ..hook
        };
        assert_eq!(long.backoff(30).map(|d| d.num_seconds()), Some(3600));
    }
}
