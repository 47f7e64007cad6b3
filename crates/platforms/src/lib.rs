//! flagship-platforms: what each platform sends, read into the one post record.
//!
//! - [`x`]: X API v2 payloads (stream messages, search / lookup pages) → posts, with the
//!   payload's `includes` joined;
//! - [`bluesky`]: Jetstream events (`app.bsky.feed.post` commits, identity and account
//!   events) → posts;
//! - [`mastodon`]: statuses and streaming events (`update`, `status.update`, `delete`, …) →
//!   posts, the content HTML turned into text;
//! - [`jsonl`]: the raw record as ingest writes it (an X payload, or another platform's event
//!   in flagship's envelope) read line by line, every bad line named and counted;
//! - [`html`]: the one HTML and entity decoder, for Mastodon's content and X's escaped text;
//! - [`reply`]: the team's approved replies: `{author}` / `{link}` filled in, the text
//!   measured as X (twitter-text v3 weighted length), Bluesky and Mastodon count it.
//!
//! Ingest (to classify what a stream sends), combine (raw records → Parquet) and the live
//! loop call it. It does no I/O — no sockets, no files (callers hand it bytes) — and it knows
//! nothing of storage, models or the desk. The record itself ([`flagship_core::Post`]) and
//! [`Platform`] live in the light core, which every crate shares.

pub mod bluesky;
pub mod html;
pub mod jsonl;
pub mod mastodon;
pub mod reply;
pub mod x;

use flagship_core::{Platform, Post};

use crate::x::ApiError;

pub use jsonl::{BadLine, PayloadError, ReadReport, parse_payload, parse_record};

/// What one payload yields.
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    pub posts: Vec<Post>,
    /// Error objects in the payload (partial errors beside `data`, or a stream error message).
    pub errors: Vec<ApiError>,
    /// How many of `tweets` found their author in `includes.users`.
    pub users_joined: usize,
}

/// A post's text as a person reads it. X escapes `&`, `<` and `>` in `text` (one level,
/// which textproc's plan undoes the same way for the model): decoded once here, so a tweet's
/// `&amp;lt;` shows as `&lt;`; the other platforms' texts are plain already.
pub fn display_text(platform: Platform, text: &str) -> std::borrow::Cow<'_, str> {
    if platform != Platform::X {
        return std::borrow::Cow::Borrowed(text);
    }
    html::decode_entities(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x_text_is_unescaped_once_for_people() {
        assert_eq!(
            display_text(Platform::X, "a &lt;b&gt; &amp;amp; c"),
            "a <b> &amp; c"
        );
        assert_eq!(display_text(Platform::Bluesky, "&lt;"), "&lt;");
    }
}
