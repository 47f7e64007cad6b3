//! Approved replies: the support team's saved answers, filled in and measured per platform.
//!
//! A reply is a template with two placeholders, `{author}` (the post's author, written
//! `@handle` on every platform: one `@` is put before the handle unless it has one) and
//! `{link}` (a URL, as given); `{{` and `}}` are literal braces. [`placeholders`] checks a
//! template when it is saved; [`render`] fills one in and never leaves a hole: an unknown
//! placeholder, an unclosed `{`, a stray `}` or a missing value is a [`TemplateError`] naming
//! the byte offset of its brace in the template.
//!
//! [`measure`] counts a text as the platform does ([`Length`]):
//! - X: twitter-text v3's weighted length (limit 280) of the NFC-normalised text: code points
//!   in U+0000–10FF, U+2000–200D, U+2010–201F and U+2032–2037 weigh 1, every other one 2
//!   (CJK, `…`), an emoji sequence (skin tone, ZWJ family, flag, keycap) 2 once, a URL 23;
//! - Bluesky: 300 extended grapheme clusters and 3000 UTF-8 bytes; URLs count in full;
//! - Mastodon: the instance's limit (500 by default, [`MASTODON_DEFAULT_LIMIT`]) in grapheme
//!   clusters, as its server's validator counts (`grapheme_length`; not scalar values), an
//!   `http(s)://` URL 23, a remote mention `@user@domain` as its `@user`; a content warning
//!   counts too (measure it joined to the text).
//!
//! URLs are found per word (words end at whitespace, `<`, `>`, `"`), after leading `(`, `[`,
//! quotes; trailing `.,;:!?`, quotes and an unbalanced `)` are not part of them. Found:
//! `http://` / `https://` URLs (any case) whose host has a dot and an alphabetic or `xn--`
//! top-level domain; on X also bare domains (`nasa.gov`, `www.esa.int/webb`) whose TLD is in
//! [`BARE_TLDS`]. Not found: other TLDs bare (`readme.md`), IP hosts, `user@host` (an email,
//! a mention), a URL glued to text before it (`see:https://…`): these count character by
//! character, so on X one shorter than 23 (`ab.md`) is under-counted. The other way, a short
//! ccTLD domain twitter-text leaves alone (`ab.de`) counts 23 here: over, never under.
//! twitter-text's invalid characters (U+FFFE, U+FEFF, U+202A–202E) are counted, not refused.
//!
//! Text passes through as written: nothing is escaped (HTML is the page's job), stripped or
//! truncated. Nothing here does I/O, posts anything or follows a link.

use std::ops::Range;

use flagship_core::Platform;
use unicode_normalization::UnicodeNormalization;
use unicode_segmentation::UnicodeSegmentation;

/// X's limit, in weighted characters (twitter-text v3 `maxWeightedTweetLength`).
pub const X_LIMIT: usize = 280;
/// Bluesky's limit in grapheme clusters (`app.bsky.feed.post` `maxGraphemes`).
pub const BLUESKY_GRAPHEMES: usize = 300;
/// Bluesky's limit in UTF-8 bytes (`app.bsky.feed.post` `maxLength`).
pub const BLUESKY_BYTES: usize = 3000;
/// Mastodon's limit when the instance does not say otherwise.
pub const MASTODON_DEFAULT_LIMIT: usize = 500;
/// What a URL counts on X and Mastodon, whatever its length (`transformedURLLength`).
pub const URL_LENGTH: usize = 23;
/// Top-level domains a bare domain (no `http(s)://`) is a URL with, on X.
pub const BARE_TLDS: &[&str] = &[
    "com", "org", "net", "edu", "gov", "mil", "int", "info", "biz", "io", "co", "ai", "app", "dev",
    "me", "tv", "ly", "gl", "gg", "fm", "social", "space", "news", "blog", "xyz", "online", "site",
    "tech", "science", "uk", "us", "ca", "au", "de", "fr", "es", "it", "nl", "eu", "ch", "se",
    "jp", "in", "br",
];

/// twitter-text v3: weights are in hundredths of a character.
const SCALE: usize = 100;
const LIGHT: [(u32, u32); 4] = [(0, 4351), (8192, 8205), (8208, 8223), (8242, 8247)];

