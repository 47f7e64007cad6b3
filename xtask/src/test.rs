//! `cargo xtask test`: what CI runs. Set-up first, then format and lint checks, then the tests
//! of every crate (tests start the real parts they need: moto, libtorch, the MiniLM).

use std::process::Command;

use crate::{flags, setup};

pub fn run(flags: &flags::Test) -> Result<(), String> {
    let env = setup::run(&flags::Setup::default())?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let in_root = |args: &[&str]| {
        let mut c = Command::new(&cargo);
        c.current_dir(&env.root).args(args);
        c
    };
    if !flags.no_lint {
        eprintln!("test: cargo fmt --check");
        setup::run_cmd(&mut in_root(&["fmt", "--all", "--check"]))?;
        eprintln!("test: cargo clippy --workspace --all-targets -- -D warnings");
        setup::run_cmd(&mut in_root(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
    }
    eprintln!("test: cargo test --workspace");
    let mut test = in_root(&["test", "--workspace"]);
    test.args(&flags.cargo_args);
    let (passed, failed, ok) = run_counting(&mut test)?;
    // One closing line for the whole workspace, whatever binary ran last.
    println!("test: {passed} passed, {failed} failed");
    if !ok {
        return Err("cargo test failed".into());
    }
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
    use super::result_counts;

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
