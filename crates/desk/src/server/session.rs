//! Who is calling: the cookies (the session's, the login form's), the guard every request
//! passes, and the extractors that name the caller. A handler takes the extractor for the
//! callers its route serves; the extractor turns the others away:
//!
//! | extractor | serves | turns away |
//! |---|---|---|
//! | [`AnyCaller`] | a session or the bearer token | 401 |
//! | [`Session`] | a session | the token and no one: 401 |
//! | [`Page`] | a session | the token: 403; no one: 303 to `/login` (to `/` when no login method is configured) |
//! | [`OpenPage`] | a session, or one it opens for the local user when no login method is configured | the token: 403; no one: 303 to `/login` |
//! | [`Writer`] | a session whose CSRF token came with the request (`X-CSRF-Token` or the form's `csrf` field), or the token | no one: 401; a session without its CSRF token: 403 |
//!
//! [`Writer`] reads the body (the form, and in it the CSRF field), so it is a `FromRequest`
//! and a form that does not parse is answered first, by axum; the others read the head only.
//! Only [`guard`] reads the `Authorization` header: a right token marks the request, a wrong
//! one never reaches a route.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Form, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::proxy;
use super::state::Desk;
use crate::auth::{self, csrf_ok};

const SESSION_COOKIE: &str = "flagship_session";
const SESSION_COOKIE_HOST: &str = "__Host-flagship_session";
pub(super) const LOGIN_COOKIE: &str = "flagship_login";

/// Who is calling.
pub(super) enum Caller {
    /// A session: its id (the cookie's value) and what it holds.
    Session { id: String, session: auth::Session },
    /// The holder of the shared token.
    Bearer,
}

impl Caller {
    /// The name a decision is recorded under.
    pub(super) fn user(&self) -> &str {
        match self {
            Caller::Session { session, .. } => &session.user,
            Caller::Bearer => "token",
        }
    }

    /// What the caller may do: the session's role; the token's holder leads.
    pub(super) fn role(&self) -> auth::Role {
        match self {
            Caller::Session { session, .. } => session.role,
            Caller::Bearer => auth::Role::Lead,
        }
    }

    /// Refuses (403, naming the role it takes) a caller whose role is below `need`: every
    /// action checks here, on the server, whatever the page shows.
    pub(super) fn may(&self, need: auth::Role) -> Result<(), ApiError> {
        may(self.role(), need)
    }
}

/// Refuses (403) `have` where `need` is required.
pub(super) fn may(have: auth::Role, need: auth::Role) -> Result<(), ApiError> {
    if have >= need {
        Ok(())
    } else {
        Err(ApiError::Denied(format!(
            "this takes the {need} role; you are a {have}: ask a lead"
        )))
    }
}

/// The request came with the configured bearer token (set by [`guard`]).
#[derive(Clone, Copy)]
struct Bearer;

/// The client's address (set by [`guard`]): the peer's, or behind a trusted proxy the one
/// its forwarding header names.
#[derive(Clone, Copy, Debug)]
pub(super) struct Client(pub(super) IpAddr);

/// The caller of a request: the token (checked by [`guard`]) before the session cookie,
/// looked up in the database (off the async workers).
async fn caller(d: &Arc<Desk>, parts: &Parts) -> Result<Option<Caller>, ApiError> {
    if parts.extensions.get::<Bearer>().is_some() {
        return Ok(Some(Caller::Bearer));
    }
    let Some(id) = cookie(&parts.headers, session_cookie_name(d)) else {
        return Ok(None);
    };
    // A session id is 64 hex digits: anything else is no session (and costs no query).
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let id = id.to_owned();
    let found = {
        let id = id.clone();
        d.blocking("session", move |d| d.session(&id)).await??
    };
    Ok(found.map(|session| Caller::Session { id, session }))
}

/// A session or the bearer token (with the name it acts under); else 401.
pub(super) struct AnyCaller(pub(super) String);

