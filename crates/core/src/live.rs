//! What the live loop (`flagship-live`) hands on, as plain data: a [`Scored`] post, the
//! words that [`Explained`] a flagged one ([`Why`]), the [`Sink`] that takes both, and the
//! lines of `watch`'s flagged file ([`Row`]) that a desk attached to it reads back.
//!
//! They live in the light core, not beside the loop, so that a sink — the desk's database, a
//! file — builds without libtorch: only the loop itself links the model.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Platform, Post};

/// The most posts the live loop scores at once (`--max-batch`). Batches take what arrived
/// while the last one was scored, so at a steady rate they stay small; in a burst they grow,
/// and a bigger batch sorted by length pads less: at ten times the demo's rate this host
/// scored 273 posts/s with at most 32, 373 with at most 512.
pub const MAX_BATCH: usize = 256;

/// A flagged post still waiting this long after its write without words (none came with
/// it: `--scored-words false`, or no word raised its probability) gets them from the
/// pooled attribution (its words left out of the last layer's mean pool: one pass a post, several
/// posts a pass) rather than occlusion (a pass per word), so a loop that falls behind — a
/// busy host, a burst — still explains what it flags within `flagship-live`'s
/// `EXPLAIN_WITHIN`. In the deletion test on the demo's model its words moved the probability 0.099 against
/// occlusion's 0.171 (random words 0.002): weaker, but words that explain (the gradient
/// stand-in of before did no better than random words and was removed).
pub const EXPLAIN_BEHIND: Duration = Duration::from_secs(2);
/// [`EXPLAIN_BEHIND`] as `--explain-behind`'s default is written (a test holds them equal).
pub const EXPLAIN_BEHIND_FLAG: &str = "2s";

/// A micro-batch whose oldest post has waited this long is scored in a hurry. At the demo's
/// rate a post waits 9 ms at p50 and 55 ms at p99 (108 ms on a busy host); a loop that waits
/// longer is behind — a launch burst — and reading fewer layers (the demo's model: 36 % of
/// their work against 59 %) is what lets it catch up (docs/model.md#in-a-hurry).
pub const HURRY_AFTER: Duration = Duration::from_millis(100);
/// [`HURRY_AFTER`] as `--hurry-after`'s default is written (a test holds them equal).
pub const HURRY_AFTER_FLAG: &str = "100ms";

/// A batch that waited [`HURRY_AFTER`] is hurried only if it also holds at least this many
/// posts: a backlog, not a slow moment. On a host busy with something else, at the demo's
/// rate, a batch of one or two posts can wait 100 ms; with the wait alone 826 of `bench all`'s
/// 1,000 posts on the busy host were hurried. In a burst at ten times the demo's rate a batch
/// that waited 100 ms holds about 40.
pub const HURRY_MIN_POSTS: usize = 16;

/// Once a micro-batch was scored in a hurry, the loop stays hurried this long after the last
/// batch that was behind: a burst lasts minutes, and a loop that went back to care as soon as
/// it had caught up fell behind again within a second.
pub const HURRY_HOLD: Duration = Duration::from_secs(5);

/// One word and how much it raised P(needs support).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Why {
    pub word: String,
    pub weight: f32,
}

/// One post the profile kept, with the model's judgement.
#[derive(Debug, Clone)]
pub struct Scored {
    pub post: Post,
    /// The cleaned text the model read.
    pub text_model: String,
    /// The profile's wanted terms the post matched (filter's `matched_terms`).
    pub matched: Vec<String>,
    pub client: Option<String>,
    pub probability: f32,
    pub need_support: bool,
    pub threshold: f64,
    pub model_id: String,
    pub scored_at: DateTime<Utc>,
    /// Arrival → scored (before the sink's write).
    pub latency_ms: f64,
    /// Scored in a hurry: the loop had fallen behind, and the post left by the exits' looser
    /// margins (`model.early_exit_hurried`), reading fewer layers.
    pub hurried: bool,
    /// For a flagged post, the words that raised its probability most, as the scoring pass
    /// found them (empty otherwise, or when none came with it: they follow through
    /// [`Sink::explained`]).
    pub why: Vec<Why>,
}

/// Why a flagged post, already written, was flagged, and where it sits among the others.
#[derive(Debug, Clone, Default)]
pub struct Explained {
    pub platform: Platform,
    pub id: String,
    /// Its words; empty: none new (a vector alone, or none found).
    pub why: Vec<Why>,
    /// The post's sentence embedding (unit length) from the frozen base encoder, which the
    /// desk groups questions by; empty when no encoder runs or it could not be computed.
    pub embedding: Vec<f32>,
}

