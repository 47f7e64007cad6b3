//! Live updates (`GET /events`, SSE): the changes the desk tells open pages about
//! ([`Event`]) and one session's stream of them — `post` (new flagged posts' HTML, with the
//! session's CSRF token in their forms), `today` (the panel's HTML), `why` (`{id, words}`),
//! `decided` (`{decision, id, title}`), `group` (`{group, members, html}`: a question group's
//! card, or a post alone with its suggested answer, replacing those members on the page),
//! `assigned` (`[{held, id}]`: who holds each post now), `clock` (the desk's time in Unix
//! milliseconds: pages run their first-response clocks by it), `alert` (the banner's line of a
//! new alert), and `reload` for a reader too slow to keep up. The
//! stream ends when its session does (logout at once; expiry or revocation within
//! 5 s) or the desk closes. Streams are capped in all and per session (429 past either).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::routing::get;
use futures::StreamExt;
use serde::Serialize;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use super::api::Decided;
use super::error::ApiError;
use super::session::Session;
use super::state::{Desk, lock};
use crate::{Decision, Item, auth};

pub(super) fn routes() -> Router<Arc<Desk>> {
    Router::new().route("/events", get(events))
}

/// A change open pages hear about.
#[derive(Debug, Clone)]
pub(super) enum Event {
    Posts(Arc<Vec<Item>>),
    Today(Arc<String>),
    Decided {
        id: String,
        decision: Option<Decision>,
    },
    /// A flagged post's words, worked out after it was shown.
    Why {
        id: String,
        words: Vec<String>,
    },
    /// A question group changed (a post joined it, it was decided): its entry now.
    Group(Arc<crate::page::Entry>),
    /// Posts changed hands: each with who holds it now.
    Assigned(Arc<Vec<(String, Option<String>)>>),
    /// The desk's time (pages keep their first-response clocks by it, not their own).
    Clock(chrono::DateTime<chrono::Utc>),
    /// An alert was raised: the banner's line.
    Alert(Arc<crate::Alert>),
}

/// The `assigned` event's data: a post and who holds it now.
#[derive(Serialize)]
struct HeldView<'a> {
    held: Option<&'a str>,
    id: &'a str,
}

/// The `group` event's data.
#[derive(Serialize)]
struct GroupView<'a> {
    group: Option<i64>,
    html: String,
    members: Vec<&'a str>,
}

/// The `why` event's data.
#[derive(Serialize)]
struct Words<'a> {
    id: &'a str,
    words: &'a [String],
}

/// How often an open stream checks that its session is still open (a logout here wakes it
/// at once; a revocation by `flagship desk user …` is seen within this).
const SESSION_CHECK: Duration = Duration::from_secs(5);

async fn events(
    State(d): State<Arc<Desk>>,
    Session { id, session }: Session,
) -> Result<impl IntoResponse, ApiError> {
    let slot = StreamSlot::take(&d, &id)?;
    let rx = d.events.subscribe();
    let mut closing = d.closing.subscribe();
    let ended = session_ended(d.clone(), id);
    let desk = d.clone();
    let stream = BroadcastStream::new(rx)
        .map(move |e| {
            // The stream holds its slot: given back when it is dropped (the page went away).
            let _held = &slot;
            Ok::<_, Infallible>(sse(e, &session, &desk))
        })
        .take_until(async move {
            tokio::select! {
                _ = closing.wait_for(|c| *c) => {}
                () = ended => {}
            }
        });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// Resolves once session `id` is no longer open (logout, expiry, revocation). Checking it
/// also keeps it alive: an open page is a session in use.
async fn session_ended(d: Arc<Desk>, id: String) {
    let mut ended = d.ended.subscribe();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SESSION_CHECK) => {}
            r = ended.changed() => if r.is_err() { return },
        }
        let id = id.clone();
        match d.blocking("session", move |d| d.session(&id)).await {
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => return,
            // A busy database says nothing about the session: check again later.
            Ok(Err(e)) => tracing::warn!("desk: checking an event stream's session: {e}"),
            Err(_) => return,
        }
    }
}

/// One open event stream, counted in all and for its session while it lives; past
/// `desk.max_streams` or `desk.max_streams_per_session` none is given (429).
struct StreamSlot {
    desk: Arc<Desk>,
    key: String,
}

impl StreamSlot {
    fn take(d: &Arc<Desk>, id: &str) -> Result<StreamSlot, ApiError> {
        let key = auth::session_key(id);
        let limits = &d.settings.limits;
        let mut open = lock(&d.streams);
        let total: usize = open.values().sum();
        if total >= limits.max_streams {
            return Err(ApiError::Streams(
                "too many open pages on this desk: close some and reload",
            ));
        }
        let mine = open.entry(key.clone()).or_default();
        if *mine >= limits.max_streams_per_session {
            return Err(ApiError::Streams(
                "too many open pages in this session: close some and reload",
            ));
        }
        *mine += 1;
        Ok(StreamSlot {
            desk: d.clone(),
            key,
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = lock(&self.desk.streams);
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// An event as `session`'s page receives it.
fn sse(e: Result<Event, BroadcastStreamRecvError>, session: &auth::Session, d: &Desk) -> SseEvent {
    let cx = crate::page::Cx {
        csrf: &session.csrf,
        clock: d.clock(),
    };
    match e {
        Ok(Event::Posts(items)) => {
            let html: String = items
                .iter()
                .map(|i| crate::page::post(i, &cx, None))
                .collect();
            SseEvent::default().event("post").data(html)
        }
        Ok(Event::Today(html)) => SseEvent::default().event("today").data(html.as_str()),
        Ok(Event::Why { id, words }) => json(
            "why",
            Words {
                id: &id,
                words: &words,
            },
        ),
        Ok(Event::Decided { id, decision }) => json("decided", Decided::new(&id, decision)),
        Ok(Event::Group(entry)) => {
            let (group, members) = match &*entry {
                crate::page::Entry::Group(c, _) => (
                    Some(c.id),
                    c.members.iter().map(|m| m.id.as_str()).collect(),
                ),
                crate::page::Entry::Post(i, _) => (i.group, vec![i.id.as_str()]),
            };
            json(
                "group",
                GroupView {
                    group,
                    html: crate::page::entry(&entry, &cx),
                    members,
                },
            )
        }
        Ok(Event::Assigned(posts)) => json(
            "assigned",
            posts
                .iter()
                .map(|(id, held)| HeldView {
                    held: held.as_deref(),
                    id,
                })
                .collect::<Vec<_>>(),
        ),
        Ok(Event::Clock(now)) => SseEvent::default()
            .event("clock")
            .data(now.timestamp_millis().to_string()),
        Ok(Event::Alert(a)) => SseEvent::default()
            .event("alert")
            .data(crate::page::alert_line(&a)),
        // Too slow a reader missed events: its page reloads.
        Err(_) => reload(),
    }
}

/// An event whose data is `v` as JSON (plain data: it always serializes; were it not to,
/// the page would reload).
fn json(name: &'static str, v: impl Serialize) -> SseEvent {
    SseEvent::default()
        .event(name)
        .json_data(v)
        .unwrap_or_else(|_| reload())
}

fn reload() -> SseEvent {
    SseEvent::default().event("reload").data("missed events")
}
