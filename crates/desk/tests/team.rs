//! The team at work over real sockets and a real SQLite file: roles checked by the server
//! (a viewer cannot decide, reply or assign; an agent cannot give posts away or edit saved
//! answers) and a changed role ending that person's sessions; assignment (take, give,
//! release, a held post refused to another agent, every change in the history); the
//! first-response figures of a scripted team; the alerts — a burst and a question group
//! growing — delivered to a local webhook receiver once, signed, retried after a 500 and
//! across a restart, while a dead receiver never holds the desk up.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use flagship_core::live::{Explained, Scored};
use flagship_core::{Platform, Post};
use flagship_desk::auth::{Methods, Role, add_user, set_role};
use flagship_desk::server::{Desk, Settings};
use flagship_desk::testing::{Served, form, http, login};
use flagship_desk::webhook::Secret;
use flagship_desk::{Decision, DeskStore};

const PASSWORD: &str = "correct horse battery";

fn settings() -> Settings {
    let mut s = Settings::from_config(&flagship_core::Config::default());
    s.reports = None;
    s
}

/// A flagged post from `author` that reached the desk at `at`.
fn flagged(id: &str, author: &str, text: &str, at: DateTime<Utc>) -> Scored {
    Scored {
        post: Post {
            platform: Platform::Bluesky,
            id: id.into(),
            url: Some(format!("https://bsky.app/profile/{author}/post/{id}")),
            created_at: Some(at),
            text: text.into(),
            author_username: Some(author.into()),
            ..Post::default()
        },
        text_model: text.into(),
        matched: vec![],
        client: None,
        probability: 0.9,
        need_support: true,
        threshold: 0.5,
        model_id: "fixture".into(),
        scored_at: at,
        latency_ms: 0.0,
        hurried: false,
        why: Vec::new(),
    }
}

