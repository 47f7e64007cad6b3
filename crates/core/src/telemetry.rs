//! Telemetry: the counts the streaming commands keep while they run (`watch`, `ingest run`,
//! the desk's live loop) and the Prometheus text exposition format (version 0.0.4) they are
//! served in at `/metrics`.
//!
//! - [`Telemetry`]: one registry of atomics (no locks), shared by `Arc` between the loop
//!   that counts and the listener that reads. Every metric's name, type, labels and help are
//!   written here once ([`Telemetry::encode`]); docs/pipeline.md, docs/ingest.md and
//!   docs/desk.md list them.
//! - [`Counter`], [`Gauge`], [`PerPlatform`] (a counter per [`Platform`]) and [`Histogram`]
//!   (fixed buckets, cumulative when written).
//! - [`Exposition`]: the text format — `# HELP` and `# TYPE` lines, samples with escaped
//!   label values, a histogram's cumulative `_bucket{le="…"}` up to `+Inf`, its `_sum` and
//!   `_count`. The desk writes its own figures (read from its database) with it.
//!
//! It does no I/O and reads no clock: it never listens or serves (the binary and the desk
//! do), and a count means only what the code that counts it says.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::Platform;

/// The `Content-Type` of a scrape's answer.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A count that only goes up.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }

    /// Raises the count to `total`, a running total kept elsewhere (a source's reconnects, a
    /// sink's records sent); never lowers it.
    pub fn raise_to(&self, total: u64) {
        self.0.fetch_max(total, Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A value that goes up and down (stored as the bits of an `f64`).
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Relaxed);
    }

    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Relaxed))
    }
}

/// A counter per platform (the `platform` label).
#[derive(Debug, Default)]
pub struct PerPlatform([Counter; Platform::ALL.len()]);

impl PerPlatform {
    pub fn inc(&self, p: Platform) {
        self.add(p, 1);
    }

    pub fn add(&self, p: Platform, n: u64) {
        self.0[index(p)].add(n);
    }

    pub fn get(&self, p: Platform) -> u64 {
        self.0[index(p)].get()
    }

    /// Across platforms.
    pub fn sum(&self) -> u64 {
        self.0.iter().map(Counter::get).sum()
    }
}

fn index(p: Platform) -> usize {
    Platform::ALL
        .iter()
        .position(|&q| q == p)
        .expect("every platform is in Platform::ALL")
}

/// Observations counted into fixed buckets (each observation in the first bucket whose
/// upper bound it does not exceed, or past the last), with their sum.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One per bound, then the one past the last bound (`+Inf`); not cumulative.
    counts: Box<[AtomicU64]>,
    /// The sum of the observations (the bits of an `f64`).
    sum: AtomicU64,
}

/// A histogram read at one moment: cumulative counts per upper bound (the last is `+Inf`),
/// the number of observations and their sum.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum: f64,
}

/// The live loop's latency buckets, in seconds: 1 ms to 30 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl Histogram {
    /// A histogram over `bounds`: finite and strictly increasing (`+Inf` is implied).
    pub fn new(bounds: &'static [f64]) -> Histogram {
        assert!(
            bounds.iter().all(|b| b.is_finite()) && bounds.windows(2).all(|w| w[0] < w[1]),
            "histogram bounds must be finite and strictly increasing"
        );
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    /// Counts `v` (a NaN is ignored).
    pub fn observe(&self, v: f64) {
        if v.is_nan() {
            return;
        }
        let i = self.bounds.partition_point(|&b| b < v);
        self.counts[i].fetch_add(1, Relaxed);
        let _ = self.sum.fetch_update(Relaxed, Relaxed, |s| {
            Some((f64::from_bits(s) + v).to_bits())
        });
    }

    /// The counts, cumulative; `count` is the `+Inf` bucket's, so the two always agree.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut running = 0;
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.counts.iter())
            .map(|(b, c)| {
                running += c.load(Relaxed);
                (b, running)
            })
            .collect();
        HistogramSnapshot {
            buckets,
            count: running,
            sum: f64::from_bits(self.sum.load(Relaxed)),
        }
    }
}

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A scrape's text being written: [`Exposition::family`] opens a family, its samples follow.
#[derive(Debug, Default)]
pub struct Exposition(String);

impl Exposition {
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Opens family `name`: its `# HELP` and `# TYPE` lines. Its samples must follow before
    /// the next family opens.
    pub fn family(&mut self, name: &str, help: &str, kind: Kind) -> &mut Exposition {
        debug_assert!(valid_name(name, true), "metric name {name:?}");
        let help = help.replace('\\', r"\\").replace('\n', r"\n");
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {}", kind.as_str());
        self
    }

