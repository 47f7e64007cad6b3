//! Kinesis Firehose as a sink: `PutRecordBatch` with at most 500 records and 4 MiB a call,
//! one newline-terminated JSON object per record. Only the records that `RequestResponses`
//! marks failed are retried, with exponential backoff; a call that fails whole is retried
//! whole. After `max_attempts`, the records still unsent are appended to a local spill file
//! (NDJSON, fsynced) that `flagship ingest replay-spill` sends later. A record over Firehose's
//! 1,000 KiB limit is spilled at once. Nothing is dropped silently; every count is reported.

pub use aws_sdk_firehose::Client;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use aws_sdk_firehose::primitives::Blob;
use aws_sdk_firehose::types::Record;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::IngestError;
use crate::sink::{Drain, Sink, SinkCounts};

pub const MAX_RECORDS: usize = 500;
pub const MAX_CALL_BYTES: usize = 4 * 1024 * 1024;
pub const MAX_RECORD_BYTES: usize = 1_000 * 1024;

/// A batch is sent at most this long after its first record arrived (or when full).
pub const MAX_BATCH_WAIT: Duration = Duration::from_secs(1);
/// One `PutRecordBatch` call (all the SDK's attempts) may take this long before it counts as
/// failed: an endpoint that hangs never holds the sink.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(20);

pub struct FirehoseSink {
    client: aws_sdk_firehose::Client,
    stream: String,
    spill: PathBuf,
    max_attempts: u32,
    first_wait: Duration,
    call_timeout: Duration,
    batch: Vec<Bytes>,
    batch_bytes: usize,
    /// When the open batch received its first record (the batch timer starts then).
    opened: Option<tokio::time::Instant>,
    drain: Drain,
    counts: SinkCounts,
}

impl FirehoseSink {
    /// A Firehose client for `region` (or an emulator's endpoint), on the workspace's one SDK
    /// configuration (`flagship_store::aws`).
    /// Each SDK attempt is bounded ([`CALL_TIMEOUT`] bounds the whole call in the sink).
    pub async fn client(region: &str, endpoint_url: Option<&str>) -> aws_sdk_firehose::Client {
        let conf = flagship_store::aws::sdk_config(region, endpoint_url).await;
        let timeouts = aws_sdk_firehose::config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(Duration::from_secs(10))
            .build();
        // One attempt per call: the sink retries failed records itself (with its own backoff
        // and the drain deadline), so SDK retries would only multiply the waits.
        let retry = aws_sdk_firehose::config::retry::RetryConfig::standard().with_max_attempts(1);
        aws_sdk_firehose::Client::from_conf(
            aws_sdk_firehose::config::Builder::from(&conf)
                .timeout_config(timeouts)
                .retry_config(retry)
                .build(),
        )
    }

    pub fn new(client: aws_sdk_firehose::Client, stream: &str, spill: PathBuf) -> FirehoseSink {
        FirehoseSink {
            client,
            stream: stream.to_owned(),
            spill,
            max_attempts: 6,
            first_wait: Duration::from_millis(200),
            call_timeout: CALL_TIMEOUT,
            batch: Vec::new(),
            batch_bytes: 0,
            opened: None,
            drain: Drain::default(),
            counts: SinkCounts::default(),
        }
    }

    /// Attempts per batch before spilling, and the first retry wait (doubling, ≤ 10 s).
    pub fn with_retries(mut self, max_attempts: u32, first_wait: Duration) -> FirehoseSink {
        self.max_attempts = max_attempts.max(1);
        self.first_wait = first_wait;
        self
    }

    /// How long one `PutRecordBatch` call may take before it counts as failed.
    pub fn with_call_timeout(mut self, t: Duration) -> FirehoseSink {
        self.call_timeout = t;
        self
    }

    /// Time left before the drain deadline (`None`: no deadline yet).
    fn left(&self) -> Option<Duration> {
        self.drain
            .deadline()
            .map(|d| d.saturating_duration_since(tokio::time::Instant::now()))
    }

