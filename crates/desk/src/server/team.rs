//! The team at work: who takes what (`POST /api/assign`), the desk's clock ticking on open
//! pages, the burst and group-growth alerts ([`Watch`]: raised once, kept in the database,
//! shown as a banner and sent to the webhook, retried with backoff across restarts), and the
//! daily summary for the lead (`GET /summary`, `GET /summary.md`).
//!
//! | route | what | who |
//! |---|---|---|
//! | `POST /api/assign` (`id` or `group`; `to`: a name, `me`, or empty to release) | take, give or release; every change in the assignment history | agents take and release their own; leads also give and take over |
//! | `GET /summary` (`?day=YYYY-MM-DD`), `GET /summary.md` | the day's volume, answers, first-response percentiles, overdue, biggest groups with their answers | session (page), session or bearer (Markdown) |

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::events::Event;
use super::session::{AnyCaller, CsrfField, OpenPage, Writer, with_cookie};
use super::state::{Desk, lock};
use crate::alerts::{self, BurstDetector, BurstRule, GrowthRule};
use crate::auth::Role;
use crate::webhook::{self, Webhook};
use crate::{Alert, DeskError};

pub(super) fn routes() -> Router<Arc<Desk>> {
    Router::new()
        .route("/api/assign", post(assign))
        .route("/summary", get(summary_page))
        .route("/summary.md", get(summary_markdown))
}

/// How often open pages hear the desk's time and the burst rule is checked.
pub(super) const TICK: Duration = Duration::from_secs(15);

/// Alerts are shown on pages this long after they were raised.
const BANNER_FOR: chrono::Duration = chrono::Duration::hours(2);

/// Growth alerts remembered at most (the oldest forgotten first).
const GROWN_MAX: usize = 4096;

/// What the alert rules remember: the burst rule's per-minute counts, and the size of each
/// group's last growth alert (a group alerts again only when that many more people came).
pub(super) struct Watch {
    burst: BurstDetector,
    growth: GrowthRule,
    grown: HashMap<i64, u32>,
}

impl Watch {
    pub(super) fn new(a: &flagship_core::config::Alerts) -> Watch {
        let secs = |s: u64| chrono::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX / 2));
        Watch {
            burst: BurstDetector::new(BurstRule {
                window: secs(a.burst_window_s),
                baseline: secs(a.burst_baseline_s),
                p_value: a.burst_p_value,
                min_count: a.burst_min_count,
                cooldown: secs(a.burst_cooldown_s),
                ..BurstRule::default()
            }),
            growth: GrowthRule {
                window: secs(a.group_window_s),
                min_authors: a.group_min_authors,
            },
            grown: HashMap::new(),
        }
    }
}

impl Desk {
    /// The teammates who can hold posts (agents and leads of the users file), by name.
    pub(super) fn team(&self) -> Vec<String> {
        self.methods
            .team()
            .into_iter()
            .filter(|(_, r)| *r >= Role::Agent)
            .map(|(n, _)| n)
            .collect()
    }

    /// The alerts raised lately (the banner), newest first (blocking: SQLite).
    pub(super) fn recent_alerts(&self) -> Result<Vec<Alert>, DeskError> {
        self.store().alerts_since(self.now() - BANNER_FOR)
    }

    /// Counts new flagged posts for the burst rule, and raises a burst alert if they make
    /// one (blocking: SQLite when it does).
    pub(super) fn observe_flagged(&self, arrived: &[DateTime<Utc>]) {
        if arrived.is_empty() {
            return;
        }
        let burst = {
            let mut w = lock(&self.watch);
            for a in arrived {
                w.burst.observe(*a);
            }
            w.burst.check(self.now())
        };
        if let Some(b) = burst {
            self.raise_burst(&b);
        }
    }

    /// One tick of the desk's clock: open pages hear the time and get the today panel
    /// again, the burst rule is checked (the count falls back as time passes even when
    /// nothing arrives). The server ticks
    /// every [`TICK`]; a test holding the clock ticks by hand.
    pub fn tick(&self) {
        let now = self.now();
        let _ = self.events.send(Event::Clock(now));
        // The panel's overdue count moves with the clock too.
        self.refresh_today();
        let burst = lock(&self.watch).burst.check(now);
        if let Some(b) = burst {
            self.raise_burst(&b);
        }
    }

