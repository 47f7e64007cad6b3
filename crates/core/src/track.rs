//! The mission's track terms (`mission.stream.track`) matched client-side, for platforms with
//! no server-side keyword filter (Bluesky's Jetstream, a Mastodon public timeline). The same
//! semantics as the X rules built from them ([`crate::config::Stream::rules`]): terms are
//! OR-ed, the words of one term AND-ed, case-insensitive, whole words; `#jwst` matches the
//! hashtag only, `jwst` the word or the hashtag. No I/O.

use std::collections::HashSet;

#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    terms: Vec<Vec<String>>,
}

impl Track {
    pub fn new(terms: &[String]) -> Track {
        Track {
            terms: terms
                .iter()
                .map(|t| {
                    t.split_whitespace()
                        .map(str::to_lowercase)
                        .collect::<Vec<_>>()
                })
                .filter(|w| !w.is_empty())
                .collect(),
        }
    }

    /// Whether `text` holds every word of at least one term.
    pub fn matches(&self, text: &str) -> bool {
        let words = words(text);
        self.terms
            .iter()
            .any(|t| t.iter().all(|w| words.contains(w.as_str())))
    }

    /// The terms `text` matches, as written (lower-cased), in the order given.
    pub fn matched(&self, text: &str) -> Vec<String> {
        let words = words(text);
        self.terms
            .iter()
            .filter(|t| t.iter().all(|w| words.contains(w.as_str())))
            .map(|t| t.join(" "))
            .collect()
    }
}

/// Lower-cased words of a text; a `#tag` or `@name` yields itself and the bare word.
fn words(text: &str) -> HashSet<String> {
    let lower = text.to_lowercase();
    let mut out = HashSet::new();
    for w in lower.split(|c: char| !(c.is_alphanumeric() || c == '#' || c == '@' || c == '_')) {
        let bare = w.trim_start_matches(['#', '@']);
        if bare.is_empty() {
            continue;
        }
        if bare.len() != w.len() {
            out.insert(format!("{}{bare}", &w[..1]));
        }
        out.insert(bare.to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_terms_matched() {
        let t = Track::new(&["James Webb".into(), "mirror".into(), "#jwst".into()]);
        assert_eq!(
            t.matched("The james WEBB mirror, #JWST!"),
            ["james webb", "mirror", "#jwst"]
        );
        assert!(t.matched("jwst webb").is_empty());
    }

    #[test]
    fn terms_or_words_and_hashtags() {
        let t = Track::new(&["james webb".into(), "#jwst".into(), "hubble".into()]);
        assert!(t.matches("Webb, James: the telescope"));
        assert!(!t.matches("James Bond"));
        assert!(t.matches("look! #JWST"));
        assert!(!t.matches("jwst without the hash"));
        assert!(t.matches("HUBBLE's view")); // `'` splits: "hubble" then "s"
        assert!(!t.matches("hubbles"));
        assert!(Track::new(&["jwst".into()]).matches("#JWST rocks"));
        assert!(!Track::new(&[]).matches("anything"));
    }
}