/// A placeholder a reply template may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Placeholder {
    /// `{author}`: the post's author, rendered `@handle`.
    Author,
    /// `{link}`: a URL, rendered as given.
    Link,
}

impl Placeholder {
    /// The name written between the braces: `author`, `link`.
    pub fn name(self) -> &'static str {
        match self {
            Placeholder::Author => "author",
            Placeholder::Link => "link",
        }
    }
}

/// The values a template is filled with. A value that is `None`, blank (or, for the author,
/// only `@`) is missing. Values are trimmed and inserted unescaped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fill<'a> {
    /// The author's handle with or without its `@`: `jack`, `@jack`, `alice.bsky.social`,
    /// `alice@mastodon.social` (rendered `@jack`, `@alice.bsky.social`, `@alice@mastodon.social`).
    pub author: Option<&'a str>,
    /// The link the reply points to.
    pub link: Option<&'a str>,
}

/// Why a template cannot be saved or filled in; `offset` is the byte offset of the brace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{name}` with a name other than `author` or `link` (names are case-sensitive).
    #[error("unknown placeholder `{{{name}}}` at byte {offset} (known: {{author}}, {{link}})")]
    Unknown { name: String, offset: usize },
    /// A `{` with no `}` before the next `{` or the end; `name` is what follows it up to
    /// whitespace.
    #[error("unclosed `{{{name}` at byte {offset} (write `{{{{` for a literal brace)")]
    Unclosed { name: String, offset: usize },
    /// A `}` that closes nothing.
    #[error("stray `}}` at byte {offset} (write `}}}}` for a literal brace)")]
    StrayClose { offset: usize },
    /// A placeholder whose value the [`Fill`] lacks.
    #[error("no value for `{{{}}}` at byte {offset}", .placeholder.name())]
    Missing {
        placeholder: Placeholder,
        offset: usize,
    },
}

enum Piece<'t> {
    Text(&'t str),
    Slot(Placeholder, usize),
}

/// Walks a template, handing each literal piece and placeholder to `each`; stops at the first
/// error, in template order.
fn parse<'t>(
    template: &'t str,
    mut each: impl FnMut(Piece<'t>) -> Result<(), TemplateError>,
) -> Result<(), TemplateError> {
    // Braces are ASCII, never inside a multi-byte character: byte indices are char boundaries.
    let b = template.as_bytes();
    let (mut i, mut from) = (0, 0);
    while i < b.len() {
        match b[i] {
            brace @ (b'{' | b'}') if b.get(i + 1) == Some(&brace) => {
                each(Piece::Text(&template[from..=i]))?;
                i += 2;
                from = i;
            }
            b'{' => {
                let rest = &template[i + 1..];
                let Some(end) = rest
                    .find(['{', '}'])
                    .filter(|&j| rest.as_bytes()[j] == b'}')
                else {
                    let name = rest.split(|c: char| c.is_whitespace() || c == '{').next();
                    let name = name.unwrap_or_default().to_owned();
                    return Err(TemplateError::Unclosed { name, offset: i });
                };
                let placeholder = match &rest[..end] {
                    "author" => Placeholder::Author,
                    "link" => Placeholder::Link,
                    name => {
                        let name = name.to_owned();
                        return Err(TemplateError::Unknown { name, offset: i });
                    }
                };
                each(Piece::Text(&template[from..i]))?;
                each(Piece::Slot(placeholder, i))?;
                i += end + 2;
                from = i;
            }
            b'}' => return Err(TemplateError::StrayClose { offset: i }),
            _ => i += 1,
        }
    }
    each(Piece::Text(&template[from..]))
}

/// The placeholders a template uses, each once, in order of first use; an error for a template
/// that could never render (unknown placeholder, unclosed `{`, stray `}`). For checking a
/// template when it is saved.
pub fn placeholders(template: &str) -> Result<Vec<Placeholder>, TemplateError> {
    let mut found = Vec::new();
    parse(template, |piece| {
        if let Piece::Slot(p, _) = piece
            && !found.contains(&p)
        {
            found.push(p);
        }
        Ok(())
    })?;
    Ok(found)
}

