//! Replies from the desk: `POST /api/reply/preview` (what each post would be sent, filled in
//! for its author, with its platform's length) and `POST /api/reply/send` (an explicit send,
//! never automatic), for one post (`id`) or every waiting post of a question group (`group`,
//! each with its own reply). A post answered before asks first (409 with `ask`); a reply whose
//! outcome was unknown is checked with its platform before it is sent again. Every attempt is
//! a row in `replies` (who, when, the idempotency key, how it ended); a reply that went out
//! marks its post done. A platform without credentials gets no send: the page copies the
//! answer and opens the post, as before.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::session::{AnyCaller, CsrfField, Writer};
use super::state::Desk;
use crate::{Decision, DeskError, Item, ReplyRow};
use flagship_reply::{Outcome, Reply, Target};

pub(super) fn routes() -> Router<Arc<Desk>> {
    Router::new()
        .route("/api/reply/preview", post(preview))
        .route("/api/reply/send", post(send))
        .route("/api/thread", get(thread))
}

/// Which posts, and which answer: `id` or `group`; `answer` (a saved answer's id) or `text`.
#[derive(Deserialize)]
pub(super) struct ReplyForm {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    group: Option<i64>,
    #[serde(default)]
    answer: Option<i64>,
    #[serde(default)]
    text: Option<String>,
    /// `1`: send even to a post answered before.
    #[serde(default)]
    confirm: Option<u8>,
    #[serde(default)]
    csrf: Option<String>,
}

impl CsrfField for ReplyForm {
    fn csrf(&self) -> Option<&str> {
        self.csrf.as_deref()
    }
}

/// One post's reply as the preview shows it.
#[derive(Serialize)]
struct Preview {
    author: Option<String>,
    /// Whether this desk can send it (credentials for the platform), else copy and open.
    can_send: bool,
    fits: bool,
    id: String,
    limit: usize,
    platform: String,
    /// Replies that went out to this post before (a send asks first).
    replied_before: usize,
    text: Result<String, String>,
    url: Option<String>,
    used: usize,
}

/// One post's send, as it ended.
#[derive(Serialize)]
struct Sent {
    error: Option<String>,
    id: String,
    /// `sent`, `failed`, `unknown` (it may have gone out: checked before any retry), or
    /// `not_sent` (no credentials: copy and open).
    state: String,
    url: Option<String>,
}

/// The posts a form names: the post, or the group's waiting posts (at most 200).
fn targets(d: &Desk, f: &ReplyForm) -> Result<Vec<Item>, ApiError> {
    let store = d.store();
    match (&f.id, f.group) {
        (Some(id), None) => Ok(vec![store.item(id)?]),
        (None, Some(g)) => Ok(store
            .group_card(g)?
            .members
            .into_iter()
            .filter(|m| m.decision.is_none())
            .collect()),
        _ => Err(ApiError::Bad(
            "name a post (`id`) or a group (`group`)".into(),
        )),
    }
}

/// The answer's template: a saved answer's text, or the form's own.
fn template(d: &Desk, f: &ReplyForm) -> Result<String, ApiError> {
    match (f.answer, &f.text) {
        (Some(a), None) => Ok(d
            .answers()?
            .iter()
            .find(|x| x.id == a)
            .ok_or(DeskError::NoAnswer(a))?
            .body
            .clone()),
        (None, Some(t)) if !t.trim().is_empty() => Ok(t.trim().to_owned()),
        _ => Err(ApiError::Bad(
            "name a saved answer (`answer`) or give the `text`".into(),
        )),
    }
}

/// What the desk knows of a post, as the replier takes it.
fn target(i: &Item) -> Target {
    Target {
        platform: i.platform.parse().unwrap_or_default(),
        id: i.id.clone(),
        url: i.url.clone(),
        author: i.author.clone(),
        cid: i.refs.cid.clone(),
        root: i.refs.root.as_ref().and_then(|r| {
            Some(flagship_reply::StrongRef {
                uri: r.id.clone(),
                cid: r.cid.clone()?,
            })
        }),
    }
}

