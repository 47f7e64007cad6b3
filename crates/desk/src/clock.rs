//! The first-response clock: how long each post that needs a reply waited for its first
//! answer (a reply sent from the desk, or the post marked done), against the team's target
//! (`desk.first_response`), and a day's figures — first-response p50 / p90, overdue and late
//! posts, per person and per platform — with days in the desk's time zone (`desk.timezone`).
//!
//! It reads only the values passed in ([`Response`]s from the desk's database, `now`); it
//! never reads the clock or a file.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

/// How a post was first answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Answered {
    pub at: DateTime<Utc>,
    /// Who sent the reply, or marked the post done.
    pub who: String,
    /// A reply sent (else: marked done).
    pub replied: bool,
}

/// A post that needed a reply: when it reached the desk, and its first answer if it has one.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub id: String,
    pub platform: String,
    pub arrived: DateTime<Utc>,
    pub answered: Option<Answered>,
    /// Who holds it now, if anyone.
    pub holder: Option<String>,
}

impl Response {
    /// Arrival → first answer.
    pub fn waited(&self) -> Option<Duration> {
        self.answered.as_ref().map(|a| a.at - self.arrived)
    }

    /// Still unanswered at `now`, past the target.
    pub fn overdue(&self, target: Duration, now: DateTime<Utc>) -> bool {
        self.answered.is_none() && now - self.arrived >= target
    }

    /// Answered, after the target.
    pub fn late(&self, target: Duration) -> bool {
        self.waited().is_some_and(|w| w > target)
    }
}

/// First-response figures over a set of posts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    /// Posts that needed a reply, and those answered.
    pub needing: u64,
    pub answered: u64,
    /// Arrival → first answer, in seconds, over the answered posts (nearest rank).
    pub p50_s: Option<f64>,
    pub p90_s: Option<f64>,
    /// Unanswered past the target now; answered after it.
    pub overdue: u64,
    pub late: u64,
}

impl Figures {
    /// The figures of `posts` against `target` at `now`.
    pub fn of<'a>(
        posts: impl IntoIterator<Item = &'a Response>,
        target: Duration,
        now: DateTime<Utc>,
    ) -> Figures {
        let mut f = Figures::default();
        let mut waits = Vec::new();
        for r in posts {
            f.needing += 1;
            if let Some(w) = r.waited() {
                f.answered += 1;
                waits.push(w.num_milliseconds() as f64 / 1000.0);
            }
            f.overdue += u64::from(r.overdue(target, now));
            f.late += u64::from(r.late(target));
        }
        waits.sort_by(f64::total_cmp);
        f.p50_s = percentile(&waits, 0.5);
        f.p90_s = percentile(&waits, 0.9);
        f
    }
}

/// The `q` quantile of sorted `values` by nearest rank (the smallest value with at least
/// `q` of them at or below it); none of nothing.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

/// One day's first-response report: all posts that arrived that day (in the desk's time
/// zone), then the answered ones by who answered them, and all by platform.
#[derive(Debug, Clone, PartialEq)]
pub struct Day {
    pub day: NaiveDate,
    pub all: Figures,
    pub by_person: Vec<(String, Figures)>,
    pub by_platform: Vec<(String, Figures)>,
}

/// The day `t` falls on in `tz`.
pub fn day_of(t: DateTime<Utc>, tz: Tz) -> NaiveDate {
    t.with_timezone(&tz).date_naive()
}

/// The span of `day` in `tz`, as UTC instants `[start, end)` (a day is 23 or 25 hours when
/// the clocks change).
pub fn day_span(day: NaiveDate, tz: Tz) -> (DateTime<Utc>, DateTime<Utc>) {
    let start = |d: NaiveDate| {
        let midnight = d.and_hms_opt(0, 0, 0).expect("midnight");
        tz.from_local_datetime(&midnight)
            .earliest()
            // A zone whose clocks skip midnight: the day starts at the first hour it has.
            .or_else(|| {
                tz.from_local_datetime(&(midnight + Duration::hours(1)))
                    .earliest()
            })
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|| midnight.and_utc())
    };
    let next = day.succ_opt().unwrap_or(day);
    (start(day), start(next))
}

