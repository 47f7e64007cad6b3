//! The lead's daily summary — the day's volume, flagged posts, answers, first-response
//! percentiles, overdue and late posts, who answered, the biggest question groups with the
//! answers they got, the alerts raised — and the `desk report` of first responses by day,
//! both as Markdown (a file other tools read); the page shows the same [`Summary`].
//!
//! It reads the desk's database through [`DeskStore`]; it writes nothing.

use std::fmt::Write;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;

use crate::clock::{self, Day, Figures, human};
use crate::{Alert, DeskError, DeskStore, TopGroup};

/// Question groups a summary lists.
pub const TOP_GROUPS: usize = 5;

/// One day at the desk, in its time zone.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub day: NaiveDate,
    pub timezone: Tz,
    pub target: Duration,
    /// Posts seen and flagged that day.
    pub seen: u64,
    pub flagged: u64,
    /// First responses of the posts that needed one (by person and platform).
    pub responses: Day,
    pub groups: Vec<TopGroup>,
    pub alerts: Vec<Alert>,
}

impl Summary {
    /// `day`'s summary from `store` (overdue counted at `now`).
    pub fn of(
        store: &DeskStore,
        day: NaiveDate,
        tz: Tz,
        target: Duration,
        now: DateTime<Utc>,
    ) -> Result<Summary, DeskError> {
        let (since, until) = clock::day_span(day, tz);
        let (seen, flagged) = store.volume(since, until)?;
        let rs = store.responses(since, until)?;
        let responses = clock::by_day(&rs, target, tz, now)
            .into_iter()
            .next()
            .unwrap_or(Day {
                day,
                all: Figures::default(),
                by_person: Vec::new(),
                by_platform: Vec::new(),
            });
        let alerts = store
            .alerts_since(since)?
            .into_iter()
            .filter(|a| a.at < until)
            .collect();
        Ok(Summary {
            day,
            timezone: tz,
            target,
            seen,
            flagged,
            responses,
            groups: store.top_groups(since, until, TOP_GROUPS)?,
            alerts,
        })
    }

    /// The summary as Markdown.
    pub fn markdown(&self) -> String {
        let f = &self.responses.all;
        let mut m = String::new();
        let _ = writeln!(
            m,
            "# Daily summary — {} ({})\n",
            self.day,
            self.timezone.name()
        );
        let _ = writeln!(m, "| | |\n|---|---|");
        let _ = writeln!(m, "| posts seen | {} |", self.seen);
        let _ = writeln!(m, "| flagged | {} |", self.flagged);
        let _ = writeln!(m, "| needed a reply | {} |", f.needing);
        let _ = writeln!(m, "| answered | {} |", f.answered);
        let _ = writeln!(
            m,
            "| first response p50 / p90 | {} / {} |",
            opt(f.p50_s),
            opt(f.p90_s)
        );
        let _ = writeln!(
            m,
            "| overdue (no answer past {}) | {} |",
            human(self.target.num_seconds() as f64),
            f.overdue
        );
        let _ = writeln!(m, "| answered late | {} |", f.late);
        m.push_str("\n## Who answered\n\n| person | answered | p50 | p90 | late |\n|---|---:|---:|---:|---:|\n");
        for (who, p) in &self.responses.by_person {
            let _ = writeln!(m, "| {} | {} |", cell(who), person_cells(p).join(" | "));
        }
        m.push_str("\n## By platform\n\n| platform | needed | answered | p50 | p90 | overdue |\n|---|---:|---:|---:|---:|---:|\n");
        for (platform, p) in &self.responses.by_platform {
            let _ = writeln!(
                m,
                "| {} | {} |",
                cell(platform),
                platform_cells(p).join(" | ")
            );
        }
        m.push_str("\n## The biggest question groups\n\n");
        if self.groups.is_empty() {
            m.push_str("No question group of two or more posts.\n");
        }
        for g in &self.groups {
            let _ = writeln!(
                m,
                "- **{} posts from {} people**: “{}”  \n  answer: {}",
                g.posts,
                g.authors,
                cell(&g.text),
                g.answer
                    .as_deref()
                    .map(|a| format!("“{}”", cell(a)))
                    .unwrap_or_else(|| "(none sent from the desk)".into())
            );
        }
        m.push_str("\n## Alerts\n\n");
        if self.alerts.is_empty() {
            m.push_str("None.\n");
        }
        for a in &self.alerts {
            let _ = writeln!(
                m,
                "- {} {} (`{}`)",
                a.at.with_timezone(&self.timezone).format("%H:%M"),
                cell(&a.text),
                a.id
            );
        }
        m
    }
}

/// First responses by day, as Markdown: each day's figures, then by person and platform.
pub fn report_markdown(days: &[Day], tz: Tz, target: Duration) -> String {
    let mut m = format!(
        "# First responses by day ({}; target {})\n\n| day | needed | answered | p50 | p90 | overdue | late |\n|---|---:|---:|---:|---:|---:|---:|\n",
        tz.name(),
        human(target.num_seconds() as f64)
    );
    for d in days {
        let f = &d.all;
        let _ = writeln!(
            m,
            "| {} | {} | {} | {} | {} | {} | {} |",
            d.day,
            f.needing,
            f.answered,
            opt(f.p50_s),
            opt(f.p90_s),
            f.overdue,
            f.late
        );
    }
    m.push_str("\n## Per person\n\n| day | person | answered | p50 | p90 | late |\n|---|---|---:|---:|---:|---:|\n");
    for d in days {
        for (who, p) in &d.by_person {
            let _ = writeln!(
                m,
                "| {} | {} | {} |",
                d.day,
                cell(who),
                person_cells(p).join(" | ")
            );
        }
    }
    m.push_str("\n## Per platform\n\n| day | platform | needed | answered | p50 | p90 | overdue |\n|---|---|---:|---:|---:|---:|---:|\n");
    for d in days {
        for (platform, p) in &d.by_platform {
            let _ = writeln!(
                m,
                "| {} | {} | {} |",
                d.day,
                cell(platform),
                platform_cells(p).join(" | ")
            );
        }
    }
    m
}

/// A person's columns, after their name (the Markdown's and the page's): answered, p50,
/// p90, late.
pub(crate) fn person_cells(p: &Figures) -> [String; 4] {
    [
        p.answered.to_string(),
        opt(p.p50_s),
        opt(p.p90_s),
        p.late.to_string(),
    ]
}

/// A platform's columns, after its name: needed, answered, p50, p90, overdue.
pub(crate) fn platform_cells(p: &Figures) -> [String; 5] {
    [
        p.needing.to_string(),
        p.answered.to_string(),
        opt(p.p50_s),
        opt(p.p90_s),
        p.overdue.to_string(),
    ]
}

/// A duration in seconds for people, or a dash for none.
pub(crate) fn opt(s: Option<f64>) -> String {
    s.map(human).unwrap_or_else(|| "–".into())
}

/// Text for a Markdown table cell or line: one line, no pipes or markup that would break it.
fn cell(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
        .replace(['<', '>'], "")
}
