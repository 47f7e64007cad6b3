//! Mastodon statuses — the `Status` entity of the REST API and of the streaming API's
//! `update` / `status.update` events — and the posts in them as canonical [`Post`] records.
//!
//! It reads one line at a time ([`parse_line`]): a streaming event
//! `{"event", "payload", "instance"?}` whose payload is the Status object, the Status as a
//! JSON string (the WebSocket and server-sent-events form, parsed twice) or, for `delete`,
//! the bare status id; or a recorded REST status `{"instance", "status"}`. Other event names
//! (notifications, filter and announcement changes) are told apart, not errors.
//!
//! A status becomes a [`Post`] ([`Status::to_post`]): its id is the status URI (globally
//! unique), its author the full `user@host` handle, its text the content HTML turned into
//! plain text by a small hand-written converter ([`html_to_text`]) that keeps the full URLs
//! Mastodon shortens on screen. A boost maps like an X retweet (`RT @user: …`).
//!
//! Nothing here does I/O, follows a link or fetches a remote account; nothing panics on
//! input: a line that does not parse is a [`PayloadError`] naming its JSON path.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::html::{html_to_text, links};
use crate::jsonl::PayloadError;
use flagship_core::{Platform, Post};

/// One event of a Mastodon stream (or one recorded status).
#[derive(Debug, Clone)]
pub enum Event {
    /// A new status (`update`, or a recorded REST status).
    Update(Box<Status>),
    /// An edited status (`status.update`).
    StatusUpdate(Box<Status>),
    /// A deleted status, by its (instance-local) id.
    Delete(String),
    /// Any other event, by name: `notification`, `filters_changed`, `announcement`, …
    Other(String),
}

