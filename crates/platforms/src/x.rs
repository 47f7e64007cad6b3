//! X API v2 payloads: their serde model (one filtered-stream message, or one search / lookup
//! page) and the canonical [`Post`](flagship_core::Post) records they hold
//! ([`Payload::into_parsed`]).
//!
//! Why not the `twitter-v2` crate's `data::Post` here: its model is tied to the client crate
//! (reqwest, oauth2, `time`), which `core` must not pull into every stage, and it predates the
//! edit fields (`edit_history_tweet_ids`, `edit_controls`) and `note_tweet`. The ingest crate
//! uses `twitter-v2` for stream-rule types; this module only has to read payloads, tolerantly:
//! unknown keys are ignored (twarc adds `__twarc`), ids may be JSON strings or numbers (stream
//! `matching_rules[].id` was a number in 2021) and are never parsed through `f64`.

use std::fmt;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use flagship_core::{Platform, Post};

use crate::Parsed;

/// A numeric X id, read from a JSON string (`"1377650090978992134"`) or an integer; never via f64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Id(pub u64);

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct IdVisitor;
        impl Visitor<'_> for IdVisitor {
            type Value = Id;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a numeric id as a string or an unsigned integer")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Id, E> {
                Ok(Id(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Id, E> {
                u64::try_from(v)
                    .map(Id)
                    .map_err(|_| E::custom(format!("negative id {v}")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Id, E> {
                Err(E::custom(format!(
                    "id {v} is a float; ids must be exact integers"
                )))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Id, E> {
                v.parse::<u64>()
                    .map(Id)
                    .map_err(|_| E::custom(format!("id {v:?} is not an unsigned integer")))
            }
        }
        d.deserialize_any(IdVisitor)
    }
}

/// `data` is one object in stream messages and an array in search / lookup pages.
#[derive(Debug, Clone, Default)]
pub struct OneOrMany<T>(pub Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object or an array of objects")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Vec::<T>::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(OneOrMany)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|t| OneOrMany(vec![t]))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// One stream message or one page of results.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Payload {
    #[serde(default)]
    pub data: Option<OneOrMany<V2Tweet>>,
    #[serde(default)]
    pub includes: Includes,
    #[serde(default)]
    pub matching_rules: Vec<MatchingRule>,
    #[serde(default)]
    pub errors: Vec<ApiError>,
    #[serde(default)]
    pub meta: Option<Meta>,
    /// Not X's: ingest adds the time it received a stream message before sending it to
    /// Firehose, so combine knows each tweet's arrival (and which copy came first).
    #[serde(default)]
    pub received_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Includes {
    #[serde(default)]
    pub users: Vec<V2User>,
    /// Referenced tweets: only their text is used, so they parse leniently — a quirk in
    /// one of them must not cost the tweet that references it.
    #[serde(default)]
    pub tweets: Vec<IncludedTweet>,
    #[serde(default)]
    pub places: Vec<V2Place>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct IncludedTweet {
    pub id: Id,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub note_tweet: Option<NoteTweet>,
}

impl IncludedTweet {
    /// As [`V2Tweet::full_text`]; `None` when the payload sent no text.
    pub fn full_text(&self) -> Option<&str> {
        self.note_tweet
            .as_ref()
            .map(|n| n.text.as_str())
            .or(self.text.as_deref())
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct V2Tweet {
    pub id: Id,
    pub text: String,
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub author_id: Option<Id>,
    #[serde(default)]
    pub conversation_id: Option<Id>,
    #[serde(default)]
    pub in_reply_to_user_id: Option<Id>,
    #[serde(default)]
    pub lang: Option<String>,
    /// The client name ("Twitter for iPhone"); the API stopped sending it around Dec 2022.
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub possibly_sensitive: Option<bool>,
    #[serde(default)]
    pub referenced_tweets: Vec<ReferencedTweet>,
    #[serde(default)]
    pub entities: Entities,
    #[serde(default)]
    pub public_metrics: Option<TweetMetrics>,
    #[serde(default)]
    pub withheld: Option<Withheld>,
    #[serde(default)]
    pub edit_history_tweet_ids: Vec<Id>,
    #[serde(default)]
    pub geo: Option<Geo>,
    /// Posts over 280 characters carry their full text here.
    #[serde(default)]
    pub note_tweet: Option<NoteTweet>,
}

impl V2Tweet {
    /// `note_tweet.text` for long posts, else `text`.
    pub fn full_text(&self) -> &str {
        self.note_tweet.as_ref().map_or(&self.text, |n| &n.text)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct NoteTweet {
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReferenceKind {
    Retweeted,
    RepliedTo,
    Quoted,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ReferencedTweet {
    #[serde(rename = "type")]
    pub kind: ReferenceKind,
    pub id: Id,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Entities {
    #[serde(default)]
    pub hashtags: Vec<Tag>,
    #[serde(default)]
    pub cashtags: Vec<Tag>,
    #[serde(default)]
    pub mentions: Vec<Mention>,
    #[serde(default)]
    pub urls: Vec<UrlEntity>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Tag {
    pub tag: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Mention {
    pub username: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct UrlEntity {
    pub url: String,
    #[serde(default)]
    pub expanded_url: Option<String>,
    #[serde(default)]
    pub unwound_url: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct TweetMetrics {
    #[serde(default)]
    pub retweet_count: u64,
    #[serde(default)]
    pub reply_count: u64,
    #[serde(default)]
    pub like_count: u64,
    #[serde(default)]
    pub quote_count: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Withheld {
    #[serde(default)]
    pub copyright: Option<bool>,
    #[serde(default)]
    pub country_codes: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Geo {
    #[serde(default)]
    pub place_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct V2User {
    pub id: Id,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default)]
    pub verified: Option<bool>,
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub public_metrics: Option<UserMetrics>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct UserMetrics {
    #[serde(default)]
    pub followers_count: u64,
    #[serde(default)]
    pub following_count: u64,
    #[serde(default)]
    pub tweet_count: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct V2Place {
    pub id: String,
    #[serde(default)]
    pub full_name: Option<String>,
    #[serde(default)]
    pub country_code: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MatchingRule {
    pub id: Id,
    #[serde(default)]
    pub tag: Option<String>,
}

/// An error object, either beside `data` (partial errors: a suspended author, a deleted
/// referenced tweet) or alone on a stream line (operational disconnect, rule problems).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub detail: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub resource_type: Option<String>,
    #[serde(default)]
    pub resource_id: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

impl ApiError {
    /// True for the stream's `operational-disconnect` message: reconnect, nothing is wrong with us.
    pub fn is_operational_disconnect(&self) -> bool {
        let hit = |s: &Option<String>| {
            s.as_deref().is_some_and(|s| {
                s.contains("operational-disconnect") || s.contains("Operational Disconnect")
            })
        };
        hit(&self.title) || hit(&self.kind)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let title = self.title.as_deref().unwrap_or("error");
        write!(f, "{title}")?;
        if let Some(d) = self.detail.as_deref().or(self.message.as_deref()) {
            write!(f, ": {d}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Meta {
    #[serde(default)]
    pub result_count: Option<u64>,
    #[serde(default)]
    pub next_token: Option<String>,
}

impl Payload {
    /// Joins `data` with `includes` into canonical tweets. A `received_at` in the payload
    /// (added by ingest) wins over the caller's.
    pub fn into_parsed(self, received_at: Option<DateTime<Utc>>) -> Parsed {
        let received_at = self.received_at.or(received_at);
        let users: HashMap<Id, &V2User> = self.includes.users.iter().map(|u| (u.id, u)).collect();
        let included: HashMap<Id, &IncludedTweet> =
            self.includes.tweets.iter().map(|t| (t.id, t)).collect();
        let places: HashMap<&str, &V2Place> = self
            .includes
            .places
            .iter()
            .map(|p| (p.id.as_str(), p))
            .collect();
        let rules: Vec<String> = self
            .matching_rules
            .iter()
            .map(|r| r.tag.clone().unwrap_or_else(|| r.id.0.to_string()))
            .collect();

        let mut users_joined = 0;
        let posts = self
            .data
            .map(|d| d.0)
            .unwrap_or_default()
            .into_iter()
            .map(|t| {
                let author = t.author_id.and_then(|a| users.get(&a)).copied();
                users_joined += usize::from(author.is_some());
                let reference = |kind| {
                    t.referenced_tweets
                        .iter()
                        .find(|r| r.kind == kind)
                        .map(|r| r.id)
                };
                let retweeted = reference(ReferenceKind::Retweeted);
                let replied_to = reference(ReferenceKind::RepliedTo);
                let quoted = reference(ReferenceKind::Quoted);
                let referenced_text = retweeted
                    .or(quoted)
                    .and_then(|id| included.get(&id))
                    .and_then(|r| r.full_text())
                    .map(str::to_owned);
                let place = t
                    .geo
                    .as_ref()
                    .and_then(|g| g.place_id.as_deref())
                    .map(|id| (id, places.get(id).copied()));
                let metrics = t.public_metrics.clone();
                let id = t.id.0.to_string();
                let username = author.and_then(|u| u.username.clone());
                Post {
                    platform: Platform::X,
                    url: Some(url(&id, username.as_deref())),
                    id,
                    created_at: t.created_at,
                    text: t.full_text().to_owned(),
                    lang: t.lang,
                    source: t.source,
                    author_id: t.author_id.map(|a| a.0),
                    author_username: username,
                    author_name: author.and_then(|u| u.name.clone()),
                    author_location: author.and_then(|u| u.location.clone()),
                    author_verified: author.and_then(|u| u.verified),
                    author_followers: author
                        .and_then(|u| u.public_metrics.as_ref())
                        .map(|m| m.followers_count),
                    author_created_at: author.and_then(|u| u.created_at),
                    conversation_id: t.conversation_id.map(|a| a.0),
                    in_reply_to_user_id: t.in_reply_to_user_id.map(|a| a.0),
                    is_retweet: retweeted.is_some(),
                    is_reply: replied_to.is_some(),
                    is_quote: quoted.is_some(),
                    retweeted_id: retweeted.map(|a| a.0),
                    replied_to_id: replied_to.map(|a| a.0),
                    quoted_id: quoted.map(|a| a.0),
                    referenced_text,
                    hashtags: t.entities.hashtags.into_iter().map(|h| h.tag).collect(),
                    mentions: t
                        .entities
                        .mentions
                        .into_iter()
                        .map(|m| m.username)
                        .collect(),
                    urls: t
                        .entities
                        .urls
                        .into_iter()
                        .map(|u| u.unwound_url.or(u.expanded_url).unwrap_or(u.url))
                        .collect(),
                    retweet_count: metrics.as_ref().map(|m| m.retweet_count),
                    reply_count: metrics.as_ref().map(|m| m.reply_count),
                    like_count: metrics.as_ref().map(|m| m.like_count),
                    quote_count: metrics.as_ref().map(|m| m.quote_count),
                    possibly_sensitive: t.possibly_sensitive,
                    withheld_in: t.withheld.map(|w| w.country_codes).unwrap_or_default(),
                    edit_history_ids: t.edit_history_tweet_ids.iter().map(|i| i.0).collect(),
                    place_id: place.map(|(id, _)| id.to_owned()),
                    place_full_name: place.and_then(|(_, p)| p?.full_name.clone()),
                    place_country_code: place.and_then(|(_, p)| p?.country_code.clone()),
                    matching_rules: rules.clone(),
                    received_at,
                    cid: None,
                    reply_parent: replied_to.map(|a| flagship_core::PostRef {
                        id: a.0.to_string(),
                        ..Default::default()
                    }),
                    reply_root: t.conversation_id.filter(|_| replied_to.is_some()).map(|c| {
                        flagship_core::PostRef {
                            id: c.0.to_string(),
                            ..Default::default()
                        }
                    }),
                }
            })
            .collect();
        Parsed {
            posts,
            errors: self.errors,
            users_joined,
        }
    }
}

/// The link a person opens to see an X post (x.com resolves any handle for an id).
pub fn url(id: &str, username: Option<&str>) -> String {
    format!("https://x.com/{}/status/{id}", username.unwrap_or("i/web"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{display_text, parse_payload};
    use flagship_testkit::fixture;

    /// Every post in one of `fixtures/twitter-v2/`'s real payload files.
    fn posts(name: &str) -> Vec<Post> {
        std::fs::read_to_string(fixture(&format!("twitter-v2/{name}")))
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .flat_map(|l| parse_payload(l.as_bytes(), None).unwrap().posts)
            .collect()
    }

    #[test]
    fn a_real_posts_amp_is_kept_as_sent_and_read_as_an_ampersand() {
        let posts = posts("geo_tweets.jsonl");
        let p = posts
            .iter()
            .find(|p| p.id == "1501963039859363843")
            .unwrap();
        // The record (what the store keeps) holds `text` as X sent it, escaped…
        assert!(
            p.text
                .contains("you need to specify Fields &amp; Expansions, twarc does it"),
            "{}",
            p.text
        );
        // …and a person reads it with X's one level of escaping undone.
        let shown = display_text(p.platform, &p.text);
        assert!(
            shown.contains("you need to specify Fields & Expansions, twarc does it"),
            "{shown}"
        );
        assert!(!shown.contains("&amp;"), "{shown}");
    }

    #[test]
    fn every_real_post_with_amp_shows_an_ampersand() {
        // The payload files whose every line parses (streaming_output_with_error.jsonl ends in
        // a truncated line, and holds no `&amp;`).
        let files = [
            "brexit.jsonl",
            "edited.jsonl",
            "geo_tweets.jsonl",
            "kpop.jsonl",
            "noflat.jsonl",
            "quoted_edit.jsonl",
            "two_tweets.jsonl",
            "withheld.jsonl",
        ];
        let with_amp: Vec<Post> = files
            .iter()
            .flat_map(|f| posts(f))
            .filter(|p| p.text.contains("&amp;"))
            .collect();
        // 7 in brexit, 1 in geo_tweets, 1 in kpop, 5 in noflat, 18 in withheld; none is
        // escaped twice (`&amp;amp;`).
        assert_eq!(with_amp.len(), 32);
        for p in &with_amp {
            // Exactly X's one level undone (`&amp;` last, so `&amp;lt;` would read `&lt;`).
            let unescaped = p
                .text
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&");
            assert_eq!(display_text(p.platform, &p.text), unescaped, "{}", p.id);
        }
    }
}