/// The template filled in for `item` (its author as the platform shows them).
async fn filled(d: &Arc<Desk>, template: &str, item: &Item) -> Result<String, String> {
    let handle = match d.replier() {
        Some(r) => r.author_handle(&target(item)).await,
        None => None,
    }
    .or_else(|| item.author.clone());
    flagship_platforms::reply::render(
        template,
        &flagship_platforms::reply::Fill {
            author: handle.as_deref(),
            link: item.url.as_deref(),
        },
    )
    .map_err(|e| e.to_string())
}

async fn preview(
    State(d): State<Arc<Desk>>,
    w: Writer<ReplyForm>,
) -> Result<Json<Vec<Preview>>, ApiError> {
    w.caller.may(crate::auth::Role::Agent)?;
    let form = Arc::new(w.form);
    let f = form.clone();
    let (items, template, before) = d
        .blocking("reply preview", move |d| -> Result<_, ApiError> {
            let items = targets(d, &f)?;
            let before = items
                .iter()
                .map(|i| replied(d, &i.id))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((items, template(d, &f)?, before))
        })
        .await??;
    let mut out = Vec::with_capacity(items.len());
    for (i, before) in items.iter().zip(before) {
        let text = filled(&d, &template, i).await;
        let platform: flagship_core::Platform = i.platform.parse().unwrap_or_default();
        let len = text.as_ref().map_or(
            flagship_platforms::reply::Length {
                used: 0,
                limit: 0,
                bytes: 0,
                max_bytes: None,
            },
            |t| flagship_platforms::reply::measure(platform, t, d.settings.mastodon_max_characters),
        );
        out.push(Preview {
            author: i.author.clone(),
            can_send: d.replier().is_some_and(|r| r.can_reply(platform)),
            fits: text.is_ok() && len.fits(),
            id: i.id.clone(),
            limit: len.limit,
            platform: i.platform.clone(),
            replied_before: before,
            text,
            url: i.url.clone(),
            used: len.used,
        });
    }
    Ok(Json(out))
}

/// Replies that went out to `post` before.
fn replied(d: &Desk, post: &str) -> Result<usize, DeskError> {
    Ok(d.store()
        .replies_of(post)?
        .iter()
        .filter(|r| r.state == "sent")
        .count())
}

/// The answer to a send: each post's outcome, or 409 asking first.
#[derive(Serialize)]
struct SendAnswer {
    /// Set when some post was answered before and the form did not confirm: nothing was sent.
    ask: Option<String>,
    posts: Vec<Sent>,
}

async fn send(State(d): State<Arc<Desk>>, w: Writer<ReplyForm>) -> Result<Response, ApiError> {
    w.caller.may(crate::auth::Role::Agent)?;
    let who = w.caller.user().to_owned();
    let form = Arc::new(w.form);
    let f = form.clone();
    let (items, template, rows) = d
        .blocking("reply", move |d| -> Result<_, ApiError> {
            let items = targets(d, &f)?;
            let rows = items
                .iter()
                .map(|i| d.store().replies_of(&i.id))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((items, template(d, &f)?, rows))
        })
        .await??;
    if items.is_empty() {
        return Err(ApiError::Bad("no waiting post to answer".into()));
    }
    let answered: Vec<&str> = items
        .iter()
        .zip(&rows)
        .filter(|(_, r)| r.iter().any(|r| r.state == "sent"))
        .map(|(i, _)| i.id.as_str())
        .collect();
    // Someone else holds some of them: two people never answer the same post unawares.
    let held: Vec<&str> = items
        .iter()
        .filter_map(|i| i.held.as_deref())
        .filter(|h| *h != who)
        .collect();
    if (!answered.is_empty() || !held.is_empty()) && form.confirm != Some(1) {
        let ask = if held.is_empty() {
            format!(
                "{} of these posts already has a reply from the desk: send another?",
                answered.len()
            )
        } else {
            let mut names: Vec<&str> = held.clone();
            names.sort_unstable();
            names.dedup();
            format!(
                "{} of these posts {} held by {}: reply anyway?",
                held.len(),
                if held.len() == 1 { "is" } else { "are" },
                names.join(", ")
            )
        };
        return Ok((
            axum::http::StatusCode::CONFLICT,
            Json(SendAnswer {
                ask: Some(ask),
                posts: Vec::new(),
            }),
        )
            .into_response());
    }
    let mut out = Vec::with_capacity(items.len());
    for (item, earlier) in items.iter().zip(rows) {
        out.push(send_one(&d, &template, item, &earlier, form.group, &who).await?);
    }
    Ok(Json(SendAnswer {
        ask: None,
        posts: out,
    })
    .into_response())
}