    /// One sample: `name{labels} value`, label values escaped (`\\`, `\"`, `\n`).
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: f64) -> &mut Exposition {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                debug_assert!(valid_name(k, false), "label name {k:?}");
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(val));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {}", number(v));
        self
    }

    /// A counter family with one sample per platform (`platform="x"` …), plus `labels`.
    pub fn per_platform(
        &mut self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        c: &PerPlatform,
    ) -> &mut Exposition {
        self.family(name, help, Kind::Counter);
        self.platform_samples(name, labels, c)
    }

    /// The samples of a per-platform counter (inside a family already opened).
    fn platform_samples(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        c: &PerPlatform,
    ) -> &mut Exposition {
        for p in Platform::ALL {
            let mut l = vec![("platform", p.as_str())];
            l.extend_from_slice(labels);
            self.sample(name, &l, c.get(p) as f64);
        }
        self
    }

    /// A histogram family: `name_bucket{le="…"}` (cumulative, ending at `+Inf`), `name_sum`,
    /// `name_count`.
    pub fn histogram(&mut self, name: &str, help: &str, h: &HistogramSnapshot) -> &mut Exposition {
        self.family(name, help, Kind::Histogram);
        let bucket = format!("{name}_bucket");
        for &(le, n) in &h.buckets {
            self.sample(&bucket, &[("le", &number(le))], n as f64);
        }
        self.sample(&format!("{name}_sum"), &[], h.sum);
        self.sample(&format!("{name}_count"), &[], h.count as f64)
    }

    /// The text (each line ends with `\n`).
    pub fn into_string(self) -> String {
        self.0
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str(r"\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str(r"\n"),
            c => out.push(c),
        }
    }
    out
}

