//! The seed's 53-column tab-separated records, read so an archive of the Python original can
//! be migrated (columns and value forms in `shared/spec/ingest.md`, `docs/data.md`).
//!
//! Each record is 53 values, each followed by a tab, then a newline; values are Python
//! `str()` renderings (`None`, `True`/`False`), times like `Fri Dec 31 19:58:56 +0000 2021`,
//! lists joined by `|`. Tabs inside a field split a record into more fields: like the seed, a
//! record whose extra fields are all empty is kept; any other field count is an error (the
//! caller quarantines the line). The seed's `retweeted_tweet` flag came from a leading "rt" in
//! the text — the only retweet information such an archive has, so it is kept as `is_retweet`
//! and documented as such.

use chrono::{DateTime, Utc};
use flagship_core::Post;

/// The legacy columns, in order.
pub const COLUMNS: [&str; 53] = [
    "id",
    "geo",
    "coordinates",
    "place",
    "contributors",
    "is_quote_status",
    "quote_count",
    "reply_count",
    "retweet_count",
    "favorite_count",
    "favorited",
    "retweeted",
    "created_at",
    "source",
    "in_reply_to_user_id",
    "in_reply_to_screen_name",
    "source_text",
    "place_id",
    "place_url",
    "place_place_type",
    "place_name",
    "place_full_name",
    "place_country_code",
    "place_country",
    "place_bounding_box_type",
    "place_bounding_box_coordinates",
    "place_attributes",
    "coords_type",
    "coords_lon",
    "coords_lat",
    "geo_type",
    "geo_lon",
    "geo_lat",
    "user_name",
    "user_screen_name",
    "user_followers",
    "user_friends",
    "user_listed",
    "user_favourites",
    "user_statuses",
    "user_protected",
    "user_verified",
    "user_contributors_enabled",
    "user_joined",
    "user_location",
    "retweeted_tweet",
    "tweet_text_urls",
    "tweet_text_hashtags",
    "tweet_text_usernames",
    "num_urls_in_tweet_text",
    "num_users_in_tweet_text",
    "num_hashtags_in_tweet_text",
    "text",
];

/// Why a legacy line is not a record.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LegacyError {
    #[error(
        "{found} tab-separated fields, expected 53 ({})",
        if *found < 53 { "a newline inside a field cut the record" } else { "a tab inside a field split it" }
    )]
    FieldCount { found: usize },
    #[error("field `{field}`: {value:?} is not {expected}")]
    Value {
        field: &'static str,
        value: String,
        expected: &'static str,
    },
}

/// Does this line look like a legacy record (rather than JSON)?
pub fn is_legacy(line: &[u8]) -> bool {
    line.first() != Some(&b'{') && line.contains(&b'\t')
}

fn none(v: &str) -> Option<&str> {
    (!(v.is_empty() || v == "None")).then_some(v)
}

fn col(name: &'static str) -> usize {
    COLUMNS
        .iter()
        .position(|c| *c == name)
        .expect("a legacy column")
}