/// Sends one post's reply (after checking an unknown earlier attempt), records how it ended
/// and marks the post done when it went out.
async fn send_one(
    d: &Arc<Desk>,
    template: &str,
    item: &Item,
    earlier: &[ReplyRow],
    group: Option<i64>,
    who: &str,
) -> Result<Sent, ApiError> {
    let platform: flagship_core::Platform = item.platform.parse().unwrap_or_default();
    let Some(replier) = d.replier().filter(|r| r.can_reply(platform)) else {
        return Ok(Sent {
            error: Some(format!(
                "no {platform} account configured for replies: copy the answer and open the post"
            )),
            id: item.id.clone(),
            state: "not_sent".into(),
            url: item.url.clone(),
        });
    };
    // The platform said when it takes requests again: nothing is sent before.
    let wait = super::state::lock(&d.rate_limited)
        .get(&platform)
        .and_then(|until| until.checked_duration_since(std::time::Instant::now()));
    if let Some(wait) = wait {
        return Ok(Sent {
            error: Some(format!(
                "{platform} rate limit: not sent; try again in {} s",
                wait.as_secs().max(1)
            )),
            id: item.id.clone(),
            state: "failed".into(),
            url: None,
        });
    }
    let text = filled(d, template, item)
        .await
        .map_err(|e| ApiError::Bad(format!("the answer cannot be filled in: {e}")))?;
    let t = target(item);
    // An earlier attempt whose outcome is unknown is checked first: it may have gone out.
    let mut row = None;
    if let Some(u) = earlier.iter().find(|r| r.state == "unknown") {
        let checked = replier
            .check(
                &t,
                &Reply {
                    text: u.text.clone(),
                    key: u.key.clone(),
                },
            )
            .await;
        match checked {
            Outcome::AlreadySent { .. } | Outcome::Sent { .. } => {
                return finish(d, u.id, checked, item, who).await;
            }
            // The platform could not be asked: still unknown, so nothing is sent again.
            Outcome::Unknown { message } => {
                return Ok(Sent {
                    error: Some(format!(
                        "outcome still unknown: {message}; not sent again until the check succeeds"
                    )),
                    id: item.id.clone(),
                    state: "unknown".into(),
                    url: None,
                });
            }
            // It did not go out: safe to send again.
            Outcome::Failed { .. } => row = Some(u.clone()),
        }
    }
    let row = match row {
        // The same text again under the unknown attempt's key (safe: it did not go out).
        Some(r) if r.text == text => r,
        _ => {
            let (post, text, who) = (item.id.clone(), text.clone(), who.to_owned());
            d.blocking("reply", move |d| {
                d.store().start_reply(&post, &text, &who, group)
            })
            .await??
        }
    };
    let outcome = replier
        .send(
            &t,
            &Reply {
                text: row.text.clone(),
                key: row.key.clone(),
            },
        )
        .await;
    finish(d, row.id, outcome, item, who).await
}