impl FromRequestParts<Arc<Desk>> for AnyCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, d: &Arc<Desk>) -> Result<Self, ApiError> {
        caller(d, parts)
            .await?
            .map(|c| AnyCaller(c.user().to_owned()))
            .ok_or(ApiError::Unauthorized)
    }
}

/// A session (the event stream, the list's fragment); else 401, the token included.
pub(super) struct Session {
    pub(super) id: String,
    pub(super) session: auth::Session,
}

impl FromRequestParts<Arc<Desk>> for Session {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, d: &Arc<Desk>) -> Result<Self, ApiError> {
        match caller(d, parts).await? {
            Some(Caller::Session { id, session }) => Ok(Session { id, session }),
            _ => Err(ApiError::Unauthorized),
        }
    }
}

const PAGES_NEED_A_SESSION: &str = "pages need a session: log in";

/// A report page's caller: a session; the token is refused (403), anyone else sent to log
/// in — or, with no login method configured, to the desk page, which opens a session.
pub(super) struct Page;

impl FromRequestParts<Arc<Desk>> for Page {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, d: &Arc<Desk>) -> Result<Self, ApiError> {
        match caller(d, parts).await? {
            Some(Caller::Session { .. }) => Ok(Page),
            Some(Caller::Bearer) => Err(ApiError::Forbidden(PAGES_NEED_A_SESSION)),
            None if !d.methods.any() => Err(ApiError::Home),
            None => Err(ApiError::Login),
        }
    }
}

/// The desk page's caller: a session, or — with no login method configured (loopback only)
/// — one opened for the local user, whose cookie the answer must set; the token is refused
/// (403), anyone else sent to log in.
pub(super) struct OpenPage {
    pub(super) session: auth::Session,
    /// The `Set-Cookie` value of a session opened here.
    pub(super) cookie: Option<String>,
}

impl FromRequestParts<Arc<Desk>> for OpenPage {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, d: &Arc<Desk>) -> Result<Self, ApiError> {
        match caller(d, parts).await? {
            Some(Caller::Session { session, .. }) => Ok(OpenPage {
                session,
                cookie: None,
            }),
            Some(Caller::Bearer) => Err(ApiError::Forbidden(PAGES_NEED_A_SESSION)),
            None if !d.methods.any() => {
                // The local user's sessions are capped like anyone's: a page that loops
                // `GET /` ends the oldest, it never piles them up.
                let user = std::env::var("USER").unwrap_or_else(|_| "local".into());
                let (id, session) = d
                    .blocking("session", move |d| d.open_session(&user))
                    .await??;
                Ok(OpenPage {
                    session,
                    cookie: Some(session_cookie(d, &id)),
                })
            }
            None => Err(ApiError::Login),
        }
    }
}

/// A form that may carry the CSRF token in a `csrf` field.
pub(super) trait CsrfField {
    fn csrf(&self) -> Option<&str>;
}

/// The caller of a POST that changes something, with its form: a session whose CSRF token
/// came with the request (the `X-CSRF-Token` header, else the form's `csrf` field), or the
/// token. The form is parsed first (axum answers one that does not parse), then no caller
/// answers 401 and a missing or wrong CSRF token 403.
pub(super) struct Writer<F> {
    pub(super) caller: Caller,
    pub(super) form: F,
}

impl<F> FromRequest<Arc<Desk>> for Writer<F>
where
    F: DeserializeOwned + CsrfField + Send,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, d: &Arc<Desk>) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let caller = caller(d, &parts).await?;
        let header = parts
            .headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let Form(form) = Form::<F>::from_request(Request::from_parts(parts, body), d).await?;
        let caller = caller.ok_or(ApiError::Unauthorized)?;
        if let Caller::Session { session, .. } = &caller {
            let sent = header.as_deref().or(form.csrf()).unwrap_or_default();
            if !csrf_ok(session, sent) {
                return Err(ApiError::Forbidden(
                    "missing or wrong CSRF token: reload the page",
                ));
            }
        }
        Ok(Writer { caller, form })
    }
}

