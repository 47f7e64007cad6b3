//! `cargo xtask --help` and the flag parser, both driven by [`COMMANDS`].
//!
//! [`parse`] walks a native command's declared [`Flag`]s: anything else is rejected by name.
//! The typed structs ([`Setup`], [`Test`], [`Bench`]) then read the parsed flags by name;
//! asking for a flag the table does not declare is a bug (a panic the unit tests catch).

use crate::{COMMANDS, Command, Flag, Kind, command};

/// The usage text: every command with its help, each native command's flags, and what each
/// forwarded command runs.
pub fn usage() -> String {
    let mut s = String::from(
        "flagship developer and user commands\n\nUsage: cargo xtask <command> [flags]\n\nCommands:\n",
    );
    for c in COMMANDS {
        s.push_str(&format!("  {:<10} {}\n", c.name, c.help));
    }
    s.push_str("\nFlags:\n");
    for c in COMMANDS
        .iter()
        .filter(|c| matches!(c.kind, Kind::Native(_)))
    {
        let mut name = c.name;
        if !c.args.is_empty() {
            s.push_str(&format!("  {name:<10} {}\n", c.args));
            name = "";
        }
        for f in c.flags {
            s.push_str(&format!("  {name:<10} {}\n", flag_line(f)));
            name = "";
        }
    }
    s.push_str("\nForwarded to the flagship binary (its own --help lists their flags):\n");
    for c in COMMANDS {
        if let Kind::Forward { to } = c.kind {
            s.push_str(&format!("  {:<10} {}\n", c.name, forward_line(to)));
        }
    }
    s
}

/// `--steps N          train: optimizer steps timed (default 30)`.
fn flag_line(f: &Flag) -> String {
    let spelled = match f.value {
        Some(v) => format!("{} {v}", f.name),
        None => f.name.to_owned(),
    };
    let default = f
        .default
        .map(|d| format!(" (default {d})"))
        .unwrap_or_default();
    format!("{spelled:<18} {}{default}", f.help)
}

/// `ARGS  → flagship pipeline ARGS (see: cargo xtask flagship pipeline --help)`.
fn forward_line(to: &str) -> String {
    let to = if to.is_empty() {
        String::new()
    } else {
        format!(" {to}")
    };
    format!("ARGS  → flagship{to} ARGS (see: cargo xtask flagship{to} --help)")
}

fn unknown(cmd: &str, flag: &str) -> String {
    format!("`{cmd}`: unknown flag `{flag}` (see `cargo xtask --help`)")
}

/// A native command's arguments, checked against its declaration in [`COMMANDS`].
pub struct Parsed {
    cmd: &'static Command,
    /// Arguments not starting with `-` (only accepted where the command declares `args`).
    pub positional: Vec<String>,
    /// The declared flags given, with their values, in order.
    given: Vec<(&'static str, Option<String>)>,
    /// What followed a declared `--`.
    pub rest: Vec<String>,
}

/// Parses `args` with `cmd`'s declared flags; an undeclared flag is an error naming it.
pub fn parse(cmd: &'static Command, args: &[String]) -> Result<Parsed, String> {
    let mut p = Parsed {
        cmd,
        positional: Vec::new(),
        given: Vec::new(),
        rest: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match cmd.flags.iter().find(|f| f.name == a) {
            Some(f) if f.name == "--" => p.rest.extend(it.by_ref().cloned()),
            Some(f) => {
                let value = match f.value {
                    None => None,
                    Some(v) => Some(it.next().cloned().ok_or_else(|| {
                        format!("`{}`: `{}` needs a value ({v})", cmd.name, f.name)
                    })?),
                };
                p.given.push((f.name, value));
            }
            None if a.starts_with('-') => return Err(unknown(cmd.name, a)),
            None if cmd.args.is_empty() => {
                return Err(format!(
                    "`{}`: unexpected argument `{a}` (see `cargo xtask --help`)",
                    cmd.name
                ));
            }
            None => p.positional.push(a.clone()),
        }
    }
    Ok(p)
}

impl Parsed {
    fn declared(&self, name: &str) -> &'static Flag {
        self.cmd
            .flags
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("`{}` does not declare `{name}` in COMMANDS", self.cmd.name))
    }

    /// Whether the switch `name` was given.
    pub fn has(&self, name: &str) -> bool {
        let f = self.declared(name);
        self.given.iter().any(|(n, _)| *n == f.name)
    }

    /// The last value given for `name`, else its declared default.
    pub fn value(&self, name: &str) -> Option<&str> {
        let f = self.declared(name);
        self.given
            .iter()
            .rev()
            .find(|(n, _)| *n == f.name)
            .and_then(|(_, v)| v.as_deref())
            .or(f.default)
    }

    /// `name`'s value (given or default) as a positive number.
    pub fn positive(&self, name: &str) -> Result<usize, String> {
        self.value(name)
            .and_then(|v| v.parse().ok())
            .filter(|&n: &usize| n > 0)
            .ok_or_else(|| format!("`{}`: `{name}` needs a positive number", self.cmd.name))
    }
}

