//! `bench live`'s parts beside `flagship watch` itself: the micro-batch plans planned on
//! every batch against built once (`prepare`), and the launch burst's replay
//! (`burst-stream`: the demo stream looped with fresh ids).

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use flagship_core::{Config, Post};
use serde_json::{Value, json};

#[derive(clap::Subcommand)]
pub enum Cmd {
    /// The demo stream's posts in micro-batches through combine, filter and textproc:
    /// planned on every batch (`flagship_live::prepare`) and built once
    /// (`flagship_live::Prepared`, the loop's), the results compared row by row.
    Prepare(PrepareArgs),
    /// The demo stream looped, each loop's ids fresh and its times after the last's,
    /// gzipped: a burst of about `--seconds` at `--speed` (whole loops, at least one), then
    /// (`--calm-seconds`) about that long at `--calm-speed`'s rate.
    BurstStream(BurstArgs),
}

#[derive(clap::Args)]
pub struct PrepareArgs {
    #[arg(long, default_value = "fixtures/demo/stream.jsonl.gz")]
    stream: PathBuf,
    /// The profile: the demo's (no terms) unless given; `--seed` for the JWST seed's terms.
    #[arg(long, default_value = "fixtures/demo/flagship.toml")]
    config: PathBuf,
    /// The JWST seed profile (the built-in defaults: its wanted and unwanted terms), with
    /// the real JWST posts mixed into the demo's (the seed keeps none of the demo's topics).
    #[arg(long)]
    seed: bool,
    #[arg(
        long,
        default_value = "fixtures/jwst-samples/jwst_tweets_from_notebook_outputs.jsonl"
    )]
    jwst: PathBuf,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Micro-batches timed per way.
    #[arg(long, default_value_t = 200)]
    batches: usize,
}

#[derive(clap::Args)]
pub struct BurstArgs {
    #[arg(long, default_value = "fixtures/demo/stream.jsonl.gz")]
    stream: PathBuf,
    /// The burst lasts about this long (whole loops) when replayed at `--speed`…
    #[arg(long)]
    seconds: u64,
    /// …(`flagship watch --speed`).
    #[arg(long)]
    speed: f64,
    /// Then about this long (whole loops) at the rate `--calm-speed` gives when replayed at
    /// `--speed` (the time a loop has to catch up after the burst).
    #[arg(long, default_value_t = 0)]
    calm_seconds: u64,
    /// The demo's rate by default.
    #[arg(long, default_value_t = 4320.0)]
    calm_speed: f64,
    #[arg(long)]
    out: PathBuf,
}

pub fn run(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Prepare(a) => prepare(a),
        Cmd::BurstStream(a) => burst_stream(a),
    }
}

