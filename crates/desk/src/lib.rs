//! flagship-desk: where the support team's triage lives — the store under the desk page.
//!
//! [`DeskStore`] keeps, in one embedded SQLite database (WAL, `synchronous = FULL`, so a
//! decision acknowledged is on disk): every post the live loop scored (`posts`, one row per
//! post id — a post never appears twice), each model's score of it (`scores`), and every
//! decision with who and when (`decisions`, append-only: the history is the audit; the
//! current state of a post is its latest decision, an undo stepping one back). It serves the
//! desk's views — the queue of undecided flagged posts, the uncertain band around the
//! threshold (flagged or not: misses are found there), today's counts — and turns decisions
//! into labels the split stage reads (`id,label`). It is a [`flagship_live::Sink`], so the
//! live loop writes into it directly.
//!
//! It never scores, never serves HTTP (the desk's server does) and never deletes a
//! decision. The SQL is plain (no SQLite-only functions beyond `INSERT OR IGNORE`), so a
//! server database can follow behind the same API.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

pub const STAGE: &str = "desk";

/// The schema version in `PRAGMA user_version`.
pub const SCHEMA: i64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum DeskError {
    #[error("desk database {path}: {source}")]
    Db {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "desk database {path} is locked by another process (another desk or a backup holds it); stop it or point storage.desk elsewhere"
    )]
    Locked { path: PathBuf },
    #[error("desk database {path}: schema version {found}; this build reads {SCHEMA}")]
    Version { path: PathBuf, found: i64 },
    #[error("no post {0} in the desk")]
    NoPost(String),
}

/// What a person decided about a post.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// `r`: needs a reply.
    NeedsReply,
    /// `n`: no reply needed.
    NoReply,
    /// `d`: replied / done.
    Done,
    /// `u`: takes the post's latest decision back.
    Undo,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::NeedsReply => "needs_reply",
            Decision::NoReply => "no_reply",
            Decision::Done => "done",
            Decision::Undo => "undo",
        }
    }

    pub fn parse(s: &str) -> Option<Decision> {
        [
            Decision::NeedsReply,
            Decision::NoReply,
            Decision::Done,
            Decision::Undo,
        ]
        .into_iter()
        .find(|d| d.as_str() == s)
    }

    /// The hand label it amounts to: a post that needs (or got) a reply needs support
    /// (label 0, negative — `flagship_core::labels`), one that needs none does not (2).
    pub fn label(self) -> Option<u8> {
        match self {
            Decision::NeedsReply | Decision::Done => Some(flagship_core::labels::NEGATIVE),
            Decision::NoReply => Some(flagship_core::labels::POSITIVE),
            Decision::Undo => None,
        }
    }
}

/// One post as the desk shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub platform: String,
    pub id: String,
    pub url: Option<String>,
    pub author: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub text: String,
    pub probability: f64,
    pub threshold: f64,
    pub need_support: bool,
    pub model_id: String,
    /// The current decision (after undos), if any.
    pub decision: Option<Decision>,
}

/// Queue order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Order {
    Newest,
    Probability,
}

/// Counts for the today panel.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Today {
    pub seen: u64,
    pub flagged: u64,
    pub decided: u64,
    /// Of the decided flagged posts, the share that needed a reply (the flags' precision).
    pub precision: Option<f64>,
}

pub struct DeskStore {
    path: PathBuf,
    db: Connection,
}

/// A database error, told apart when another process holds the lock.
fn db_error(path: &Path, source: rusqlite::Error) -> DeskError {
    if let rusqlite::Error::SqliteFailure(e, _) = &source
        && matches!(
            e.code,
            rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
        )
    {
        return DeskError::Locked {
            path: path.to_owned(),
        };
    }
    DeskError::Db {
        path: path.to_owned(),
        source,
    }
}