    fn raise_burst(&self, b: &alerts::Burst) {
        let window = lock(&self.watch).burst.rule().window;
        let text = alerts::burst_text(b, window);
        self.raise(
            "burst",
            text,
            serde_json::json!({
                "observed": b.observed,
                "expected": b.expected,
                "p_value": b.p_value,
                "window_s": window.num_seconds(),
            }),
        );
    }

    /// Checks whether question groups `groups` grow fast enough for an alert (blocking:
    /// SQLite).
    pub(super) fn check_growth(&self, groups: &[i64]) {
        let now = self.now();
        let rule = lock(&self.watch).growth;
        for &g in groups {
            let (arrivals, topic) = match self.store().group_arrivals(g, now - rule.window) {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!("desk: group {g}'s growth: {e}");
                    continue;
                }
            };
            let pairs: Vec<(DateTime<Utc>, &str)> =
                arrivals.iter().map(|(t, a)| (*t, a.as_str())).collect();
            let Some(n) = alerts::growing(&pairs, now, &rule) else {
                continue;
            };
            {
                let mut w = lock(&self.watch);
                // Again only when as many more people came as the last alert counted.
                if w.grown.get(&g).is_some_and(|last| n < 2 * last) {
                    continue;
                }
                if w.grown.len() >= GROWN_MAX {
                    let oldest = w.grown.keys().min().copied();
                    if let Some(k) = oldest {
                        w.grown.remove(&k);
                    }
                }
                w.grown.insert(g, n);
            }
            let topic = flagship_platforms::display_text(Default::default(), &topic).into_owned();
            self.raise(
                "group",
                alerts::growth_text(n, rule.window, &topic),
                serde_json::json!({
                    "group": g,
                    "authors": n,
                    "window_s": rule.window.num_seconds(),
                }),
            );
        }
    }

    /// Raises an alert: kept in the database with its delivery due to the webhook (if one
    /// is configured), shown on open pages, and the delivery task woken (blocking: SQLite).
    fn raise(&self, kind: &str, text: String, detail: serde_json::Value) {
        let alert = Alert {
            id: crate::auth::random_token()[..16].to_owned(),
            kind: kind.to_owned(),
            at: self.now(),
            text,
            detail,
        };
        let targets: Vec<&str> = [self.settings.alerts.webhook.as_str()]
            .into_iter()
            .filter(|t| !t.is_empty())
            .collect();
        match self.store().add_alert(&alert, &targets) {
            Ok(_) => {
                tracing::warn!(alert = alert.id, kind, "desk: alert: {}", alert.text);
                let _ = self.events.send(Event::Alert(Arc::new(alert)));
                self.deliver.notify_one();
            }
            Err(e) => tracing::error!("desk: recording an alert: {e}"),
        }
    }
}

/// Runs the desk's clock (a tick every [`TICK`]) and, with a webhook configured, the alerts'
/// deliveries, until the desk closes.
pub(super) fn start(d: &Arc<Desk>) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    let ticking = d.clone();
    tasks.push(tokio::spawn(async move {
        let mut closing = ticking.closing.subscribe();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = closing.wait_for(|c| *c) => return,
            }
            let t = ticking.clone();
            if t.blocking("tick", |d| d.tick()).await.is_err() {
                tracing::error!("desk: a clock tick failed");
            }
        }
    }));
    if let Some(hook) = Webhook::from_config(&d.settings.alerts, d.settings.webhook_secret.clone())
    {
        tasks.push(tokio::spawn(deliveries(d.clone(), hook)));
    }
    tasks
}

