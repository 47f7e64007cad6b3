//! Where records go: Kinesis Firehose ([`crate::firehose`]) or a local folder / bucket laid out
//! exactly as Firehose lays out S3 ([`LocalSink`]), so combine reads both the same way.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use flagship_core::layout::{hour_floor, object_key};
use flagship_store::storage::Store;

use crate::IngestError;

/// What a sink did with the records it was given.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct SinkCounts {
    pub sent: u64,
    pub calls: u64,
    pub retried: u64,
    pub spilled: u64,
    pub objects: u64,
}

/// The shutdown deadline a run gives its sink: unset while running; once a stop is asked for,
/// the instant by which everything left must be delivered or spilled. Shared between the run
/// loop and the sink task (a sink in the middle of a retry sees it at its next step).
#[derive(Debug, Clone, Default)]
pub struct Drain(std::sync::Arc<std::sync::Mutex<Option<tokio::time::Instant>>>);

impl Drain {
    /// Starts draining: everything must be out by `deadline`.
    pub fn start(&self, deadline: tokio::time::Instant) {
        let mut d = self.0.lock().expect("drain lock");
        d.get_or_insert(deadline);
    }

    pub fn deadline(&self) -> Option<tokio::time::Instant> {
        *self.0.lock().expect("drain lock")
    }

    /// The deadline has passed: send nothing more, spill what is left.
    pub fn passed(&self) -> bool {
        self.deadline()
            .is_some_and(|d| tokio::time::Instant::now() >= d)
    }
}

#[async_trait::async_trait]
pub trait Sink: Send {
    /// Accepts one record (a newline-terminated JSON line) received at `at`.
    async fn put(&mut self, record: Bytes, at: DateTime<Utc>) -> Result<(), IngestError>;
    /// Sends what a time-based buffer holds if it is due.
    async fn tick(&mut self, now: DateTime<Utc>) -> Result<(), IngestError>;
    /// Sends everything buffered.
    async fn flush(&mut self) -> Result<(), IngestError>;
    fn counts(&self) -> SinkCounts;
    /// The run's shutdown deadline (a sink that can stall — a remote service — honours it by
    /// spilling what it cannot send in time). Local sinks ignore it.
    fn set_drain(&mut self, _drain: Drain) {}
}

/// A sink chosen at run time.
#[async_trait::async_trait]
impl Sink for Box<dyn Sink> {
    async fn put(&mut self, record: Bytes, at: DateTime<Utc>) -> Result<(), IngestError> {
        (**self).put(record, at).await
    }

    async fn tick(&mut self, now: DateTime<Utc>) -> Result<(), IngestError> {
        (**self).tick(now).await
    }

    async fn flush(&mut self) -> Result<(), IngestError> {
        (**self).flush().await
    }

    fn counts(&self) -> SinkCounts {
        (**self).counts()
    }

    fn set_drain(&mut self, drain: Drain) {
        (**self).set_drain(drain)
    }
}

/// Buffers records like Firehose (by size and interval) and writes each buffer as one object
/// at `prefix/YYYY/MM/DD/HH/<stream>-1-YYYY-MM-DD-HH-MM-SS-<uuid>` (the UTC arrival hour of
/// its first record; a buffer never spans two hours). Objects appear atomically.
pub struct LocalSink {
    store: Store,
    prefix: String,
    stream: String,
    max_bytes: usize,
    interval: chrono::Duration,
    buf: Vec<u8>,
    records: u64,
    first: Option<DateTime<Utc>>,
    counts: SinkCounts,
}

impl LocalSink {
    /// Firehose's defaults: 5 MiB or 60 s, whichever first.
    pub fn new(store: Store, prefix: &str, stream: &str) -> LocalSink {
        LocalSink {
            store,
            prefix: prefix.to_owned(),
            stream: stream.to_owned(),
            max_bytes: 5 * 1024 * 1024,
            interval: chrono::Duration::seconds(60),
            buf: Vec::new(),
            records: 0,
            first: None,
            counts: SinkCounts::default(),
        }
    }

    pub fn with_buffering(mut self, max_bytes: usize, interval: std::time::Duration) -> LocalSink {
        self.max_bytes = max_bytes.max(1);
        self.interval = chrono::Duration::from_std(interval).unwrap_or(self.interval);
        self
    }

    async fn write(&mut self) -> Result<(), IngestError> {
        let Some(first) = self.first.take() else {
            return Ok(());
        };
        let key = object_key(
            &self.prefix,
            &self.stream,
            first,
            &uuid::Uuid::new_v4().to_string(),
        );
        let bytes = Bytes::from(std::mem::take(&mut self.buf));
        self.store
            .put(&key, bytes)
            .await
            .map_err(|e| IngestError::Sink(e.to_string()))?;
        self.counts.sent += self.records;
        self.counts.calls += 1;
        self.counts.objects += 1;
        self.records = 0;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Sink for LocalSink {
    async fn put(&mut self, record: Bytes, at: DateTime<Utc>) -> Result<(), IngestError> {
        if let Some(first) = self.first
            && hour_floor(first) != hour_floor(at)
        {
            self.write().await?;
        }
        if self.first.is_none() {
            self.first = Some(at);
        }
        self.buf.extend_from_slice(&record);
        self.records += 1;
        if self.buf.len() >= self.max_bytes {
            self.write().await?;
        }
        Ok(())
    }

    async fn tick(&mut self, now: DateTime<Utc>) -> Result<(), IngestError> {
        if self.first.is_some_and(|f| now - f >= self.interval) {
            self.write().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), IngestError> {
        self.write().await
    }

    fn counts(&self) -> SinkCounts {
        self.counts.clone()
    }
}
