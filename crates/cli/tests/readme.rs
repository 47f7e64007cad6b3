//! Every command the README shows works, run against the built `flagship` binary.
//!
//! **Which lines are commands.** Every line of a fenced block marked `sh` (or `bash`) in
//! README.md, a line ending in `\` joined with the next, a `# comment` dropped (a line that
//! is only a comment is skipped). Each must start with `cargo xtask` or `flagship`; any other
//! line fails the test, so the README shows no command this test does not run. The commands
//! tables are synopses, not commands (`[--flag X]`, `FILE…`): for each row whose first cell
//! starts with `` `cargo xtask `` or `` `flagship ``, the subcommands it names answer `--help`
//! (the leading lowercase words after `flagship`; each `|`-separated name after `cargo xtask`).
//!
//! **How a command runs.** `cargo xtask NAME ARGS` is `flagship NAME ARGS` after set-up, and
//! `cargo xtask flagship ARGS` is `flagship ARGS` (xtask/src/forward.rs); xtask runs it from the
//! repository root. So each runs as the binary cargo built for this test
//! (`CARGO_BIN_EXE_flagship`) with the README's arguments, from a temporary copy of the tree a
//! newcomer has after `cargo xtask pipeline`: `fixtures/` (its config files copied, its data
//! linked) and `data/` with the demo's model — nothing in the repository is written.
//! - Not run: `cargo xtask pipeline` with no arguments, the set-up step every other command
//!   follows (20 minutes on 2 cores; `tests/pipeline.rs` tests the pipeline). In its place a
//!   linear model (seconds) is trained where the demo's lands, `data/demo/models/need-support`.
//!   Nor xtask's own commands (`setup`, `test`, `bench`): cargo builds and benchmarks, tested
//!   in xtask.
//! - Run with `--help` appended (its flags still parsed): what streams live or serves until
//!   stopped — `watch` and `ingest run` without `--replay`, `ingest replay-spill`, `desk`
//!   (except `desk export`), `aws …`.
//! - Run for real: everything else. A `watch` or `ingest run` replay without a bound of its
//!   own gets `--duration 10s` (the recordings end sooner). A `watch` must end with posts kept
//!   by the profile and flagged, and rows in its `--out` file.
//!
//! A command that fails fails the test, naming the README line. A path under `fixtures/`,
//! `docs/`, `scripts/` or `deploy/` that a command names must exist in the repository.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use flagship_testkit::workspace_root;

mod common;

/// xtask's own commands (`Kind::Native` in xtask/src/main.rs): not forwarded to `flagship`.
const XTASK_NATIVE: [&str; 3] = ["setup", "test", "bench"];

/// Where a command's inputs in the repository live; a path under them must exist.
const REPO_DIRS: [&str; 4] = ["fixtures/", "docs/", "scripts/", "deploy/"];

/// The bound a replay without one gets.
const BOUND: &str = "10s";

/// Where `cargo xtask pipeline` leaves the demo's model (`storage.models` of
/// fixtures/demo/flagship.toml + `need-support`).
const DEMO_MODEL: &str = "data/demo/models/need-support";

fn readme() -> String {
    std::fs::read_to_string(workspace_root().join("README.md")).expect("README.md")
}

/// The command lines of the README's `sh` / `bash` blocks.
fn sh_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for line in text.lines() {
        let t = line.trim();
        if let Some(info) = t.strip_prefix("```") {
            in_sh = !in_sh && matches!(info.trim(), "sh" | "bash");
            continue;
        }
        if !in_sh {
            continue;
        }
        let code = match t.find(" #") {
            Some(i) => t[..i].trim_end(),
            None if t.starts_with('#') => "",
            None => t,
        };
        if let Some(head) = code.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(code);
        let whole = std::mem::take(&mut pending).trim().to_owned();
        if !whole.is_empty() {
            out.push(whole);
        }
    }
    out
}

/// A command line's words (single and double quotes group; no other shell syntax).
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote = None;
    let mut any = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            (None, c) => cur.push(c),
        }
    }
    assert!(quote.is_none(), "unclosed quote in `{line}`");
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// `flagship`'s arguments for a README command; `None` for xtask's own commands.
fn flagship_args(line: &str) -> Option<Vec<String>> {
    let w = words(line);
    match w.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["cargo", "xtask", name, ..] if XTASK_NATIVE.contains(&name) => None,
        ["cargo", "xtask", "flagship", ..] => Some(w[3..].to_vec()),
        ["cargo", "xtask", name, ..] if !name.starts_with('-') => Some(w[2..].to_vec()),
        ["flagship", ..] => Some(w[1..].to_vec()),
        _ => panic!(
            "README: `{line}` in a sh block is not a `cargo xtask NAME …` or `flagship …` \
             command (see crates/cli/tests/readme.rs for what the README's blocks may hold)"
        ),
    }
}

/// The subcommand words: the leading positional arguments, past the global `--config FILE`.
fn subcommand(args: &[String]) -> Vec<&str> {
    let mut sub = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" => {
                it.next();
            }
            a if a.starts_with("--config=") => {}
            a if a.starts_with('-') => break,
            a => sub.push(a),
        }
    }
    sub
}

