//! `flagship watch`: live triage into a file. The loop itself — any source, the profile's
//! filter and textproc plans and the model on micro-batches — is [`flagship_live`]; this
//! command opens the source and the model, and appends the flagged posts (`need_support`,
//! with their platform and a link to the post) to a JSONL file, flushed after each
//! micro-batch. Why each was flagged follows later, off the latency path, as a line of its
//! own ([`WhyRow`]: `{"explains": id, "platform", "why"}`). Ids already in the file are never
//! flagged again, so a restarted watch keeps its place; a Bluesky source resumes from its own
//! cursor (`<cursor>.watch.json`).

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use flagship_core::config::Config;
use flagship_core::live::{Explained, FlaggedRow, Scored, Sink, SinkError, WhyRow};
use flagship_live::Totals;
use indicatif::{ProgressBar, ProgressStyle};

use crate::shared::parse_duration;

#[derive(clap::Args)]
pub struct Args {
    /// Model folder (default: `<storage.models>/need-support`, what the pipeline trains).
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[command(flatten)]
    pub source: crate::shared::SourceArgs,
    /// Flagged posts are appended here, one JSON object per line.
    #[arg(long, default_value = "data/flagged.jsonl")]
    pub out: PathBuf,
    #[command(flatten)]
    pub scoring: crate::shared::ScoringArgs,
    /// Stop after this many posts (`--max-tweets`, its old name, still works).
    #[arg(long, alias = "max-tweets")]
    pub max_posts: Option<u64>,
    /// Stop after this long (`90s`, `10m`).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Serve the run's figures at http://ADDR/metrics in Prometheus' text format (e.g.
    /// `127.0.0.1:9464`; port 0: any free port). Loopback only (the listener has no login);
    /// off unless given.
    #[arg(long, env = "FLAGSHIP_METRICS", value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
}

/// Ids in an existing output file: already flagged, never flagged again.
fn flagged_ids(path: &Path) -> Result<HashSet<String>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashSet::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut ids = HashSet::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        // Only the id matters here: rows of older files (fewer fields) count too.
        #[derive(serde::Deserialize)]
        struct Ids {
            id: Option<String>,
            explains: Option<String>,
        }
        let row: Ids = serde_json::from_str(line)
            .with_context(|| format!("{}: line {}: not a JSON object", path.display(), i + 1))?;
        match (row.id, row.explains) {
            (Some(id), _) => {
                ids.insert(id);
            }
            (None, Some(_)) => {}
            (None, None) => bail!(
                "{}: line {}: neither a flagged tweet (`id`) nor its why (`explains`)",
                path.display(),
                i + 1
            ),
        }
    }
    Ok(ids)
}

/// The flagged posts of each micro-batch, appended as JSON lines and flushed.
struct FlaggedFile {
    out: std::fs::File,
}

impl Sink for FlaggedFile {
    fn write(&mut self, scored: &[Scored]) -> Result<(), SinkError> {
        let mut text = String::new();
        for s in scored.iter().filter(|s| s.need_support) {
            let row = serde_json::to_string(&FlaggedRow::of(s)).map_err(SinkError::of)?;
            text.push_str(&row);
            text.push('\n');
        }
        self.append(&text)
    }

    fn explained(&mut self, why: &[Explained]) -> Result<(), SinkError> {
        let mut text = String::new();
        for e in why {
            text.push_str(&serde_json::to_string(&WhyRow::of(e)).map_err(SinkError::of)?);
            text.push('\n');
        }
        self.append(&text)
    }
}

impl FlaggedFile {
    fn append(&mut self, text: &str) -> Result<(), SinkError> {
        if !text.is_empty() {
            self.out
                .write_all(text.as_bytes())
                .and_then(|()| self.out.flush())
                .map_err(SinkError::of)?;
        }
        Ok(())
    }
}

pub fn run(config: &Config, a: Args) -> Result<Totals> {
    tokio::runtime::Runtime::new()?.block_on(watch(config, a))
}

