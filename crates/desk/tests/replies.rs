//! Replies over the desk's API with a fake X: a send that hangs past the timeout is stored
//! and answered as "outcome unknown"; sending that post again first checks the account's
//! recent posts, finds the reply the hung request made and records it as sent — X never gets
//! the same reply twice. A 429 comes back with X's own error and its wait; a platform
//! without an account is not sent to.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use chrono::Utc;
use flagship_core::live::Scored;
use flagship_core::{Platform, Post};
use flagship_desk::auth::Methods;
use flagship_desk::server::{Desk, Settings};
use flagship_desk::testing::{form, http};
use flagship_desk::{Decision, DeskStore};

const TOKEN: &str = "desk-token-for-the-reply-test";

/// The fake X: posts made (id, text, replied-to id), how many POSTs came, and what the next
/// POST does: hang past the client's timeout, answer 429, or create.
#[derive(Default)]
struct FakeX {
    made: Mutex<Vec<(String, String, String)>>,
    posts: Mutex<usize>,
    next: Mutex<Vec<&'static str>>,
}

async fn tweet(
    State(x): State<Arc<FakeX>>,
    axum::Json(body): axum::Json<serde_json::Value>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    *x.posts.lock().unwrap() += 1;
    let mode = x.next.lock().unwrap().pop().unwrap_or("create");
    if mode == "429" {
        let reset = (Utc::now().timestamp() + 60).to_string();
        return (
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            [("x-rate-limit-reset", reset)],
            axum::Json(serde_json::json!({"title": "Too Many Requests", "detail": "Too Many Requests", "status": 429})),
        )
            .into_response();
    }
    let id = format!("18000000000000000{:02}", x.made.lock().unwrap().len());
    x.made.lock().unwrap().push((
        id.clone(),
        body["text"].as_str().unwrap_or_default().to_owned(),
        body["reply"]["in_reply_to_tweet_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    ));
    if mode == "hang" {
        // Created, but the answer comes after the client gave up.
        tokio::time::sleep(Duration::from_secs(4)).await;
    }
    (
        axum::http::StatusCode::CREATED,
        axum::Json(serde_json::json!({"data": {"id": id, "text": body["text"]}})),
    )
        .into_response()
}

async fn recent(
    State(x): State<Arc<FakeX>>,
    Path(user): Path<String>,
) -> axum::Json<serde_json::Value> {
    assert_eq!(user, "42");
    let data: Vec<serde_json::Value> = x
        .made
        .lock()
        .unwrap()
        .iter()
        .map(|(id, text, to)| {
            serde_json::json!({"id": id, "text": text,
                "referenced_tweets": [{"type": "replied_to", "id": to}]})
        })
        .collect();
    axum::Json(serde_json::json!({"data": data}))
}

fn flagged(id: &str, platform: Platform) -> Scored {
    Scored {
        post: Post {
            platform,
            id: id.into(),
            url: Some(format!("https://x.com/i/web/status/{id}")),
            created_at: Some(Utc::now()),
            text: "is the webb launch delayed?".into(),
            author_username: Some("someone".into()),
            ..Post::default()
        },
        text_model: "is the webb launch delayed?".into(),
        matched: vec![],
        client: None,
        probability: 0.9,
        need_support: true,
        threshold: 0.5,
        model_id: "fixture".into(),
        scored_at: Utc::now(),
        latency_ms: 0.0,
        hurried: false,
        why: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_outcome_on_x_is_checked_before_any_retry() {
    let x = Arc::new(FakeX::default());
    let app = axum::Router::new()
        .route("/2/tweets", post(tweet))
        .route("/2/users/{id}/tweets", get(recent))
        .with_state(x.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let x_addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("desk.sqlite");
    let mut store = DeskStore::open(&db).unwrap();
    store
        .add(&[
            flagged("1700000000000000001", Platform::X),
            flagged("1700000000000000002", Platform::X),
            flagged("at://did:plc:a/app.bsky.feed.post/k", Platform::Bluesky),
        ])
        .unwrap();
    let config = flagship_core::Config::default();
    let desk = Desk::new(
        store,
        Methods::new(HashMap::new(), Some(TOKEN.into())),
        Settings::from_config(&config),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    desk.set_replier(Arc::new(
        flagship_reply::Replier::new(flagship_reply::Settings {
            x: Some(flagship_reply::XAccount {
                base_url: format!("http://{x_addr}"),
                user_token: "user-context-token".into(),
                user_id: "42".into(),
            }),
            timeout: Duration::from_secs(1),
            ..Default::default()
        })
        .unwrap(),
    ));
    let (listener, addr) = flagship_desk::server::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    tokio::spawn(flagship_desk::server::serve(
        desk.clone(),
        listener,
        std::future::pending(),
    ));
    let auth = format!("Bearer {TOKEN}");
    let send = |id: &'static str| {
        let auth = auth.clone();
        async move {
            let (status, _, body) = http(
                addr,
                "POST",
                "/api/reply/send",
                &[("Authorization", &auth)],
                &form(&[
                    ("id", id),
                    ("text", "Hi {author}, no delay: launch is on the 25th."),
                ]),
            )
            .await;
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            (status, v)
        }
    };

    // The POST hangs past the timeout: outcome unknown, stored, shown.
    x.next.lock().unwrap().push("hang");
    let (status, v) = send("1700000000000000001").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["posts"][0]["state"], "unknown", "{v}");
    assert!(
        v["posts"][0]["error"]
            .as_str()
            .unwrap()
            .contains("outcome unknown"),
        "{v}"
    );
    assert_eq!(*x.posts.lock().unwrap(), 1);
    assert_eq!(
        DeskStore::open(&db)
            .unwrap()
            .current("1700000000000000001")
            .unwrap(),
        None,
        "not done while unknown"
    );

    // Sending again checks first: the hung request did post, so nothing is sent twice.
    let (status, v) = send("1700000000000000001").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["posts"][0]["state"], "sent", "{v}");
    assert_eq!(*x.posts.lock().unwrap(), 1, "X got the reply once");
    let made = x.made.lock().unwrap().clone();
    assert_eq!(made.len(), 1);
    assert_eq!(made[0].1, "Hi @someone, no delay: launch is on the 25th.");
    assert_eq!(made[0].2, "1700000000000000001");
    let store = DeskStore::open(&db).unwrap();
    assert_eq!(
        store.current("1700000000000000001").unwrap(),
        Some(Decision::Done)
    );
    let rows = store.replies_of("1700000000000000001").unwrap();
    assert_eq!(rows.len(), 1, "one attempt, now known to have gone out");
    assert_eq!(rows[0].state, "sent");

    // No Bluesky account here: nothing is sent, the page is told to copy and open.
    let (_, v) = send("at://did:plc:a/app.bsky.feed.post/k").await;
    assert_eq!(v["posts"][0]["state"], "not_sent", "{v}");

    // A question group answered at once: one reply per waiting post, each to its own post
    // and filled for its own author.
    let mut store = DeskStore::open(&db).unwrap();
    let mut a = flagged("1700000000000000003", Platform::X);
    a.post.author_username = Some("ana".into());
    let mut b = flagged("1700000000000000004", Platform::X);
    b.post.author_username = Some("bo".into());
    store.add(&[a, b]).unwrap();
    let same = |id: &str| flagship_core::live::Explained {
        platform: Platform::X,
        id: id.into(),
        why: vec![],
        embedding: vec![0.6, 0.8],
    };
    let grouped = store
        .explain(&[same("1700000000000000003"), same("1700000000000000004")])
        .unwrap()
        .grouped;
    let group = grouped[0].1.to_string();
    assert_eq!(grouped[1].1.to_string(), group);
    let before = x.made.lock().unwrap().len();
    let (status, _, body) = http(
        addr,
        "POST",
        "/api/reply/send",
        &[("Authorization", &auth)],
        &form(&[("group", &group), ("text", "Hi {author}, no delay.")]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let made = x.made.lock().unwrap()[before..].to_vec();
    println!("the fake X received, for a group answered at once: {made:?}");
    let sent: Vec<(&str, &str)> = made
        .iter()
        .map(|(_, text, to)| (text.as_str(), to.as_str()))
        .collect();
    assert_eq!(
        sent,
        [
            ("Hi @ana, no delay.", "1700000000000000003"),
            ("Hi @bo, no delay.", "1700000000000000004")
        ]
    );
    for id in ["1700000000000000003", "1700000000000000004"] {
        assert_eq!(store.current(id).unwrap(), Some(Decision::Done));
    }

    // A 429: X's own error and its wait, stored as failed.
    x.next.lock().unwrap().push("429");
    let (_, v) = send("1700000000000000002").await;
    assert_eq!(v["posts"][0]["state"], "failed", "{v}");
    let error = v["posts"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("429") && error.contains("Too Many Requests"),
        "{error}"
    );
    assert!(error.contains("try again in"), "{error}");
    // Until X's reset, the desk sends nothing to X.
    let posts = *x.posts.lock().unwrap();
    let (_, v) = send("1700000000000000002").await;
    assert_eq!(v["posts"][0]["state"], "failed", "{v}");
    assert!(
        v["posts"][0]["error"]
            .as_str()
            .unwrap()
            .contains("rate limit: not sent"),
        "{v}"
    );
    assert_eq!(
        *x.posts.lock().unwrap(),
        posts,
        "nothing sent during the wait"
    );
}
