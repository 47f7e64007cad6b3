//! `cargo xtask bench train|predict|textproc|ingest|live|parsers|desk|all`: flagship against
//! its named peer, one after the other on this machine, printing both figures and the ratio.
//! Not a test: nothing here fails on a slow machine. `bench all` runs every benchmark in one
//! go and writes `docs/benchmarks.md` (machine, date, versions, the table), so the figures the
//! README and docs quote come from one command.
//!
//! flagship's side runs in the `flagship-bench` binary (crates/bench), not in the product
//! binary: `flagship-bench model train|predict`, `flagship-bench textproc corpus|run`,
//! `flagship-bench ingest corpus|run`; `bench live` runs the product's `flagship watch` on the
//! demo replay, and `bench predict` the product's `flagship predict` for held-out quality.
//! `bench desk-load` (not in `bench all`: ten minutes) runs `flagship-bench desk-load` — the
//! desk's server in a child process under pages, decisions and a replay — and writes
//! `docs/desk-load.md`. `bench groups` and `bench alerts` (not in `bench all` either) run
//! `flagship-bench groups` / `flagship-bench alerts` and print their rows.

use std::process::Command;

use crate::flags::Bench;
use crate::setup;

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

/// The string under the last `"key":` of a one-line JSON result.
pub fn text_field(json: &str, key: &str) -> Option<String> {
    let key = format!("\"{key}\":\"");
    let at = json.rfind(&key)? + key.len();
    let rest = &json[at..];
    Some(rest[..rest.find('"')?].to_owned())
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
    json_line(&String::from_utf8_lossy(&out.stdout), what)
}

/// The last line of `text` that is a JSON object: a command's result.
fn json_line(text: &str, what: &str) -> Result<String, String> {
    text.lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .map(str::to_owned)
        .ok_or_else(|| format!("{what} printed no JSON result"))
}

/// A process's resident memory, read from `/proc/PID/status` while it ran.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Memory {
    /// (seconds since the start, VmRSS in MiB), every [`Memory::EVERY`].
    pub samples: Vec<(f64, f64)>,
    /// VmHWM at the last reading: the most it held.
    pub peak_mib: f64,
}

impl Memory {
    /// How often the process's memory is read.
    const EVERY: std::time::Duration = std::time::Duration::from_secs(2);

    /// RSS a quarter of the way through the run, at its end, and the peak: flat memory is
    /// the first two alike over a long run.
    pub fn summary(&self) -> String {
        match (
            self.samples.get(self.samples.len() / 4),
            self.samples.last(),
        ) {
            (Some(q), Some(last)) => format!(
                "RSS {:.0} MiB at {:.0} s, {:.0} MiB at {:.0} s (the end), peak {:.0} MiB",
                q.1, q.0, last.1, last.0, self.peak_mib
            ),
            _ => "RSS not read (the run ended within one reading)".into(),
        }
    }
}

/// The `VmRSS:` or `VmHWM:` line of `status` (a `/proc/PID/status` text), in MiB.
fn status_mib(status: &str, key: &str) -> Option<f64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kib: f64 = line[key.len()..]
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// [`last_line`], reading the process's memory every [`Memory::EVERY`] while it runs.
fn last_line_with_memory(cmd: &mut Command, what: &str) -> Result<(String, Memory), String> {
    eprintln!("bench: running {what}…");
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    let mut stdout = child.stdout.take().expect("stdout piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut text).map(|_| text)
    });
    let status_file = format!("/proc/{}/status", child.id());
    let start = std::time::Instant::now();
    let mut memory = Memory::default();
    let mut next_reading = start;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| format!("{what}: {e}"))? {
            break status;
        }
        if std::time::Instant::now() >= next_reading {
            next_reading += Memory::EVERY;
            if let Ok(text) = std::fs::read_to_string(&status_file) {
                if let Some(rss) = status_mib(&text, "VmRSS:") {
                    memory.samples.push((start.elapsed().as_secs_f64(), rss));
                }
                memory.peak_mib = status_mib(&text, "VmHWM:").unwrap_or(memory.peak_mib);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let text = reader
        .join()
        .expect("the reader thread")
        .map_err(|e| format!("{what}'s output: {e}"))?;
    if !status.success() {
        return Err(format!("{what} failed ({status})"));
    }
    Ok((json_line(&text, what)?, memory))
}

/// Builds the release binary `bin` of `package`; returns it and the target folder.
/// (`setup::cargo`: without `cargo run`'s variables, which would force rebuilds.)
fn release_bin(
    env: &setup::Env,
    package: &str,
    bin: &str,
) -> Result<(std::path::PathBuf, std::path::PathBuf), String> {
    setup::run_cmd(setup::cargo(&env.root).args([
        "build",
        "--release",
        "-p",
        package,
        "--bin",
        bin,
    ]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env.root.join("target"));
    Ok((target.join("release").join(bin), target))
}

/// The release `flagship-bench` binary and the target folder.
fn release_bench(env: &setup::Env) -> Result<(std::path::PathBuf, std::path::PathBuf), String> {
    release_bin(env, "flagship-bench", "flagship-bench")
}

/// One line of the benchmark table.
#[derive(Debug, Clone)]
pub struct Row {
    pub benchmark: String,
    pub flagship: String,
    pub peer: String,
    pub ratio: String,
    pub target: String,
    /// The same benchmark in issue #18's run, or in the run it names, where there was one.
    pub before: String,
}

fn row(benchmark: String, flagship: String, peer: &str, ratio: String, target: &str) -> Row {
    Row {
        benchmark,
        flagship,
        peer: peer.to_owned(),
        ratio,
        target: target.to_owned(),
        before: "—".into(),
    }
}

impl Row {
    fn before(mut self, before: &str) -> Row {
        self.before = before.to_owned();
        self
    }
}

/// What a benchmark measured: its table rows and lines of detail under the table.
#[derive(Debug, Default)]
pub struct Measured {
    pub rows: Vec<Row>,
    pub details: Vec<String>,
}

/// `cargo xtask bench <what> [--steps N] …`.
pub fn cmd(args: &[String]) -> Result<(), String> {
    run(&Bench::parse(args)?)
}

pub fn run(f: &Bench) -> Result<(), String> {
    let env = setup::run(&crate::flags::Setup::default())?;
    if f.what == "all" {
        return all(f, &env);
    }
    let m = one(f, &f.what, &env)?;
    println!("\n{}", table(&m.rows));
    for d in &m.details {
        println!("{d}");
    }
    Ok(())
}

fn one(f: &Bench, what: &str, env: &setup::Env) -> Result<Measured, String> {
    match what {
        "textproc" => textproc(f, env),
        "ingest" => ingest(f, env),
        "desk" => desk(f, env),
        "desk-load" => desk_load(f, env),
        "groups" => groups(env),
        "alerts" => alerts(env),
        "team" => team(env),
        "parsers" => parsers(env),
        "live" => live(f, env),
        "train" | "predict" => model(f, what, env),
        other => Err(format!("no benchmark `{other}`")),
    }
}

/// Every benchmark, then docs/benchmarks.md. A benchmark that fails is reported in the file
/// and makes the command fail at the end; the others still run.
fn all(f: &Bench, env: &setup::Env) -> Result<(), String> {
    let started = std::time::Instant::now();
    let mut rows = Vec::new();
    let mut details = Vec::new();
    let mut failed = Vec::new();
    for what in [
        "predict", "train", "textproc", "live", "ingest", "parsers", "desk",
    ] {
        match one(f, what, env) {
            Ok(m) => {
                rows.extend(m.rows);
                details.extend(m.details);
            }
            Err(e) => {
                eprintln!("bench {what}: FAILED: {e}");
                failed.push(format!("`bench {what}` failed: {e}"));
            }
        }
    }
    let doc = document(env, f, &rows, &details, &failed, started.elapsed());
    let path = env.root.join("docs/benchmarks.md");
    let tmp = path.with_extension("md.tmp");
    std::fs::write(&tmp, &doc)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!("\n{}", table(&rows));
    println!("bench all: wrote {}", path.display());
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("; "))
    }
}

/// `1000000` → `1,000,000`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

/// The rows as a markdown table.
pub fn table(rows: &[Row]) -> String {
    let mut t = String::from(
        "| benchmark | flagship | peer | ratio | target | before (issue #18's run, or the one named) |\n|---|---|---|---|---|---|\n",
    );
    for r in rows {
        t.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            cell(&r.benchmark),
            cell(&r.flagship),
            cell(&r.peer),
            cell(&r.ratio),
            cell(&r.target),
            cell(&r.before)
        ));
    }
    t
}