/// The value of cookie `name`, if the request has it.
pub(super) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

fn secure(d: &Desk) -> &'static str {
    if d.settings.secure_cookie {
        "; Secure"
    } else {
        ""
    }
}

/// The session cookie's name: behind TLS with the `__Host-` prefix, which browsers only
/// accept `Secure`, for `Path=/` and without a `Domain` (no subdomain can set or shadow it).
pub(super) fn session_cookie_name(d: &Desk) -> &'static str {
    if d.settings.secure_cookie {
        SESSION_COOKIE_HOST
    } else {
        SESSION_COOKIE
    }
}

/// The cookie of session `id`: for the whole site, as long as a session may last.
pub(super) fn session_cookie(d: &Desk, id: &str) -> String {
    format!(
        "{}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        session_cookie_name(d),
        d.settings.sessions.max.as_secs(),
        secure(d)
    )
}

/// The session cookie, cleared (logout).
pub(super) fn session_cookie_cleared(d: &Desk) -> String {
    format!(
        "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        session_cookie_name(d),
        secure(d)
    )
}

/// The login form's cookie: the token its CSRF field must match, for `/login`, an hour.
pub(super) fn login_cookie(d: &Desk, token: &str) -> String {
    format!(
        "{LOGIN_COOKIE}={token}; Path=/login; HttpOnly; SameSite=Strict; Max-Age=3600{}",
        secure(d)
    )
}

/// `r` with `cookie` set, if any.
pub(super) fn with_cookie(mut r: Response, cookie: Option<String>) -> Response {
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    r
}

/// Before any route: with no logins, only loopback `Host`s (no DNS rebinding) and no
/// request a proxy forwarded (`Forwarded`, `X-Forwarded-*`, `X-Real-IP`: 403); the client's
/// address is worked out ([`Client`], through `desk.trusted_proxies`); a POST from another
/// site is refused; a bearer token is checked here, once and first, in constant time — a
/// right one marks the request for the extractors whatever others failed, a wrong one
/// answers 401 and counts against the client's attempts (429 past the limit).
pub(super) async fn guard(
    State(d): State<Arc<Desk>>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let headers = req.headers();
    if !d.methods.any() {
        if !loopback_host(header_str(headers, header::HOST).unwrap_or_default()) {
            return Err(ApiError::Forbidden(
                "this desk answers loopback addresses only",
            ));
        }
        if proxy::proxied(headers) {
            return Err(ApiError::Forbidden(
                "this desk has no login method, so it answers no request a proxy forwarded: configure desk.users or desk.token_env to serve it behind a proxy",
            ));
        }
    }
    if req.method() == Method::POST && from_another_site(headers) {
        return Err(ApiError::Forbidden("a request from another site"));
    }
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    let client = Client(d.trusted.client(peer, headers));
    if let Some(token) = bearer(headers) {
        if !d.methods.token_ok(token) {
            d.failures
                .attempt(client.0, "")
                .map_err(ApiError::TooMany)?;
            tracing::warn!(client = %client.0, "desk: wrong bearer token");
            return Err(ApiError::Unauthorized);
        }
        req.extensions_mut().insert(Bearer);
    }
    req.extensions_mut().insert(client);
    Ok(next.run(req).await)
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The token of an `Authorization: Bearer …` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    header_str(headers, header::AUTHORIZATION)
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// Whether `Sec-Fetch-Site` or `Origin` (against `Host`) say another site sent the request.
fn from_another_site(headers: &HeaderMap) -> bool {
    let cross_site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "cross-site");
    let foreign_origin = match (
        header_str(headers, header::ORIGIN),
        header_str(headers, header::HOST),
    ) {
        (Some(origin), Some(host)) => {
            origin != "null" && origin.split_once("://").map(|(_, h)| h) != Some(host)
        }
        (Some(_), None) => true,
        _ => false,
    };
    cross_site || foreign_origin
}

/// Whether a `Host` header names this machine's loopback (`127.0.0.1`, `[::1]`,
/// `localhost`, with any port).
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
