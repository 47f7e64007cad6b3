//! Bluesky Jetstream events (JSON over WebSocket, `wantedCollections=app.bsky.feed.post`)
//! and the posts in them as canonical [`Post`] records.
//!
//! An event is `{did, time_us, kind, commit | identity | account}`. A post is a `commit` on the
//! `app.bsky.feed.post` collection: `create` (and `update`, an edit) carry the record — `text`,
//! `createdAt`, `langs`, `facets` (mentions, links, tags by byte range), `reply`, `embed`
//! (images, a link card, a quoted record); `delete` carries only the key. Identity and account
//! events, and commits on other collections, are told apart so a caller can count them. The
//! post's id is its `at://did/app.bsky.feed.post/rkey` URI and its link the bsky.app page.
//! Nothing here does I/O; Jetstream sends no handle, so the author is the DID.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::jsonl::PayloadError;
use flagship_core::{Platform, Post};

/// The post collection.
pub const POST: &str = "app.bsky.feed.post";

/// One Jetstream event, as far as flagship reads it.
#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    pub did: String,
    /// Microseconds since the epoch at which Jetstream received the event: the resume cursor.
    pub time_us: u64,
    pub kind: String,
    #[serde(default)]
    pub commit: Option<Commit>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Commit {
    pub operation: String,
    pub collection: String,
    pub rkey: String,
    #[serde(default)]
    pub record: Option<serde_json::Value>,
    /// The record's content hash (a reply names its parent by URI and CID).
    #[serde(default)]
    pub cid: Option<String>,
}

/// What an event means for flagship.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A post created (or edited: `update`), with its `at://` URI.
    Post { uri: String, edit: bool },
    /// A post deleted.
    Delete { uri: String },
    /// Anything else: identity, account, commits on other collections (named).
    Other(String),
}

impl Event {
    pub fn kind(&self) -> Kind {
        match &self.commit {
            Some(c) if self.kind == "commit" && c.collection == POST => {
                let uri = post_uri(&self.did, &c.rkey);
                match c.operation.as_str() {
                    "delete" => Kind::Delete { uri },
                    op => Kind::Post {
                        uri,
                        edit: op == "update",
                    },
                }
            }
            Some(c) if self.kind == "commit" => Kind::Other(format!("commit {}", c.collection)),
            _ => Kind::Other(self.kind.clone()),
        }
    }

    /// The post this event carries (a create or update of a post record), else `None`.
    pub fn to_post(
        &self,
        received_at: Option<DateTime<Utc>>,
    ) -> Result<Option<Post>, PayloadError> {
        let Kind::Post { uri, .. } = self.kind() else {
            return Ok(None);
        };
        let commit = self.commit.as_ref().expect("a post event has a commit");
        let Some(record) = &commit.record else {
            return Err(PayloadError {
                path: "commit.record".into(),
                message: "a post commit without its record".into(),
            });
        };
        let post: PostRecord =
            serde_path_to_error::deserialize(record).map_err(|e| PayloadError {
                path: format!("commit.record.{}", e.path()),
                message: e.inner().to_string(),
            })?;
        Ok(Some(post.into_post(self, uri, received_at)))
    }
}

/// `at://did/app.bsky.feed.post/rkey`.
pub fn post_uri(did: &str, rkey: &str) -> String {
    format!("at://{did}/{POST}/{rkey}")
}

/// The bsky.app page of a post.
pub fn post_url(did: &str, rkey: &str) -> String {
    format!("https://bsky.app/profile/{did}/post/{rkey}")
}

/// Parses one event line; the JSON path names what failed.
pub fn parse_event(bytes: &[u8]) -> Result<Event, PayloadError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| PayloadError {
        path: e.path().to_string(),
        message: e.inner().to_string(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PostRecord {
    text: String,
    /// Written by the author's client: a value that is no RFC 3339 time (some clients send
    /// such) falls back to Jetstream's receive time rather than losing the post.
    #[serde(default, deserialize_with = "lenient_time")]
    created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    langs: Vec<String>,
    #[serde(default)]
    facets: Vec<Facet>,
    #[serde(default)]
    reply: Option<ReplyRefs>,
    #[serde(default)]
    embed: Option<Embed>,
    #[serde(default)]
    labels: Option<serde_json::Value>,
}

fn lenient_time<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    Ok(v.as_ref()
        .and_then(|v| v.as_str())
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc)))
}

