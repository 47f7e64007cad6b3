//! The desk's web server (axum): the page, live updates (SSE), the decision API, logins,
//! exports and the report pages.
//!
//! | route | what | who |
//! |---|---|---|
//! | `GET /` (`?view=queue&order=newest\|probability`, `?view=uncertain`) | the page | session (opened for the local user when no auth method is configured) |
//! | `GET /events` | SSE: `post` (a new flagged post's HTML), `today` (the panel), `decided` (`{id, decision}`) | session |
//! | `POST /api/decide`, `POST /decide` | record a decision (`id`, `decision`; CSRF token in `X-CSRF-Token` or the `csrf` field), committed before the answer | session + CSRF, or `Authorization: Bearer` |
//! | `GET /api/queue`, `GET /api/today` | JSON | session or bearer |
//! | `GET /export?format=labels\|label-studio\|argilla` | the decisions as a download | session or bearer |
//! | `GET /report`, `GET /monitor`, `GET /reports/…` | the evaluation report and monitor pages from `storage.reports` | session |
//! | `GET /fragment` (`?view=…&order=…`) | the list's posts as HTML (the page merges it after its event stream (re)connects) | session |
//! | `GET /login`, `POST /login`, `POST /logout` | sessions (login CSRF by a cookie-bound token; 5 failed logins or tokens a minute per address, then 429) | anyone |
//! | `GET /assets/…`, `GET /healthz` | the script, the stylesheet; liveness | anyone |
//!
//! Every answer carries `Content-Security-Policy: default-src 'self'` (plus no framing, no
//! base, forms to self), `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer`.
//! A POST from another site (`Origin` or `Sec-Fetch-Site` say so) is refused whatever it
//! carries. A server not bound to loopback refuses to start without an auth method and
//! without `desk.secure_cookie` (TLS in front: passwords never cross a network in clear);
//! without an auth method (loopback) it answers only requests whose `Host` is a loopback
//! name, so a page at a rebound DNS name cannot reach it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{ConnectInfo, Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use flagship_core::config::Business;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{broadcast, watch};

use crate::auth::{Methods, Session, Sessions, csrf_ok};
use crate::export::Format;
use crate::page::{self, View};
use crate::{Decision, DeskError, DeskStore, Item, Order, Today};

const SESSION_COOKIE: &str = "flagship_session";
const LOGIN_COOKIE: &str = "flagship_login";
const CSP: &str = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";
const JS: &str = include_str!("../assets/desk.js");
const CSS: &str = include_str!("../assets/desk.css");

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "desk: {0} is not a loopback address; serving it needs an auth method (desk.users or desk.token_env)"
    )]
    Exposed(SocketAddr),
    #[error(
        "desk: {0} is not a loopback address; serve it behind TLS and set desk.secure_cookie = true (logins must not cross a network in clear)"
    )]
    Cleartext(SocketAddr),
    #[error("desk: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("desk server: {0}")]
    Io(#[from] std::io::Error),
}

/// What the desk shows beside the database.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The mission's name (titles).
    pub mission: String,
    pub business: Business,
    pub uncertain_band: f64,
    pub page_size: usize,
    pub secure_cookie: bool,
    /// The reports folder (`storage.reports`, when local): the report and monitor pages.
    pub reports: Option<PathBuf>,
}

impl Settings {
    /// The settings a config gives.
    pub fn from_config(c: &flagship_core::Config) -> Settings {
        let reports = match c.location(flagship_core::config::Area::Reports) {
            Ok(flagship_core::location::Location::Local(p)) => Some(p),
            _ => None,
        };
        Settings {
            mission: c.mission.name.clone(),
            business: c.business.clone(),
            uncertain_band: c.desk.uncertain_band,
            page_size: c.desk.page_size,
            secure_cookie: c.desk.secure_cookie,
            reports,
        }
    }
}

