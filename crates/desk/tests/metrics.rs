//! The desk's `/metrics`: the real recordings scored by a real linear model into the desk
//! (the live loop counting into the desk's telemetry), then scraped over HTTP — refused
//! without a login, answered to the bearer token — and parsed by a Prometheus text parser:
//! the queue's depth, the oldest undecided post's age, the posts per platform and the live
//! loop's figures agree with the database and the run's totals; a decision moves the queue
//! and the decision counts. A desk with no login method (loopback only) answers a scraper
//! with no credentials.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use flagship_core::telemetry::Telemetry;
use flagship_desk::auth::Methods;
use flagship_desk::server::{Desk, LiveSink, Settings};
use flagship_desk::testing::{form, http};
use flagship_desk::{DeskStore, Order};
use flagship_live::testing::{everyday_config, linear_model, open_replays};
use flagship_testkit::prometheus::{parse, value};

const TOKEN: &str = "metrics-scraper-token-0123456789abcdefghij";

/// Serves `desk` on a free loopback port until the returned sender is dropped.
async fn serve(desk: Arc<Desk>) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let (listener, addr) = flagship_desk::server::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(flagship_desk::server::serve(desk, listener, async move {
        let _ = stopped.await;
    }));
    (addr, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_the_queue_decisions_and_the_live_loop() {
    let dir = tempfile::tempdir().unwrap();
    let model = linear_model(&dir.path().join("model"));
    let config = everyday_config();
    let store = DeskStore::open(&dir.path().join("desk.sqlite")).unwrap();
    let desk = Desk::new(
        store,
        Methods::new(HashMap::new(), Some(TOKEN.into())),
        Settings::from_config(&config),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let telemetry = desk
        .live_telemetry
        .get_or_init(|| Arc::new(Telemetry::live()))
        .clone();
    let t = flagship_live::run(
        flagship_live::Run {
            config: &config,
            model: &model,
            model_id: "linear",
            handled_before: HashSet::new(),
            embedder: None,
            options: &flagship_live::Options::default(),
            progress: &|_| {},
            telemetry: Some(telemetry),
        },
        open_replays(),
        &mut LiveSink(desk.clone()),
        std::future::pending(),
    )
    .await
    .unwrap();
    assert!(t.flagged > 0, "{t:?}");
    let (addr, _stop) = serve(desk.clone()).await;

    // No credentials: refused like the API.
    let (status, _, _) = http(addr, "GET", "/metrics", &[], "").await;
    assert_eq!(status, 401);
    let bearer = format!("Bearer {TOKEN}");
    let auth = [("Authorization", bearer.as_str())];
    let (status, h, body) = http(addr, "GET", "/metrics", &auth, "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        h["content-type"][0],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    println!("{body}");
    let s = parse(&body);
    assert_eq!(
        value(&s, "flagship_desk_queue_depth", &[]),
        t.flagged as f64
    );
    let age = value(&s, "flagship_desk_oldest_undecided_age_seconds", &[]);
    assert!(age > 0.0 && age < 600.0, "{age}");
    for d in ["needs_reply", "no_reply", "done", "undo"] {
        assert_eq!(
            value(&s, "flagship_desk_decisions_total", &[("decision", d)]),
            0.0
        );
    }
    let stored = |p: &str| value(&s, "flagship_desk_posts_total", &[("platform", p)]);
    assert_eq!(stored("bluesky") + stored("mastodon"), t.kept as f64);
    assert_eq!(stored("x"), 0.0);
    // The live loop's figures, per platform, as the run counted them.
    let both = |name: &str| {
        value(&s, name, &[("platform", "bluesky")]) + value(&s, name, &[("platform", "mastodon")])
    };
    assert_eq!(both("flagship_posts_seen_total"), t.seen as f64);
    assert_eq!(both("flagship_posts_kept_total"), t.kept as f64);
    assert_eq!(both("flagship_posts_flagged_total"), t.flagged as f64);
    assert_eq!(
        value(&s, "flagship_live_latency_seconds_count", &[]),
        t.seen as f64
    );

    // A decision: the queue is one shorter, the decision counted.
    let first = desk_queue_head(&dir.path().join("desk.sqlite"));
    let (status, _, body) = http(
        addr,
        "POST",
        "/api/decide",
        &auth,
        &form(&[("id", &first), ("decision", "needs_reply")]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, _, body) = http(addr, "GET", "/metrics", &auth, "").await;
    let s = parse(&body);
    assert_eq!(
        value(&s, "flagship_desk_queue_depth", &[]),
        t.flagged as f64 - 1.0
    );
    assert_eq!(
        value(
            &s,
            "flagship_desk_decisions_total",
            &[("decision", "needs_reply")]
        ),
        1.0
    );
}

/// The post at the head of the queue (read from the database, as another reader would).
fn desk_queue_head(db: &std::path::Path) -> String {
    let store = DeskStore::open(db).unwrap();
    store.queue(Order::Newest, 1).unwrap().remove(0).id
}

#[tokio::test]
async fn a_desk_with_no_login_answers_a_local_scraper() {
    let dir = tempfile::tempdir().unwrap();
    let store = DeskStore::open(&dir.path().join("desk.sqlite")).unwrap();
    let desk = Desk::new(
        store,
        Methods::default(),
        Settings::from_config(&everyday_config()),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let (addr, _stop) = serve(desk).await;
    let (status, _, body) = http(addr, "GET", "/metrics", &[], "").await;
    assert_eq!(status, 200, "{body}");
    let s = parse(&body);
    assert_eq!(value(&s, "flagship_desk_queue_depth", &[]), 0.0);
    assert_eq!(
        value(&s, "flagship_desk_oldest_undecided_age_seconds", &[]),
        0.0
    );
    // No live loop here: none of its figures.
    assert!(!body.contains("flagship_posts_seen_total"), "{body}");
}
