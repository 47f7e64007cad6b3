//! One stream line, checked and stamped: the unit ingest sends.
//!
//! An X line is checked as JSON once, its tweet id read (for dedup across reconnects) and its
//! kind told apart — a tweet, an error / operational-disconnect message, or neither — then the
//! time it was received is added as a top-level `received_at` field (combine reads it; X never
//! sends one). A Bluesky or Mastodon line is parsed into its post (which checks it whole, and
//! gives the text the track terms are matched against, as those platforms have no server-side
//! filter) and kept verbatim in flagship's envelope ([`flagship_platforms::jsonl::envelope`]).
//! Deletions and events that are no post are told apart and counted. Blank lines are
//! keep-alives and never become records.

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use flagship_core::{Platform, Post};
use flagship_platforms::{bluesky, jsonl, mastodon};
use serde::Deserialize;

/// What a line holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// A keep-alive (blank line).
    KeepAlive,
    /// A post (an X stream message with `data.id`, a Bluesky post, a Mastodon status): its
    /// platform-scoped id, the record to send, and — for Bluesky and Mastodon, which had to
    /// be parsed whole to be checked — the post itself (its text is what the track terms are
    /// matched against there; the live loop uses it without parsing the record again).
    Post {
        id: String,
        record: Bytes,
        post: Option<Box<Post>>,
    },
    /// A post deleted by its author (Bluesky, Mastodon).
    Deleted { id: String },
    /// An event that is no post (Bluesky identity/account, likes…; Mastodon notifications).
    Other { kind: String },
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

/// Whether `post` (from a line no server filtered) is set aside by the mission's track terms.
/// X's lines are filtered by the stream's rules, so only Bluesky and Mastodon posts are.
pub fn off_track(
    line: &crate::source::SourceLine,
    post: Option<&Post>,
    track: &flagship_core::track::Track,
) -> bool {
    line.unfiltered && post.is_some_and(|p| !track.matches(&p.text))
}

/// Classifies one line (without its newline) of `platform` and stamps posts with
/// `received_at`.
pub fn classify(platform: Platform, line: &[u8], received_at: DateTime<Utc>) -> Line {
    let body = line.trim_ascii();
    if body.is_empty() {
        return Line::KeepAlive;
    }
    match platform {
        Platform::X => classify_x(body, received_at),
        Platform::Bluesky => classify_bluesky(body, received_at),
        Platform::Mastodon => classify_mastodon(body, received_at),
    }
}

fn malformed(e: impl std::fmt::Display) -> Line {
    Line::Malformed {
        reason: e.to_string(),
    }
}

fn post(platform: Platform, tweet: Post, body: &[u8], at: DateTime<Utc>) -> Line {
    let mut record = jsonl::envelope(platform, at, body);
    record.push(b'\n');
    Line::Post {
        id: tweet.id.clone(),
        record: Bytes::from(record),
        post: Some(Box::new(tweet)),
    }
}

fn classify_bluesky(body: &[u8], at: DateTime<Utc>) -> Line {
    let event = match bluesky::parse_event(body) {
        Ok(e) => e,
        Err(e) => return malformed(e),
    };
    match event.kind() {
        bluesky::Kind::Delete { uri } => Line::Deleted { id: uri },
        bluesky::Kind::Other(kind) => Line::Other { kind },
        bluesky::Kind::Post { .. } => match event.to_post(Some(at)) {
            Ok(Some(t)) => post(Platform::Bluesky, t, body, at),
            Ok(None) => Line::Other {
                kind: "post without a record".into(),
            },
            Err(e) => malformed(e),
        },
    }
}

fn classify_mastodon(body: &[u8], at: DateTime<Utc>) -> Line {
    match mastodon::parse_line(body) {
        Err(e) => malformed(e),
        Ok((mastodon::Event::Update(s) | mastodon::Event::StatusUpdate(s), instance)) => post(
            Platform::Mastodon,
            s.to_post(instance.as_deref(), Some(at)),
            body,
            at,
        ),
        Ok((mastodon::Event::Delete(id), _)) => Line::Deleted { id },
        Ok((mastodon::Event::Other(kind), _)) => Line::Other { kind },
    }
}

fn classify_x(body: &[u8], received_at: DateTime<Utc>) -> Line {
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
            Ok(id) => Line::Post {
                id: id.to_string(),
                record: stamp(body, received_at),
                post: None,
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
        assert_eq!(classify(Platform::X, b"\r", at), Line::KeepAlive);
        let Line::Post { id, record, .. } = classify(
            Platform::X,
            br#"{"data":{"id":"1480000000000000001","text":"hi"},"matching_rules":[]}"#,
            at,
        ) else {
            panic!("a tweet")
        };
        assert_eq!(id, "1480000000000000001");
        let p = flagship_platforms::jsonl::parse_payload(record.trim_ascii(), None).unwrap();
        assert_eq!(p.posts[0].received_at, Some(at));
        assert!(record.ends_with(b"}\n"));
        let e = classify(
            Platform::X,
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
            classify(Platform::X, br#"{"data":{"id":"12"#, at),
            Line::Malformed { .. }
        ));
        assert!(matches!(
            classify(Platform::X, br#"{"meta":{}}"#, at),
            Line::Malformed { .. }
        ));
    }
}