/// Delivers the alerts due to `hook`, one at a time, until the desk closes: a 2xx marks an
/// alert delivered (never sent again), anything else waits its backoff — kept in the
/// database, so a restart goes on where this left off —, and a dead receiver costs this task
/// its timeout, never a request of the desk.
async fn deliveries(d: Arc<Desk>, hook: Webhook) {
    let client = match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("desk: no HTTP client for the webhook: {e}; alerts stay pending");
            return;
        }
    };
    let mut closing = d.closing.subscribe();
    // Deliveries to a webhook no longer configured are given up (they would wait forever).
    let url = hook.url.clone();
    match d
        .blocking("deliveries", move |d| {
            d.store().abandon_other_targets(&url, d.now())
        })
        .await
    {
        Ok(Ok(0)) => {}
        Ok(Ok(n)) => tracing::warn!("desk: {n} alert(s) pending for an earlier webhook given up"),
        _ => tracing::error!("desk: reading the earlier webhooks' deliveries failed"),
    }
    loop {
        let url = hook.url.clone();
        let due = match d
            .blocking("deliveries", move |d| {
                d.store().due_deliveries(&url, d.now(), 16)
            })
            .await
        {
            Ok(Ok(due)) => due,
            Ok(Err(e)) => {
                tracing::error!("desk: reading the alerts due: {e}");
                Vec::new()
            }
            Err(_) => Vec::new(),
        };
        for delivery in due {
            let now = d.now();
            let outcome = tokio::select! {
                o = webhook::attempt(&client, &hook, &delivery.alert, now.timestamp()) => o,
                _ = closing.wait_for(|c| *c) => return,
            };
            let failed = delivery.attempts + 1;
            let retry = (!outcome.delivered())
                .then(|| hook.backoff(failed).map(|b| now + b))
                .flatten();
            let (status, error) = match &outcome {
                webhook::Outcome::Status(s) => (Some(*s), None),
                webhook::Outcome::Error(e) => (None, Some(e.clone())),
            };
            match (&outcome, retry) {
                (o, _) if o.delivered() => {
                    tracing::info!(alert = delivery.alert.id, "desk: alert delivered")
                }
                (_, Some(at)) => tracing::warn!(
                    alert = delivery.alert.id,
                    attempt = failed,
                    "desk: alert not delivered ({outcome:?}); again at {at}"
                ),
                (_, None) => tracing::error!(
                    alert = delivery.alert.id,
                    "desk: alert not delivered after {failed} attempts; given up"
                ),
            }
            // Recorded, or tried again: an unrecorded 2xx would send the alert twice (the
            // receiver can still drop a repeat by its `X-Flagship-Alert` id).
            for attempt in 1..=5 {
                let (id, target, error) = (
                    delivery.alert.id.clone(),
                    delivery.target.clone(),
                    error.clone(),
                );
                let recorded = d
                    .blocking("delivery", move |d| {
                        d.store().delivery_attempt(
                            &id,
                            &target,
                            now,
                            status,
                            error.as_deref(),
                            retry,
                        )
                    })
                    .await;
                if matches!(recorded, Ok(Ok(()))) {
                    break;
                }
                tracing::error!(attempt, "desk: recording an alert's delivery failed");
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
        }
        tokio::select! {
            _ = d.deliver.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = closing.wait_for(|c| *c) => return,
        }
    }
}

/// An assignment's form.
#[derive(Deserialize)]
pub(super) struct AssignForm {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    group: Option<i64>,
    /// A teammate's name, `me`, or empty: release.
    #[serde(default)]
    to: String,
    #[serde(default)]
    csrf: Option<String>,
}

impl CsrfField for AssignForm {
    fn csrf(&self) -> Option<&str> {
        self.csrf.as_deref()
    }
}

/// A post and who holds it now.
#[derive(Serialize)]
struct Held {
    held: Option<String>,
    id: String,
}

#[derive(Serialize)]
struct Assigned {
    posts: Vec<Held>,
}

