//! flagship-split: chronological train / validation / test splits, and the label → target map.
//!
//! This foundation holds the two rules every split obeys: rows are ordered by time (then id,
//! so ties are stable) and the last `test_size` rows are test, the `val_size` before them
//! validation, the rest train — no later tweet ever lands in an earlier split; and labels
//! 0 / 1 / 2 (negative / neutral / positive) map to `need_support` = label ∈ {0, 1}. Reading
//! labels files, the `batch` column and the labeling export land with the split issue. It
//! reads processed rows and labels; it never edits a label.

use chrono::{DateTime, Utc};

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum SplitError {
    #[error("label {label} of tweet {id} is not 0 (negative), 1 (neutral) or 2 (positive)")]
    BadLabel { id: u64, label: i64 },
    #[error(
        "{rows} rows cannot fill test ({test}) and validation ({val}) and leave any for training"
    )]
    TooFewRows {
        rows: usize,
        test: usize,
        val: usize,
    },
}

/// The target: does a tweet with this hand label need a reply from support?
pub fn need_support(id: u64, label: i64) -> Result<bool, SplitError> {
    match label {
        0 | 1 => Ok(true),
        2 => Ok(false),
        _ => Err(SplitError::BadLabel { id, label }),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Train,
    Val,
    Test,
}

impl Part {
    pub fn name(self) -> &'static str {
        match self {
            Part::Train => "train",
            Part::Val => "val",
            Part::Test => "test",
        }
    }
}

/// Assigns each `(created_at, id)` row its part. The result is in input order.
pub fn chronological(
    rows: &[(DateTime<Utc>, u64)],
    test_size: usize,
    val_size: usize,
) -> Result<Vec<Part>, SplitError> {
    let n = rows.len();
    if n <= test_size + val_size {
        return Err(SplitError::TooFewRows {
            rows: n,
            test: test_size,
            val: val_size,
        });
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| rows[i]);
    let mut parts = vec![Part::Train; n];
    for (rank, &i) in order.iter().enumerate() {
        parts[i] = if rank >= n - test_size {
            Part::Test
        } else if rank >= n - test_size - val_size {
            Part::Val
        } else {
            Part::Train
        };
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn labels_map_to_need_support() {
        assert_eq!(need_support(1, 0), Ok(true));
        assert_eq!(need_support(1, 1), Ok(true));
        assert_eq!(need_support(1, 2), Ok(false));
        let e = need_support(42, 3).unwrap_err();
        assert_eq!(
            e.to_string(),
            "label 3 of tweet 42 is not 0 (negative), 1 (neutral) or 2 (positive)"
        );
    }

    #[test]
    fn no_later_tweet_in_an_earlier_split() {
        // Shuffled times, with ties broken by id.
        let t0 = Utc.with_ymd_and_hms(2021, 12, 30, 17, 0, 0).unwrap();
        let rows: Vec<(DateTime<Utc>, u64)> = (0..50u64)
            .map(|i| {
                let k = (i * 37) % 50;
                (t0 + chrono::Duration::minutes((k / 2) as i64), k)
            })
            .collect();
        let parts = chronological(&rows, 10, 5).unwrap();
        let count = |p| parts.iter().filter(|&&x| x == p).count();
        assert_eq!(
            (count(Part::Train), count(Part::Val), count(Part::Test)),
            (35, 5, 10)
        );
        let span = |p| {
            let of_p = || {
                rows.iter()
                    .zip(&parts)
                    .filter(move |(_, x)| **x == p)
                    .map(|(r, _)| *r)
            };
            (of_p().min().unwrap(), of_p().max().unwrap())
        };
        let (train, val, test) = (span(Part::Train), span(Part::Val), span(Part::Test));
        assert!(train.1 < val.0, "train ends before validation starts");
        assert!(val.1 < test.0, "validation ends before test starts");
        assert_eq!(
            chronological(&rows, 40, 10),
            Err(SplitError::TooFewRows {
                rows: 50,
                test: 40,
                val: 10
            })
        );
    }
}