/// The template with its placeholders filled in: `{author}` as `@handle`, `{link}` as given,
/// `{{` / `}}` as `{` / `}`, everything else unchanged (HTML included: escaping is the page's
/// job). Any [`TemplateError`] (the first in template order) means no text at all.
pub fn render(template: &str, fill: &Fill<'_>) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len() + 64);
    parse(template, |piece| {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Slot(placeholder, offset) => {
                let missing = TemplateError::Missing {
                    placeholder,
                    offset,
                };
                let value = match placeholder {
                    Placeholder::Author => fill.author.map(|a| a.trim().trim_start_matches('@')),
                    Placeholder::Link => fill.link.map(str::trim),
                };
                let value = value.filter(|v| !v.is_empty()).ok_or(missing)?;
                if placeholder == Placeholder::Author {
                    out.push('@');
                }
                out.push_str(value);
            }
        }
        Ok(())
    })?;
    Ok(out)
}

/// A text's length as a platform counts it, against the platform's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Length {
    /// X: weighted characters; Bluesky: grapheme clusters; Mastodon: grapheme clusters with
    /// URLs and remote mentions shortened.
    pub used: usize,
    /// The limit `used` is held to.
    pub limit: usize,
    /// The text's UTF-8 length in bytes.
    pub bytes: usize,
    /// A limit on `bytes` where the platform has one besides (Bluesky: 3000).
    pub max_bytes: Option<usize>,
}

impl Length {
    /// Whether the platform takes the text: within the limit (and the byte limit, if any).
    /// An empty text fits; whether it is worth sending is the caller's call.
    pub fn fits(&self) -> bool {
        self.used <= self.limit && self.max_bytes.is_none_or(|max| self.bytes <= max)
    }
}

/// `text`'s length as `platform` counts it (see the module doc); `mastodon_limit` is the
/// instance's limit (its `configuration.statuses.max_characters`), used for Mastodon only.
pub fn measure(platform: Platform, text: &str, mastodon_limit: usize) -> Length {
    let (used, limit, max_bytes) = match platform {
        Platform::X => (x_length(text), X_LIMIT, None),
        Platform::Bluesky => (
            text.graphemes(true).count(),
            BLUESKY_GRAPHEMES,
            Some(BLUESKY_BYTES),
        ),
        Platform::Mastodon => (mastodon_length(text), mastodon_limit, None),
    };
    let bytes = text.len();
    Length {
        used,
        limit,
        bytes,
        max_bytes,
    }
}

fn x_length(text: &str) -> usize {
    let text: String = text.nfc().collect();
    let mut urls = urls(&text, true).into_iter().peekable();
    let (mut weight, mut skip_to) = (0, 0);
    for (at, grapheme) in text.grapheme_indices(true) {
        if at < skip_to {
            continue;
        }
        if let Some(url) = urls.next_if(|u| u.start <= at) {
            weight += URL_LENGTH * SCALE;
            skip_to = url.end;
        } else if is_emoji(grapheme) {
            weight += 2 * SCALE;
        } else {
            weight += grapheme.chars().map(x_weight).sum::<usize>();
        }
    }
    weight / SCALE
}

fn x_weight(c: char) -> usize {
    let c = u32::from(c);
    let light = LIGHT.iter().any(|&(lo, hi)| (lo..=hi).contains(&c));
    if light { SCALE } else { 2 * SCALE }
}

/// An emoji sequence, counted once: a grapheme that starts with a pictograph or regional
/// indicator, or holds an emoji presentation selector or a keycap (`#️⃣`, `©️`).
fn is_emoji(grapheme: &str) -> bool {
    let first = grapheme.chars().next().map_or(0, u32::from);
    matches!(first, 0x1F000..=0x1FAFF | 0x2300..=0x23FF | 0x2600..=0x27BF | 0x2B00..=0x2BFF)
        || grapheme.contains(['\u{FE0F}', '\u{20E3}'])
}

