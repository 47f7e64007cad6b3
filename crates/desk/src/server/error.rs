//! Why a request is turned away, and each reason's answer ([`ApiError`]): handlers and
//! extractors return it with `?`, and only here do refusals and store errors become statuses.
//! Bodies are JSON `{"error": …}` unless said otherwise.

use axum::extract::rejection::FormRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Serialize;
use tokio::task::JoinError;

use crate::DeskError;

#[derive(Debug)]
pub(super) enum ApiError {
    /// No session or token (or a wrong token): 401 with `WWW-Authenticate: Bearer`.
    Unauthorized,
    /// A session without its CSRF token, a token where a page needs a session, a request
    /// from another site or to another host: 403.
    Forbidden(&'static str),
    /// A page without a session: 303 to the login page.
    Login,
    /// A report page without a session and no logins configured: 303 to the desk page
    /// (which opens one).
    Home,
    /// A malformed request: 400.
    Bad(String),
    /// The caller's role does not allow it: 403, saying which role it takes.
    Denied(String),
    /// An export format the desk does not write: 400, the message as plain text.
    Format(String),
    /// A reports file that is not there (or not one the desk serves): 404, no body.
    NotFound,
    /// Too many failed tokens from this address: 429 with `Retry-After` (seconds).
    TooMany(u64),
    /// A form that did not parse: axum's own answer (415, 422, …).
    Form(FormRejection),
    /// Too many open event streams (in all or for this session): 429.
    Streams(&'static str),
    /// A blocking task (named) that panicked: 500, a generic message with a reference; the
    /// panic's text goes to the log under that reference, never to the client.
    Task(&'static str, JoinError),
    Desk(DeskError),
}

impl From<DeskError> for ApiError {
    fn from(e: DeskError) -> ApiError {
        ApiError::Desk(e)
    }
}

impl From<FormRejection> for ApiError {
    fn from(e: FormRejection) -> ApiError {
        ApiError::Form(e)
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
}

fn json(status: StatusCode, error: &str) -> Response {
    (status, axum::Json(Body { error })).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                axum::Json(Body {
                    error: "log in first (or send Authorization: Bearer <token>)",
                }),
            )
                .into_response(),
            ApiError::Forbidden(why) => json(StatusCode::FORBIDDEN, why),
            ApiError::Login => Redirect::to("/login").into_response(),
            ApiError::Home => Redirect::to("/").into_response(),
            ApiError::Bad(why) => json(StatusCode::BAD_REQUEST, &why),
            ApiError::Denied(why) => json(StatusCode::FORBIDDEN, &why),
            ApiError::Format(why) => (StatusCode::BAD_REQUEST, why).into_response(),
            ApiError::NotFound => StatusCode::NOT_FOUND.into_response(),
            ApiError::TooMany(wait) => {
                let mut r = json(
                    StatusCode::TOO_MANY_REQUESTS,
                    &format!("too many failed tokens: try again in {wait} s"),
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(wait));
                r
            }
            ApiError::Form(e) => e.into_response(),
            ApiError::Streams(why) => json(StatusCode::TOO_MANY_REQUESTS, why),
            ApiError::Task(task, e) => {
                let reference = reference();
                tracing::error!(reference, task, "desk: internal error: {e}");
                internal(&reference)
            }
            ApiError::Desk(e) => desk_error(e),
        }
    }
}

/// A store error as an answer: what the person can act on, never the database's path or
/// internals (those go to the log).
fn desk_error(e: DeskError) -> Response {
    let (status, message) = match &e {
        DeskError::NoPost(_) | DeskError::NoGroup(_) | DeskError::NoAnswer(_) => {
            (StatusCode::NOT_FOUND, e.to_string())
        }
        DeskError::NothingToUndo(_)
        | DeskError::NothingToUndoInGroup(_)
        | DeskError::Held { .. } => (StatusCode::CONFLICT, e.to_string()),
        DeskError::Locked { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the desk database is locked by another process: try again shortly".to_owned(),
        ),
        _ => {
            let reference = reference();
            tracing::error!(reference, "desk: {e}");
            return internal(&reference);
        }
    };
    if status.is_server_error() {
        tracing::error!("desk: {e}");
    }
    json(status, &message)
}

/// A short random reference that ties an answer to its line in the log.
fn reference() -> String {
    crate::auth::random_token()[..8].to_owned()
}

/// The answer to an internal error: 500, what happened only in the log, under `reference`.
fn internal(reference: &str) -> Response {
    json(
        StatusCode::INTERNAL_SERVER_ERROR,
        &format!("internal error (reference {reference}: the server's log says more)"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A panic inside a handler's blocking task (a decision, say) answers 500 with a
    /// reference; its text stays in the log.
    #[tokio::test]
    async fn a_panic_tells_the_client_nothing_but_a_reference() {
        let e = tokio::task::spawn_blocking(|| panic!("secret detail: /var/lib/flagship/desk"))
            .await
            .unwrap_err();
        let r = ApiError::Task("decide", e).into_response();
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            !body.contains("secret") && !body.contains("decide"),
            "{body}"
        );
        assert!(body.contains("internal error (reference "), "{body}");
    }
}
