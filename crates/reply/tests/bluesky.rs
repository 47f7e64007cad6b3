//! Bluesky replies against a local fake PDS + AppView speaking the real XRPC shapes.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Log, Seen, json, json_with, serve};
use flagship_reply::bluesky::{is_tid, rkey};
use flagship_reply::{
    BlueskyAccount, Outcome, Platform, Replier, Reply, Settings, StrongRef, Target,
};
use serde_json::{Value, json};

const DID: &str = "did:plc:mission";
const PASSWORD: &str = "app-pass-abcd-efgh";

/// How the fake answers a createRecord whose rkey exists.
#[derive(Clone, Copy, PartialEq)]
enum Duplicate {
    /// 400 InvalidRequest "Record already exists" (the error the lexicon now names).
    AlreadyExists,
    /// 500 InternalServerError (what the reference PDS has long answered).
    Internal,
}

struct Pds {
    sessions: usize,
    records: HashMap<String, Value>,
    duplicate: Duplicate,
    /// The first session's JWT is answered with 400 ExpiredToken.
    expire_first: bool,
    rate_limited: bool,
    /// createRecord stores the record, then holds the answer past the client's timeout.
    hang: bool,
    profiles: usize,
}

async fn fake(duplicate: Duplicate, expire_first: bool) -> (String, Log, Arc<Mutex<Pds>>) {
    let pds = Arc::new(Mutex::new(Pds {
        sessions: 0,
        records: HashMap::new(),
        duplicate,
        expire_first,
        rate_limited: false,
        hang: false,
        profiles: 0,
    }));
    let state = pds.clone();
    let (base, log) = serve(move |r: Seen| {
        let state = state.clone();
        async move {
            let response = answer(&mut state.lock().unwrap(), &r);
            if r.path.ends_with("createRecord") && state.lock().unwrap().hang {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            response
        }
    })
    .await;
    (base, log, pds)
}

fn xrpc_error(status: u16, error: &str, message: &str) -> axum::response::Response {
    json(status, json!({"error": error, "message": message}))
}

fn answer(pds: &mut Pds, r: &Seen) -> axum::response::Response {
    let method = r.path.trim_start_matches("/xrpc/");
    match (r.method.as_str(), method) {
        ("POST", "com.atproto.server.createSession") => {
            let b = r.json();
            if b["identifier"] != "mission.bsky.social" || b["password"] != PASSWORD {
                return xrpc_error(
                    401,
                    "AuthenticationRequired",
                    "Invalid identifier or password",
                );
            }
            pds.sessions += 1;
            json(
                200,
                json!({"accessJwt": format!("jwt-{}", pds.sessions), "refreshJwt": "refresh",
                       "handle": "mission.bsky.social", "did": DID, "active": true}),
            )
        }
        ("GET", "com.atproto.identity.resolveHandle") => match r.param("handle").as_deref() {
            Some("ana.bsky.social") => json(200, json!({"did": "did:plc:ana"})),
            _ => xrpc_error(400, "InvalidRequest", "Unable to resolve handle"),
        },
        ("POST", "com.atproto.repo.createRecord") => {
            let current = format!("Bearer jwt-{}", pds.sessions);
            if pds.expire_first && r.header("authorization") == Some("Bearer jwt-1") {
                return xrpc_error(400, "ExpiredToken", "Token has expired");
            }
            if r.header("authorization") != Some(current.as_str()) {
                return xrpc_error(401, "AuthenticationRequired", "Invalid token");
            }
            if pds.rate_limited {
                let reset = (chrono::Utc::now().timestamp() + 300).to_string();
                return json_with(
                    429,
                    &[
                        ("ratelimit-limit", "5000".into()),
                        ("ratelimit-remaining", "0".into()),
                        ("ratelimit-reset", reset),
                    ],
                    json!({"error": "RateLimitExceeded", "message": "Rate Limit Exceeded"}),
                );
            }
            let b = r.json();
            let rkey = b["rkey"].as_str().unwrap().to_owned();
            let uri = format!("at://{DID}/app.bsky.feed.post/{rkey}");
            if pds.records.contains_key(&rkey) {
                return match pds.duplicate {
                    Duplicate::AlreadyExists => {
                        xrpc_error(400, "InvalidRequest", "Record already exists")
                    }
                    Duplicate::Internal => {
                        xrpc_error(500, "InternalServerError", "Internal Server Error")
                    }
                };
            }
            pds.records.insert(rkey, b["record"].clone());
            json(
                200,
                json!({"uri": uri, "cid": "bafyreicid", "commit": {"cid": "bafyreicommit", "rev": "3l2222222222a"},
                       "validationStatus": "valid"}),
            )
        }
        ("GET", "com.atproto.repo.getRecord") => {
            let rkey = r.param("rkey").unwrap_or_default();
            let uri = format!("at://{DID}/app.bsky.feed.post/{rkey}");
            match pds.records.get(&rkey) {
                Some(v) => json(200, json!({"uri": uri, "cid": "bafyreicid", "value": v})),
                None => xrpc_error(
                    400,
                    "RecordNotFound",
                    &format!("Could not locate record: {uri}"),
                ),
            }
        }
        ("GET", "app.bsky.actor.getProfile") => {
            pds.profiles += 1;
            match r.param("actor").as_deref() {
                Some("did:plc:ana") => json(
                    200,
                    json!({"did": "did:plc:ana", "handle": "ana.bsky.social"}),
                ),
                _ => xrpc_error(400, "InvalidRequest", "Profile not found"),
            }
        }
        _ => xrpc_error(501, "MethodNotImplemented", "Method Not Implemented"),
    }
}

fn replier(base: &str) -> Replier {
    Replier::new(Settings {
        bluesky: Some(BlueskyAccount {
            pds: base.into(),
            appview: base.into(),
            identifier: "mission.bsky.social".into(),
            app_password: PASSWORD.into(),
        }),
        timeout: Duration::from_secs(5),
        ..Default::default()
    })
    .unwrap()
}

fn target(root: Option<StrongRef>) -> Target {
    Target {
        platform: Platform::Bluesky,
        id: "at://did:plc:ana/app.bsky.feed.post/3kabcdefghij2".into(),
        url: Some("https://bsky.app/profile/did:plc:ana/post/3kabcdefghij2".into()),
        author: Some("did:plc:ana".into()),
        cid: Some("bafyreiparent".into()),
        root,
    }
}

fn reply(text: &str, key: &str) -> Reply {
    Reply {
        text: text.into(),
        key: key.into(),
    }
}

fn created(log: &Log) -> Vec<Value> {
    log.all()
        .iter()
        .filter(|s| s.path.ends_with("createRecord"))
        .map(Seen::json)
        .collect()
}

#[tokio::test]
async fn a_reply_is_one_session_and_one_record_and_a_retry_is_already_sent() {
    let (base, log, pds) = fake(Duplicate::AlreadyExists, false).await;
    let r = replier(&base);
    let t = target(None);
    let out = r
        .send(&t, &reply("Thanks for asking!", "desk-reply-1"))
        .await;
    let k = rkey("desk-reply-1");
    assert!(is_tid(&k));
    let uri = format!("at://{DID}/app.bsky.feed.post/{k}");
    let url = format!("https://bsky.app/profile/{DID}/post/{k}");
    assert_eq!(
        out,
        Outcome::Sent {
            id: uri.clone(),
            url: url.clone()
        }
    );
    assert_eq!(
        log.lines(),
        [
            "POST /xrpc/com.atproto.server.createSession",
            "POST /xrpc/com.atproto.repo.createRecord"
        ]
    );
    let seen = log.all();
    assert_eq!(
        seen[0].json(),
        json!({"identifier": "mission.bsky.social", "password": PASSWORD})
    );
    assert_eq!(seen[1].header("authorization"), Some("Bearer jwt-1"));
    let body = seen[1].json();
    println!(
        "the fake PDS received: {:?}; createRecord {body}",
        log.lines()
    );
    assert_eq!(body["repo"], DID);
    assert_eq!(body["collection"], "app.bsky.feed.post");
    assert_eq!(body["rkey"], k.as_str());
    let record = &body["record"];
    assert_eq!(record["$type"], "app.bsky.feed.post");
    assert_eq!(record["text"], "Thanks for asking!");
    let at = record["createdAt"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(at).is_ok() && at.ends_with('Z') && at.len() == 24,
        "{at}"
    );
    let parent = json!({"uri": t.id, "cid": "bafyreiparent"});
    assert_eq!(record["reply"], json!({"root": parent, "parent": parent}));
    assert!(record.get("facets").is_none());

    // The same key again: the same rkey, refused as existing → AlreadySent, one record.
    log.clear();
    let again = r
        .send(&t, &reply("Thanks for asking!", "desk-reply-1"))
        .await;
    assert_eq!(
        again,
        Outcome::AlreadySent {
            id: Some(uri.clone()),
            url: Some(url.clone())
        }
    );
    assert_eq!(
        log.lines(),
        ["POST /xrpc/com.atproto.repo.createRecord"],
        "the session is kept"
    );
    assert_eq!(created(&log)[0]["rkey"], k.as_str());
    assert_eq!(pds.lock().unwrap().records.len(), 1);
    assert_eq!(pds.lock().unwrap().sessions, 1);

    // check finds it; another key is not there.
    assert_eq!(
        r.check(&t, &reply("Thanks for asking!", "desk-reply-1"))
            .await,
        again
    );
    match r
        .check(&t, &reply("Thanks for asking!", "desk-reply-2"))
        .await
    {
        Outcome::Failed {
            status: None,
            message,
            ..
        } => assert!(message.contains("safe to send again"), "{message}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_reply_to_a_reply_points_at_the_threads_root() {
    let (base, log, _) = fake(Duplicate::AlreadyExists, false).await;
    let root = StrongRef {
        uri: "at://did:plc:bob/app.bsky.feed.post/3kroot2222222".into(),
        cid: "bafyreiroot".into(),
    };
    let t = target(Some(root.clone()));
    let out = replier(&base)
        .send(&t, &reply("Here you go", "desk-reply-7"))
        .await;
    assert!(matches!(out, Outcome::Sent { .. }), "{out:?}");
    let record = &created(&log)[0]["record"];
    assert_eq!(
        record["reply"]["root"],
        json!({"uri": root.uri, "cid": root.cid})
    );
    assert_eq!(
        record["reply"]["parent"],
        json!({"uri": t.id, "cid": "bafyreiparent"})
    );
}

#[tokio::test]
async fn facets_are_at_utf8_byte_offsets() {
    let (base, log, _) = fake(Duplicate::AlreadyExists, false).await;
    let text =
        "Merci é 🚀 東京 @ana.bsky.social, voir https://example.org/jwst/faq. @ghost.example";
    let out = replier(&base)
        .send(&target(None), &reply(text, "desk-reply-3"))
        .await;
    assert!(matches!(out, Outcome::Sent { .. }), "{out:?}");
    assert_eq!(
        log.lines(),
        [
            "POST /xrpc/com.atproto.server.createSession",
            "GET /xrpc/com.atproto.identity.resolveHandle",
            "GET /xrpc/com.atproto.identity.resolveHandle",
            "POST /xrpc/com.atproto.repo.createRecord",
        ]
    );
    let facets = created(&log)[0]["record"]["facets"].clone();
    let mention = text.find("@ana").unwrap();
    let link = text.find("https://").unwrap();
    assert_eq!(mention, 21, "bytes, not characters: é 2, 🚀 4, 東京 6");
    assert_eq!(
        facets,
        json!([
            {"index": {"byteStart": mention, "byteEnd": mention + 16},
             "features": [{"$type": "app.bsky.richtext.facet#mention", "did": "did:plc:ana"}]},
            {"index": {"byteStart": link, "byteEnd": link + 28},
             "features": [{"$type": "app.bsky.richtext.facet#link", "uri": "https://example.org/jwst/faq"}]},
        ]),
        "@ghost.example does not resolve: no facet"
    );
    let slice = |f: &Value| {
        let (s, e) = (
            f["index"]["byteStart"].as_u64().unwrap() as usize,
            f["index"]["byteEnd"].as_u64().unwrap() as usize,
        );
        &text.as_bytes()[s..e]
    };
    assert_eq!(slice(&facets[0]), b"@ana.bsky.social");
    assert_eq!(slice(&facets[1]), b"https://example.org/jwst/faq");
}

#[tokio::test]
async fn a_duplicate_answered_with_a_500_is_found_by_getrecord() {
    let (base, log, pds) = fake(Duplicate::Internal, false).await;
    let r = replier(&base);
    let first = r.send(&target(None), &reply("Hi", "desk-reply-9")).await;
    log.clear();
    let again = r.send(&target(None), &reply("Hi", "desk-reply-9")).await;
    let Outcome::Sent { id, url } = first else {
        panic!("{first:?}")
    };
    assert_eq!(
        again,
        Outcome::AlreadySent {
            id: Some(id),
            url: Some(url)
        }
    );
    assert_eq!(
        log.lines(),
        [
            "POST /xrpc/com.atproto.repo.createRecord",
            "GET /xrpc/com.atproto.repo.getRecord"
        ]
    );
    assert_eq!(log.all()[1].param("rkey"), Some(rkey("desk-reply-9")));
    assert_eq!(pds.lock().unwrap().records.len(), 1);
}

#[tokio::test]
async fn an_expired_session_is_made_again_once() {
    let (base, log, _) = fake(Duplicate::AlreadyExists, true).await;
    let out = replier(&base)
        .send(&target(None), &reply("Hi", "desk-reply-4"))
        .await;
    assert!(matches!(out, Outcome::Sent { .. }), "{out:?}");
    assert_eq!(
        log.lines(),
        [
            "POST /xrpc/com.atproto.server.createSession",
            "POST /xrpc/com.atproto.repo.createRecord",
            "POST /xrpc/com.atproto.server.createSession",
            "POST /xrpc/com.atproto.repo.createRecord",
        ]
    );
    assert_eq!(log.all()[3].header("authorization"), Some("Bearer jwt-2"));
}

#[tokio::test]
async fn failures_carry_the_pds_message_and_the_wait() {
    let (base, log, pds) = fake(Duplicate::AlreadyExists, false).await;
    let r = replier(&base);
    // No cid: nothing is sent.
    let no_cid = Target {
        cid: None,
        ..target(None)
    };
    match r.send(&no_cid, &reply("Hi", "desk-reply-5")).await {
        Outcome::Failed {
            status: None,
            message,
            ..
        } => assert!(message.contains("no cid"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert!(log.all().is_empty());
    // Rate limited: retry_after from ratelimit-reset.
    pds.lock().unwrap().rate_limited = true;
    match r.send(&target(None), &reply("Hi", "desk-reply-5")).await {
        Outcome::Failed {
            status: Some(429),
            message,
            retry_after: Some(wait),
        } => {
            assert_eq!(message, "Rate Limit Exceeded");
            assert!(
                (Duration::from_secs(290)..=Duration::from_secs(300)).contains(&wait),
                "{wait:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    // A wrong app password: the PDS's own words.
    let wrong = Replier::new(Settings {
        bluesky: Some(BlueskyAccount {
            pds: base.clone(),
            appview: base.clone(),
            identifier: "mission.bsky.social".into(),
            app_password: "nope".into(),
        }),
        ..Default::default()
    })
    .unwrap();
    match wrong
        .send(&target(None), &reply("Hi", "desk-reply-6"))
        .await
    {
        Outcome::Failed {
            status: Some(401),
            message,
            ..
        } => {
            assert!(
                message.starts_with("Invalid identifier or password"),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn author_handles_are_resolved_on_the_appview_once() {
    let (base, _, pds) = fake(Duplicate::AlreadyExists, false).await;
    let r = replier(&base);
    let t = target(None);
    assert_eq!(
        r.author_handle(&t).await.as_deref(),
        Some("ana.bsky.social")
    );
    assert_eq!(
        r.author_handle(&t).await.as_deref(),
        Some("ana.bsky.social")
    );
    assert_eq!(pds.lock().unwrap().profiles, 1, "cached");
    let unknown = Target {
        author: Some("did:plc:nobody".into()),
        ..target(None)
    };
    assert_eq!(r.author_handle(&unknown).await, None);
}

#[tokio::test]
async fn a_hung_create_record_is_unknown_and_check_finds_it() {
    let (base, _, pds) = fake(Duplicate::Internal, false).await;
    let r = Replier::new(Settings {
        bluesky: Some(BlueskyAccount {
            pds: base.clone(),
            appview: base.clone(),
            identifier: "mission.bsky.social".into(),
            app_password: PASSWORD.into(),
        }),
        timeout: Duration::from_millis(300),
        ..Default::default()
    })
    .unwrap();
    pds.lock().unwrap().hang = true;
    let out = r.send(&target(None), &reply("Hi", "desk-reply-8")).await;
    assert!(matches!(out, Outcome::Unknown { .. }), "{out:?}");
    pds.lock().unwrap().hang = false;
    let k = rkey("desk-reply-8");
    assert_eq!(
        r.check(&target(None), &reply("Hi", "desk-reply-8")).await,
        Outcome::AlreadySent {
            id: Some(format!("at://{DID}/app.bsky.feed.post/{k}")),
            url: Some(format!("https://bsky.app/profile/{DID}/post/{k}")),
        }
    );
}
