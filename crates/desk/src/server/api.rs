//! The decision API for scripts and the page's script (a session, or the bearer token):
//! `POST /api/decide`, `POST /api/decide-group`, `GET /api/queue`, `GET /api/today` (JSON)
//! and `GET /export` (a download); [`record`] and [`record_group`], the decisions both pairs
//! of decide routes make; and the JSON views of the store's types the API and the event
//! stream send.
//!
//! The views' fields are in alphabetical order, the order the answers have always had.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::pages::ViewQuery;
use super::session::{AnyCaller, CsrfField, Writer};
use super::state::Desk;
use crate::auth::Role;
use crate::export::Format;
use crate::{Decision, Item, Today};

pub(super) fn routes() -> Router<Arc<Desk>> {
    Router::new()
        .route("/api/decide", post(decide))
        .route("/api/decide-group", post(decide_group))
        .route("/api/queue", get(queue))
        .route("/api/today", get(today))
        .route("/export", get(export))
}

/// A decision's form (`POST /api/decide`, `POST /decide`).
#[derive(Deserialize)]
pub(super) struct DecideForm {
    id: String,
    decision: String,
    #[serde(default)]
    csrf: Option<String>,
}

impl CsrfField for DecideForm {
    fn csrf(&self) -> Option<&str> {
        self.csrf.as_deref()
    }
}

/// Records the writer's decision, off the async workers (SQLite fsyncs): the post's decision
/// now (none after undoing the only one).
pub(super) async fn record(
    d: &Arc<Desk>,
    w: &Writer<DecideForm>,
) -> Result<Option<Decision>, ApiError> {
    w.caller.may(Role::Agent)?;
    let f = &w.form;
    let decision = parse_decision(&f.decision)?;
    let (id, user) = (f.id.clone(), w.caller.user().to_owned());
    Ok(
        d.blocking("decision", move |d| d.decide(&id, decision, &user))
            .await??,
    )
}

/// A group decision's form (`POST /api/decide-group`, `POST /decide-group`).
#[derive(Deserialize)]
pub(super) struct GroupForm {
    group: i64,
    decision: String,
    #[serde(default)]
    csrf: Option<String>,
}

impl CsrfField for GroupForm {
    fn csrf(&self) -> Option<&str> {
        self.csrf.as_deref()
    }
}

fn parse_decision(s: &str) -> Result<Decision, ApiError> {
    Decision::parse(s).ok_or_else(|| {
        ApiError::Bad(format!(
            "decision {s:?}: use needs_reply, no_reply, done or undo"
        ))
    })
}

/// Records the writer's decision for every waiting post of a group (or takes the group's
/// last one back), off the async workers.
pub(super) async fn record_group(
    d: &Arc<Desk>,
    w: &Writer<GroupForm>,
) -> Result<crate::GroupDecided, ApiError> {
    w.caller.may(Role::Agent)?;
    let decision = parse_decision(&w.form.decision)?;
    let (g, user) = (w.form.group, w.caller.user().to_owned());
    Ok(d.blocking("group decision", move |d| {
        d.decide_group(g, decision, &user)
    })
    .await??)
}

/// The answer to a group decision: the group decision's id and each post it changed.
#[derive(Serialize)]
struct GroupDecidedView<'a> {
    bulk: i64,
    decision: Option<&'static str>,
    group: i64,
    posts: Vec<Decided<'a>>,
    title: Option<String>,
}

async fn decide_group(
    State(d): State<Arc<Desk>>,
    w: Writer<GroupForm>,
) -> Result<Response, ApiError> {
    let done = record_group(&d, &w).await?;
    let decision = parse_decision(&w.form.decision)?;
    let kept = (decision != Decision::Undo).then_some(decision);
    Ok(Json(GroupDecidedView {
        bulk: done.bulk,
        decision: kept.map(Decision::as_str),
        group: w.form.group,
        posts: done
            .posts
            .iter()
            .map(|(id, now)| Decided::new(id, *now))
            .collect(),
        title: kept.map(|d| format!("{} (whole group)", d.title())),
    })
    .into_response())
}

async fn decide(State(d): State<Arc<Desk>>, w: Writer<DecideForm>) -> Result<Response, ApiError> {
    let now = record(&d, &w).await?;
    Ok(Json(Decided::new(&w.form.id, now)).into_response())
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(flatten)]
    view: ViewQuery,
    limit: Option<usize>,
}