/// A command's first line of output, or `unknown`.
fn output_of(cmd: &mut Command) -> String {
    cmd.output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(|l| l.trim().to_owned()))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// The version of `name` in Cargo.lock.
fn locked(root: &std::path::Path, name: &str) -> String {
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).unwrap_or_default();
    let key = format!("name = \"{name}\"\nversion = \"");
    lock.find(&key)
        .map(|at| {
            let rest = &lock[at + key.len()..];
            rest[..rest.find('"').unwrap_or(0)].to_owned()
        })
        .unwrap_or_else(|| "unknown".into())
}

/// This machine in one line: CPU model, cores, memory, bf16, GPU.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown CPU".into(), |m| m.trim().to_owned());
    let bf16 = cpu.contains(" avx512_bf16");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map_or("?".into(), |kb| format!("{:.0}", kb / 1024.0 / 1024.0));
    let gpu = output_of(Command::new("nvidia-smi").arg("-L"));
    format!(
        "{model}, {cores} cores, {mem} GiB; AVX-512 BF16: {}; GPU: {}",
        if bf16 { "yes" } else { "no" },
        if gpu == "unknown" { "none" } else { &gpu }
    )
}

fn document(
    env: &setup::Env,
    f: &Bench,
    rows: &[Row],
    details: &[String],
    failed: &[String],
    took: std::time::Duration,
) -> String {
    let date = output_of(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]));
    let py = |code: &str| output_of(Command::new(env.python()).args(["-c", code]));
    let mut d = format!(
        "# Benchmarks\n\n\
         Written by `cargo xtask bench all` on {date} in {:.0} min: every figure below comes from that one run, flagship and its peer one after the other on the same machine. Do not edit by hand: run it again.\n\n\
         - **Machine:** {}\n\
         - **flagship:** {} ({}), release build; libtorch {} through tch {}; DataFusion {}\n\
         - **Peers:** transformers {} on the same libtorch; PySpark {} (`local[*]`)\n\
         - **Settings:** predict {} texts, train {} steps, batch {}, max length {}; textproc {} tweets (and ×{} alone, for memory); ingest {} replayed; the desk {} posts\n\n",
        took.as_secs_f64() / 60.0,
        machine(),
        locked(&env.root, "flagship-cli"),
        output_of(Command::new("rustc").arg("-V")),
        py("import torch; print(torch.__version__)"),
        locked(&env.root, "tch"),
        locked(&env.root, "datafusion"),
        py("import transformers; print(transformers.__version__)"),
        py("import pyspark; print(pyspark.__version__)"),
        thousands(f.rows),
        f.steps,
        f.batch_size,
        f.max_length,
        thousands(f.tweets),
        f.scale,
        thousands(f.tweets),
        thousands(f.tweets / 10)
    );
    d.push_str(&table(rows));
    if !failed.is_empty() {
        d.push_str("\n**Failed in this run:**\n\n");
        for x in failed {
            d.push_str(&format!("- {x}\n"));
        }
    }
    d.push_str("\n## Details\n\n");
    for x in details {
        d.push_str(&format!("- {x}\n"));
    }
    d.push_str(NOTES);
    d
}

/// What the figures are (fixed text under every generated table).
const NOTES: &str = "
## How each is measured

- **predict / train**: `flagship-bench model predict|train` against `scripts/bench_model.py`
  (Hugging Face `transformers`: the Trainer with `group_by_length` for training; a plain loop
  for prediction, on input order and length-sorted), the same MiniLM checkpoint, texts,
  batch size, max length and steps, first-token head with two labels on both sides. flagship
  runs twice: `--precision f32` (what it did before) and `auto` (bf16 matrix products on
  CUDA, and on a CPU with AVX-512 BF16 where a bf16 product measures faster than f32; f32
  elsewhere), its prediction on a frozen model as
  `flagship predict` serves one. The peer runs in f32 as it does by default on a CPU, and
  once more under bf16 autocast (the Trainer: `bf16=True`; its AdamW is the fused kernel,
  its default on torch ≥ 2.8) for comparison.
- **held-out quality** (with predict): `flagship predict` of the demo's model on TweetEval's
  held-out 40 % in f32 and in bf16: an option is kept only if F2 moves by < 0.002.
- **textproc**: `flagship-bench textproc` (DataFusion; hour files processed concurrently) and
  `scripts/bench_textproc.py` (PySpark, the same steps) over the same 1M-tweet corpus built
  from real v2 payloads; wall time and peak RSS of each process.
