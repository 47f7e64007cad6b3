//! Helpers for tests across the workspace: fixture paths and real parts (moto).
//!
//! A test that needs a real part starts it here; a missing part is a test failure with the
//! command that installs it — never a silent skip (CI or not).

pub mod prometheus;

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The workspace root (tests run from their crate's folder).
pub fn workspace_root() -> PathBuf {
    // `cargo test` / `cargo run` set CARGO_MANIFEST_DIR (a member's folder) at run time, which
    // is right even where a shared target dir kept a binary built from a checkout at another
    // path; the workspace is the first folder above it whose Cargo.toml has `[workspace]`.
    let start = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    start
        .ancestors()
        .find(|d| {
            std::fs::read_to_string(d.join("Cargo.toml")).is_ok_and(|t| t.contains("[workspace]"))
        })
        .map(|d| d.to_owned())
        .unwrap_or_else(|| start.join("../.."))
}

/// A file or folder under `fixtures/`.
pub fn fixture(rel: &str) -> PathBuf {
    workspace_root().join("fixtures").join(rel)
}

/// The Python environment `cargo xtask setup` made (`FLAGSHIP_VENV`, else `<root>/.venv`).
pub fn venv() -> PathBuf {
    std::env::var_os("FLAGSHIP_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv"))
}

/// A `moto_server` on a free loopback port, stopped on drop.
///
/// Tests that build AWS clients must also set `AWS_EC2_METADATA_DISABLED=true`, so the
/// credential chain never reaches for the instance-metadata address off this machine.
pub struct MotoServer {
    child: Child,
    port: u16,
}

impl MotoServer {
    /// Starts moto from the set-up venv (or `FLAGSHIP_MOTO_SERVER`) and waits until it answers.
    pub fn start() -> MotoServer {
        let bin = std::env::var_os("FLAGSHIP_MOTO_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| venv().join("bin/moto_server"));
        assert!(
            bin.exists(),
            "moto_server not found at {} — run `cargo xtask setup` (installs moto[server] into .venv)",
            bin.display()
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let server = MotoServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen on {port} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket with a plain (unsigned) S3 `PUT /bucket`, which moto accepts.
    pub fn create_bucket(&self, bucket: &str) {
        use std::io::{Read, Write};
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to moto");
        write!(
            s,
            "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .expect("send");
        let mut reply = String::new();
        s.read_to_string(&mut reply).expect("read reply");
        assert!(
            reply.starts_with("HTTP/1.1 200"),
            "create bucket {bucket}: {reply}"
        );
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
