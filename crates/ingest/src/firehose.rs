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
use crate::sink::{Sink, SinkCounts};

pub const MAX_RECORDS: usize = 500;
pub const MAX_CALL_BYTES: usize = 4 * 1024 * 1024;
pub const MAX_RECORD_BYTES: usize = 1_000 * 1024;

pub struct FirehoseSink {
    client: aws_sdk_firehose::Client,
    stream: String,
    spill: PathBuf,
    max_attempts: u32,
    first_wait: Duration,
    batch: Vec<Bytes>,
    batch_bytes: usize,
    oldest: Option<DateTime<Utc>>,
    counts: SinkCounts,
}

impl FirehoseSink {
    /// A Firehose client for `region` (or an emulator's endpoint), on the workspace's one SDK
    /// configuration (`flagship_store::aws`).
    pub async fn client(region: &str, endpoint_url: Option<&str>) -> aws_sdk_firehose::Client {
        aws_sdk_firehose::Client::new(&flagship_store::aws::sdk_config(region, endpoint_url).await)
    }

    pub fn new(client: aws_sdk_firehose::Client, stream: &str, spill: PathBuf) -> FirehoseSink {
        FirehoseSink {
            client,
            stream: stream.to_owned(),
            spill,
            max_attempts: 6,
            first_wait: Duration::from_millis(200),
            batch: Vec::new(),
            batch_bytes: 0,
            oldest: None,
            counts: SinkCounts::default(),
        }
    }

    /// Attempts per batch before spilling, and the first retry wait (doubling, ≤ 10 s).
    pub fn with_retries(mut self, max_attempts: u32, first_wait: Duration) -> FirehoseSink {
        self.max_attempts = max_attempts.max(1);
        self.first_wait = first_wait;
        self
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
        self.oldest = None;
        let mut wait = self.first_wait;
        for attempt in 1..=self.max_attempts {
            if pending.is_empty() {
                return Ok(());
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
            let sent = self
                .client
                .put_record_batch()
                .delivery_stream_name(&self.stream)
                .set_records(Some(records))
                .send()
                .await;
            match sent {
                Ok(resp) => {
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
                }
                Err(e) => {
                    tracing::warn!(
                        attempt,
                        "PutRecordBatch failed: {}",
                        aws_sdk_firehose::error::DisplayErrorContext(&e)
                    );
                    self.counts.retried += pending.len() as u64;
                }
            }
            if !pending.is_empty() && attempt < self.max_attempts {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(10));
            }
        }
        // Counted as retried above, but not sent: they go to the spill file.
        self.spill_records(&pending)
    }
}

#[async_trait::async_trait]
impl Sink for FirehoseSink {
    async fn put(&mut self, record: Bytes, at: DateTime<Utc>) -> Result<(), IngestError> {
        if record.len() > MAX_RECORD_BYTES {
            return self.spill_records(&[record]);
        }
        if self.batch.len() == MAX_RECORDS || self.batch_bytes + record.len() > MAX_CALL_BYTES {
            self.send().await?;
        }
        self.batch_bytes += record.len();
        self.batch.push(record);
        self.oldest.get_or_insert(at);
        Ok(())
    }

    async fn tick(&mut self, now: DateTime<Utc>) -> Result<(), IngestError> {
        if self
            .oldest
            .is_some_and(|o| now - o >= chrono::Duration::seconds(1))
        {
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