#[derive(Debug, Default)]
pub struct Setup {
    pub force: bool,
    pub teacher: bool,
}

impl Setup {
    pub fn parse(args: &[String]) -> Result<Setup, String> {
        let p = parse(command("setup"), args)?;
        Ok(Setup {
            force: p.has("--force"),
            teacher: p.has("--teacher"),
        })
    }
}

/// `check-teacher` (no flags).
#[derive(Debug, Default)]
pub struct CheckTeacher;

impl CheckTeacher {
    pub fn parse(args: &[String]) -> Result<CheckTeacher, String> {
        parse(command("check-teacher"), args)?;
        Ok(CheckTeacher)
    }
}

#[derive(Debug, Default)]
pub struct Test {
    pub no_lint: bool,
    pub cargo_args: Vec<String>,
}

impl Test {
    pub fn parse(args: &[String]) -> Result<Test, String> {
        let p = parse(command("test"), args)?;
        Ok(Test {
            no_lint: p.has("--no-lint"),
            cargo_args: p.rest,
        })
    }
}

/// `bench train|predict|textproc|ingest|live|parsers|desk|desk-load|groups|alerts|team|all`.
#[derive(Debug)]
pub struct Bench {
    pub what: String,
    pub steps: usize,
    pub rows: usize,
    pub batch_size: usize,
    pub max_length: usize,
    /// textproc: corpus size, and the multiple of it also run to show memory stays flat.
    pub tweets: usize,
    pub scale: usize,
    /// desk-load: how long, posts/s, open pages, people, decisions/s.
    pub minutes: usize,
    pub rate: usize,
    pub pages: usize,
    pub users: usize,
    pub decisions_per_second: usize,
    /// live: the model folder `watch` serves (`None`: the demo's).
    pub model: Option<std::path::PathBuf>,
}