/// A Mastodon `Status`, as far as flagship reads it; unknown fields are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct Status {
    /// Instance-local id (a delete names this).
    pub id: String,
    /// The ActivityPub URI: globally unique, the post's flagship id.
    pub uri: String,
    /// The HTML page of the status (none for boosts on some servers).
    #[serde(default)]
    pub url: Option<String>,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub edited_at: Option<DateTime<Utc>>,
    /// HTML (see [`html_to_text`]); empty for a boost.
    #[serde(default, deserialize_with = "or_default")]
    pub content: String,
    /// The content warning, plain text; empty when none.
    #[serde(default, deserialize_with = "or_default")]
    pub spoiler_text: String,
    #[serde(default, deserialize_with = "or_default")]
    pub sensitive: bool,
    #[serde(default)]
    pub visibility: Option<String>,
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default)]
    pub in_reply_to_id: Option<String>,
    #[serde(default)]
    pub in_reply_to_account_id: Option<String>,
    /// The boosted status, when this one is a boost.
    #[serde(default)]
    pub reblog: Option<Box<Status>>,
    pub account: Account,
    #[serde(default, deserialize_with = "or_default")]
    pub tags: Vec<Tag>,
    #[serde(default, deserialize_with = "or_default")]
    pub mentions: Vec<Mention>,
    /// The posting client; absent from other servers' statuses.
    #[serde(default)]
    pub application: Option<Application>,
    #[serde(default)]
    pub card: Option<Card>,
    #[serde(default, deserialize_with = "count")]
    pub reblogs_count: Option<u64>,
    #[serde(default, deserialize_with = "count")]
    pub replies_count: Option<u64>,
    #[serde(default, deserialize_with = "count")]
    pub favourites_count: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Account {
    #[serde(default, deserialize_with = "or_default")]
    pub id: String,
    #[serde(default, deserialize_with = "or_default")]
    pub username: String,
    /// `user` for an account of the serving instance, `user@host` for any other.
    pub acct: String,
    #[serde(default, deserialize_with = "or_default")]
    pub display_name: String,
    /// The profile page.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default, deserialize_with = "or_default")]
    pub bot: bool,
    #[serde(default, deserialize_with = "count")]
    pub followers_count: Option<u64>,
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Tag {
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Mention {
    pub acct: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Application {
    #[serde(default, deserialize_with = "or_default")]
    pub name: String,
}

/// The link preview.
#[derive(Debug, Clone, Deserialize)]
pub struct Card {
    #[serde(default, deserialize_with = "or_default")]
    pub url: String,
}

/// A missing or `null` value as the type's default.
fn or_default<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(
    d: D,
) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A counter; a negative one (servers that hide it send `-1`) is unknown.
fn count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(Option::<i64>::deserialize(d)?.and_then(|n| u64::try_from(n).ok()))
}

/// The id a post is known by (the status URI).
pub fn post_id(s: &Status) -> &str {
    &s.uri
}

impl Status {
    /// The canonical record. `instance` (a host or URL) is the server the status was read
    /// from: it completes the handles of its own accounts when their profile URL cannot.
    pub fn to_post(&self, instance: Option<&str>, received_at: Option<DateTime<Utc>>) -> Post {
        let instance = instance.map(instance_host);
        let instance = instance.as_deref();
        // A boost's own status is an empty shell: what it says is the boosted status.
        let shown = self.reblog.as_deref().unwrap_or(self);
        let (text, referenced_text) = match &self.reblog {
            Some(r) => {
                let said = r.text();
                let rt = format!("RT @{}: {said}", handle(&r.account, instance));
                (rt, Some(said))
            }
            None => (self.text(), None),
        };
        Post {
            platform: Platform::Mastodon,
            id: self.uri.clone(),
            url: Some(self.url.clone().unwrap_or_else(|| self.uri.clone())),
            created_at: Some(self.created_at),
            text,
            lang: self.language.clone().or_else(|| shown.language.clone()),
            source: self.application.as_ref().and_then(|a| non_empty(&a.name)),
            author_username: Some(handle(&self.account, instance)),
            author_name: non_empty(&self.account.display_name),
            author_followers: self.account.followers_count,
            author_created_at: self.account.created_at,
            is_retweet: self.reblog.is_some(),
            is_reply: self.in_reply_to_id.is_some(),
            // Ids are the reading server's own: the parent is `in_reply_to_id` there. Only
            // that server (one the config names) is ever asked for it — never a host taken
            // from the status itself, which its author can point anywhere.
            reply_parent: self
                .in_reply_to_id
                .as_ref()
                .map(|id| flagship_core::PostRef {
                    id: id.clone(),
                    cid: None,
                    instance: instance.map(str::to_owned),
                }),
            referenced_text,
            hashtags: shown.tags.iter().map(|t| t.name.clone()).collect(),
            mentions: shown.mentions.iter().map(|m| m.acct.clone()).collect(),
            urls: shown.urls(),
            retweet_count: self.reblogs_count,
            reply_count: self.replies_count,
            like_count: self.favourites_count,
            possibly_sensitive: Some(shown.sensitive),
            received_at,
            ..Post::default()
        }
    }

    /// The plain text, after the content warning when there is one.
    fn text(&self) -> String {
        let body = html_to_text(&self.content);
        match self.spoiler_text.trim() {
            "" => body,
            cw if body.is_empty() => cw.to_owned(),
            cw => format!("{cw}\n\n{body}"),
        }
    }

    /// The links of the content that are not mentions or hashtags, then the card's.
    fn urls(&self) -> Vec<String> {
        let card = self.card.as_ref().map(|c| c.url.clone());
        let mut urls: Vec<String> = Vec::new();
        for u in links(&self.content).into_iter().chain(card) {
            if !u.is_empty() && !urls.contains(&u) {
                urls.push(u);
            }
        }
        urls
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// The full `user@host` handle: `acct` has no host for the serving instance's own accounts,
/// so it comes from the profile URL, else from the instance.
fn handle(account: &Account, instance: Option<&str>) -> String {
    if account.acct.contains('@') {
        return account.acct.clone();
    }
    let host = account.url.as_deref().and_then(url_host);
    match host.as_deref().or(instance) {
        Some(host) => format!("{}@{host}", account.acct),
        None => account.acct.clone(),
    }
}

fn url_host(url: &str) -> Option<String> {
    url::Url::parse(url).ok()?.host_str().map(str::to_owned)
}

/// `https://mastodon.social/` and `mastodon.social` both name the host `mastodon.social`.
fn instance_host(instance: &str) -> String {
    url_host(instance).unwrap_or_else(|| instance.trim().trim_end_matches('/').to_owned())
}

// ---------------------------------------------------------------------------------------
// Lines and events
// ---------------------------------------------------------------------------------------

/// A line as first read: the event or recorded status stays raw until its kind is known.
#[derive(Deserialize)]
struct Line<'a> {
    #[serde(default)]
    event: Option<String>,
    #[serde(default, borrow)]
    payload: Option<&'a RawValue>,
    #[serde(default, borrow)]
    status: Option<&'a RawValue>,
    #[serde(default)]
    instance: Option<String>,
}

/// Parses one line. Accepted shapes: a streaming event
/// `{"event": "update" | "status.update" | "delete" | …, "payload": P, "instance": "host"?}`
/// where P is the Status object, the Status as a JSON string (WebSocket / SSE form) or, for
/// `delete`, the bare status id; or a recorded REST status `{"instance": "host", "status": {…}}`
/// (an update). Returns the event and the instance host when the line names one. Errors name
/// the JSON path (`status.created_at`, `payload.account.acct`).
pub fn parse_line(line: &[u8]) -> Result<(Event, Option<String>), PayloadError> {
    let line: Line = from_json(line.trim_ascii(), "")?;
    let instance = line.instance.as_deref().map(instance_host);
    let event = match (line.event.as_deref(), line.status) {
        (Some(name), _) => event(name, line.payload)?,
        (None, Some(status)) => Event::Update(Box::new(status_from(status, "status")?)),
        (None, None) => {
            return Err(PayloadError {
                path: ".".into(),
                message: "not a Mastodon line: neither `event` nor `status`".into(),
            });
        }
    };
    Ok((event, instance))
}

fn event(name: &str, payload: Option<&RawValue>) -> Result<Event, PayloadError> {
    let payload = || {
        payload.ok_or_else(|| PayloadError {
            path: "payload".into(),
            message: format!("a `{name}` event without its payload"),
        })
    };
    Ok(match name {
        "update" => Event::Update(Box::new(status_from(payload()?, "payload")?)),
        "status.update" => Event::StatusUpdate(Box::new(status_from(payload()?, "payload")?)),
        "delete" => Event::Delete(status_id(payload()?)?),
        other => Event::Other(other.to_owned()),
    })
}

/// A Status given as an object, or as a JSON string holding one (parsed twice).
fn status_from(raw: &RawValue, at: &str) -> Result<Status, PayloadError> {
    let json = raw.get();
    if json.starts_with('"') {
        let inner: String = from_json(json.as_bytes(), at)?;
        return from_json(inner.as_bytes(), at);
    }
    from_json(json.as_bytes(), at)
}

/// The id a `delete` carries: a string (a number is taken as written).
fn status_id(raw: &RawValue) -> Result<String, PayloadError> {
    match from_json(raw.get().as_bytes(), "payload")? {
        serde_json::Value::String(id) => Ok(id),
        serde_json::Value::Number(id) => Ok(id.to_string()),
        other => Err(PayloadError {
            path: "payload".into(),
            message: format!("a `delete` carries a status id, not {other}"),
        }),
    }
}

/// Deserialises `bytes`, naming the JSON path of a failure below `at`.
fn from_json<'de, T: Deserialize<'de>>(bytes: &'de [u8], at: &str) -> Result<T, PayloadError> {
    let fail = |path: String, message: String| PayloadError {
        path: join_path(at, &path),
        message,
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| fail(e.path().to_string(), e.inner().to_string()))?;
    de.end().map_err(|e| fail(".".into(), e.to_string()))?;
    Ok(value)
}

fn join_path(at: &str, path: &str) -> String {
    match (at, path) {
        // `?`: serde_path_to_error's answer for a syntax error at the top.
        ("", "?") => ".".to_owned(),
        ("", path) => path.to_owned(),
        (at, "." | "?") => at.to_owned(),
        (at, path) => format!("{at}.{path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flagship_testkit::fixture;

    const FIXTURE: &str = "mastodon/public_timeline_statuses.jsonl";

    fn lines() -> Vec<String> {
        std::fs::read_to_string(fixture(FIXTURE))
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Every recorded status, with its instance host.
    fn statuses() -> Vec<(Status, String)> {
        lines()
            .iter()
            .enumerate()
            .map(|(i, l)| match parse_line(l.as_bytes()) {
                Ok((Event::Update(s), Some(host))) => (*s, host),
                other => panic!("line {}: {other:?}", i + 1),
            })
            .collect()
    }

    /// The recorded status whose URI ends with `suffix`, as a tweet.
    fn tweet(suffix: &str) -> Post {
        let (s, host) = statuses()
            .into_iter()
            .find(|(s, _)| s.uri.ends_with(suffix))
            .unwrap_or_else(|| panic!("no status {suffix}"));
        s.to_post(Some(&host), None)
    }

    /// The raw JSON of the recorded status whose URI ends with `suffix`.
    fn raw_status(suffix: &str) -> serde_json::Value {
        lines()
            .iter()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["status"].clone())
            .find(|s| s["uri"].as_str().unwrap().ends_with(suffix))
            .unwrap()
    }

    fn status(v: &serde_json::Value) -> Status {
        serde_json::from_value(v.clone()).unwrap()
    }

    #[test]
    fn all_50_recorded_statuses_parse_into_tweets() {
        let all = statuses();
        assert_eq!(all.len(), 50);
        let at = "2025-07-17T20:05:00Z".parse().unwrap();
        for (s, host) in &all {
            assert!(
                host == "mastodon.social" || host == "fosstodon.org",
                "{host}"
            );
            let t = s.to_post(Some(host), Some(at));
            assert_eq!(t.platform, Platform::Mastodon);
            assert_eq!(t.id, post_id(s));
            assert!(t.id.starts_with("https://"), "{}", t.id);
            assert!(t.url.as_deref().unwrap().starts_with("https://"));
            assert!(t.author_username.as_deref().unwrap().contains('@'));
            assert!(!t.text.is_empty() && !t.text.contains('<'), "{}", t.text);
            assert!(t.created_at.is_some() && t.author_created_at.is_some());
            assert_eq!(t.received_at, Some(at));
            assert!(!t.is_retweet && t.referenced_text.is_none());
        }
        let tweets: Vec<Post> = all.iter().map(|(s, h)| s.to_post(Some(h), None)).collect();
        assert_eq!(tweets.iter().filter(|t| t.is_reply).count(), 8);
        assert_eq!(tweets.iter().filter(|t| t.source.is_some()).count(), 14);
        assert_eq!(all.iter().filter(|(s, _)| s.edited_at.is_some()).count(), 1);
    }

    #[test]
    fn a_shortened_link_is_given_in_full() {
        let t = tweet("/users/Michael/statuses/114870361736604310");
        assert_eq!(
            t.text,
            "Natüürlich.\n\n\"The UK and Germany have agreed a plan to create a new, direct rail \
             link between London and Berlin as part of a wide-ranging treaty.\"\n\n\
             https://www.bbc.com/news/articles/cq6m10g7e35o"
        );
        assert_eq!(t.urls, ["https://www.bbc.com/news/articles/cq6m10g7e35o"]);
        assert_eq!(
            t.author_username.as_deref(),
            Some("Michael@weatherby2378.social")
        );
        assert_eq!(t.author_name.as_deref(), Some("Michael 🐸"));
        assert_eq!(t.author_followers, Some(265));
        assert_eq!(
            t.url.as_deref(),
            Some("https://weatherby2378.social/@Michael/114870361736604310")
        );
        assert_eq!(t.lang.as_deref(), Some("de"));
        assert_eq!((t.source, t.is_reply), (None, false));
        assert_eq!(
            (t.retweet_count, t.reply_count, t.like_count),
            (Some(0), Some(0), Some(0))
        );
    }

    #[test]
    fn mentions_hashtags_entities_and_line_breaks() {
        let t = tweet("/users/MirrorAyako/statuses/114870362340240424");
        assert_eq!(
            t.text,
            "7/17: Starting at 8PM Eastern, we live toot Star Trek episodes playing on the H&I \
             network, using the hashtag #AllStarTrek. If you don’t get the H&I station, you can \
             also stream. Join our group @allstartrek for updates!\n\n\
             The Voyager crew’s very bad 1990s fashion! 😱\n\n\
             TOS (8ET): The Apple\nTNG (9ET): Rascals\nDS9 (10 ET): The Emperor’s New Cloak\n\
             VOY (11 ET): Future’s End, Part 1\nENT (midnight): Impulse\n\n\
             #StarTrek\n#StarTrekTOS\n#StarTrekTNG\n#TNG\n#StarTrekDS9\n#DS9\n#StarTrekVoyager\n\
             #StarTrekVOY\n#StarTrekEnterprise\n#Enterprise"
        );
        assert_eq!(t.mentions, ["allstartrek@a.gup.pe"]);
        assert_eq!(t.hashtags.len(), 11);
        assert_eq!(t.hashtags[..2], ["allstartrek", "startrek"]);
        // Mention and hashtag links are not urls.
        assert!(t.urls.is_empty(), "{:?}", t.urls);
    }

    #[test]
    fn a_mention_missing_from_mentions_still_reads_as_text() {
        // A bridged post: the anchor is there, Mastodon's `mentions` is empty.
        let t = tweet("/users/MLS/statuses/1945936961954259215");
        assert_eq!(
            t.text,
            "Two goals in a dominating win over Miami. 💪\n\nEvander is your Player of the \
             Matchday pres. by @MichelobULTRA@twitter.com."
        );
        assert!(t.mentions.is_empty() && t.urls.is_empty());
        assert_eq!(t.author_username.as_deref(), Some("MLS@sportsbots.xyz"));
    }

    #[test]
    fn a_flipboard_link_keeps_its_query_and_loses_the_trailing_space() {
        let t = tweet("/users/mensjournal/statuses/JAZ_QlVUS8O1aKOD_Jwl5w:a:51790777");
        let link = "https://www.mensfitness.com/training/10-everyday-objects-double-workout-\
                    equipment?utm_source=flipboard&utm_medium=activitypub";
        assert_eq!(
            t.text,
            format!(
                "These 10 Everyday Household Objects Double as Gym Equipment and Wreck Your \
                 Muscles More Than Most Machines, Trainer Says\n{link}\n\n\
                 Posted into Men's Fitness @men-s-fitness-mensjournal"
            )
        );
        assert_eq!(t.urls, [link]);
        assert_eq!(t.mentions, ["men-s-fitness-mensjournal@flipboard.com"]);
    }

    #[test]
    fn apostrophe_and_quote_entities_and_self_closing_br() {
        let t = tweet("/users/homeassistant/statuses/114870351808858875");
        assert!(
            t.text.starts_with(
                "✨ What's new in Home Assistant? ✨\n2025.7 was filled with so many good things \
                 we're bringing you 3 feature highlight videos this month! 🎉\n\n\
                 Here's Chapter 1 - Assist asks the questions!\n\n"
            ),
            "{}",
            t.text
        );
        assert!(t.text.ends_with("#Release #SmartHome #HomeAutomation"));
        assert_eq!(
            t.author_username.as_deref(),
            Some("homeassistant@fosstodon.org")
        );
        assert_eq!(
            t.urls,
            ["https://www.home-assistant.io/blog/2025/07/02/release-20257/"]
        );
        let t = tweet("/users/MisterHW/statuses/114870341462245939");
        assert!(
            t.text
                .contains("\n\n\"For Muting and Switching Applications\"\n\n"),
            "{}",
            t.text
        );
    }

    #[test]
    fn a_card_already_linked_is_not_repeated() {
        let t = tweet("/users/greekhub/statuses/114870361529639936");
        let link = "https://greekhub.org/i-twitch-dokimazei-katheta-vinteo-rois/";
        assert_eq!(
            t.text,
            format!("Η Twitch δοκιμάζει κάθετα βίντεο ροής {link}  #GreekHub")
        );
        assert_eq!(t.urls, [link]);
        assert_eq!(t.hashtags, ["greekhub"]);
        // &amp; in an href is decoded too.
        let t = tweet("/users/PaulusMc70/statuses/114870361608797259");
        assert_eq!(
            t.urls,
            [
                "https://open.substack.com/pub/decodingfoxnews/p/a-comprehensive-list-of-every-\
              woman?utm_campaign=post&utm_medium=web"
            ]
        );
    }

    #[test]
    fn a_card_not_in_the_content_is_added_and_a_quote_link_kept() {
        let mut v = raw_status("/post/18092086090572424/");
        assert_eq!(
            html_to_text(v["content"].as_str().unwrap()),
            "This is just ridiculous! Everyone needs a GOP free body!\n\n\
             RE: https://www.threads.com/@lgbtqnation/post/DMNbXLmsMJA"
        );
        v["card"] = serde_json::json!({"url": "https://example.org/card", "title": "t"});
        let t = status(&v).to_post(None, None);
        assert_eq!(
            t.urls,
            [
                "https://www.threads.com/@lgbtqnation/post/DMNbXLmsMJA",
                "https://example.org/card"
            ]
        );
    }

    #[test]
    fn local_accounts_take_their_host_from_the_profile_url_else_the_instance() {
        let t = tweet("/users/dneaves/statuses/114870356175589097");
        assert_eq!(t.author_username.as_deref(), Some("dneaves@fosstodon.org"));
        assert_eq!(t.source.as_deref(), Some("Buffer"));
        let mut v = raw_status("/users/dneaves/statuses/114870356175589097");
        v["account"]["url"] = serde_json::Value::Null;
        let s = status(&v);
        let t = s.to_post(Some("https://example.social/"), None);
        assert_eq!(t.author_username.as_deref(), Some("dneaves@example.social"));
        let t = s.to_post(Some("example.social"), None);
        assert_eq!(t.author_username.as_deref(), Some("dneaves@example.social"));
    }

    #[test]
    fn an_instance_with_a_non_ascii_name_is_named_by_its_ascii_form() {
        // url's IDNA back end (idna_adapter, pinned in the workspace) maps it as UTS 46 says.
        assert_eq!(
            instance_host("https://Bücher.social/"),
            "xn--bcher-kva.social"
        );
        assert_eq!(
            url_host("https://ÉCOLE.example/users/a").as_deref(),
            Some("xn--cole-9oa.example")
        );
    }

    #[test]
    fn sensitive_reply_and_content_warning() {
        let t = tweet("/users/ARETINO/statuses/114870361658420280");
        assert_eq!(t.possibly_sensitive, Some(true));
        let t = tweet("/users/Deglassco/statuses/114870361818376588");
        assert!(t.is_reply);
        // The parent, as the server it was read from numbers it (what a reply resolves).
        let parent = t.reply_parent.as_ref().unwrap();
        assert!(!parent.id.is_empty() && parent.id.bytes().all(|b| b.is_ascii_digit()));
        assert!(parent.instance.is_some(), "{parent:?}");
        // Read from no named server, the parent names none: its status's own host is never
        // asked (a status can point it anywhere).
        let (s, _) = statuses()
            .into_iter()
            .find(|(s, _)| {
                s.uri
                    .ends_with("/users/Deglassco/statuses/114870361818376588")
            })
            .unwrap();
        let alone = s.to_post(None, None);
        assert_eq!(alone.reply_parent.as_ref().unwrap().instance, None);
        // Real data: narrow no-break spaces (U+202F) in the date.
        assert!(
            t.text
                .ends_with("Accessed July\u{202f}12,\u{202f}2025.\n\n19/20"),
            "{}",
            t.text
        );
        let mut v = raw_status("/users/dneaves/statuses/114870356175589097");
        v["spoiler_text"] = "food, soda".into();
        let t = status(&v).to_post(None, None);
        assert_eq!(
            t.text,
            "food, soda\n\nDo we think I'll die if I drink the thicc coke?"
        );
    }

    #[test]
    fn a_boost_maps_like_a_retweet() {
        let boosted = raw_status("/users/Michael/statuses/114870361736604310");
        let mut v = raw_status("/users/dneaves/statuses/114870356175589097");
        v["uri"] = "https://fosstodon.org/users/dneaves/statuses/1/activity".into();
        v["url"] = serde_json::Value::Null;
        v["content"] = "".into();
        v["language"] = serde_json::Value::Null;
        v["reblog"] = boosted;
        let t = status(&v).to_post(Some("fosstodon.org"), None);
        let said = "Natüürlich.\n\n\"The UK and Germany have agreed a plan to create a new, \
                    direct rail link between London and Berlin as part of a wide-ranging \
                    treaty.\"\n\nhttps://www.bbc.com/news/articles/cq6m10g7e35o";
        assert!(t.is_retweet);
        assert_eq!(t.text, format!("RT @Michael@weatherby2378.social: {said}"));
        assert_eq!(t.referenced_text.as_deref(), Some(said));
        assert_eq!(
            t.id,
            "https://fosstodon.org/users/dneaves/statuses/1/activity"
        );
        assert_eq!(t.url.as_deref(), Some(t.id.as_str()));
        assert_eq!(t.author_username.as_deref(), Some("dneaves@fosstodon.org"));
        assert_eq!(t.urls, ["https://www.bbc.com/news/articles/cq6m10g7e35o"]);
        assert_eq!(t.lang.as_deref(), Some("de"));
    }

    #[test]
    fn streaming_forms() {
        let v = raw_status("/users/Michael/statuses/114870361736604310");
        // WebSocket / SSE: the payload is the Status as a JSON string.
        let line = serde_json::json!({
            "stream": ["public"], "event": "update", "payload": v.to_string()
        });
        let (e, instance) = parse_line(line.to_string().as_bytes()).unwrap();
        let Event::Update(s) = e else { panic!("{e:?}") };
        assert_eq!(s.id, "114870361973436726");
        assert_eq!(instance, None);
        // An edit, with the payload as an object and the instance named.
        let line = serde_json::json!({
            "event": "status.update", "payload": v, "instance": "mastodon.social"
        });
        let (e, instance) = parse_line(line.to_string().as_bytes()).unwrap();
        assert!(matches!(e, Event::StatusUpdate(s) if s.uri.ends_with("114870361736604310")));
        assert_eq!(instance.as_deref(), Some("mastodon.social"));
        // A delete carries the bare id.
        let (e, _) = parse_line(br#"{"event":"delete","payload":"114870361973436726"}"#).unwrap();
        assert!(matches!(e, Event::Delete(id) if id == "114870361973436726"));
        let (e, _) = parse_line(br#"{"event":"delete","payload":42}"#).unwrap();
        assert!(matches!(e, Event::Delete(id) if id == "42"));
        // Other events are told apart, whatever they carry.
        for (line, name) in [
            (
                r#"{"event":"notification","payload":"{\"id\":\"1\"}"}"#,
                "notification",
            ),
            (r#"{"event":"filters_changed"}"#, "filters_changed"),
            (
                r#"{"event":"announcement","payload":{"id":"3"}}"#,
                "announcement",
            ),
        ] {
            let (e, _) = parse_line(line.as_bytes()).unwrap();
            assert!(matches!(&e, Event::Other(n) if n == name), "{e:?}");
        }
    }

    #[test]
    fn bad_lines_name_their_json_path() {
        let mut v = raw_status("/users/Michael/statuses/114870361736604310");
        v["created_at"] = "yesterday".into();
        let recorded = serde_json::json!({"instance": "https://mastodon.social", "status": v});
        let e = parse_line(recorded.to_string().as_bytes()).unwrap_err();
        assert_eq!(e.path, "status.created_at");
        let streamed = serde_json::json!({"event": "update", "payload": v.to_string()});
        let e = parse_line(streamed.to_string().as_bytes()).unwrap_err();
        assert_eq!(e.path, "payload.created_at");
        v["created_at"] = "2025-07-17T20:03:39.000Z".into();
        v["tags"] = serde_json::json!([{"name": 7}]);
        let e = parse_line(serde_json::json!({"status": v}).to_string().as_bytes()).unwrap_err();
        assert_eq!(e.path, "status.tags[0].name");
        let e = parse_line(br#"{"event":"update"}"#).unwrap_err();
        assert_eq!(e.path, "payload");
        let e = parse_line(br#"{"event":"delete","payload":{"id":"1"}}"#).unwrap_err();
        assert_eq!(e.path, "payload");
        let e = parse_line(br#"{"event":"update","payload":"{not json"}"#).unwrap_err();
        assert_eq!(e.path, "payload");
        let e = parse_line(br#"{"instance":"x"}"#).unwrap_err();
        assert_eq!(e.path, ".");
        let e = parse_line(b"event: update").unwrap_err();
        assert_eq!(e.path, ".");
        let e = parse_line(br#"{"event":5}"#).unwrap_err();
        assert_eq!(e.path, "event");
    }

    #[test]
    fn nulls_and_missing_fields_take_defaults() {
        let line = br#"{"status":{"id":"1","uri":"https://a.example/s/1","created_at":"2025-01-01T00:00:00Z",
            "content":null,"spoiler_text":null,"tags":null,"account":{"acct":"me","display_name":null,
            "followers_count":-1}}}"#;
        let (Event::Update(s), None) = parse_line(line).unwrap() else {
            panic!()
        };
        let t = s.to_post(None, None);
        assert_eq!((t.text.as_str(), t.author_name), ("", None));
        assert_eq!(t.author_username.as_deref(), Some("me"));
        assert_eq!((t.author_followers, t.retweet_count), (None, None));
        assert_eq!(t.url.as_deref(), Some("https://a.example/s/1"));
    }

    #[test]
    fn html_edge_cases() {
        for (html, text) in [
            ("", ""),
            ("plain", "plain"),
            ("<p>a</p><p>b</p>", "a\n\nb"),
            ("<p>a</p>\n<p>b</p>", "a\n\nb"),
            ("a<br>b<br/>c<BR />d", "a\nb\nc\nd"),
            ("a<br><br>b", "a\n\nb"),
            ("<p>a<br></p><p>b</p>", "a\n\nb"),
            ("<ul><li>a</li><li>b</li></ul>", "a\nb"),
            ("<p>a<b", "a<b"),
            ("<p>a <b>bold</b>", "a bold"),
            ("a < b > c", "a < b > c"),
            ("x <", "x <"),
            ("<", "<"),
            ("<a href='x>y'>link", "link"),
            ("<a href=\"x", "<a href=\"x"),
            ("<!-- hidden -->shown<!-- open", "shown"),
            ("AT&T & co", "AT&T & co"),
            ("&amp", "&amp"),
            ("&amp;amp;", "&amp;"),
            ("&lt;p&gt; &quot;q&quot; &apos;a&#39;", "<p> \"q\" 'a'"),
            ("a&nbsp;b", "a\u{a0}b"),
            ("&#65;&#x42;&#X43;", "ABC"),
            (
                "&#; &#x; &#0; &#xD800; &#x110000; &#+65; &#99999999999;",
                "&#; &#x; &#0; &#xD800; &#x110000; &#+65; &#99999999999;",
            ),
            ("&unknown; &é; &", "&unknown; &é; &"),
            ("<p>:blobcat: hi</p>", ":blobcat: hi"),
            (
                "<a href=\"https://x.example/a\" class=\"mention hashtag\">#<span>tag</span></a>",
                "#tag",
            ),
            (
                "<span class=\"h-card\"><a class=\"u-url mention\">@<span>me</span></a></span>",
                "@me",
            ),
            ("<p>  spaced  </p><p> out </p>", "spaced\n\nout"),
        ] {
            assert_eq!(html_to_text(html), text, "{html:?}");
        }
    }

    #[test]
    fn links_skip_mentions_and_hashtags() {
        let html = "<a href=\"https://a.example/?x=1&amp;y=2\">a</a> \
                    <a class=\"mention hashtag\" href=\"https://h/tags/t\">#t</a> \
                    <a href=https://b.example/ rel=nofollow>b</a> \
                    <a rel=\"tag\" href=\"https://h/tags/u\">#u</a> \
                    <a HREF='https://c.example/'>c</a> <a class=\"u-url mention\" href=\"https://h/@m\">@m</a>";
        assert_eq!(
            links(html),
            [
                "https://a.example/?x=1&y=2",
                "https://b.example/",
                "https://c.example/"
            ]
        );
    }

    #[test]
    fn no_prefix_of_real_content_panics() {
        for (s, _) in statuses().iter().take(12) {
            let html = &s.content;
            for (i, _) in html.char_indices() {
                let _ = html_to_text(&html[..i]);
                let _ = html_to_text(&html[i..]);
                let _ = links(&html[..i]);
            }
        }
    }
}
