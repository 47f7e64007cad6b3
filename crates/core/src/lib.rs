//! flagship-core: the light core every crate shares — types, config, schemas and the rules
//! written once. No I/O engines: no DataFusion, no object_store, no AWS, no libtorch.
//!
//! - [`Post`]: the canonical record of a post on any platform (X, Bluesky, Mastodon) and its
//!   [`Platform`]; `flagship-platforms` reads each platform's payloads into it.
//! - [`live`]: what the micro-batch loop hands on — a scored post, the words that explain it,
//!   the `Sink` that takes them — as plain data, so the desk and other sinks build without
//!   libtorch.
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
//!   (time-of-day buckets, word-count bins), and [`Stop`] (why a streaming run ended).
//! - [`telemetry`]: the streaming runs' counters, gauges and latency histogram, and the
//!   Prometheus text format `/metrics` serves them in (no listener: the callers serve it).
//!
//! It reads only the config file its caller names; it never parses a platform's payload,
//! never talks to X, Bluesky, Mastodon, Firehose, S3 or a model, and it must stay light
//! (xtask-like tools, metrics, the desk and the model crate link it).

pub mod config;
pub mod features;
pub mod labels;
pub mod layout;
pub mod live;
pub mod location;
pub mod operating;
pub mod post;
pub mod rng;
pub mod schema;
pub mod scoring;
pub mod stop;
pub mod telemetry;
pub mod track;
pub mod words;

pub use config::Config;
pub use location::Location;
pub use post::{Platform, Post, PostRef};
pub use stop::Stop;
