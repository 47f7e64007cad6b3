//! The team's work in the desk's database (schema 7): who holds which post, what the
//! first-response clock reads from it, the figures of a day, and the alerts with their
//! delivery to the webhook.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

use super::{AWAITING_REPLY, DeskError, DeskStore, IN_QUEUE, begin, time_at};
use crate::clock::{Answered, Response};

/// An alert raised: a burst of flagged posts or a question group growing fast.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Its own id (the webhook's payload names it; a receiver can drop repeats by it).
    pub id: String,
    /// `burst` or `group`.
    pub kind: String,
    pub at: DateTime<Utc>,
    pub text: String,
    /// The figures behind it (JSON).
    pub detail: serde_json::Value,
}

/// An alert due to be sent to a webhook, and the attempts made so far.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub alert: Alert,
    pub target: String,
    pub attempts: u32,
}

/// An alert's delivery to one webhook, as it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRow {
    pub alert_id: String,
    pub target: String,
    /// `pending`, `delivered` or `failed` (given up).
    pub state: String,
    pub attempts: u32,
    pub next_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// One attempt to deliver an alert: the receiver's status, or what went wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRow {
    pub alert_id: String,
    pub target: String,
    pub at: DateTime<Utc>,
    pub status: Option<u16>,
    pub error: Option<String>,
}

/// One of a day's biggest question groups: posts and authors that day, its first post's
/// text and the answer the team sent it (the latest reply that went out to one of its posts).
#[derive(Debug, Clone, PartialEq)]
pub struct TopGroup {
    pub id: i64,
    pub posts: u64,
    pub authors: u64,
    pub text: String,
    pub platform: String,
    pub answer: Option<String>,
}

