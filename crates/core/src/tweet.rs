//! The canonical post record every stage passes on — an X tweet, a Bluesky post or a Mastodon
//! status — and its construction from X v2 payloads ([`crate::bluesky`] and
//! [`crate::mastodon`] build it from theirs).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::v2::{ApiError, Id, IncludedTweet, Payload, ReferenceKind, V2User};

/// One tweet as flagship stores it: the payload's `data` object joined with its author from
/// `includes.users`, its place from `includes.places`, the text of the tweet it retweets or
/// quotes from `includes.tweets`, and the stream rules it matched.
///
/// Text is kept exactly as the API sent it; cleaning belongs to `textproc`. Retweet / reply /
/// quote come from `referenced_tweets`, hashtags / mentions / urls from `entities` — never
/// from regexes over the text (the seed's defects).
/// Where a post was published. Ids are unique per platform; (platform, id) is the key.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    #[default]
    X,
    Bluesky,
    Mastodon,
}

impl Platform {
    pub const ALL: [Platform; 3] = [Platform::X, Platform::Bluesky, Platform::Mastodon];

    pub fn as_str(self) -> &'static str {
        match self {
            Platform::X => "x",
            Platform::Bluesky => "bluesky",
            Platform::Mastodon => "mastodon",
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Platform {
    type Err = String;
    fn from_str(s: &str) -> Result<Platform, String> {
        Platform::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not a platform (x, bluesky or mastodon)"))
    }
}

impl Platform {
    /// The platform a post id belongs to, by its form: X's decimal snowflake, Bluesky's
    /// `at://` URI, a Mastodon status URI (`https://…`); `None` for anything else.
    pub fn of_id(id: &str) -> Option<Platform> {
        if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) {
            Some(Platform::X)
        } else if id.starts_with("at://") && id.len() > 5 {
            Some(Platform::Bluesky)
        } else if (id.starts_with("https://") || id.starts_with("http://")) && id.len() > 8 {
            Some(Platform::Mastodon)
        } else {
            None
        }
    }
}

/// The link a person opens to see an X post (x.com resolves any handle for an id).
pub fn x_url(id: &str, username: Option<&str>) -> String {
    format!("https://x.com/{}/status/{id}", username.unwrap_or("i/web"))
}

/// A post's text as a person reads it. X escapes `&`, `<` and `>` in `text` (one level,
/// which textproc's plan undoes the same way for the model); the other platforms' texts are
/// plain already.
pub fn display_text(platform: Platform, text: &str) -> std::borrow::Cow<'_, str> {
    if platform != Platform::X || !text.contains('&') {
        return std::borrow::Cow::Borrowed(text);
    }
    // `&amp;` last, so `&amp;lt;` becomes `&lt;`.
    std::borrow::Cow::Owned(
        text.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tweet {
    pub platform: Platform,
    /// Platform-scoped: X's snowflake (decimal), Bluesky's `at://did/app.bsky.feed.post/rkey`,
    /// Mastodon's status URI.
    pub id: String,
    /// A link a person can open: x.com, bsky.app or the status page.
    pub url: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    /// The full text: `note_tweet.text` for long posts, else `text`.
    pub text: String,
    pub lang: Option<String>,
    /// Client name; absent from payloads after Dec 2022.
    pub source: Option<String>,
    /// X's numeric user id (other platforms: none).
    pub author_id: Option<u64>,
    /// The author's handle: X username, Mastodon `acct`, Bluesky DID (Jetstream sends no
    /// handle).
    pub author_username: Option<String>,
    pub author_name: Option<String>,
    pub author_location: Option<String>,
    pub author_verified: Option<bool>,
    pub author_followers: Option<u64>,
    pub author_created_at: Option<DateTime<Utc>>,
    pub conversation_id: Option<u64>,
    pub in_reply_to_user_id: Option<u64>,
    pub is_retweet: bool,
    pub is_reply: bool,
    pub is_quote: bool,
    pub retweeted_id: Option<u64>,
    pub replied_to_id: Option<u64>,
    pub quoted_id: Option<u64>,
    /// Full text of the retweeted (else quoted) tweet, when the payload included it.
    pub referenced_text: Option<String>,
    pub hashtags: Vec<String>,
    pub mentions: Vec<String>,
    /// Expanded URLs (`unwound_url`, else `expanded_url`, else the t.co `url`).
    pub urls: Vec<String>,
    pub retweet_count: Option<u64>,
    pub reply_count: Option<u64>,
    pub like_count: Option<u64>,
    pub quote_count: Option<u64>,
    pub possibly_sensitive: Option<bool>,
    /// Country codes the tweet is withheld in.
    pub withheld_in: Vec<String>,
    pub edit_history_ids: Vec<u64>,
    pub place_id: Option<String>,
    pub place_full_name: Option<String>,
    pub place_country_code: Option<String>,
    /// Tags (else ids) of the stream rules the tweet matched.
    pub matching_rules: Vec<String>,
    /// When ingest received the tweet (sets the Firehose hour); `None` for search pages.
    pub received_at: Option<DateTime<Utc>>,
}

/// What one payload yields.
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    pub tweets: Vec<Tweet>,
    /// Error objects in the payload (partial errors beside `data`, or a stream error message).
    pub errors: Vec<ApiError>,
    /// How many of `tweets` found their author in `includes.users`.
    pub users_joined: usize,
}

impl Payload {
    /// Joins `data` with `includes` into canonical tweets. A `received_at` in the payload
    /// (added by ingest) wins over the caller's.
    pub fn into_parsed(self, received_at: Option<DateTime<Utc>>) -> Parsed {
        let received_at = self.received_at.or(received_at);
        let users: HashMap<Id, &V2User> = self.includes.users.iter().map(|u| (u.id, u)).collect();
        let included: HashMap<Id, &IncludedTweet> =
            self.includes.tweets.iter().map(|t| (t.id, t)).collect();
        let places: HashMap<&str, &crate::v2::V2Place> = self
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
        let tweets = self
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
                Tweet {
                    platform: Platform::X,
                    url: Some(x_url(&id, username.as_deref())),
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
                }
            })
            .collect();
        Parsed {
            tweets,
            errors: self.errors,
            users_joined,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x_text_is_unescaped_once_for_people() {
        assert_eq!(
            display_text(Platform::X, "a &lt;b&gt; &amp;amp; c"),
            "a <b> &amp; c"
        );
        assert_eq!(display_text(Platform::Bluesky, "&lt;"), "&lt;");
    }
}
