//! The thread view's one read: the parent of a reply or a quote, through the platform's
//! public read API, without an account — Bluesky's AppView (`app.bsky.feed.getPosts`),
//! the author's Mastodon instance (`GET /api/v1/statuses/:id`, public statuses). X's read API
//! needs the app's bearer token: an X parent is shown only when the desk has it itself.

use flagship_core::{Platform, PostRef};
use serde::Deserialize;

use crate::Replier;

/// The public AppView, when no Bluesky account names one.
pub const PUBLIC_APPVIEW: &str = "https://public.api.bsky.app";

/// A parent post as its platform shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentPost {
    pub author: Option<String>,
    /// The text as sent (Mastodon's HTML made plain).
    pub text: String,
    pub url: Option<String>,
}

#[derive(Deserialize)]
struct Posts {
    posts: Vec<BskyPost>,
}

#[derive(Deserialize)]
struct BskyPost {
    uri: String,
    author: BskyAuthor,
    record: serde_json::Value,
}

#[derive(Deserialize)]
struct BskyAuthor {
    handle: String,
}

#[derive(Deserialize)]
struct Status {
    content: String,
    #[serde(default)]
    url: Option<String>,
    account: Account,
}

#[derive(Deserialize)]
struct Account {
    acct: String,
}

impl Replier {
    /// The parent `r` of a post on `platform`, read once from its platform (`None`: not
    /// found, not public, or X).
    pub async fn fetch_parent(&self, platform: Platform, r: &PostRef) -> Option<ParentPost> {
        let got = match platform {
            Platform::Bluesky => self.bluesky_parent(r).await,
            Platform::Mastodon => self.mastodon_parent(r).await,
            Platform::X => None,
        };
        if got.is_none() {
            tracing::info!(platform = %platform, parent = r.id, "thread: the parent could not be read");
        }
        got
    }

    async fn bluesky_parent(&self, r: &PostRef) -> Option<ParentPost> {
        let appview = self
            .bluesky
            .as_ref()
            .map(|b| b.appview().to_owned())
            .unwrap_or_else(|| PUBLIC_APPVIEW.to_owned());
        let answer = self
            .http
            .get(format!(
                "{}/xrpc/app.bsky.feed.getPosts",
                appview.trim_end_matches('/')
            ))
            .query(&[("uris", r.id.as_str())])
            .send()
            .await
            .ok()?;
        if !answer.status().is_success() {
            return None;
        }
        let p = answer
            .json::<Posts>()
            .await
            .ok()?
            .posts
            .into_iter()
            .next()?;
        let rkey = p.uri.rsplit('/').next().unwrap_or_default().to_owned();
        Some(ParentPost {
            url: Some(format!(
                "https://bsky.app/profile/{}/post/{rkey}",
                p.author.handle
            )),
            author: Some(format!("@{}", p.author.handle)),
            text: p.record.get("text")?.as_str()?.to_owned(),
        })
    }

    async fn mastodon_parent(&self, r: &PostRef) -> Option<ParentPost> {
        let host = r.instance.as_deref()?;
        let base = if host.starts_with("http://") || host.starts_with("https://") {
            host.trim_end_matches('/').to_owned()
        } else {
            format!("https://{host}")
        };
        // Plain http only to loopback (a local instance), as for every other endpoint.
        crate::base(Platform::Mastodon, &base).ok()?;
        // Only digits: an id is a path segment, never a path.
        if r.id.is_empty() || !r.id.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let answer = self
            .http
            .get(format!("{base}/api/v1/statuses/{}", r.id))
            .send()
            .await
            .ok()?;
        if !answer.status().is_success() {
            return None;
        }
        let s = answer.json::<Status>().await.ok()?;
        Some(ParentPost {
            author: Some(format!("@{}", s.account.acct)),
            text: flagship_platforms::html::html_to_text(&s.content),
            url: s.url,
        })
    }
}
