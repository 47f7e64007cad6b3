//! `flagship ingest run | replay-spill` and `flagship aws create | status | destroy`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
#[cfg(feature = "aws")]
use flagship_aws::{self as aws, Resources};
use flagship_core::config::{Area, Config};
use flagship_ingest::firehose::FirehoseSink;
use flagship_ingest::sink::{LocalSink, Sink};
use flagship_store::storage::{Location, Store};
use indicatif::{ProgressBar, ProgressStyle};

use crate::shared::{SourceArgs, parse_duration, signal};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SinkKind {
    /// The Firehose S3 layout in a local folder or bucket (`--out`, default storage.raw).
    Local,
    /// Kinesis Firehose `PutRecordBatch` (`--stream`).
    Firehose,
}

#[derive(clap::Args)]
pub struct AwsFlags {
    /// Region (else AWS_REGION / AWS_DEFAULT_REGION, else us-east-1).
    #[arg(long)]
    pub region: Option<String>,
    /// An emulator's endpoint (moto: http://127.0.0.1:PORT).
    #[arg(long)]
    pub endpoint_url: Option<String>,
}

impl AwsFlags {
    fn region(&self, config: &Config) -> String {
        self.region
            .clone()
            .or_else(|| config.storage.s3.region.clone())
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .unwrap_or_else(|| "us-east-1".into())
    }
}

#[derive(clap::Subcommand)]
pub enum IngestCmd {
    // Boxed: the run's flags are many, the other command's few.
    /// Stream (X API v2, or a replay of recorded JSONL) into a sink until a limit or a signal.
    Run(Box<RunArgs>),
    /// Send the records a Firehose sink spilled, then remove the spill file.
    ReplaySpill {
        #[arg(long, default_value = SPILL)]
        spill: PathBuf,
        #[arg(long, default_value = STREAM)]
        stream: String,
        #[command(flatten)]
        aws: AwsFlags,
    },
}

#[derive(clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    #[arg(long, value_enum, default_value_t = SinkKind::Local)]
    pub sink: SinkKind,
    /// Local sink: where to write (default: the config's storage.raw).
    #[arg(long)]
    pub out: Option<String>,
    /// Firehose: the delivery stream; also the object name in the local layout.
    #[arg(long, default_value = STREAM)]
    pub stream: String,
    /// Firehose: records it would not take after all retries go here.
    #[arg(long, default_value = SPILL)]
    pub spill: PathBuf,
    /// Stop after this many posts (`--max-tweets`, its old name, still works).
    #[arg(long, alias = "max-tweets")]
    pub max_posts: Option<u64>,
    /// Stop after this long (`90s`, `10m`, `2h`).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// After SIGTERM / SIGINT, how long the queue may drain to the sink before the rest is
    /// spilled (keep it below systemd's TimeoutStopSec).
    #[arg(long, value_parser = parse_duration, default_value = DRAIN_TIMEOUT)]
    pub drain_timeout: Duration,
    /// Local sink buffering: bytes and seconds (Firehose's defaults: 5 MiB, 60 s).
    #[arg(long, default_value_t = BUFFER_BYTES)]
    pub buffer_bytes: usize,
    #[arg(long, value_parser = parse_duration, default_value = BUFFER_INTERVAL)]
    pub buffer_interval: Duration,
    /// Serve the run's figures at http://ADDR/metrics in Prometheus' text format (e.g.
    /// `127.0.0.1:9464`; port 0: any free port). Loopback only (the listener has no login);
    /// off unless given.
    #[arg(long, env = "FLAGSHIP_METRICS", value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub aws: AwsFlags,
}

/// Firehose's buffering defaults, which the local sink copies.
pub const BUFFER_BYTES: usize = 5 * 1024 * 1024;
pub const BUFFER_INTERVAL: &str = "60s";
pub const STREAM: &str = "twitter_delivery_stream";
pub const SPILL: &str = "data/ingest-spill.jsonl";
pub const DRAIN_TIMEOUT: &str = "60s";

#[cfg(feature = "model")]
impl RunArgs {
    /// A replay of `path`, as fast as it reads, into the config's `storage.raw` through the
    /// local sink, objects named after `stream` (the pipeline's ingest stage).
    pub fn replay_into_raw(path: PathBuf, stream: &str) -> RunArgs {
        RunArgs {
            source: SourceArgs::replay(path),
            sink: SinkKind::Local,
            out: None,
            stream: stream.into(),
            spill: SPILL.into(),
            max_posts: None,
            duration: None,
            drain_timeout: parse_duration(DRAIN_TIMEOUT).expect("a valid default"),
            buffer_bytes: BUFFER_BYTES,
            buffer_interval: parse_duration(BUFFER_INTERVAL).expect("a valid default"),
            metrics: None,
            aws: AwsFlags {
                region: None,
                endpoint_url: None,
            },
        }
    }
}

async fn firehose_client(config: &Config, aws: &AwsFlags) -> flagship_ingest::firehose::Client {
    FirehoseSink::client(&aws.region(config), aws.endpoint_url.as_deref()).await
}

