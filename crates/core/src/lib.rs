//! flagship-core: the types every stage shares, and nothing that does a stage's work.
//!
//! - [`v2`]: the serde model of X API v2 payloads (stream messages, search / lookup pages);
//!   [`jsonl`] reads them line by line, reporting each bad line with its source, line, byte
//!   offset and JSON path instead of failing or dropping it.
//! - [`Tweet`]: the canonical record (payload `data` joined with `includes`).
//! - [`schema`]: one versioned Arrow schema per stage output; [`records`] converts tweets to
//!   and from Arrow batches and Parquet.
//! - [`storage`]: locations as URLs (`path`, `file://`, `s3://bucket/prefix`, custom
//!   endpoint) opened through `object_store`, with atomic writes.
//! - [`layout`]: Kinesis Firehose's `YYYY/MM/DD/HH` key layout, shared by ingest and combine.
//! - [`frames`]: what every DataFusion stage job shares: a session, the stores registered
//!   with it, and output batches conformed to a stage schema and encoded deterministically.
//! - [`manifest`]: which inputs produced each output, so finished work is skipped.
//! - [`config`]: `flagship.toml` — mission profile, locations, split, model, business and
//!   monitoring settings; unknown keys are errors.
//!
//! It reads and writes only what its callers hand it; it never talks to X, Firehose or a
//! model, and it must not depend on `tch` (xtask and light tools link it).

pub mod config;
pub mod frames;
pub mod jsonl;
pub mod layout;
pub mod manifest;
pub mod records;
pub mod schema;
pub mod storage;
pub mod testing;
pub mod tweet;
pub mod v2;

pub use config::Config;
pub use tweet::Tweet;
