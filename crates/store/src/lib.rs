//! flagship-store: where data lives and how it is read and written — every crate that touches
//! files or object storage goes through here.
//!
//! - [`storage`]: a [`Location`] (from `flagship-core`) opened as a [`Store`] through
//!   `object_store`, S3 credentials from the AWS default chain; atomic puts.
//! - [`aws`]: the one AWS SDK configuration (a rustls client on `ring`, the same crypto stack
//!   object_store uses), for crates that call AWS APIs.
//! - [`records`]: tweets to and from Arrow batches and Parquet (one fixed encoding).
//! - [`frames`]: what every DataFusion stage job shares: a session, stores registered with
//!   it, batches conformed to a stage schema, and [`frames::run_hours`], the per-hour driver.
//! - [`manifest`]: which inputs produced each output, so finished work is skipped.
//! - [`table`]: JSONL / CSV / Parquet example and prediction files (train, predict,
//!   evaluate, monitor), bad lines and labels named by line.
//! - [`mirror`]: an area as local files (an `s3://` one mirrored), and content digests that
//!   key pipeline stages.
//! - [`fs`]: the one atomic local write.
//!
//! It moves and encodes data; it never decides what a stage keeps, and never links libtorch.

pub mod aws;
pub mod frames;
pub mod fs;
pub mod manifest;
pub mod mirror;
pub mod records;
pub mod storage;
pub mod table;

pub use flagship_core::location::{Location, S3Options};
pub use storage::{Entry, StorageError, Store};
