//! Reading newline-delimited v2 payloads (stream captures, Firehose objects, twarc files).
//!
//! Every line is accounted for: it yields tweets, is a keep-alive (blank), or is a
//! [`BadLine`] naming the source, line number, byte offset and the JSON path that failed.
//! Nothing here panics on input, and nothing is dropped without being counted.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;

use flagship_core::{Platform, Post};

use crate::Parsed;
use crate::x::{ApiError, Payload};

/// Why one payload did not parse: the JSON path (`data[3].created_at`) and serde's message.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
#[error("at `{path}`: {message}")]
pub struct PayloadError {
    pub path: String,
    pub message: String,
}

/// Parses one payload (one stream message or one page).
pub fn parse_payload(
    bytes: &[u8],
    received_at: Option<DateTime<Utc>>,
) -> Result<Parsed, PayloadError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let payload: Payload = serde_path_to_error::deserialize(&mut de).map_err(|e| PayloadError {
        path: e.path().to_string(),
        message: e.inner().to_string(),
    })?;
    de.end().map_err(|e| PayloadError {
        path: ".".into(),
        message: e.to_string(),
    })?;
    // Any JSON object deserialises (every field is optional): one with neither tweets, nor
    // errors, nor a page's `meta` is not an X API payload, and must not vanish uncounted.
    if payload.data.is_none() && payload.errors.is_empty() && payload.meta.is_none() {
        return Err(PayloadError {
            path: ".".into(),
            message: "not an X API v2 payload: no `data`, `errors` or `meta`".into(),
        });
    }
    Ok(payload.into_parsed(received_at))
}

/// A post of a platform other than X as flagship records it raw: the platform's own event,
/// verbatim, in an envelope naming the platform and when ingest received it. X lines stay the
/// API's stream messages (with `received_at` added), so older raw data reads unchanged.
pub fn envelope(platform: Platform, received_at: DateTime<Utc>, event: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(event.len() + 80);
    // One record a line: a line break in a (valid, already parsed) event is whitespace
    // between tokens — JSON strings hold none raw — so it becomes a space.
    out.extend_from_slice(b"{\"platform\":\"");
    out.extend_from_slice(platform.as_str().as_bytes());
    out.extend_from_slice(b"\",\"received_at\":\"");
    out.extend_from_slice(
        received_at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            .as_bytes(),
    );
    out.extend_from_slice(b"\",\"event\":");
    out.extend(
        event
            .iter()
            .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
    );
    out.push(b'}');
    out
}

#[derive(serde::Deserialize)]
struct Envelope<'a> {
    platform: Platform,
    #[serde(default)]
    received_at: Option<DateTime<Utc>>,
    #[serde(borrow)]
    event: &'a serde_json::value::RawValue,
}

/// Parses one raw record: an X API v2 payload, or another platform's event in its
/// [`envelope`]. Events that carry no post (a deletion, an identity change) yield no tweets.
pub fn parse_record(
    bytes: &[u8],
    received_at: Option<DateTime<Utc>>,
) -> Result<Parsed, PayloadError> {
    let body = bytes.trim_ascii_start();
    if !body.starts_with(b"{\"platform\"") {
        return parse_payload(bytes, received_at);
    }
    let env: Envelope = serde_json::from_slice(body).map_err(|e| PayloadError {
        path: ".".into(),
        message: format!("not a flagship record envelope: {e}"),
    })?;
    let at = env.received_at.or(received_at);
    let event = env.event.get().as_bytes();
    let nested = |e: PayloadError| PayloadError {
        path: format!("event.{}", e.path).trim_end_matches('.').to_owned(),
        message: e.message,
    };
    let posts = match env.platform {
        Platform::X => return parse_payload(event, at).map_err(nested),
        Platform::Bluesky => crate::bluesky::parse_event(event)
            .and_then(|e| e.to_post(at))
            .map_err(nested)?
            .into_iter()
            .collect(),
        Platform::Mastodon => match crate::mastodon::parse_line(event).map_err(nested)? {
            (
                crate::mastodon::Event::Update(s) | crate::mastodon::Event::StatusUpdate(s),
                instance,
            ) => vec![s.to_post(instance.as_deref(), at)],
            _ => Vec::new(),
        },
    };
    Ok(Parsed {
        posts,
        ..Parsed::default()
    })
}

/// A line that did not parse, with everything needed to find it again.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BadLine {
    /// File name or object key.
    pub source: String,
    /// 1-based line number.
    pub line: usize,
    /// Byte offset of the line's first byte in the source.
    pub offset: u64,
    pub error: PayloadError,
    /// The line itself (lossy UTF-8), so a quarantine file can be replayed.
    pub raw: String,
}

impl fmt::Display for BadLine {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{}:{} (byte {}): {}",
            self.source, self.line, self.offset, self.error
        )
    }
}

/// An API error object met in a source, with where it was.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourcedApiError {
    pub source: String,
    pub line: usize,
    pub error: ApiError,
}

/// Everything read from one or more sources.
#[derive(Debug, Clone, Default)]
pub struct ReadReport {
    pub posts: Vec<Post>,
    pub lines: usize,
    pub keep_alives: usize,
    pub users_joined: usize,
    pub api_errors: Vec<SourcedApiError>,
    pub bad_lines: Vec<BadLine>,
}

impl fmt::Display for ReadReport {
    /// One line: what was read and what was set aside.
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{} lines: {} tweets ({} with their author joined), {} keep-alives, {} API error objects, {} malformed lines",
            self.lines,
            self.posts.len(),
            self.users_joined,
            self.keep_alives,
            self.api_errors.len(),
            self.bad_lines.len()
        )
    }
}

