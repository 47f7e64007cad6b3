//! HTML and its entities, read tolerantly: the one decoder every platform's text goes through.
//!
//! Mastodon sends a status's content as HTML ([`html_to_text`] turns it into plain text and
//! [`links`] finds its links); X escapes `&`, `<` and `>` in a tweet's `text`
//! ([`crate::display_text`] undoes that with [`decode_entities`] for people). A small
//! hand-written tokenizer: malformed HTML never panics, a stray `<` or `&` stays as written.

use std::borrow::Cow;

/// Mastodon's content HTML as plain text: paragraphs apart by a blank line, `<br>` a line
/// break, links as their full text (Mastodon hides parts of long URLs in `invisible` spans:
/// all spans are kept, no `…` added), mentions `@user`, hashtags `#tag`, entities decoded,
/// every other tag dropped, the result trimmed. Malformed HTML never panics: a stray `<` or
/// `&` stays as written.
pub fn html_to_text(html: &str) -> String {
    let mut out = TextOut::default();
    for piece in Pieces(html) {
        match piece {
            Piece::Text(t) => out.push(&decode_entities(t)),
            Piece::Open { name, .. } => out.pause(opening_break(&name)),
            Piece::Close(name) => out.pause(closing_break(&name)),
        }
    }
    out.out.trim().to_owned()
}

/// How many line breaks a tag stands for: at least `Min(n)`, or `Add(n)` more.
#[derive(Clone, Copy)]
enum Break {
    None,
    Min(usize),
    Add(usize),
}

/// Elements that stand apart as paragraphs (the first is all Mastodon writes itself).
fn is_block(name: &str) -> bool {
    matches!(
        name,
        "p" | "div" | "blockquote" | "pre" | "ul" | "ol" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6"
    )
}

fn opening_break(name: &str) -> Break {
    match name {
        "br" => Break::Add(1),
        "li" => Break::Min(1),
        n if is_block(n) => Break::Min(2),
        _ => Break::None,
    }
}

fn closing_break(name: &str) -> Break {
    match name {
        "li" => Break::Min(1),
        n if is_block(n) => Break::Min(2),
        _ => Break::None,
    }
}

/// The text being written, with the line breaks still owed before the next text.
#[derive(Default)]
struct TextOut {
    out: String,
    breaks: usize,
}

impl TextOut {
    fn pause(&mut self, b: Break) {
        self.breaks = match b {
            Break::None => self.breaks,
            Break::Min(n) => self.breaks.max(n),
            Break::Add(n) => self.breaks + n,
        };
    }

    /// Writes text; blank text at a line break (the whitespace between blocks) is dropped,
    /// as are the spaces either side of a break.
    fn push(&mut self, text: &str) {
        let blank = text.chars().all(|c| matches!(c, ' ' | '\t' | '\n' | '\r'));
        if blank && (self.breaks > 0 || self.out.is_empty()) {
            return;
        }
        if self.breaks > 0 && !self.out.is_empty() {
            self.out
                .truncate(self.out.trim_end_matches([' ', '\t']).len());
            self.out.extend(std::iter::repeat_n('\n', self.breaks));
            self.out.push_str(text.trim_start_matches([' ', '\t']));
        } else {
            self.out.push_str(text);
        }
        self.breaks = 0;
    }
}