impl DeskStore {
    /// Opens (creating it and its folder) the database at `path`.
    pub fn open(path: &Path) -> Result<DeskStore, DeskError> {
        let db_err = |source| DeskError::Db {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                db_err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                    Some(format!("cannot create {}: {e}", dir.display())),
                ))
            })?;
        }
        let db = Connection::open(path).map_err(db_err)?;
        let store = DeskStore {
            path: path.to_owned(),
            db,
        };
        store.setup()?;
        Ok(store)
    }

    fn err(&self, source: rusqlite::Error) -> DeskError {
        db_error(&self.path, source)
    }

    fn setup(&self) -> Result<(), DeskError> {
        self.db
            .busy_timeout(std::time::Duration::from_secs(2))
            .map_err(|e| self.err(e))?;
        self.db
            .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")
            .map_err(|e| self.err(e))?;
        let found: i64 = self
            .db
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        match found {
            0 => self
                .db
                .execute_batch(&format!(
                    "BEGIN IMMEDIATE;
                     CREATE TABLE IF NOT EXISTS posts (
                         id TEXT PRIMARY KEY,
                         platform TEXT NOT NULL,
                         url TEXT,
                         author TEXT,
                         created_at TEXT,
                         text TEXT NOT NULL,
                         text_model TEXT NOT NULL,
                         client TEXT,
                         first_seen_at TEXT NOT NULL
                     );
                     CREATE TABLE IF NOT EXISTS scores (
                         post_id TEXT NOT NULL REFERENCES posts(id),
                         model_id TEXT NOT NULL,
                         probability REAL NOT NULL,
                         threshold REAL NOT NULL,
                         need_support INTEGER NOT NULL,
                         scored_at TEXT NOT NULL,
                         PRIMARY KEY (post_id, model_id)
                     );
                     CREATE TABLE IF NOT EXISTS decisions (
                         seq INTEGER PRIMARY KEY AUTOINCREMENT,
                         post_id TEXT NOT NULL REFERENCES posts(id),
                         decision TEXT NOT NULL
                             CHECK (decision IN ('needs_reply', 'no_reply', 'done', 'undo')),
                         who TEXT NOT NULL,
                         at TEXT NOT NULL
                     );
                     CREATE INDEX IF NOT EXISTS decisions_post ON decisions (post_id, seq);
                     -- Each decided post's current decision (the history replayed), kept in
                     -- the same transaction as the decision, so views need no replay.
                     CREATE TABLE IF NOT EXISTS current (
                         post_id TEXT PRIMARY KEY REFERENCES posts(id),
                         decision TEXT NOT NULL
                     );
                     CREATE INDEX IF NOT EXISTS scores_probability ON scores (probability);
                     CREATE INDEX IF NOT EXISTS posts_seen ON posts (first_seen_at);
                     PRAGMA user_version = {SCHEMA};
                     COMMIT;"
                ))
                .map_err(|e| self.err(e)),
            SCHEMA => Ok(()),
            found => Err(DeskError::Version {
                path: self.path.clone(),
                found,
            }),
        }
    }

    /// Adds scored posts in one transaction: a post already there keeps its row (never
    /// twice); a model's score of it is replaced.
    pub fn add(&mut self, scored: &[flagship_live::Scored]) -> Result<(), DeskError> {
        let (tx, wrap) = begin(&mut self.db, &self.path)?;
        {
            let mut post = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO posts
                     (id, platform, url, author, created_at, text, text_model, client, first_seen_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )
                .map_err(wrap)?;
            let mut score = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO scores
                     (post_id, model_id, probability, threshold, need_support, scored_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(wrap)?;
            for s in scored {
                let t = &s.tweet;
                post.execute(params![
                    t.id,
                    t.platform.as_str(),
                    t.url,
                    t.author_username,
                    t.created_at.map(|c| c.to_rfc3339()),
                    t.text,
                    s.text_model,
                    s.client,
                    s.scored_at.to_rfc3339(),
                ])
                .map_err(wrap)?;
                score
                    .execute(params![
                        t.id,
                        s.model_id,
                        f64::from(s.probability),
                        s.threshold,
                        s.need_support,
                        s.scored_at.to_rfc3339(),
                    ])
                    .map_err(wrap)?;
            }
        }
        tx.commit().map_err(wrap)
    }

    /// Records `decision` on `post` by `who`, committed before it returns; the post's
    /// current decision after it.
    pub fn decide(
        &mut self,
        post: &str,
        decision: Decision,
        who: &str,
    ) -> Result<Option<Decision>, DeskError> {
        let exists: bool = self
            .db
            .query_row("SELECT 1 FROM posts WHERE id = ?1", [post], |_| Ok(()))
            .optional()
            .map_err(|e| self.err(e))?
            .is_some();
        if !exists {
            return Err(DeskError::NoPost(post.to_owned()));
        }
        let (tx, wrap) = begin(&mut self.db, &self.path)?;
        tx.execute(
            "INSERT INTO decisions (post_id, decision, who, at) VALUES (?1, ?2, ?3, ?4)",
            params![post, decision.as_str(), who, Utc::now().to_rfc3339()],
        )
        .map_err(wrap)?;
        let now = replay(&history_of(&tx, post).map_err(wrap)?);
        match now {
            Some(d) => tx.execute(
                "INSERT OR REPLACE INTO current (post_id, decision) VALUES (?1, ?2)",
                params![post, d.as_str()],
            ),
            None => tx.execute("DELETE FROM current WHERE post_id = ?1", [post]),
        }
        .map_err(wrap)?;
        tx.commit().map_err(wrap)?;
        Ok(now)
    }

    /// Every decision on `post`, oldest first: (decision, who, when).
    pub fn history(&self, post: &str) -> Result<Vec<(Decision, String, String)>, DeskError> {
        history_of(&self.db, post).map_err(|e| self.err(e))
    }

    /// The current decision: the history replayed, each undo taking back the one before.
    pub fn current(&self, post: &str) -> Result<Option<Decision>, DeskError> {
        Ok(replay(&self.history(post)?))
    }

    fn items(
        &self,
        filter: &str,
        order: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<Item>, DeskError> {
        // The latest score of each post (by when it was scored), and its current decision.
        let sql = format!(
            "SELECT p.platform, p.id, p.url, p.author, p.created_at, p.text,
                    s.probability, s.threshold, s.need_support, s.model_id, c.decision
             FROM posts p
             JOIN scores s ON s.post_id = p.id
               AND s.scored_at = (SELECT MAX(scored_at) FROM scores WHERE post_id = p.id)
             LEFT JOIN current c ON c.post_id = p.id
             WHERE {filter}
             ORDER BY {order}"
        );
        let mut q = self.db.prepare(&sql).map_err(|e| self.err(e))?;
        let rows = q
            .query_map(args, |r| {
                let created: Option<String> = r.get(4)?;
                Ok(Item {
                    platform: r.get(0)?,
                    id: r.get(1)?,
                    url: r.get(2)?,
                    author: r.get(3)?,
                    created_at: created
                        .and_then(|c| DateTime::parse_from_rfc3339(&c).ok())
                        .map(|c| c.with_timezone(&Utc)),
                    text: r.get(5)?,
                    probability: r.get(6)?,
                    threshold: r.get(7)?,
                    need_support: r.get(8)?,
                    model_id: r.get(9)?,
                    decision: r
                        .get::<_, Option<String>>(10)?
                        .and_then(|d| Decision::parse(&d)),
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Flagged posts with no current decision, newest first or most probable first.
    pub fn queue(&self, order: Order, limit: usize) -> Result<Vec<Item>, DeskError> {
        let order = match order {
            Order::Newest => "p.created_at DESC, p.id",
            Order::Probability => "s.probability DESC, p.id",
        };
        self.items(
            "s.need_support = 1 AND c.decision IS NULL",
            &format!("{order} LIMIT {limit}"),
            &[],
        )
    }

    /// Undecided posts whose probability lies within `band` of the threshold, on both sides
    /// (the unflagged ones there are where misses are found), closest first.
    pub fn uncertain(&self, band: f64, limit: usize) -> Result<Vec<Item>, DeskError> {
        self.items(
            "ABS(s.probability - s.threshold) <= ?1 AND c.decision IS NULL",
            &format!("ABS(s.probability - s.threshold), p.id LIMIT {limit}"),
            &[&band],
        )
    }

    /// Posts first seen since `since`: seen, flagged, decided, and the flags' precision.
    pub fn today(&self, since: DateTime<Utc>) -> Result<Today, DeskError> {
        let items = self.items("p.first_seen_at >= ?1", "p.id", &[&since.to_rfc3339()])?;
        let flagged: Vec<&Item> = items.iter().filter(|i| i.need_support).collect();
        let decided_flagged: Vec<&&Item> =
            flagged.iter().filter(|i| i.decision.is_some()).collect();
        let replied = decided_flagged
            .iter()
            .filter(|i| matches!(i.decision, Some(Decision::NeedsReply | Decision::Done)))
            .count();
        Ok(Today {
            seen: items.len() as u64,
            flagged: flagged.len() as u64,
            decided: items.iter().filter(|i| i.decision.is_some()).count() as u64,
            precision: (!decided_flagged.is_empty())
                .then(|| replied as f64 / decided_flagged.len() as f64),
        })
    }

    /// The labels the team's current decisions amount to, `(id, label)` in id order: the
    /// split stage's labels file.
    pub fn labels(&self) -> Result<Vec<(String, u8)>, DeskError> {
        let mut q = self
            .db
            .prepare("SELECT post_id, decision FROM current ORDER BY post_id")
            .map_err(|e| self.err(e))?;
        let rows: Vec<(String, String)> = q
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.err(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, d)| Some((id, Decision::parse(&d)?.label()?)))
            .collect())
    }
}

/// A write transaction that takes the lock at once (a busy database fails here, clearly),
/// and the error wrapper for what runs in it.
fn begin<'a>(
    db: &'a mut Connection,
    path: &'a Path,
) -> Result<
    (
        rusqlite::Transaction<'a>,
        impl Fn(rusqlite::Error) -> DeskError + Copy + 'a,
    ),
    DeskError,
> {
    let tx = db
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| db_error(path, e))?;
    Ok((tx, move |e| db_error(path, e)))
}

fn history_of(db: &Connection, post: &str) -> rusqlite::Result<Vec<(Decision, String, String)>> {
    let mut q = db.prepare_cached(
        "SELECT decision, who, at FROM decisions WHERE post_id = ?1 ORDER BY seq",
    )?;
    let rows = q.query_map([post], |r| {
        let d: String = r.get(0)?;
        Ok((
            Decision::parse(&d).expect("CHECK keeps decisions known"),
            r.get(1)?,
            r.get(2)?,
        ))
    })?;
    rows.collect()
}

/// The history replayed: each undo takes back the decision before it.
fn replay(history: &[(Decision, String, String)]) -> Option<Decision> {
    let mut stack = Vec::new();
    for (d, _, _) in history {
        match d {
            Decision::Undo => {
                stack.pop();
            }
            d => stack.push(*d),
        }
    }
    stack.pop()
}

impl flagship_live::Sink for DeskStore {
    fn write(&mut self, scored: &[flagship_live::Scored]) -> Result<(), String> {
        self.add(scored).map_err(|e| e.to_string())
    }
}
