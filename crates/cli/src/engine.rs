//! Where the stage plans run: this process (`local`, every core) or a Ballista cluster
//! (`ballista://host:port`; `ballista://standalone` starts a scheduler and an executor in this
//! process, which the tests use). Ballista 55 is built against DataFusion 55, so the stage
//! crates' logical plans are sent as they are.
//!
//! On a remote cluster the executors read and write the storage locations themselves: local
//! paths must be visible to them (a shared mount), and an `s3://` location needs AWS
//! credentials on every executor — the client's object store registration does not travel.

use anyhow::{Context, Result, bail};
#[cfg(feature = "ballista")]
use ballista::prelude::SessionContextExt;
use datafusion::prelude::SessionContext;

/// What `--engine ballista://…` says in a binary built without the `ballista` feature.
#[cfg(not(feature = "ballista"))]
pub const NO_BALLISTA: &str = concat!(
    "this flagship was built without Ballista: build it with ",
    "`cargo build --release -p flagship-cli --features ballista` ",
    "(or run `cargo xtask …` with `--engine ballista://…`, which turns the feature on)"
);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Engine {
    Local,
    BallistaStandalone,
    Ballista { host: String, port: u16 },
}

impl std::str::FromStr for Engine {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Engine> {
        if s == "local" {
            return Ok(Engine::Local);
        }
        let Some(rest) = s.strip_prefix("ballista://") else {
            bail!("engine {s:?}: use `local`, `ballista://HOST:PORT` or `ballista://standalone`");
        };
        if rest == "standalone" {
            return Ok(Engine::BallistaStandalone);
        }
        let (host, port) = rest
            .rsplit_once(':')
            .with_context(|| format!("engine {s:?}: the scheduler's port is missing"))?;
        let port = port
            .parse()
            .with_context(|| format!("engine {s:?}: port {port:?} is not a number"))?;
        Ok(Engine::Ballista {
            host: host.to_owned(),
            port,
        })
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Engine::Local => f.write_str("local"),
            Engine::BallistaStandalone => f.write_str("ballista://standalone"),
            Engine::Ballista { host, port } => write!(f, "ballista://{host}:{port}"),
        }
    }
}

impl Engine {
    /// A session on this engine.
    pub async fn session(&self) -> Result<SessionContext> {
        Ok(match self {
            Engine::Local => flagship_store::frames::local_session(),
            #[cfg(feature = "ballista")]
            Engine::BallistaStandalone => SessionContext::standalone()
                .await
                .context("starting an in-process Ballista scheduler and executor")?,
            #[cfg(feature = "ballista")]
            Engine::Ballista { host, port } => {
                SessionContext::remote(&format!("df://{host}:{port}"))
                    .await
                    .with_context(|| {
                        format!("connecting to the Ballista scheduler at {host}:{port}")
                    })?
            }
            #[cfg(not(feature = "ballista"))]
            other => bail!("--engine {other}: {NO_BALLISTA}"),
        })
    }

    /// Hours processed at once: locally one per core; a cluster schedules its own work.
    pub fn concurrency(&self) -> usize {
        match self {
            Engine::Local => flagship_store::frames::local_concurrency(),
            _ => 4,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_engines() {
        assert_eq!("local".parse::<Engine>().unwrap(), Engine::Local);
        assert_eq!(
            "ballista://10.0.0.5:50050".parse::<Engine>().unwrap(),
            Engine::Ballista {
                host: "10.0.0.5".into(),
                port: 50050
            }
        );
        assert_eq!(
            "ballista://standalone".parse::<Engine>().unwrap(),
            Engine::BallistaStandalone
        );
        for bad in ["spark://x:1", "ballista://host", "ballista://h:port"] {
            assert!(bad.parse::<Engine>().is_err(), "{bad}");
        }
    }

    #[cfg(not(feature = "ballista"))]
    #[tokio::test]
    async fn without_the_feature_ballista_says_how_to_build_it() {
        let e = Engine::BallistaStandalone
            .session()
            .await
            .err()
            .expect("an error");
        let e = e.to_string();
        assert!(e.contains("--features ballista"), "{e}");
        assert!(Engine::Local.session().await.is_ok());
    }
}
