//! The desk's web server (axum): the page, live updates (SSE), the decision API, logins,
//! exports and the report pages.
//!
//! | route | what | who |
//! |---|---|---|
//! | `GET /` (`?view=queue&order=newest\|probability`, `?view=uncertain`) | the page | session (opened for the local user when no auth method is configured) |
//! | `GET /events` | SSE: `post` (a new flagged post's HTML), `today` (the panel), `why` (`{id, words}`), `decided` (`{id, decision, title}`), `reload` | session |
//! | `POST /api/decide`, `POST /decide` | record a decision (`id`, `decision`; CSRF token in `X-CSRF-Token` or the `csrf` field), committed before the answer | session + CSRF, or `Authorization: Bearer` |
//! | `GET /api/queue`, `GET /api/today` | JSON | session or bearer |
//! | `GET /export?format=labels\|label-studio\|argilla` | the decisions as a download | session or bearer |
//! | `GET /metrics` | Prometheus' text format: the queue, decisions, posts, and the live loop's figures when it runs here (`metrics`) | session or bearer; anyone the guard lets through when no login method is configured |
//! | `GET /report`, `GET /monitor`, `GET /reports/…` | the evaluation report and monitor pages from `storage.reports` | session |
//! | `GET /fragment` (`?view=…&order=…`) | the list's posts as HTML (the page merges it after its event stream (re)connects) | session |
//! | `POST /api/assign`, `GET /summary`, `GET /summary.md` | take / give / release; the lead's daily summary (`team`) | agents and leads; sessions |
//! | `GET /login`, `POST /login`, `POST /logout` | sessions (login CSRF by a cookie-bound token; 5 failed logins a minute per client and name, 5 wrong tokens per client, then 429; the right token is never held back) | anyone |
//! | `GET /assets/…`, `GET /healthz` | the script, the stylesheet; liveness | anyone |
//!
//! Every answer carries `Content-Security-Policy: default-src 'self'` (plus no framing, no
//! base, forms to self), `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer`.
//! A POST from another site (`Origin` or `Sec-Fetch-Site` say so) is refused whatever it
//! carries. A server not bound to loopback refuses to start without an auth method and
//! without `desk.secure_cookie` (TLS in front: passwords never cross a network in clear);
//! without an auth method (loopback) it answers only requests whose `Host` is a loopback
//! name, so a page at a rebound DNS name cannot reach it, and no request a proxy forwarded
//! (`Forwarded`, `X-Forwarded-*`: 403); nor does it start with `desk.secure_cookie` (a TLS
//! proxy in front). Behind a proxy listed in `desk.trusted_proxies` the client is the one
//! its forwarding header names (`proxy`). Sessions live in the desk's SQLite, hashed. The
//! server loop (`conn`) is hyper's HTTP/1 with a header timeout (also the idle keep-alive
//! timeout), a request timeout and a connection cap; event streams are capped in all and
//! per session; an internal error reaches the client as a reference only (`error`).
//!
//! The modules follow axum's seams: [`Desk`] (`state`) is the router's state — the store,
//! sessions, the channel to open pages; `session` holds the cookies, the guard every request
//! passes and the extractors that name the caller (a handler that takes one never sees a
//! caller it may not serve); `error` turns every refusal and store error into its answer;
//! `pages`, `api`, `events`, `reports`, `login` and `assets` each bring their routes, merged
//! in [`router`]. Handlers reach SQLite and the reports folder only through
//! `Desk::blocking`, never on an async worker.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;

mod api;
mod assets;
mod conn;
mod error;
mod events;
mod login;
mod metrics;
mod pages;
mod proxy;
mod replies;
mod reports;
mod session;
mod state;
mod team;

pub use state::{Desk, Limits, LiveSink, Settings};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "desk: {0} is not a loopback address; serving it needs an auth method (desk.users or desk.token_env)"
    )]
    Exposed(SocketAddr),
    #[error(
        "desk: {0} is not a loopback address; serve it behind TLS and set desk.secure_cookie = true (logins must not cross a network in clear)"
    )]
    Cleartext(SocketAddr),
    #[error(
        "desk: desk.secure_cookie = true says a TLS proxy is in front, and this desk has no login method: anyone reaching the proxy would use it. Configure desk.users or desk.token_env"
    )]
    OpenBehindTls,
    #[error(
        "desk.alerts.webhook_format = \"json\" signs each alert: set the secret in the environment variable {0} (desk.alerts.webhook_secret_env)"
    )]
    NoWebhookSecret(String),
    #[error("desk.alerts.webhook (or its environment variable): {0}")]
    Webhook(String),
    #[error("desk.trusted_proxies: {0:?} is not an IP address or CIDR")]
    Proxy(String),
    #[error("desk: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("desk server: {0}")]
    Io(#[from] std::io::Error),
}

/// The desk's routes (serve with [`serve`], which passes the peer address logins need):
/// each area's, behind the guard and the security headers.
pub fn router(d: Arc<Desk>) -> Router {
    Router::new()
        .merge(pages::routes())
        .merge(api::routes())
        .merge(replies::routes())
        .merge(team::routes())
        .merge(events::routes())
        .merge(reports::routes())
        .merge(login::routes())
        .merge(metrics::routes())
        .merge(assets::routes())
        .layer(axum::middleware::from_fn_with_state(
            d.clone(),
            session::guard,
        ))
        .layer(axum::middleware::map_response(assets::security_headers))
        .with_state(d)
}

/// Binds `addr` (port 0: any free port) and returns the listener with its address.
pub async fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), ServerError> {
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })?;
    let local = l.local_addr()?;
    Ok((l, local))
}

/// Serves the desk on `listener` until `shutdown` resolves (open event streams are ended,
/// then the connections are let finish): hyper's HTTP/1 with a header timeout, a request
/// timeout and a connection cap ([`Limits`]; `conn`).
pub async fn serve(
    d: Arc<Desk>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let tasks = team::start(&d);
    let served = conn::serve(router(d.clone()), d, listener, shutdown).await;
    for t in tasks {
        t.abort();
    }
    served
}