/// Sentence embeddings: unit-length vectors whose dot product is the texts' cosine
/// similarity. The live loop embeds flagged posts with it, the desk its saved answers; the
/// model crate implements it over libtorch, so this trait keeps the desk free of it.
pub trait Embed: Send + Sync {
    /// One vector per text, in order.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String>;
    /// Names the encoder.
    fn id(&self) -> &str;
}

/// A sink could not take what it was given: the loop stops with this as its reason.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

impl SinkError {
    /// Any error, by its message.
    pub fn of(e: impl std::fmt::Display) -> SinkError {
        SinkError(e.to_string())
    }
}

/// Where scored posts go. A write that returns has made them durable (flushed, committed).
pub trait Sink {
    fn write(&mut self, scored: &[Scored]) -> Result<(), SinkError>;
    /// The words behind posts [`Sink::write`] already took as flagged: their first (its `why`
    /// was empty), or better ones that replace those it came with.
    fn explained(&mut self, why: &[Explained]) -> Result<(), SinkError>;
}

/// A line of `watch`'s flagged file.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum Row {
    Flagged(Box<FlaggedRow>),
    Why(WhyRow),
}

/// A line of the flagged file saying why a post above it was flagged (written after it).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhyRow {
    /// The flagged post's id.
    pub explains: String,
    pub platform: Platform,
    /// The words that raised the probability most, strongest first.
    pub why: Vec<Why>,
}

impl WhyRow {
    pub fn of(e: &Explained) -> WhyRow {
        WhyRow {
            explains: e.id.clone(),
            platform: e.platform,
            why: e.why.clone(),
        }
    }

    pub fn explained(self) -> Explained {
        Explained {
            platform: self.platform,
            id: self.explains,
            why: self.why,
            embedding: Vec::new(),
        }
    }
}

/// One line of the flagged file: a flagged post with its link, score and model.
#[derive(Serialize, Deserialize)]
pub struct FlaggedRow {
    pub platform: Platform,
    pub id: String,
    pub url: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub author_username: Option<String>,
    pub client: Option<String>,
    pub text: String,
    pub text_model: String,
    #[serde(default)]
    pub matched: Vec<String>,
    pub need_support_probability: f32,
    pub threshold: f64,
    pub model: String,
    pub flagged_at: DateTime<Utc>,
    pub latency_ms: f64,
    /// Scored in a hurry ([`Scored::hurried`]; absent: careful).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hurried: bool,
    /// The words that raised the probability most, strongest first, as the scoring pass
    /// found them (empty when none came with the post); a [`WhyRow`] line after it replaces
    /// them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub why: Vec<Why>,
}

impl FlaggedRow {
    pub fn of(s: &Scored) -> FlaggedRow {
        let t = &s.post;
        FlaggedRow {
            platform: t.platform,
            id: t.id.clone(),
            url: t.url.clone(),
            created_at: t.created_at,
            author_username: t.author_username.clone(),
            client: s.client.clone(),
            text: t.text.clone(),
            text_model: s.text_model.clone(),
            matched: s.matched.clone(),
            need_support_probability: s.probability,
            threshold: s.threshold,
            model: s.model_id.clone(),
            flagged_at: s.scored_at,
            latency_ms: s.latency_ms,
            hurried: s.hurried,
            why: s.why.clone(),
        }
    }

    /// Back to a scored post (the desk attached to a watch's file).
    pub fn scored(self) -> Scored {
        Scored {
            post: Post {
                platform: self.platform,
                id: self.id,
                url: self.url,
                created_at: self.created_at,
                author_username: self.author_username,
                text: self.text,
                ..Default::default()
            },
            text_model: self.text_model,
            matched: self.matched,
            client: self.client,
            probability: self.need_support_probability,
            need_support: true,
            threshold: self.threshold,
            model_id: self.model,
            scored_at: self.flagged_at,
            latency_ms: self.latency_ms,
            hurried: self.hurried,
            why: self.why,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flags' defaults, as written, are the loop's constants.
    #[test]
    fn the_flags_defaults_are_the_loops() {
        let parse = crate::config::parse_duration;
        assert_eq!(parse(HURRY_AFTER_FLAG), Ok(HURRY_AFTER));
        assert_eq!(parse(EXPLAIN_BEHIND_FLAG), Ok(EXPLAIN_BEHIND));
    }
}