- **live**: `flagship watch` on the demo replay (`fixtures/demo/stream.jsonl.gz`, paced by
  the tweets' times: `--speed 4320` is about 35 posts/s, `43200` ten times that) with the
  demo's model and `--explain 3`; latency is a post's arrival → its flagged line written.
  The launch burst is the demo looped with fresh ids and later times
  (`flagship-bench live burst-stream`) for `--minutes`; the busy host runs `stress-ng --cpu 1`
  beside `watch`. A flagged post's first words come with its line, from the scoring pass
  (its words left out of the deciding layer's mean pool); occlusion refines them after the
  write, a slice at a time while no post waits;
  \"words … after the write\" is when the first words reached the file (0 with the line). The achieved rate can fall short
  of the offered one on a small machine, where the replay reader shares the cores with the
  model; then the reader's queue (4,096 lines) fills and a line's arrival is when the reader
  took it. The desk's row: `flagship desk --replay` on a burst of its own — about 2 minutes
  (`--minutes` if less) at ten times the demo's rate, then twice as long at the demo's (whole
  loops of the demo) — into a database of its own, question groups on: each flagged post is
  also embedded by the frozen base encoder, after its write while no post waits, within 10
  minutes or counted (`unembedded`; such a post stays a card of its own); a burst keeps the
  loop busy scoring, so its posts are embedded in the calm. The micro-batch plans: `flagship-bench live prepare`, the same batches of 32 demo
  posts through the plans planned on every batch and built once, alternately, their results
  compared row by row.
- **ingest / parsers / desk**: flagship alone (no peer): replayed stream messages into the
  local Firehose layout; each platform's parser beside X's; the desk's pages and store views
  at N/10 posts.
";

/// The texts and sizes both sides of `bench train|predict` run with: `data`'s first
/// `--rows`, `--steps`, `--batch-size`, `--max-length` (flagship-bench's and
/// scripts/bench_model.py's flags alike).
fn sizes(f: &Bench, data: &std::path::Path) -> Vec<String> {
    vec![
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
    ]
}

/// `key`'s number in the JSON line `json`, or an error naming both.
fn rate(json: &str, key: &str) -> Result<f64, String> {
    field(json, key).ok_or_else(|| format!("no `{key}` in {json}"))
}

/// The layers `bench predict` also serves, as a shallower student would (`--layers`).
const SHALLOW_LAYERS: usize = 3;

/// `flagship-bench model train|predict` in f32 and at `auto`, and the transformers peer.
fn model(f: &Bench, what: &str, env: &setup::Env) -> Result<Measured, String> {
    let (bench, _) = release_bench(env)?;
    let base = env.venv.join("base-model");
    let data = env.root.join("fixtures/tweeteval-sentiment/train.jsonl.gz");
    let mut common = vec!["--base".to_string(), base.display().to_string()];
    common.extend(sizes(f, &data));
    let ours = |precision: &str, extra: &[&str]| {
        last_line(
            Command::new(&bench)
                .current_dir(&env.root)
                .args(["model", what])
                .args(&common)
                .args(["--precision", precision])
                .args(extra),
            &format!("flagship {what} ({precision}) {}", extra.join(" ")),
        )
    };
    let theirs = |extra: &[&str]| {
        last_line(
            Command::new(env.python())
                .current_dir(&env.root)
                .arg("scripts/bench_model.py")
                .arg(what)
                .args(&common)
                .args(extra),
            &format!("transformers {what} {}", extra.join(" ")),
        )
    };
    let f32_run = ours("f32", &[])?;
    let auto_run = ours("auto", &[])?;
    let peer = theirs(&[])?;
    let peer_bf16 = theirs(&["--bf16"])?;
    for (who, line) in [
        ("flagship f32 ", &f32_run),
        ("flagship auto", &auto_run),
        ("transformers ", &peer),
        ("transformers bf16", &peer_bf16),
    ] {
        println!("{who}: {line}");
    }
    let (a32, aa) = (
        rate(&f32_run, "examples_per_second")?,
        rate(&auto_run, "examples_per_second")?,
    );
    let auto = text_field(&auto_run, "precision").unwrap_or_else(|| "auto".into());
    let mut m = Measured::default();
    if what == "predict" {
        let (io, sorted) = (
            rate(&peer, "examples_per_second")?,
            rate(&peer, "length_sorted_per_second")?,
        );
        let sorted_bf16 = rate(&peer_bf16, "length_sorted_per_second")?;
        let size = format!(
            "{} texts, batch {}, len {}",
            thousands(f.rows),
            f.batch_size,
            f.max_length
        );
        m.rows.push(
            row(
                format!("`bench predict` ({size}), f32"),
                format!("{a32:.1} ex/s"),
                &format!("transformers {sorted:.1} ex/s length-sorted ({io:.1} input order)"),
                format!("{:.2}×", a32 / sorted),
                "≥ 2× the length-sorted peer",
            )
            .before("358.8 vs 258.0: 1.39×"),
        );
        m.rows.push(row(
            format!("`bench predict` ({size}), `auto` = {auto} here (the default)"),
            format!("{aa:.1} ex/s"),
            &format!(
                "transformers {sorted:.1} ex/s length-sorted; {sorted_bf16:.1} under bf16 autocast"
            ),
            format!(
                "**{:.2}×** ({:.2}× the bf16 peer)",
                aa / sorted,
                aa / sorted_bf16
            ),
            "≥ 2× the length-sorted peer",
        ));
        // A shallower student's shape (`flagship train --layers`): the base's first layers.
        let layers = SHALLOW_LAYERS.to_string();
        let shallow = ours("auto", &["--layers", &layers])?;
        let shallow_peer = theirs(&["--bf16", "--layers", &layers])?;
        println!("flagship auto, {layers} layers: {shallow}");
        println!("transformers bf16, {layers} layers: {shallow_peer}");
        let (sa, sp) = (
            rate(&shallow, "examples_per_second")?,
            rate(&shallow_peer, "length_sorted_per_second")?,
        );
        m.rows.push(row(
            format!(
                "`bench predict` ({size}), `auto`, the first {layers} layers (`train --layers {layers}`: held-out F2 in docs/model.md)"
            ),
            format!("{sa:.1} ex/s"),
            &format!(
                "transformers {sorted_bf16:.1} ex/s under bf16 autocast with all layers; {sp:.1} with {layers}"
            ),
            format!(
                "**{:.2}×** the bf16 peer ({:.2}× with {layers} layers too)",
                sa / sorted_bf16,
                sa / sp
            ),
            "≥ 2× the bf16 peer",
        ));
        m.rows.push(served(f, env, &bench, &base)?);
        m.rows.extend(quality(env)?);
    } else {
        let (p32, pbf) = (
            rate(&peer, "examples_per_second")?,
            rate(&peer_bf16, "examples_per_second")?,
        );
        let size = format!(
            "{} steps, batch {}, len {}",
            f.steps, f.batch_size, f.max_length
        );
        m.rows.push(
            row(
                format!("`bench train` ({size}), f32"),
                format!("{a32:.1} ex/s"),
                &format!("HF Trainer {p32:.1} ex/s"),
                format!("{:.2}×", a32 / p32),
                "≥ 1.3× HF Trainer",
            )
            .before("72.0 vs 70.2: 1.03×"),
        );
        m.rows.push(row(
            format!("`bench train` ({size}), `auto` = {auto} here (the default)"),
            format!("{aa:.1} ex/s"),
            &format!("HF Trainer {p32:.1} ex/s; {pbf:.1} with `bf16=True`"),
            format!("**{:.2}×** ({:.2}× the bf16 Trainer)", aa / p32, aa / pbf),
            "≥ 1.3× HF Trainer",
        ));
    }
    Ok(m)
}

/// The release `flagship` binary (built here if needed).
fn release_flagship(env: &setup::Env) -> Result<std::path::PathBuf, String> {
    release_bin(env, "flagship-cli", "flagship").map(|(bin, _)| bin)
}

/// The demo's model folder; `cargo xtask pipeline` trains it.
fn demo_model(env: &setup::Env) -> Result<std::path::PathBuf, String> {
    let dir = env.root.join("data/demo/models/need-support");
    if dir.join("flagship.json").exists() {
        Ok(dir)
    } else {
        Err(format!(
            "no demo model at {} (run `cargo xtask pipeline` first)",
            dir.display()
        ))
    }
}

/// The demo's model as `flagship predict` serves it — early exit included, and with every post
/// reading every layer — on held-out texts no model here trained on, beside `transformers`
/// under bf16 autocast on the same texts (the base: the same encoder's shape and cost).
fn served(
    f: &Bench,
    env: &setup::Env,
    bench: &std::path::Path,
    base: &std::path::Path,
) -> Result<Row, String> {
    let model = demo_model(env)?;
    let heldout = env
        .root
        .join("fixtures/tweeteval-sentiment/heldout-40.jsonl");
    let sizes = sizes(f, &heldout);
    let ours = |full: bool| {
        let mut cmd = Command::new(bench);
        cmd.current_dir(&env.root)
            .args(["model", "predict", "--model"])
            .arg(&model)
            .args(&sizes);
        if full {
            cmd.arg("--full-depth");
        }
        last_line(
            &mut cmd,
            &format!("flagship predict, the demo's model (full depth: {full})"),
        )
    };
    let exits = ours(false)?;
    let full = ours(true)?;
    let peer = last_line(
        Command::new(env.python())
            .current_dir(&env.root)
            .args(["scripts/bench_model.py", "predict", "--bf16", "--base"])
            .arg(base)
            .args(&sizes),
        "transformers predict --bf16 on the held-out texts",
    )?;
    println!(
        "flagship, early exit: {exits}\nflagship, full depth: {full}\ntransformers bf16: {peer}"
    );
    let (e, d, p) = (
        rate(&exits, "examples_per_second")?,
        rate(&full, "examples_per_second")?,
        rate(&peer, "length_sorted_per_second")?,
    );
    let read = rate(&exits, "layers_read")?;
    Ok(row(
        format!(
            "`bench predict` ({} held-out texts, batch {}), the demo's model as served: early exit, {:.0}% of the layers read (docs/model.md#early-exit)",
            thousands(f.rows),
            f.batch_size,
            100.0 * read
        ),
        format!("{e:.1} ex/s"),
        &format!(
            "transformers {p:.1} ex/s under bf16 autocast, same texts; flagship full depth {d:.1}"
        ),
        format!("**{:.2}×** the bf16 peer ({:.2}× full depth)", e / p, d / p),
        "≥ 2× the bf16 peer",
    ))
}

/// Held-out F2 and ROC-AUC of the demo's model: f32 with every post reading every layer, bf16
/// likewise, as served (`auto`, early exit), and as a loop that has fallen behind serves it
/// (`--hurried`: the exits' looser margins), where its card has those.
fn quality(env: &setup::Env) -> Result<Vec<Row>, String> {
    let flagship = release_flagship(env)?;
    let model = demo_model(env)?;
    let heldout = env
        .root
        .join("fixtures/tweeteval-sentiment/heldout-40.jsonl");
    let out = std::env::temp_dir().join(format!("flagship-bench-{}", std::process::id()));
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    // The card names `hurried` (inside `early_exit`) only where it has those margins.
    let card = std::fs::read_to_string(model.join("flagship.json")).map_err(|e| e.to_string())?;
    let hurries = card.contains("\"hurried\"");
    let mut runs = vec![
        ("f32", "--full-depth"),
        ("bf16", "--full-depth"),
        ("auto", ""),
    ];
    if hurries {
        runs.push(("auto", "--hurried"));
    }
    let mut scores = Vec::new();
    for (i, (p, depth)) in runs.into_iter().enumerate() {
        let o = Command::new(&flagship)
            .current_dir(&env.root)
            .args(["predict", "--precision", p, "--model"])
            .arg(&model)
            .arg("--input")
            .arg(&heldout)
            .arg("--output")
            .arg(out.join(format!("{i}-{p}.jsonl")))
            .args((!depth.is_empty()).then_some(depth))
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| format!("cannot run flagship predict: {e}"))?;
        let text = String::from_utf8_lossy(&o.stdout);
        let line = text
            .lines()
            .find(|l| l.starts_with("labelled:"))
            .ok_or_else(|| format!("flagship predict ({p}) printed no scores: {text}"))?;
        let after = |k: &str| {
            line.find(k)
                .and_then(|at| field(&format!("\"x\":{}", &line[at + k.len()..]), "x"))
                .ok_or_else(|| format!("no `{k}` in {line}"))
        };
        scores.push((after("F2 ")?, after("ROC-AUC ")?));
    }
    std::fs::remove_dir_all(&out).ok();
    let ((f32_f2, f32_auc), (bf_f2, bf_auc), (ex_f2, ex_auc)) = (scores[0], scores[1], scores[2]);
    let hurried = match scores.get(3) {
        Some((f2, auc)) => row(
            "held-out quality of the demo's model in a hurry (`predict --hurried`: the exits' looser margins, `model.early_exit_hurried`, as a loop that has fallen behind scores) vs f32 with every layer".into(),
            format!("F2 {f2:.4}, ROC-AUC {auc:.4}"),
            &format!("f32: F2 {f32_f2:.4}, ROC-AUC {f32_auc:.4}"),
            format!("ΔF2 {:+.4}, ΔAUC {:+.4}", f2 - f32_f2, auc - f32_auc),
            "none (stated; docs/model.md#in-a-hurry)",
        ),
        None => row(
            "held-out quality of the demo's model in a hurry".into(),
            "its card has no hurried exits (trained before they existed: `flagship exits --model DIR`)".into(),
            "—",
            "—".into(),
            "none (stated; docs/model.md#in-a-hurry)",
        ),
    };
    Ok(vec![
        row(
            "held-out quality of the demo's model (TweetEval held-out 40 %, 2,467 posts): bf16 vs f32 scoring, every layer".into(),
            format!("bf16: F2 {bf_f2:.4}, ROC-AUC {bf_auc:.4}"),
            &format!("f32: F2 {f32_f2:.4}, ROC-AUC {f32_auc:.4}"),
            format!("ΔF2 {:+.4}", bf_f2 - f32_f2),
            "|ΔF2| < 0.002",
        ),
        row(
            "held-out quality of the demo's model as served (`auto` arithmetic, early exit) vs f32 with every layer".into(),
            format!("F2 {ex_f2:.4}, ROC-AUC {ex_auc:.4}"),
            &format!("f32: F2 {f32_f2:.4}, ROC-AUC {f32_auc:.4}"),
            format!("ΔF2 {:+.4}, ΔAUC {:+.4}", ex_f2 - f32_f2, ex_auc - f32_auc),
            "|ΔF2| < 0.002",
        ),
        hurried,
    ])
}

/// One `flagship watch` run of the live benchmark: its replay, pace and size.
struct WatchRun<'a> {
    label: String,
    replay: &'a std::path::Path,
    speed: u32,
    posts: usize,
    /// `stress-ng --cpu 1` runs beside it (a host busy with something else).
    busy: bool,
    before: &'a str,
}