/// A change open pages hear about.
#[derive(Debug, Clone)]
enum Event {
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

/// The desk: its database, sessions, login methods and the channel to open pages.
pub struct Desk {
    store: Mutex<DeskStore>,
    events: broadcast::Sender<Event>,
    sessions: Sessions,
    methods: Methods,
    settings: Settings,
    /// The model scoring now, and its threshold.
    model: Mutex<(String, Option<f64>)>,
    closing: watch::Sender<bool>,
    /// When the today panel was last sent (sent at most every [`TODAY_EVERY`] while posts
    /// arrive), and the drift line with when it was read.
    today_sent: Mutex<Option<std::time::Instant>>,
    drift: Mutex<Option<(std::time::Instant, String)>>,
}

const TODAY_EVERY: std::time::Duration = std::time::Duration::from_millis(500);
const DRIFT_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// The start of the current UTC day (the today panel's window).
fn day_start() -> DateTime<Utc> {
    Utc::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc()
}

impl Desk {
    /// A desk over `store`. Fails when `bind` is not loopback and no login method is set.
    pub fn new(
        store: DeskStore,
        methods: Methods,
        settings: Settings,
        bind: SocketAddr,
    ) -> Result<Arc<Desk>, ServerError> {
        if !bind.ip().is_loopback() && !methods.any() {
            return Err(ServerError::Exposed(bind));
        }
        if !bind.ip().is_loopback() && !settings.secure_cookie {
            return Err(ServerError::Cleartext(bind));
        }
        Ok(Arc::new(Desk {
            store: Mutex::new(store),
            events: broadcast::channel(1024).0,
            sessions: Sessions::default(),
            methods,
            settings,
            model: Mutex::new((String::new(), None)),
            closing: watch::channel(false).0,
            today_sent: Mutex::new(None),
            drift: Mutex::new(None),
        }))
    }

    fn store(&self) -> std::sync::MutexGuard<'_, DeskStore> {
        // A panic while holding the lock leaves SQLite consistent (transactions): go on.
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Names the model scoring new posts (shown on the today panel until posts arrive).
    pub fn set_model(&self, id: &str, threshold: f64) {
        *self.model.lock().unwrap_or_else(|e| e.into_inner()) = (id.to_owned(), Some(threshold));
    }

    /// Ids already in the desk (the live loop never scores them again).
    pub fn ids(&self) -> Result<std::collections::HashSet<String>, DeskError> {
        self.store().ids()
    }

    /// Ends open event streams, so a graceful shutdown is not held by them.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Stores why flagged posts were flagged and shows the words on open pages.
    pub fn explained(&self, why: &[flagship_core::live::Explained]) -> Result<(), DeskError> {
        self.store().explain(why)?;
        for e in why {
            let _ = self.events.send(Event::Why {
                id: e.id.clone(),
                words: e.why.iter().map(|w| w.word.clone()).collect(),
            });
        }
        Ok(())
    }

    /// Stores scored posts and tells open pages about the new flagged ones. Once committed,
    /// nothing turns it into an error (a failing today panel is logged).
    pub fn add(&self, scored: &[flagship_core::live::Scored]) -> Result<(), DeskError> {
        if let Some(s) = scored.first() {
            self.set_model(&s.model_id, s.threshold);
        }
        let (fresh, today) = {
            let mut store = self.store();
            let added = store.add(scored)?;
            let fresh: Vec<Item> = added
                .new
                .iter()
                .map(|&i| &scored[i])
                .filter(|s| s.need_support)
                .map(crate::store::item_of)
                .collect();
            let due = {
                let mut sent = self.today_sent.lock().unwrap_or_else(|e| e.into_inner());
                let due = sent.is_none_or(|t| t.elapsed() >= TODAY_EVERY);
                if due {
                    *sent = Some(std::time::Instant::now());
                }
                due
            };
            (fresh, due.then(|| store.today(day_start())))
        };
        if !fresh.is_empty() {
            let _ = self.events.send(Event::Posts(Arc::new(fresh)));
        }
        if let Some(today) = today {
            self.send_today(today);
        }
        Ok(())
    }

    fn send_today(&self, today: Result<Today, DeskError>) {
        match today {
            Ok(t) => {
                let _ = self
                    .events
                    .send(Event::Today(Arc::new(self.today_html(&t))));
            }
            Err(e) => tracing::error!("desk: the today panel: {e}"),
        }
    }

    /// Records a decision (committed before it returns) and tells open pages.
    pub fn decide(
        &self,
        id: &str,
        decision: Decision,
        who: &str,
    ) -> Result<Option<Decision>, DeskError> {
        let (now, today) = {
            let mut store = self.store();
            let now = store.decide(id, decision, who)?;
            (now, store.today(day_start()))
        };
        tracing::info!(
            post = id,
            decision = decision.as_str(),
            who,
            "desk: decision"
        );
        let _ = self.events.send(Event::Decided {
            id: id.to_owned(),
            decision: now,
        });
        self.send_today(today);
        Ok(now)
    }