async fn queue(
    State(d): State<Arc<Desk>>,
    Query(q): Query<ListQuery>,
    AnyCaller(user): AnyCaller,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(d.settings.page_size).min(10_000);
    let (view, whose) = (q.view.view(), q.view.whose());
    let list = d
        .blocking("queue", move |d| d.items(view, whose, &user, limit))
        .await??;
    Ok(Json(list.iter().map(ItemView::from).collect::<Vec<_>>()).into_response())
}

async fn today(State(d): State<Arc<Desk>>, _: AnyCaller) -> Result<Json<TodayView>, ApiError> {
    let t = d
        .blocking("today", |d| d.store().today(d.day_start()))
        .await??;
    Ok(Json(TodayView::from(&t)))
}

#[derive(Deserialize)]
struct ExportQuery {
    format: Option<String>,
    /// `0`: leave out the posts decided with their whole question group.
    bulk: Option<u8>,
}

async fn export(
    State(d): State<Arc<Desk>>,
    Query(q): Query<ExportQuery>,
    _: AnyCaller,
) -> Result<Response, ApiError> {
    let format: Format = q
        .format
        .as_deref()
        .unwrap_or("labels")
        .parse()
        .map_err(ApiError::Format)?;
    let (bytes, _) = d
        .blocking("export", move |d| {
            crate::export::render(&d.store(), format, q.bulk != Some(0))
        })
        .await??;
    Ok((
        [
            (header::CONTENT_TYPE, format.content_type().to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}\"", format.file_name()),
            ),
        ],
        bytes,
    )
        .into_response())
}

/// A post's decision now (`POST /api/decide`'s answer, the `decided` event).
#[derive(Serialize)]
pub(super) struct Decided<'a> {
    decision: Option<&'static str>,
    id: &'a str,
    title: Option<&'static str>,
}

impl<'a> Decided<'a> {
    pub(super) fn new(id: &'a str, decision: Option<Decision>) -> Decided<'a> {
        Decided {
            decision: decision.map(Decision::as_str),
            id,
            title: decision.map(Decision::title),
        }
    }
}

/// A post as `GET /api/queue` lists it.
#[derive(Serialize)]
struct ItemView<'a> {
    author: Option<&'a str>,
    created_at: Option<DateTime<Utc>>,
    decision: Option<&'static str>,
    id: &'a str,
    matched: &'a [String],
    model: &'a str,
    need_support: bool,
    platform: &'a str,
    probability: f64,
    held: Option<&'a str>,
    text: &'a str,
    threshold: f64,
    url: Option<&'a str>,
    why: Vec<WordView<'a>>,
}

/// A word of a post's "why", with its weight (as f64: the precision it has always shown).
#[derive(Serialize)]
struct WordView<'a> {
    weight: f64,
    word: &'a str,
}

impl<'a> From<&'a Item> for ItemView<'a> {
    fn from(i: &'a Item) -> ItemView<'a> {
        ItemView {
            author: i.author.as_deref(),
            created_at: i.created_at,
            decision: i.decision.map(Decision::as_str),
            id: &i.id,
            matched: &i.terms,
            model: &i.model_id,
            need_support: i.need_support,
            platform: &i.platform,
            probability: i.probability,
            held: i.held.as_deref(),
            text: &i.text,
            threshold: i.threshold,
            url: i.url.as_deref(),
            why: i
                .why
                .iter()
                .map(|w| WordView {
                    weight: f64::from(w.weight),
                    word: &w.word,
                })
                .collect(),
        }
    }
}

/// The today panel's counts (`GET /api/today`).
#[derive(Serialize)]
struct TodayView {
    decided: u64,
    flagged: u64,
    flagged_decided: u64,
    flagged_needed: u64,
    missed_found: u64,
    precision: Option<f64>,
    seen: u64,
}

impl From<&Today> for TodayView {
    fn from(t: &Today) -> TodayView {
        TodayView {
            decided: t.decided,
            flagged: t.flagged,
            flagged_decided: t.flagged_decided,
            flagged_needed: t.flagged_needed,
            missed_found: t.missed_found,
            precision: t.precision,
            seen: t.seen,
        }
    }
}