fn has(args: &[String], flag: &str) -> bool {
    args.iter()
        .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
}

/// The value of `--flag VALUE` / `--flag=VALUE`.
fn value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter().enumerate().find_map(|(i, a)| {
        if a == flag {
            args.get(i + 1).map(String::as_str)
        } else {
            a.strip_prefix(flag)?.strip_prefix('=')
        }
    })
}

#[derive(Debug, PartialEq)]
enum How {
    /// `cargo xtask pipeline` itself.
    SetUp,
    /// Streams live or serves until stopped.
    Help,
    Run,
}

fn how(args: &[String]) -> How {
    let sub = subcommand(args);
    let replay = has(args, "--replay");
    match sub[..] {
        ["pipeline"] if args.len() == 1 => How::SetUp,
        ["aws", ..] => How::Help,
        ["desk", "export", ..] => How::Run,
        ["desk", ..] => How::Help,
        ["ingest", "replay-spill", ..] => How::Help,
        ["watch", ..] | ["ingest", "run", ..] if !replay => How::Help,
        _ => How::Run,
    }
}

/// The paths into the repository a command names, each checked to exist.
fn check_repo_paths(line: &str, args: &[String]) {
    for a in args {
        let path = a.split_once('=').map_or(a.as_str(), |(_, v)| v);
        if REPO_DIRS.iter().any(|d| path.starts_with(d)) {
            assert!(
                workspace_root().join(path).exists(),
                "README: `{line}` names {path}, which is not in the repository"
            );
        }
    }
}

fn flagship(cwd: &Path, args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flagship"))
        .current_dir(cwd)
        .env_remove("FLAGSHIP_CONFIG")
        .env("RUST_BACKTRACE", "0")
        .env("NO_COLOR", "1")
        .env("FLAGSHIP_VENV", flagship_testkit::venv())
        .args(args)
        .output()
        .expect("the flagship binary starts")
}

fn succeeded(line: &str, ran: &[String], out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "README command failed ({}): `{line}`\nran: flagship {}\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        ran.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `src` copied into `dst`: folders made, config files (`.toml`) copied — their relative
/// paths then resolve inside the copy — and every other file linked.
fn mirror(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let (from, to) = (e.path(), dst.join(e.file_name()));
        if e.file_type().unwrap().is_dir() {
            mirror(&from, &to);
        } else if from.extension().is_some_and(|x| x == "toml") {
            std::fs::copy(&from, &to).unwrap();
        } else {
            std::os::unix::fs::symlink(&from, &to).unwrap();
        }
    }
}

/// The tree a newcomer has after `cargo xtask pipeline`, as far as the README's commands
/// read it: the fixtures, and the demo's model (a linear stand-in) under `data/demo/`.
fn tree_after_pipeline() -> tempfile::TempDir {
    let tree = tempfile::tempdir().unwrap();
    mirror(
        &workspace_root().join("fixtures"),
        &tree.path().join("fixtures"),
    );
    let scratch = tree.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let trained = common::linear_model(&scratch, &tree.path().join("fixtures/demo/flagship.toml"));
    let model = tree.path().join(DEMO_MODEL);
    std::fs::create_dir_all(model.parent().unwrap()).unwrap();
    std::fs::rename(&trained, &model).unwrap();
    std::fs::remove_dir_all(&scratch).unwrap();
    tree
}

/// A finished `watch`: posts flowed through the profile to flagged rows in its output.
fn check_watch(line: &str, cwd: &Path, args: &[String], stdout: &str) {
    let totals: serde_json::Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("README: `{line}`: no totals line at the end:\n{stdout}"));
    for key in ["kept", "flagged"] {
        assert!(
            totals[key].as_u64().is_some_and(|n| n > 0),
            "README: `{line}`: nothing {key} — a newcomer would see no flagged post:\n{stdout}"
        );
    }
    let out = cwd.join(value(args, "--out").unwrap_or("data/flagged.jsonl"));
    let text = std::fs::read_to_string(&out)
        .unwrap_or_else(|e| panic!("README: `{line}`: {}: {e}", out.display()));
    let flagged: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .filter(|r: &serde_json::Value| r.get("id").is_some())
        .collect();
    // An output flagged before keeps its rows (its ids are never flagged again).
    assert!(
        flagged.len() as u64 >= totals["flagged"].as_u64().unwrap(),
        "README: `{line}`: fewer rows in {} than flagged",
        out.display()
    );
    for r in &flagged {
        assert!(
            r["url"].as_str().is_some_and(|u| u.starts_with("https://")),
            "README: `{line}`: a flagged row without a link: {r}"
        );
    }
}

