//! `cargo xtask test`: what CI runs. Set-up first, then format and lint checks (the default
//! build and the Ballista build), then the tests of every crate and the Ballista tests (tests
//! start the real parts they need: moto, libtorch, the MiniLM).

use std::process::Command;

use crate::{flags, setup};

/// `cargo xtask test [--no-lint] [-- ARGS]`.
pub fn cmd(args: &[String]) -> Result<(), String> {
    run(&flags::Test::parse(args)?)
}

/// The cargo invocations, in order (`ARGS` = the flags' `-- ARGS`). Each one fails the run.
pub fn steps(flags: &flags::Test) -> Vec<Vec<String>> {
    let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut steps = Vec::new();
    if !flags.no_lint {
        steps.push(words(&["fmt", "--all", "--check"]));
        steps.push(words(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]));
        // The binary's optional features, and the streaming host's build without libtorch.
        for features in [
            &["--features", "ballista,aws"][..],
            &["--no-default-features"],
        ] {
            let mut c = words(&["clippy", "-p", "flagship-cli", "--all-targets"]);
            c.extend(words(features));
            c.extend(words(&["--", "-D", "warnings"]));
            steps.push(c);
        }
    }
    let mut all = words(&["test", "--workspace"]);
    all.extend(flags.cargo_args.iter().cloned());
    steps.push(all);
    let mut ballista = words(&[
        "test",
        "-p",
        "flagship-cli",
        "--features",
        "ballista",
        "--test",
        "stages",
    ]);
    ballista.extend(flags.cargo_args.iter().cloned());
    steps.push(ballista);
    steps
}

pub fn run(flags: &flags::Test) -> Result<(), String> {
    let env = setup::run(&flags::Setup::default())?;
    setup::browser()?;
    let (mut passed, mut failed) = (0, 0);
    for step in steps(flags) {
        eprintln!("test: cargo {}", step.join(" "));
        // `setup::cargo`: without the variables `cargo run` set for xtask itself.
        let mut cargo = setup::cargo(&env.root);
        cargo.args(&step);
        if step[0] != "test" {
            setup::run_cmd(&mut cargo)?;
            continue;
        }
        let (p, f, ok) = run_counting(&mut cargo)?;
        passed += p;
        failed += f;
        if !ok {
            println!("test: {passed} passed, {failed} failed");
            return Err(format!("cargo {} failed", step.join(" ")));
        }
    }
    // One closing line for both test runs, whatever binary ran last.
    println!("test: {passed} passed, {failed} failed");
    if passed == 0 {
        return Err("no test ran".into());
    }
    Ok(())
}

/// Runs `cargo test`, echoing its output, and adds up its `test result:` lines.
fn run_counting(cmd: &mut Command) -> Result<(u64, u64, bool), String> {
    use std::io::{BufRead, BufReader};
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    let (mut passed, mut failed) = (0, 0);
    let stdout = child.stdout.take().expect("piped");
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| format!("reading cargo test output: {e}"))?;
        println!("{line}");
        if let Some((p, f)) = result_counts(&line) {
            passed += p;
            failed += f;
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for cargo test: {e}"))?;
    Ok((passed, failed, status.success()))
}

/// `(passed, failed)` from a libtest summary such as
/// `test result: ok. 14 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s`.
fn result_counts(line: &str) -> Option<(u64, u64)> {
    let rest = line.strip_prefix("test result: ")?;
    let rest = rest.split_once(". ")?.1;
    let count = |word: &str| {
        rest.split(';')
            .find_map(|part| part.trim().strip_suffix(word))
            .and_then(|n| n.trim().parse::<u64>().ok())
    };
    Some((count(" passed")?, count(" failed")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cargo_commands() {
        let lines = |f: &flags::Test| -> Vec<String> {
            steps(f)
                .iter()
                .map(|s| format!("cargo {}", s.join(" ")))
                .collect()
        };
        let f = flags::Test::parse(&["--".into(), "--no-fail-fast".into()]).unwrap();
        assert_eq!(
            lines(&f),
            [
                "cargo fmt --all --check",
                "cargo clippy --workspace --all-targets -- -D warnings",
                "cargo clippy -p flagship-cli --all-targets --features ballista,aws -- -D warnings",
                "cargo clippy -p flagship-cli --all-targets --no-default-features -- -D warnings",
                "cargo test --workspace --no-fail-fast",
                "cargo test -p flagship-cli --features ballista --test stages --no-fail-fast",
            ]
        );
        let f = flags::Test::parse(&["--no-lint".into()]).unwrap();
        assert_eq!(
            lines(&f),
            [
                "cargo test --workspace",
                "cargo test -p flagship-cli --features ballista --test stages",
            ]
        );
    }

    #[test]
    fn reads_libtest_summaries() {
        assert_eq!(
            result_counts(
                "test result: ok. 14 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s"
            ),
            Some((14, 0))
        );
        assert_eq!(
            result_counts(
                "test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.44s"
            ),
            Some((2, 1))
        );
        assert_eq!(result_counts("test tests::x ... ok"), None);
        assert_eq!(result_counts("test result: garbage"), None);
    }
}