/// Decodes `&amp; &lt; &gt; &quot; &apos; &nbsp;` and `&#NNN; &#xHH;`; anything else after
/// a `&` (an unknown name, no `;`, an invalid code point) stays as written.
pub fn decode_entities(text: &str) -> Cow<'_, str> {
    if !text.contains('&') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        match entity(rest) {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// The character an entity at the start of `s` (which starts with `&`) stands for, and the
/// entity's length in bytes.
fn entity(s: &str) -> Option<(char, usize)> {
    let semi = s.bytes().take(12).position(|b| b == b';')?;
    let c = match &s[1..semi] {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => '\u{a0}',
        name => numeric_entity(name.strip_prefix('#')?)?,
    };
    Some((c, semi + 1))
}

/// `NNN` or `xHH` (after `&#`); NUL and non-characters (surrogates, > U+10FFFF) are invalid.
fn numeric_entity(code: &str) -> Option<char> {
    let (digits, radix) = match code.strip_prefix(['x', 'X']) {
        Some(hex) => (hex, 16),
        None => (code, 10),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let n = u32::from_str_radix(digits, radix).ok()?;
    char::from_u32(n).filter(|&c| c != '\0')
}

/// A text as collected by tools that escaped it (TweetEval's files): each written-out
/// `\uXXXX` escape — six characters, a surrogate pair as one character — turned back into
/// its character (nothing else after a backslash changes), then HTML character references
/// decoded until none is left (`&amp;amp;` → `&amp;` → `&`). What a person typed, as the live
/// platforms give it. The same rules as `scripts/make_demo.py`'s `unescape`; the named
/// references are [`decode_entities`]'s (the ones tweets hold).
pub fn unescape_collected(text: &str) -> Cow<'_, str> {
    if !text.contains('&') && !text.contains("\\u") {
        return Cow::Borrowed(text);
    }
    let mut out = unescape_u(text);
    loop {
        let next = decode_entities(&out).into_owned();
        if next == out {
            return Cow::Owned(out);
        }
        out = next;
    }
}

/// Written-out `\uXXXX` escapes back into characters (a high and a low surrogate written
/// one after the other: the one character they encode; a lone surrogate stays as written).
fn unescape_u(text: &str) -> String {
    let hex = |s: &str| -> Option<u32> {
        let h = s.get(2..6)?;
        (s.starts_with("\\u") && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| u32::from_str_radix(h, 16).ok())
            .flatten()
    };
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("\\u") {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let Some(first) = hex(rest) else {
            out.push_str("\\u");
            rest = &rest[2..];
            continue;
        };
        if (0xD800..0xDC00).contains(&first)
            && let Some(second) = hex(&rest[6..]).filter(|s| (0xDC00..0xE000).contains(s))
            && let Some(c) = char::from_u32(0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00))
        {
            out.push(c);
            rest = &rest[12..];
            continue;
        }
        match char::from_u32(first).filter(|&c| c != '\0') {
            Some(c) => {
                out.push(c);
                rest = &rest[6..];
            }
            None => {
                out.push_str("\\u");
                rest = &rest[2..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The `href`s of the content's links that are not mentions or hashtags (Mastodon marks
/// those with the classes `mention`, `hashtag`, `u-url`, or `rel="tag"`).
pub fn links(html: &str) -> Vec<String> {
    Pieces(html)
        .filter_map(|p| match p {
            Piece::Open { name, attrs } if name == "a" => Some(attrs),
            _ => None,
        })
        .filter(|attrs| !is_mention_or_tag(attrs))
        .filter_map(|attrs| attribute(attrs, "href"))
        .collect()
}

fn is_mention_or_tag(attrs: &str) -> bool {
    let class = attribute(attrs, "class").unwrap_or_default();
    let rel = attribute(attrs, "rel").unwrap_or_default();
    class
        .split_ascii_whitespace()
        .any(|c| matches!(c, "mention" | "hashtag" | "u-url"))
        || rel.split_ascii_whitespace().any(|r| r == "tag")
}

/// A piece of HTML: text between tags, or a tag (name in lower case).
#[derive(Debug, PartialEq)]
enum Piece<'a> {
    Text(&'a str),
    Open { name: String, attrs: &'a str },
    Close(String),
}

/// The pieces of an HTML fragment, in order. Comments are skipped; a `<` that does not
/// start a tag (or a tag never closed by `>`) is text.
struct Pieces<'a>(&'a str);

impl<'a> Iterator for Pieces<'a> {
    type Item = Piece<'a>;

    fn next(&mut self) -> Option<Piece<'a>> {
        loop {
            let rest = self.0;
            if rest.is_empty() {
                return None;
            }
            if let Some(after) = rest.strip_prefix("<!--") {
                self.0 = after.find("-->").map_or("", |end| &after[end + 3..]);
                continue;
            }
            if let Some(end) = tag_end(rest) {
                self.0 = &rest[end + 1..];
                return Some(tag(&rest[1..end]));
            }
            // Text runs to the next `<` (a first `<` that starts no tag is text too).
            let len = match rest.find('<') {
                Some(0) => rest[1..].find('<').map_or(rest.len(), |i| i + 1),
                Some(i) => i,
                None => rest.len(),
            };
            self.0 = &rest[len..];
            return Some(Piece::Text(&rest[..len]));
        }
    }
}

/// Where the tag at the start of `s` ends (its `>`), if `s` starts with one: `<` then a
/// letter, `/` or `!`. A `>` inside a quoted attribute value does not end it (unless the
/// quote is never closed).
fn tag_end(s: &str) -> Option<usize> {
    let first = s.strip_prefix('<')?.chars().next()?;
    if !(first.is_ascii_alphabetic() || first == '/' || first == '!') {
        return None;
    }
    let mut quote = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '>') => return Some(i),
            _ => {}
        }
    }
    s.find('>')
}

/// A tag from what is between `<` and `>`.
fn tag(inner: &str) -> Piece<'_> {
    let (closing, inner) = match inner.strip_prefix('/') {
        Some(rest) => (true, rest),
        None => (false, inner),
    };
    let len = inner
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(inner.len());
    let name = inner[..len].to_ascii_lowercase();
    if closing {
        Piece::Close(name)
    } else {
        Piece::Open {
            name,
            attrs: &inner[len..],
        }
    }
}