    /// The latest drift line, read again at most every [`DRIFT_EVERY`].
    fn drift(&self) -> String {
        let mut cached = self.drift.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, line)) = &*cached
            && at.elapsed() < DRIFT_EVERY
        {
            return line.clone();
        }
        let line = self
            .settings
            .reports
            .as_deref()
            .map(latest_drift)
            .unwrap_or_else(|| "reports are not local".into());
        *cached = Some((std::time::Instant::now(), line.clone()));
        line
    }

    fn today_html(&self, t: &Today) -> String {
        let (model, threshold) = self.model.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let drift = self.drift();
        page::today(
            t,
            &page::Context {
                model: if model.is_empty() {
                    "(no post scored yet)"
                } else {
                    &model
                },
                threshold,
                drift: &drift,
                business: &self.settings.business,
            },
        )
    }
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
fn latest_drift(reports: &Path) -> String {
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

/// Who is calling.
enum Caller {
    Session { id: String, session: Session },
    Bearer,
}

impl Caller {
    fn user(&self) -> &str {
        match self {
            Caller::Session { session, .. } => &session.user,
            Caller::Bearer => "token",
        }
    }
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
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

fn caller(d: &Desk, headers: &HeaderMap) -> Option<Caller> {
    if let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return d.methods.token_ok(token.trim()).then_some(Caller::Bearer);
    }
    let id = cookie(headers, SESSION_COOKIE)?;
    let session = d.sessions.get(id)?;
    Some(Caller::Session {
        id: id.to_owned(),
        session,
    })
}

fn session_cookie(d: &Desk, id: &str) -> String {
    format!(
        "{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        crate::auth::SESSION_TTL.as_secs(),
        if d.settings.secure_cookie {
            "; Secure"
        } else {
            ""
        }
    )
}

/// Why a request is turned away (small, so handlers return `Result<_, Refusal>`).
enum Refusal {
    /// No session or token: 401.
    Unauthorized,
    /// A session without its CSRF token, or a token where a page needs a session: 403.
    Forbidden(&'static str),
    /// A page without a session: to the login page.
    Login,
    /// A page without a session and no logins configured: to the desk page (which opens one).
    Home,
    /// A malformed request: 400.
    Bad(String),
    Desk(DeskError),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Unauthorized => unauthorized(),
            Refusal::Forbidden(why) => forbidden(why),
            Refusal::Login => Redirect::to("/login").into_response(),
            Refusal::Home => Redirect::to("/").into_response(),
            Refusal::Bad(why) => {
                (StatusCode::BAD_REQUEST, axum::Json(json!({"error": why}))).into_response()
            }
            Refusal::Desk(e) => desk_error(e),
        }
    }
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        axum::Json(json!({"error": "log in first (or send Authorization: Bearer <token>)"})),
    )
        .into_response()
}

fn forbidden(why: &str) -> Response {
    (StatusCode::FORBIDDEN, axum::Json(json!({"error": why}))).into_response()
}

/// A store error as an answer: what the person can act on, never the database's path or
/// internals (those go to the log).
fn desk_error(e: DeskError) -> Response {
    let (status, message) = match &e {
        DeskError::NoPost(_) | DeskError::NothingToUndo(_) => {
            let status = if matches!(e, DeskError::NoPost(_)) {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::CONFLICT
            };
            (status, e.to_string())
        }
        DeskError::Locked { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the desk database is locked by another process: try again shortly".to_owned(),
        ),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "desk database error (the server's log says which)".to_owned(),
        ),
    };
    if status.is_server_error() {
        tracing::error!("desk: {e}");
    }
    (status, axum::Json(json!({"error": message}))).into_response()
}

/// A page's caller: the session, or — for the desk page itself (`open`) — one opened for
/// the local user when no login method is configured (loopback only); else a redirect to the
/// login page (or, with no logins, to the desk page).
fn page_caller(
    d: &Desk,
    headers: &HeaderMap,
    open: bool,
) -> Result<(Session, Option<String>), Refusal> {
    match caller(d, headers) {
        Some(Caller::Session { session, .. }) => Ok((session, None)),
        Some(Caller::Bearer) => Err(Refusal::Forbidden("pages need a session: log in")),
        None if !d.methods.any() && !open => Err(Refusal::Home),
        None if !d.methods.any() => {
            let user = std::env::var("USER").unwrap_or_else(|_| "local".into());
            let (id, s) = d.sessions.open(&user);
            Ok((s, Some(session_cookie(d, &id))))
        }
        None => Err(Refusal::Login),
    }
}

