//! Derived features whose rules more than one crate applies: the seed's time-of-day buckets
//! and word-count bins (textproc computes them in its plan, monitoring groups by them).

/// Labels of the time-of-day buckets, in order.
pub const TIME_OF_DAY: [&str; 6] = [
    "Late Night",
    "Early Morning",
    "Morning",
    "Afternoon",
    "Evening",
    "Night",
];

/// The seed's bucket for an hour 0–23: (0, 4] plus 0 → Late Night, (4, 8] → Early Morning, …
pub fn time_of_day(hour: u32) -> Option<&'static str> {
    if hour > 23 {
        return None;
    }
    let i = if hour == 0 {
        0
    } else {
        (hour as usize - 1) / 4
    };
    Some(TIME_OF_DAY[i])
}

/// The seed's word-count bins: 0-5, 6-10, 11-15, 16-20, 20-25 (sic), 26-30, …, 56-60; longer
/// tweets (the seed left them unbinned) get "61+".
pub fn word_bin(words: u32) -> String {
    if words > 60 {
        return "61+".into();
    }
    let i = if words == 0 { 0 } else { (words - 1) / 5 };
    match i {
        0 => "0-5".into(),
        4 => "20-25".into(),
        i => format!("{}-{}", i * 5 + 1, i * 5 + 5),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_of_day_is_right_closed_with_lowest_edge() {
        let got: Vec<_> = (0..24).map(|h| time_of_day(h).unwrap()).collect();
        assert_eq!(&got[0..5], ["Late Night"; 5]);
        assert_eq!(&got[5..9], ["Early Morning"; 4]);
        assert_eq!(got[12], "Morning");
        assert_eq!(got[13], "Afternoon");
        assert_eq!(got[20], "Evening");
        assert_eq!(&got[21..24], ["Night"; 3]);
        assert_eq!(time_of_day(24), None);
    }

    #[test]
    fn word_bins_keep_the_seed_labels() {
        let b = |n| word_bin(n);
        assert_eq!(
            [b(0), b(5), b(6), b(10), b(11)],
            ["0-5", "0-5", "6-10", "6-10", "11-15"]
        );
        assert_eq!(
            [b(20), b(21), b(25), b(26)],
            ["16-20", "20-25", "20-25", "26-30"]
        );
        assert_eq!([b(60), b(61), b(300)], ["56-60", "61+", "61+"]);
        let distinct: std::collections::BTreeSet<_> = (0..=60).map(b).collect();
        assert_eq!(distinct.len(), 12);
    }
}
