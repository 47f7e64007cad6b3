//! Gives binaries and tests that link libtorch an rpath to it, so they run without
//! LD_LIBRARY_PATH. LIBTORCH comes from `.cargo/config.toml` (→ `.venv/libtorch`, made by
//! `cargo xtask setup`) or the user's environment. Shared by every crate that links it, and
//! by flagship-desk for its tests alone.

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    // The flagship binary links libtorch only with its `model` feature (the streaming-host
    // build leaves it out); every other crate using this script always links it.
    if std::env::var("CARGO_PKG_NAME").as_deref() == Ok("flagship-cli")
        && std::env::var_os("CARGO_FEATURE_MODEL").is_none()
    {
        return;
    }
    if let Some(dir) = std::env::var_os("LIBTORCH") {
        let lib = std::path::Path::new(&dir).join("lib");
        // The real path: libtorch_cuda finds its CUDA libraries through `$ORIGIN/../../nvidia`,
        // which must be resolved from site-packages, not from the `.venv/libtorch` link.
        let lib = std::fs::canonicalize(&lib).unwrap_or(lib);
        // The desk's library never links libtorch; its tests (running the live loop) do.
        let link_arg = if std::env::var("CARGO_PKG_NAME").as_deref() == Ok("flagship-desk") {
            "cargo:rustc-link-arg-tests"
        } else {
            "cargo:rustc-link-arg"
        };
        println!("{link_arg}=-Wl,-rpath,{}", lib.display());
        // Nothing references libtorch_cuda's symbols directly, so `--as-needed` linkers drop
        // it and libtorch then never sees the GPU. Keep it whenever this libtorch has CUDA.
        if lib.join("libtorch_cuda.so").exists() {
            println!("{link_arg}=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
    }
}