fn with_cookie(mut r: Response, cookie: Option<String>) -> Response {
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    r
}

#[derive(Deserialize, Default)]
struct ViewQuery {
    view: Option<String>,
    order: Option<String>,
}

fn view_of(q: &ViewQuery) -> View {
    match (q.view.as_deref(), q.order.as_deref()) {
        (Some("uncertain"), _) => View::Uncertain,
        (_, Some("probability")) => View::Queue(Order::Probability),
        _ => View::Queue(Order::Newest),
    }
}

fn items(d: &Desk, view: View, limit: usize) -> Result<Vec<Item>, DeskError> {
    let store = d.store();
    match view {
        View::Queue(order) => store.queue(order, limit),
        View::Uncertain => store.uncertain(d.settings.uncertain_band, limit),
    }
}

async fn index(
    State(d): State<Arc<Desk>>,
    headers: HeaderMap,
    Query(q): Query<ViewQuery>,
) -> Response {
    let (session, cookie) = match page_caller(&d, &headers, true) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let view = view_of(&q);
    let (list, today) = match items(&d, view, d.settings.page_size)
        .and_then(|l| Ok((l, d.store().today(day_start())?)))
    {
        Ok(x) => x,
        Err(e) => return desk_error(e),
    };
    let html = page::page(
        &page::Frame {
            mission: &d.settings.mission,
            user: &session.user,
            csrf: &session.csrf,
            logout: d.methods.any(),
        },
        view,
        &list,
        &d.today_html(&today),
    );
    with_cookie(Html(html).into_response(), cookie)
}

#[derive(Deserialize)]
struct DecideForm {
    id: String,
    decision: String,
    #[serde(default)]
    csrf: Option<String>,
}

/// The caller of a POST that changes something: a session whose CSRF token came with the
/// request (header or field), or a bearer token.
fn writer(d: &Desk, headers: &HeaderMap, field: Option<&str>) -> Result<(Caller, String), Refusal> {
    let c = caller(d, headers).ok_or(Refusal::Unauthorized)?;
    if let Caller::Session { session, .. } = &c {
        let sent = headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .or(field)
            .unwrap_or_default();
        if !csrf_ok(session, sent) {
            return Err(Refusal::Forbidden(
                "missing or wrong CSRF token: reload the page",
            ));
        }
    }
    let user = c.user().to_owned();
    Ok((c, user))
}

/// Checks the caller and records the decision, off the async workers (SQLite fsyncs).
async fn record(
    d: &Arc<Desk>,
    headers: &HeaderMap,
    f: &DecideForm,
) -> Result<Option<Decision>, Refusal> {
    let (_, user) = writer(d, headers, f.csrf.as_deref())?;
    let decision = Decision::parse(&f.decision).ok_or_else(|| {
        Refusal::Bad(format!(
            "decision {:?}: use needs_reply, no_reply, done or undo",
            f.decision
        ))
    })?;
    let (desk, id) = (d.clone(), f.id.clone());
    tokio::task::spawn_blocking(move || desk.decide(&id, decision, &user))
        .await
        .map_err(|e| Refusal::Bad(format!("the decision task failed: {e}")))?
        .map_err(Refusal::Desk)
}

async fn api_decide(
    State(d): State<Arc<Desk>>,
    headers: HeaderMap,
    Form(f): Form<DecideForm>,
) -> Response {
    match record(&d, &headers, &f).await {
        Ok(now) => axum::Json(json!({
            "id": f.id,
            "decision": now.map(|d| d.as_str()),
            "title": now.map(|d| d.title()),
        }))
        .into_response(),
        Err(r) => r.into_response(),
    }
}

async fn form_decide(
    State(d): State<Arc<Desk>>,
    headers: HeaderMap,
    Form(f): Form<DecideForm>,
) -> Response {
    match record(&d, &headers, &f).await {
        Ok(_) => Redirect::to("/").into_response(),
        Err(r) => r.into_response(),
    }
}

