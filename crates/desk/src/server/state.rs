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
use flagship_core::live::{Embed, Explained, Scored, Sink, SinkError};
use tokio::sync::{broadcast, watch};

use super::ServerError;
use super::error::ApiError;
use super::events::Event;
use super::proxy::Trusted;
use crate::auth::{self, Failures, Methods, SessionPolicy};
use crate::page::{self, Entry, Suggestion, View, Whose};
use crate::{Answer, Decision, DeskError, DeskStore, Item, Today};

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
    /// The Mastodon instance's post limit (saved answers are checked against it).
    pub mastodon_max_characters: usize,
    /// The first-response target and the time zone the desk's days are counted in.
    pub first_response: chrono::Duration,
    pub timezone: chrono_tz::Tz,
    /// Burst and group-growth alerts, and their webhook.
    pub alerts: flagship_core::config::Alerts,
    /// The webhook's HMAC secret (read from `desk.alerts.webhook_secret_env`).
    pub webhook_secret: Option<crate::webhook::Secret>,
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
            mastodon_max_characters: c.desk.mastodon_max_characters,
            first_response: chrono::Duration::from_std(c.desk.first_response())
                .unwrap_or(chrono::Duration::hours(1)),
            timezone: c.desk.timezone(),
            alerts: {
                // The webhook's URL from the environment wins (a Slack URL is a credential).
                let mut a = c.desk.alerts.clone();
                if let Some(url) = std::env::var(&a.webhook_url_env)
                    .ok()
                    .filter(|u| !u.trim().is_empty())
                {
                    a.webhook = url.trim().to_owned();
                }
                a
            },
            webhook_secret: std::env::var(&c.desk.alerts.webhook_secret_env)
                .ok()
                .filter(|s| !s.trim().is_empty())
                .map(crate::webhook::Secret::new),
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
    /// The sentence encoder the live loop groups questions with, when it runs here: saved
    /// answers are embedded with it and matched to posts and groups.
    embedder: std::sync::OnceLock<Arc<dyn Embed>>,
    /// The saved answers with their embeddings (read again after a change).
    answers: Mutex<Option<Arc<Vec<Answer>>>>,
    /// What the today panel says of the model (base, when trained, operating point).
    model_card: Mutex<Option<String>>,
    /// Sends replies through the mission's accounts (none: the page copies the answer).
    replier: std::sync::OnceLock<Arc<flagship_reply::Replier>>,
    /// Per platform, when its rate limit (a 429's reset) lets the desk send again.
    pub(super) rate_limited: Mutex<HashMap<flagship_core::Platform, Instant>>,
    /// The desk's time when tests hold it still (`testing` only); else the system's.
    paused: Mutex<Option<DateTime<Utc>>>,
    /// The burst rule's counts and the group-growth alerts raised (see `team`).
    pub(super) watch: Mutex<super::team::Watch>,
    /// Wakes the webhook's deliveries when an alert is raised.
    pub(super) deliver: tokio::sync::Notify,
    /// Today's first-response figures, and when they were worked out; whether a decision
    /// came since.
    responses: Mutex<Option<(Instant, crate::clock::Figures)>>,
    responses_stale: std::sync::atomic::AtomicBool,
}

/// A saved answer is suggested only this close to a post (cosine).
pub(super) const SUGGEST_MIN: f32 = 0.3;

const TODAY_EVERY: Duration = Duration::from_millis(500);
const RESPONSES_EVERY: Duration = Duration::from_secs(2);
const RESPONSES_SOON: Duration = Duration::from_millis(250);
const DRIFT_EVERY: Duration = Duration::from_secs(10);

