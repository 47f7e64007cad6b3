//! `GET /metrics`: the desk's figures in Prometheus' text format — the queue's depth and its
//! oldest post's age, every decision recorded by kind, the posts by platform (read from the
//! database at each scrape, on the blocking pool) — and the live loop's figures when this
//! desk runs one ([`Desk::live_telemetry`]).
//!
//! A session or the bearer token may read it (a scraper sends `Authorization: Bearer`); a
//! desk with no login method (loopback only) answers whatever its guard lets through. It
//! changes nothing and keeps no state of its own.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use flagship_core::Platform;
use flagship_core::telemetry::{self, Exposition, Kind};

use super::error::ApiError;
use super::session::AnyCaller;
use super::state::Desk;

pub(super) fn routes() -> Router<Arc<Desk>> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(
    State(d): State<Arc<Desk>>,
    caller: Result<AnyCaller, ApiError>,
) -> Result<Response, ApiError> {
    if let Err(refused) = caller
        && d.methods.any()
    {
        return Err(refused);
    }
    let f = d.blocking("metrics", |d| d.store().figures()).await??;
    let mut out = Exposition::new();
    out.family(
        "flagship_desk_queue_depth",
        "Flagged posts waiting for a decision.",
        Kind::Gauge,
    )
    .sample("flagship_desk_queue_depth", &[], f.queue as f64)
    .family(
        "flagship_desk_oldest_undecided_age_seconds",
        "How long the oldest post in the queue has waited since it arrived (0: the queue is empty).",
        Kind::Gauge,
    )
    .sample(
        "flagship_desk_oldest_undecided_age_seconds",
        &[],
        f.oldest_undecided.map_or(0.0, |at| {
            (chrono::Utc::now() - at).num_milliseconds().max(0) as f64 / 1e3
        }),
    )
    .family(
        "flagship_desk_decisions_total",
        "Decisions recorded, by kind (undo included): the desk's history, kept across restarts.",
        Kind::Counter,
    );
    for (decision, n) in &f.decisions {
        out.sample(
            "flagship_desk_decisions_total",
            &[("decision", decision.as_str())],
            *n as f64,
        );
    }
    out.family(
        "flagship_desk_posts_total",
        "Posts stored in the desk, by platform.",
        Kind::Counter,
    );
    let stored = |name: &str| f.posts.iter().find(|(p, _)| p == name).map(|(_, n)| *n);
    let known = Platform::ALL.map(Platform::as_str);
    for name in known {
        out.sample(
            "flagship_desk_posts_total",
            &[("platform", name)],
            stored(name).unwrap_or(0) as f64,
        );
    }
    for (name, n) in f.posts.iter().filter(|(p, _)| !known.contains(&p.as_str())) {
        out.sample(
            "flagship_desk_posts_total",
            &[("platform", name)],
            *n as f64,
        );
    }
    if let Some(live) = d.live_telemetry.get() {
        live.encode(&mut out);
    }
    Ok((
        [(header::CONTENT_TYPE, telemetry::CONTENT_TYPE)],
        out.into_string(),
    )
        .into_response())
}