fn item_json(i: &Item) -> serde_json::Value {
    json!({
        "platform": i.platform,
        "id": i.id,
        "url": i.url,
        "author": i.author,
        "created_at": i.created_at,
        "text": i.text,
        "probability": i.probability,
        "threshold": i.threshold,
        "need_support": i.need_support,
        "model": i.model_id,
        "matched": i.terms,
        "why": i.why,
        "decision": i.decision.map(|d| d.as_str()),
    })
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(flatten)]
    view: ViewQuery,
    limit: Option<usize>,
}

async fn api_queue(
    State(d): State<Arc<Desk>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    if caller(&d, &headers).is_none() {
        return unauthorized();
    }
    let limit = q.limit.unwrap_or(d.settings.page_size).min(10_000);
    match items(&d, view_of(&q.view), limit) {
        Ok(list) => axum::Json(list.iter().map(item_json).collect::<Vec<_>>()).into_response(),
        Err(e) => desk_error(e),
    }
}

async fn api_today(State(d): State<Arc<Desk>>, headers: HeaderMap) -> Response {
    if caller(&d, &headers).is_none() {
        return unauthorized();
    }
    let t = match d.store().today(day_start()) {
        Ok(t) => t,
        Err(e) => return desk_error(e),
    };
    axum::Json(json!({
        "seen": t.seen,
        "flagged": t.flagged,
        "decided": t.decided,
        "flagged_decided": t.flagged_decided,
        "flagged_needed": t.flagged_needed,
        "missed_found": t.missed_found,
        "precision": t.precision,
    }))
    .into_response()
}

/// The list's posts as HTML, for a page to merge what it missed while its event stream was
/// (re)connecting.
async fn fragment(
    State(d): State<Arc<Desk>>,
    headers: HeaderMap,
    Query(q): Query<ViewQuery>,
) -> Response {
    let Some(Caller::Session { session, .. }) = caller(&d, &headers) else {
        return unauthorized();
    };
    match items(&d, view_of(&q), d.settings.page_size) {
        Ok(list) => Html(
            list.iter()
                .map(|i| page::post(i, &session.csrf))
                .collect::<String>(),
        )
        .into_response(),
        Err(e) => desk_error(e),
    }
}

