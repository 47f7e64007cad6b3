//! Logging in and out: `GET /login` (the form, with its CSRF token bound to a cookie),
//! `POST /login` (the shared token first, never limited; else 5 failed logins a minute per
//! client and name, then 429; a session cookie and back to the page), `POST /logout` (the session closed, its cookie cleared). With no login
//! method configured there is nothing to log in to: both login routes go to the page.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Extension, Form, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::error::ApiError;
use super::session::{
    Caller, Client, CsrfField, LOGIN_COOKIE, Writer, cookie, login_cookie, session_cookie,
    session_cookie_cleared, with_cookie,
};
use super::state::Desk;
use crate::auth;
use crate::page;

pub(super) fn routes() -> Router<Arc<Desk>> {
    Router::new()
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
}

async fn login_page(State(d): State<Arc<Desk>>) -> Response {
    if !d.methods.any() {
        return Redirect::to("/").into_response();
    }
    login_form(&d, StatusCode::OK, None)
}

/// The login form (with `message` above it), a fresh CSRF token in it and in its cookie.
fn login_form(d: &Desk, status: StatusCode, message: Option<&str>) -> Response {
    let token = auth::random_token();
    let r = (
        status,
        Html(page::login(&d.settings.mission, &token, message)),
    )
        .into_response();
    with_cookie(r, Some(login_cookie(d, &token)))
}

#[derive(Deserialize)]
struct LoginForm {
    user: String,
    password: String,
    csrf: String,
}

async fn login(
    State(d): State<Arc<Desk>>,
    Extension(Client(client)): Extension<Client>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Result<Response, ApiError> {
    if !d.methods.any() {
        return Ok(Redirect::to("/").into_response());
    }
    let bound = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if bound.is_empty() || !auth::csrf_ok_str(bound, &f.csrf) {
        return Err(ApiError::Forbidden(
            "login form expired: reload the login page",
        ));
    }
    // The shared token first (constant time, no argon2): nobody's failures block it.
    let who = match d.methods.token_login(&f.user, &f.password) {
        Some(who) => who,
        None => {
            if let Err(wait) = d.failures.attempt(client, &f.user) {
                let mut r = login_form(
                    &d,
                    StatusCode::TOO_MANY_REQUESTS,
                    Some(&format!("Too many failed logins: try again in {wait} s.")),
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(wait));
                return Ok(r);
            }
            // argon2 is slow on purpose: off the async workers.
            let (user, password) = (f.user.clone(), f.password);
            let who = d
                .blocking("login", move |d| d.methods.verify(&user, &password))
                .await
                .unwrap_or(None);
            let Some(who) = who else {
                tracing::warn!(user = auth::loggable(&f.user), %client, "desk: failed login");
                return Ok(login_form(
                    &d,
                    StatusCode::UNAUTHORIZED,
                    Some("Wrong name or password."),
                ));
            };
            d.failures.succeeded(client, &f.user);
            who
        }
    };
    let (id, _) = {
        let who = who.clone();
        d.blocking("session", move |d| d.open_session(&who))
            .await??
    };
    tracing::info!(user = who, %client, "desk: login");
    Ok(with_cookie(
        Redirect::to("/").into_response(),
        Some(session_cookie(&d, &id)),
    ))
}

/// The logout form: only its CSRF token.
#[derive(Deserialize)]
struct LogoutForm {
    #[serde(default)]
    csrf: Option<String>,
}

impl CsrfField for LogoutForm {
    fn csrf(&self) -> Option<&str> {
        self.csrf.as_deref()
    }
}

async fn logout(State(d): State<Arc<Desk>>, w: Writer<LogoutForm>) -> Result<Response, ApiError> {
    Ok(match w.caller {
        Caller::Session { id, .. } => {
            d.blocking("logout", move |d| d.close_session(&id))
                .await??;
            with_cookie(
                Redirect::to("/login").into_response(),
                Some(session_cookie_cleared(&d)),
            )
        }
        Caller::Bearer => Redirect::to("/").into_response(),
    })
}
