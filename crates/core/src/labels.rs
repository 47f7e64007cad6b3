//! The hand labels and the target, written once: annotators label a post 0 (negative),
//! 1 (neutral) or 2 (positive); a post **needs support** when its label is 0 or 1.

/// A labelled text, as training and scoring take it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Example {
    pub text: String,
    pub need_support: bool,
    /// The annotators' label (0/1/2) when known: three-class training needs it.
    #[serde(default)]
    pub label: Option<u8>,
}

pub const NEGATIVE: u8 = 0;
pub const NEUTRAL: u8 = 1;
pub const POSITIVE: u8 = 2;

/// What a label means for the support team: `Some(true)` for 0 and 1, `Some(false)` for 2,
/// `None` for anything else (never guessed).
pub fn need_support(label: i64) -> Option<bool> {
    match label {
        0 | 1 => Some(true),
        2 => Some(false),
        _ => None,
    }
}

/// A label as written in a file (`"0"`, `" 2 "`): `None` unless it is 0, 1 or 2.
pub fn parse(s: &str) -> Option<u8> {
    match s.trim() {
        "0" => Some(NEGATIVE),
        "1" => Some(NEUTRAL),
        "2" => Some(POSITIVE),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_of_each_label() {
        assert_eq!(need_support(0), Some(true));
        assert_eq!(need_support(1), Some(true));
        assert_eq!(need_support(2), Some(false));
        assert_eq!(need_support(3), None);
        assert_eq!(need_support(-1), None);
        assert_eq!(parse(" 1 "), Some(1));
        assert_eq!(parse("1.0"), None);
        assert_eq!(parse(""), None);
    }
}