/// The event stream of one session: ends when the session does (logout, expiry) or the
/// desk closes.
async fn events(State(d): State<Arc<Desk>>, headers: HeaderMap) -> Response {
    let Some(Caller::Session { id, session }) = caller(&d, &headers) else {
        return unauthorized();
    };
    let rx = d.events.subscribe();
    let mut closing = d.closing.subscribe();
    let desk = d.clone();
    let stream = tokio_stream::wrappers::BroadcastStream::new(rx)
        .take_while(move |_| std::future::ready(desk.sessions.get(&id).is_some()))
        .map(move |e| {
            let ev = match e {
                Ok(Event::Posts(items)) => {
                    let html: String = items
                        .iter()
                        .map(|i| page::post(i, &session.csrf))
                        .collect();
                    SseEvent::default().event("post").data(html)
                }
                Ok(Event::Today(html)) => SseEvent::default().event("today").data(html.as_str()),
                Ok(Event::Why { id, words }) => SseEvent::default()
                    .event("why")
                    .data(json!({"id": id, "words": words}).to_string()),
                Ok(Event::Decided { id, decision }) => SseEvent::default().event("decided").data(
                    json!({"id": id, "decision": decision.map(|d| d.as_str()), "title": decision.map(|d| d.title())})
                        .to_string(),
                ),
                // Too slow a reader missed events: its page reloads.
                Err(_) => SseEvent::default().event("reload").data("missed events"),
            };
            Ok::<_, Infallible>(ev)
        })
        .take_until(async move {
            let _ = closing.wait_for(|c| *c).await;
        });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[derive(Deserialize)]
struct ExportQuery {
    format: Option<String>,
}

async fn export(
    State(d): State<Arc<Desk>>,
    headers: HeaderMap,
    Query(q): Query<ExportQuery>,
) -> Response {
    if caller(&d, &headers).is_none() {
        return unauthorized();
    }
    let format: Format = match q.format.as_deref().unwrap_or("labels").parse() {
        Ok(f) => f,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    match crate::export::render(&d.store(), format) {
        Ok((bytes, _)) => (
            [
                (header::CONTENT_TYPE, format.content_type().to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{}\"", format.file_name()),
                ),
            ],
            bytes,
        )
            .into_response(),
        Err(e) => desk_error(e),
    }
}

async fn login_page(State(d): State<Arc<Desk>>) -> Response {
    if !d.methods.any() {
        return Redirect::to("/").into_response();
    }
    login_form(&d, StatusCode::OK, None)
}

fn login_form(d: &Desk, status: StatusCode, message: Option<&str>) -> Response {
    let token = crate::auth::random_token();
    let r = (
        status,
        Html(page::login(&d.settings.mission, &token, message)),
    )
        .into_response();
    with_cookie(
        r,
        Some(format!(
            "{LOGIN_COOKIE}={token}; Path=/login; HttpOnly; SameSite=Strict; Max-Age=3600{}",
            if d.settings.secure_cookie {
                "; Secure"
            } else {
                ""
            }
        )),
    )
}

#[derive(Deserialize)]
struct LoginForm {
    user: String,
    password: String,
    csrf: String,
}

async fn login(
    State(d): State<Arc<Desk>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    if !d.methods.any() {
        return Redirect::to("/").into_response();
    }
    let bound = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if bound.is_empty() || !crate::auth::csrf_ok_str(bound, &f.csrf) {
        return forbidden("login form expired: reload the login page");
    }
    if let Err(wait) = d.sessions.attempt(peer.ip()) {
        let mut r = login_form(
            &d,
            StatusCode::TOO_MANY_REQUESTS,
            Some(&format!("Too many failed logins: try again in {wait} s.")),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait));
        return r;
    }
    let desk = d.clone();
    let (user, password) = (f.user.clone(), f.password);
    let who = tokio::task::spawn_blocking(move || desk.methods.verify(&user, &password))
        .await
        .unwrap_or(None);
    let Some(who) = who else {
        tracing::warn!(user = crate::auth::loggable(&f.user), peer = %peer.ip(), "desk: failed login");
        return login_form(
            &d,
            StatusCode::UNAUTHORIZED,
            Some("Wrong name or password."),
        );
    };
    d.sessions.succeeded(peer.ip());
    let (id, _) = d.sessions.open(&who);
    tracing::info!(user = who, "desk: login");
    with_cookie(
        Redirect::to("/").into_response(),
        Some(session_cookie(&d, &id)),
    )
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: Option<String>,
}

async fn logout(
    State(d): State<Arc<Desk>>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    match writer(&d, &headers, f.csrf.as_deref()) {
        Ok((Caller::Session { id, .. }, _)) => {
            d.sessions.close(&id);
            with_cookie(
                Redirect::to("/login").into_response(),
                Some(format!(
                    "{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
                )),
            )
        }
        Ok((Caller::Bearer, _)) => Redirect::to("/").into_response(),
        Err(r) => r.into_response(),
    }
}

async fn report(State(d): State<Arc<Desk>>, headers: HeaderMap) -> Response {
    if let Err(r) = page_caller(&d, &headers, false) {
        return r.into_response();
    }
    match &d.settings.reports {
        Some(dir) if dir.join("report.html").is_file() => {
            Redirect::to("/reports/report.html").into_response()
        }
        _ => (
            StatusCode::NOT_FOUND,
            Html(page::message(
                "No evaluation report yet",
                "Run `cargo xtask pipeline` (or `flagship evaluate`): the report appears here.",
            )),
        )
            .into_response(),
    }
}

async fn monitor(State(d): State<Arc<Desk>>, headers: HeaderMap) -> Response {
    if let Err(r) = page_caller(&d, &headers, false) {
        return r.into_response();
    }
    let latest = d
        .settings
        .reports
        .as_deref()
        .and_then(|dir| latest_batch(dir, "monitor.html"));
    match latest {
        Some(batch) => {
            Redirect::to(&format!("/reports/monitor/{batch}/monitor.html")).into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            Html(page::message(
                "No monitoring batch yet",
                "Monitoring batches appear here after `flagship monitor` (or the pipeline) ran.",
            )),
        )
            .into_response(),
    }
}