/// `flagship watch` with the demo's model: at ~35 posts/s; at ten times that for
/// `--minutes` (the demo looped with fresh ids — a launch burst); at ~35 posts/s on a host
/// whose other core is kept busy (`stress-ng --cpu 1`). Then the micro-batch plans, planned
/// on every batch against built once.
fn live(f: &Bench, env: &setup::Env) -> Result<Measured, String> {
    // The busy host's load, before the 10-minute burst rather than after it.
    setup::stress_ng()?;
    let flagship = release_flagship(env)?;
    let (bench, _) = release_bench(env)?;
    let model = match &f.model {
        Some(dir) if dir.join("flagship.json").is_file() => env.root.join(dir),
        Some(dir) => return Err(format!("--model {}: no flagship.json there", dir.display())),
        None => demo_model(env)?,
    };
    let out = std::env::temp_dir().join(format!("flagship-bench-live-{}", std::process::id()));
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let demo = env.root.join("fixtures/demo/stream.jsonl.gz");
    let burst = out.join("burst.jsonl.gz");
    let made = last_line(
        Command::new(&bench)
            .current_dir(&env.root)
            .args(["live", "burst-stream", "--speed", "43200", "--seconds"])
            .arg((f.minutes * 60).to_string())
            .arg("--out")
            .arg(&burst),
        "flagship-bench live burst-stream",
    )?;
    let burst_posts =
        field(&made, "lines").ok_or_else(|| format!("no `lines` in {made}"))? as usize;
    let runs = [
        WatchRun {
            label: "demo replay at ~35 posts/s".into(),
            replay: &demo,
            speed: 4320,
            posts: 1000,
            busy: false,
            before: "2026-12-01: p50 33 ms, p99 84 ms (issue #18's run: p50 256, p99 503)",
        },
        WatchRun {
            label: format!(
                "launch burst: 10× the demo's rate (~400 posts/s offered) for {} min, the demo looped with fresh ids",
                f.minutes
            ),
            replay: &burst,
            speed: 43200,
            posts: burst_posts,
            busy: false,
            before: "2026-12-01, 3,000 posts: p99 387 ms; 569 of 1,593 flagged left without words",
        },
        WatchRun {
            label: "demo replay at ~35 posts/s, host busy (`stress-ng --cpu 1` on the other core)"
                .into(),
            replay: &demo,
            speed: 4320,
            posts: 1000,
            busy: true,
            before: "issue #32's report: the desk's loop 15 s behind at p50, none of 877 flagged explained",
        },
    ];
    let mut m = Measured::default();
    for r in &runs {
        let stress = if r.busy {
            Some(
                Command::new("stress-ng")
                    .args(["--cpu", "1", "--quiet"])
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .map_err(|e| format!("cannot start stress-ng: {e}"))?,
            )
        } else {
            None
        };
        let file = out.join(format!("flagged-{}-{}.jsonl", r.speed, r.busy));
        let t = last_line_with_memory(
            Command::new(&flagship)
                .current_dir(&env.root)
                .args([
                    "--config",
                    "fixtures/demo/flagship.toml",
                    "watch",
                    "--replay",
                ])
                .arg(r.replay)
                .arg("--speed")
                .arg(r.speed.to_string())
                .arg("--model")
                .arg(&model)
                .args([
                    "--max-posts",
                    &r.posts.to_string(),
                    "--explain",
                    "3",
                    "--out",
                ])
                .arg(&file),
            &format!("flagship watch ({})", r.label),
        );
        if let Some(mut s) = stress {
            s.kill().ok();
            s.wait().ok();
        }
        let (t, memory) = t?;
        println!("watch ({}): {t}", r.label);
        let get = |k: &str| field(&t, k).ok_or_else(|| format!("no `{k}` in {t}"));
        let step = |k: &str| -> Result<String, String> {
            let s = budget_step(&t, k)?;
            Ok(format!("{k} {:.1} / {:.1}", s.p50_ms, s.p99_ms))
        };
        let (flagged, explained) = (get("flagged")?, get("explained")?);
        m.rows.push(
            row(
                format!(
                    "`watch` latency, {}, {} posts, why on",
                    r.label,
                    thousands(r.posts)
                ),
                format!(
                    "p50 {:.0} ms, **p99 {:.0} ms** (max {:.0}) at {:.0} posts/s achieved; words for {:.0} of {:.0} flagged, {:.1} s after the write at p99 (max {:.1} s); {:.0} of {:.0} posts scored in a hurry",
                    get("latency_p50_ms")?,
                    get("latency_p99_ms")?,
                    get("latency_max_ms")?,
                    get("posts_per_second")?,
                    explained,
                    flagged,
                    get("explain_delay_p99_ms")? / 1e3,
                    get("explain_delay_max_ms")? / 1e3,
                    get("hurried")?,
                    get("kept")?,
                ),
                "—",
                "—".into(),
                if r.busy {
                    "p99 ≤ 250 ms; every flagged post explained within 5 s"
                } else {
                    "p99 ≤ 250 ms; words within 30 s or counted"
                },
            )
            .before(r.before),
        );
        let steps: Vec<String> = ["wait", "parse", "prepare", "tokenise", "model", "write"]
            .iter()
            .map(|k| step(k))
            .collect::<Result<_, _>>()?;
        m.details.push(format!(
            "`watch`, {}: {}; budget p50 / p99 ms — {} (wait: per post, queued behind the batch being scored or one slice of an explanation; prepare: combine + filter + textproc, plans built once; the rest per micro-batch, {} batches); off the path, {} per post: {} flagged posts explained ({} with the write, from the scoring pass, {} of them refined by occlusion while idle; {} pooled, having waited 2 s without words), {} left without words (older than 30 s or beyond the backlog), words {:.0} / {:.0} / {:.0} ms after the write (p50 / p99 / max)",
            r.label,
            memory.summary(),
            steps.join(", "),
            get("batches")?,
            step("explain")?,
            explained,
            get("explained_scored")?,
            get("refined")?,
            get("explained_pooled")?,
            get("unexplained")?,
            get("explain_delay_p50_ms")?,
            get("explain_delay_p99_ms")?,
            get("explain_delay_max_ms")?,
        ));
    }
    let desk = desk_burst(f, env, &flagship, &bench, &model, &out);
    std::fs::remove_dir_all(&out).ok();
    let desk = desk?;
    m.rows.extend(desk.rows);
    m.details.extend(desk.details);
    for (profile, extra) in [
        ("the demo's", &[][..]),
        ("the JWST seed's", &["--seed"][..]),
    ] {
        let p = last_line(
            Command::new(&bench)
                .current_dir(&env.root)
                .args(["live", "prepare"])
                .args(extra),
            "flagship-bench live prepare",
        )?;
        println!("prepare ({profile} profile): {p}");
        let get = |k: &str| field(&p, k).ok_or_else(|| format!("no `{k}` in {p}"));
        m.rows.push(row(
            format!(
                "the loop's micro-batch plans (combine + filter + textproc), {} profile, {:.0} batches of {:.0} demo posts",
                profile,
                get("batches")?,
                get("batch")?
            ),
            format!(
                "built once: {:.2} ms a batch (p50 {:.2}); built in {:.0} ms at the start",
                get("once_mean_ms")?,
                get("once_p50_ms")?,
                get("build_ms")?
            ),
            &format!(
                "planned on every batch (before): {:.2} ms (p50 {:.2})",
                get("planned_mean_ms")?,
                get("planned_p50_ms")?
            ),
            format!("**{:.2}×**", get("speedup")?),
            "no planning on the hot path",
        ));
    }
    Ok(m)
}

