//! Why a streaming run ended — `ingest run`, `watch` and the desk's live loop share the words.

use serde::{Deserialize, Serialize};

/// Why a streaming run ended. Printed (and serialised) as the words the commands have always
/// printed: `signal`, `duration`, `max-posts`, `end of input`, `error`, `sink failure`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Stop {
    /// SIGINT / SIGTERM (or the caller's stop future).
    #[serde(rename = "signal")]
    Signal,
    /// The run's `--duration` passed.
    #[serde(rename = "duration")]
    Duration,
    /// `--max-posts` posts were taken.
    #[serde(rename = "max-posts")]
    MaxPosts,
    /// A replay (or a source that can end) had nothing more.
    #[default]
    #[serde(rename = "end of input")]
    EndOfInput,
    /// The source failed for good (the error is reported beside it).
    #[serde(rename = "error")]
    Error,
    /// The sink stopped taking records.
    #[serde(rename = "sink failure")]
    SinkFailure,
}

impl Stop {
    pub fn as_str(self) -> &'static str {
        match self {
            Stop::Signal => "signal",
            Stop::Duration => "duration",
            Stop::MaxPosts => "max-posts",
            Stop::EndOfInput => "end of input",
            Stop::Error => "error",
            Stop::SinkFailure => "sink failure",
        }
    }
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_and_serialised_alike() {
        for s in [
            Stop::Signal,
            Stop::Duration,
            Stop::MaxPosts,
            Stop::EndOfInput,
            Stop::Error,
            Stop::SinkFailure,
        ] {
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{s}\""),
                "{s:?}"
            );
        }
    }
}