/// A file of the reports folder (pages, their styles and plots), never outside it.
async fn reports(
    State(d): State<Arc<Desk>>,
    headers: HeaderMap,
    axum::extract::Path(rel): axum::extract::Path<String>,
) -> Response {
    if let Err(r) = page_caller(&d, &headers, false) {
        return r.into_response();
    }
    let not_found = || StatusCode::NOT_FOUND.into_response();
    let Some(dir) = &d.settings.reports else {
        return not_found();
    };
    let rel = Path::new(&rel);
    if !rel
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)))
    {
        return not_found();
    }
    let kind = match rel.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        Some("md") => "text/plain; charset=utf-8",
        _ => return not_found(),
    };
    let path = dir.join(rel);
    match (std::fs::canonicalize(&path), std::fs::canonicalize(dir)) {
        (Ok(p), Ok(base)) if p.starts_with(&base) => match std::fs::read(&p) {
            Ok(bytes) => ([(header::CONTENT_TYPE, kind)], bytes).into_response(),
            Err(_) => not_found(),
        },
        _ => not_found(),
    }
}

async fn asset(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    let (kind, body) = match name.as_str() {
        "desk.js" => ("text/javascript; charset=utf-8", JS),
        "desk.css" => ("text/css; charset=utf-8", CSS),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    r
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

/// Before any route: with no logins, only loopback `Host`s (no DNS rebinding); a POST from
/// another site is refused; a wrong bearer token counts against the address's attempts.
async fn guard(
    State(d): State<Arc<Desk>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let headers = req.headers();
    if !d.methods.any() {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        if !loopback_host(host) {
            return forbidden("this desk answers loopback addresses only");
        }
    }
    if req.method() == axum::http::Method::POST {
        let cross_site = headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == "cross-site");
        let foreign_origin = match (
            headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
            headers.get(header::HOST).and_then(|v| v.to_str().ok()),
        ) {
            (Some(origin), Some(host)) => {
                origin != "null" && origin.split_once("://").map(|(_, h)| h) != Some(host)
            }
            (Some(_), None) => true,
            _ => false,
        };
        if cross_site || foreign_origin {
            return forbidden("a request from another site");
        }
    }
    if let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        let ip = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        if let Some(ip) = ip
            && let Err(wait) = d.sessions.attempt(ip)
        {
            let mut r = (
                StatusCode::TOO_MANY_REQUESTS,
                axum::Json(
                    json!({"error": format!("too many failed tokens: try again in {wait} s")}),
                ),
            )
                .into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(wait));
            return r;
        }
        if !d.methods.token_ok(token.trim()) {
            tracing::warn!(peer = ?ip, "desk: wrong bearer token");
            return unauthorized();
        }
        if let Some(ip) = ip {
            d.sessions.succeeded(ip);
        }
    }
    next.run(req).await
}

/// The desk's routes (serve with [`serve`], which passes the peer address logins need).
pub fn router(d: Arc<Desk>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/events", get(events))
        .route("/api/decide", post(api_decide))
        .route("/decide", post(form_decide))
        .route("/api/queue", get(api_queue))
        .route("/api/today", get(api_today))
        .route("/export", get(export))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/report", get(report))
        .route("/monitor", get(monitor))
        .route("/reports/{*path}", get(reports))
        .route("/assets/{name}", get(asset))
        .route("/fragment", get(fragment))
        .route("/healthz", get(|| async { "ok" }))
        .layer(axum::middleware::from_fn_with_state(d.clone(), guard))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(d)
}

/// Binds `addr` (port 0: any free port) and returns the listener with its address.
pub async fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), ServerError> {
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })?;
    let local = l.local_addr()?;
    Ok((l, local))
}

/// Serves the desk on `listener` until `shutdown` resolves (open event streams are ended).
pub async fn serve(
    d: Arc<Desk>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let closer = d.clone();
    axum::serve(
        listener,
        router(d).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        closer.close();
    })
    .await?;
    Ok(())
}

/// The live loop's sink into the desk: stores each micro-batch (committed before it
/// returns) and pushes the new flagged posts to open pages.
pub struct LiveSink(pub Arc<Desk>);

impl flagship_core::live::Sink for LiveSink {
    fn write(
        &mut self,
        scored: &[flagship_core::live::Scored],
    ) -> Result<(), flagship_core::live::SinkError> {
        self.0
            .add(scored)
            .map_err(flagship_core::live::SinkError::of)
    }

    fn explained(
        &mut self,
        why: &[flagship_core::live::Explained],
    ) -> Result<(), flagship_core::live::SinkError> {
        self.0
            .explained(why)
            .map_err(flagship_core::live::SinkError::of)
    }
}