/// One step of a live run's budget (`"budget":{"model":{"p50_ms":…,"p99_ms":…,"total_s":…}}`
/// in its JSON totals line).
struct BudgetStep {
    p50_ms: f64,
    p99_ms: f64,
    total_s: f64,
}

fn budget_step(totals: &str, step: &str) -> Result<BudgetStep, String> {
    let missing = || format!("no budget step `{step}` in {totals}");
    let at = totals.find(&format!("\"{step}\":{{")).ok_or_else(missing)?;
    let end = totals[at..].find('}').ok_or_else(missing)?;
    let part = &totals[at..at + end];
    let get = |k: &str| field(part, k).ok_or_else(missing);
    Ok(BudgetStep {
        p50_ms: get("p50_ms")?,
        p99_ms: get("p99_ms")?,
        total_s: get("total_s")?,
    })
}

/// The desk's own live loop on the launch burst for at most [`DESK_BURST_MINUTES`]: what
/// `watch` does, and every flagged post embedded by the second, frozen encoder for question
/// groups (off the latency path, within 30 s or counted), into a desk database of its own
/// (the demo's config copied beside it, so its `storage.desk` lands there).
fn desk_burst(
    f: &Bench,
    env: &setup::Env,
    flagship: &std::path::Path,
    bench: &std::path::Path,
    model: &std::path::Path,
    out: &std::path::Path,
) -> Result<Measured, String> {
    let minutes = f.minutes.min(DESK_BURST_MINUTES);
    let calm = minutes * DESK_CALM_PER_BURST;
    let config = out.join("desk/demo/flagship.toml");
    std::fs::create_dir_all(config.parent().expect("a folder")).map_err(|e| e.to_string())?;
    std::fs::copy(env.root.join("fixtures/demo/flagship.toml"), &config)
        .map_err(|e| format!("copying the demo's config: {e}"))?;
    let stream = out.join("desk-burst.jsonl.gz");
    let made = last_line(
        Command::new(bench)
            .current_dir(&env.root)
            .args(["live", "burst-stream", "--speed", "43200", "--seconds"])
            .arg((minutes * 60).to_string())
            .arg("--calm-seconds")
            .arg((calm * 60).to_string())
            .args(["--calm-speed", "4320", "--out"])
            .arg(&stream),
        "flagship-bench live burst-stream (the desk's)",
    )?;
    let made_field = |k: &str| field(&made, k).ok_or_else(|| format!("no `{k}` in {made}"));
    let (replay_seconds, burst_s, calm_s) = (
        made_field("replay_seconds")?,
        made_field("burst_seconds")?,
        made_field("calm_seconds")?,
    );
    // The loop ends at the replay's end once no vector waits (the desk serves on); the
    // duration stops it at the latest when the last post's vector bound (10 minutes,
    // `EMBED_WITHIN`) and a minute more have passed, so the row shows the bound, not the stop.
    let (t, memory) = last_line_with_memory(
        Command::new(flagship)
            .current_dir(&env.root)
            .arg("--config")
            .arg(&config)
            .args(["desk", "--replay"])
            .arg(&stream)
            .args(["--speed", "43200", "--bind", "127.0.0.1:0", "--duration"])
            .arg(format!("{}s", replay_seconds.ceil() as u64 + 600 + 60))
            .arg("--model")
            .arg(model),
        "flagship desk (launch burst)",
    )?;
    println!("desk (launch burst): {t}");
    let get = |k: &str| field(&t, k).ok_or_else(|| format!("no `{k}` in {t}"));
    let (flagged, embedded, unembedded) = (get("flagged")?, get("embedded")?, get("unembedded")?);
    // Every flagged post got its vector or was counted without one; none when the base
    // encoder did not load (the desk then runs without groups, and this row would mean nothing).
    if embedded + unembedded != flagged || flagged < 1.0 {
        return Err(format!(
            "the desk's burst: {embedded} flagged posts embedded and {unembedded} counted without, of {flagged} flagged — were question groups on (the base encoder loaded)?"
        ));
    }
    let mut m = Measured::default();
    m.rows.push(row(
        format!(
            "the desk's live loop, launch burst: 10× the demo's rate for {burst_s:.0} s, then {calm_s:.0} s at the demo's rate; question groups on (every flagged post embedded by the frozen base encoder, off the latency path), why on"
        ),
        format!(
            "arrival → stored p50 {:.0} ms, **p99 {:.0} ms**; words for {:.0} of {:.0} flagged; **embedded {:.0} of {:.0}**, {:.0} / {:.0} / {:.0} s after the write (p50 / p99 / max), {:.0} left single cards, counted; {:.0} of {:.0} posts scored in a hurry",
            get("latency_p50_ms")?,
            get("latency_p99_ms")?,
            get("explained")?,
            flagged,
            embedded,
            flagged,
            get("embed_delay_p50_ms")? / 1e3,
            get("embed_delay_p99_ms")? / 1e3,
            get("embed_delay_max_ms")? / 1e3,
            unembedded,
            get("hurried")?,
            get("kept")?,
        ),
        "—",
        "—".into(),
        "p99 ≤ 250 ms; words within 30 s (`EXPLAIN_WITHIN`), vectors within 10 min (`EMBED_WITHIN`), or counted",
    ));
    let steps: Vec<String> = [
        "wait", "parse", "prepare", "tokenise", "model", "write", "explain", "embed",
    ]
    .iter()
    .map(|k| {
        let s = budget_step(&t, k)?;
        Ok(format!(
            "{k} {:.1} / {:.1} ({:.0} s in all)",
            s.p50_ms, s.p99_ms, s.total_s
        ))
    })
    .collect::<Result<_, String>>()?;
    m.details.push(format!(
        "the desk's live loop, launch burst ({burst_s:.0} s, then {calm_s:.0} s calm; SQLite and question groups): {}; {:.0} posts seen in {:.0} s, {:.0} micro-batches; budget p50 / p99 ms — {} (write: the desk's database, a transaction a micro-batch; embed: a chunk of vectors)",
        memory.summary(),
        get("seen")?,
        get("seconds")?,
        get("batches")?,
        steps.join(", "),
    ));
    Ok(m)
}

/// The desk's burst lasts at most this long (`bench all` runs `watch`'s for `--minutes`)…
const DESK_BURST_MINUTES: usize = 2;
/// …then its replay goes on at the demo's rate this many times as long: the time its loop has
/// to embed the burst's flagged posts for question groups (about 4.5 ms of a core each: a
/// minute of the burst flags some 13,000, about a minute of the loop's time).
const DESK_CALM_PER_BURST: usize = 2;

