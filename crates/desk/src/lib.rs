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
//! - [`export`]: decisions as the split stage's labels file, or Label Studio / Argilla
//!   imports.
//!
//! It reads the desk database, the users file and the reports folder; it writes the desk
//! database only. It never scores posts (the live loop does, in the caller) and never trains.

pub mod auth;
pub mod export;
pub mod groups;
mod page;
pub mod server;
mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use store::{
    Added, Answer, AnswerChange, Decision, DeskError, DeskStore, Explaining, GROUP_MEMBERS,
    GroupCard, GroupDecided, Item, Order, Parent, Refs, Replied, ReplyRow, SCHEMA, Today,
};

pub const STAGE: &str = "desk";