/// A POST with the session's cookie and CSRF token.
async fn post(
    addr: SocketAddr,
    (cookie, csrf): &(String, String),
    path: &str,
    fields: &[(&str, &str)],
) -> (u16, String) {
    let (status, _, body) = http(
        addr,
        "POST",
        path,
        &[("Cookie", cookie), ("X-CSRF-Token", csrf)],
        &form(fields),
    )
    .await;
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_are_the_servers_and_a_changed_role_ends_the_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("desk.sqlite");
    let users = dir.path().join("users.txt");
    add_user(&users, "ana", PASSWORD, Some(Role::Lead)).unwrap();
    add_user(&users, "bo", PASSWORD, None).unwrap();
    add_user(&users, "cy", PASSWORD, Some(Role::Viewer)).unwrap();
    let now = Utc::now();
    let mut store = DeskStore::open(&db).unwrap();
    store
        .add(&[
            flagged("p1", "u1", "is the webb launch delayed?", now),
            flagged("p2", "u2", "no news about the mirror?", now),
        ])
        .unwrap();
    let desk = Desk::new(
        store,
        Methods::load(Some(&users), None).unwrap(),
        settings(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let s = Served::start(desk).await;
    let ana = login(s.addr, "ana", PASSWORD).await;
    let bo = login(s.addr, "bo", PASSWORD).await;
    let cy = login(s.addr, "cy", PASSWORD).await;

    // A viewer reads, and nothing else — whatever the page shows.
    let (status, _, page) = http(s.addr, "GET", "/", &[("Cookie", &cy.0)], "").await;
    assert_eq!(status, 200);
    assert!(page.contains(r#"data-role="viewer""#), "{page}");
    for (path, fields) in [
        ("/api/decide", vec![("id", "p1"), ("decision", "done")]),
        ("/api/assign", vec![("id", "p1"), ("to", "me")]),
        ("/api/reply/preview", vec![("id", "p1"), ("text", "hello")]),
        ("/api/reply/send", vec![("id", "p1"), ("text", "hello")]),
        ("/decide", vec![("id", "p1"), ("decision", "done")]),
    ] {
        let (status, body) = post(s.addr, &cy, path, &fields).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(
            body.contains("takes the agent role; you are a viewer"),
            "{body}"
        );
    }
    // An agent neither edits saved answers nor gives posts away.
    let (status, body) = post(
        s.addr,
        &bo,
        "/answers",
        &[("action", "save"), ("title", "t"), ("body", "b")],
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = post(s.addr, &bo, "/api/assign", &[("id", "p1"), ("to", "ana")]).await;
    assert_eq!(status, 403, "{body}");

    // Take, a held post refused to another agent, a lead giving and taking over.
    let (status, body) = post(s.addr, &bo, "/api/assign", &[("id", "p1"), ("to", "me")]).await;
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"posts":[{"held":"bo","id":"p1"}]}"#)
    );
    let (status, body) = post(s.addr, &ana, "/api/assign", &[("id", "p2"), ("to", "bo")]).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(s.addr, &ana, "/api/assign", &[("id", "p2"), ("to", "cy")]).await;
    assert_eq!(status, 400, "a viewer holds nothing: {body}");
    for made_up in ["ana (token)", "nobody", "token"] {
        let (status, body) = post(
            s.addr,
            &ana,
            "/api/assign",
            &[("id", "p2"), ("to", made_up)],
        )
        .await;
        assert_eq!(status, 400, "{made_up}: {body}");
    }
    let (status, _, mine) = http(
        s.addr,
        "GET",
        "/api/queue?whose=mine",
        &[("Cookie", &bo.0)],
        "",
    )
    .await;
    assert_eq!(status, 200);
    let mine: Vec<serde_json::Value> = serde_json::from_str(&mine).unwrap();
    assert_eq!(mine.len(), 2, "bo's: {mine:?}");
    let (_, _, free) = http(
        s.addr,
        "GET",
        "/api/queue?whose=unassigned",
        &[("Cookie", &ana.0)],
        "",
    )
    .await;
    assert_eq!(free, "[]");
    let (status, body) = post(s.addr, &ana, "/api/assign", &[("id", "p1"), ("to", "me")]).await;
    assert_eq!(status, 200, "a lead takes over: {body}");
    let (status, body) = post(s.addr, &bo, "/api/assign", &[("id", "p1"), ("to", "me")]).await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("ana holds post p1"), "{body}");
    let (status, body) = post(s.addr, &bo, "/api/assign", &[("id", "p1"), ("to", "")]).await;
    assert_eq!(status, 409, "nor released by another agent: {body}");
    // The page says who holds what.
    let (_, _, page) = http(s.addr, "GET", "/", &[("Cookie", &bo.0)], "").await;
    assert!(page.contains("held by <bdi>ana</bdi>"), "{page}");
    // The history has every change, with who made it.
    let history = DeskStore::open(&db)
        .unwrap()
        .assignment_history("p1")
        .unwrap();
    let summary: Vec<(Option<&str>, &str)> = history
        .iter()
        .map(|(to, by, _, _)| (to.as_deref(), by.as_str()))
        .collect();
    assert_eq!(summary, vec![(Some("bo"), "bo"), (Some("ana"), "ana")]);

    // A changed role ends that person's sessions at their next request; a removed person's
    // too. The file is read again as it changes.
    std::thread::sleep(Duration::from_millis(20));
    assert!(set_role(&users, "bo", Role::Viewer).unwrap());
    let (status, _, _) = http(s.addr, "GET", "/api/today", &[("Cookie", &bo.0)], "").await;
    assert_eq!(status, 401, "bo's session ended with his role");
    let bo = login(s.addr, "bo", PASSWORD).await;
    let (status, _) = post(
        s.addr,
        &bo,
        "/api/decide",
        &[("id", "p2"), ("decision", "done")],
    )
    .await;
    assert_eq!(status, 403, "bo is a viewer now");
    std::thread::sleep(Duration::from_millis(20));
    assert!(flagship_desk::auth::remove_user(&users, "cy").unwrap());
    let (status, _, _) = http(s.addr, "GET", "/api/today", &[("Cookie", &cy.0)], "").await;
    assert_eq!(status, 401, "cy was removed");
    let (status, _, _) = http(s.addr, "GET", "/api/today", &[("Cookie", &ana.0)], "").await;
    assert_eq!(status, 200, "ana's session is untouched");
    // A new password: the old sessions end, the first login with the new one does not.
    std::thread::sleep(Duration::from_millis(20));
    add_user(&users, "ana", "a brand new password", None).unwrap();
    let fresh = login(s.addr, "ana", "a brand new password").await;
    let (status, _, _) = http(s.addr, "GET", "/api/today", &[("Cookie", &ana.0)], "").await;
    assert_eq!(status, 401, "the old session ended");
    let (status, _, _) = http(s.addr, "GET", "/api/today", &[("Cookie", &fresh.0)], "").await;
    assert_eq!(status, 200, "the new login holds");
    let (status, body) = post(s.addr, &fresh, "/api/assign", &[("id", "p2"), ("to", "me")]).await;
    assert_eq!(
        status, 200,
        "still a lead (the new password kept the role): {body}"
    );
    s.stop().await;

    // In the store: a post someone else holds is refused in the change's own transaction.
    let mut store = DeskStore::open(&db).unwrap();
    let e = store
        .assign(
            &["p1".to_owned()],
            Some("bo"),
            "bo",
            None,
            Utc::now(),
            Some("bo"),
        )
        .unwrap_err();
    assert!(e.to_string().contains("ana holds post p1"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_shared_token_ends_the_old_tokens_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("desk.sqlite");
    let start = |token: &str| {
        Desk::new(
            DeskStore::open(&db).unwrap(),
            Methods::new(HashMap::new(), Some(token.to_owned())),
            settings(),
            "127.0.0.1:0".parse().unwrap(),
        )
        .unwrap()
    };
    let old = "an-old-shared-token-0123456789abcdef";
    let s = Served::start(start(old)).await;
    let carla = login(s.addr, "carla", old).await;
    s.stop().await;
    // The same token after a restart: the session holds.
    let s = Served::start(start(old)).await;
    let (status, _, _) = http(s.addr, "GET", "/api/today", &[("Cookie", &carla.0)], "").await;
    assert_eq!(status, 200);
    s.stop().await;
    // A rotated token: its old holders are logged out.
    let s = Served::start(start("a-new-shared-token-0123456789abcdef")).await;
    let (status, _, _) = http(s.addr, "GET", "/api/today", &[("Cookie", &carla.0)], "").await;
    assert_eq!(status, 401);
    s.stop().await;
}

/// A local webhook receiver: every request's headers and body; its answers scripted (the
/// first `fail_first` get a 500).
/// A request the receiver got: its headers and body.
type Got = (HashMap<String, String>, Vec<u8>);

#[derive(Default)]
struct Receiver {
    got: Mutex<Vec<Got>>,
    fail_first: usize,
    /// Hang (a dead receiver) instead of answering.
    hang: AtomicBool,
    /// Requests answered 2xx.
    answered: AtomicUsize,
}

async fn receiver(fail_first: usize) -> (SocketAddr, Arc<Receiver>) {
    use axum::routing::post;
    let r = Arc::new(Receiver {
        fail_first,
        ..Default::default()
    });
    let state = r.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let state = state.clone();
                async move {
                    let n = {
                        let mut got = state.got.lock().unwrap();
                        got.push((
                            headers
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                                .collect(),
                            body.to_vec(),
                        ));
                        got.len()
                    };
                    if state.hang.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                    if n <= state.fail_first {
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        state.answered.fetch_add(1, Ordering::SeqCst);
                        axum::http::StatusCode::NO_CONTENT
                    }
                }
            },
        ),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    (addr, r)
}

fn webhook_settings(url: &str) -> Settings {
    let mut s = settings();
    s.alerts.webhook = url.to_owned();
    s.alerts.webhook_format = "json".into();
    s.alerts.webhook_retry_s = 1;
    s.alerts.webhook_timeout_s = 1;
    s.webhook_secret = Some(Secret::new("a-webhook-secret".into()));
    s
}

/// A burst on the desk's held clock: one post 90 minutes before (the rule's history), then
/// twelve in a minute.
fn burst(desk: &Desk, t0: DateTime<Utc>) {
    desk.hold_clock(Some(t0 - chrono::Duration::minutes(90)));
    desk.add(&[flagged(
        "old",
        "u0",
        "a quiet morning",
        t0 - chrono::Duration::minutes(90),
    )])
    .unwrap();
    desk.hold_clock(Some(t0));
    let posts: Vec<Scored> = (0..12)
        .map(|i| {
            flagged(
                &format!("b{i}"),
                &format!("u{i}"),
                "the feed is down?",
                t0 - chrono::Duration::seconds(50 - i),
            )
        })
        .collect();
    desk.add(&posts).unwrap();
}

/// Polls `f` until it holds (10 s).
async fn until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn verify(headers: &HashMap<String, String>, body: &[u8]) {
    use hmac::Mac;
    let ts = &headers["x-flagship-timestamp"];
    let sig = headers["x-flagship-signature"]
        .strip_prefix("sha256=")
        .unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"a-webhook-secret").unwrap();
    mac.update(format!("{ts}.").as_bytes());
    mac.update(body);
    let raw: Vec<u8> = (0..sig.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&sig[i..i + 2], 16).unwrap())
        .collect();
    mac.verify_slice(&raw).expect("a valid signature");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_the_webhook_once_signed_and_retried() {
    let (hook, rx) = receiver(1).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("desk.sqlite");
    let desk = Desk::new(
        DeskStore::open(&db).unwrap(),
        Methods::default(),
        webhook_settings(&format!("http://{hook}/hook")),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let s = Served::start(desk.clone()).await;
    burst(&desk, Utc::now());
    // Retries wait on the desk's clock: let it run.
    desk.hold_clock(None);

    // The first attempt answered 500: tried again (after a second), then never again.
    until("two deliveries", || rx.got.lock().unwrap().len() >= 2).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let got = rx.got.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "a 2xx ends the deliveries");
    for (h, body) in &got {
        verify(h, body);
    }
    assert_eq!(got[0].0["x-flagship-alert"], got[1].0["x-flagship-alert"]);
    let alert: serde_json::Value = serde_json::from_slice(&got[1].1).unwrap();
    assert_eq!(alert["kind"], "burst");
    assert_eq!(
        alert["id"].as_str(),
        Some(got[1].0["x-flagship-alert"].as_str())
    );
    assert!(
        alert["text"]
            .as_str()
            .unwrap()
            .starts_with("Burst: 12 flagged posts in 10 minutes"),
        "{alert}"
    );
    let store = DeskStore::open(&db).unwrap();
    let d = store.deliveries().unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].state.as_str(), d[0].attempts), ("delivered", 2));
    // The delivery log, as the closing note shows it (`--nocapture`).
    for a in store.delivery_log().unwrap() {
        eprintln!(
            "delivery: alert {} → {} at {}: {}",
            a.alert_id,
            a.target,
            a.at.format("%H:%M:%S%.3f"),
            a.status
                .map(|s| format!("HTTP {s}"))
                .or(a.error)
                .unwrap_or_default()
        );
    }
    let log: Vec<Option<u16>> = store
        .delivery_log()
        .unwrap()
        .iter()
        .map(|a| a.status)
        .collect();
    assert_eq!(log, vec![Some(500), Some(204)]);
    // The banner shows it on the page.
    let (_, _, page) = http(s.addr, "GET", "/", &[], "").await;
    assert!(page.contains(r#"class="alert alert-burst""#), "{page}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_receiver_never_blocks_and_a_restart_delivers() {
    // A receiver that hangs (answers nothing within the desk's 1 s timeout) until told to
    // answer.
    let (hook, rx) = receiver(0).await;
    rx.hang.store(true, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("desk.sqlite");
    let url = format!("http://{hook}/hook");
    let desk = Desk::new(
        DeskStore::open(&db).unwrap(),
        Methods::default(),
        webhook_settings(&url),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let s = Served::start(desk.clone()).await;
    burst(&desk, Utc::now());
    // While the delivery hangs, the desk answers at once.
    until("an attempt under way", || {
        !rx.got.lock().unwrap().is_empty()
    })
    .await;
    for _ in 0..5 {
        let start = Instant::now();
        let (status, _, _) = http(s.addr, "GET", "/", &[], "").await;
        assert_eq!(status, 200);
        assert!(
            start.elapsed() < Duration::from_millis(800),
            "{:?}",
            start.elapsed()
        );
    }
    until("a timed-out attempt", || {
        DeskStore::open(&db)
            .unwrap()
            .delivery_log()
            .unwrap()
            .first()
            .is_some_and(|a| a.error.as_deref() == Some("no answer within 1s"))
    })
    .await;
    s.stop().await;
    drop(desk);
    let pending = DeskStore::open(&db).unwrap().deliveries().unwrap();
    assert_eq!(pending[0].state, "pending", "kept for the next start");

    // A restart with the receiver answering: the pending delivery goes out, once.
    rx.hang.store(false, Ordering::SeqCst);
    let before = rx.answered.load(Ordering::SeqCst);
    let desk = Desk::new(
        DeskStore::open(&db).unwrap(),
        Methods::default(),
        webhook_settings(&url),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let s = Served::start(desk).await;
    until("the delivery after the restart", || {
        DeskStore::open(&db).unwrap().deliveries().unwrap()[0].state == "delivered"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rx.answered.load(Ordering::SeqCst) - before, 1, "once");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_group_growing_fast_raises_one_alert() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("desk.sqlite");
    let desk = Desk::new(
        DeskStore::open(&db).unwrap(),
        Methods::default(),
        settings(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let now = Utc::now();
    desk.hold_clock(Some(now));
    // Twelve posts from two people: no alert; then ten more people: "12 people asked…".
    let mut n = 0;
    let mut wave = |authors: &[String]| {
        let posts: Vec<Scored> = authors
            .iter()
            .map(|a| {
                n += 1;
                flagged(
                    &format!("g{n}"),
                    a,
                    "why is the livestream down?",
                    now - chrono::Duration::seconds(60 - n),
                )
            })
            .collect();
        desk.add(&posts).unwrap();
        let why: Vec<Explained> = posts
            .iter()
            .map(|p| Explained {
                platform: Platform::Bluesky,
                id: p.post.id.clone(),
                why: vec![],
                embedding: vec![0.6, 0.8, 0.0],
            })
            .collect();
        desk.explained(&why).unwrap();
    };
    let two: Vec<String> = (0..12).map(|i| format!("same{}", i % 2)).collect();
    wave(&two);
    let store = || DeskStore::open(&db).unwrap();
    assert!(
        store()
            .alerts_since(now - chrono::Duration::hours(1))
            .unwrap()
            .is_empty()
    );
    let many: Vec<String> = (0..10).map(|i| format!("person{i}")).collect();
    wave(&many);
    let alerts = store()
        .alerts_since(now - chrono::Duration::hours(1))
        .unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].kind, "group");
    assert_eq!(
        alerts[0].text,
        "12 people asked about “why is the livestream down?” in 15 minutes"
    );
    // Two more people: not yet twice as many, no second alert.
    wave(&["x1".to_owned(), "x2".to_owned()]);
    assert_eq!(
        store()
            .alerts_since(now - chrono::Duration::hours(1))
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_response_figures_of_a_scripted_team() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("desk.sqlite");
    let mut store = DeskStore::open(&db).unwrap();
    let day = chrono::NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
    let t0 = day.and_hms_opt(9, 0, 0).unwrap().and_utc();
    let min = chrono::Duration::minutes;
    store
        .add(&[
            flagged("a", "u1", "q1", t0),
            flagged("b", "u2", "q2", t0 + min(5)),
            flagged("c", "u3", "q3", t0 + min(10)),
            flagged("d", "u4", "q4", t0 + min(20)),
            flagged("e", "u5", "not a question", t0 + min(25)),
        ])
        .unwrap();
    store
        .decide_at("a", Decision::Done, "ana", t0 + min(10))
        .unwrap();
    store
        .decide_at("b", Decision::NeedsReply, "bo", t0 + min(10))
        .unwrap();
    store
        .decide_at("b", Decision::Done, "bo", t0 + min(35))
        .unwrap();
    store
        .decide_at("c", Decision::Done, "ana", t0 + min(100))
        .unwrap();
    store
        .decide_at("e", Decision::NoReply, "bo", t0 + min(30))
        .unwrap();
    let s = flagship_desk::summary::Summary::of(
        &store,
        day,
        chrono_tz::UTC,
        chrono::Duration::hours(1),
        t0 + min(180),
    )
    .unwrap();
    let f = &s.responses.all;
    // e needed no reply; d is unanswered after three hours (overdue); c was late.
    assert_eq!((f.needing, f.answered, f.overdue, f.late), (4, 3, 1, 1));
    assert_eq!((f.p50_s, f.p90_s), (Some(1800.0), Some(5400.0)));
    assert_eq!((s.seen, s.flagged), (5, 5));
    let md = s.markdown();
    assert!(
        md.contains("| first response p50 / p90 | 30 min / 1 h 30 min |"),
        "{md}"
    );
    assert!(md.contains("| ana | 2 | 10 min | 1 h 30 min | 1 |"), "{md}");
}

#[test]
fn deliveries_to_an_earlier_webhook_are_given_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = DeskStore::open(&dir.path().join("desk.sqlite")).unwrap();
    let at = Utc::now();
    for (id, target) in [
        ("a1", "https://old.example/hook"),
        ("a2", "https://new.example/hook"),
    ] {
        let alert = flagship_desk::Alert {
            id: id.into(),
            kind: "burst".into(),
            at,
            text: "Burst".into(),
            detail: serde_json::json!({}),
        };
        assert!(store.add_alert(&alert, &[target]).unwrap());
        assert!(!store.add_alert(&alert, &[target]).unwrap(), "an id once");
    }
    let due = |s: &DeskStore, t: &str| s.due_deliveries(t, at, 16).unwrap().len();
    assert_eq!(
        (
            due(&store, "https://old.example/hook"),
            due(&store, "https://new.example/hook")
        ),
        (1, 1)
    );
    assert_eq!(
        store
            .abandon_other_targets("https://new.example/hook", at)
            .unwrap(),
        1
    );
    let states: Vec<(String, String)> = store
        .deliveries()
        .unwrap()
        .into_iter()
        .map(|d| (d.alert_id, d.state))
        .collect();
    assert_eq!(
        states,
        vec![
            ("a1".into(), "failed".into()),
            ("a2".into(), "pending".into())
        ]
    );
    assert_eq!(
        store.delivery_log().unwrap()[0].error.as_deref(),
        Some("given up: the webhook changed")
    );
}