/// The value of an attribute (entities decoded), from a tag's attribute text.
fn attribute(attrs: &str, wanted: &str) -> Option<String> {
    let mut rest = attrs;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '/');
        if rest.is_empty() {
            return None;
        }
        let name_len = rest
            .find(|c: char| c.is_whitespace() || c == '=' || c == '/')
            .unwrap_or(rest.len())
            .max(rest.chars().next().map_or(0, char::len_utf8));
        let name = &rest[..name_len];
        rest = rest[name_len..].trim_start();
        let mut value = "";
        if let Some(after) = rest.strip_prefix('=') {
            (value, rest) = attribute_value(after.trim_start());
        }
        if name.eq_ignore_ascii_case(wanted) {
            return Some(decode_entities(value).into_owned());
        }
    }
}

/// A quoted or bare attribute value at the start of `s`, and what follows it.
fn attribute_value(s: &str) -> (&str, &str) {
    if let Some(q) = s.chars().next().filter(|c| matches!(c, '"' | '\'')) {
        let body = &s[1..];
        return match body.find(q) {
            Some(end) => (&body[..end], &body[end + 1..]),
            None => (body, ""),
        };
    }
    let end = s.find(char::is_whitespace).unwrap_or(s.len());
    (&s[..end], &s[end..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collected_texts_are_unescaped_as_typed() {
        // TweetEval's own rows: a written-out apostrophe, an entity escaped twice.
        assert_eq!(
            unescape_collected(r"Don\u2019t miss it &amp;amp; more"),
            "Don’t miss it & more"
        );
        assert_eq!(unescape_collected(r"a \ud83d\ude80 rocket"), "a 🚀 rocket");
        assert_eq!(unescape_collected("&lt;3 &#039;em &Blue;"), "<3 'em &Blue;");
        // Nothing else after a backslash changes; a lone surrogate or short escape stays.
        assert_eq!(
            unescape_collected(r"C:\users \u12 \ud83d x"),
            r"C:\users \u12 \ud83d x"
        );
        assert!(matches!(unescape_collected("plain text"), Cow::Borrowed(_)));
    }
}