/// A reply's `root` and `parent` strong refs.
#[derive(Debug, Deserialize)]
struct ReplyRefs {
    #[serde(default)]
    root: Option<StrongRef>,
    #[serde(default)]
    parent: Option<StrongRef>,
}

#[derive(Debug, Deserialize)]
struct StrongRef {
    uri: String,
    #[serde(default)]
    cid: Option<String>,
}

impl StrongRef {
    fn post_ref(&self) -> flagship_core::PostRef {
        flagship_core::PostRef {
            id: self.uri.clone(),
            cid: self.cid.clone(),
            instance: None,
        }
    }
}

#[derive(Debug, Deserialize)]
struct Facet {
    #[serde(default)]
    features: Vec<Feature>,
}

#[derive(Debug, Deserialize)]
struct Feature {
    #[serde(rename = "$type", default)]
    kind: String,
    #[serde(default)]
    did: Option<String>,
    #[serde(default)]
    uri: Option<String>,
    #[serde(default)]
    tag: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Embed {
    #[serde(rename = "$type", default)]
    kind: String,
    #[serde(default)]
    external: Option<External>,
}

#[derive(Debug, Deserialize)]
struct External {
    #[serde(default)]
    uri: Option<String>,
}

impl PostRecord {
    fn into_post(self, e: &Event, uri: String, received_at: Option<DateTime<Utc>>) -> Post {
        let rkey = &e.commit.as_ref().expect("post commit").rkey;
        let (mut hashtags, mut mentions, mut urls) = (Vec::new(), Vec::new(), Vec::new());
        for f in self.facets.iter().flat_map(|f| &f.features) {
            match f.kind.as_str() {
                "app.bsky.richtext.facet#tag" => hashtags.extend(f.tag.clone()),
                "app.bsky.richtext.facet#mention" => mentions.extend(f.did.clone()),
                "app.bsky.richtext.facet#link" => urls.extend(f.uri.clone()),
                _ => {}
            }
        }
        let is_quote = self.embed.as_ref().is_some_and(|m| {
            m.kind == "app.bsky.embed.record" || m.kind == "app.bsky.embed.recordWithMedia"
        });
        if let Some(u) = self
            .embed
            .as_ref()
            .and_then(|m| m.external.as_ref())
            .and_then(|x| x.uri.clone())
            && !urls.contains(&u)
        {
            urls.push(u);
        }
        Post {
            platform: Platform::Bluesky,
            url: Some(post_url(&e.did, rkey)),
            id: uri,
            created_at: self
                .created_at
                .or_else(|| DateTime::from_timestamp_micros(e.time_us as i64)),
            text: self.text,
            lang: self.langs.into_iter().next(),
            author_username: Some(e.did.clone()),
            is_reply: self.reply.is_some(),
            cid: e.commit.as_ref().and_then(|c| c.cid.clone()),
            reply_parent: self
                .reply
                .as_ref()
                .and_then(|r| r.parent.as_ref())
                .map(StrongRef::post_ref),
            reply_root: self
                .reply
                .as_ref()
                .and_then(|r| r.root.as_ref())
                .map(StrongRef::post_ref),
            is_quote,
            hashtags,
            mentions,
            urls,
            possibly_sensitive: self.labels.as_ref().map(|_| true),
            received_at,
            ..Post::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flagship_testkit::fixture;

    fn events(name: &str) -> Vec<Event> {
        std::fs::read_to_string(fixture(&format!("bluesky-jetstream/{name}")))
            .unwrap()
            .lines()
            .map(|l| parse_event(l.as_bytes()).unwrap())
            .collect()
    }

    #[test]
    fn the_live_capture_holds_17_posts_a_deletion_and_every_event_is_told_apart() {
        let all = events("capture_v1.jsonl");
        assert_eq!(all.len(), 152);
        let posts: Vec<Post> = all
            .iter()
            .filter_map(|e| e.to_post(None).unwrap())
            .collect();
        // The capture's 18 post events: 17 creates and a delete.
        assert_eq!(posts.len(), 17);
        for p in &posts {
            assert!(p.id.starts_with("at://did:"), "{}", p.id);
            assert!(
                p.url
                    .as_deref()
                    .unwrap()
                    .starts_with("https://bsky.app/profile/did:")
            );
            assert!(p.created_at.is_some() && p.author_username.is_some());
        }
        let others = all
            .iter()
            .filter(|e| matches!(e.kind(), Kind::Other(_)))
            .count();
        assert_eq!(others, 152 - 18);
        let deletes = all
            .iter()
            .filter(|e| matches!(e.kind(), Kind::Delete { .. }))
            .count();
        assert_eq!(deletes, 1);
        // The first post: a link card, its facet and its embed give one url.
        let first = &posts[0];
        assert_eq!(first.urls, ["https://www.youtube.com/watch?v=V5lDo-jw8mA"]);
        assert_eq!(first.lang.as_deref(), Some("en"));
        assert!(posts.iter().any(|p| p.is_reply));
        // What a reply from the desk needs: every post's CID, a reply's parent and root.
        assert!(
            posts
                .iter()
                .all(|p| p.cid.as_deref().is_some_and(|c| c.starts_with("bafy")))
        );
        let reply = posts
            .iter()
            .find(|p| p.id.ends_with("/3mptbyp7lu223"))
            .unwrap();
        assert_eq!(
            reply.cid.as_deref(),
            Some("bafyreifq66rnqqmr62ussjdhneebgoeaci5extyyjyqymkqwgtr4667gsi")
        );
        let parent = reply.reply_parent.as_ref().unwrap();
        assert_eq!(
            parent.id,
            "at://did:plc:i5y2f3gtpjxs3qg6fwgb6jb4/app.bsky.feed.post/3mpt7u2vlgs2c"
        );
        assert_eq!(
            parent.cid.as_deref(),
            Some("bafyreifzanogmt75wega3mdkjqiv5rg6usowy6hr3nrlvioezvu7jur3cq")
        );
        assert_eq!(reply.reply_root.as_ref().unwrap().id, parent.id);
        assert!(
            posts
                .iter()
                .filter(|p| !p.is_reply)
                .all(|p| p.reply_parent.is_none())
        );
    }

    #[test]
    fn golden_events_cover_every_kind() {
        let kinds: Vec<String> = events("golden_v1.jsonl")
            .iter()
            .map(|e| match e.kind() {
                Kind::Post { edit, .. } => format!("post{}", if edit { " edit" } else { "" }),
                Kind::Delete { .. } => "delete".into(),
                Kind::Other(k) => k,
            })
            .collect();
        assert!(kinds.contains(&"post".to_owned()), "{kinds:?}");
        assert!(kinds.contains(&"identity".to_owned()), "{kinds:?}");
        assert!(kinds.contains(&"account".to_owned()), "{kinds:?}");
        assert!(
            kinds.contains(&"commit app.bsky.feed.like".to_owned()),
            "{kinds:?}"
        );
    }

    #[test]
    fn a_bad_record_names_its_path() {
        let line = br#"{"did":"did:plc:x","time_us":1,"kind":"commit","commit":{"rev":"r","operation":"create","collection":"app.bsky.feed.post","rkey":"k","record":{"text":5}}}"#;
        let e = parse_event(line).unwrap().to_post(None).unwrap_err();
        assert_eq!(e.path, "commit.record.text");
        // A client's odd time falls back to Jetstream's receive time; the post is kept.
        let odd = br#"{"did":"did:plc:x","time_us":1783175888085434,"kind":"commit","commit":{"rev":"r","operation":"create","collection":"app.bsky.feed.post","rkey":"k","record":{"text":"hi","createdAt":"yesterday"}}}"#;
        let t = parse_event(odd).unwrap().to_post(None).unwrap().unwrap();
        assert_eq!(t.created_at.unwrap().timestamp(), 1783175888);
        let e = parse_event(br#"{"did":"d","kind":"commit"}"#).unwrap_err();
        assert!(e.message.contains("time_us"), "{e}");
        let delete = br#"{"did":"did:plc:x","time_us":2,"kind":"commit","commit":{"rev":"r","operation":"delete","collection":"app.bsky.feed.post","rkey":"k"}}"#;
        let e = parse_event(delete).unwrap();
        assert_eq!(
            e.kind(),
            Kind::Delete {
                uri: "at://did:plc:x/app.bsky.feed.post/k".into()
            }
        );
        assert!(e.to_post(None).unwrap().is_none());
    }
}