pub fn ingest(config: &Config, cmd: IngestCmd) -> Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    match cmd {
        IngestCmd::ReplaySpill { spill, stream, aws } => rt.block_on(async {
            let sink = FirehoseSink::new(
                firehose_client(config, &aws).await,
                &stream,
                spill.with_extension("again.jsonl"),
            );
            let c = flagship_ingest::firehose::replay_spill(&spill, sink).await?;
            println!(
                "ingest: replayed {} records from {} in {} calls ({} spilled again)",
                c.sent,
                spill.display(),
                c.calls,
                c.spilled
            );
            Ok(())
        }),
        IngestCmd::Run(a) => rt.block_on(run(config, *a)).map(drop),
    }
}

pub async fn run(config: &Config, a: RunArgs) -> Result<flagship_ingest::Totals> {
    // A crash checkpoint older than anything a sink buffer or the drain may still hold.
    let lag = (a.buffer_interval * 2 + a.drain_timeout).max(Duration::from_secs(120));
    let telemetry = std::sync::Arc::new(flagship_core::telemetry::Telemetry::ingest());
    // Served from the start until the run ends.
    let _metrics = match a.metrics {
        Some(addr) => Some(crate::shared::serve_metrics(addr, telemetry.clone(), "ingest").await?),
        None => None,
    };
    let mut source = a.source.open(config, "ingest", lag).await?;
    let quarantine = Store::open(&config.location(Area::Quarantine)?, &config.storage.s3)?;
    let qkey = format!(
        "ingest/{}.jsonl",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
    );
    let opts = flagship_ingest::Options {
        max_posts: a.max_posts,
        duration: a.duration,
        drain_timeout: a.drain_timeout,
        track: Some(flagship_core::track::Track::new(
            &config.mission.stream.track,
        )),
        telemetry: Some(telemetry.clone()),
        ..Default::default()
    };
    let bar = ProgressBar::new_spinner()
        .with_style(ProgressStyle::with_template("{spinner} ingest {msg}").expect("template"));
    let progress = |p: flagship_ingest::Progress| {
        let rate = p.received as f64 / p.elapsed.as_secs_f64().max(1e-9);
        bar.set_message(format!(
            "{} tweets, {rate:.0}/s, queue {}",
            p.received, p.queued
        ));
    };
    let sink: Box<dyn Sink> = match a.sink {
        SinkKind::Local => {
            let loc = match &a.out {
                Some(o) => Location::parse(o, &std::env::current_dir()?)?,
                None => config.location(Area::Raw)?,
            };
            let store = Store::open(&loc, &config.storage.s3)?;
            println!("ingest: writing the Firehose layout to {loc}");
            Box::new(
                LocalSink::new(store, "", &a.stream)
                    .with_buffering(a.buffer_bytes, a.buffer_interval),
            )
        }
        SinkKind::Firehose => {
            println!("ingest: sending to Firehose stream {}", a.stream);
            Box::new(FirehoseSink::new(
                firehose_client(config, &a.aws).await,
                &a.stream,
                a.spill.clone(),
            ))
        }
    };
    let totals = flagship_ingest::run(
        source.as_mut(),
        sink,
        &quarantine,
        &qkey,
        &opts,
        signal(),
        &progress,
    )
    .await?;
    bar.finish_and_clear();
    println!("ingest: {totals}");
    if totals.quarantined > 0 {
        println!(
            "ingest: malformed lines are in {}",
            quarantine.location().join(&qkey)
        );
    }
    if totals.sink.spilled > 0 {
        println!(
            "ingest: {} records spilled to {}; send them with `flagship ingest replay-spill`",
            totals.sink.spilled,
            a.spill.display()
        );
    }
    if let Some(e) = &totals.error {
        bail!("ingest stopped: {e}");
    }
    Ok(totals)
}

#[derive(clap::Args)]
pub struct AwsArgs {
    /// `create`, `status`, `destroy` the bucket, log group, role and delivery stream; `host`
    /// for the mission's streaming host (an EC2 instance).
    #[arg(value_parser = ["create", "status", "destroy", "host"])]
    pub action: String,
    /// After `host`: `create`, `status`, `update` (new binary or config) or `destroy`.
    #[arg(value_parser = ["create", "status", "update", "destroy"], required_if_eq("action", "host"))]
    pub host_action: Option<String>,
    /// The bucket Firehose writes to.
    #[arg(long, env = "AWS_S3_BUCKET_NAME")]
    pub bucket: String,
    #[arg(long, default_value = "datasets/twitter/kinesis-demo/")]
    pub prefix: String,
    #[arg(long, default_value = STREAM)]
    pub stream: String,
    /// destroy: also empty and delete the bucket (it holds the data).
    #[arg(long)]
    pub delete_bucket: bool,
    /// host create / update: the streaming-host build (no libtorch:
    /// `cargo build --release -p flagship-cli --no-default-features`).
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// host create: the instance type (x86-64, like the build).
    #[arg(long, default_value = "t3.micro")]
    pub instance_type: String,
    /// host create: the AMI (default: the current Amazon Linux 2023, from AWS's public
    /// SSM parameter).
    #[arg(long)]
    pub ami: Option<String>,
    #[command(flatten)]
    pub aws: AwsFlags,
}

