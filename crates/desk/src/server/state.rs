//! The desk the routes share ([`Desk`], the router's state): the store behind a lock, the
//! sessions and login methods, the channel to open pages and the two caches (when the today
//! panel was last sent, the drift line); what it shows beside the database ([`Settings`]);
//! the live loop's sink into it ([`LiveSink`]); and [`Desk::blocking`], the one way a
//! handler reaches SQLite or the reports folder.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use flagship_core::config::Business;
use flagship_core::live::{Explained, Scored, Sink, SinkError};
use tokio::sync::{broadcast, watch};

use super::ServerError;
use super::error::ApiError;
use super::events::Event;
use super::proxy::Trusted;
use crate::auth::{self, Failures, Methods, SessionPolicy};
use crate::page::{self, View};
use crate::{Decision, DeskError, DeskStore, Item, Today};

/// What the desk shows beside the database, and how it serves.
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
    /// `desk.trusted_proxies`: whose `Forwarded` / `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<String>,
    /// How long sessions last, how many a user holds.
    pub sessions: SessionPolicy,
    /// The server's timeouts and caps.
    pub limits: Limits,
}

/// The server's timeouts and caps (`desk.header_timeout_s`, …).
#[derive(Debug, Clone)]
pub struct Limits {
    /// A request's head, from the connection opening or the previous answer (hyper's header
    /// timer, which also ends a kept-alive connection idle this long).
    pub header_timeout: Duration,
    /// A request's body and answer (an event stream excepted).
    pub request_timeout: Duration,
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// Event streams at once, in all and per session; more answer 429.
    pub max_streams: usize,
    pub max_streams_per_session: usize,
}

impl Limits {
    fn from_config(d: &flagship_core::config::Desk) -> Limits {
        Limits {
            header_timeout: Duration::from_secs(d.header_timeout_s),
            request_timeout: Duration::from_secs(d.request_timeout_s),
            max_connections: d.max_connections,
            max_streams: d.max_streams,
            max_streams_per_session: d.max_streams_per_session,
        }
    }
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
            trusted_proxies: c.desk.trusted_proxies.clone(),
            sessions: SessionPolicy {
                idle: Duration::from_secs(c.desk.session_idle_s),
                max: Duration::from_secs(c.desk.session_max_s),
                per_user: c.desk.sessions_per_user,
            },
            limits: Limits::from_config(&c.desk),
        }
    }
}

/// The desk: its database, sessions, login methods and the channel to open pages.
pub struct Desk {
    store: Mutex<DeskStore>,
    pub(super) events: broadcast::Sender<Event>,
    /// Failed logins and tokens, per (client, name).
    pub(super) failures: Failures,
    /// Bumped when a session ends here (logout), so open event streams check theirs at once.
    pub(super) ended: watch::Sender<u64>,
    /// Open event streams: in all, and per session (by the session's stored key).
    pub(super) streams: Mutex<HashMap<String, usize>>,
    pub(super) trusted: Trusted,
    pub(super) methods: Methods,
    pub(super) settings: Settings,
    /// The live loop's figures, when this desk runs one: `/metrics` serves them too.
    pub live_telemetry: std::sync::OnceLock<Arc<flagship_core::telemetry::Telemetry>>,
    /// The model scoring now, and its threshold.
    model: Mutex<(String, Option<f64>)>,
    pub(super) closing: watch::Sender<bool>,
    /// When the today panel was last sent (sent at most every [`TODAY_EVERY`] while posts
    /// arrive), and the drift line with when it was read.
    today_sent: Mutex<Option<Instant>>,
    drift: Mutex<Option<(Instant, String)>>,
}

const TODAY_EVERY: Duration = Duration::from_millis(500);
const DRIFT_EVERY: Duration = Duration::from_secs(10);

/// The start of the current UTC day (the today panel's window).
pub(super) fn day_start() -> DateTime<Utc> {
    Utc::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc()
}

