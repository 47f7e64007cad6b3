//! flagship-ingest: X API v2 filtered stream → Kinesis Firehose (or the local Firehose
//! layout), and the AWS resources behind it.
//!
//! This foundation holds the reconnect policy X documents for the v2 stream ([`backoff`]);
//! the stream client, the Firehose and local sinks and `aws create | status | destroy` land
//! with the ingest issue. It reads the network and writes raw NDJSON records; it never cleans
//! or filters text (that is textproc's and filter's job) and never logs secrets.

pub mod backoff;
