//! Words a support person reads as content: the English function words (articles, pronouns,
//! auxiliaries, prepositions, conjunctions, determiners, fillers) that never explain a post
//! on their own, and the negations that change the word after them ("not working", "doesn't
//! load"). One list, for every explanation the product shows.

/// Negations: shown only with the content word they negate.
pub const NEGATIONS: &[&str] = &[
    "not",
    "no",
    "never",
    "nor",
    "cannot",
    "can't",
    "cant",
    "don't",
    "dont",
    "doesn't",
    "doesnt",
    "didn't",
    "didnt",
    "isn't",
    "isnt",
    "aren't",
    "arent",
    "wasn't",
    "wasnt",
    "weren't",
    "won't",
    "wont",
    "wouldn't",
    "shouldn't",
    "couldn't",
    "haven't",
    "hasn't",
    "hadn't",
    "ain't",
    "nothing",
    "nobody",
    "none",
];

/// Function words (lower case; apostrophes as typed: ' or ’ are both matched).
pub const FUNCTION_WORDS: &[&str] = &[
    "a", "an", "the", "this", "that", "these", "those", "some", "any", "each", "every", "all",
    "both", "either", "neither", "much", "many", "more", "most", "other", "another", "such",
    "what", "which", "who", "whom", "whose", "i", "me", "my", "mine", "myself", "we", "us", "our",
    "ours", "you", "your", "yours", "he", "him", "his", "she", "her", "hers", "it", "its", "they",
    "them", "their", "theirs", "i'm", "im", "i've", "ive", "i'll", "i'd", "you're", "you've",
    "you'll", "he's", "she's", "it's", "we're", "we've", "they're", "they've", "that's", "there's",
    "here's", "what's", "let's", "am", "is", "are", "was", "were", "be", "been", "being", "have",
    "has", "had", "having", "do", "does", "did", "doing", "will", "would", "shall", "should",
    "can", "could", "may", "might", "must", "ought", "gonna", "wanna", "gotta", "of", "in", "on",
    "at", "by", "for", "with", "about", "against", "between", "into", "through", "during",
    "before", "after", "above", "below", "to", "from", "up", "down", "out", "off", "over", "under",
    "again", "further", "then", "once", "here", "there", "when", "where", "why", "how", "and",
    "but", "or", "so", "if", "because", "as", "until", "while", "than", "too", "very", "just",
    "also", "only", "own", "same", "s", "t", "d", "ll", "m", "re", "ve", "y", "rt", "via", "amp",
    "u", "ur", "oh", "ok", "okay", "yes", "yeah", "like", "get", "got", "go", "going", "@user",
];

/// `word` (lower case, punctuation trimmed) with a typographic apostrophe made plain.
fn plain(word: &str) -> std::borrow::Cow<'_, str> {
    if word.contains('’') {
        std::borrow::Cow::Owned(word.replace('’', "'"))
    } else {
        std::borrow::Cow::Borrowed(word)
    }
}

/// Whether `word` (lower case, punctuation trimmed) is a negation.
pub fn is_negation(word: &str) -> bool {
    NEGATIONS.contains(&plain(word).as_ref())
}

/// Whether `word` (lower case, punctuation trimmed) says nothing on its own: a function word,
/// a negation, a number, or a mention (`@someone`: who, not what).
pub fn is_function_word(word: &str) -> bool {
    let w = plain(word);
    FUNCTION_WORDS.contains(&w.as_ref())
        || is_negation(&w)
        || w.starts_with('@')
        || w.chars()
            .all(|c| c.is_ascii_digit() || c.is_ascii_punctuation())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_words_and_negations() {
        for w in [
            "the", "of", "on", "i", "have", "for", "it’s", "@nasa", "2022", "u",
        ] {
            assert!(is_function_word(w), "{w}");
        }
        for w in ["delayed", "broken", "webb", "mirror", "#jwst", "livestream"] {
            assert!(!is_function_word(w), "{w}");
        }
        assert!(is_negation("doesn’t") && is_negation("not") && !is_negation("nothing_else"));
    }
}