fn prepare(a: PrepareArgs) -> Result<()> {
    let config = if a.seed {
        Config::default()
    } else {
        Config::load(&a.config)?
    };
    let mut posts = crate::groups::demo_posts(&a.stream)?;
    if a.seed {
        // One JWST post in every few demo posts, in each batch.
        let jwst = crate::groups::jwst_posts(&a.jwst)?;
        let every = (posts.len() / jwst.len().max(1)).clamp(1, 8);
        let mut mixed = Vec::with_capacity(posts.len() + jwst.len());
        let mut j = jwst.into_iter();
        for (i, p) in posts.into_iter().enumerate() {
            if i % every == 0 {
                mixed.extend(j.next());
            }
            mixed.push(p);
        }
        mixed.extend(j);
        posts = mixed;
    }
    let batches: Vec<Vec<(Post, String)>> = posts
        .chunks(a.batch)
        .take(a.batches)
        .map(|c| c.iter().map(|p| (p.clone(), "bench".to_owned())).collect())
        .collect();
    if batches.is_empty() {
        bail!("{}: no posts", a.stream.display());
    }
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let ctx = flagship_store::frames::micro_batch_session();
        let built = Instant::now();
        let prepared = flagship_live::Prepared::new(&ctx, &config).await?;
        let build_ms = built.elapsed().as_secs_f64() * 1e3;
        // Warm both ways once, then alternate batch by batch so noise falls on both.
        flagship_live::prepare(&ctx, &config, &batches[0]).await?;
        prepared.run(&batches[0]).await?;
        let (mut planned, mut once) = (Vec::new(), Vec::new());
        let mut rows = 0usize;
        for (i, b) in batches.iter().enumerate() {
            let t = Instant::now();
            let p = flagship_live::prepare(&ctx, &config, b).await?;
            planned.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            let q = prepared.run(b).await?;
            once.push(t.elapsed().as_secs_f64() * 1e3);
            if p != q {
                bail!("micro-batch {i}: the plan built once gave other rows than planning it");
            }
            rows += q.num_rows();
        }
        let p50 = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let (m_planned, m_once) = (mean(&planned), mean(&once));
        let out = json!({
            "profile": if a.seed { "seed" } else { "demo" },
            "batches": batches.len(),
            "batch": a.batch,
            "rows_kept": rows,
            "build_ms": build_ms,
            "planned_p50_ms": p50(&mut planned),
            "planned_mean_ms": m_planned,
            "once_p50_ms": p50(&mut once),
            "once_mean_ms": m_once,
            "speedup": m_planned / m_once,
        });
        println!("{out}");
        Ok(())
    })
}

/// Ids of loop `n` are the recording's + `n` × this: the demo's ids span ~4·10¹⁵, so loops
/// never meet, and 150 loops stay within a u64 (X's ids are u64s).
const LOOP_ID_STEP: u64 = 100_000_000_000_000_000;