/// Takes, gives or releases a post or a group's open posts: an agent takes what nobody (or
/// they) hold and releases their own; a lead also gives to a teammate (an agent or a lead)
/// and takes over from one. A post someone else holds is refused (409) naming them.
async fn assign(State(d): State<Arc<Desk>>, w: Writer<AssignForm>) -> Result<Response, ApiError> {
    w.caller.may(Role::Agent)?;
    let me = w.caller.user().to_owned();
    let role = w.caller.role();
    let f = w.form;
    let to = match f.to.trim() {
        "" => None,
        "me" => Some(me.clone()),
        name => Some(name.to_owned()),
    };
    if let Some(t) = &to
        && *t != me
    {
        super::session::may(role, Role::Lead)?;
        // A teammate of the users file, by their exact name: never a made-up one.
        if !d.team().iter().any(|m| m == t) {
            return Err(ApiError::Bad(format!(
                "{:?} is not a teammate who can hold posts (an agent or a lead of the users file)",
                crate::auth::loggable(t)
            )));
        }
    }
    let group = f.group;
    let changed = d
        .blocking("assign", move |d| -> Result<_, ApiError> {
            let posts = match (&f.id, f.group) {
                (Some(id), None) => vec![id.clone()],
                (None, Some(g)) => d.store().open_members(g)?,
                _ => return Err(ApiError::Bad("send either id or group".into())),
            };
            // An agent never takes or releases what another person holds: checked in the
            // same transaction as the change.
            let respect = (role < Role::Lead).then_some(me.as_str());
            let changed =
                d.store()
                    .assign(&posts, to.as_deref(), &me, f.group, d.now(), respect)?;
            tracing::info!(
                who = me,
                posts = changed.len(),
                to = to.as_deref().unwrap_or("(nobody)"),
                "desk: assignment"
            );
            Ok(changed)
        })
        .await??;
    if !changed.is_empty() {
        let _ = d.events.send(Event::Assigned(Arc::new(changed.clone())));
        // A group's card shows its holder: open pages get the card again.
        if let Some(g) = group {
            let entry = d.blocking("group", move |d| d.entry_of_group(g)).await??;
            if let Some(e) = entry {
                let _ = d.events.send(Event::Group(Arc::new(e)));
            }
        }
    }
    Ok(Json(Assigned {
        posts: changed
            .into_iter()
            .map(|(id, held)| Held { held, id })
            .collect(),
    })
    .into_response())
}

#[derive(Deserialize)]
struct DayQuery {
    day: Option<String>,
}

/// The day asked for (`YYYY-MM-DD`), else today in the desk's time zone.
fn day_of(d: &Desk, q: &DayQuery) -> Result<NaiveDate, ApiError> {
    match q.day.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => s
            .parse()
            .map_err(|_| ApiError::Bad(format!("day {s:?}: write YYYY-MM-DD"))),
        None => Ok(crate::clock::day_of(d.now(), d.settings.timezone)),
    }
}

/// The day's summary (blocking: SQLite).
fn summary_of(d: &Desk, day: NaiveDate) -> Result<crate::summary::Summary, DeskError> {
    crate::summary::Summary::of(
        &d.store(),
        day,
        d.settings.timezone,
        d.settings.first_response,
        d.now(),
    )
}

async fn summary_page(
    State(d): State<Arc<Desk>>,
    Query(q): Query<DayQuery>,
    OpenPage { session, cookie }: OpenPage,
) -> Result<Response, ApiError> {
    let day = day_of(&d, &q)?;
    let html = d
        .blocking("summary", move |d| -> Result<String, ApiError> {
            let s = summary_of(d, day)?;
            let team = d.team();
            let frame = super::pages::frame(d, &session, &team, &[]);
            Ok(crate::page::summary_page(&frame, &s))
        })
        .await??;
    Ok(with_cookie(Html(html).into_response(), cookie))
}

async fn summary_markdown(
    State(d): State<Arc<Desk>>,
    Query(q): Query<DayQuery>,
    _: AnyCaller,
) -> Result<Response, ApiError> {
    let day = day_of(&d, &q)?;
    let md = d
        .blocking("summary", move |d| summary_of(d, day).map(|s| s.markdown()))
        .await??;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "text/markdown; charset=utf-8".to_owned(),
            ),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"summary-{day}.md\""),
            ),
        ],
        md,
    )
        .into_response())
}
