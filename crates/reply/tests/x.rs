//! X replies against a local fake of API v2 (`POST /2/tweets`, `GET /2/users/:id/tweets`).

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Log, Seen, json, json_with, serve};
use flagship_reply::{Outcome, Platform, Replier, Reply, Settings, Target, XAccount};
use serde_json::{Value, json};

const TOKEN: &str = "user-token-secret";
const TARGET: &str = "1890000000000000001";

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Normal,
    RateLimited,
    Unavailable,
    Duplicate,
    /// Holds the request past the client's timeout, having made the post (or not).
    Hang {
        creates: bool,
    },
}

struct Api {
    /// (id, text as X shows it, the post it replies to)
    posts: Vec<(String, String, String)>,
    mode: Mode,
}

async fn fake(mode: Mode) -> (String, Log, Arc<Mutex<Api>>) {
    let api = Arc::new(Mutex::new(Api {
        posts: Vec::new(),
        mode,
    }));
    let state = api.clone();
    let (base, log) = serve(move |r: Seen| {
        let state = state.clone();
        async move {
            let (response, hang) = answer(&mut state.lock().unwrap(), &r);
            if hang {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            response
        }
    })
    .await;
    (base, log, api)
}

fn problem(status: u16, title: &str, detail: &str) -> axum::response::Response {
    json(
        status,
        json!({"title": title, "detail": detail, "type": "about:blank", "status": status}),
    )
}

/// The answer, and whether to hold it.
fn answer(api: &mut Api, r: &Seen) -> (axum::response::Response, bool) {
    if r.header("authorization") != Some(format!("Bearer {TOKEN}").as_str()) {
        return (problem(401, "Unauthorized", "Unauthorized"), false);
    }
    match (r.method.as_str(), r.path.as_str()) {
        ("POST", "/2/tweets") => {
            let b = r.json();
            let create = |api: &mut Api| {
                let id = format!("19000000000000000{:02}", api.posts.len() + 1);
                // X shows a reply with the author's @mention first and `&` escaped.
                let shown = format!("@ana {}", b["text"].as_str().unwrap().replace('&', "&amp;"));
                let to = b["reply"]["in_reply_to_tweet_id"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                api.posts.push((id.clone(), shown.clone(), to));
                json(
                    201,
                    json!({"data": {"id": id, "text": shown, "edit_history_tweet_ids": [id]}}),
                )
            };
            match api.mode {
                Mode::Normal => (create(api), false),
                Mode::Hang { creates } => match creates {
                    true => (create(api), true),
                    false => (
                        problem(503, "Service Unavailable", "Service Unavailable"),
                        true,
                    ),
                },
                Mode::RateLimited => {
                    let reset = (chrono::Utc::now().timestamp() + 900).to_string();
                    let headers = [
                        ("x-rate-limit-limit", "200".to_owned()),
                        ("x-rate-limit-remaining", "0".to_owned()),
                        ("x-rate-limit-reset", reset),
                    ];
                    (
                        json_with(
                            429,
                            &headers,
                            json!({"title": "Too Many Requests", "detail": "Too Many Requests", "type": "about:blank", "status": 429}),
                        ),
                        false,
                    )
                }
                Mode::Unavailable => (
                    problem(503, "Service Unavailable", "Service Unavailable"),
                    false,
                ),
                Mode::Duplicate => (
                    problem(
                        403,
                        "Forbidden",
                        "You are not allowed to create a Tweet with duplicate content.",
                    ),
                    false,
                ),
            }
        }
        ("GET", "/2/users/42/tweets") => {
            let data: Vec<Value> = api
                .posts
                .iter()
                .rev()
                .map(|(id, text, to)| {
                    json!({"id": id, "text": text, "edit_history_tweet_ids": [id], "conversation_id": to,
                           "referenced_tweets": [{"type": "replied_to", "id": to}]})
                })
                .collect();
            let count = data.len();
            (
                json(200, json!({"data": data, "meta": {"result_count": count}})),
                false,
            )
        }
        _ => (problem(404, "Not Found Error", "Not found"), false),
    }
}

fn replier(base: &str, timeout: Duration) -> Replier {
    Replier::new(Settings {
        x: Some(XAccount {
            base_url: base.into(),
            user_token: TOKEN.into(),
            user_id: "42".into(),
        }),
        timeout,
        ..Default::default()
    })
    .unwrap()
}

fn target() -> Target {
    Target {
        platform: Platform::X,
        id: TARGET.into(),
        url: Some(format!("https://x.com/ana/status/{TARGET}")),
        author: Some("ana".into()),
        cid: None,
        root: None,
    }
}

fn reply() -> Reply {
    Reply {
        text: "@ana Launch is at 12:20 UTC & streamed live: https://example.org/live".into(),
        key: "desk-reply-1".into(),
    }
}

#[tokio::test]
async fn a_reply_is_sent_with_its_id() {
    let (base, log, _) = fake(Mode::Normal).await;
    let out = replier(&base, Duration::from_secs(5))
        .send(&target(), &reply())
        .await;
    assert_eq!(
        out,
        Outcome::Sent {
            id: "1900000000000000001".into(),
            url: "https://x.com/i/web/status/1900000000000000001".into()
        }
    );
    assert_eq!(log.lines(), ["POST /2/tweets"]);
    let seen = &log.all()[0];
    println!("the fake X received: POST /2/tweets {}", seen.json());
    assert_eq!(
        seen.header("authorization"),
        Some("Bearer user-token-secret")
    );
    assert_eq!(
        seen.json(),
        json!({"text": reply().text, "reply": {"in_reply_to_tweet_id": TARGET}})
    );
}

#[tokio::test]
async fn rate_limits_and_outages_fail_with_xs_words() {
    let (base, _, api) = fake(Mode::RateLimited).await;
    let r = replier(&base, Duration::from_secs(5));
    match r.send(&target(), &reply()).await {
        Outcome::Failed {
            status: Some(429),
            message,
            retry_after: Some(wait),
        } => {
            assert_eq!(message, "Too Many Requests");
            assert!(
                (Duration::from_secs(890)..=Duration::from_secs(900)).contains(&wait),
                "{wait:?}"
            );
        }
        o => panic!("{o:?}"),
    }
    api.lock().unwrap().mode = Mode::Unavailable;
    match r.send(&target(), &reply()).await {
        Outcome::Failed {
            status: Some(503),
            message,
            retry_after: None,
        } => {
            assert!(message.starts_with("Service Unavailable"), "{message}")
        }
        o => panic!("{o:?}"),
    }
    assert!(api.lock().unwrap().posts.is_empty());
}

#[tokio::test]
async fn a_hung_request_is_unknown_and_check_finds_the_reply_it_made() {
    let (base, log, api) = fake(Mode::Hang { creates: true }).await;
    let r = replier(&base, Duration::from_millis(300));
    let started = Instant::now();
    let out = r.send(&target(), &reply()).await;
    assert!(started.elapsed() < Duration::from_secs(3));
    match out {
        Outcome::Unknown { message } => {
            assert!(message.contains("may have gone through"), "{message}")
        }
        o => panic!("{o:?}"),
    }
    assert_eq!(
        api.lock().unwrap().posts.len(),
        1,
        "the fake made it all the same"
    );
    log.clear();
    assert_eq!(
        r.check(&target(), &reply()).await,
        Outcome::AlreadySent {
            id: Some("1900000000000000001".into()),
            url: Some("https://x.com/i/web/status/1900000000000000001".into())
        }
    );
    assert_eq!(log.lines(), ["GET /2/users/42/tweets"]);
    let fields = log.all()[0].param("tweet.fields").unwrap();
    assert!(
        fields.contains("referenced_tweets") && fields.contains("conversation_id"),
        "{fields}"
    );
    // The same text to another post, or other text to this one, is not it.
    let other_post = Target {
        id: "1890000000000000002".into(),
        ..target()
    };
    assert!(!r.check(&other_post, &reply()).await.posted());
    let other_text = Reply {
        text: "Something else".into(),
        ..reply()
    };
    assert!(!r.check(&target(), &other_text).await.posted());
}

#[tokio::test]
async fn a_hung_request_that_made_nothing_is_safe_to_send_again() {
    let (base, _, _) = fake(Mode::Hang { creates: false }).await;
    let r = replier(&base, Duration::from_millis(300));
    assert!(matches!(
        r.send(&target(), &reply()).await,
        Outcome::Unknown { .. }
    ));
    assert_eq!(
        r.check(&target(), &reply()).await,
        Outcome::Failed {
            status: None,
            message: "not found among the account's recent posts: safe to send again".into(),
            retry_after: None
        }
    );
}

#[tokio::test]
async fn duplicate_content_is_checked_and_a_check_that_cannot_ask_is_unknown() {
    let (base, _, api) = fake(Mode::Normal).await;
    let r = replier(&base, Duration::from_secs(5));
    let first = r.send(&target(), &reply()).await;
    api.lock().unwrap().mode = Mode::Duplicate;
    let Outcome::Sent { id, url } = first else {
        panic!("{first:?}")
    };
    assert_eq!(
        r.send(&target(), &reply()).await,
        Outcome::AlreadySent {
            id: Some(id),
            url: Some(url)
        }
    );
    // The recent posts cannot be listed (a bad token): the check cannot tell.
    let wrong = Replier::new(Settings {
        x: Some(XAccount {
            base_url: base.clone(),
            user_token: "wrong".into(),
            user_id: "42".into(),
        }),
        ..Default::default()
    })
    .unwrap();
    match wrong.check(&target(), &reply()).await {
        Outcome::Unknown { message } => assert!(
            message.starts_with("could not check (HTTP 401): Unauthorized"),
            "{message}"
        ),
        o => panic!("{o:?}"),
    }
}
