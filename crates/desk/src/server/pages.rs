//! The desk page (`GET /`), the list's posts as HTML for a page that reconnects
//! (`GET /fragment`), and the page's form decision without its script (`POST /decide`, then
//! back to the page).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::api::{DecideForm, record};
use super::error::ApiError;
use super::session::{OpenPage, Session, Writer, with_cookie};
use super::state::{Desk, day_start};
use crate::Order;
use crate::page::{self, View};

pub(super) fn routes() -> Router<Arc<Desk>> {
    Router::new()
        .route("/", get(index))
        .route("/fragment", get(fragment))
        .route("/decide", post(decide))
}

/// Which list: `?view=queue|uncertain`, `&order=newest|probability`.
#[derive(Deserialize, Default)]
pub(super) struct ViewQuery {
    view: Option<String>,
    order: Option<String>,
}

impl ViewQuery {
    /// The list asked for: the queue, newest first, unless said otherwise.
    pub(super) fn view(&self) -> View {
        match (self.view.as_deref(), self.order.as_deref()) {
            (Some("uncertain"), _) => View::Uncertain,
            (_, Some("probability")) => View::Queue(Order::Probability),
            _ => View::Queue(Order::Newest),
        }
    }
}

async fn index(
    State(d): State<Arc<Desk>>,
    Query(q): Query<ViewQuery>,
    OpenPage { session, cookie }: OpenPage,
) -> Result<Response, ApiError> {
    let view = q.view();
    let html = d
        .blocking("page", move |d| -> Result<String, ApiError> {
            let list = d.items(view, d.settings.page_size)?;
            let today = d.store().today(day_start())?;
            let frame = page::Frame {
                mission: &d.settings.mission,
                user: &session.user,
                csrf: &session.csrf,
                logout: d.methods.any(),
            };
            Ok(page::page(&frame, view, &list, &d.today_html(&today)))
        })
        .await??;
    Ok(with_cookie(Html(html).into_response(), cookie))
}

/// The list's posts as HTML, for a page to merge what it missed while its event stream was
/// (re)connecting.
async fn fragment(
    State(d): State<Arc<Desk>>,
    Query(q): Query<ViewQuery>,
    Session { session, .. }: Session,
) -> Result<Html<String>, ApiError> {
    let view = q.view();
    let list = d
        .blocking("fragment", move |d| d.items(view, d.settings.page_size))
        .await??;
    Ok(Html(
        list.iter().map(|i| page::post(i, &session.csrf)).collect(),
    ))
}

async fn decide(State(d): State<Arc<Desk>>, w: Writer<DecideForm>) -> Result<Redirect, ApiError> {
    record(&d, &w).await?;
    Ok(Redirect::to("/"))
}
