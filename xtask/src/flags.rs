//! Flags of every command, declared in one place.

use crate::COMMANDS;

pub fn usage() -> String {
    let mut s = String::from(
        "flagship developer and user commands\n\nUsage: cargo xtask <command> [flags]\n\nCommands:\n",
    );
    for (name, help) in COMMANDS {
        s.push_str(&format!("  {name:<10} {help}\n"));
    }
    s.push_str(
        "\nFlags:\n  setup      --force            reinstall the Python packages even if up to date\n  \
         test       --no-lint          skip fmt and clippy\n             -- ARGS            passed to `cargo test` (e.g. -- --no-fail-fast)\n  \
         pipeline   ARGS               passed to `flagship pipeline` ([--from STAGE] [--to STAGE] [--force] [--engine E] [--endpoint-url URL])\n  \
         ingest     ARGS               passed to `flagship ingest` (run --replay DIR --sink local|firehose …; replay-spill)\n  \
         aws        ARGS               passed to `flagship aws` (create|status|destroy --bucket B [--endpoint-url URL])\n  \
         combine    ARGS               passed to `flagship combine` (--input LOC --output LOC --prefix P --engine E)\n  \
         filter     ARGS               passed to `flagship filter` (--input LOC --output LOC --engine E)\n  \
         textproc   ARGS               passed to `flagship textproc` (--input LOC --output LOC --engine E)\n  \
         split      ARGS               passed to `flagship split` (--labels FILE; export-for-labeling)\n  \
         watch      ARGS               passed to `flagship watch` ([--replay PATH] [--model DIR] [--out FILE] [--max-batch 32] [--max-wait 200ms])\n  \
         train      ARGS               passed to `flagship train` (--train FILE --val FILE --out DIR …)\n  \
         predict    ARGS               passed to `flagship predict` (--model DIR --input FILE --output FILE)\n  \
         evaluate   ARGS               passed to `flagship evaluate` (--predictions FILE --out DIR)\n  \
         monitor    ARGS               passed to `flagship monitor` (--model DIR --predictions FILE --out DIR)\n  \
         bench      train|predict      [--steps 30] [--rows 2000] [--batch-size 32] [--max-length 64]\n  \
         bench      textproc           [--tweets 1000000] [--scale 4]  (vs PySpark local[*]; memory at tweets × scale)\n  \
         bench      ingest             [--tweets 1000000]  (replay into the local Firehose layout: tweets/s, peak RSS at N/4 and N)\n",
    );
    s
}

fn unknown(cmd: &str, flag: &str) -> String {
    format!("`{cmd}`: unknown flag `{flag}` (see `cargo xtask --help`)")
}

#[derive(Debug, Default)]
pub struct Setup {
    pub force: bool,
}

impl Setup {
    pub fn parse(args: &[String]) -> Result<Setup, String> {
        let mut f = Setup::default();
        for a in args {
            match a.as_str() {
                "--force" => f.force = true,
                other => return Err(unknown("setup", other)),
            }
        }
        Ok(f)
    }
}

#[derive(Debug, Default)]
pub struct Test {
    pub no_lint: bool,
    pub cargo_args: Vec<String>,
}

impl Test {
    pub fn parse(args: &[String]) -> Result<Test, String> {
        let mut f = Test::default();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--no-lint" => f.no_lint = true,
                "--" => f.cargo_args.extend(it.by_ref().cloned()),
                other => return Err(unknown("test", other)),
            }
        }
        Ok(f)
    }
}

/// `bench train|predict`.
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
}

impl Bench {
    pub fn parse(args: &[String]) -> Result<Bench, String> {
        let mut it = args.iter();
        let what = match it.next().map(String::as_str) {
            Some(w @ ("train" | "predict" | "textproc" | "ingest")) => w.to_owned(),
            other => {
                return Err(format!(
                    "`bench`: say what to measure: `train`, `predict`, `textproc` or `ingest` (got {other:?})"
                ));
            }
        };
        let mut f = Bench {
            what,
            steps: 30,
            rows: 2000,
            batch_size: 32,
            max_length: 64,
            tweets: 1_000_000,
            scale: 4,
        };
        while let Some(a) = it.next() {
            let slot = match a.as_str() {
                "--steps" => &mut f.steps,
                "--rows" => &mut f.rows,
                "--batch-size" => &mut f.batch_size,
                "--max-length" => &mut f.max_length,
                "--tweets" => &mut f.tweets,
                "--scale" => &mut f.scale,
                other => return Err(unknown("bench", other)),
            };
            *slot = it
                .next()
                .and_then(|v| v.parse().ok())
                .filter(|&n: &usize| n > 0)
                .ok_or_else(|| format!("`bench`: `{a}` needs a positive number"))?;
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_parse_and_unknown_ones_are_named() {
        assert!(Setup::parse(&args(&["--force"])).unwrap().force);
        let t = Test::parse(&args(&["--no-lint", "--", "--no-fail-fast", "-p"])).unwrap();
        assert!(t.no_lint);
        assert_eq!(t.cargo_args, ["--no-fail-fast", "-p"]);
        let e = Test::parse(&args(&["--lint"])).unwrap_err();
        assert!(e.contains("`test`: unknown flag `--lint`"), "{e}");
    }

    #[test]
    fn bench_flags() {
        let b = Bench::parse(&args(&["predict", "--rows", "500"])).unwrap();
        assert_eq!((b.what.as_str(), b.rows, b.steps), ("predict", 500, 30));
        assert!(Bench::parse(&args(&["fly"])).is_err());
        let e = Bench::parse(&args(&["train", "--steps", "0"])).unwrap_err();
        assert!(e.contains("`--steps` needs a positive number"), "{e}");
    }

    #[test]
    fn usage_lists_every_command_once() {
        let u = usage();
        for (name, help) in COMMANDS {
            assert_eq!(
                u.matches(&format!("  {name:<10} {help}\n")).count(),
                1,
                "{name}"
            );
        }
    }
}