impl AwsArgs {
    /// `aws create` or `aws host create`, as the user typed it.
    fn what(&self) -> String {
        match &self.host_action {
            Some(h) if self.action == "host" => format!("host {h}"),
            _ => self.action.clone(),
        }
    }
}

/// What `flagship aws` says in a binary built without the `aws` feature.
#[cfg(not(feature = "aws"))]
pub fn aws_cmd(_: &Config, _: Option<&std::path::Path>, a: AwsArgs) -> Result<()> {
    bail!(
        "aws {}: this flagship was built without the `aws` feature: run `cargo xtask aws {} …`, \
         or build with `cargo build --release -p flagship-cli --features aws`",
        a.what(),
        a.what()
    )
}

#[cfg(feature = "aws")]
pub fn aws_cmd(config: &Config, config_path: Option<&std::path::Path>, a: AwsArgs) -> Result<()> {
    use anyhow::Context;
    let r = Resources::new(&a.bucket, &a.aws.region(config), &a.prefix, &a.stream)
        .with_endpoint(a.aws.endpoint_url.clone());
    let what = a.what();
    if let (false, Some(h)) = (a.action == "host", &a.host_action) {
        bail!(
            "aws {}: `{h}` only follows `host` (`flagship aws host {h} …`)",
            a.action
        );
    }
    tokio::runtime::Runtime::new()?.block_on(async {
        let c = aws::Clients::new(&r).await;
        let steps = match (a.action.as_str(), a.host_action.as_deref()) {
            ("create", _) => aws::create(&c, &r).await,
            ("status", _) => aws::status(&c, &r).await,
            ("destroy", _) => aws::destroy(&c, &r, a.delete_bucket).await,
            (_, Some(action)) => {
                let mut h = aws::host::Host::new(r.clone());
                h.instance_type = a.instance_type.clone();
                h.ami = a.ami.clone();
                h.tokens = host_token_names(config);
                match action {
                    "status" => aws::host::status(&c, &h).await,
                    "destroy" => aws::host::destroy(&c, &h).await,
                    _ => {
                        let files = host_files(&a, config_path, &what)?;
                        let files = aws::host::Files {
                            binary: &files.0,
                            config: &files.1,
                        };
                        if action == "create" {
                            aws::host::create(&c, &h, files, &host_secrets(config)).await
                        } else {
                            aws::host::update(&c, &h, files).await
                        }
                    }
                }
            }
            _ => unreachable!("clap requires the host action"),
        }
        .with_context(|| format!("aws {what}"))?;
        for s in steps {
            println!("aws {what}: {:<56} {}", s.resource, s.state);
        }
        Ok(())
    })
}

/// The binary and the config a host create / update uploads.
#[cfg(feature = "aws")]
fn host_files(
    a: &AwsArgs,
    config: Option<&std::path::Path>,
    what: &str,
) -> Result<(PathBuf, PathBuf)> {
    let Some(binary) = a.binary.clone() else {
        bail!(
            "aws {what}: --binary PATH: the streaming-host build (`cargo build --release -p flagship-cli --no-default-features`, then --binary target/release/flagship)"
        )
    };
    let Some(config) = config else {
        bail!("aws {what}: --config FILE: the mission's flagship.toml (the host runs with it)")
    };
    Ok((binary, config.to_owned()))
}

/// The stream tokens the config names, from this environment: (variable, value). Their
/// values go to SSM as SecureString and are never printed.
#[cfg(feature = "aws")]
fn host_secrets(config: &Config) -> Vec<(String, String)> {
    let x = &config.sources.x.token_env;
    let mut out = Vec::new();
    let x_value = std::env::var(x)
        .ok()
        .or_else(|| std::env::var("TWITTER_BEARER_TOKEN").ok());
    match x_value.filter(|v| !v.is_empty()) {
        Some(v) => out.push((x.clone(), v)),
        // Needed only by an X source; the host's ingest says so at start if it is missing.
        None => tracing::warn!(
            "${x} is not set here: no X token stored for the host (set it and run create again if the mission streams from X)"
        ),
    }
    for m in config.sources.mastodon.token_vars() {
        if let Some(v) = std::env::var(m).ok().filter(|v| !v.is_empty()) {
            out.push((m.to_owned(), v));
        }
    }
    out
}

/// The token variables the host's service gets (the X token's and each Mastodon instance's):
/// the host exports these and no other parameter.
#[cfg(feature = "aws")]
fn host_token_names(config: &Config) -> Vec<String> {
    let mut names = vec![config.sources.x.token_env.clone()];
    names.extend(
        config
            .sources
            .mastodon
            .token_vars()
            .into_iter()
            .map(str::to_owned),
    );
    names.sort();
    names.dedup();
    names
}
