//! Mastodon replies against a local fake home instance that resolves remote statuses and
//! honours `Idempotency-Key` as Mastodon does (the same key answers with the same status).

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Log, Seen, json, json_with, serve};
use flagship_reply::{MastodonAccount, Outcome, Platform, Replier, Reply, Settings, Target};
use serde_json::{Value, json};

const TOKEN: &str = "mission-token";
const REMOTE_URL: &str = "https://other.example/@ana/109876";

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Normal,
    RateLimited,
    Unavailable,
    /// Holds the search (nothing sent yet) or the post past the client's timeout.
    HangSearch,
    HangPost,
}

struct Instance {
    base: String,
    statuses: Vec<Value>,
    keys: HashMap<String, usize>,
    mode: Mode,
}

async fn fake() -> (String, Log, Arc<Mutex<Instance>>) {
    let instance = Arc::new(Mutex::new(Instance {
        base: String::new(),
        statuses: Vec::new(),
        keys: HashMap::new(),
        mode: Mode::Normal,
    }));
    let state = instance.clone();
    let (base, log) = serve(move |r: Seen| {
        let state = state.clone();
        async move {
            let mode = state.lock().unwrap().mode;
            let hang = match r.path.as_str() {
                "/api/v2/search" => mode == Mode::HangSearch,
                _ => mode == Mode::HangPost,
            };
            let response = answer(&mut state.lock().unwrap(), &r);
            if hang {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            response
        }
    })
    .await;
    instance.lock().unwrap().base = base.clone();
    (base, log, instance)
}

fn answer(i: &mut Instance, r: &Seen) -> axum::response::Response {
    if r.header("authorization") != Some(format!("Bearer {TOKEN}").as_str()) {
        return json(401, json!({"error": "The access token is invalid"}));
    }
    match (r.method.as_str(), r.path.as_str()) {
        ("GET", "/api/v2/search") => {
            let resolvable = r.param("q").as_deref() == Some(REMOTE_URL)
                && r.param("resolve").as_deref() == Some("true");
            let statuses = match resolvable {
                true => {
                    json!([{"id": "110", "uri": "https://other.example/users/ana/statuses/109876",
                                "url": REMOTE_URL, "content": "<p>When is the launch?</p>",
                                "in_reply_to_id": null, "account": {"id": "77", "acct": "ana@other.example"}}])
                }
                false => json!([]),
            };
            json(
                200,
                json!({"accounts": [], "statuses": statuses, "hashtags": []}),
            )
        }
        ("POST", "/api/v1/statuses") => {
            match i.mode {
                Mode::RateLimited => {
                    let reset = (chrono::Utc::now() + chrono::Duration::seconds(120))
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                    return json_with(
                        429,
                        &[
                            ("x-ratelimit-limit", "300".into()),
                            ("x-ratelimit-remaining", "0".into()),
                            ("x-ratelimit-reset", reset),
                        ],
                        json!({"error": "Too many requests"}),
                    );
                }
                Mode::Unavailable => return json(503, json!({"error": "Service Unavailable"})),
                Mode::Normal | Mode::HangSearch | Mode::HangPost => {}
            }
            let key = r.header("idempotency-key").map(str::to_owned);
            if let Some(n) = key.as_ref().and_then(|k| i.keys.get(k)) {
                return json(200, i.statuses[*n].clone());
            }
            let b = r.json();
            let id = (200 + i.statuses.len()).to_string();
            let status = json!({
                "id": id, "uri": format!("{}/users/mission/statuses/{id}", i.base),
                "url": format!("{}/@mission/{id}", i.base),
                "content": format!("<p>{}</p>", b["status"].as_str().unwrap_or_default().replace('&', "&amp;")),
                "in_reply_to_id": b["in_reply_to_id"], "visibility": "public",
                "account": {"id": "1", "acct": "mission"},
            });
            i.statuses.push(status.clone());
            if let Some(k) = key {
                i.keys.insert(k, i.statuses.len() - 1);
            }
            json(200, status)
        }
        ("GET", "/api/v1/accounts/verify_credentials") => {
            json(200, json!({"id": "1", "acct": "mission"}))
        }
        ("GET", "/api/v1/accounts/1/statuses") => json(
            200,
            Value::Array(i.statuses.iter().rev().cloned().collect()),
        ),
        _ => json(404, json!({"error": "Record not found"})),
    }
}

fn replier(base: &str, token: &str) -> Replier {
    Replier::new(Settings {
        mastodon: Some(MastodonAccount {
            instance: base.into(),
            token: token.into(),
        }),
        timeout: Duration::from_secs(5),
        ..Default::default()
    })
    .unwrap()
}

fn target() -> Target {
    Target {
        platform: Platform::Mastodon,
        id: "https://other.example/users/ana/statuses/109876".into(),
        url: Some(REMOTE_URL.into()),
        author: Some("ana@other.example".into()),
        cid: None,
        root: None,
    }
}

fn reply(key: &str) -> Reply {
    Reply {
        text: "@ana@other.example Launch is at 12:20 UTC & streamed live.".into(),
        key: key.into(),
    }
}

#[tokio::test]
async fn resolves_then_posts_once_per_key() {
    let (base, log, instance) = fake().await;
    let r = replier(&base, TOKEN);
    let out = r.send(&target(), &reply("desk-reply-1")).await;
    assert_eq!(
        out,
        Outcome::Sent {
            id: "200".into(),
            url: format!("{base}/@mission/200")
        }
    );
    assert_eq!(log.lines(), ["GET /api/v2/search", "POST /api/v1/statuses"]);
    let seen = log.all();
    println!(
        "the fake Mastodon received: search q={:?} resolve={:?}; statuses {} (Idempotency-Key {:?})",
        seen[0].param("q"),
        seen[0].param("resolve"),
        seen[1].json(),
        seen[1].header("idempotency-key")
    );
    assert_eq!(seen[0].param("q").as_deref(), Some(REMOTE_URL));
    assert_eq!(seen[0].param("resolve").as_deref(), Some("true"));
    assert_eq!(seen[0].param("type").as_deref(), Some("statuses"));
    assert_eq!(seen[0].param("limit").as_deref(), Some("1"));
    assert_eq!(seen[1].header("idempotency-key"), Some("desk-reply-1"));
    assert_eq!(
        seen[1].header("authorization"),
        Some("Bearer mission-token")
    );
    assert_eq!(
        seen[1].json(),
        json!({"status": reply("k").text, "in_reply_to_id": "110"})
    );

    // A retry with the same key: the instance answers with the same status, posts nothing.
    let again = r.send(&target(), &reply("desk-reply-1")).await;
    assert_eq!(again, out);
    assert_eq!(instance.lock().unwrap().statuses.len(), 1);
    assert_eq!(log.all()[3].header("idempotency-key"), Some("desk-reply-1"));

    // check finds it among the account's statuses (content is HTML, the mention shortened).
    instance.lock().unwrap().statuses[0]["content"] = json!(
        "<p><span class=\"h-card\"><a href=\"https://other.example/@ana\" class=\"u-url mention\">@<span>ana</span></a></span> Launch is at 12:20 UTC &amp; streamed live.</p>"
    );
    assert_eq!(
        r.check(&target(), &reply("desk-reply-1")).await,
        Outcome::AlreadySent {
            id: Some("200".into()),
            url: Some(format!("{base}/@mission/200"))
        }
    );
    let other = Reply {
        text: "Something else".into(),
        key: "desk-reply-2".into(),
    };
    match r.check(&target(), &other).await {
        Outcome::Failed {
            status: None,
            message,
            ..
        } => assert!(message.contains("safe to send again"), "{message}"),
        o => panic!("{o:?}"),
    }
}

#[tokio::test]
async fn failures_carry_mastodons_error_and_the_wait() {
    let (base, log, instance) = fake().await;
    // 401: Mastodon's own `error`.
    let out = replier(&base, "wrong")
        .send(&target(), &reply("desk-reply-1"))
        .await;
    match out {
        Outcome::Failed {
            status: Some(401),
            message,
            retry_after: None,
        } => {
            assert!(
                message.starts_with("The access token is invalid"),
                "{message}"
            )
        }
        o => panic!("{o:?}"),
    }
    let r = replier(&base, TOKEN);
    // 429: retry_after from x-ratelimit-reset (an RFC 3339 time).
    instance.lock().unwrap().mode = Mode::RateLimited;
    match r.send(&target(), &reply("desk-reply-1")).await {
        Outcome::Failed {
            status: Some(429),
            message,
            retry_after: Some(wait),
        } => {
            assert_eq!(message, "Too many requests");
            assert!(
                (Duration::from_secs(110)..=Duration::from_secs(120)).contains(&wait),
                "{wait:?}"
            );
        }
        o => panic!("{o:?}"),
    }
    // 503: failed, and said to be safe to retry.
    instance.lock().unwrap().mode = Mode::Unavailable;
    match r.send(&target(), &reply("desk-reply-1")).await {
        Outcome::Failed {
            status: Some(503),
            message,
            ..
        } => {
            assert!(
                message.starts_with("Service Unavailable") && message.contains("safe to retry"),
                "{message}"
            )
        }
        o => panic!("{o:?}"),
    }
    // A post the home instance cannot resolve: nothing is posted.
    log.clear();
    let lost = Target {
        url: Some("https://gone.example/@x/1".into()),
        ..target()
    };
    match r.send(&lost, &reply("desk-reply-2")).await {
        Outcome::Failed {
            status: None,
            message,
            ..
        } => {
            assert_eq!(
                message,
                "the home instance could not resolve https://gone.example/@x/1"
            )
        }
        o => panic!("{o:?}"),
    }
    assert_eq!(log.lines(), ["GET /api/v2/search"]);
    assert!(instance.lock().unwrap().statuses.is_empty());
}

#[tokio::test]
async fn a_hung_search_fails_and_a_hung_post_is_unknown() {
    let (base, _, instance) = fake().await;
    let r = Replier::new(Settings {
        mastodon: Some(MastodonAccount {
            instance: base.clone(),
            token: TOKEN.into(),
        }),
        timeout: Duration::from_millis(300),
        ..Default::default()
    })
    .unwrap();
    instance.lock().unwrap().mode = Mode::HangSearch;
    match r.send(&target(), &reply("desk-reply-1")).await {
        Outcome::Failed {
            status: None,
            message,
            ..
        } => assert!(message.starts_with("resolving the post"), "{message}"),
        o => panic!("{o:?}"),
    }
    instance.lock().unwrap().mode = Mode::HangPost;
    assert!(matches!(
        r.send(&target(), &reply("desk-reply-1")).await,
        Outcome::Unknown { .. }
    ));
    // The post went through; the retry (same key) answers with it and posts nothing new.
    instance.lock().unwrap().mode = Mode::Normal;
    let again = r.send(&target(), &reply("desk-reply-1")).await;
    assert_eq!(
        again,
        Outcome::Sent {
            id: "200".into(),
            url: format!("{base}/@mission/200")
        }
    );
    assert_eq!(instance.lock().unwrap().statuses.len(), 1);
}