impl Desk {
    /// A desk over `store`. Fails when `bind` is not loopback and no login method is set, or
    /// not loopback without `secure_cookie`; when `secure_cookie` (TLS in front) comes
    /// without a login method; and on a `trusted_proxies` entry that is no address.
    pub fn new(
        mut store: DeskStore,
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
        flagship_core::config::webhook_ok(&settings.alerts.webhook)
            .map_err(ServerError::Webhook)?;
        if !settings.alerts.webhook.is_empty()
            && settings.alerts.webhook_format == "json"
            && settings.webhook_secret.is_none()
        {
            return Err(ServerError::NoWebhookSecret(
                settings.alerts.webhook_secret_env.clone(),
            ));
        }
        let trusted = Trusted::parse(&settings.trusted_proxies)?;
        let watch = super::team::Watch::new(&settings.alerts);
        match store.token_in_use(methods.token_fingerprint().as_deref()) {
            Ok(0) => {}
            Ok(n) => tracing::info!("desk: the shared token changed; {n} token session(s) ended"),
            Err(e) => tracing::error!("desk: checking the shared token's sessions: {e}"),
        }
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
            embedder: std::sync::OnceLock::new(),
            answers: Mutex::new(None),
            model_card: Mutex::new(None),
            replier: std::sync::OnceLock::new(),
            rate_limited: Mutex::new(HashMap::new()),
            paused: Mutex::new(None),
            watch: Mutex::new(watch),
            deliver: tokio::sync::Notify::new(),
            responses: Mutex::new(None),
            responses_stale: Default::default(),
        }))
    }

    /// The desk's time: the system's, or where a test holds it.
    pub fn now(&self) -> DateTime<Utc> {
        lock(&self.paused).unwrap_or_else(Utc::now)
    }

    /// Holds the desk's clock at `at` (`None`: the system's again) — tests only: the clock
    /// the page's overdue marks, the today panel and the alert rules read.
    #[cfg(feature = "testing")]
    pub fn hold_clock(&self, at: Option<DateTime<Utc>>) {
        *lock(&self.paused) = at;
    }

    /// The page's clock: the desk's time and the first-response target.
    pub(super) fn clock(&self) -> page::Clock {
        page::Clock {
            now: self.now(),
            target: self.settings.first_response,
        }
    }

    /// The start of the desk's day now (in `desk.timezone`).
    pub(super) fn day_start(&self) -> DateTime<Utc> {
        let tz = self.settings.timezone;
        crate::clock::day_span(crate::clock::day_of(self.now(), tz), tz).0
    }

    /// The store (blocking: SQLite). Handlers reach it through [`Desk::blocking`].
    pub(super) fn store(&self) -> MutexGuard<'_, DeskStore> {
        // A panic while holding the lock leaves SQLite consistent (transactions): go on.
        lock(&self.store)
    }

    /// The open session whose id is `id`, with its holder's role now (blocking: SQLite and
    /// the users file). The sessions of people removed from the users file, or whose role or
    /// password changed there, end first; a session whose person the desk no longer knows
    /// is none.
    pub(super) fn session(&self, id: &str) -> Result<Option<auth::Session>, DeskError> {
        self.methods.refresh();
        let mut store = self.store();
        self.end_changed(&mut store)?;
        let found = store.session(id, &self.settings.sessions, unix_now())?;
        Ok(found.and_then(|mut s| {
            s.role = self.methods.role(&s.user)?;
            Some(s)
        }))
    }

    /// Ends the sessions of the people the users file changed for (removed, a new role or
    /// password); a name whose sessions could not be ended yet stays queued.
    fn end_changed(&self, store: &mut DeskStore) -> Result<(), DeskError> {
        let mut changed = self.methods.take_changed();
        if changed.is_empty() {
            return Ok(());
        }
        while let Some(user) = changed.pop() {
            match store.revoke_user(&user) {
                Ok(n) => tracing::info!(
                    user = auth::loggable(&user),
                    sessions = n,
                    "desk: a changed user's sessions ended"
                ),
                Err(e) => {
                    changed.push(user);
                    self.methods.requeue(changed);
                    return Err(e);
                }
            }
        }
        self.ended.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Opens a session for `user` (blocking: SQLite): its id, the cookie's value. The
    /// sessions of changed users end first — a new password's first login is not the one
    /// ended.
    pub(super) fn open_session(&self, user: &str) -> Result<(String, auth::Session), DeskError> {
        let mut store = self.store();
        self.end_changed(&mut store)?;
        let (id, mut s) = store.open_session(user, &self.settings.sessions, unix_now())?;
        drop(store);
        s.role = self.methods.role(user).unwrap_or(auth::Role::Viewer);
        Ok((id, s))
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

    /// Stores why flagged posts were flagged and shows the words on open pages; posts that
    /// joined a question group show as its card (a post alone gets its suggested answer).
    pub fn explained(&self, why: &[Explained]) -> Result<(), DeskError> {
        let done = self.store().explain(why)?;
        for e in why.iter().filter(|e| !e.why.is_empty()) {
            let _ = self.events.send(Event::Why {
                id: e.id.clone(),
                words: e.why.iter().map(|w| w.word.clone()).collect(),
            });
        }
        let mut groups: Vec<i64> = done.grouped.iter().map(|(_, g)| *g).collect();
        groups.sort_unstable();
        groups.dedup();
        self.check_growth(&groups);
        for g in groups {
            match self.entry_of_group(g) {
                Ok(Some(e)) => {
                    let _ = self.events.send(Event::Group(Arc::new(e)));
                }
                Ok(None) => {}
                Err(e) => tracing::error!("desk: question group {g}: {e}"),
            }
        }
        Ok(())
    }

    /// Sends replies from now on through `r` (once).
    pub fn set_replier(&self, r: Arc<flagship_reply::Replier>) {
        let _ = self.replier.set(r);
    }

    /// The replier, when one is set.
    pub(super) fn replier(&self) -> Option<&Arc<flagship_reply::Replier>> {
        self.replier.get()
    }

    /// Sets the sentence encoder (once): saved answers are embedded with it now and after
    /// each change (blocking: the encoder and SQLite).
    pub fn set_embedder(&self, e: Arc<dyn Embed>) -> Result<(), DeskError> {
        let _ = self.embedder.set(e);
        self.embed_answers()
    }

    /// Embeds the saved answers that have no embedding from this encoder yet.
    pub(super) fn embed_answers(&self) -> Result<(), DeskError> {
        let Some(enc) = self.embedder.get() else {
            *lock(&self.answers) = None;
            return Ok(());
        };
        let answers = self.store().answers()?;
        let todo: Vec<&Answer> = answers
            .iter()
            .filter(|a| a.embedding.as_ref().is_none_or(|(_, by)| by != enc.id()))
            .collect();
        if !todo.is_empty() {
            let texts: Vec<String> = todo.iter().map(|a| answer_text(a)).collect();
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            match enc.embed(&refs) {
                Ok(vs) => {
                    let mut store = self.store();
                    for (a, v) in todo.iter().zip(vs) {
                        store.set_answer_embedding(a.id, a.updated_at, &v, enc.id())?;
                    }
                }
                Err(e) => tracing::warn!("desk: saved answers left unmatched: {e}"),
            }
        }
        *lock(&self.answers) = None;
        Ok(())
    }

    /// The saved answers in use (cached until the next change).
    pub(super) fn answers(&self) -> Result<Arc<Vec<Answer>>, DeskError> {
        if let Some(a) = lock(&self.answers).clone() {
            return Ok(a);
        }
        let a = Arc::new(self.store().answers()?);
        *lock(&self.answers) = Some(a.clone());
        Ok(a)
    }

    /// The saved answer nearest `v` (a post's embedding or a group's centroid), filled in
    /// for `post`; none below [`SUGGEST_MIN`] or without embedded answers.
    fn suggest(&self, v: Option<&[f32]>, post: &Item) -> Result<Option<Suggestion>, DeskError> {
        let Some(v) = v else { return Ok(None) };
        let answers = self.answers()?;
        let best = answers
            .iter()
            .filter_map(|a| {
                let (e, _) = a.embedding.as_ref()?;
                Some((a, crate::groups::cosine(e, v)))
            })
            .max_by(|x, y| x.1.total_cmp(&y.1));
        Ok(best
            .filter(|(_, s)| *s >= SUGGEST_MIN)
            .map(|(a, similarity)| Suggestion {
                answer: a.id,
                title: a.title.clone(),
                text: flagship_platforms::reply::render(
                    &a.body,
                    &flagship_platforms::reply::Fill {
                        author: post.author.as_deref(),
                        link: post.url.as_deref(),
                    },
                )
                .map_err(|e| e.to_string()),
                similarity,
            }))
    }

    /// Group `g` as the list shows it: its card when two or more posts are in it, else its
    /// one post (with its suggested answer); `None` when it is empty.
    pub(super) fn entry_of_group(&self, g: i64) -> Result<Option<Entry>, DeskError> {
        let (card, centroid) = {
            let store = self.store();
            let card = match store.group_card(g) {
                Ok(c) => c,
                Err(DeskError::NoGroup(_)) => return Ok(None),
                Err(e) => return Err(e),
            };
            (card, store.centroid(g)?)
        };
        let answer = self.suggest(centroid.as_deref(), &card.representative)?;
        Ok(Some(if card.size >= 2 {
            Entry::Group(card, answer)
        } else {
            Entry::Post(card.representative, answer)
        }))
    }

    /// Decides every waiting post of group `g` (committed before it returns; `Undo`: takes
    /// the group decision back) and tells open pages.
    pub fn decide_group(
        &self,
        g: i64,
        decision: Decision,
        who: &str,
    ) -> Result<crate::GroupDecided, DeskError> {
        self.responses_stale
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let (done, today) = {
            let mut store = self.store();
            let done = store.decide_group(g, decision, who)?;
            (done, store.today(self.day_start()))
        };
        tracing::info!(
            group = g,
            posts = done.posts.len(),
            decision = decision.as_str(),
            who,
            "desk: group decision"
        );
        for (id, now) in &done.posts {
            let _ = self.events.send(Event::Decided {
                id: id.clone(),
                decision: *now,
            });
        }
        if let Some(e) = self.entry_of_group(g)? {
            let _ = self.events.send(Event::Group(Arc::new(e)));
        }
        self.send_today(today);
        Ok(done)
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
            (
                fresh,
                self.today_due().then(|| store.today(self.day_start())),
            )
        };
        self.observe_flagged(&fresh.iter().map(|i| i.arrived_at).collect::<Vec<_>>());
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
        self.responses_stale
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let (now, today) = {
            let mut store = self.store();
            let now = store.decide(id, decision, who)?;
            (now, store.today(self.day_start()))
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

    /// The posts of a view, of those `whose` names for `user`, at most `limit` (blocking:
    /// SQLite).
    pub(super) fn items(
        &self,
        view: View,
        whose: Whose,
        user: &str,
        limit: usize,
    ) -> Result<Vec<Item>, DeskError> {
        let store = self.store();
        match view {
            View::Queue(order) => store.queue_for(order, whose.of(user), limit),
            View::Waiting => store.waiting(whose.of(user), limit),
            View::Uncertain => store.uncertain(self.settings.uncertain_band, limit),
        }
    }

    /// A view's entries: in the queue, the posts of a question group with two or more
    /// members are one card (where its first listed post would be); each with its suggested
    /// answer (blocking: SQLite).
    pub(super) fn entries(
        &self,
        view: View,
        whose: Whose,
        user: &str,
        limit: usize,
    ) -> Result<Vec<Entry>, DeskError> {
        let items = self.items(view, whose, user, limit)?;
        let mut out = Vec::with_capacity(items.len());
        let mut shown = HashSet::new();
        for item in items {
            match (view, item.group) {
                (View::Queue(_), Some(g)) => {
                    if shown.insert(g)
                        && let Some(e) = self.entry_of_group(g)?
                    {
                        out.push(e);
                    }
                }
                _ => {
                    let v = self.store().embedding(&item.id)?;
                    let answer = self.suggest(v.as_deref(), &item)?;
                    out.push(Entry::Post(item, answer));
                }
            }
        }
        Ok(out)
    }

    /// Says what model scores (the today panel): its base, when it was trained, its
    /// operating point — not its folder.
    pub fn set_model_card(&self, description: &str) {
        *lock(&self.model_card) = Some(description.to_owned());
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

    /// Sends the today panel again with fresh first-response figures (the clock ticked).
    pub(super) fn refresh_today(&self) {
        *lock(&self.responses) = None;
        let today = self.store().today(self.day_start());
        self.send_today(today);
    }

    /// Today's first-response figures, worked out at most every [`RESPONSES_EVERY`] (the
    /// panel is sent with every decision; the figures read every post of the day).
    fn responses_today(&self) -> crate::clock::Figures {
        let mut cached = lock(&self.responses);
        // A decision made since: worked out again, at most every RESPONSES_SOON.
        let stale = self
            .responses_stale
            .load(std::sync::atomic::Ordering::Relaxed);
        if let Some((at, f)) = &*cached
            && at.elapsed() < RESPONSES_EVERY
            && !(stale && at.elapsed() >= RESPONSES_SOON)
        {
            return f.clone();
        }
        self.responses_stale
            .store(false, std::sync::atomic::Ordering::Relaxed);
        let now = self.now();
        let f = match self
            .store()
            .responses(self.day_start(), now + chrono::Duration::days(1))
        {
            Ok(rs) => crate::clock::Figures::of(&rs, self.settings.first_response, now),
            Err(e) => {
                tracing::error!("desk: the today panel's first responses: {e}");
                return Default::default();
            }
        };
        *cached = Some((Instant::now(), f.clone()));
        f
    }

    /// The today panel's HTML for `t`, with today's first responses, the model and the
    /// drift line (blocking: SQLite and a file).
    pub(super) fn today_html(&self, t: &Today) -> String {
        let (model, threshold) = lock(&self.model).clone();
        let card = lock(&self.model_card).clone();
        let drift = self.drift();
        let response = self.responses_today();
        page::today(
            t,
            &page::Context {
                model: match &card {
                    Some(c) => c,
                    None if model.is_empty() => "(no post scored yet)",
                    None => &model,
                },
                threshold,
                drift: &drift,
                business: &self.settings.business,
                response: &response,
                target: self.settings.first_response,
                timezone: self.settings.timezone.name(),
            },
        )
    }
}

/// The text an answer is matched by: its title and its body without placeholders.
fn answer_text(a: &Answer) -> String {
    let body = a.body.replace("{author}", "").replace("{link}", "");
    format!("{}. {}", a.title, body.trim())
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