/// Mastodon's count: the text with each URL as 23 characters and each `@user@domain` as
/// `@user` (its validator's rewrite), in grapheme clusters.
fn mastodon_length(text: &str) -> usize {
    const URL_STANDIN: &str = "xxxxxxxxxxxxxxxxxxxxxxx";
    let urls = urls(text, false);
    let mut spans: Vec<(Range<usize>, &str)> =
        urls.iter().map(|url| (url.clone(), URL_STANDIN)).collect();
    for (mention, user_end) in remote_mentions(text) {
        // A mention inside a URL is part of the URL (URLs are sorted and apart).
        let next_url = urls.partition_point(|url| url.end <= mention.start);
        if urls
            .get(next_url)
            .is_none_or(|url| mention.end <= url.start)
        {
            spans.push((mention.start..mention.end, &text[mention.start..user_end]));
        }
    }
    spans.sort_by_key(|(span, _)| span.start);
    let (mut countable, mut at) = (String::with_capacity(text.len()), 0);
    for (span, standin) in spans {
        countable.push_str(&text[at..span.start]);
        countable.push_str(standin);
        at = span.end;
    }
    countable.push_str(&text[at..]);
    countable.graphemes(true).count()
}

/// `@user@domain` mentions (not after a word character, `/` or `@`: not an email), each with
/// where its `@user` ends. Domains are ASCII here: an IDN mention counts in full.
fn remote_mentions(text: &str) -> Vec<(Range<usize>, usize)> {
    let b = text.as_bytes();
    let word = |c: &u8| c.is_ascii_alphanumeric() || *c == b'_';
    let mut found = Vec::new();
    for (at, _) in text.match_indices('@') {
        if at > 0 && (word(&b[at - 1]) || b"!#$%&*@/".contains(&b[at - 1])) {
            continue;
        }
        let user_end = at + 1 + b[at + 1..].iter().take_while(|c| word(c)).count();
        if user_end == at + 1 || b.get(user_end) != Some(&b'@') {
            continue;
        }
        let domain = &b[user_end + 1..];
        let len = domain
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-'))
            .count();
        let len = text[user_end + 1..][..len]
            .trim_end_matches(['.', '-'])
            .len();
        if len > 0 {
            found.push((at..user_end + 1 + len, user_end));
        }
    }
    found
}

/// The byte ranges of the URLs in `text` (see the module doc); bare domains too if `bare`.
fn urls(text: &str, bare: bool) -> Vec<Range<usize>> {
    let mut found = Vec::new();
    let mut word_start = None;
    for (at, c) in text.char_indices().chain([(text.len(), ' ')]) {
        let apart = c.is_whitespace() || matches!(c, '<' | '>' | '"');
        match word_start {
            Some(start) if apart => {
                if let Some(url) = url_in(&text[start..at], bare) {
                    found.push(start + url.start..start + url.end);
                }
                word_start = None;
            }
            None if !apart => word_start = Some(at),
            _ => {}
        }
    }
    found
}

