//! Commands that forward to the `flagship` binary (crates/cli), after set-up.

use crate::{flags, setup};

/// `cargo xtask flagship ARGS…`: builds (release, showing cargo's progress) and runs `flagship ARGS…`.
pub fn flagship(args: &[String]) -> Result<(), String> {
    let env = setup::run(&flags::Setup::default())?;
    setup::run_cmd(
        setup::cargo(&env.root)
            .args([
                "run",
                "--release",
                "-p",
                "flagship-cli",
                "--bin",
                "flagship",
                "--",
            ])
            .args(args),
    )
}

/// `cargo xtask pipeline ARGS…` = `flagship pipeline ARGS…`.
pub fn pipeline(args: &[String]) -> Result<(), String> {
    sub("pipeline", args)
}

/// `cargo xtask NAME ARGS…` = `flagship NAME ARGS…`.
pub fn sub(name: &str, args: &[String]) -> Result<(), String> {
    let mut all = vec![name.to_owned()];
    all.extend_from_slice(args);
    flagship(&all)
}