#[test]
fn every_command_in_the_readmes_sh_blocks_works() {
    let lines = sh_lines(&readme());
    let commands: Vec<(String, Vec<String>)> = lines
        .iter()
        .filter_map(|l| flagship_args(l).map(|a| (l.clone(), a)))
        .collect();
    assert!(
        commands.iter().any(|(_, a)| how(a) == How::Run),
        "README: no command that runs offline found in its sh blocks: {lines:#?}"
    );
    let tree = tree_after_pipeline();
    let cwd = tree.path();
    let (mut ran, mut helped) = (0, 0);
    for (line, args) in &commands {
        check_repo_paths(line, args);
        let mut args = args.clone();
        match how(&args) {
            How::SetUp => {
                println!("set-up (its model stood in for): {line}");
                continue;
            }
            How::Help => {
                args.push("--help".into());
                let stdout = succeeded(line, &args, &flagship(cwd, &args));
                assert!(stdout.contains("Usage:"), "README: `{line}`: {stdout}");
                helped += 1;
                println!("--help: {line}");
            }
            How::Run => {
                let sub = subcommand(&args);
                let watch = sub.first() == Some(&"watch");
                let replays = matches!(sub[..], ["watch", ..] | ["ingest", "run", ..]);
                if replays
                    && !["--duration", "--max-posts", "--max-tweets"]
                        .iter()
                        .any(|f| has(&args, f))
                {
                    args.extend(["--duration".into(), BOUND.into()]);
                }
                let started = std::time::Instant::now();
                let stdout = succeeded(line, &args, &flagship(cwd, &args));
                if watch {
                    check_watch(line, cwd, &args, &stdout);
                }
                ran += 1;
                println!("ran in {:.1} s: {line}", started.elapsed().as_secs_f64());
                println!("{}", stdout.trim_end());
            }
        }
    }
    println!("{ran} README commands run, {helped} answered --help");
}

/// The first cell of a commands-table row, unescaped: `flagship desk export --format …`.
fn synopsis(row: &str) -> Option<String> {
    let cell = row.strip_prefix("| `")?;
    let end = cell.find('`')?;
    let s = cell[..end].replace("\\|", "|");
    (s.starts_with("cargo xtask ") || s.starts_with("flagship ")).then_some(s)
}

/// The `flagship … --help` calls a synopsis stands for.
fn help_calls(synopsis: &str) -> Vec<Vec<String>> {
    let w: Vec<&str> = synopsis.split_whitespace().collect();
    let help = |mut v: Vec<String>| {
        v.push("--help".into());
        v
    };
    if let Some(names) = synopsis.strip_prefix("cargo xtask ") {
        let names = names.split_whitespace().next().unwrap_or_default();
        return names
            .split('|')
            .filter(|n| !XTASK_NATIVE.contains(n))
            .map(|n| match n {
                "flagship" => help(vec![]),
                n => help(vec![n.to_owned()]),
            })
            .collect();
    }
    let sub = w[1..]
        .iter()
        .take_while(|s| {
            s.starts_with(|c: char| c.is_ascii_lowercase())
                && s.chars().all(|c| c.is_ascii_lowercase() || c == '-')
        })
        .map(|s| s.to_string())
        .collect();
    vec![help(sub)]
}

#[test]
fn every_command_in_the_readmes_tables_answers_help() {
    let mut calls: Vec<(String, Vec<String>)> = readme()
        .lines()
        .filter_map(synopsis)
        .flat_map(|s| help_calls(&s).into_iter().map(move |c| (s.clone(), c)))
        .collect();
    let mut seen = std::collections::HashSet::new();
    calls.retain(|(_, args)| seen.insert(args.clone()));
    assert!(calls.len() > 10, "README: its commands tables not found");
    let cwd = tempfile::tempdir().unwrap();
    for (row, args) in &calls {
        let stdout = succeeded(row, args, &flagship(cwd.path(), args));
        assert!(stdout.contains("Usage:"), "README: `{row}`: {stdout}");
    }
    println!("{} table rows' commands answer --help", calls.len());
}

/// Relative link targets in markdown text: `](target)`, anchors and web addresses left out.
fn local_links(text: &str) -> Vec<&str> {
    text.match_indices("](")
        .filter_map(|(i, _)| {
            let rest = &text[i + 2..];
            let target = &rest[..rest.find(')')?];
            let path = target.split('#').next().unwrap_or_default();
            (!path.is_empty() && !target.contains("://")).then_some(path)
        })
        .collect()
}

#[test]
fn the_readme_maps_every_crate_and_doc_and_its_links_resolve() {
    let text = readme();
    let root = workspace_root();
    let listed = |dir: &str| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let crates: Vec<PathBuf> = listed("crates")
        .into_iter()
        .filter(|c| root.join("crates").join(c).join("Cargo.toml").exists())
        .map(|c| PathBuf::from("crates").join(c))
        .collect();
    for c in &crates {
        let name = format!("`{}`", c.display());
        assert!(text.contains(&name), "README's layout does not name {name}");
    }
    assert!(
        text.contains("`xtask/`"),
        "README's layout does not name `xtask/`"
    );
    for doc in listed("docs").iter().filter(|d| d.ends_with(".md")) {
        assert!(
            text.contains(&format!("](docs/{doc})")),
            "README does not link docs/{doc}"
        );
    }
    for link in local_links(&text) {
        assert!(
            root.join(link).exists(),
            "README links {link}, which does not exist"
        );
    }
}