/// Rewrites one X stream message for loop `n`: fresh ids ([`LOOP_ID_STEP`]) for the post,
/// its conversation and its edit history; `created_at` through `retime`.
fn shifted(
    line: &str,
    n: usize,
    retime: impl Fn(chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc>,
) -> Result<String> {
    let mut v: Value = serde_json::from_str(line)?;
    let data = v
        .get_mut("data")
        .and_then(Value::as_object_mut)
        .context("no `data` object")?;
    let id: u64 = data
        .get("id")
        .and_then(Value::as_str)
        .context("no `data.id`")?
        .parse()
        .context("`data.id` is not a u64")?;
    let fresh = id
        .checked_add(n as u64 * LOOP_ID_STEP)
        .context("too many loops for fresh u64 ids")?
        .to_string();
    data.insert("edit_history_tweet_ids".into(), json!([fresh]));
    data.insert("conversation_id".into(), json!(fresh));
    data.insert("id".into(), json!(fresh));
    if let Some(t) = data.get("created_at").and_then(Value::as_str) {
        let t: chrono::DateTime<chrono::Utc> = t.parse().context("created_at")?;
        data.insert(
            "created_at".into(),
            json!(retime(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
    }
    Ok(serde_json::to_string(&v)?)
}

/// Where `t`, a time of the recording (first post at `first`, `span` a loop), lands in
/// calm loop `c`: the loops one after the other, stretched `stretch` times, from `start`.
fn calm_time(
    t: chrono::DateTime<chrono::Utc>,
    first: chrono::DateTime<chrono::Utc>,
    span: chrono::Duration,
    c: usize,
    stretch: f64,
    start: chrono::DateTime<chrono::Utc>,
) -> chrono::DateTime<chrono::Utc> {
    let since = (t - first + span * c as i32).num_milliseconds() as f64;
    start + chrono::Duration::milliseconds((since * stretch).round() as i64)
}

fn burst_stream(a: BurstArgs) -> Result<()> {
    let read = || -> Result<Vec<String>> {
        let f = std::fs::File::open(&a.stream).with_context(|| a.stream.display().to_string())?;
        Ok(
            std::io::BufReader::new(flate2::read::MultiGzDecoder::new(f))
                .lines()
                .collect::<std::io::Result<_>>()?,
        )
    };
    let lines = read()?;
    let time = |l: &str| -> Option<chrono::DateTime<chrono::Utc>> {
        serde_json::from_str::<Value>(l).ok()?["data"]["created_at"]
            .as_str()?
            .parse()
            .ok()
    };
    let (first, last) = (
        lines
            .iter()
            .find_map(|l| time(l))
            .context("no created_at")?,
        lines
            .iter()
            .rev()
            .find_map(|l| time(l))
            .context("no created_at")?,
    );
    // Each loop starts a second after the last one's last post.
    let span = last - first + chrono::Duration::seconds(1);
    if !(a.speed > 0.0 && a.calm_speed > 0.0) {
        bail!(
            "--speed and --calm-speed must be above 0 (got {} and {})",
            a.speed,
            a.calm_speed
        );
    }
    let per_loop = span.num_milliseconds() as f64 / 1e3 / a.speed;
    // The nearest whole number of loops: a loop is a little shorter than its recording's
    // round span, and rounding up would add a whole loop.
    let loops_in = |seconds: f64, per_loop: f64| ((seconds / per_loop).round() as usize).max(1);
    let loops = loops_in(a.seconds as f64, per_loop);
    let tmp = a.out.with_extension("tmp");
    let mut gz = flate2::write::GzEncoder::new(
        std::io::BufWriter::new(std::fs::File::create(&tmp)?),
        flate2::Compression::fast(),
    );
    // The calm: the same loops stretched in time, so that at `speed` they come at
    // `calm_speed`'s rate, after the burst.
    let stretch = a.speed / a.calm_speed;
    let calm_loops = if a.calm_seconds == 0 {
        0
    } else {
        loops_in(a.calm_seconds as f64, per_loop * stretch)
    };
    let calm_start = first + span * loops as i32;
    let mut n = 0usize;
    for lp in 0..loops + calm_loops {
        for (i, l) in lines.iter().enumerate() {
            let out = if lp < loops {
                shifted(l, lp, |t| t + span * lp as i32)
            } else {
                shifted(l, lp, |t| {
                    calm_time(t, first, span, lp - loops, stretch, calm_start)
                })
            }
            .with_context(|| format!("{} line {}", a.stream.display(), i + 1))?;
            writeln!(gz, "{out}")?;
            n += 1;
        }
    }
    gz.finish()?.flush()?;
    std::fs::rename(&tmp, &a.out)?;
    println!(
        "{}",
        json!({
            "lines": n,
            "loops": loops,
            "burst_lines": loops * lines.len(),
            "burst_seconds": per_loop * loops as f64,
            "calm_loops": calm_loops,
            "calm_seconds": per_loop * stretch * calm_loops as f64,
            "replay_seconds": per_loop * (loops as f64 + stretch * calm_loops as f64),
            "out": a.out,
        })
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calm's loops follow the burst one after the other, each stretched: ten times the
    /// speed apart means ten times the time between two posts.
    #[test]
    fn calm_loops_follow_the_burst_stretched() {
        let at =
            |s: i64| chrono::DateTime::<chrono::Utc>::UNIX_EPOCH + chrono::Duration::seconds(s);
        let (first, span, start) = (at(100), chrono::Duration::seconds(50), at(1_000));
        assert_eq!(calm_time(at(100), first, span, 0, 10.0, start), at(1_000));
        assert_eq!(calm_time(at(101), first, span, 0, 10.0, start), at(1_010));
        assert_eq!(calm_time(at(149), first, span, 0, 10.0, start), at(1_490));
        // The second calm loop starts a stretched span after the first.
        assert_eq!(calm_time(at(100), first, span, 1, 10.0, start), at(1_500));
        assert_eq!(calm_time(at(101), first, span, 1, 2.0, start), at(1_102));
    }
}
