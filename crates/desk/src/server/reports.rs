//! The report pages, from the reports folder (`storage.reports`, when local), for sessions:
//! `GET /report` (to the evaluation report), `GET /monitor` (to the newest monitoring
//! batch's page), `GET /reports/…` (a file of the folder — pages, their styles and plots —
//! never outside it); and the newest batch's drift line the today panel shows.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::extract::{self, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::Deserialize;

use super::error::ApiError;
use super::session::Page;
use super::state::Desk;
use crate::page;

pub(super) fn routes() -> Router<Arc<Desk>> {
    Router::new()
        .route("/report", get(report))
        .route("/monitor", get(monitor))
        .route("/reports/{*path}", get(file))
}

/// A 404 page saying what is missing and how it comes.
fn missing(title: &str, text: &str) -> Response {
    (StatusCode::NOT_FOUND, Html(page::message(title, text))).into_response()
}

async fn report(State(d): State<Arc<Desk>>, _: Page) -> Result<Response, ApiError> {
    let found = d
        .blocking("report", |d| {
            let dir = d.settings.reports.as_deref();
            dir.is_some_and(|dir| dir.join("report.html").is_file())
        })
        .await?;
    Ok(if found {
        Redirect::to("/reports/report.html").into_response()
    } else {
        missing(
            "No evaluation report yet",
            "Run `cargo xtask pipeline` (or `flagship evaluate`): the report appears here.",
        )
    })
}

async fn monitor(State(d): State<Arc<Desk>>, _: Page) -> Result<Response, ApiError> {
    let latest = d
        .blocking("monitor", |d| {
            let dir = d.settings.reports.as_deref();
            dir.and_then(|dir| latest_batch(dir, "monitor.html"))
        })
        .await?;
    Ok(match latest {
        Some(batch) => {
            Redirect::to(&format!("/reports/monitor/{batch}/monitor.html")).into_response()
        }
        None => missing(
            "No monitoring batch yet",
            "Monitoring batches appear here after `flagship monitor` (or the pipeline) ran.",
        ),
    })
}

/// A file of the reports folder (pages, their styles and plots), never outside it.
async fn file(
    State(d): State<Arc<Desk>>,
    extract::Path(rel): extract::Path<String>,
    _: Page,
) -> Result<Response, ApiError> {
    let rel = PathBuf::from(rel);
    if d.settings.reports.is_none() || !rel.components().all(|c| matches!(c, Component::Normal(_)))
    {
        return Err(ApiError::NotFound);
    }
    let kind = content_type(&rel).ok_or(ApiError::NotFound)?;
    let bytes = d
        .blocking("reports", move |d| {
            read_within(d.settings.reports.as_deref()?, &rel)
        })
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(([(header::CONTENT_TYPE, kind)], bytes).into_response())
}

/// The content type of a reports file the desk serves (by extension), or none.
fn content_type(rel: &Path) -> Option<&'static str> {
    Some(match rel.extension()?.to_str()? {
        "html" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "json" => "application/json",
        "md" => "text/plain; charset=utf-8",
        _ => return None,
    })
}

/// The bytes of `dir/rel` if it is a file that, links resolved, lies inside `dir`.
fn read_within(dir: &Path, rel: &Path) -> Option<Vec<u8>> {
    let path = std::fs::canonicalize(dir.join(rel)).ok()?;
    let base = std::fs::canonicalize(dir).ok()?;
    if !path.starts_with(&base) {
        return None;
    }
    std::fs::read(&path).ok()
}

/// The newest monitoring batch folder under `reports` holding `file` (`batch-0003`); only
/// plain names (letters, digits, `.`, `_`, `-`) count.
fn latest_batch(reports: &Path, file: &str) -> Option<String> {
    let mut names: Vec<String> = std::fs::read_dir(reports.join("monitor"))
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        })
        .filter(|n| reports.join("monitor").join(n).join(file).is_file())
        .collect();
    names.sort();
    names.pop()
}

/// The latest monitoring batch's drift, in words.
pub(super) fn latest_drift(reports: &Path) -> String {
    let Some(name) = latest_batch(reports, "monitor.json") else {
        return "no monitoring batch yet".into();
    };
    #[derive(Deserialize)]
    struct Report {
        drift: Drift,
    }
    #[derive(Deserialize)]
    struct Drift {
        flagged: usize,
        changes: Vec<serde_json::Value>,
        retrain: Option<bool>,
    }
    let path = reports.join("monitor").join(&name).join("monitor.json");
    let d = match std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Report>(&b).ok())
    {
        Some(r) => r.drift,
        None => return format!("{name}: monitor.json unreadable"),
    };
    let retrain = match d.retrain {
        Some(true) => "; quality moved: retrain",
        Some(false) => "; quality steady",
        None => "",
    };
    format!(
        "{name}: {} of {} statistics moved{retrain}",
        d.flagged,
        d.changes.len()
    )
}