impl DeskStore {
    /// Gives `posts` to `to` (`None`: releases them), by `by` at `at`, in one transaction;
    /// `group`: they were taken or given with their question group (the history says so).
    /// `respect`: a post someone other than this person holds is not touched — the whole
    /// change is refused ([`DeskError::Held`]), checked in the same transaction, so two
    /// people taking one post at once never both get it. Returns the posts whose holder
    /// changed, with their holder now. A post already held by `to` (or already free) is left
    /// as it is.
    pub fn assign(
        &mut self,
        posts: &[String],
        to: Option<&str>,
        by: &str,
        group: Option<i64>,
        at: DateTime<Utc>,
        respect: Option<&str>,
    ) -> Result<Vec<(String, Option<String>)>, DeskError> {
        let (tx, wrap) = begin(&mut self.db, &self.path)?;
        let mut changed = Vec::new();
        {
            let mut exists = tx
                .prepare_cached(
                    "SELECT (SELECT who FROM assignments WHERE post_id = p.id) FROM posts p WHERE p.id = ?1",
                )
                .map_err(wrap)?;
            let mut hold = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO assignments (post_id, who, by_whom, at) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(wrap)?;
            let mut free = tx
                .prepare_cached("DELETE FROM assignments WHERE post_id = ?1")
                .map_err(wrap)?;
            let mut history = tx
                .prepare_cached(
                    "INSERT INTO assignment_history (post_id, group_id, who, by_whom, at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(wrap)?;
            for id in posts {
                let Some(now) = exists
                    .query_row([id], |r| r.get::<_, Option<String>>(0))
                    .optional()
                    .map_err(wrap)?
                else {
                    return Err(DeskError::NoPost(id.clone()));
                };
                if let (Some(me), Some(holder)) = (respect, &now)
                    && holder != me
                {
                    return Err(DeskError::Held {
                        post: id.clone(),
                        holder: holder.clone(),
                    });
                }
                if now.as_deref() == to {
                    continue;
                }
                match to {
                    Some(who) => hold.execute(params![id, who, by, at.to_rfc3339()]),
                    None => free.execute([id]),
                }
                .map_err(wrap)?;
                history
                    .execute(params![id, group, to, by, at.to_rfc3339()])
                    .map_err(wrap)?;
                changed.push((id.clone(), to.map(str::to_owned)));
            }
        }
        tx.commit().map_err(wrap)?;
        Ok(changed)
    }

    /// The posts of group `group` still open — undecided or waiting for their reply — oldest
    /// first: what taking or giving the group moves.
    pub fn open_members(&self, group: i64) -> Result<Vec<String>, DeskError> {
        let mut q = self
            .db
            .prepare_cached(&format!(
                "SELECT p.id FROM posts p LEFT JOIN current c ON c.post_id = p.id
                 WHERE p.group_id = ?1 AND ({IN_QUEUE} OR ({AWAITING_REPLY}))
                 ORDER BY p.arrived_at, p.id"
            ))
            .map_err(|e| self.err(e))?;
        let rows = q
            .query_map([group], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Who holds `post`, if anyone.
    pub fn holder(&self, post: &str) -> Result<Option<String>, DeskError> {
        self.db
            .query_row(
                "SELECT who FROM assignments WHERE post_id = ?1",
                [post],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// A post's assignment history, oldest first: (holder after it — `None`: released —,
    /// who did it, when, the group it went with).
    #[allow(clippy::type_complexity)]
    pub fn assignment_history(
        &self,
        post: &str,
    ) -> Result<Vec<(Option<String>, String, DateTime<Utc>, Option<i64>)>, DeskError> {
        let mut q = self
            .db
            .prepare_cached(
                "SELECT who, by_whom, at, group_id FROM assignment_history WHERE post_id = ?1 ORDER BY seq",
            )
            .map_err(|e| self.err(e))?;
        let rows = q
            .query_map([post], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    time_at(r, 2, "at")?.unwrap_or_default(),
                    r.get(3)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// The posts that needed a reply among those that arrived in `[since, until)` — flagged
    /// or decided as needing one, never those decided "no reply needed" — with when and by
    /// whom they were first answered (the first reply sent, or the post marked done), oldest
    /// first: what the first-response clock's figures are made of.
    pub fn responses(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<Response>, DeskError> {
        let mut q = self
            .db
            .prepare_cached(
                "SELECT p.id, p.platform, p.arrived_at, c.decision, c.who, c.at,
                   (SELECT r.finished_at FROM replies r WHERE r.post_id = p.id AND r.state = 'sent'
                    ORDER BY r.finished_at LIMIT 1),
                   (SELECT r.who FROM replies r WHERE r.post_id = p.id AND r.state = 'sent'
                    ORDER BY r.finished_at LIMIT 1),
                   (SELECT a.who FROM assignments a WHERE a.post_id = p.id)
                 FROM posts p LEFT JOIN current c ON c.post_id = p.id
                 WHERE p.arrived_at >= ?1 AND p.arrived_at < ?2
                   AND (p.need_support = 1 OR c.decision IN ('needs_reply', 'done'))
                   AND (c.decision IS NULL OR c.decision <> 'no_reply')
                 ORDER BY p.arrived_at, p.id",
            )
            .map_err(|e| self.err(e))?;
        let rows = q
            .query_map([since.to_rfc3339(), until.to_rfc3339()], |r| {
                let decision: Option<String> = r.get(3)?;
                let done = match (decision.as_deref(), time_at(r, 5, "at")?) {
                    (Some("done"), Some(at)) => Some(Answered {
                        at,
                        who: r.get(4)?,
                        replied: false,
                    }),
                    _ => None,
                };
                let reply = match time_at(r, 6, "finished_at")? {
                    Some(at) => Some(Answered {
                        at,
                        who: r.get::<_, Option<String>>(7)?.unwrap_or_default(),
                        replied: true,
                    }),
                    None => None,
                };
                // The first of the two answers the post.
                let answered = match (reply, done) {
                    (Some(a), Some(b)) => Some(if b.at < a.at { b } else { a }),
                    (a, b) => a.or(b),
                };
                Ok(Response {
                    id: r.get(0)?,
                    platform: r.get(1)?,
                    arrived: time_at(r, 2, "arrived_at")?.unwrap_or_default(),
                    answered,
                    holder: r.get(8)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Posts seen and flagged among those that arrived in `[since, until)`.
    pub fn volume(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<(u64, u64), DeskError> {
        self.db
            .query_row(
                "SELECT COUNT(*), COALESCE(SUM(need_support), 0) FROM posts
                 WHERE arrived_at >= ?1 AND arrived_at < ?2",
                [since.to_rfc3339(), until.to_rfc3339()],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?.max(0) as u64,
                        r.get::<_, i64>(1)?.max(0) as u64,
                    ))
                },
            )
            .map_err(|e| self.err(e))
    }

    /// The `n` question groups with the most posts that arrived in `[since, until)` (two
    /// or more), biggest first, with the answer the team sent them.
    pub fn top_groups(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        n: usize,
    ) -> Result<Vec<TopGroup>, DeskError> {
        let mut q = self
            .db
            .prepare_cached(
                "SELECT p.group_id, COUNT(*), COUNT(DISTINCT p.author),
                   (SELECT f.text FROM posts f JOIN groups g ON g.representative = f.id WHERE g.id = p.group_id),
                   (SELECT f.platform FROM posts f JOIN groups g ON g.representative = f.id WHERE g.id = p.group_id),
                   (SELECT r.text FROM replies r JOIN posts m ON m.id = r.post_id
                    WHERE m.group_id = p.group_id AND r.state = 'sent' ORDER BY r.id DESC LIMIT 1)
                 FROM posts p
                 WHERE p.group_id IS NOT NULL AND p.arrived_at >= ?1 AND p.arrived_at < ?2
                 GROUP BY p.group_id HAVING COUNT(*) >= 2
                 ORDER BY COUNT(*) DESC, p.group_id LIMIT ?3",
            )
            .map_err(|e| self.err(e))?;
        let rows = q
            .query_map(
                params![since.to_rfc3339(), until.to_rfc3339(), n as i64],
                |r| {
                    Ok(TopGroup {
                        id: r.get(0)?,
                        posts: r.get::<_, i64>(1)?.max(0) as u64,
                        authors: r.get::<_, i64>(2)?.max(0) as u64,
                        text: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
                        platform: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
                        answer: r.get(5)?,
                    })
                },
            )
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// The posts that joined group `group` since `since`: when each arrived and its author
    /// (what the group-growth alert counts), with the group's first post's text.
    #[allow(clippy::type_complexity)]
    pub fn group_arrivals(
        &self,
        group: i64,
        since: DateTime<Utc>,
    ) -> Result<(Vec<(DateTime<Utc>, String)>, String), DeskError> {
        let mut q = self
            .db
            .prepare_cached(
                "SELECT arrived_at, COALESCE(author, id) FROM posts
                 WHERE group_id = ?1 AND arrived_at >= ?2 ORDER BY arrived_at",
            )
            .map_err(|e| self.err(e))?;
        let rows = q
            .query_map(params![group, since.to_rfc3339()], |r| {
                Ok((time_at(r, 0, "arrived_at")?.unwrap_or_default(), r.get(1)?))
            })
            .map_err(|e| self.err(e))?;
        let arrivals = rows.collect::<Result<_, _>>().map_err(|e| self.err(e))?;
        let text = self
            .db
            .query_row(
                "SELECT f.text FROM posts f JOIN groups g ON g.representative = f.id WHERE g.id = ?1",
                [group],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?
            .unwrap_or_default();
        Ok((arrivals, text))
    }

    /// Records `alert` with a pending delivery to each of `targets` (due at once), in one
    /// transaction; false when an alert with its id is already there (nothing changes).
    pub fn add_alert(&mut self, alert: &Alert, targets: &[&str]) -> Result<bool, DeskError> {
        let (tx, wrap) = begin(&mut self.db, &self.path)?;
        let fresh = tx
            .execute(
                "INSERT OR IGNORE INTO alerts (id, kind, at, text, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    alert.id,
                    alert.kind,
                    alert.at.to_rfc3339(),
                    alert.text,
                    alert.detail.to_string()
                ],
            )
            .map_err(wrap)?
            == 1;
        if fresh {
            for t in targets {
                tx.execute(
                    "INSERT OR IGNORE INTO deliveries (alert_id, target, state, attempts, next_at)
                     VALUES (?1, ?2, 'pending', 0, ?3)",
                    params![alert.id, t, alert.at.to_rfc3339()],
                )
                .map_err(wrap)?;
            }
        }
        tx.commit().map_err(wrap)?;
        Ok(fresh)
    }

    /// The alerts raised since `since`, newest first (the banner on open pages).
    pub fn alerts_since(&self, since: DateTime<Utc>) -> Result<Vec<Alert>, DeskError> {
        let mut q = self
            .db
            .prepare_cached(
                "SELECT id, kind, at, text, detail FROM alerts WHERE at >= ?1 ORDER BY at DESC, id",
            )
            .map_err(|e| self.err(e))?;
        let rows = q
            .query_map([since.to_rfc3339()], alert_of)
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// The deliveries to `target` due at `now` (pending, their next try at or before it),
    /// oldest first, at most `limit`.
    pub fn due_deliveries(
        &self,
        target: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Delivery>, DeskError> {
        let mut q = self
            .db
            .prepare_cached(
                "SELECT a.id, a.kind, a.at, a.text, a.detail, d.target, d.attempts
                 FROM deliveries d JOIN alerts a ON a.id = d.alert_id
                 WHERE d.state = 'pending' AND d.target = ?3 AND d.next_at <= ?1
                 ORDER BY d.next_at, a.id LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let rows = q
            .query_map(params![now.to_rfc3339(), limit as i64, target], |r| {
                Ok(Delivery {
                    alert: alert_of(r)?,
                    target: r.get(5)?,
                    attempts: r.get(6)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Records one attempt to deliver `alert` to `target` at `at` (the receiver's `status`,
    /// or the `error`): a 2xx marks it delivered — it is never sent again —, anything else
    /// leaves it pending until `retry_at`, or failed (given up) when there is none.
    #[allow(clippy::too_many_arguments)]
    pub fn delivery_attempt(
        &mut self,
        alert: &str,
        target: &str,
        at: DateTime<Utc>,
        status: Option<u16>,
        error: Option<&str>,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<(), DeskError> {
        let (tx, wrap) = begin(&mut self.db, &self.path)?;
        tx.execute(
            "INSERT INTO delivery_attempts (alert_id, target, at, status, error) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![alert, target, at.to_rfc3339(), status, error],
        )
        .map_err(wrap)?;
        let ok = status.is_some_and(|s| (200..300).contains(&s));
        let (state, next) = match (ok, retry_at) {
            (true, _) => ("delivered", at),
            (false, Some(next)) => ("pending", next),
            (false, None) => ("failed", at),
        };
        tx.execute(
            "UPDATE deliveries SET state = ?3, attempts = attempts + 1, next_at = ?4,
               delivered_at = CASE WHEN ?3 = 'delivered' THEN ?5 ELSE delivered_at END
             WHERE alert_id = ?1 AND target = ?2 AND state = 'pending'",
            params![alert, target, state, next.to_rfc3339(), at.to_rfc3339()],
        )
        .map_err(wrap)?;
        tx.commit().map_err(wrap)?;
        Ok(())
    }

    /// Gives up the pending deliveries to any webhook but `target` (the configured one
    /// changed): each marked failed, with why in its attempts; how many.
    pub fn abandon_other_targets(
        &mut self,
        target: &str,
        at: DateTime<Utc>,
    ) -> Result<usize, DeskError> {
        let (tx, wrap) = begin(&mut self.db, &self.path)?;
        tx.execute(
            "INSERT INTO delivery_attempts (alert_id, target, at, status, error)
             SELECT alert_id, target, ?2, NULL, 'given up: the webhook changed'
             FROM deliveries WHERE state = 'pending' AND target <> ?1",
            params![target, at.to_rfc3339()],
        )
        .map_err(wrap)?;
        let n = tx
            .execute(
                "UPDATE deliveries SET state = 'failed' WHERE state = 'pending' AND target <> ?1",
                [target],
            )
            .map_err(wrap)?;
        tx.commit().map_err(wrap)?;
        Ok(n)
    }

    /// Records the shared token's fingerprint (`None`: no token); when it differs from the
    /// one recorded before, every session opened with a token (`NAME (token)`) ends — a
    /// rotated token logs its old holders out. How many sessions ended.
    pub fn token_in_use(&mut self, fingerprint: Option<&str>) -> Result<usize, DeskError> {
        let (tx, wrap) = begin(&mut self.db, &self.path)?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS desk_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
        )
        .map_err(wrap)?;
        let before: Option<String> = tx
            .query_row("SELECT value FROM desk_meta WHERE key = 'token'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(wrap)?;
        let mut ended = 0;
        if before.as_deref() != fingerprint {
            ended = tx
                .execute(
                    "DELETE FROM sessions WHERE user LIKE ?1",
                    [format!("%{}", crate::auth::TOKEN_SUFFIX)],
                )
                .map_err(wrap)?;
            match fingerprint {
                Some(f) => tx.execute(
                    "INSERT OR REPLACE INTO desk_meta (key, value) VALUES ('token', ?1)",
                    [f],
                ),
                None => tx.execute("DELETE FROM desk_meta WHERE key = 'token'", []),
            }
            .map_err(wrap)?;
        }
        tx.commit().map_err(wrap)?;
        Ok(ended)
    }

    /// Every alert's delivery as it stands, oldest alert first.
    pub fn deliveries(&self) -> Result<Vec<DeliveryRow>, DeskError> {
        let mut q = self
            .db
            .prepare_cached(
                "SELECT d.alert_id, d.target, d.state, d.attempts, d.next_at, d.delivered_at
                 FROM deliveries d JOIN alerts a ON a.id = d.alert_id ORDER BY a.at, d.alert_id",
            )
            .map_err(|e| self.err(e))?;
        let rows = q
            .query_map([], |r| {
                Ok(DeliveryRow {
                    alert_id: r.get(0)?,
                    target: r.get(1)?,
                    state: r.get(2)?,
                    attempts: r.get(3)?,
                    next_at: time_at(r, 4, "next_at")?.unwrap_or_default(),
                    delivered_at: time_at(r, 5, "delivered_at")?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Every delivery attempt, in order: the webhook's delivery log.
    pub fn delivery_log(&self) -> Result<Vec<AttemptRow>, DeskError> {
        let mut q = self
            .db
            .prepare_cached(
                "SELECT alert_id, target, at, status, error FROM delivery_attempts ORDER BY seq",
            )
            .map_err(|e| self.err(e))?;
        let rows = q
            .query_map([], |r| {
                Ok(AttemptRow {
                    alert_id: r.get(0)?,
                    target: r.get(1)?,
                    at: time_at(r, 2, "at")?.unwrap_or_default(),
                    status: r.get(3)?,
                    error: r.get(4)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }
}

fn alert_of(r: &rusqlite::Row) -> rusqlite::Result<Alert> {
    let detail: String = r.get(4)?;
    Ok(Alert {
        id: r.get(0)?,
        kind: r.get(1)?,
        at: time_at(r, 2, "at")?.unwrap_or_default(),
        text: r.get(3)?,
        detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
    })
}
