//! One stream line, checked and stamped: the unit ingest sends.
//!
//! A line is checked as JSON once, its tweet id read (for dedup across reconnects) and its
//! kind told apart — a tweet, an error / operational-disconnect message, or neither — then the
//! time it was received is added as a top-level `received_at` field (combine reads it; X never
//! sends one). Blank lines are keep-alives and never become records.

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;

/// What a line holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// A keep-alive (blank line).
    KeepAlive,
    /// A tweet (stream message with `data.id`).
    Tweet { id: u64, record: Bytes },
    /// A message with `errors` and no tweet: an operational disconnect or another API error.
    Error {
        operational_disconnect: bool,
        message: String,
    },
    /// Not JSON, or JSON that is not a stream message.
    Malformed { reason: String },
}

#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(borrow, default)]
    data: Option<PeekData<'a>>,
    #[serde(default)]
    errors: Vec<PeekError>,
}

#[derive(Deserialize)]
struct PeekData<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
}

#[derive(Deserialize, Default)]
struct PeekError {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    detail: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

/// Classifies one line (without its newline) and stamps tweets with `received_at`.
pub fn classify(line: &[u8], received_at: DateTime<Utc>) -> Line {
    let body = line.trim_ascii();
    if body.is_empty() {
        return Line::KeepAlive;
    }
    let peek: Peek = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => {
            return Line::Malformed {
                reason: e.to_string(),
            };
        }
    };
    match peek.data {
        Some(d) => match d.id.parse::<u64>() {
            Ok(id) => Line::Tweet {
                id,
                record: stamp(body, received_at),
            },
            Err(_) => Line::Malformed {
                reason: format!("data.id {:?} is not a tweet id", d.id),
            },
        },
        None if !peek.errors.is_empty() => {
            let e = &peek.errors[0];
            let text = |o: &Option<String>| o.clone().unwrap_or_default();
            Line::Error {
                operational_disconnect: peek.errors.iter().any(|e| {
                    e.title.as_deref() == Some("operational-disconnect")
                        || e.kind
                            .as_deref()
                            .is_some_and(|k| k.ends_with("/operational-disconnect"))
                }),
                message: format!("{}: {}", text(&e.title), text(&e.detail)),
            }
        }
        None => Line::Malformed {
            reason: "neither `data` nor `errors`".into(),
        },
    }
}

/// `body` (a JSON object) with `"received_at": "<RFC 3339>"` added before its closing brace,
/// and a newline: one Firehose record.
fn stamp(body: &[u8], at: DateTime<Utc>) -> Bytes {
    let close = body
        .iter()
        .rposition(|&b| b == b'}')
        .expect("a JSON object");
    let ts = at.to_rfc3339_opts(SecondsFormat::Millis, true);
    let mut out = Vec::with_capacity(body.len() + 48);
    out.extend_from_slice(&body[..close]);
    out.extend_from_slice(b",\"received_at\":\"");
    out.extend_from_slice(ts.as_bytes());
    out.extend_from_slice(b"\"}\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn lines_are_classified_and_stamped() {
        let at = Utc.with_ymd_and_hms(2022, 1, 9, 23, 59, 58).unwrap();
        assert_eq!(classify(b"\r", at), Line::KeepAlive);
        let Line::Tweet { id, record } = classify(
            br#"{"data":{"id":"1480000000000000001","text":"hi"},"matching_rules":[]}"#,
            at,
        ) else {
            panic!("a tweet")
        };
        assert_eq!(id, 1480000000000000001);
        let p = flagship_core::jsonl::parse_payload(record.trim_ascii(), None).unwrap();
        assert_eq!(p.tweets[0].received_at, Some(at));
        assert!(record.ends_with(b"}\n"));
        let e = classify(
            br#"{"errors":[{"title":"operational-disconnect","disconnect_type":"UpstreamOperationalDisconnect","detail":"This stream has been disconnected upstream for operational reasons.","type":"https://api.twitter.com/2/problems/operational-disconnect"}]}"#,
            at,
        );
        assert!(
            matches!(
                e,
                Line::Error {
                    operational_disconnect: true,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(matches!(
            classify(br#"{"data":{"id":"12"#, at),
            Line::Malformed { .. }
        ));
        assert!(matches!(
            classify(br#"{"meta":{}}"#, at),
            Line::Malformed { .. }
        ));
    }
}
