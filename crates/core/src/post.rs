//! The canonical post record every stage passes on — an X tweet, a Bluesky post or a Mastodon
//! status — and the platform it came from. `flagship-platforms` builds it from each
//! platform's payloads; nothing here parses them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

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

/// One post as flagship stores it, whatever its platform. For X it is the payload's `data`
/// object joined with its author from `includes.users`, its place from `includes.places`, the
/// text of the tweet it retweets or quotes from `includes.tweets`, and the stream rules it
/// matched; Bluesky and Mastodon fill the fields they have.
///
/// Text is kept exactly as the platform sent it; cleaning belongs to `textproc`. Retweet /
/// reply / quote come from the payload's references, hashtags / mentions / urls from its
/// entities or facets — never from regexes over the text (the seed's defects).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Post {
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
    /// Bluesky: the record's CID (a reply names its parent and root by URI and CID).
    #[serde(default)]
    pub cid: Option<String>,
    /// The post this one replies to, and its thread's first post, as the platform names
    /// them — what a reply from the desk needs and the thread view shows: Bluesky's `reply`
    /// refs (`at://` URI and CID), Mastodon's `in_reply_to_id` (the parent's id on the
    /// author's instance), X's replied-to tweet and conversation.
    #[serde(default)]
    pub reply_parent: Option<PostRef>,
    #[serde(default)]
    pub reply_root: Option<PostRef>,
}

/// A post another one refers to, as its platform names it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostRef {
    /// Bluesky: the `at://` URI; Mastodon: the status id on the instance named in
    /// `instance`; X: the tweet id.
    pub id: String,
    /// Bluesky: the record's CID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<String>,
    /// Mastodon: the host whose API knows `id` (the author's instance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}