/// A sample value as Prometheus reads it (`+Inf`, `-Inf`, `NaN`, else the shortest decimal).
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*` (a metric name) or, without `:`, a label name.
fn valid_name(s: &str, colon: bool) -> bool {
    let ok = |c: char| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':');
    let mut chars = s.chars();
    chars.next().is_some_and(ok) && chars.all(|c| ok(c) || c.is_ascii_digit())
}

/// Which command's figures a [`Telemetry`] serves: the live loop's (`watch`, the desk) or
/// the ingest run's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Live,
    Ingest,
}

/// The figures of one streaming run. The intake's (posts seen and dropped, reconnects) are
/// both units'; the rest are their unit's own and written only for it.
#[derive(Debug)]
pub struct Telemetry {
    unit: Unit,
    /// Posts taken in: a new id, on the track (ingest: queued for the sink; live: waiting
    /// for their micro-batch).
    pub seen: PerPlatform,
    /// Posts dropped before that, by reason: an id already seen (a reconnect repeats posts),
    /// a post from an unfiltered source matching no track term, a line that is no post
    /// record (ingest quarantines it).
    pub duplicate: PerPlatform,
    pub off_track: PerPlatform,
    pub malformed: PerPlatform,
    /// The source's reconnects.
    pub reconnects: Counter,
    /// Live: posts the profile kept and the model scored, flagged `need_support`, whose
    /// words went to the sink, and flagged posts left without words.
    pub kept: PerPlatform,
    pub flagged: PerPlatform,
    pub explained: PerPlatform,
    pub unexplained: PerPlatform,
    /// Live: flagged posts whose sentence embedding went to the sink (the desk's question
    /// groups), and flagged posts left without one (they stay single cards).
    pub embedded: PerPlatform,
    pub unembedded: PerPlatform,
    /// Live: posts scored in a hurry (the loop had fallen behind: the exits' looser margins).
    pub hurried: PerPlatform,
    /// Live: micro-batches scored.
    pub batches: Counter,
    /// Live: arrival → the sink's write returned, per post, in seconds.
    pub latency: Histogram,
    /// Ingest: records waiting between the source and the sink.
    pub queue: Gauge,
    /// Ingest: records the sink delivered, retried (Firehose: records sent again) and
    /// spilled to the spill file.
    pub sent: Counter,
    pub retried: Counter,
    pub spilled: Counter,
}

impl Telemetry {
    pub fn new(unit: Unit) -> Telemetry {
        Telemetry {
            unit,
            seen: PerPlatform::default(),
            duplicate: PerPlatform::default(),
            off_track: PerPlatform::default(),
            malformed: PerPlatform::default(),
            reconnects: Counter::default(),
            kept: PerPlatform::default(),
            flagged: PerPlatform::default(),
            explained: PerPlatform::default(),
            unexplained: PerPlatform::default(),
            embedded: PerPlatform::default(),
            unembedded: PerPlatform::default(),
            hurried: PerPlatform::default(),
            batches: Counter::default(),
            latency: Histogram::new(LATENCY_BUCKETS),
            queue: Gauge::default(),
            sent: Counter::default(),
            retried: Counter::default(),
            spilled: Counter::default(),
        }
    }

    /// The live loop's figures (`watch`, the desk).
    pub fn live() -> Telemetry {
        Telemetry::new(Unit::Live)
    }

    /// An ingest run's figures.
    pub fn ingest() -> Telemetry {
        Telemetry::new(Unit::Ingest)
    }

    pub fn unit(&self) -> Unit {
        self.unit
    }

    /// Writes the figures of this telemetry's unit into `out`.
    pub fn encode(&self, out: &mut Exposition) {
        out.per_platform(
            "flagship_posts_seen_total",
            "Posts taken in: a new id, on the track (ingest: queued for the sink; live: waiting for their micro-batch).",
            &[],
            &self.seen,
        );
        out.family(
            "flagship_posts_dropped_total",
            "Posts dropped before they were taken in: reason duplicate (an id already seen), off_track (an unfiltered source's post matching no track term), malformed (a line that is no post record).",
            Kind::Counter,
        );
        for (reason, c) in [
            ("duplicate", &self.duplicate),
            ("off_track", &self.off_track),
            ("malformed", &self.malformed),
        ] {
            out.platform_samples("flagship_posts_dropped_total", &[("reason", reason)], c);
        }
        out.family(
            "flagship_source_reconnects_total",
            "Reconnects of the source (all its platforms), as of the last line it gave.",
            Kind::Counter,
        )
        .sample(
            "flagship_source_reconnects_total",
            &[],
            self.reconnects.get() as f64,
        );
        match self.unit {
            Unit::Live => self.encode_live(out),
            Unit::Ingest => self.encode_ingest(out),
        }
    }

    fn encode_live(&self, out: &mut Exposition) {
        out.per_platform(
            "flagship_posts_kept_total",
            "Posts the mission profile kept and the model scored.",
            &[],
            &self.kept,
        )
        .per_platform(
            "flagship_posts_flagged_total",
            "Posts the model flagged need_support.",
            &[],
            &self.flagged,
        )
        .per_platform(
            "flagship_posts_explained_total",
            "Flagged posts whose words (why they were flagged) went to the sink.",
            &[],
            &self.explained,
        )
        .per_platform(
            "flagship_posts_unexplained_total",
            "Flagged posts left without words: still waiting 30 s after their write, dropped from a full backlog, still waiting when a stop ended the explaining, or the explanation failed.",
            &[],
            &self.unexplained,
        )
        .per_platform(
            "flagship_posts_embedded_total",
            "Flagged posts whose sentence embedding (for the desk's question groups) went to the sink.",
            &[],
            &self.embedded,
        )
        .per_platform(
            "flagship_posts_unembedded_total",
            "Flagged posts left without a sentence embedding (dropped from a full backlog, past the live loop's bound for vectors, still waiting at a stop, or the encoder failed): each stays a single card.",
            &[],
            &self.unembedded,
        )
        .per_platform(
            "flagship_posts_hurried_total",
            "Posts scored in a hurry: their micro-batch's oldest post had waited --hurry-after, so they left by the exits' looser margins (model.early_exit_hurried).",
            &[],
            &self.hurried,
        )
        .family(
            "flagship_live_batches_total",
            "Micro-batches scored.",
            Kind::Counter,
        )
        .sample("flagship_live_batches_total", &[], self.batches.get() as f64)
        .histogram(
            "flagship_live_latency_seconds",
            "Per post: its arrival to the sink's write of its micro-batch returned.",
            &self.latency.snapshot(),
        );
    }

    fn encode_ingest(&self, out: &mut Exposition) {
        out.family(
            "flagship_ingest_queue_depth",
            "Records waiting between the source and the sink.",
            Kind::Gauge,
        )
        .sample("flagship_ingest_queue_depth", &[], self.queue.get());
        for (name, help, c) in [
            (
                "flagship_sink_records_sent_total",
                "Records the sink delivered (Firehose: accepted; local: written in an object).",
                &self.sent,
            ),
            (
                "flagship_sink_records_retried_total",
                "Records the sink sent again after Firehose refused them or a call failed.",
                &self.retried,
            ),
            (
                "flagship_sink_records_spilled_total",
                "Records the sink could not deliver and wrote to the spill file.",
                &self.spilled,
            ),
        ] {
            out.family(name, help, Kind::Counter)
                .sample(name, &[], c.get() as f64);
        }
    }

    /// The scrape's text: this unit's figures.
    pub fn text(&self) -> String {
        let mut out = Exposition::new();
        self.encode(&mut out);
        out.into_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut e = Exposition::new();
        e.family("a_total", "a \\ help\nline", Kind::Counter)
            .sample(
                "a_total",
                &[("path", "C:\\dir \"x\"\nnext"), ("b", "plain")],
                2.0,
            );
        assert_eq!(
            e.into_string(),
            "# HELP a_total a \\\\ help\\nline\n# TYPE a_total counter\n\
             a_total{path=\"C:\\\\dir \\\"x\\\"\\nnext\",b=\"plain\"} 2\n"
        );
    }

    #[test]
    fn special_values_are_written_as_prometheus_reads_them() {
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NEG_INFINITY), "-Inf");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(0.0025), "0.0025");
        assert_eq!(number(3.0), "3");
        assert_eq!(number(1e-7), "0.0000001");
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_at_inf() {
        static B: &[f64] = &[0.1, 1.0, 10.0];
        let h = Histogram::new(B);
        for v in [0.05, 0.1, 0.5, 1.0, 3.0, 50.0, f64::NAN] {
            h.observe(v);
        }
        let s = h.snapshot();
        // `le` is inclusive: 0.1 and 1.0 fall in their own bounds' buckets.
        assert_eq!(
            s.buckets,
            vec![(0.1, 2), (1.0, 4), (10.0, 5), (f64::INFINITY, 6)]
        );
        assert_eq!(s.count, 6);
        assert!((s.sum - 54.65).abs() < 1e-9);
        let mut e = Exposition::new();
        e.histogram("lat_seconds", "Latency.", &s);
        assert_eq!(
            e.into_string(),
            "# HELP lat_seconds Latency.\n# TYPE lat_seconds histogram\n\
             lat_seconds_bucket{le=\"0.1\"} 2\nlat_seconds_bucket{le=\"1\"} 4\n\
             lat_seconds_bucket{le=\"10\"} 5\nlat_seconds_bucket{le=\"+Inf\"} 6\n\
             lat_seconds_sum 54.65\nlat_seconds_count 6\n"
        );
    }

    #[test]
    #[should_panic(expected = "strictly increasing")]
    fn unordered_bounds_are_refused() {
        static B: &[f64] = &[1.0, 0.5];
        Histogram::new(B);
    }

    #[test]
    fn counters_only_go_up() {
        let c = Counter::default();
        c.add(3);
        c.raise_to(2);
        assert_eq!(c.get(), 3);
        c.raise_to(7);
        assert_eq!(c.get(), 7);
    }

    /// Every line is a comment or `name{labels} value`; each family's samples follow its
    /// HELP and TYPE lines, and no family appears twice.
    fn well_formed(text: &str) -> Vec<String> {
        let mut families = Vec::new();
        let mut current = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                current = rest.split(' ').next().unwrap().to_owned();
                assert!(!families.contains(&current), "{current} twice");
                families.push(current.clone());
            } else if !line.starts_with("# HELP ") {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(
                    name == current
                        || ["_bucket", "_sum", "_count"]
                            .iter()
                            .any(|s| name == format!("{current}{s}")),
                    "{line} outside its family {current}"
                );
                let value = line.rsplit(' ').next().unwrap();
                assert!(value.parse::<f64>().is_ok() || value == "+Inf", "{line}");
            }
        }
        families
    }

    #[test]
    fn each_unit_writes_its_own_families() {
        let t = Telemetry::live();
        t.seen.add(Platform::Bluesky, 3);
        t.duplicate.inc(Platform::Bluesky);
        t.latency.observe(0.004);
        let live = t.text();
        let families = well_formed(&live);
        assert!(live.contains("flagship_posts_seen_total{platform=\"bluesky\"} 3\n"));
        assert!(live.contains("flagship_posts_seen_total{platform=\"x\"} 0\n"));
        assert!(live.contains(
            "flagship_posts_dropped_total{platform=\"bluesky\",reason=\"duplicate\"} 1\n"
        ));
        assert!(live.contains("flagship_live_latency_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(families.contains(&"flagship_posts_flagged_total".to_owned()));
        assert!(!live.contains("flagship_sink_"));
        let ingest = Telemetry::ingest();
        ingest.spilled.raise_to(4);
        let text = ingest.text();
        let families = well_formed(&text);
        assert!(text.contains("flagship_sink_records_spilled_total 4\n"));
        assert!(!families.iter().any(|f| f.starts_with("flagship_live_")));
        assert!(!text.contains("flagship_posts_flagged_total"));
    }
}
