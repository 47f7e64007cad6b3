//! `cargo xtask bench train|predict`: flagship against Hugging Face `transformers` on the same
//! checkpoint, texts, batch size, max length and steps, one after the other on this machine.
//! Prints both rates and the ratio. Not a test: nothing here fails on a slow machine.
//! `bench textproc` (vs PySpark) and `bench ingest` likewise.
//!
//! flagship's side runs in the `flagship-bench` binary (crates/bench), not in the product
//! binary: `flagship-bench model train|predict`, `flagship-bench textproc corpus|run`,
//! `flagship-bench ingest corpus|run`.

use std::process::Command;

use crate::flags::Bench;
use crate::setup;

/// The top-level `"examples_per_second"` of a one-line JSON result (the last such key).
pub fn rate(json: &str) -> Option<f64> {
    field(json, "examples_per_second")
}

/// The number under the last `"key":` of a one-line JSON result.
pub fn field(json: &str, key: &str) -> Option<f64> {
    let key = format!("\"{key}\":");
    let at = json.rfind(&key)? + key.len();
    let rest = json[at..].trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn last_line(cmd: &mut Command, what: &str) -> Result<String, String> {
    eprintln!("bench: running {what}…");
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{what} failed ({})", out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .map(str::to_owned)
        .ok_or_else(|| format!("{what} printed no JSON result"))
}

/// Builds the release `flagship-bench` binary; returns it and the target folder.
/// (`setup::cargo`: without `cargo run`'s variables, which would force rebuilds.)
fn release_bench(env: &setup::Env) -> Result<(std::path::PathBuf, std::path::PathBuf), String> {
    setup::run_cmd(setup::cargo(&env.root).args([
        "build",
        "--release",
        "-p",
        "flagship-bench",
        "--bin",
        "flagship-bench",
    ]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env.root.join("target"));
    Ok((target.join("release").join("flagship-bench"), target))
}

/// `cargo xtask bench train|predict|textproc|ingest [--steps N] …`.
pub fn cmd(args: &[String]) -> Result<(), String> {
    run(&Bench::parse(args)?)
}

pub fn run(f: &Bench) -> Result<(), String> {
    let env = setup::run(&crate::flags::Setup::default())?;
    if f.what == "textproc" {
        return textproc(f, &env);
    }
    if f.what == "ingest" {
        return ingest(f, &env);
    }
    if f.what == "desk" {
        let (bench, _) = release_bench(&env)?;
        let out = last_line(
            Command::new(&bench).current_dir(&env.root).args([
                "desk",
                "--posts",
                &(f.tweets / 10).max(1).to_string(),
            ]),
            "the desk store",
        )?;
        println!("flagship: {out}");
        let get = |k: &str| field(&out, k).ok_or_else(|| format!("no `{k}` in {out}"));
        println!(
            "bench desk: {} posts (loaded in {:.1} s) — the whole page over HTTP {:.1} ms (queue) / {:.1} ms (uncertain tab) (target: < 200 ms); store: queue {:.1} ms (newest) / {:.1} ms (probability), uncertain {:.1} ms, today {:.1} ms, decide {:.1} ms",
            get("posts")?,
            get("load_seconds")?,
            get("page_queue_ms")?,
            get("page_uncertain_ms")?,
            get("queue_newest_ms")?,
            get("queue_probability_ms")?,
            get("uncertain_ms")?,
            get("today_ms")?,
            get("decide_ms")?
        );
        return Ok(());
    }
    if f.what == "parsers" {
        let (bench, _) = release_bench(&env)?;
        let out = last_line(
            Command::new(&bench)
                .current_dir(&env.root)
                .args(["ingest", "parsers"]),
            "the platform parsers",
        )?;
        println!("flagship: {out}");
        let get = |k: String| field(&out, &k).ok_or_else(|| format!("no `{k}` in {out}"));
        let x = get("x_record_per_second".into())?;
        for p in ["x", "bluesky", "mastodon"] {
            let record = get(format!("{p}_record_per_second"))?;
            println!(
                "bench parsers: {p:<8} ingest's check {:>9.0} posts/s, to the post record {record:>9.0} posts/s ({:.2}× X's)",
                get(format!("{p}_classify_per_second"))?,
                record / x.max(1e-9)
            );
        }
        return Ok(());
    }
    let (bench, _) = release_bench(&env)?;
    let base = env.venv.join("base-model");
    let data = env.root.join("fixtures/tweeteval-sentiment/train.jsonl.gz");
    let common = [
        "--base".to_string(),
        base.display().to_string(),
        "--data".into(),
        data.display().to_string(),
        "--steps".into(),
        f.steps.to_string(),
        "--rows".into(),
        f.rows.to_string(),
        "--batch-size".into(),
        f.batch_size.to_string(),
        "--max-length".into(),
        f.max_length.to_string(),
    ];
    let ours = last_line(
        Command::new(&bench)
            .current_dir(&env.root)
            .arg("model")
            .arg(&f.what)
            .args(&common),
        "flagship",
    )?;
    let theirs = last_line(
        Command::new(env.python())
            .current_dir(&env.root)
            .arg("scripts/bench_model.py")
            .arg(&f.what)
            .args(&common),
        "transformers",
    )?;
    let (a, b) = (
        rate(&ours).ok_or("flagship: no rate")?,
        rate(&theirs).ok_or("transformers: no rate")?,
    );
    println!("flagship:     {ours}");
    println!("transformers: {theirs}");
    let size = if f.what == "train" {
        format!("{} steps", f.steps)
    } else {
        format!("{} texts", f.rows)
    };
    println!(
        "bench {}: {size}, batch {}, max length {} — flagship {a:.1} ex/s, transformers {b:.1} ex/s, ratio {:.2}×",
        f.what,
        f.batch_size,
        f.max_length,
        a / b
    );
    // The peer's prediction also timed on length-sorted input: the engine-only comparison.
    if let Some(sorted) = theirs
        .find("\"length_sorted\"")
        .and_then(|at| rate(&theirs[at..theirs[at..].find('}').map_or(theirs.len(), |e| at + e)]))
    {
        println!(
            "  transformers on length-sorted input: {sorted:.1} ex/s (flagship sorts by length itself), ratio {:.2}×",
            a / sorted
        );
    }
    Ok(())
}

/// `bench textproc`: flagship's DataFusion plan vs PySpark `local[*]` on one corpus, one
/// after the other; then flagship alone on `scale` times the corpus for its peak memory.
fn textproc(f: &Bench, env: &setup::Env) -> Result<(), String> {
    let (bench, target) = release_bench(env)?;
    let has_spark = Command::new(env.python())
        .args(["-c", "import pyspark"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_spark {
        eprintln!(
            "bench: installing pyspark 4.0.1 into {} (once)",
            env.venv.display()
        );
        setup::run_cmd(Command::new(env.python()).args([
            "-m",
            "pip",
            "install",
            "-q",
            "pyspark==4.0.1",
        ]))?;
    }
    let work = target.join("bench-textproc");
    let corpus = |n: usize| -> Result<std::path::PathBuf, String> {
        let dir = work.join(format!("corpus-{n}"));
        last_line(
            Command::new(&bench)
                .current_dir(&env.root)
                .args(["textproc", "corpus", "--tweets", &n.to_string(), "--dir"])
                .arg(&dir),
            &format!("corpus of {n} tweets"),
        )?;
        Ok(dir)
    };
    let ours_on = |dir: &std::path::Path| {
        last_line(
            Command::new(&bench)
                .current_dir(&env.root)
                .args(["textproc", "run", "--dir"])
                .arg(dir)
                .arg("--out")
                .arg(work.join("out-flagship")),
            "flagship textproc",
        )
    };
    let n = f.tweets;
    let dir = corpus(n)?;
    let ours = ours_on(&dir)?;
    let theirs = last_line(
        Command::new(env.python())
            .current_dir(&env.root)
            .arg("scripts/bench_textproc.py")
            .arg("--input")
            .arg(&dir)
            .arg("--output")
            .arg(work.join("out-pyspark")),
        "PySpark",
    )?;
    println!("flagship: {ours}");
    println!("pyspark:  {theirs}");
    let get = |j: &str, k| field(j, k).ok_or_else(|| format!("no `{k}` in {j}"));
    let (a, b) = (get(&ours, "seconds")?, get(&theirs, "seconds")?);
    println!(
        "bench textproc: {n} tweets — flagship {a:.1} s (peak RSS {:.0} MiB), PySpark local[*] {b:.1} s (peak RSS {:.0} MiB): {:.1}× faster",
        get(&ours, "peak_rss_mib")?,
        get(&theirs, "peak_rss_mib")?,
        b / a
    );
    std::fs::remove_dir_all(work.join("out-pyspark")).ok();
    if f.scale > 1 {
        std::fs::remove_dir_all(&dir).ok();
        let big = corpus(n * f.scale)?;
        let at_scale = ours_on(&big)?;
        println!("flagship: {at_scale}");
        println!(
            "bench textproc memory: {n} tweets {:.0} MiB, {} tweets {:.0} MiB (peak RSS); {:.1} s vs {:.1} s",
            get(&ours, "peak_rss_mib")?,
            n * f.scale,
            get(&at_scale, "peak_rss_mib")?,
            a,
            get(&at_scale, "seconds")?
        );
    }
    std::fs::remove_dir_all(&work).ok();
    Ok(())
}

/// `bench ingest`: replay N/4 then N stream messages into the local sink (same binary, one
/// after the other): tweets/s and peak RSS, to show the rate and that memory stays flat.
fn ingest(f: &Bench, env: &setup::Env) -> Result<(), String> {
    let (bench, target) = release_bench(env)?;
    let work = target.join("bench-ingest");
    let mut lines = Vec::new();
    for n in [f.tweets / 4, f.tweets] {
        let file = work.join(format!("stream-{n}.jsonl"));
        last_line(
            Command::new(&bench)
                .current_dir(&env.root)
                .args(["ingest", "corpus", "--tweets", &n.to_string(), "--file"])
                .arg(&file),
            &format!("corpus of {n} stream messages"),
        )?;
        let out = last_line(
            Command::new(&bench)
                .current_dir(&env.root)
                .args(["ingest", "run", "--file"])
                .arg(&file)
                .arg("--out")
                .arg(work.join("out")),
            "flagship ingest (replay → local sink)",
        )?;
        println!("flagship: {out}");
        std::fs::remove_dir_all(&work).ok();
        lines.push((n, out));
    }
    let get = |j: &str, k| field(j, k).ok_or_else(|| format!("no `{k}` in {j}"));
    for (n, out) in &lines {
        println!(
            "bench ingest: {n} tweets replayed into the local Firehose layout at {:.0} tweets/s (target 100,000), peak RSS {:.0} MiB",
            get(out, "tweets_per_second")?,
            get(out, "peak_rss_mib")?
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::rate;

    #[test]
    fn rate_reads_the_top_level_key() {
        assert_eq!(
            rate(
                r#"{"examples": 3, "input_order": {"examples_per_second": 1.5}, "examples_per_second": 2.25e1}"#
            ),
            Some(22.5)
        );
        assert_eq!(rate("{}"), None);
    }
}