    fn spill_records(&mut self, records: &[Bytes]) -> Result<(), IngestError> {
        if records.is_empty() {
            return Ok(());
        }
        let io = |e: std::io::Error| {
            IngestError::Sink(format!("spill file {}: {e}", self.spill.display()))
        };
        if let Some(dir) = self.spill.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.spill)
            .map_err(io)?;
        for r in records {
            f.write_all(r).map_err(io)?;
        }
        f.sync_all().map_err(io)?;
        self.counts.spilled += records.len() as u64;
        tracing::warn!(records = records.len(), file = %self.spill.display(), "spilled records Firehose did not take");
        Ok(())
    }

    async fn send(&mut self) -> Result<(), IngestError> {
        let mut pending = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        self.opened = None;
        let mut wait = self.first_wait;
        for attempt in 1..=self.max_attempts {
            if pending.is_empty() {
                return Ok(());
            }
            // Past the drain deadline nothing more is tried: what is left is spilled below.
            if self.drain.passed() {
                break;
            }
            let records: Vec<Record> = pending
                .iter()
                .map(|b| {
                    Record::builder()
                        .data(Blob::new(b.to_vec()))
                        .build()
                        .expect("data is set")
                })
                .collect();
            self.counts.calls += 1;
            let limit = self
                .left()
                .map_or(self.call_timeout, |l| l.min(self.call_timeout));
            let call = self
                .client
                .put_record_batch()
                .delivery_stream_name(&self.stream)
                .set_records(Some(records))
                .send();
            let failure = match tokio::time::timeout(limit, call).await {
                Ok(Ok(resp)) if resp.request_responses().len() != pending.len() => Some(format!(
                    "{} responses for {} records",
                    resp.request_responses().len(),
                    pending.len()
                )),
                Ok(Ok(resp)) => {
                    let failed: Vec<Bytes> = resp
                        .request_responses()
                        .iter()
                        .zip(&pending)
                        .filter(|(r, _)| r.error_code().is_some())
                        .map(|(_, b)| b.clone())
                        .collect();
                    self.counts.sent += (pending.len() - failed.len()) as u64;
                    if !failed.is_empty() {
                        let codes: Vec<&str> = resp
                            .request_responses()
                            .iter()
                            .filter_map(|r| r.error_code())
                            .collect();
                        tracing::warn!(
                            failed = failed.len(),
                            attempt,
                            first = codes.first().copied().unwrap_or(""),
                            "Firehose rejected records; retrying those"
                        );
                        self.counts.retried += failed.len() as u64;
                    }
                    pending = failed;
                    None
                }
                Ok(Err(e)) => Some(aws_sdk_firehose::error::DisplayErrorContext(&e).to_string()),
                Err(_) => Some(format!("no answer in {limit:?}")),
            };
            if let Some(why) = failure {
                // The whole call failed (or its answer cannot be matched to the records):
                // every record is retried.
                tracing::warn!(
                    attempt,
                    records = pending.len(),
                    "PutRecordBatch failed: {why}"
                );
                self.counts.retried += pending.len() as u64;
            }
            if !pending.is_empty() && attempt < self.max_attempts {
                let nap = self.left().map_or(wait, |l| l.min(wait));
                tokio::time::sleep(nap).await;
                wait = (wait * 2).min(Duration::from_secs(10));
            }
        }
        // Not sent after every attempt (or the drain deadline came): to the spill file, in one
        // write and one fsync.
        self.spill_records(&pending)
    }
}

#[async_trait::async_trait]
impl Sink for FirehoseSink {
    async fn put(&mut self, record: Bytes, _at: DateTime<Utc>) -> Result<(), IngestError> {
        if record.len() > MAX_RECORD_BYTES {
            return self.spill_records(&[record]);
        }
        // Past the drain deadline records only gather, to be spilled together at the flush.
        let full =
            self.batch.len() == MAX_RECORDS || self.batch_bytes + record.len() > MAX_CALL_BYTES;
        if full && !self.drain.passed() {
            self.send().await?;
        }
        self.batch_bytes += record.len();
        self.batch.push(record);
        self.opened.get_or_insert_with(tokio::time::Instant::now);
        Ok(())
    }

    async fn tick(&mut self, _now: DateTime<Utc>) -> Result<(), IngestError> {
        if self.opened.is_some_and(|o| o.elapsed() >= MAX_BATCH_WAIT) && !self.drain.passed() {
            self.send().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), IngestError> {
        self.send().await
    }

    fn counts(&self) -> SinkCounts {
        self.counts.clone()
    }

    fn set_drain(&mut self, drain: Drain) {
        self.drain = drain;
    }
}

/// Sends a spill file's records through `sink` and removes the file once they are taken (the
/// file is renamed to `.sending` first, so records spilled meanwhile are kept apart).
pub async fn replay_spill(
    path: &std::path::Path,
    mut sink: FirehoseSink,
) -> Result<SinkCounts, IngestError> {
    let sending = path.with_extension("sending");
    if !sending.exists() {
        std::fs::rename(path, &sending)
            .map_err(|e| IngestError::Io(format!("{}: {e}", path.display())))?;
    }
    let bytes = std::fs::read(&sending)
        .map_err(|e| IngestError::Io(format!("{}: {e}", sending.display())))?;
    let now = Utc::now();
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        if !line.trim_ascii().is_empty() {
            sink.put(Bytes::copy_from_slice(line), now).await?;
        }
    }
    sink.flush().await?;
    std::fs::remove_file(&sending)
        .map_err(|e| IngestError::Io(format!("{}: {e}", sending.display())))?;
    Ok(sink.counts())
}
