//! flagship-core: the light core every crate shares — types, config, schemas and the rules
//! written once. No I/O engines: no DataFusion, no object_store, no AWS, no libtorch.
//!
//! - [`v2`]: the serde model of X API v2 payloads (stream messages, search / lookup pages);
//!   [`jsonl`] reads them line by line, reporting each bad line with its source, line, byte
//!   offset and JSON path instead of failing or dropping it.
//! - [`Tweet`]: the canonical record (payload `data` joined with `includes`).
//! - [`schema`]: one versioned Arrow schema per stage output (`arrow-schema` only).
//! - [`location`]: storage locations as values (`path`, `file://`, `s3://bucket/prefix`);
//!   `flagship-store` opens them.
//! - [`layout`]: Kinesis Firehose's `YYYY/MM/DD/HH` key layout, shared by ingest and combine.
//! - [`config`]: `flagship.toml` — mission profile, locations, split, model, business and
//!   monitoring settings; `default.toml` is the only source of defaults; unknown keys are
//!   errors.
//! - The shared rules: [`labels`] (label → `need_support`), [`config::ModelKind`], [`rng`]
//!   (the one seeded generator), [`scoring`] (F-beta, ROC-AUC, threshold tuning),
//!   [`operating`] (the operating points: which threshold the team works at) and [`features`]
//!   (time-of-day buckets, word-count bins).
//!
//! It reads only the config file its caller names; it never talks to X, Firehose, S3 or a
//! model, and it must stay light (xtask-like tools, metrics and the model crate link it).

pub mod bluesky;
pub mod config;
pub mod features;
pub mod jsonl;
pub mod labels;
pub mod layout;
pub mod location;
pub mod mastodon;
pub mod operating;
pub mod rng;
pub mod schema;
pub mod scoring;
pub mod testing;
pub mod track;
pub mod tweet;
pub mod v2;

pub use config::Config;
pub use location::Location;
pub use tweet::{Platform, Tweet};
