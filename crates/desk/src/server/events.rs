//! Live updates (`GET /events`, SSE): the changes the desk tells open pages about
//! ([`Event`]) and one session's stream of them — `post` (new flagged posts' HTML, with the
//! session's CSRF token in their forms), `today` (the panel's HTML), `why` (`{id, words}`),
//! `decided` (`{decision, id, title}`), and `reload` for a reader too slow to keep up. The
//! stream ends when its session does (logout, expiry) or the desk closes.

use std::convert::Infallible;
use std::sync::Arc;

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
use super::session::Session;
use super::state::Desk;
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
}

/// The `why` event's data.
#[derive(Serialize)]
struct Words<'a> {
    id: &'a str,
    words: &'a [String],
}

async fn events(State(d): State<Arc<Desk>>, Session { id, session }: Session) -> impl IntoResponse {
    let rx = d.events.subscribe();
    let mut closing = d.closing.subscribe();
    let desk = d.clone();
    let stream = BroadcastStream::new(rx)
        .take_while(move |_| std::future::ready(desk.sessions.get(&id).is_some()))
        .map(move |e| Ok::<_, Infallible>(sse(e, &session)))
        .take_until(async move {
            let _ = closing.wait_for(|c| *c).await;
        });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// An event as `session`'s page receives it.
fn sse(e: Result<Event, BroadcastStreamRecvError>, session: &auth::Session) -> SseEvent {
    match e {
        Ok(Event::Posts(items)) => {
            let html: String = items
                .iter()
                .map(|i| crate::page::post(i, &session.csrf))
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