impl Bench {
    pub fn parse(args: &[String]) -> Result<Bench, String> {
        let cmd = command("bench");
        let p = parse(cmd, args)?;
        let what = match p.positional.as_slice() {
            [w] if cmd.args.split('|').any(|a| a == w) => w.clone(),
            other => {
                let names: Vec<String> = cmd.args.split('|').map(|a| format!("`{a}`")).collect();
                let got = if other.is_empty() {
                    "nothing".to_owned()
                } else {
                    format!("`{}`", other.join(" "))
                };
                return Err(format!(
                    "`bench`: say what to measure, one of {} (got {got})",
                    names.join(", ")
                ));
            }
        };
        Ok(Bench {
            what,
            steps: p.positive("--steps")?,
            rows: p.positive("--rows")?,
            batch_size: p.positive("--batch-size")?,
            max_length: p.positive("--max-length")?,
            tweets: p.positive("--tweets")?,
            scale: p.positive("--scale")?,
            minutes: p.positive("--minutes")?,
            rate: p.positive("--rate")?,
            pages: p.positive("--pages")?,
            users: p.positive("--users")?,
            decisions_per_second: p.positive("--decisions-per-second")?,
            model: p.value("--model").map(std::path::PathBuf::from),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    /// A native command's typed parse, as `Debug` text.
    fn typed(name: &str, a: &[String]) -> Result<String, String> {
        match name {
            "setup" => Setup::parse(a).map(|f| format!("{f:?}")),
            "check-teacher" => CheckTeacher::parse(a).map(|f| format!("{f:?}")),
            "test" => Test::parse(a).map(|f| format!("{f:?}")),
            "bench" => Bench::parse(a).map(|f| format!("{f:?}")),
            other => panic!("native command `{other}` has no typed parse in this test"),
        }
    }

    fn natives() -> impl Iterator<Item = &'static Command> {
        COMMANDS
            .iter()
            .filter(|c| matches!(c.kind, Kind::Native(_)))
    }

    /// The smallest valid argument list: the first declared positional, if any.
    fn base(c: &Command) -> Vec<String> {
        c.args
            .split('|')
            .next()
            .filter(|a| !a.is_empty())
            .map(|a| vec![a.to_owned()])
            .unwrap_or_default()
    }

    #[test]
    fn flags_parse_and_unknown_ones_are_named() {
        assert!(Setup::parse(&args(&["--force"])).unwrap().force);
        assert!(Setup::parse(&args(&["--teacher"])).unwrap().teacher);
        let t = Test::parse(&args(&["--no-lint", "--", "--no-fail-fast", "-p"])).unwrap();
        assert!(t.no_lint);
        assert_eq!(t.cargo_args, ["--no-fail-fast", "-p"]);
        let e = Test::parse(&args(&["--lint"])).unwrap_err();
        assert_eq!(
            e,
            "`test`: unknown flag `--lint` (see `cargo xtask --help`)"
        );
        let e = Setup::parse(&args(&["extra"])).unwrap_err();
        assert!(e.contains("`setup`: unexpected argument `extra`"), "{e}");
    }

    #[test]
    fn bench_flags() {
        let b = Bench::parse(&args(&["predict", "--rows", "500"])).unwrap();
        assert_eq!((b.what.as_str(), b.rows, b.steps), ("predict", 500, 30));
        assert_eq!((b.tweets, b.scale, b.model), (1_000_000, 4, None));
        let b = Bench::parse(&args(&["live", "--model", "data/distill/student-l3"])).unwrap();
        assert_eq!(b.model, Some("data/distill/student-l3".into()));
        let b = Bench::parse(&args(&["desk-load", "--minutes", "1"])).unwrap();
        assert_eq!(
            (b.minutes, b.rate, b.pages, b.users, b.decisions_per_second),
            (1, 35, 200, 20, 20)
        );
        assert!(Bench::parse(&args(&["fly"])).is_err());
        assert!(Bench::parse(&args(&[])).is_err());
        assert!(Bench::parse(&args(&["train", "predict"])).is_err());
        let e = Bench::parse(&args(&["train", "--steps", "0"])).unwrap_err();
        assert!(e.contains("`--steps` needs a positive number"), "{e}");
        let e = Bench::parse(&args(&["train", "--steps"])).unwrap_err();
        assert!(e.contains("`--steps` needs a value"), "{e}");
    }

    #[test]
    fn an_undeclared_flag_is_rejected_by_every_native_command() {
        for c in natives() {
            let mut a = base(c);
            a.push("--undeclared".into());
            assert_eq!(
                typed(c.name, &a).unwrap_err(),
                format!(
                    "`{}`: unknown flag `--undeclared` (see `cargo xtask --help`)",
                    c.name
                )
            );
        }
    }

    #[test]
    fn every_declared_flag_is_accepted_and_changes_the_result() {
        for c in natives() {
            let plain = typed(c.name, &base(c)).unwrap();
            for f in c.flags {
                let mut a = base(c);
                a.push(f.name.into());
                if f.value.is_some() {
                    a.push("7".into());
                }
                let with = typed(c.name, &a).unwrap_or_else(|e| panic!("{e}"));
                assert_ne!(with, plain, "`{} {}` is ignored", c.name, f.name);
            }
            // Defaults are valid values.
            for f in c.flags.iter().filter(|f| f.default.is_some()) {
                let mut a = base(c);
                a.extend([f.name.to_owned(), f.default.unwrap().to_owned()]);
                assert_eq!(typed(c.name, &a).unwrap(), plain, "{} {}", c.name, f.name);
            }
        }
    }

    #[test]
    fn usage_lists_every_command_once() {
        let u = usage();
        for c in COMMANDS {
            assert_eq!(
                u.matches(&format!("  {:<10} {}\n", c.name, c.help)).count(),
                1,
                "{}",
                c.name
            );
        }
    }

    #[test]
    fn usage_lists_every_flag_of_every_native_command_once() {
        let u = usage();
        for c in natives() {
            for f in c.flags {
                let line = format!(" {}\n", flag_line(f));
                assert_eq!(u.matches(&line).count(), 1, "{} {}", c.name, f.name);
                let spelled = match f.value {
                    Some(v) => format!("  {} {v} ", f.name),
                    None => format!("  {} ", f.name),
                };
                assert_eq!(u.matches(&spelled).count(), 1, "{} {}", c.name, f.name);
            }
        }
        assert!(u.contains(
            "  bench      train|predict|textproc|ingest|live|parsers|desk|desk-load|groups|alerts|team|all\n"
        ));
    }

    #[test]
    fn forwarded_commands_point_to_flagship_help() {
        let u = usage();
        assert!(u.contains(
            "  pipeline   ARGS  → flagship pipeline ARGS (see: cargo xtask flagship pipeline --help)\n"
        ));
        assert!(
            u.contains("  flagship   ARGS  → flagship ARGS (see: cargo xtask flagship --help)\n")
        );
        for c in COMMANDS {
            if let Kind::Forward { to } = c.kind {
                assert_eq!(u.matches(&forward_line(to)).count(), 1, "{}", c.name);
            }
        }
    }
}