/// The report of `posts` by the day each arrived on in `tz`, oldest day first.
pub fn by_day(posts: &[Response], target: Duration, tz: Tz, now: DateTime<Utc>) -> Vec<Day> {
    let mut days: BTreeMap<NaiveDate, Vec<&Response>> = BTreeMap::new();
    for r in posts {
        days.entry(day_of(r.arrived, tz)).or_default().push(r);
    }
    days.into_iter()
        .map(|(day, rs)| {
            let mut people: BTreeMap<&str, Vec<&Response>> = BTreeMap::new();
            let mut platforms: BTreeMap<&str, Vec<&Response>> = BTreeMap::new();
            for r in &rs {
                if let Some(a) = &r.answered {
                    people.entry(a.who.as_str()).or_default().push(r);
                }
                platforms.entry(r.platform.as_str()).or_default().push(r);
            }
            let figures = |m: BTreeMap<&str, Vec<&Response>>| -> Vec<(String, Figures)> {
                m.into_iter()
                    .map(|(k, v)| (k.to_owned(), Figures::of(v, target, now)))
                    .collect()
            };
            Day {
                day,
                all: Figures::of(rs.iter().copied(), target, now),
                by_person: figures(people),
                by_platform: figures(platforms),
            }
        })
        .collect()
}

/// A duration for people: `45 s`, `12 min`, `3 h 05 min`, `2 d 4 h`.
pub fn human(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as i64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86400 => format!("{} h {:02} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(h: i64, m: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-28T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
            + Duration::hours(h)
            + Duration::minutes(m)
    }

    fn post(
        id: &str,
        platform: &str,
        arrived: DateTime<Utc>,
        answer: Option<(i64, &str)>,
    ) -> Response {
        Response {
            id: id.into(),
            platform: platform.into(),
            arrived,
            answered: answer.map(|(m, who)| Answered {
                at: arrived + Duration::minutes(m),
                who: who.into(),
                replied: true,
            }),
            holder: None,
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(5.0));
        assert_eq!(percentile(&v, 0.9), Some(9.0));
        assert_eq!(percentile(&v[..1], 0.9), Some(1.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn a_day_counts_answers_overdue_and_late_per_person_and_platform() {
        let target = Duration::hours(1);
        let posts = vec![
            post("1", "x", at(9, 0), Some((10, "ana"))),
            post("2", "bluesky", at(9, 5), Some((30, "bo"))),
            post("3", "x", at(9, 10), Some((90, "ana"))), // late
            post("4", "mastodon", at(9, 20), None),       // overdue at 10:30
            post("5", "x", at(10, 15), None),             // not yet overdue at 10:30
        ];
        let now = at(10, 30);
        let days = by_day(&posts, target, Tz::UTC, now);
        assert_eq!(days.len(), 1);
        let d = &days[0].all;
        assert_eq!((d.needing, d.answered, d.overdue, d.late), (5, 3, 1, 1));
        assert_eq!(d.p50_s, Some(30.0 * 60.0));
        assert_eq!(d.p90_s, Some(90.0 * 60.0));
        let ana = &days[0]
            .by_person
            .iter()
            .find(|(p, _)| p == "ana")
            .unwrap()
            .1;
        assert_eq!((ana.answered, ana.late), (2, 1));
        let x = &days[0]
            .by_platform
            .iter()
            .find(|(p, _)| p == "x")
            .unwrap()
            .1;
        assert_eq!((x.needing, x.answered), (3, 2));
    }

    #[test]
    fn days_are_the_desk_time_zones() {
        // 23:30 UTC on 27 March is already the 28th in Berlin (UTC+1 then).
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let late = at(0, 0) - Duration::minutes(30);
        assert_eq!(day_of(late, Tz::UTC).to_string(), "2026-03-27");
        assert_eq!(day_of(late, berlin).to_string(), "2026-03-28");
        // 29 March 2026: Berlin's clocks go forward, the day has 23 hours.
        let (s, e) = day_span(NaiveDate::from_ymd_opt(2026, 3, 29).unwrap(), berlin);
        assert_eq!(e - s, Duration::hours(23));
        let posts = vec![post("1", "x", late, None), post("2", "x", at(1, 0), None)];
        assert_eq!(
            by_day(&posts, Duration::hours(1), Tz::UTC, at(2, 0)).len(),
            2
        );
        assert_eq!(
            by_day(&posts, Duration::hours(1), berlin, at(2, 0)).len(),
            1
        );
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(human(42.0), "42 s");
        assert_eq!(human(720.0), "12 min");
        assert_eq!(human(3.0 * 3600.0 + 300.0), "3 h 05 min");
        assert_eq!(human(2.0 * 86400.0 + 4.0 * 3600.0), "2 d 4 h");
    }
}
