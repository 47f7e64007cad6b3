//! What anyone may fetch — the page's script and stylesheet (`GET /assets/…`, built into the
//! binary) and liveness (`GET /healthz`) — and the headers every answer carries: the strict
//! CSP, `nosniff`, no referrer, no framing, and `Cache-Control: no-store` unless the route
//! set its own.

use std::sync::Arc;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::state::Desk;

const CSP: &str = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";
const JS: &str = include_str!("../../assets/desk.js");
const CSS: &str = include_str!("../../assets/desk.css");

pub(super) fn routes() -> Router<Arc<Desk>> {
    Router::new()
        .route("/assets/{name}", get(asset))
        .route("/healthz", get(|| async { "ok" }))
}

async fn asset(Path(name): Path<String>) -> Response {
    let (kind, body) = match name.as_str() {
        "desk.js" => ("text/javascript; charset=utf-8", JS),
        "desk.css" => ("text/css; charset=utf-8", CSS),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Sets the security headers on every answer (the outermost layer: refusals get them too).
pub(super) async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    r
}
