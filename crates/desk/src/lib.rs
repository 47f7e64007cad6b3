//! flagship-desk: the support team's triage desk — a web page of live flagged posts with
//! one-key decisions that become labels.
//!
//! - [`DeskStore`] (`store`): the embedded SQLite database under the page — posts, scores,
//!   decisions with who and when (append-only), the views (queue, uncertain, today) and the
//!   labels the decisions amount to. It is a [`flagship_core::live::Sink`].
//! - [`server`]: the axum app — the page (server-rendered HTML, one external script and
//!   stylesheet, no external fetches), live updates over SSE, the decision API, logins
//!   (an argon2 users file or a token from the environment), CSRF on every POST, a strict
//!   CSP, the report pages; [`server::LiveSink`] is the sink that writes to the store and
//!   tells open pages.
//! - [`groups`]: question groups — flagged posts whose sentence embeddings are near one
//!   another, found online with bounded memory, shown as one card and decided with one key.
//! - [`alerts`]: burst alerts — flagged posts arriving far faster than in the last hours (an
//!   exact Poisson tail on per-minute counts, with a cooldown) and question groups growing
//!   (many distinct authors at once); pure functions of the times passed in.
//! - [`clock`]: the first-response clock — how long each post that needs a reply waited for
//!   its first answer, against `desk.first_response`, and a day's p50 / p90, overdue and late
//!   posts per person and per platform, in `desk.timezone`.
//! - [`webhook`]: alerts to a webhook — Slack-compatible or signed JSON (HMAC-SHA256), one
//!   attempt with a timeout, the backoff between attempts.
//! - [`summary`]: the lead's daily summary and `desk report`'s first responses by day, as
//!   Markdown.
//! - [`export`]: decisions as the split stage's labels file, or Label Studio / Argilla
//!   imports.
//!
//! It reads the desk database, the users file and the reports folder; it writes the desk
//! database only. It never scores posts (the live loop does, in the caller) and never trains.

pub mod alerts;
pub mod auth;
pub mod clock;
pub mod export;
pub mod groups;
mod page;
pub mod server;
mod store;
pub mod summary;
#[cfg(feature = "testing")]
pub mod testing;
pub mod webhook;

pub use store::{
    Added, Alert, Answer, AnswerChange, AttemptRow, Decision, Delivery, DeliveryRow, DeskError,
    DeskStore, Explaining, GROUP_MEMBERS, GroupCard, GroupDecided, Item, Order, Parent, Refs,
    Replied, ReplyRow, SCHEMA, Today, TopGroup, Who,
};

pub const STAGE: &str = "desk";