fn desk(f: &Bench, env: &setup::Env) -> Result<Measured, String> {
    let (bench, _) = release_bench(env)?;
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
    let mut m = Measured::default();
    m.rows.push(row(
        format!(
            "`bench desk`: {} posts in the desk",
            thousands(get("posts")? as usize)
        ),
        format!(
            "whole page over HTTP {:.1} ms (queue), {:.1} ms (uncertain tab)",
            get("page_queue_ms")?,
            get("page_uncertain_ms")?
        ),
        "—",
        "—".into(),
        "< 200 ms",
    ));
    m.details.push(format!(
        "desk store at {} posts (loaded in {:.1} s): queue {:.1} ms (newest) / {:.1} ms (probability), uncertain {:.1} ms, today {:.1} ms, decide {:.1} ms",
        thousands(get("posts")? as usize),
        get("load_seconds")?,
        get("queue_newest_ms")?,
        get("queue_probability_ms")?,
        get("uncertain_ms")?,
        get("today_ms")?,
        get("decide_ms")?
    ));
    Ok(m)
}

/// `bench groups`: the desk's question groups — pair precision / recall at the threshold,
/// the embedding's cost per post, posts vs cards on the demo replay and two bursts.
fn groups(env: &setup::Env) -> Result<Measured, String> {
    let (bench, _) = release_bench(env)?;
    let model = demo_model(env)?;
    let out = last_line(
        Command::new(&bench)
            .current_dir(&env.root)
            .args(["groups", "--model"])
            .arg(&model),
        "question groups",
    )?;
    let get = |k: &str| field(&out, k).ok_or_else(|| format!("no `{k}` in {out}"));
    let mut m = Measured::default();
    m.rows.push(row(
        format!(
            "`bench groups`: pairs at cosine ≥ {:.2} ({} labelled pairs of real posts)",
            get("similarity")?,
            get("pairs")?
        ),
        format!(
            "precision {:.3}, recall {:.3}",
            get("pair_precision")?,
            get("pair_recall")?
        ),
        "—",
        "—".into(),
        "—",
    ));
    m.rows.push(row(
        "`bench groups`: the sentence embedding, per flagged post (one at a time, as the loop embeds, off the latency path)".into(),
        format!("{:.2} ms", get("embed_ms_per_post_one")?),
        "the classifier, per post (batches of 32)",
        format!("{:.2} ms", get("classify_ms_per_post_batch32")?),
        "—",
    ));
    for (name, what) in [
        ("demo", "the demo replay"),
        ("jwst", "the real JWST posts as one burst"),
        ("burst", "the desk test's written burst"),
    ] {
        let n = |k: &str| get(&format!("{name}_{k}")).map(|v| v as usize);
        m.rows.push(row(
            format!("`bench groups`: {what}, keys to clear the queue"),
            format!(
                "{} cards for {} flagged posts ({} groups of 2+, the largest {})",
                thousands(n("cards")?),
                thousands(n("flagged")?),
                n("groups")?,
                n("largest")?
            ),
            "one key a post",
            format!(
                "{:.1} % fewer keys",
                100.0 * (1.0 - n("cards")? as f64 / n("flagged")?.max(1) as f64)
            ),
            "—",
        ));
    }
    Ok(m)
}

/// `bench alerts`: the desk's burst alarm on the demo replay (a paused clock) — false alarms
/// a simulated day, and detection and delay of bursts of 15, 30 and 60 posts injected at 24
/// times.
fn alerts(env: &setup::Env) -> Result<Measured, String> {
    let (bench, _) = release_bench(env)?;
    let out = last_line(
        Command::new(&bench).current_dir(&env.root).arg("alerts"),
        "burst alerts",
    )?;
    println!("flagship: {out}");
    alerts_measured(&out)
}

/// `bench team`: a scripted team of three on shifts answering a demo day, with a burst
/// injected and without: the desk's first-response figures, and when the alert fired.
fn team(env: &setup::Env) -> Result<Measured, String> {
    let (bench, _) = release_bench(env)?;
    let out = last_line(
        Command::new(&bench).current_dir(&env.root).arg("team"),
        "a scripted team",
    )?;
    println!("flagship: {out}");
    let get = |k: &str| field(&out, k).map_or("—".to_owned(), |v| format!("{v:.0}"));
    let mut m = Measured::default();
    for (what, key) in [("steady day", "steady"), ("with a 60-post burst", "burst")] {
        m.rows.push(row(
            format!("`bench team`: first response, three people on shifts, {what}"),
            format!(
                "p50 {} min · p90 {} min · {} overdue at midnight",
                get(&format!("{key}_p50_min")),
                get(&format!("{key}_p90_min")),
                get(&format!("{key}_overdue"))
            ),
            "—",
            "—".into(),
            "—",
        ));
    }
    m.details.push(format!(
        "`bench team`: the burst alert fired {} min after the burst began",
        get("alert_delay_min")
    ));
    Ok(m)
}

/// The table rows and details of one `flagship-bench alerts` line.
fn alerts_measured(out: &str) -> Result<Measured, String> {
    let get = |k: &str| field(out, k).ok_or_else(|| format!("no `{k}` in {out}"));
    // A delay is null when nothing was detected.
    let minutes = |k: &str| field(out, k).map_or("—".to_owned(), |v| format!("{v:.0}"));
    let mut m = Measured::default();
    m.rows.push(row(
        format!(
            "`bench alerts`: steady demo replay, {} flagged posts over {:.0} days, checked every minute",
            thousands(get("flagged")? as usize),
            get("days")?
        ),
        format!(
            "{} false alarms, **{:.2} a day**",
            get("false_alarms")?,
            get("false_alarms_per_day")?
        ),
        "—",
        "—".into(),
        "≤ 0.5 a day",
    ));
    for size in ["15", "30", "60"] {
        let k = |f: &str| format!("burst{size}_{f}");
        m.rows.push(row(
            format!(
                "`bench alerts`: {size} extra posts over {} minutes, injected {} times",
                get("burst_minutes")?,
                get(&k("injected"))?
            ),
            format!(
                "{} detected ({} within 10 min); delay p50 / p90 / max {} / {} / {} min",
                get(&k("detected"))?,
                get(&k("detected_10min"))?,
                minutes(&k("delay_p50_min")),
                minutes(&k("delay_p90_min")),
                minutes(&k("delay_max_min"))
            ),
            "—",
            "—".into(),
            if size == "30" {
                "≥ 90 % within 10 min"
            } else {
                "—"
            },
        ));
    }
    m.details.push(format!(
        "burst rule: window {} min, baseline {} min, p < {}, at least {} posts, expected at least {}, cooldown {} min; flagged = the demo's labels that need support (the model's flags approximate them); {} injection(s) overlap a steady false alarm",
        get("window_min")?,
        get("baseline_min")?,
        get("p_value")?,
        get("min_count")?,
        get("floor")?,
        get("cooldown_min")?,
        get("overlapping_false_alarms")?
    ));
    Ok(m)
}

/// The load average over the last minute (`/proc/loadavg`), or NaN.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// `bench desk-load`: `flagship-bench desk-load` for `--minutes`, then docs/desk-load.md.
fn desk_load(f: &Bench, env: &setup::Env) -> Result<Measured, String> {
    let (bench, _) = release_bench(env)?;
    let load_before = load_average();
    let out = last_line(
        Command::new(&bench).current_dir(&env.root).args([
            "desk-load",
            "--seconds",
            &(f.minutes * 60).to_string(),
            "--rate",
            &f.rate.to_string(),
            "--pages",
            &f.pages.to_string(),
            "--users",
            &f.users.to_string(),
            "--decisions-per-second",
            &f.decisions_per_second.to_string(),
        ]),
        "the desk under load",
    )?;
    let load_after = load_average();
    println!("flagship: {out}");
    let m = desk_load_measured(&out)?;
    let path = env.root.join("docs/desk-load.md");
    let doc = desk_load_document(f, &out, &m, (load_before, load_after))?;
    let tmp = path.with_extension("md.tmp");
    std::fs::write(&tmp, &doc)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let mut m = m;
    m.details
        .push(format!("bench desk-load: wrote {}", path.display()));
    Ok(m)
}

