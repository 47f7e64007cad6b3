//! Commands that forward to the `flagship` binary (crates/cli), after set-up: every
//! [`Kind::Forward`](crate::Kind::Forward) entry of [`COMMANDS`](crate::COMMANDS).

use crate::{flags, setup};

/// The optional cargo feature of `flagship-cli` that links the Ballista engine.
pub const BALLISTA: &str = "ballista";

/// Whether these flagship arguments ask for the Ballista engine (`--engine ballista://…`,
/// `--engine=ballista…`), so the binary must be built with `--features ballista`.
pub fn needs_ballista(args: &[String]) -> bool {
    args.iter()
        .any(|a| a.starts_with("ballista://") || a.starts_with("--engine=ballista"))
}

/// The optional cargo feature of `flagship-cli` with `flagship aws` (the AWS admin SDKs).
pub const AWS: &str = "aws";

/// The `flagship-cli` features these flagship arguments need: `ballista` for the Ballista
/// engine, `aws` for the `aws` command. Everything else builds the default binary.
pub fn features(args: &[String]) -> Vec<&'static str> {
    let mut f = Vec::new();
    if needs_ballista(args) {
        f.push(BALLISTA);
    }
    if args.first().is_some_and(|a| a == "aws") {
        f.push(AWS);
    }
    f
}

/// `cargo xtask flagship ARGS…`: builds (release, showing cargo's progress) and runs `flagship ARGS…`.
pub fn flagship(args: &[String]) -> Result<(), String> {
    let env = setup::run(&flags::Setup::default())?;
    let mut cargo = setup::cargo(&env.root);
    cargo.args([
        "run",
        "--release",
        "-p",
        "flagship-cli",
        "--bin",
        "flagship",
    ]);
    let features = features(args).join(",");
    if !features.is_empty() {
        eprintln!(
            "xtask: building flagship with --features {features} (asked for by the arguments)"
        );
        cargo.args(["--features", &features]);
    }
    setup::run_cmd(cargo.arg("--").args(args))
}

/// `cargo xtask NAME ARGS…` = `flagship TO ARGS…` (`flagship ARGS…` when `to` is empty).
pub fn sub(to: &str, args: &[String]) -> Result<(), String> {
    flagship(&argv(to, args))
}

/// flagship's arguments for `cargo xtask NAME ARGS…` forwarded to `flagship TO`.
pub fn argv(to: &str, args: &[String]) -> Vec<String> {
    let mut all = Vec::with_capacity(args.len() + 1);
    if !to.is_empty() {
        all.push(to.to_owned());
    }
    all.extend_from_slice(args);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn aws_feature_for_the_aws_command_only() {
        assert_eq!(features(&args(&["aws", "status", "--bucket", "b"])), [AWS]);
        assert!(features(&args(&["ingest", "run", "--sink", "firehose"])).is_empty());
        assert_eq!(
            features(&args(&["aws", "create", "--engine=ballista://x:1"])),
            [BALLISTA, AWS]
        );
    }

    #[test]
    fn ballista_feature_only_when_the_engine_is_asked_for() {
        for yes in [
            &["pipeline", "--engine", "ballista://standalone"][..],
            &["textproc", "--engine=ballista://10.0.0.5:50050"][..],
            &["filter", "--engine=ballista"][..],
        ] {
            assert!(needs_ballista(&args(yes)), "{yes:?}");
        }
        for no in [
            &[][..],
            &["pipeline"][..],
            &["textproc", "--engine", "local"][..],
            &[
                "textproc",
                "--engine=local",
                "--input",
                "s3://b/ballista://x",
            ][..],
            &["filter", "--engine-ballista"][..],
        ] {
            assert!(!needs_ballista(&args(no)), "{no:?}");
        }
    }

    #[test]
    fn forwarded_arguments() {
        assert_eq!(
            argv("pipeline", &args(&["--to", "split"])),
            ["pipeline", "--to", "split"]
        );
        assert_eq!(argv("", &args(&["watch", "--help"])), ["watch", "--help"]);
    }
}