/// Parses one legacy record (without its newline).
pub fn parse_line(line: &str) -> Result<Post, LegacyError> {
    let mut fields: Vec<&str> = line.split('\t').collect();
    // The trailing tab leaves one empty field; the seed dropped it.
    if fields.last() == Some(&"") {
        fields.pop();
    }
    if fields.len() > 53 && fields[53..].iter().all(|x| x.is_empty()) {
        fields.truncate(53);
    }
    if fields.len() != 53 {
        return Err(LegacyError::FieldCount {
            found: fields.len(),
        });
    }
    let v = |name: &'static str| fields[col(name)];
    let bad = |field, value: &str, expected| LegacyError::Value {
        field,
        value: value.to_owned(),
        expected,
    };
    let int = |name: &'static str| -> Result<Option<u64>, LegacyError> {
        none(v(name))
            .map(|x| {
                x.parse::<u64>()
                    .map_err(|_| bad(name, x, "an integer or None"))
            })
            .transpose()
    };
    let boolean = |name: &'static str| -> Result<Option<bool>, LegacyError> {
        match none(v(name)) {
            None => Ok(None),
            Some("True") => Ok(Some(true)),
            Some("False") => Ok(Some(false)),
            Some(x) => Err(bad(name, x, "True, False or None")),
        }
    };
    let time = |name: &'static str| -> Result<Option<DateTime<Utc>>, LegacyError> {
        none(v(name))
            .map(|x| {
                DateTime::parse_from_str(x, "%a %b %d %H:%M:%S %z %Y")
                    .or_else(|_| DateTime::parse_from_str(x, "%Y-%m-%d %H:%M:%S%:z"))
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| bad(name, x, "a time like `Fri Dec 31 19:58:56 +0000 2021`"))
            })
            .transpose()
    };
    let text_opt = |name: &'static str| none(v(name)).map(str::to_owned);
    let list = |name: &'static str| -> Vec<String> {
        none(v(name))
            .map(|x| {
                x.split('|')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let id = int("id")?.ok_or_else(|| bad("id", v("id"), "a tweet id"))?;
    let in_reply_to_user_id = int("in_reply_to_user_id")?;
    let id = id.to_string();
    Ok(Post {
        platform: flagship_core::Platform::X,
        url: Some(flagship_platforms::x::url(&id, None)),
        id,
        created_at: time("created_at")?,
        text: v("text").to_owned(),
        lang: None,
        source: text_opt("source_text"),
        author_id: None,
        author_username: text_opt("user_screen_name"),
        author_name: text_opt("user_name"),
        author_location: text_opt("user_location"),
        author_verified: boolean("user_verified")?,
        author_followers: int("user_followers")?,
        author_created_at: time("user_joined")?,
        conversation_id: None,
        in_reply_to_user_id,
        is_retweet: boolean("retweeted_tweet")?.unwrap_or(false),
        is_reply: in_reply_to_user_id.is_some(),
        is_quote: boolean("is_quote_status")?.unwrap_or(false),
        retweeted_id: None,
        replied_to_id: None,
        quoted_id: None,
        referenced_text: None,
        hashtags: list("tweet_text_hashtags"),
        mentions: list("tweet_text_usernames"),
        urls: list("tweet_text_urls"),
        retweet_count: int("retweet_count")?,
        reply_count: int("reply_count")?,
        like_count: int("favorite_count")?,
        quote_count: int("quote_count")?,
        possibly_sensitive: None,
        withheld_in: Vec::new(),
        edit_history_ids: Vec::new(),
        place_id: text_opt("place_id"),
        place_full_name: text_opt("place_full_name"),
        place_country_code: text_opt("place_country_code"),
        matching_rules: Vec::new(),
        received_at: None,
        cid: None,
        reply_parent: None,
        reply_root: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as the seed wrote it, with `values` overriding columns by name.
    pub(crate) fn record(values: &[(&str, &str)]) -> String {
        let mut f: Vec<String> = COLUMNS.iter().map(|_| "None".to_owned()).collect();
        for (k, v) in values {
            f[COLUMNS.iter().position(|c| c == k).unwrap()] = (*v).to_owned();
        }
        f.iter().map(|x| format!("{x}\t")).collect()
    }

    #[test]
    fn reads_a_seed_record() {
        let line = record(&[
            ("id", "1476998279540404227"),
            ("created_at", "Fri Dec 31 19:58:56 +0000 2021"),
            ("source_text", "Twitter for iPhone"),
            ("user_screen_name", "astro_fan"),
            ("user_joined", "Tue Mar 03 10:00:00 +0000 2009"),
            ("user_verified", "False"),
            ("user_followers", "120"),
            ("is_quote_status", "True"),
            ("in_reply_to_user_id", "11348282"),
            ("tweet_text_hashtags", "JWST|NASA"),
            ("favorite_count", "4"),
            ("text", "Webb unfolds its sunshield today"),
        ]);
        let t = parse_line(&line).unwrap();
        assert_eq!(t.id, "1476998279540404227");
        assert_eq!(
            t.created_at.unwrap().to_rfc3339(),
            "2021-12-31T19:58:56+00:00"
        );
        assert_eq!(t.source.as_deref(), Some("Twitter for iPhone"));
        assert_eq!(t.author_verified, Some(false));
        assert!(t.is_quote && t.is_reply && !t.is_retweet);
        assert_eq!(t.hashtags, ["JWST", "NASA"]);
        assert_eq!(t.like_count, Some(4));
        assert_eq!(t.text, "Webb unfolds its sunshield today");
    }

    #[test]
    fn split_records_are_errors_naming_the_cause() {
        let ok = record(&[("id", "1"), ("text", "a b c")]);
        // A tab in the location with nothing after it: the seed kept such rows, and so do we.
        let padded = ok.clone() + "\t";
        assert_eq!(parse_line(&padded).unwrap().id, "1");
        let split = record(&[
            ("id", "1"),
            ("user_location", "Paris\tFrance"),
            ("text", "x"),
        ]);
        let e = parse_line(&split).unwrap_err();
        assert_eq!(
            e.to_string(),
            "54 tab-separated fields, expected 53 (a tab inside a field split it)"
        );
        let cut = &ok[..ok.len() / 2];
        assert!(parse_line(cut).unwrap_err().to_string().contains("newline"));
        let e = parse_line(&record(&[("id", "12x")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "field `id`: \"12x\" is not an integer or None"
        );
        let e = parse_line(&record(&[("id", "1"), ("user_verified", "yes")])).unwrap_err();
        assert!(e.to_string().starts_with("field `user_verified`"), "{e}");
    }
}