async fn watch(config: &Config, a: Args) -> Result<Totals> {
    let telemetry = std::sync::Arc::new(flagship_core::telemetry::Telemetry::live());
    // Served from the start until the run ends.
    let _metrics = match a.metrics {
        Some(addr) => Some(crate::shared::serve_metrics(addr, telemetry.clone(), "watch").await?),
        None => None,
    };
    let (model, model_dir) =
        crate::shared::load_model(config, a.model.as_deref(), "or pass --model")?;
    let source = a
        .source
        .open(config, "watch", Duration::from_secs(120))
        .await?;
    // Ids flagged by an earlier run are never flagged again; the rest dedup in a window.
    let flagged_before = flagged_ids(&a.out)?;
    let already = flagged_before.len();
    if let Some(dir) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&a.out)
        .with_context(|| format!("cannot open {}", a.out.display()))?;
    println!(
        "watch: model {} (threshold {:.3}), profile `{}`, flagged tweets → {}{}",
        model_dir.display(),
        model.threshold(),
        config.mission.name,
        a.out.display(),
        if already > 0 {
            format!(" ({already} already there, not flagged again)")
        } else {
            String::new()
        }
    );
    let bar = ProgressBar::new_spinner()
        .with_style(ProgressStyle::with_template("{spinner} watch {msg}").expect("template"));
    let progress = |t: &Totals| {
        bar.set_message(format!(
            "{} seen, {} kept by the profile, {} flagged",
            t.seen, t.kept, t.flagged
        ))
    };
    let opts = a.scoring.options(a.max_posts, a.duration);
    let model_id = model_dir.display().to_string();
    let t = flagship_live::run(
        flagship_live::Run {
            config,
            model: &model,
            model_id: &model_id,
            handled_before: flagged_before,
            embedder: None,
            options: &opts,
            progress: &progress,
            telemetry: Some(telemetry),
        },
        source,
        &mut FlaggedFile { out },
        crate::shared::signal(),
    )
    .await
    .context("watch")?;
    bar.finish_and_clear();
    println!(
        "watch: {} posts seen ({} duplicates, {} not matching the track terms, {} deletions and other events, {} malformed lines, {} API messages, {} reconnects), {} kept by the profile, {} flagged need_support → {}",
        t.seen,
        t.duplicates,
        t.unmatched,
        t.other_events,
        t.malformed,
        t.api_errors,
        t.reconnects,
        t.kept,
        t.flagged,
        a.out.display()
    );
    println!(
        "watch: latency arrival → flagged line written: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} tweets in {} micro-batches; {:.1} s",
        t.latency_p50_ms, t.latency_p99_ms, t.latency_max_ms, t.seen, t.batches, t.seconds
    );
    let b = &t.budget;
    let step = |s: &flagship_live::Step| format!("{:.1} / {:.1}", s.p50_ms, s.p99_ms);
    println!(
        "watch: budget p50 / p99 ms — queued {} (per post); per batch: parse {}, filter + textproc {}, tokenise {}, model {}, write {}; off the path: explain {} per post ({} explained: {} with the write from the scoring pass, {} of them refined by occlusion, {} pooled as they had waited {} s without words; {} left without words), words {:.0} / {:.0} / {:.0} ms after the write (p50 / p99 / max)",
        step(&b.wait),
        step(&b.parse),
        step(&b.prepare),
        step(&b.tokenise),
        step(&b.model),
        step(&b.write),
        step(&b.explain),
        t.explained,
        t.explained_scored,
        t.refined,
        t.explained_pooled,
        opts.explain_behind.as_secs_f64(),
        t.unexplained,
        t.explain_delay_p50_ms,
        t.explain_delay_p99_ms,
        t.explain_delay_max_ms
    );
    if t.hurried > 0 {
        println!(
            "watch: {} of {} scored posts in a hurry ({} of {} micro-batches had a post waiting {} ms or more: the exits' looser margins, model.early_exit_hurried)",
            t.hurried,
            t.kept,
            t.hurried_batches,
            t.batches,
            opts.hurry_after.as_millis()
        );
    }
    println!("{}", serde_json::to_string(&t)?);
    Ok(t)
}