impl Desk {
    /// A desk over `store`. Fails when `bind` is not loopback and no login method is set, or
    /// not loopback without `secure_cookie`; when `secure_cookie` (TLS in front) comes
    /// without a login method; and on a `trusted_proxies` entry that is no address.
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
        // `secure_cookie` says TLS is in front: a proxy, which a desk with no logins refuses.
        if settings.secure_cookie && !methods.any() {
            return Err(ServerError::OpenBehindTls);
        }
        let trusted = Trusted::parse(&settings.trusted_proxies)?;
        Ok(Arc::new(Desk {
            store: Mutex::new(store),
            events: broadcast::channel(1024).0,
            failures: Failures::default(),
            ended: watch::channel(0).0,
            streams: Mutex::new(HashMap::new()),
            trusted,
            methods,
            settings,
            live_telemetry: Default::default(),
            model: Mutex::new((String::new(), None)),
            closing: watch::channel(false).0,
            today_sent: Mutex::new(None),
            drift: Mutex::new(None),
        }))
    }

    /// The store (blocking: SQLite). Handlers reach it through [`Desk::blocking`].
    pub(super) fn store(&self) -> MutexGuard<'_, DeskStore> {
        // A panic while holding the lock leaves SQLite consistent (transactions): go on.
        lock(&self.store)
    }

    /// The open session whose id is `id` (blocking: SQLite).
    pub(super) fn session(&self, id: &str) -> Result<Option<auth::Session>, DeskError> {
        self.store()
            .session(id, &self.settings.sessions, unix_now())
    }

    /// Opens a session for `user` (blocking: SQLite): its id, the cookie's value.
    pub(super) fn open_session(&self, user: &str) -> Result<(String, auth::Session), DeskError> {
        self.store()
            .open_session(user, &self.settings.sessions, unix_now())
    }

    /// Ends the session whose id is `id` (blocking: SQLite); its open streams end too.
    pub(super) fn close_session(&self, id: &str) -> Result<(), DeskError> {
        self.store().close_session(id)?;
        self.ended.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Runs `f` on the blocking pool, so that SQLite (which fsyncs) and the reports folder
    /// never hold an async worker. A panic in `f` answers 500 with a reference; what
    /// happened goes to the log under it.
    pub(super) async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        task: &'static str,
        f: impl FnOnce(&Desk) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let desk = self.clone();
        tokio::task::spawn_blocking(move || f(&desk))
            .await
            .map_err(|e| ApiError::Task(task, e))
    }

    /// Names the model scoring new posts (shown on the today panel until posts arrive).
    pub fn set_model(&self, id: &str, threshold: f64) {
        *lock(&self.model) = (id.to_owned(), Some(threshold));
    }

    /// Ids already in the desk (the live loop never scores them again).
    pub fn ids(&self) -> Result<HashSet<String>, DeskError> {
        self.store().ids()
    }

    /// Ends open event streams, so a graceful shutdown is not held by them.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Stores why flagged posts were flagged and shows the words on open pages.
    pub fn explained(&self, why: &[Explained]) -> Result<(), DeskError> {
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
    pub fn add(&self, scored: &[Scored]) -> Result<(), DeskError> {
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
            (fresh, self.today_due().then(|| store.today(day_start())))
        };
        if !fresh.is_empty() {
            let _ = self.events.send(Event::Posts(Arc::new(fresh)));
        }
        if let Some(today) = today {
            self.send_today(today);
        }
        Ok(())
    }

    /// Whether the today panel is due again while posts arrive (and, if so, marks it sent).
    fn today_due(&self) -> bool {
        let mut sent = lock(&self.today_sent);
        let due = sent.is_none_or(|t| t.elapsed() >= TODAY_EVERY);
        if due {
            *sent = Some(Instant::now());
        }
        due
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

    /// The posts of a view, at most `limit` (blocking: SQLite).
    pub(super) fn items(&self, view: View, limit: usize) -> Result<Vec<Item>, DeskError> {
        let store = self.store();
        match view {
            View::Queue(order) => store.queue(order, limit),
            View::Uncertain => store.uncertain(self.settings.uncertain_band, limit),
        }
    }

    /// The latest drift line, read again at most every [`DRIFT_EVERY`] (blocking: a file).
    fn drift(&self) -> String {
        let mut cached = lock(&self.drift);
        if let Some((at, line)) = &*cached
            && at.elapsed() < DRIFT_EVERY
        {
            return line.clone();
        }
        let line = self
            .settings
            .reports
            .as_deref()
            .map(super::reports::latest_drift)
            .unwrap_or_else(|| "reports are not local".into());
        *cached = Some((Instant::now(), line.clone()));
        line
    }

    /// The today panel's HTML for `t`, with the model and the drift line (blocking: a file).
    pub(super) fn today_html(&self, t: &Today) -> String {
        let (model, threshold) = lock(&self.model).clone();
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

/// Seconds since the Unix epoch (sessions' times).
fn unix_now() -> i64 {
    Utc::now().timestamp()
}

/// A lock whose holder panicked still guards consistent data here: go on.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The live loop's sink into the desk: stores each micro-batch (committed before it
/// returns) and pushes the new flagged posts to open pages.
pub struct LiveSink(pub Arc<Desk>);

impl Sink for LiveSink {
    fn write(&mut self, scored: &[Scored]) -> Result<(), SinkError> {
        self.0.add(scored).map_err(SinkError::of)
    }

    fn explained(&mut self, why: &[Explained]) -> Result<(), SinkError> {
        self.0.explained(why).map_err(SinkError::of)
    }
}