/// Records how a reply ended; one that went out marks its post done (by `who`).
async fn finish(
    d: &Arc<Desk>,
    row: i64,
    outcome: Outcome,
    item: &Item,
    who: &str,
) -> Result<Sent, ApiError> {
    let (state, id, url, error) = match outcome {
        Outcome::Sent { id, url } => ("sent", Some(id), Some(url), None),
        Outcome::AlreadySent { id, url } => ("sent", id, url, None),
        Outcome::Failed {
            status,
            message,
            retry_after,
        } => {
            if let Some(wait) = retry_after {
                super::state::lock(&d.rate_limited).insert(
                    item.platform.parse().unwrap_or_default(),
                    std::time::Instant::now() + wait,
                );
            }
            (
                "failed",
                None,
                None,
                Some(format!(
                    "{}{message}{}",
                    status.map(|s| format!("{s}: ")).unwrap_or_default(),
                    retry_after
                        .map(|r| format!(" (try again in {} s)", r.as_secs().max(1)))
                        .unwrap_or_default()
                )),
            )
        }
        Outcome::Unknown { message } => (
            "unknown",
            None,
            None,
            Some(format!(
                "outcome unknown: {message} — it may have gone out; the desk checks before any retry"
            )),
        ),
    };
    let (post, who_) = (item.id.clone(), who.to_owned());
    let (reply_id, reply_url, err) = (id.clone(), url.clone(), error.clone());
    let r = d
        .blocking("reply", move |d| -> Result<ReplyRow, DeskError> {
            let r = d.store().finish_reply(
                row,
                state,
                reply_id.as_deref(),
                reply_url.as_deref(),
                err.as_deref(),
            )?;
            if state == "sent" {
                d.decide(&post, Decision::Done, &who_)?;
            }
            Ok(r)
        })
        .await??;
    tracing::info!(
        post = item.id,
        platform = item.platform,
        state,
        who,
        "desk: reply"
    );
    Ok(Sent {
        error,
        id: r.post_id,
        state: state.into(),
        url,
    })
}

#[derive(Deserialize)]
struct ThreadQuery {
    id: String,
}

/// The parent of a post (`GET /api/thread?id=`): from the desk when it has it, else fetched
/// once through the platform's public read API and kept.
#[derive(Serialize)]
struct ThreadView {
    author: Option<String>,
    quote: bool,
    text: String,
    url: Option<String>,
}

async fn thread(
    State(d): State<Arc<Desk>>,
    Query(q): Query<ThreadQuery>,
    _: AnyCaller,
) -> Result<Json<Option<ThreadView>>, ApiError> {
    let id = q.id.clone();
    let (item, known) = d
        .blocking("thread", move |d| -> Result<_, DeskError> {
            let item = d.store().item(&id)?;
            let known = match &item.refs.parent {
                Some(p) => d.store().parent(&p.id)?,
                None => None,
            };
            Ok((item, known))
        })
        .await??;
    let Some(parent) = item.refs.parent.clone() else {
        return Ok(Json(None));
    };
    let found = match known {
        Some(p) => Some(p),
        None => match d.replier() {
            Some(r) => {
                let platform = item.platform.parse().unwrap_or_default();
                match r.fetch_parent(platform, &parent).await {
                    Some(p) => {
                        let kept = crate::Parent {
                            author: p.author,
                            text: p.text,
                            url: p.url,
                        };
                        let (id, k) = (parent.id.clone(), kept.clone());
                        d.blocking("thread", move |d| d.store().cache_parent(&id, &k))
                            .await??;
                        Some(kept)
                    }
                    None => None,
                }
            }
            None => None,
        },
    };
    Ok(Json(found.map(|p| {
        ThreadView {
            author: p.author,
            quote: item.refs.quote,
            text: flagship_platforms::display_text(
                item.platform.parse().unwrap_or_default(),
                &p.text,
            )
            .into_owned(),
            url: p.url,
        }
    })))
}