fn url_in(word: &str, bare: bool) -> Option<Range<usize>> {
    const TRAILING: [char; 11] = ['.', ',', ';', ':', '!', '?', '\'', '’', '”', '»', ']'];
    let body = word.trim_start_matches(['(', '[', '\'', '‘', '“', '«']);
    let lead = word.len() - body.len();
    let scheme = ["https://", "http://"]
        .into_iter()
        .find(|s| {
            body.get(..s.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(s))
        })
        .map_or(0, str::len);
    if scheme == 0 && !bare {
        return None;
    }
    // Trailing punctuation is not part of a URL, nor a `)` that closes nothing in it.
    let (mut url, opens) = (body, body.matches('(').count());
    let mut closes = body.matches(')').count();
    loop {
        url = url.trim_end_matches(TRAILING);
        match url.strip_suffix(')') {
            Some(shorter) if opens < closes => (url, closes) = (shorter, closes - 1),
            _ => break,
        }
    }
    let host = url[scheme..].split(['/', '?', '#']).next()?;
    let host = match host.rsplit_once(':') {
        Some((h, port)) if !port.is_empty() && port.bytes().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    valid_host(host, scheme > 0).then(|| lead..lead + url.len())
}

fn valid_host(host: &str, with_scheme: bool) -> bool {
    let labels: Vec<&str> = host.split('.').collect();
    let Some((tld, names)) = labels.split_last() else {
        return false;
    };
    let label = |l: &&str| {
        !l.is_empty()
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars()
                .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
    };
    let tld = tld.to_lowercase();
    let tld_ok = if with_scheme {
        tld.len() >= 2 && (tld.chars().all(char::is_alphabetic) || tld.starts_with("xn--"))
    } else {
        BARE_TLDS.contains(&tld.as_str())
    };
    !names.is_empty() && names.iter().all(label) && tld_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use Platform::{Bluesky, Mastodon, X};

    const FILL: Fill = Fill {
        author: Some("alice.bsky.social"),
        link: Some("https://webb.nasa.gov"),
    };

    fn used(platform: Platform, text: &str) -> usize {
        measure(platform, text, MASTODON_DEFAULT_LIMIT).used
    }

    fn fits(platform: Platform, text: &str) -> bool {
        measure(platform, text, MASTODON_DEFAULT_LIMIT).fits()
    }

    fn counts(platform: Platform, cases: &[(&str, usize)]) {
        for &(text, want) in cases {
            assert_eq!(used(platform, text), want, "{platform:?} {text:?}");
        }
    }

    #[test]
    fn placeholders_are_filled_and_braces_escaped() {
        let text = render("Hi {author}, see {link} {{author}} }}{{", &FILL).unwrap();
        assert_eq!(
            text,
            "Hi @alice.bsky.social, see https://webb.nasa.gov {author} }{"
        );
        for (handle, shown) in [
            (" @jack ", "@jack"),
            ("bob@host.example", "@bob@host.example"),
        ] {
            let author = Some(handle);
            assert_eq!(render("{author}", &Fill { author, ..FILL }).unwrap(), shown);
        }
        let found = placeholders("{link} {author} {link} {{x}}").unwrap();
        assert_eq!(found, [Placeholder::Link, Placeholder::Author]);
        assert_eq!(placeholders("no placeholders"), Ok(vec![]));
        assert_eq!(render("no slots", &Fill::default()).unwrap(), "no slots");
    }

    #[test]
    fn template_errors_name_the_placeholder_and_offset() {
        use TemplateError::{StrayClose, Unclosed, Unknown};
        let unknown = |name: &str, offset| Unknown {
            name: name.into(),
            offset,
        };
        let unclosed = |name: &str, offset| Unclosed {
            name: name.into(),
            offset,
        };
        for (template, want) in [
            ("Hi {foo} {author}", unknown("foo", 3)),
            ("{Author}", unknown("Author", 0)),
            ("Hi {author, thanks", unclosed("author,", 3)),
            ("{link{author}", unclosed("link", 0)),
            ("é}", StrayClose { offset: 2 }),
        ] {
            assert_eq!(placeholders(template).as_ref(), Err(&want));
            assert_eq!(render(template, &FILL), Err(want));
        }
        let unknown = placeholders("Hi {foo}").unwrap_err().to_string();
        assert_eq!(
            unknown,
            "unknown placeholder `{foo}` at byte 3 (known: {author}, {link})"
        );
        let unclosed = placeholders("{link").unwrap_err().to_string();
        assert_eq!(
            unclosed,
            "unclosed `{link` at byte 0 (write `{{` for a literal brace)"
        );
    }

    #[test]
    fn a_missing_value_is_an_error_not_a_hole() {
        let err = render("Thanks {author}! {link}", &Fill { link: None, ..FILL }).unwrap_err();
        let (placeholder, offset) = (Placeholder::Link, 17);
        assert_eq!(
            err,
            TemplateError::Missing {
                placeholder,
                offset
            }
        );
        assert_eq!(err.to_string(), "no value for `{link}` at byte 17");
        for author in [None, Some(""), Some("  "), Some("@")] {
            let err = render("{author}", &Fill { author, ..FILL }).unwrap_err();
            assert_eq!(err.to_string(), "no value for `{author}` at byte 0");
        }
    }

    #[test]
    fn hostile_text_passes_through_unchanged() {
        let template = "<script>alert('x')</script> &amp; <b>{author}</b> {link}";
        let fill = Fill {
            author: Some("<img src=x>"),
            link: Some("javascript:alert(1)"),
        };
        let want = "<script>alert('x')</script> &amp; <b>@<img src=x></b> javascript:alert(1)";
        assert_eq!(render(template, &fill).unwrap(), want);
        counts(X, &[("<script>", 8)]);
        let link = "<a href=\"https://x.com/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\">";
        counts(Mastodon, &[(link, 9 + 23 + 2)]);
    }

    #[test]
    fn x_counts_twitter_text_v3_weights() {
        assert!(fits(X, &"a".repeat(280)) && !fits(X, &"a".repeat(281)));
        assert!(fits(X, &"我".repeat(140)) && !fits(X, &"我".repeat(141)));
        let (used, limit, bytes, max_bytes) = (280, 280, 420, None);
        let cjk = Length {
            used,
            limit,
            bytes,
            max_bytes,
        };
        assert_eq!(measure(X, &"我".repeat(140), 0), cjk);
        counts(
            X,
            &[
                ("こんにちは", 10),
                ("한국어", 6),
                // Cyrillic, Hebrew, Thai and the general-punctuation ranges weigh 1, `…` 2.
                ("Привет שלום สวัสดี — “q” ‘′’", 28),
                ("wait…", 6),
                // NFC first: e + combining acute is é; Hangul jamo compose to one syllable.
                ("e\u{301}", 1),
                ("\u{1100}\u{1161}", 2),
                // An emoji sequence counts 2 once: skin tone, ZWJ family (7 code points), flag…
                ("🐱", 2),
                ("👍🏽", 2),
                ("👨‍👩‍👧‍👦", 2),
                ("🇫🇷", 2),
                ("#️⃣", 2),
                ("H🐱☺👨‍👩‍👧‍👦", 7),
            ],
        );
        assert!(fits(X, &"🚀".repeat(140)) && !fits(X, &"👩🏽‍🚀".repeat(141)));
    }

    #[test]
    fn x_counts_a_url_as_23() {
        let long = format!("https://science.nasa.gov/mission/webb/{}", "a".repeat(300));
        counts(
            X,
            &[
                (&long, 23),
                ("Hi http://test.co", 3 + 23),
                ("HTTPS://ESA.INT:443/Webb?x=1#y", 23),
                (
                    "(see https://en.wikipedia.org/wiki/Webb_(telescope)).",
                    5 + 23 + 2,
                ),
                (
                    "Go to jwst.nasa.gov, or www.esa.int/webb!",
                    6 + 23 + 5 + 23 + 1,
                ),
                // Not URLs: other bare TLDs, emails, mentions, decimals, a URL glued to a word.
                ("readme.md", 9),
                ("bob@nasa.gov", 12),
                ("@bob@mastodon.social", 20),
                ("3.14", 4),
                ("see:https://a.co", 16),
            ],
        );
        let text = format!("{} {long}", "a".repeat(256));
        assert!(used(X, &text) == 280 && fits(X, &text));
    }

    #[test]
    fn bluesky_counts_graphemes_and_bytes() {
        assert!(fits(Bluesky, &"a".repeat(300)) && !fits(Bluesky, &"a".repeat(301)));
        counts(
            Bluesky,
            &[
                ("🇯🇵🇫🇷", 2),
                ("e\u{301}\u{301}", 1), // combining marks stay with their base
                ("👨‍👩‍👧‍👦", 1),
                ("https://webb.nasa.gov", 21), // URLs count in full
            ],
        );
        let flags = measure(Bluesky, &"🇯🇵".repeat(300), 0);
        assert!((flags.used, flags.bytes) == (300, 2400) && flags.fits());
        // 121 families: 121 graphemes, but 25 bytes each: over the 3000-byte limit.
        let families = measure(Bluesky, &"👨‍👩‍👧‍👦".repeat(121), 0);
        assert_eq!(
            (families.used, families.bytes, families.max_bytes),
            (121, 3025, Some(3000))
        );
        assert!(!families.fits());
    }

    #[test]
    fn mastodon_counts_urls_as_23_and_mentions_by_user() {
        assert!(fits(Mastodon, &"a".repeat(500)) && !fits(Mastodon, &"a".repeat(501)));
        assert!(measure(Mastodon, &"a".repeat(501), 5000).fits());
        let long = format!("https://esawebb.org/images/{}", "a".repeat(600));
        assert!(fits(Mastodon, &format!("{} {long}", "a".repeat(476))));
        counts(
            Mastodon,
            &[
                (&long, 23),
                ("esawebb.org", 11), // a bare domain is no link there
                ("@alice@mastodon.social hi", 9),
                ("(@alice@mastodon.social).", 9),
                ("@alice hi", 9),
                ("bob@mastodon.social", 19), // an email, not a mention
                ("https://mastodon.social/@alice@example.org", 23),
                ("👨‍👩‍👧‍👦 é", 3),
            ],
        );
    }
}