/// The table rows and details of one `flagship-bench desk-load` line.
fn desk_load_measured(out: &str) -> Result<Measured, String> {
    let get = |k: &str| field(out, k).ok_or_else(|| format!("no `{k}` in {out}"));
    let n = |k: &str| get(k).map(|v| thousands(v as usize));
    let minutes = get("seconds")? / 60.0;
    let mut m = Measured::default();
    m.rows.push(row(
        format!(
            "`bench desk-load`: decisions at {}/s over {} people, {minutes:.0} min",
            get("decisions_per_second")?,
            get("users")?
        ),
        format!(
            "{} sent, {} stored, **{} lost**; p50 {:.1} ms, **p99 {:.1} ms** (max {:.0})",
            n("decisions_sent")?,
            n("decisions_stored")?,
            n("decisions_lost")?,
            get("decision_p50_ms")?,
            get("decision_p99_ms")?,
            get("decision_max_ms")?
        ),
        "—",
        "—".into(),
        "0 lost",
    ));
    m.rows.push(row(
        "`bench desk-load`: the server's RSS, every 10 s".into(),
        format!(
            "{:.0} → {:.0} MiB (peak {:.0}); **{:+.0} KiB/min** after {:.0} s (least squares)",
            get("rss_first_mib")?,
            get("rss_last_mib")?,
            get("rss_peak_mib")?,
            get("rss_slope_kib_per_min")?,
            get("rss_warmup_s")?
        ),
        "—",
        "—".into(),
        "flat after warm-up",
    ));
    m.rows.push(row(
        format!(
            "`bench desk-load`: {} open pages, replay at {} posts/s",
            get("pages")?,
            get("rate")?
        ),
        format!(
            "{} streams opened, {} refused, {} reopened, {} reloads; {} posts in {} micro-batches (write p99 {:.1} ms), {} post events per page",
            n("streams_opened")?,
            n("streams_refused")?,
            n("streams_reopened")?,
            n("reload_events")?,
            n("posts_added")?,
            n("batches")?,
            get("write_p99_ms")?,
            thousands((get("post_events")? / get("pages")?.max(1.0)) as usize)
        ),
        "—",
        "—".into(),
        "every page keeps up (0 refused, 0 reloads)",
    ));
    m.details.push(format!(
        "desk-load: decisions {} answered 200, {} failed, {} slots skipped (no post told yet, or 256 in flight); pages opened in p50 {:.1} / p99 {:.1} ms; logins ≤ {:.0} ms; events to all pages: {} post, {} decided, {} today, {} why ({:.0} MiB); replay write p50 {:.1} / p99 {:.1} / max {:.1} ms",
        n("decisions_ok")?,
        n("decisions_failed")?,
        n("decisions_skipped")?,
        get("page_p50_ms")?,
        get("page_p99_ms")?,
        get("login_max_ms")?,
        n("post_events")?,
        n("decided_events")?,
        n("today_events")?,
        n("why_events")?,
        get("stream_mib")?,
        get("write_p50_ms")?,
        get("write_p99_ms")?,
        get("write_max_ms")?
    ));
    m.details.push(format!(
        "desk-load: the server's RSS (s:KiB): {}",
        text_field(out, "rss_samples").unwrap_or_default()
    ));
    Ok(m)
}

/// docs/desk-load.md: the run's settings, machine, table, RSS samples and how measured.
fn desk_load_document(
    f: &Bench,
    out: &str,
    m: &Measured,
    (load_before, load_after): (f64, f64),
) -> Result<String, String> {
    let date = output_of(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]));
    let mut d = format!(
        "# The desk under load\n\n\
         Written by `cargo xtask bench desk-load --minutes {} --rate {} --pages {} --users {} --decisions-per-second {}` on {date}. Do not edit by hand: run it again.\n\n\
         - **Machine:** {}; load average (1 min) {load_before:.2} before, {load_after:.2} after: the clients share the machine with the server, and anything else running shows in the figures\n\n",
        f.minutes,
        f.rate,
        f.pages,
        f.users,
        f.decisions_per_second,
        machine()
    );
    d.push_str(&table(&m.rows));
    d.push_str("\n## Details\n\n");
    for x in &m.details {
        d.push_str(&format!("- {x}\n"));
    }
    d.push_str("\n## The server's RSS\n\n| s | MiB |\n|---|---|\n");
    for sample in text_field(out, "rss_samples")
        .unwrap_or_default()
        .split_whitespace()
    {
        if let Some((t, kib)) = sample.split_once(':') {
            let mib = kib.parse::<f64>().map_err(|e| e.to_string())? / 1024.0;
            d.push_str(&format!("| {t} | {mib:.1} |\n"));
        }
    }
    d.push_str(LOAD_NOTES);
    Ok(d)
}

/// How `bench desk-load` measures (fixed text under its table).
const LOAD_NOTES: &str = "
## How it is measured

`flagship-bench desk-load` (crates/bench/src/desk_load.rs), on loopback, bounded:

- **The server** is a child process (`flagship-bench desk-serve`): the desk as `flagship desk`
  serves it (`flagship_desk::server::serve`: hyper with its timeouts and caps, the default
  `desk.max_connections` 512, `desk.max_streams` 256, `desk.max_streams_per_session` 16), with
  a users file (argon2 logins, CSRF, sessions in the desk's SQLite). Posts come in through
  the live loop's sink (`LiveSink`: `Desk::add` committed, then pushed to every open page;
  then `explained`), as when `flagship desk` runs attached to the live loop: the demo stream
  (`fixtures/demo/stream.jsonl.gz`, 9,600 posts, looped with fresh ids) at `--rate` posts/s in
  micro-batches every 100 ms. **No model scores them**: each gets a hashed probability in
  [0.5, 1) over a threshold of 0.4, so every post is flagged, lands in the queue and is sent
  to every open page — heavier on the event streams than a real mix, of which most posts
  are not flagged — and three of its words as its \"why\". The RSS is this process's alone
  (`/proc/PID/status` `VmRSS`, every 10 s; peak `VmHWM`).
