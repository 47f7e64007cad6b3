//! The desk page (`GET /`), the list's posts as HTML for a page that reconnects
//! (`GET /fragment`), the page's form decisions without its script (`POST /decide`,
//! `POST /decide-group`, then back to the page), and the saved answers page (`GET /answers`,
//! `POST /answers`).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::api::{DecideForm, GroupForm, record, record_group};
use super::error::ApiError;
use super::session::{OpenPage, Session, Writer, with_cookie};
use super::state::Desk;
use crate::Order;
use crate::page::{self, View, Whose};

pub(super) fn routes() -> Router<Arc<Desk>> {
    Router::new()
        .route("/", get(index))
        .route("/fragment", get(fragment))
        .route("/decide", post(decide))
        .route("/decide-group", post(decide_group))
        .route("/answers", get(answers).post(save_answer))
}

/// Which list: `?view=queue|waiting|uncertain`, `&order=newest|probability|due`,
/// `&whose=all|mine|unassigned`.
#[derive(Deserialize, Default)]
pub(super) struct ViewQuery {
    view: Option<String>,
    order: Option<String>,
    whose: Option<String>,
}

impl ViewQuery {
    /// The list asked for: the queue, newest first, unless said otherwise.
    pub(super) fn view(&self) -> View {
        match (self.view.as_deref(), self.order.as_deref()) {
            (Some("uncertain"), _) => View::Uncertain,
            (Some("waiting"), _) => View::Waiting,
            (_, Some("probability")) => View::Queue(Order::Probability),
            (_, Some("due")) => View::Queue(Order::Due),
            _ => View::Queue(Order::Newest),
        }
    }

    /// Whose posts: everyone's unless said otherwise.
    pub(super) fn whose(&self) -> Whose {
        self.whose
            .as_deref()
            .and_then(Whose::parse)
            .unwrap_or_default()
    }
}

/// A page's frame for `session` (blocking: the alerts banner reads SQLite).
pub(super) fn frame<'a>(
    d: &'a Desk,
    session: &'a crate::auth::Session,
    team: &'a [String],
    alerts: &'a [crate::Alert],
) -> page::Frame<'a> {
    page::Frame {
        mission: &d.settings.mission,
        user: &session.user,
        csrf: &session.csrf,
        logout: d.methods.any(),
        role: session.role,
        team,
        clock: d.clock(),
        alerts,
    }
}

