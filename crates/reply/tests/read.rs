//! The thread view's read of a parent: Bluesky's AppView (`app.bsky.feed.getPosts`) and a
//! Mastodon instance's public status, from local fakes; an id that is no status id, an
//! unknown post and a plain-http instance off loopback are never read.

use axum::extract::{Path, Query};
use axum::routing::get;
use flagship_core::{Platform, PostRef};
use flagship_reply::{BlueskyAccount, Replier, Settings};

async fn serve(app: axum::Router) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn parents_are_read_from_the_public_apis() {
    let app = axum::Router::new()
        .route(
            "/xrpc/app.bsky.feed.getPosts",
            get(
                |Query(q): Query<std::collections::HashMap<String, String>>| async move {
                    let uri = q["uris"].clone();
                    let posts = if uri.ends_with("/3kparent") {
                        serde_json::json!([{"uri": uri, "author": {"handle": "ana.bsky.social"},
                                            "record": {"text": "is the launch delayed?"}}])
                    } else {
                        serde_json::json!([])
                    };
                    axum::Json(serde_json::json!({ "posts": posts }))
                },
            ),
        )
        .route(
            "/api/v1/statuses/{id}",
            get(|Path(id): Path<String>| async move {
                axum::Json(serde_json::json!({
                    "id": id, "url": "https://m.example/@bo/1",
                    "content": "<p>when is the <b>first image</b>?</p>",
                    "account": {"acct": "bo@m.example"}
                }))
            }),
        );
    let base = serve(app).await;
    let r = Replier::new(Settings {
        bluesky: Some(BlueskyAccount {
            pds: base.clone(),
            appview: base.clone(),
            identifier: "mission.bsky.social".into(),
            app_password: "app-password".into(),
        }),
        ..Default::default()
    })
    .unwrap();
    let p = r
        .fetch_parent(
            Platform::Bluesky,
            &PostRef {
                id: "at://did:plc:a/app.bsky.feed.post/3kparent".into(),
                cid: Some("bafy".into()),
                instance: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(p.text, "is the launch delayed?");
    assert_eq!(p.author.as_deref(), Some("@ana.bsky.social"));
    assert_eq!(
        p.url.as_deref(),
        Some("https://bsky.app/profile/ana.bsky.social/post/3kparent")
    );
    let unknown = PostRef {
        id: "at://did:plc:a/app.bsky.feed.post/3kgone".into(),
        ..Default::default()
    };
    assert!(r.fetch_parent(Platform::Bluesky, &unknown).await.is_none());

    let status = |id: &str, instance: &str| PostRef {
        id: id.into(),
        cid: None,
        instance: Some(instance.into()),
    };
    let m = r
        .fetch_parent(Platform::Mastodon, &status("110", &base))
        .await
        .unwrap();
    assert_eq!(m.text, "when is the first image?");
    assert_eq!(m.author.as_deref(), Some("@bo@m.example"));
    // Not a status id: never a path of the instance's.
    assert!(
        r.fetch_parent(Platform::Mastodon, &status("../accounts", &base))
            .await
            .is_none()
    );
    // Plain http off loopback: never read.
    assert!(
        r.fetch_parent(Platform::Mastodon, &status("110", "http://m.example"))
            .await
            .is_none()
    );
    // X's read API needs the app's token: not fetched here.
    assert!(
        r.fetch_parent(Platform::X, &status("1", &base))
            .await
            .is_none()
    );
}