- **The clients** (the bench process): `--users` people log in through the login form, open
  `--pages` pages between them (`GET /`, then `GET /events`, drained; one session per person,
  10 pages each by default, under the per-session cap), and send `--decisions-per-second`
  decisions (`POST /api/decide` with the session's CSRF token) on a fixed schedule, each on
  a post the first page was told about over its event stream, the people in turn; each is
  timed from connecting to the full answer (a new connection each, `Connection: close`).
  A stream that ends early is opened again after a second (counted: reopened).
- **No decision lost**: after the server stopped, each decision sent is looked up in the
  database (the post's history holds it, by that person): lost = sent − stored.
- **RSS slope**: a least-squares line through the samples after the warm-up (2 minutes, or
  half a shorter run), in KiB a minute.
";

fn parsers(env: &setup::Env) -> Result<Measured, String> {
    let (bench, _) = release_bench(env)?;
    let out = last_line(
        Command::new(&bench)
            .current_dir(&env.root)
            .args(["ingest", "parsers"]),
        "the platform parsers",
    )?;
    println!("flagship: {out}");
    let get = |k: String| field(&out, &k).ok_or_else(|| format!("no `{k}` in {out}"));
    let x = get("x_record_per_second".into())?;
    let mut m = Measured::default();
    for p in ["x", "bluesky", "mastodon"] {
        let record = get(format!("{p}_record_per_second"))?;
        m.rows.push(row(
            format!("`bench parsers`: {p}"),
            format!(
                "ingest's check {} posts/s; to the post record {} posts/s",
                thousands(get(format!("{p}_classify_per_second"))? as usize),
                thousands(record as usize)
            ),
            "X's parser",
            format!("{:.2}× X's", record / x.max(1e-9)),
            "—",
        ));
    }
    Ok(m)
}
/// `bench textproc`: flagship's DataFusion plan vs PySpark `local[*]` on one corpus, one
/// after the other; then flagship alone on `scale` times the corpus for its peak memory.
fn textproc(f: &Bench, env: &setup::Env) -> Result<Measured, String> {
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
    let mut m = Measured::default();
    m.rows.push(
        row(
            format!(
                "`bench textproc` ({} tweets, {:.0} hour files)",
                thousands(n),
                get(&ours, "hours")?
            ),
            format!("{a:.1} s, peak RSS {:.0} MiB", get(&ours, "peak_rss_mib")?),
            &format!(
                "PySpark local[*] {b:.1} s, peak RSS {:.0} MiB",
                get(&theirs, "peak_rss_mib")?
            ),
            format!("**{:.1}×**", b / a),
            "≥ 5× PySpark",
        )
        .before("12.4 s vs 38.1 s: 3.1×; 443 MiB"),
    );
    std::fs::remove_dir_all(work.join("out-pyspark")).ok();
    if f.scale > 1 {
        std::fs::remove_dir_all(&dir).ok();
        let big = corpus(n * f.scale)?;
        let at_scale = ours_on(&big)?;
        println!("flagship: {at_scale}");
        m.rows.push(
            row(
                format!(
                    "`bench textproc` memory: {} tweets, flagship alone",
                    thousands(n * f.scale)
                ),
                format!(
                    "{:.1} s, peak RSS {:.0} MiB (vs {:.0} MiB at {})",
                    get(&at_scale, "seconds")?,
                    get(&at_scale, "peak_rss_mib")?,
                    get(&ours, "peak_rss_mib")?,
                    thousands(n)
                ),
                "—",
                "—".into(),
                "memory flat as the input grows",
            )
            .before("443 → 503 MiB"),
        );
    }
    std::fs::remove_dir_all(&work).ok();
    Ok(m)
}

/// `bench ingest`: replay N/4 then N stream messages into the local sink (same binary, one
/// after the other): tweets/s and peak RSS, to show the rate and that memory stays flat.
fn ingest(f: &Bench, env: &setup::Env) -> Result<Measured, String> {
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
    let mut m = Measured::default();
    for (n, out) in &lines {
        m.rows.push(
            row(
                format!(
                    "`bench ingest`: {} stream messages replayed into the local Firehose layout",
                    thousands(*n)
                ),
                format!(
                    "{} tweets/s, peak RSS {:.0} MiB",
                    thousands(get(out, "tweets_per_second")? as usize),
                    get(out, "peak_rss_mib")?
                ),
                "—",
                "—".into(),
                "none: a live source delivers < 1 % of this",
            )
            .before(if *n == f.tweets {
                "62,278 tweets/s"
            } else {
                "—"
            }),
        );
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::{
        Command, Memory, Row, budget_step, field, last_line_with_memory, status_mib, table,
        text_field, thousands,
    };

    /// A step of a live run's budget is read from its own object, whichever comes last.
    #[test]
    fn a_budget_step_is_read_from_its_own_object() {
        let t = r#"{"flagged":3,"budget":{"wait":{"p50_ms":1.5,"p99_ms":9.0,"total_s":2.0},"embed":{"p50_ms":24.2,"p99_ms":45.8,"total_s":5.9},"write":{"p50_ms":0.0,"p99_ms":0.0,"total_s":-0.0}},"seconds":180.0}"#;
        let e = budget_step(t, "embed").unwrap();
        assert_eq!((e.p50_ms, e.p99_ms, e.total_s), (24.2, 45.8, 5.9));
        let w = budget_step(t, "wait").unwrap();
        assert_eq!((w.p50_ms, w.p99_ms, w.total_s), (1.5, 9.0, 2.0));
        assert_eq!(budget_step(t, "write").unwrap().total_s, 0.0);
        let e = budget_step(t, "model").err().unwrap();
        assert!(e.contains("no budget step `model`"), "{e}");
    }

    #[test]
    fn memory_is_read_from_proc_status() {
        let status = "Name:\tflagship\nVmHWM:\t  524288 kB\nVmRSS:\t  409600 kB\n";
        assert_eq!(status_mib(status, "VmRSS:"), Some(400.0));
        assert_eq!(status_mib(status, "VmHWM:"), Some(512.0));
        assert_eq!(status_mib(status, "VmSwap:"), None);
        let m = Memory {
            samples: (0..8).map(|i| (2.0 * i as f64, 100.0 + i as f64)).collect(),
            peak_mib: 120.0,
        };
        assert_eq!(
            m.summary(),
            "RSS 102 MiB at 4 s, 107 MiB at 14 s (the end), peak 120 MiB"
        );
        assert!(Memory::default().summary().contains("not read"));
        // A real process: this test's own.
        let (line, memory) = last_line_with_memory(
            Command::new("sh").args(["-c", "sleep 2.5; echo '{\"ok\":1}'"]),
            "sh",
        )
        .unwrap();
        assert_eq!(line, "{\"ok\":1}");
        assert!(
            !memory.samples.is_empty() && memory.peak_mib > 0.0,
            "{memory:?}"
        );
    }

    #[test]
    fn fields_read_the_last_key() {
        let j = r#"{"examples": 3, "input_order": {"examples_per_second": 1.5}, "examples_per_second": 2.25e1, "precision":"Bf16"}"#;
        assert_eq!(field(j, "examples_per_second"), Some(22.5));
        assert_eq!(field("{}", "examples_per_second"), None);
        assert_eq!(text_field(j, "precision").as_deref(), Some("Bf16"));
        assert_eq!(text_field(j, "examples"), None);
    }

    #[test]
    fn a_desk_load_line_makes_its_rows() {
        let out = r#"{"seconds":60,"rate":35.0,"pages":200,"users":20,"decisions_per_second":20.0,"posts_added":2100,"feed_seconds":60.0,"batches":600,"write_p50_ms":1.0,"write_p99_ms":5.0,"write_max_ms":9.0,"login_max_ms":80.0,"page_p50_ms":3.0,"page_p99_ms":9.0,"streams_opened":200,"streams_refused":0,"streams_reopened":0,"stream_mib":50.0,"post_events":400000,"decided_events":200000,"today_events":20000,"why_events":400000,"reload_events":0,"decisions_skipped":2,"decisions_sent":1198,"decisions_ok":1198,"decisions_failed":0,"decisions_stored":1198,"decisions_lost":0,"decision_p50_ms":2.5,"decision_p99_ms":12.25,"decision_max_ms":40.0,"rss_samples":"0:51200 10:52224","rss_first_mib":50.0,"rss_last_mib":51.0,"rss_peak_mib":60.0,"rss_warmup_s":30.0,"rss_slope_kib_per_min":12.0}"#;
        let m = super::desk_load_measured(out).unwrap();
        let t = table(&m.rows);
        assert!(
            t.contains("1,198 sent, 1,198 stored, **0 lost**; p50 2.5 ms, **p99 12.2 ms**"),
            "{t}"
        );
        assert!(
            t.contains("50 → 51 MiB (peak 60); **+12 KiB/min** after 30 s"),
            "{t}"
        );
        assert!(
            m.details[1].ends_with("0:51200 10:52224"),
            "{:?}",
            m.details
        );
    }

    #[test]
    fn an_alerts_line_makes_its_rows() {
        let out = r#"{"baseline_min":360,"burst15_delay_max_min":9.0,"burst15_delay_p50_min":6.0,"burst15_delay_p90_min":9.0,"burst15_detected":21,"burst15_detected_10min":21,"burst15_injected":24,"burst30_delay_max_min":6.0,"burst30_delay_p50_min":3.0,"burst30_delay_p90_min":6.0,"burst30_detected":24,"burst30_detected_10min":24,"burst30_injected":24,"burst60_delay_max_min":null,"burst60_delay_p50_min":null,"burst60_delay_p90_min":null,"burst60_detected":0,"burst60_detected_10min":0,"burst60_injected":24,"burst_minutes":15,"check_every_min":1,"cooldown_min":60,"days":11.996,"false_alarms":1,"false_alarms_per_day":0.0834,"flagged":3840,"floor":0.5,"min_count":6,"overlapping_false_alarms":1,"p_value":0.0001,"posts":9600,"window_min":10}"#;
        let m = super::alerts_measured(out).unwrap();
        let t = table(&m.rows);
        assert!(t.contains("3,840 flagged posts over 12 days"), "{t}");
        assert!(t.contains("1 false alarms, **0.08 a day**"), "{t}");
        assert!(
            t.contains("24 detected (24 within 10 min); delay p50 / p90 / max 3 / 6 / 6 min"),
            "{t}"
        );
        assert!(
            t.contains("0 detected (0 within 10 min); delay p50 / p90 / max — / — / — min"),
            "{t}"
        );
        assert!(m.details[0].contains("p < 0.0001"), "{:?}", m.details);
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(4_000_000), "4,000,000");
    }

    #[test]
    fn the_table_escapes_its_cells() {
        let t = table(&[Row {
            benchmark: "a | b".into(),
            flagship: "1".into(),
            peer: "2".into(),
            ratio: "0.5×".into(),
            target: "—".into(),
            before: "—".into(),
        }]);
        assert!(t.contains("| a \\| b | 1 | 2 | 0.5× |"), "{t}");
        assert_eq!(t.lines().count(), 3);
    }
}