async fn index(
    State(d): State<Arc<Desk>>,
    Query(q): Query<ViewQuery>,
    OpenPage { session, cookie }: OpenPage,
) -> Result<Response, ApiError> {
    let (view, whose) = (q.view(), q.whose());
    let html = d
        .blocking("page", move |d| -> Result<String, ApiError> {
            let list = d.entries(view, whose, &session.user, d.settings.page_size)?;
            let today = d.store().today(d.day_start())?;
            let team = d.team();
            let alerts = d.recent_alerts()?;
            let frame = frame(d, &session, &team, &alerts);
            Ok(page::page(
                &frame,
                view,
                whose,
                &list,
                &d.today_html(&today),
            ))
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
    let (view, whose) = (q.view(), q.whose());
    let user = session.user.clone();
    let (list, clock) = d
        .blocking("fragment", move |d| {
            d.entries(view, whose, &user, d.settings.page_size)
                .map(|l| (l, d.clock()))
        })
        .await??;
    let cx = page::Cx {
        csrf: &session.csrf,
        clock,
    };
    Ok(Html(list.iter().map(|e| page::entry(e, &cx)).collect()))
}

async fn decide(State(d): State<Arc<Desk>>, w: Writer<DecideForm>) -> Result<Redirect, ApiError> {
    record(&d, &w).await?;
    Ok(Redirect::to("/"))
}

async fn decide_group(
    State(d): State<Arc<Desk>>,
    w: Writer<GroupForm>,
) -> Result<Redirect, ApiError> {
    record_group(&d, &w).await?;
    Ok(Redirect::to("/"))
}

/// The saved answers page, with a message (a refused save) when there is one.
async fn answers_page(
    d: &Arc<Desk>,
    session: crate::auth::Session,
    message: Option<String>,
) -> Result<Html<String>, ApiError> {
    let html = d
        .blocking("answers", move |d| -> Result<String, ApiError> {
            let answers = d.answers()?;
            let history = d.store().answer_history(50)?;
            let checked: Vec<_> = answers
                .iter()
                .map(|a| (a.clone(), fits(&a.body, d.settings.mastodon_max_characters)))
                .collect();
            let team = d.team();
            let frame = frame(d, &session, &team, &[]);
            Ok(page::answers_page(
                &frame,
                &checked,
                &history,
                message.as_deref(),
            ))
        })
        .await??;
    Ok(Html(html))
}

async fn answers(
    State(d): State<Arc<Desk>>,
    OpenPage { session, cookie }: OpenPage,
) -> Result<Response, ApiError> {
    let html = answers_page(&d, session, None).await?;
    Ok(with_cookie(html.into_response(), cookie))
}

/// A long author and link: what an answer is measured with (the platforms count a link as
/// 23 whatever its length; a handle is up to 30 characters on Mastodon).
const EXAMPLE_AUTHOR: &str = "a_rather_long_handle_of_thirty";
const EXAMPLE_LINK: &str = "https://example.org/a/post/3k2a4b5c6d7e8f9g";

/// How a saved answer fits each platform, filled with a long example author and link.
fn fits(body: &str, mastodon: usize) -> Result<Vec<page::Fits>, String> {
    use flagship_platforms::reply::{Fill, measure, render};
    let text = render(
        body,
        &Fill {
            author: Some(EXAMPLE_AUTHOR),
            link: Some(EXAMPLE_LINK),
        },
    )
    .map_err(|e| e.to_string())?;
    Ok(flagship_core::Platform::ALL
        .into_iter()
        .map(|p| {
            let l = measure(p, &text, mastodon);
            page::Fits {
                platform: p.as_str(),
                used: l.used,
                limit: l.limit,
            }
        })
        .collect())
}

/// A saved answer's form: `action` save (a new one without `id`) or delete.
#[derive(Deserialize)]
struct AnswerForm {
    #[serde(default)]
    id: Option<i64>,
    #[serde(default)]
    title: String,
    #[serde(default)]
    body: String,
    action: String,
    #[serde(default)]
    csrf: Option<String>,
}

impl super::session::CsrfField for AnswerForm {
    fn csrf(&self) -> Option<&str> {
        self.csrf.as_deref()
    }
}

/// Saves or retires an answer (who did it goes into its history), then back to the page; a
/// template that does not parse is refused with the page and its reason.
async fn save_answer(
    State(d): State<Arc<Desk>>,
    w: Writer<AnswerForm>,
) -> Result<Response, ApiError> {
    w.caller.may(crate::auth::Role::Lead)?;
    let who = w.caller.user().to_owned();
    let f = w.form;
    let title = f.title.trim().to_owned();
    let body = f.body.trim().replace("\r\n", "\n");
    let refused = match f.action.as_str() {
        "delete" => None,
        "save" if title.is_empty() || body.is_empty() => {
            Some("an answer needs a title and a text".to_owned())
        }
        "save" if title.chars().count() > 200 || body.chars().count() > 5000 => {
            Some("an answer's title is at most 200 characters, its text 5000".to_owned())
        }
        "save" => flagship_platforms::reply::placeholders(&body)
            .err()
            .map(|e| format!("not saved: {e}")),
        other => {
            return Err(ApiError::Bad(format!(
                "action {other:?}: use save or delete"
            )));
        }
    };
    if let Some(message) = refused {
        let session = match &w.caller {
            super::session::Caller::Session { session, .. } => session.clone(),
            _ => return Err(ApiError::Bad(message)),
        };
        let mut r = answers_page(&d, session, Some(message))
            .await?
            .into_response();
        *r.status_mut() = axum::http::StatusCode::BAD_REQUEST;
        return Ok(r);
    }
    d.blocking("answer", move |d| -> Result<(), crate::DeskError> {
        match (f.action.as_str(), f.id) {
            ("delete", Some(id)) => d.store().delete_answer(id, &who)?,
            ("delete", None) => return Err(crate::DeskError::NoAnswer(0)),
            (_, id) => {
                d.store().save_answer(id, &title, &body, &who)?;
            }
        }
        tracing::info!(who, action = f.action, "desk: saved answers changed");
        d.embed_answers()
    })
    .await??;
    Ok(Redirect::to("/answers").into_response())
}