impl ReadReport {
    /// Parses every line of `bytes`, attributing results to `source`.
    pub fn read(&mut self, source: &str, bytes: &[u8], received_at: Option<DateTime<Utc>>) {
        let mut offset = 0u64;
        for (i, line) in bytes.split_inclusive(|&b| b == b'\n').enumerate() {
            let line_no = i + 1;
            let start = offset;
            offset += line.len() as u64;
            self.lines += 1;
            let trimmed = line.trim_ascii();
            if trimmed.is_empty() {
                self.keep_alives += 1;
                continue;
            }
            match parse_record(trimmed, received_at) {
                Ok(parsed) => {
                    self.users_joined += parsed.users_joined;
                    self.posts.extend(parsed.posts);
                    self.api_errors
                        .extend(parsed.errors.into_iter().map(|error| SourcedApiError {
                            source: source.to_owned(),
                            line: line_no,
                            error,
                        }));
                }
                Err(error) => self.bad_lines.push(BadLine {
                    source: source.to_owned(),
                    line: line_no,
                    offset: start,
                    error,
                    raw: String::from_utf8_lossy(trimmed).into_owned(),
                }),
            }
        }
    }

    /// The bad lines as a quarantine file: one JSON object per line.
    pub fn quarantine_jsonl(&self) -> String {
        self.bad_lines
            .iter()
            .map(|b| serde_json::to_string(b).expect("BadLine serializes") + "\n")
            .collect()
    }
}

#[cfg(test)]
mod payload_tests {
    use super::*;

    #[test]
    fn objects_that_are_not_payloads_are_errors() {
        for line in [&b"{}"[..], b"{\"foo\":1}", b"{\"includes\":{}}"] {
            let e = parse_payload(line, None).unwrap_err();
            assert!(e.message.contains("not an X API v2 payload"), "{e}");
        }
        // An empty search page is a payload (no tweets, its meta says so).
        let p = parse_payload(b"{\"meta\":{\"result_count\":0}}", None).unwrap();
        assert!(p.posts.is_empty());
        let mut r = ReadReport::default();
        r.read(
            "x.jsonl",
            b"{}\n\n{\"data\":{\"id\":\"1\",\"text\":\"hi\"}}\n",
            None,
        );
        assert_eq!((r.posts.len(), r.bad_lines.len(), r.keep_alives), (1, 1, 1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_as_number_or_string_never_float() {
        let p = parse_payload(
            br#"{"data":{"id":"1377650090978992134","text":"hi"},"matching_rules":[{"id":1377649934414049282,"tag":null}]}"#,
            None,
        )
        .unwrap();
        assert_eq!(p.posts[0].id, "1377650090978992134");
        assert_eq!(p.posts[0].matching_rules, vec!["1377649934414049282"]);

        let err = parse_payload(br#"{"data":{"id":1.5e18,"text":"hi"}}"#, None).unwrap_err();
        assert_eq!(err.path, "data.id");
        assert!(err.message.contains("float"), "{err}");
    }

    #[test]
    fn bad_lines_name_line_offset_and_field() {
        let input = b"{\"data\":{\"id\":\"1\",\"text\":\"a\"}}\n\r\n{\"data\":{\"id\":\"2\"}}\n{\"data\":{\"id\":\"3\",\"te";
        let mut r = ReadReport::default();
        r.read("cap.jsonl", input, None);
        assert_eq!(r.lines, 4);
        assert_eq!(r.keep_alives, 1);
        assert_eq!(r.posts.len(), 1);
        assert_eq!(r.bad_lines.len(), 2);
        let missing = &r.bad_lines[0];
        assert_eq!((missing.line, missing.offset), (3, 33));
        assert_eq!(missing.error.path, "data");
        assert!(
            missing.error.message.contains("missing field `text`"),
            "{missing}"
        );
        assert_eq!(r.bad_lines[1].line, 4);
        assert!(
            r.bad_lines[1]
                .to_string()
                .starts_with("cap.jsonl:4 (byte 53)")
        );
        assert_eq!(r.quarantine_jsonl().lines().count(), 2);
    }

    #[test]
    fn stream_error_message_is_reported_not_fatal() {
        let line = br#"{"errors":[{"title":"operational-disconnect","disconnect_type":"UpstreamOperationalDisconnect","detail":"This stream has been disconnected upstream for operational reasons.","type":"https://api.twitter.com/2/problems/operational-disconnect"}]}"#;
        let p = parse_payload(line, None).unwrap();
        assert!(p.posts.is_empty());
        assert_eq!(p.errors.len(), 1);
        assert!(p.errors[0].is_operational_disconnect());
    }

    #[test]
    fn references_and_entities_not_regexes() {
        // Starts with "RT" but references nothing: not a retweet (the seed flagged it).
        let p = parse_payload(
            br#"{"data":{"id":"9","text":"RT if you love #JWST @NASAWebb","entities":{"hashtags":[{"start":15,"end":20,"tag":"JWST"}],"mentions":[{"start":21,"end":30,"username":"NASAWebb"}]}}}"#,
            None,
        )
        .unwrap();
        let t = &p.posts[0];
        assert!(!t.is_retweet && !t.is_reply && !t.is_quote);
        assert_eq!(t.hashtags, vec!["JWST"]);
        assert_eq!(t.mentions, vec!["NASAWebb"]);
    }
}
