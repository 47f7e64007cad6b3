//! The desk's database: one embedded SQLite file (WAL, `synchronous = FULL`, so a decision
//! acknowledged is on disk) holding every post the live loop scored (`posts`, one row per
//! post id with its latest score — a post never appears twice), each model's score of it
//! (`scores`), and every decision with who and when (`decisions`, append-only: the history is
//! the audit; the current state of a post is its latest decision, an undo stepping one back,
//! kept in `current` in the same transaction), and the open login sessions (`sessions`:
//! the SHA-256 of each id, never the id, with who, when it opened and when it was last used).
//!
//! Schema 5 adds the question groups (`groups`: each flagged post's group, found from its
//! sentence embedding by [`crate::groups`]; a post's `group_id` and `embedding`), decisions
//! made for a whole group at once (`group_decisions`; each post's own decision row names it
//! in `bulk`, so labels can leave bulk decisions out), and the team's saved answers
//! (`answers`, with every change in `answer_history`: who, when, what). Schema 6 adds what
//! a reply from the desk needs: each post's references (`posts.refs`: its CID, the post it
//! replies to and its thread's root), every reply sent or tried (`replies`: the text, who,
//! when, its idempotency key, and how it ended — sent with its link, failed with the
//! platform's error, or unknown), and the parents the thread view fetched (`parents`).
//! Schema 7 adds the team's work: who holds each post (`assignments`, every change in
//! `assignment_history`), the burst and group alerts raised (`alerts`) and each alert's
//! delivery to the webhook (`deliveries`: pending, delivered or failed, with its attempts
//! and when it is tried next, so retries outlive a restart; every attempt in
//! `delivery_attempts`).
//!
//! The SQL is plain (no SQLite-only functions beyond `INSERT OR IGNORE` / `OR REPLACE`), so a
//! server database can follow behind the same API.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use crate::auth::{Session, SessionPolicy, session_key};

mod team;
pub use team::{Alert, AttemptRow, Delivery, DeliveryRow, TopGroup};

/// The schema version in `PRAGMA user_version`.
pub const SCHEMA: i64 = 8;

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
    #[error(
        "desk database {path}: schema version {found}; this build reads {SCHEMA} (an older desk is upgraded when `flagship desk` opens it)"
    )]
    Version { path: PathBuf, found: i64 },
    #[error("desk database {path} does not exist (start `flagship desk` once to create it)")]
    Missing { path: PathBuf },
    #[error("desk database {path}: not a desk database (no schema version)")]
    NotADesk { path: PathBuf },
    #[error("cannot create the desk database's folder {path}: {source}")]
    Folder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "desk database {path}: column `{column}` holds {value:?}, which this build cannot read"
    )]
    BadValue {
        path: PathBuf,
        column: &'static str,
        value: String,
    },
    #[error("post {0} has no decision to undo")]
    NothingToUndo(String),
    #[error("no post {0} in the desk")]
    NoPost(String),
    #[error("no question group {0} in the desk")]
    NoGroup(i64),
    #[error("question group {0} has no group decision to undo")]
    NothingToUndoInGroup(i64),
    #[error("no saved answer {0}")]
    NoAnswer(i64),
    #[error("no reply {0}")]
    NoReply(i64),
    #[error("{holder} holds post {post}: ask them, or a lead, to hand it over")]
    Held { post: String, holder: String },
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
    pub const ALL: [Decision; 4] = [
        Decision::NeedsReply,
        Decision::NoReply,
        Decision::Done,
        Decision::Undo,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Decision::NeedsReply => "needs_reply",
            Decision::NoReply => "no_reply",
            Decision::Done => "done",
            Decision::Undo => "undo",
        }
    }

    pub fn parse(s: &str) -> Option<Decision> {
        Decision::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// The key that records it on the page.
    pub fn key(self) -> char {
        match self {
            Decision::NeedsReply => 'r',
            Decision::NoReply => 'n',
            Decision::Done => 'd',
            Decision::Undo => 'u',
        }
    }

    /// How the page names it.
    pub fn title(self) -> &'static str {
        match self {
            Decision::NeedsReply => "needs reply",
            Decision::NoReply => "no reply needed",
            Decision::Done => "done",
            Decision::Undo => "undo",
        }
    }

    /// Whether it says the post needs (or got) support.
    pub fn needs_support(self) -> Option<bool> {
        match self {
            Decision::NeedsReply | Decision::Done => Some(true),
            Decision::NoReply => Some(false),
            Decision::Undo => None,
        }
    }

    /// The hand label it amounts to: a post that needs (or got) a reply needs support
    /// (label 0, negative — `flagship_core::labels`), one that needs none does not (2).
    pub fn label(self) -> Option<u8> {
        self.needs_support().map(|s| {
            if s {
                flagship_core::labels::NEGATIVE
            } else {
                flagship_core::labels::POSITIVE
            }
        })
    }
}

/// One post as the desk shows it, with its latest score.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub platform: String,
    pub id: String,
    pub url: Option<String>,
    pub author: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub text: String,
    pub client: Option<String>,
    pub words: u32,
    /// The profile's wanted terms it matched.
    pub terms: Vec<String>,
    /// When the live loop read it — first seen (arrival → screen is measured from here).
    pub arrived_at: DateTime<Utc>,
    pub probability: f64,
    pub threshold: f64,
    pub need_support: bool,
    pub model_id: String,
    /// The current decision (after undos), if any.
    pub decision: Option<Decision>,
    /// The words that raised the latest score most (a flagged post's "why").
    pub why: Vec<flagship_core::live::Why>,
    /// Its question group, once its embedding placed it in one.
    pub group: Option<i64>,
    /// What a reply needs: its CID, the post it answers, its thread's root.
    pub refs: Refs,
    /// The latest reply sent from the desk, if one went out.
    pub replied: Option<Replied>,
    /// Who holds it (took it, or was given it), if anyone.
    pub held: Option<String>,
    /// Its latest score was read in a hurry: the live loop was behind, and the exits' looser
    /// margins (`model.early_exit_hurried`) decided it.
    pub hurried: bool,
}

impl Item {
    /// Whether the first-response clock runs for it: it needs a reply (flagged, or decided
    /// as needing one) and has none yet — no reply sent, not marked done or "no reply needed".
    pub fn clock_runs(&self) -> bool {
        let needs = match self.decision {
            None => self.need_support,
            Some(Decision::NeedsReply) => true,
            Some(_) => false,
        };
        needs && self.replied.is_none()
    }
}

/// Whose posts a view lists.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Who<'a> {
    All,
    /// The posts this person holds.
    Mine(&'a str),
    /// The posts nobody holds.
    Unassigned,
}

/// A post's references, as the platform gave them (stored with the post).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Refs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<flagship_core::PostRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<flagship_core::PostRef>,
    /// X: whether the post quotes another (`parent` is then the quoted post).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub quote: bool,
}

impl Refs {
    pub fn of(p: &flagship_core::Post) -> Refs {
        let quoted = (p.reply_parent.is_none())
            .then(|| {
                p.quoted_id.map(|q| flagship_core::PostRef {
                    id: q.to_string(),
                    ..Default::default()
                })
            })
            .flatten();
        Refs {
            cid: p.cid.clone(),
            quote: quoted.is_some(),
            parent: p.reply_parent.clone().or(quoted),
            root: p.reply_root.clone(),
        }
    }
}

/// A reply that went out: its link, who sent it and when.
#[derive(Debug, Clone, PartialEq)]
pub struct Replied {
    pub url: Option<String>,
    pub who: String,
    pub at: DateTime<Utc>,
}

/// One reply sent or tried from the desk.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplyRow {
    pub id: i64,
    pub post_id: String,
    pub platform: String,
    pub text: String,
    pub key: String,
    pub who: String,
    pub at: DateTime<Utc>,
    /// `sending`, `sent`, `failed` or `unknown` (it may have gone out: checked before any
    /// retry).
    pub state: String,
    pub reply_id: Option<String>,
    pub reply_url: Option<String>,
    pub error: Option<String>,
}

/// A parent post's text for the thread view.
#[derive(Debug, Clone, PartialEq)]
pub struct Parent {
    pub author: Option<String>,
    pub text: String,
    pub url: Option<String>,
}

/// A question group as its card shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupCard {
    pub id: i64,
    /// Posts in the group, and how many still wait for a decision.
    pub size: u64,
    pub waiting: u64,
    /// Distinct authors, and the platforms, in name order.
    pub authors: u64,
    pub platforms: Vec<String>,
    pub first_at: DateTime<Utc>,
    pub last_at: DateTime<Utc>,
    /// The group's first post.
    pub representative: Item,
    /// Every member, oldest first (at most [`GROUP_MEMBERS`]).
    pub members: Vec<Item>,
    /// The latest group decision still in force, if any.
    pub decision: Option<Decision>,
}

/// Members a card lists at most (the counts cover them all).
pub const GROUP_MEMBERS: usize = 200;

/// What a decision for a whole group did: the group decision's id and each post it changed,
/// with that post's current decision after it.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupDecided {
    pub bulk: i64,
    pub posts: Vec<(String, Option<Decision>)>,
}

/// A saved answer: the team's approved reply, with placeholders.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub id: i64,
    pub title: String,
    pub body: String,
    pub updated_by: String,
    pub updated_at: DateTime<Utc>,
    /// Its sentence embedding, and the encoder that made it (`None`: not embedded yet).
    pub embedding: Option<(Vec<f32>, String)>,
}

/// One change to a saved answer.
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerChange {
    pub answer: i64,
    pub action: String,
    pub title: String,
    pub body: String,
    pub who: String,
    pub at: DateTime<Utc>,
}

/// What [`DeskStore::explain`] did: posts found, and the flagged ones it placed in a group
/// (post id, group id).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Explaining {
    pub found: usize,
    pub grouped: Vec<(String, i64)>,
}

/// Queue order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Order {
    Newest,
    Probability,
    /// The least time left on the first-response clock first (the oldest arrival).
    Due,
}

/// Counts for the today panel: posts first seen since a time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Today {
    pub seen: u64,
    pub flagged: u64,
    pub decided: u64,
    /// Flagged posts decided, and of those the ones that needed a reply.
    pub flagged_decided: u64,
    pub flagged_needed: u64,
    /// Unflagged posts a person found needing a reply (misses, from the uncertain tab).
    pub missed_found: u64,
    /// The flags' precision from decisions (`flagged_needed / flagged_decided`).
    pub precision: Option<f64>,
    /// Words of the posts not flagged (the reading the team was spared), of the flagged
    /// posts decided as needing no reply (read needlessly), and of the misses found.
    pub words_unflagged: u64,
    pub words_wasted: u64,
    pub words_missed: u64,
}

/// What [`DeskStore::add`] did with a batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Added {
    /// Indices (into the batch) of the posts new to the desk.
    pub new: Vec<usize>,
}

/// The queue: flagged posts with no current decision (`p`: posts, `c`: their current
/// decision, left-joined).
const IN_QUEUE: &str = "p.need_support = 1 AND c.decision IS NULL";

/// Decided as needing a reply, and none sent from the desk yet (the waiting list; with
/// [`IN_QUEUE`], a group's open posts).
const AWAITING_REPLY: &str = "c.decision = 'needs_reply'
     AND NOT EXISTS (SELECT 1 FROM replies r WHERE r.post_id = p.id AND r.state = 'sent')";

/// The desk's figures for `/metrics` ([`DeskStore::figures`]).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Figures {
    /// Posts in the queue, and when the oldest of them arrived.
    pub(crate) queue: u64,
    pub(crate) oldest_undecided: Option<DateTime<Utc>>,
    /// Every decision recorded (the history, undo included), per kind: all kinds listed.
    pub(crate) decisions: Vec<(Decision, u64)>,
    /// Posts in the desk per platform (as stored), the platforms it has.
    pub(crate) posts: Vec<(String, u64)>,
}

pub struct DeskStore {
    path: PathBuf,
    db: Connection,
    /// The open question groups (loaded at open; see [`crate::groups`]).
    grouper: crate::groups::Grouper,
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
    if let rusqlite::Error::FromSqlConversionFailure(_, _, e) = &source
        && let Some(b) = e.downcast_ref::<BadColumn>()
    {
        return DeskError::BadValue {
            path: path.to_owned(),
            column: b.column,
            value: b.value.clone(),
        };
    }
    DeskError::Db {
        path: path.to_owned(),
        source,
    }
}

/// The login sessions (schema 4): the SHA-256 of each id (the cookie holds the id; this
/// table never does), who, the CSRF token, when it opened and was last used (Unix seconds).
const SESSIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS sessions (
         id_hash TEXT PRIMARY KEY,
         user TEXT NOT NULL,
         csrf TEXT NOT NULL,
         created INTEGER NOT NULL,
         seen INTEGER NOT NULL
     );
     CREATE INDEX IF NOT EXISTS sessions_user ON sessions (user, created);";

/// Columns [`ITEM_COLUMNS`] selects; a query's own columns come after them.
const ITEM_WIDTH: usize = 23;

const ITEM_COLUMNS: &str = "p.platform, p.id, p.url, p.author, p.created_at, p.text, p.client,
     p.words, p.terms, p.arrived_at, p.probability, p.threshold, p.need_support, p.model_id,
     c.decision, p.why, p.group_id, p.refs,
     (SELECT r.reply_url FROM replies r WHERE r.post_id = p.id AND r.state = 'sent' ORDER BY r.id DESC LIMIT 1),
     (SELECT r.who FROM replies r WHERE r.post_id = p.id AND r.state = 'sent' ORDER BY r.id DESC LIMIT 1),
     (SELECT r.finished_at FROM replies r WHERE r.post_id = p.id AND r.state = 'sent' ORDER BY r.id DESC LIMIT 1),
     (SELECT a.who FROM assignments a WHERE a.post_id = p.id), p.hurried";

/// Schema 7 → 8: whether a post's latest score was read in a hurry.
const HURRIED: &str = "
     ALTER TABLE posts ADD COLUMN hurried INTEGER NOT NULL DEFAULT 0;";

/// Schema 6 → 7: the team's work — who holds what, alerts and their delivery.
const TEAM: &str = "
     CREATE TABLE IF NOT EXISTS assignments (
         post_id TEXT PRIMARY KEY REFERENCES posts(id),
         who TEXT NOT NULL,               -- who holds it
         by_whom TEXT NOT NULL,           -- who took or gave it
         at TEXT NOT NULL
     );
     CREATE INDEX IF NOT EXISTS assignments_who ON assignments (who);
     CREATE TABLE IF NOT EXISTS assignment_history (
         seq INTEGER PRIMARY KEY AUTOINCREMENT,
         post_id TEXT NOT NULL REFERENCES posts(id),
         group_id INTEGER,                -- taken or given with its question group
         who TEXT,                        -- the holder after it (NULL: released)
         by_whom TEXT NOT NULL,
         at TEXT NOT NULL
     );
     CREATE INDEX IF NOT EXISTS assignment_history_post ON assignment_history (post_id, seq);
     CREATE TABLE IF NOT EXISTS alerts (
         id TEXT PRIMARY KEY,             -- what the webhook's payload names it by
         kind TEXT NOT NULL CHECK (kind IN ('burst', 'group')),
         at TEXT NOT NULL,
         text TEXT NOT NULL,
         detail TEXT NOT NULL DEFAULT '{}' -- JSON: the figures behind it
     );
     CREATE INDEX IF NOT EXISTS alerts_at ON alerts (at);
     CREATE TABLE IF NOT EXISTS deliveries (
         alert_id TEXT NOT NULL REFERENCES alerts(id),
         target TEXT NOT NULL,            -- the webhook's URL
         state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
         attempts INTEGER NOT NULL DEFAULT 0,
         next_at TEXT NOT NULL,
         delivered_at TEXT,
         PRIMARY KEY (alert_id, target)
     );
     CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (state, next_at);
     CREATE TABLE IF NOT EXISTS delivery_attempts (
         seq INTEGER PRIMARY KEY AUTOINCREMENT,
         alert_id TEXT NOT NULL,
         target TEXT NOT NULL,
         at TEXT NOT NULL,
         status INTEGER,                  -- the receiver's HTTP status, if it answered
         error TEXT                       -- what went wrong, if anything
     );";

/// Schema 5 → 6: replies from the desk.
const REPLIES: &str = "
     ALTER TABLE posts ADD COLUMN refs TEXT NOT NULL DEFAULT '{}';  -- JSON: cid, parent, root
     CREATE TABLE IF NOT EXISTS replies (
         id INTEGER PRIMARY KEY AUTOINCREMENT,
         post_id TEXT NOT NULL REFERENCES posts(id),
         platform TEXT NOT NULL,
         text TEXT NOT NULL,
         key TEXT NOT NULL UNIQUE,        -- the idempotency key (Bluesky: the rkey's seed)
         who TEXT NOT NULL,
         at TEXT NOT NULL,
         state TEXT NOT NULL CHECK (state IN ('sending', 'sent', 'failed', 'unknown')),
         reply_id TEXT,
         reply_url TEXT,
         error TEXT,
         finished_at TEXT,
         grp INTEGER                      -- the question group answered at once, if one
     );
     CREATE INDEX IF NOT EXISTS replies_post ON replies (post_id, id);
     CREATE TABLE IF NOT EXISTS parents (
         id TEXT PRIMARY KEY,             -- the parent as the post's refs name it
         author TEXT,
         text TEXT NOT NULL,
         url TEXT,
         fetched_at TEXT NOT NULL
     );";

/// Schema 4 → 5: question groups, group decisions, saved answers.
const GROUPS_AND_ANSWERS: &str = "
     CREATE TABLE IF NOT EXISTS groups (
         id INTEGER PRIMARY KEY AUTOINCREMENT,
         opened_at TEXT NOT NULL,
         last_at TEXT NOT NULL,
         closed_at TEXT,
         representative TEXT NOT NULL,   -- the first post's id
         centroid BLOB NOT NULL          -- the members' unit vectors summed (f32 LE)
     );
     CREATE INDEX IF NOT EXISTS groups_open ON groups (closed_at, last_at);
     ALTER TABLE posts ADD COLUMN group_id INTEGER;   -- groups(id)
     ALTER TABLE posts ADD COLUMN embedding BLOB;   -- f32 LE, unit length
     CREATE INDEX IF NOT EXISTS posts_group ON posts (group_id);
     CREATE TABLE IF NOT EXISTS group_decisions (
         id INTEGER PRIMARY KEY AUTOINCREMENT,
         group_id INTEGER NOT NULL REFERENCES groups(id),
         decision TEXT NOT NULL,
         who TEXT NOT NULL,
         at TEXT NOT NULL,
         undone_at TEXT
     );
     ALTER TABLE decisions ADD COLUMN bulk INTEGER;   -- group_decisions(id), if one
     ALTER TABLE current ADD COLUMN bulk INTEGER;
     CREATE TABLE IF NOT EXISTS answers (
         id INTEGER PRIMARY KEY AUTOINCREMENT,
         title TEXT NOT NULL,
         body TEXT NOT NULL,
         updated_by TEXT NOT NULL,
         updated_at TEXT NOT NULL,
         deleted INTEGER NOT NULL DEFAULT 0,
         embedding BLOB,
         embedded_by TEXT
     );
     CREATE TABLE IF NOT EXISTS answer_history (
         seq INTEGER PRIMARY KEY AUTOINCREMENT,
         answer_id INTEGER NOT NULL REFERENCES answers(id),
         action TEXT NOT NULL CHECK (action IN ('created', 'edited', 'deleted')),
         title TEXT NOT NULL,
         body TEXT NOT NULL,
         who TEXT NOT NULL,
         at TEXT NOT NULL
     );";

/// When the live loop read a post: scored, less the time it took.
fn arrived(s: &flagship_core::live::Scored) -> DateTime<Utc> {
    s.scored_at - chrono::Duration::microseconds((s.latency_ms * 1e3).round() as i64)
}

/// A post just scored as the desk shows it (no decision yet).
pub(crate) fn item_of(s: &flagship_core::live::Scored) -> Item {
    let t = &s.post;
    Item {
        platform: t.platform.as_str().to_owned(),
        id: t.id.clone(),
        url: t.url.clone(),
        author: t.author_username.clone(),
        created_at: t.created_at,
        text: t.text.clone(),
        client: s.client.clone(),
        words: s.text_model.split_whitespace().count() as u32,
        terms: s.matched.clone(),
        arrived_at: arrived(s),
        probability: f64::from(s.probability),
        threshold: s.threshold,
        need_support: s.need_support,
        model_id: s.model_id.clone(),
        decision: None,
        why: s.why.clone(),
        group: None,
        refs: Refs::of(t),
        replied: None,
        held: None,
        hurried: s.hurried,
    }
}

/// A value of column `idx` this build cannot read, as a SQLite conversion error (mapped to
/// [`DeskError::BadValue`] naming the column).
fn bad(idx: usize, column: &'static str, value: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        idx,
        rusqlite::types::Type::Text,
        Box::new(BadColumn { column, value }),
    )
}

#[derive(Debug)]
struct BadColumn {
    column: &'static str,
    value: String,
}

impl std::fmt::Display for BadColumn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "column `{}`: {:?}", self.column, self.value)
    }
}

impl std::error::Error for BadColumn {}

fn time_at(
    r: &rusqlite::Row,
    idx: usize,
    column: &'static str,
) -> rusqlite::Result<Option<DateTime<Utc>>> {
    match r.get::<_, Option<String>>(idx)? {
        None => Ok(None),
        Some(c) => DateTime::parse_from_rfc3339(&c)
            .map(|c| Some(c.with_timezone(&Utc)))
            .map_err(|_| bad(idx, column, c)),
    }
}

fn decision_at(r: &rusqlite::Row, idx: usize) -> rusqlite::Result<Option<Decision>> {
    match r.get::<_, Option<String>>(idx)? {
        None => Ok(None),
        Some(d) => Decision::parse(&d)
            .map(Some)
            .ok_or_else(|| bad(idx, "decision", d)),
    }
}

fn item(r: &rusqlite::Row) -> rusqlite::Result<Item> {
    let terms: String = r.get(8)?;
    let why: String = r.get(15)?;
    Ok(Item {
        platform: r.get(0)?,
        id: r.get(1)?,
        url: r.get(2)?,
        author: r.get(3)?,
        created_at: time_at(r, 4, "created_at")?,
        text: r.get(5)?,
        client: r.get(6)?,
        words: r.get(7)?,
        terms: serde_json::from_str(&terms).map_err(|_| bad(8, "terms", terms.clone()))?,
        arrived_at: time_at(r, 9, "arrived_at")?
            .ok_or_else(|| bad(9, "arrived_at", "NULL".into()))?,
        probability: r.get(10)?,
        threshold: r.get(11)?,
        need_support: r.get(12)?,
        model_id: r.get(13)?,
        decision: decision_at(r, 14)?,
        why: serde_json::from_str(&why).map_err(|_| bad(15, "why", why.clone()))?,
        group: r.get(16)?,
        refs: {
            let refs: String = r.get(17)?;
            serde_json::from_str(&refs).map_err(|_| bad(17, "refs", refs.clone()))?
        },
        replied: match time_at(r, 20, "finished_at")? {
            Some(at) => Some(Replied {
                url: r.get(18)?,
                who: r.get::<_, Option<String>>(19)?.unwrap_or_default(),
                at,
            }),
            None => None,
        },
        held: r.get(21)?,
        hurried: r.get(22)?,
    })
}

impl DeskStore {
    /// Opens (creating it and its folder) the database at `path`.
    pub fn open(path: &Path) -> Result<DeskStore, DeskError> {
        let db_err = |source| DeskError::Db {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| DeskError::Folder {
                path: dir.to_owned(),
                source,
            })?;
        }
        let db = Connection::open(path).map_err(db_err)?;
        let mut store = DeskStore {
            path: path.to_owned(),
            db,
            grouper: Default::default(),
        };
        store.setup()?;
        store.set_grouping(crate::groups::Rules::default())?;
        Ok(store)
    }

    /// Opens an existing database read-only (exports, the pipeline's labels, monitor): a
    /// missing file or one that is no desk is an error naming it; nothing is created or
    /// changed.
    pub fn open_existing(path: &Path) -> Result<DeskStore, DeskError> {
        if !path.is_file() {
            return Err(DeskError::Missing {
                path: path.to_owned(),
            });
        }
        let db = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| db_error(path, e))?;
        let store = DeskStore {
            path: path.to_owned(),
            db,
            grouper: Default::default(),
        };
        store
            .db
            .busy_timeout(std::time::Duration::from_secs(2))
            .map_err(|e| store.err(e))?;
        match store.version()? {
            SCHEMA => Ok(store),
            // Earlier schemas are upgraded in place (as `open` does), so exports, monitor and
            // split read them after an upgrade of flagship.
            2..=7 => {
                drop(store);
                tracing::info!(path = %path.display(), "upgrading the desk database to schema {SCHEMA}");
                drop(DeskStore::open(path)?);
                DeskStore::open_existing(path)
            }
            0 => Err(DeskError::NotADesk {
                path: path.to_owned(),
            }),
            found => Err(DeskError::Version {
                path: path.to_owned(),
                found,
            }),
        }
    }

    fn version(&self) -> Result<i64, DeskError> {
        self.db
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    pub fn path(&self) -> &Path {
        &self.path
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
        match self.version()? {
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
                         words INTEGER NOT NULL,
                         terms TEXT NOT NULL,          -- JSON array: the wanted terms matched
                         arrived_at TEXT NOT NULL,     -- first seen by the live loop
                         -- the latest score (its history per model is in `scores`)
                         probability REAL NOT NULL,
                         threshold REAL NOT NULL,
                         need_support INTEGER NOT NULL,
                         model_id TEXT NOT NULL,
                         scored_at TEXT NOT NULL,
                         why TEXT NOT NULL DEFAULT '[]'  -- JSON: the latest score's words
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
                         decision TEXT NOT NULL,
                         who TEXT NOT NULL,     -- who made the decision that is current
                         at TEXT NOT NULL
                     );
                     CREATE INDEX IF NOT EXISTS current_at ON current (at);
                     CREATE INDEX IF NOT EXISTS posts_queue_newest ON posts (need_support, arrived_at);
                     CREATE INDEX IF NOT EXISTS posts_queue_probability ON posts (need_support, probability);
                     CREATE INDEX IF NOT EXISTS posts_seen ON posts (arrived_at);
                     {SESSIONS_TABLE}
                     {GROUPS_AND_ANSWERS}
                     {REPLIES}
                     {TEAM}
                     {HURRIED}
                     PRAGMA user_version = {SCHEMA};
                     COMMIT;"
                ))
                .map_err(|e| self.err(e)),
            // Schema 2 → 3: each post keeps why its latest score flagged it. 3 → 4: the
            // sessions move from memory into the database. 4 → 5: question groups and saved
            // answers. 5 → 6: replies. 6 → 7: the team's work. 7 → 8: the hurried mark. One
            // transaction for all.
            found @ 2..=7 => self
                .db
                .execute_batch(&format!(
                    "BEGIN IMMEDIATE;
                     {}
                     {}
                     {}
                     {}
                     {}
                     {HURRIED}
                     PRAGMA user_version = {SCHEMA};
                     COMMIT;",
                    if found == 2 {
                        "ALTER TABLE posts ADD COLUMN why TEXT NOT NULL DEFAULT '[]';"
                    } else {
                        ""
                    },
                    if found <= 3 { SESSIONS_TABLE } else { "" },
                    if found <= 4 { GROUPS_AND_ANSWERS } else { "" },
                    if found <= 5 { REPLIES } else { "" },
                    if found <= 6 { TEAM } else { "" }
                ))
                .or_else(|e| {
                    // Another process upgraded it first: nothing to do.
                    let _ = self.db.execute_batch("ROLLBACK;");
                    if self.version()? == SCHEMA {
                        Ok(())
                    } else {
                        Err(self.err(e))
                    }
                }),
            SCHEMA => Ok(()),
            found => Err(DeskError::Version {
                path: self.path.clone(),
                found,
            }),
        }
    }

    /// Adds scored posts in one transaction: a post already there keeps its row (never
    /// twice) and takes the newer score; each model's score of it is kept.
    pub fn add(&mut self, scored: &[flagship_core::live::Scored]) -> Result<Added, DeskError> {
        let (tx, wrap) = begin(&mut self.db, &self.path)?;
        let mut added = Added::default();
        {
            let mut post = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO posts
                     (id, platform, url, author, created_at, text, text_model, client, words,
                      terms, arrived_at, probability, threshold, need_support, model_id,
                      scored_at, why, refs, hurried)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                             ?17, ?18, ?19)",
                )
                .map_err(wrap)?;
            let mut rescore = tx
                .prepare_cached(
                    "UPDATE posts SET probability = ?2, threshold = ?3, need_support = ?4,
                     model_id = ?5, scored_at = ?6, why = ?7, hurried = ?8
                     WHERE id = ?1 AND scored_at <= ?6",
                )
                .map_err(wrap)?;
            let mut score = tx
                .prepare_cached(
                    "INSERT INTO scores
                     (post_id, model_id, probability, threshold, need_support, scored_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (post_id, model_id) DO UPDATE SET
                       probability = excluded.probability, threshold = excluded.threshold,
                       need_support = excluded.need_support, scored_at = excluded.scored_at
                     WHERE excluded.scored_at >= scores.scored_at",
                )
                .map_err(wrap)?;
            for (i, s) in scored.iter().enumerate() {
                let t = &s.post;
                let scored_at = s.scored_at.to_rfc3339();
                let why = serde_json::to_string(&s.why).expect("words serialise");
                let fresh = post
                    .execute(params![
                        t.id,
                        t.platform.as_str(),
                        t.url,
                        t.author_username,
                        t.created_at.map(|c| c.to_rfc3339()),
                        t.text,
                        s.text_model,
                        s.client,
                        s.text_model.split_whitespace().count() as u32,
                        serde_json::to_string(&s.matched).expect("strings serialise"),
                        arrived(s).to_rfc3339(),
                        f64::from(s.probability),
                        s.threshold,
                        s.need_support,
                        s.model_id,
                        scored_at,
                        why,
                        serde_json::to_string(&Refs::of(t)).expect("refs serialise"),
                        s.hurried,
                    ])
                    .map_err(wrap)?;
                if fresh == 1 {
                    added.new.push(i);
                } else {
                    rescore
                        .execute(params![
                            t.id,
                            f64::from(s.probability),
                            s.threshold,
                            s.need_support,
                            s.model_id,
                            scored_at,
                            why,
                            s.hurried,
                        ])
                        .map_err(wrap)?;
                }
                score
                    .execute(params![
                        t.id,
                        s.model_id,
                        f64::from(s.probability),
                        s.threshold,
                        s.need_support,
                        scored_at,
                    ])
                    .map_err(wrap)?;
            }
        }
        tx.commit().map_err(wrap)?;
        Ok(added)
    }

    /// Stores why flagged posts were flagged and their sentence embeddings (the live loop
    /// works both out after the write), in one transaction; a flagged post with an embedding
    /// and no group yet joins the nearest open question group or opens one.
    pub fn explain(
        &mut self,
        why: &[flagship_core::live::Explained],
    ) -> Result<Explaining, DeskError> {
        self.explain_at(why, Utc::now())
    }

    /// [`DeskStore::explain`] at `now` (what a group's quiet period is measured against): a
    /// replay measured at the pace its posts were written (`bench groups`).
    pub fn explain_at(
        &mut self,
        why: &[flagship_core::live::Explained],
        now: DateTime<Utc>,
    ) -> Result<Explaining, DeskError> {
        use crate::groups::{Placed, to_blob};
        let (tx, wrap) = begin(&mut self.db, &self.path)?;
        let mut done = Explaining::default();
        let closed = self.grouper.close_quiet(now);
        {
            let mut close = tx
                .prepare_cached("UPDATE groups SET closed_at = ?2 WHERE id = ?1")
                .map_err(wrap)?;
            for id in closed {
                close.execute(params![id, now.to_rfc3339()]).map_err(wrap)?;
            }
            let mut set = tx
                .prepare_cached("UPDATE posts SET why = ?2 WHERE id = ?1")
                .map_err(wrap)?;
            let mut placeable = tx
                .prepare_cached(
                    "SELECT need_support = 1 AND group_id IS NULL FROM posts WHERE id = ?1",
                )
                .map_err(wrap)?;
            let mut embed = tx
                .prepare_cached("UPDATE posts SET embedding = ?2, group_id = ?3 WHERE id = ?1")
                .map_err(wrap)?;
            let mut open = tx
                .prepare_cached(
                    "INSERT INTO groups (opened_at, last_at, representative, centroid)
                     VALUES (?1, ?1, ?2, ?3)",
                )
                .map_err(wrap)?;
            let mut grow = tx
                .prepare_cached("UPDATE groups SET last_at = ?2, centroid = ?3 WHERE id = ?1")
                .map_err(wrap)?;
            for e in why {
                // One look-up: whether the post is here, and whether it waits for a group.
                let Some(fresh) = placeable
                    .query_row([&e.id], |r| r.get::<_, bool>(0))
                    .optional()
                    .map_err(wrap)?
                else {
                    continue;
                };
                done.found += 1;
                if !e.why.is_empty() {
                    let words = serde_json::to_string(&e.why).expect("words serialise");
                    set.execute(params![e.id, words]).map_err(wrap)?;
                }
                if e.embedding.is_empty() || !fresh {
                    continue;
                }
                let group = match self.grouper.assign(&e.embedding, now) {
                    Placed::Joined { group, .. } => {
                        let sum = &self.grouper.get(group).expect("joined an open group").sum;
                        grow.execute(params![group, now.to_rfc3339(), to_blob(sum)])
                            .map_err(wrap)?;
                        group
                    }
                    Placed::New => {
                        open.execute(params![now.to_rfc3339(), e.id, to_blob(&e.embedding)])
                            .map_err(wrap)?;
                        let id = tx.last_insert_rowid();
                        self.grouper.opened(id, &e.embedding, now);
                        id
                    }
                };
                embed
                    .execute(params![e.id, to_blob(&e.embedding), group])
                    .map_err(wrap)?;
                done.grouped.push((e.id.clone(), group));
            }
        }
        tx.commit().map_err(wrap)?;
        Ok(done)
    }

    /// Groups from now on by `rules`; the groups left open (and not yet quiet) are taken
    /// back from the database.
    pub fn set_grouping(&mut self, rules: crate::groups::Rules) -> Result<(), DeskError> {
        let since = (Utc::now() - rules.quiet).to_rfc3339();
        let mut q = self
            .db
            .prepare(
                "SELECT g.id, g.centroid, g.last_at, (SELECT COUNT(*) FROM posts p WHERE p.group_id = g.id)
                 FROM groups g WHERE g.closed_at IS NULL AND g.last_at >= ?1",
            )
            .map_err(|e| db_error(&self.path, e))?;
        let rows = q
            .query_map([since], |r| {
                let blob: Vec<u8> = r.get(1)?;
                Ok(crate::groups::Open {
                    id: r.get(0)?,
                    sum: crate::groups::from_blob(&blob)
                        .ok_or_else(|| bad(1, "centroid", format!("{} bytes", blob.len())))?,
                    last_at: time_at(r, 2, "last_at")?
                        .ok_or_else(|| bad(2, "last_at", "NULL".into()))?,
                    size: r.get(3)?,
                })
            })
            .map_err(|e| db_error(&self.path, e))?;
        let open: Vec<_> = rows
            .collect::<Result<_, _>>()
            .map_err(|e| db_error(&self.path, e))?;
        drop(q);
        let mut grouper = crate::groups::Grouper::new(rules);
        grouper.reopen(open);
        self.grouper = grouper;
        Ok(())
    }

    /// Groups open now (memory in use: this × the embedding's length floats).
    pub fn open_groups(&self) -> usize {
        self.grouper.open_groups()
    }

    /// Every post id in the desk (the live loop never scores them again).
    pub fn ids(&self) -> Result<std::collections::HashSet<String>, DeskError> {
        let mut q = self
            .db
            .prepare("SELECT id FROM posts")
            .map_err(|e| self.err(e))?;
        let rows = q.query_map([], |r| r.get(0)).map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Records `decision` on `post` by `who`, committed before it returns; the post's
    /// current decision after it.
    pub fn decide(
        &mut self,
        post: &str,
        decision: Decision,
        who: &str,
    ) -> Result<Option<Decision>, DeskError> {
        self.decide_at(post, decision, who, Utc::now())
    }

    /// [`DeskStore::decide`] recorded at `at` (a replay of a team's day at its own pace).
    pub fn decide_at(
        &mut self,
        post: &str,
        decision: Decision,
        who: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<Decision>, DeskError> {
        let (tx, wrap) = begin(&mut self.db, &self.path)?;
        let now = decide_in(&tx, post, decision, who, None, at)
            .map_err(wrap)?
            .ok_or_else(|| DeskError::NoPost(post.to_owned()))??;
        tx.commit().map_err(wrap)?;
        Ok(now)
    }

    /// Decides every waiting post of group `group` at once (committed before it returns):
    /// each post gets its own decision row, marked with the group decision's id. `Undo` takes
    /// the group's latest group decision back, post by post.
    pub fn decide_group(
        &mut self,
        group: i64,
        decision: Decision,
        who: &str,
    ) -> Result<GroupDecided, DeskError> {
        let (tx, wrap) = begin(&mut self.db, &self.path)?;
        let exists = tx
            .query_row("SELECT 1 FROM groups WHERE id = ?1", [group], |_| Ok(()))
            .optional()
            .map_err(wrap)?
            .is_some();
        if !exists {
            return Err(DeskError::NoGroup(group));
        }
        let at = Utc::now().to_rfc3339();
        let mut posts = Vec::new();
        let bulk = if decision == Decision::Undo {
            let last: Option<i64> = tx
                .query_row(
                    "SELECT id FROM group_decisions WHERE group_id = ?1 AND undone_at IS NULL
                     ORDER BY id DESC LIMIT 1",
                    [group],
                    |r| r.get(0),
                )
                .optional()
                .map_err(wrap)?;
            let bulk = last.ok_or(DeskError::NothingToUndoInGroup(group))?;
            // The posts whose current decision is still this group decision's.
            let ids: Vec<String> = {
                let mut q = tx
                    .prepare_cached("SELECT post_id FROM current WHERE bulk = ?1 ORDER BY post_id")
                    .map_err(wrap)?;
                let rows = q.query_map([bulk], |r| r.get(0)).map_err(wrap)?;
                rows.collect::<Result<_, _>>().map_err(wrap)?
            };
            for id in ids {
                if let Some(now) = decide_in(&tx, &id, Decision::Undo, who, Some(bulk), Utc::now())
                    .map_err(wrap)?
                {
                    posts.push((id, now?));
                }
            }
            tx.execute(
                "UPDATE group_decisions SET undone_at = ?2 WHERE id = ?1",
                params![bulk, at],
            )
            .map_err(wrap)?;
            bulk
        } else {
            tx.execute(
                "INSERT INTO group_decisions (group_id, decision, who, at) VALUES (?1, ?2, ?3, ?4)",
                params![group, decision.as_str(), who, at],
            )
            .map_err(wrap)?;
            let bulk = tx.last_insert_rowid();
            let ids: Vec<String> = {
                let mut q = tx
                    .prepare_cached(&format!(
                        "SELECT p.id FROM posts p LEFT JOIN current c ON c.post_id = p.id
                         WHERE p.group_id = ?1 AND {IN_QUEUE} ORDER BY p.arrived_at, p.id"
                    ))
                    .map_err(wrap)?;
                let rows = q.query_map([group], |r| r.get(0)).map_err(wrap)?;
                rows.collect::<Result<_, _>>().map_err(wrap)?
            };
            for id in ids {
                if let Some(now) =
                    decide_in(&tx, &id, decision, who, Some(bulk), Utc::now()).map_err(wrap)?
                {
                    posts.push((id, now?));
                }
            }
            bulk
        };
        tx.commit().map_err(wrap)?;
        Ok(GroupDecided { bulk, posts })
    }

    /// Group `group`'s card: its counts over every member, its first post, its members
    /// (oldest first, at most [`GROUP_MEMBERS`]) and the group decision in force.
    pub fn group_card(&self, group: i64) -> Result<GroupCard, DeskError> {
        let err = |e| self.err(e);
        let (size, waiting, authors, platforms, first, last): (i64, i64, i64, Option<String>, Option<String>, Option<String>) = self
            .db
            .query_row(
                "SELECT COUNT(*), COALESCE(SUM(p.need_support = 1 AND c.decision IS NULL), 0),
                        COUNT(DISTINCT COALESCE(p.author, p.id)),
                        (SELECT GROUP_CONCAT(platform, ',') FROM
                            (SELECT DISTINCT platform FROM posts WHERE group_id = ?1 ORDER BY platform)),
                        MIN(p.arrived_at), MAX(p.arrived_at)
                 FROM posts p LEFT JOIN current c ON c.post_id = p.id WHERE p.group_id = ?1",
                [group],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
            )
            .map_err(err)?;
        if size == 0 {
            return Err(DeskError::NoGroup(group));
        }
        let members = self.items(
            &format!("WHERE p.group_id = ?1 ORDER BY p.arrived_at, p.id LIMIT {GROUP_MEMBERS}"),
            &[&group],
        )?;
        let decision: Option<String> = self
            .db
            .query_row(
                "SELECT decision FROM group_decisions WHERE group_id = ?1 AND undone_at IS NULL
                 ORDER BY id DESC LIMIT 1",
                [group],
                |r| r.get(0),
            )
            .optional()
            .map_err(err)?;
        let time = |t: Option<String>| {
            t.and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_default()
        };
        Ok(GroupCard {
            id: group,
            size: size.max(0) as u64,
            waiting: waiting.max(0) as u64,
            authors: authors.max(0) as u64,
            platforms: platforms
                .map(|p| p.split(',').map(str::to_owned).collect())
                .unwrap_or_default(),
            first_at: time(first),
            last_at: time(last),
            representative: members[0].clone(),
            members,
            decision: decision.as_deref().and_then(Decision::parse),
        })
    }

    /// The post's stored sentence embedding, if it has one.
    pub fn embedding(&self, post: &str) -> Result<Option<Vec<f32>>, DeskError> {
        let blob: Option<Option<Vec<u8>>> = self
            .db
            .query_row("SELECT embedding FROM posts WHERE id = ?1", [post], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(blob.flatten().and_then(|b| crate::groups::from_blob(&b)))
    }

    /// A group's centroid, normalised (its members' mean direction).
    pub fn centroid(&self, group: i64) -> Result<Option<Vec<f32>>, DeskError> {
        let blob: Option<Vec<u8>> = self
            .db
            .query_row("SELECT centroid FROM groups WHERE id = ?1", [group], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(blob.and_then(|b| crate::groups::from_blob(&b)).map(|v| {
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            v.into_iter().map(|x| x / n).collect()
        }))
    }

    /// Every decision on `post`, oldest first: (decision, who, when).
    pub fn history(&self, post: &str) -> Result<Vec<(Decision, String, String)>, DeskError> {
        Ok(history_of(&self.db, post)
            .map_err(|e| self.err(e))?
            .into_iter()
            .map(|h| (h.decision, h.who, h.at))
            .collect())
    }

    /// The current decision: the history replayed, each undo taking back the one before.
    pub fn current(&self, post: &str) -> Result<Option<Decision>, DeskError> {
        Ok(replay(&history_of(&self.db, post).map_err(|e| self.err(e))?).map(|h| h.decision))
    }

    fn items(&self, tail: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<Item>, DeskError> {
        let sql = format!(
            "SELECT {ITEM_COLUMNS} FROM posts p LEFT JOIN current c ON c.post_id = p.id {tail}"
        );
        let mut q = self.db.prepare_cached(&sql).map_err(|e| self.err(e))?;
        let rows = q.query_map(args, item).map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// One post, with its current decision.
    pub fn item(&self, post: &str) -> Result<Item, DeskError> {
        self.items("WHERE p.id = ?1", &[&post])?
            .pop()
            .ok_or_else(|| DeskError::NoPost(post.to_owned()))
    }

    /// Flagged posts with no current decision, newest first or most probable first.
    pub fn queue(&self, order: Order, limit: usize) -> Result<Vec<Item>, DeskError> {
        self.queue_for(order, Who::All, limit)
    }

    /// [`DeskStore::queue`], of the posts `who` names.
    pub fn queue_for(&self, order: Order, who: Who, limit: usize) -> Result<Vec<Item>, DeskError> {
        let order = order_sql(order);
        let (held, name) = who_sql(who);
        self.items(
            &format!("WHERE {IN_QUEUE} {held} ORDER BY {order} LIMIT {limit}"),
            &[&name],
        )
    }

    /// Posts decided as needing a reply that has not gone out yet (of those `who` names),
    /// the least time left on the first-response clock first.
    pub fn waiting(&self, who: Who, limit: usize) -> Result<Vec<Item>, DeskError> {
        let (held, name) = who_sql(who);
        self.items(
            &format!("WHERE {AWAITING_REPLY} {held} ORDER BY p.arrived_at, p.id LIMIT {limit}"),
            &[&name],
        )
    }

    /// What the desk's `/metrics` reports: the queue's length and its oldest post's arrival,
    /// every decision recorded by kind (undo included), and the posts by platform.
    pub(crate) fn figures(&self) -> Result<Figures, DeskError> {
        let err = |e| self.err(e);
        let (queue, oldest): (i64, Option<String>) = self
            .db
            .query_row(
                &format!(
                    "SELECT COUNT(*), MIN(p.arrived_at)
                     FROM posts p LEFT JOIN current c ON c.post_id = p.id WHERE {IN_QUEUE}"
                ),
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(err)?;
        let counts = |sql: &str| -> Result<Vec<(String, u64)>, DeskError> {
            let mut q = self.db.prepare_cached(sql).map_err(err)?;
            let rows = q
                .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)?.max(0) as u64)))
                .map_err(err)?;
            rows.collect::<Result<_, _>>().map_err(err)
        };
        let recorded = counts("SELECT decision, COUNT(*) FROM decisions GROUP BY decision")?;
        Ok(Figures {
            queue: queue.max(0) as u64,
            oldest_undecided: oldest
                .and_then(|a| DateTime::parse_from_rfc3339(&a).ok())
                .map(|a| a.with_timezone(&Utc)),
            decisions: Decision::ALL
                .into_iter()
                .map(|d| {
                    let n = recorded.iter().find(|(k, _)| k == d.as_str());
                    (d, n.map_or(0, |(_, n)| *n))
                })
                .collect(),
            posts: counts("SELECT platform, COUNT(*) FROM posts GROUP BY platform")?,
        })
    }

    /// Undecided posts whose probability lies within `band` of the threshold, on both sides
    /// (the unflagged ones there are where misses are found), closest first.
    pub fn uncertain(&self, band: f64, limit: usize) -> Result<Vec<Item>, DeskError> {
        self.items(
            &format!(
                "WHERE ABS(p.probability - p.threshold) <= ?1 AND c.decision IS NULL
                 ORDER BY ABS(p.probability - p.threshold), p.id LIMIT {limit}"
            ),
            &[&band],
        )
    }

    /// Posts first seen since `since` (seen, flagged, what decisions say of those flags) and
    /// the posts decided since then.
    pub fn today(&self, since: DateTime<Utc>) -> Result<Today, DeskError> {
        let sql = "SELECT COUNT(*),
                COALESCE(SUM(p.need_support), 0),
                (SELECT COUNT(*) FROM current WHERE at >= ?1),
                COALESCE(SUM(p.need_support = 1 AND c.decision IS NOT NULL), 0),
                COALESCE(SUM(p.need_support = 1 AND c.decision IN ('needs_reply', 'done')), 0),
                COALESCE(SUM(p.need_support = 0 AND c.decision IN ('needs_reply', 'done')), 0),
                COALESCE(SUM(CASE WHEN p.need_support = 0 THEN p.words END), 0),
                COALESCE(SUM(CASE WHEN p.need_support = 1 AND c.decision = 'no_reply' THEN p.words END), 0),
                COALESCE(SUM(CASE WHEN p.need_support = 0 AND c.decision IN ('needs_reply', 'done') THEN p.words END), 0)
             FROM posts p LEFT JOIN current c ON c.post_id = p.id
             WHERE p.arrived_at >= ?1";
        let since = since.to_rfc3339();
        let mut t = self
            .db
            .query_row(sql, [since], |r| {
                let n = |i| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
                Ok(Today {
                    seen: n(0)?,
                    flagged: n(1)?,
                    decided: n(2)?,
                    flagged_decided: n(3)?,
                    flagged_needed: n(4)?,
                    missed_found: n(5)?,
                    precision: None,
                    words_unflagged: n(6)?,
                    words_wasted: n(7)?,
                    words_missed: n(8)?,
                })
            })
            .map_err(|e| self.err(e))?;
        t.precision =
            (t.flagged_decided > 0).then(|| t.flagged_needed as f64 / t.flagged_decided as f64);
        Ok(t)
    }

    /// The labels the team's current decisions amount to, `(id, label)` in id order: the
    /// split stage's labels file. `bulk`: also the decisions made for a whole question group
    /// at once (else only posts decided one by one).
    pub fn labels(&self, bulk: bool) -> Result<Vec<(String, u8)>, DeskError> {
        let one_by_one = if bulk {
            Default::default()
        } else {
            self.decided_one_by_one()?
        };
        Ok(self
            .decided()?
            .into_iter()
            .filter(|(item, _)| bulk || one_by_one.contains(&item.id))
            .filter_map(|(item, _)| Some((item.id, item.decision?.label()?)))
            .collect())
    }

    /// The posts whose current decision was made for them alone (not with their group).
    pub fn decided_one_by_one(&self) -> Result<std::collections::HashSet<String>, DeskError> {
        let mut q = self
            .db
            .prepare("SELECT post_id FROM current WHERE bulk IS NULL")
            .map_err(|e| self.err(e))?;
        let rows = q.query_map([], |r| r.get(0)).map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Every post with a current decision, in id order, with who made that decision.
    pub fn decided(&self) -> Result<Vec<(Item, String)>, DeskError> {
        let sql = format!(
            "SELECT {ITEM_COLUMNS}, c.who
             FROM posts p JOIN current c ON c.post_id = p.id ORDER BY p.id"
        );
        let mut q = self.db.prepare(&sql).map_err(|e| self.err(e))?;
        let rows = q
            .query_map([], |r| Ok((item(r)?, r.get(ITEM_WIDTH)?)))
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }
}

impl DeskStore {
    /// Records a reply about to be sent (state `sending`) with a fresh idempotency key; the
    /// row. `group`: the question group answered at once, if one.
    pub fn start_reply(
        &mut self,
        post: &str,
        text: &str,
        who: &str,
        group: Option<i64>,
    ) -> Result<ReplyRow, DeskError> {
        let item = self.item(post)?;
        let key = format!("flagship-desk-{}", &crate::auth::random_token()[..24]);
        self.db
            .execute(
                "INSERT INTO replies (post_id, platform, text, key, who, at, state, grp)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'sending', ?7)",
                params![
                    post,
                    item.platform,
                    text,
                    key,
                    who,
                    Utc::now().to_rfc3339(),
                    group
                ],
            )
            .map_err(|e| self.err(e))?;
        self.reply_row(self.db.last_insert_rowid())
    }

    /// How a reply ended: `sent` (with the reply's id and link), `failed` (the platform's
    /// error), `unknown` (it may have gone out), or `sending` again (a retry).
    pub fn finish_reply(
        &mut self,
        id: i64,
        state: &str,
        reply_id: Option<&str>,
        reply_url: Option<&str>,
        error: Option<&str>,
    ) -> Result<ReplyRow, DeskError> {
        self.db
            .execute(
                "UPDATE replies SET state = ?2, reply_id = ?3, reply_url = ?4, error = ?5,
                 finished_at = ?6 WHERE id = ?1",
                params![
                    id,
                    state,
                    reply_id,
                    reply_url,
                    error,
                    Utc::now().to_rfc3339()
                ],
            )
            .map_err(|e| self.err(e))?;
        self.reply_row(id)
    }

    fn replies_where(
        &self,
        tail: &str,
        arg: &dyn rusqlite::ToSql,
    ) -> Result<Vec<ReplyRow>, DeskError> {
        let mut q = self
            .db
            .prepare_cached(&format!(
                "SELECT id, post_id, platform, text, key, who, at, state, reply_id, reply_url, error
                 FROM replies {tail}"
            ))
            .map_err(|e| self.err(e))?;
        let rows = q
            .query_map([arg], |r| {
                Ok(ReplyRow {
                    id: r.get(0)?,
                    post_id: r.get(1)?,
                    platform: r.get(2)?,
                    text: r.get(3)?,
                    key: r.get(4)?,
                    who: r.get(5)?,
                    at: time_at(r, 6, "at")?.ok_or_else(|| bad(6, "at", "NULL".into()))?,
                    state: r.get(7)?,
                    reply_id: r.get(8)?,
                    reply_url: r.get(9)?,
                    error: r.get(10)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// One reply row.
    pub fn reply_row(&self, id: i64) -> Result<ReplyRow, DeskError> {
        self.replies_where("WHERE id = ?1", &id)?
            .pop()
            .ok_or(DeskError::NoReply(id))
    }

    /// Every reply sent or tried on `post`, newest first.
    pub fn replies_of(&self, post: &str) -> Result<Vec<ReplyRow>, DeskError> {
        self.replies_where("WHERE post_id = ?1 ORDER BY id DESC", &post)
    }

    /// The parent a post's refs name, for the thread view: the post itself when the desk
    /// has it (Bluesky's and X's ids are the desk's), else what was fetched before.
    pub fn parent(&self, id: &str) -> Result<Option<Parent>, DeskError> {
        if let Ok(i) = self.item(id) {
            return Ok(Some(Parent {
                author: i.author,
                text: i.text,
                url: i.url,
            }));
        }
        self.db
            .query_row(
                "SELECT author, text, url FROM parents WHERE id = ?1",
                [id],
                |r| {
                    Ok(Parent {
                        author: r.get(0)?,
                        text: r.get(1)?,
                        url: r.get(2)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Keeps a parent fetched from its platform (fetched once).
    pub fn cache_parent(&mut self, id: &str, p: &Parent) -> Result<(), DeskError> {
        self.db
            .execute(
                "INSERT OR REPLACE INTO parents (id, author, text, url, fetched_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, p.author, p.text, p.url, Utc::now().to_rfc3339()],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

impl DeskStore {
    /// The saved answers in use, by title.
    pub fn answers(&self) -> Result<Vec<Answer>, DeskError> {
        let mut q = self
            .db
            .prepare_cached(
                "SELECT id, title, body, updated_by, updated_at, embedding, embedded_by
                 FROM answers WHERE deleted = 0 ORDER BY title COLLATE NOCASE, id",
            )
            .map_err(|e| self.err(e))?;
        let rows = q
            .query_map([], |r| {
                let blob: Option<Vec<u8>> = r.get(5)?;
                let by: Option<String> = r.get(6)?;
                Ok(Answer {
                    id: r.get(0)?,
                    title: r.get(1)?,
                    body: r.get(2)?,
                    updated_by: r.get(3)?,
                    updated_at: time_at(r, 4, "updated_at")?
                        .ok_or_else(|| bad(4, "updated_at", "NULL".into()))?,
                    embedding: blob.and_then(|b| crate::groups::from_blob(&b)).zip(by),
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Creates (`id` `None`) or edits a saved answer, with the change in its history; its
    /// id. An edit drops the old embedding (the text changed).
    pub fn save_answer(
        &mut self,
        id: Option<i64>,
        title: &str,
        body: &str,
        who: &str,
    ) -> Result<i64, DeskError> {
        let at = Utc::now().to_rfc3339();
        let (tx, wrap) = begin(&mut self.db, &self.path)?;
        let (id, action) = match id {
            None => {
                tx.execute(
                    "INSERT INTO answers (title, body, updated_by, updated_at) VALUES (?1, ?2, ?3, ?4)",
                    params![title, body, who, at],
                )
                .map_err(wrap)?;
                (tx.last_insert_rowid(), "created")
            }
            Some(id) => {
                let n = tx
                    .execute(
                        "UPDATE answers SET title = ?2, body = ?3, updated_by = ?4, updated_at = ?5,
                         embedding = NULL, embedded_by = NULL WHERE id = ?1 AND deleted = 0",
                        params![id, title, body, who, at],
                    )
                    .map_err(wrap)?;
                if n == 0 {
                    return Err(DeskError::NoAnswer(id));
                }
                (id, "edited")
            }
        };
        tx.execute(
            "INSERT INTO answer_history (answer_id, action, title, body, who, at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![id, action, title, body, who, at],
        )
        .map_err(wrap)?;
        tx.commit().map_err(wrap)?;
        Ok(id)
    }

    /// Retires a saved answer (its history stays).
    pub fn delete_answer(&mut self, id: i64, who: &str) -> Result<(), DeskError> {
        let at = Utc::now().to_rfc3339();
        let (tx, wrap) = begin(&mut self.db, &self.path)?;
        let n = tx
            .execute(
                "UPDATE answers SET deleted = 1, updated_by = ?2, updated_at = ?3
                 WHERE id = ?1 AND deleted = 0",
                params![id, who, at],
            )
            .map_err(wrap)?;
        if n == 0 {
            return Err(DeskError::NoAnswer(id));
        }
        tx.execute(
            "INSERT INTO answer_history (answer_id, action, title, body, who, at)
             SELECT id, 'deleted', title, body, ?2, ?3 FROM answers WHERE id = ?1",
            params![id, who, at],
        )
        .map_err(wrap)?;
        tx.commit().map_err(wrap)?;
        Ok(())
    }

    /// Every change to the saved answers, newest first (at most `limit`).
    pub fn answer_history(&self, limit: usize) -> Result<Vec<AnswerChange>, DeskError> {
        let mut q = self
            .db
            .prepare_cached(&format!(
                "SELECT answer_id, action, title, body, who, at FROM answer_history
                 ORDER BY seq DESC LIMIT {limit}"
            ))
            .map_err(|e| self.err(e))?;
        let rows = q
            .query_map([], |r| {
                Ok(AnswerChange {
                    answer: r.get(0)?,
                    action: r.get(1)?,
                    title: r.get(2)?,
                    body: r.get(3)?,
                    who: r.get(4)?,
                    at: time_at(r, 5, "at")?.ok_or_else(|| bad(5, "at", "NULL".into()))?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Keeps a saved answer's embedding, made by encoder `by` (when the answer's text is
    /// still the one embedded: `updated_at` unchanged).
    pub fn set_answer_embedding(
        &mut self,
        id: i64,
        updated_at: DateTime<Utc>,
        v: &[f32],
        by: &str,
    ) -> Result<(), DeskError> {
        self.db
            .execute(
                "UPDATE answers SET embedding = ?2, embedded_by = ?3 WHERE id = ?1 AND updated_at = ?4",
                params![id, crate::groups::to_blob(v), by, updated_at.to_rfc3339()],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

impl DeskStore {
    /// Opens a session for `user` at `now` (Unix seconds): its id (the cookie's value; only
    /// its SHA-256 is stored). In the same transaction, expired sessions are dropped and
    /// `user`'s oldest beyond `policy.per_user` end.
    pub fn open_session(
        &mut self,
        user: &str,
        policy: &SessionPolicy,
        now: i64,
    ) -> Result<(String, Session), DeskError> {
        let id = crate::auth::random_token();
        let session = Session {
            user: user.to_owned(),
            csrf: crate::auth::random_token(),
            // The desk sets the role from its users; the database never holds one.
            role: crate::auth::Role::Viewer,
        };
        let (tx, wrap) = begin(&mut self.db, &self.path)?;
        tx.execute(
            "DELETE FROM sessions WHERE created <= ?1 OR seen <= ?2",
            params![now - secs(policy.max), now - secs(policy.idle)],
        )
        .map_err(wrap)?;
        tx.execute(
            "INSERT INTO sessions (id_hash, user, csrf, created, seen) VALUES (?1, ?2, ?3, ?4, ?4)",
            params![session_key(&id), user, session.csrf, now],
        )
        .map_err(wrap)?;
        tx.execute(
            "DELETE FROM sessions WHERE user = ?1 AND id_hash NOT IN (
                 SELECT id_hash FROM sessions WHERE user = ?1
                 ORDER BY created DESC, rowid DESC LIMIT ?2)",
            params![user, policy.per_user as i64],
        )
        .map_err(wrap)?;
        tx.commit().map_err(wrap)?;
        Ok((id, session))
    }

    /// The session whose id is `id`, if it is open at `now`: not idle past `policy.idle`,
    /// not older than `policy.max`. Its last use is written when it is a minute (or half the
    /// idle time) old, not on every request.
    pub fn session(
        &mut self,
        id: &str,
        policy: &SessionPolicy,
        now: i64,
    ) -> Result<Option<Session>, DeskError> {
        let key = session_key(id);
        let row = self
            .db
            .query_row(
                "SELECT user, csrf, created, seen FROM sessions WHERE id_hash = ?1",
                [&key],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                },
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let Some((user, csrf, created, seen)) = row else {
            return Ok(None);
        };
        if now - created >= secs(policy.max) || now - seen >= secs(policy.idle) {
            self.db
                .execute("DELETE FROM sessions WHERE id_hash = ?1", [&key])
                .map_err(|e| self.err(e))?;
            return Ok(None);
        }
        if now - seen >= (secs(policy.idle) / 2).min(60) {
            self.db
                .execute(
                    "UPDATE sessions SET seen = ?2 WHERE id_hash = ?1",
                    params![key, now],
                )
                .map_err(|e| self.err(e))?;
        }
        Ok(Some(Session {
            user,
            csrf,
            role: crate::auth::Role::Viewer,
        }))
    }

    /// Ends the session whose id is `id` (logout).
    pub fn close_session(&mut self, id: &str) -> Result<(), DeskError> {
        self.db
            .execute("DELETE FROM sessions WHERE id_hash = ?1", [session_key(id)])
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Ends every session of `user` (a password changed, a user removed); how many.
    pub fn revoke_user(&mut self, user: &str) -> Result<usize, DeskError> {
        self.db
            .execute("DELETE FROM sessions WHERE user = ?1", [user])
            .map_err(|e| self.err(e))
    }

    /// How many sessions `user` holds (expired ones not yet dropped included).
    pub fn sessions_of(&self, user: &str) -> Result<usize, DeskError> {
        self.db
            .query_row(
                "SELECT COUNT(*) FROM sessions WHERE user = ?1",
                [user],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as usize)
            .map_err(|e| self.err(e))
    }

    /// The stored keys of every session (tests: the ids themselves are never there).
    pub fn session_keys(&self) -> Result<Vec<String>, DeskError> {
        let mut q = self
            .db
            .prepare("SELECT id_hash FROM sessions")
            .map_err(|e| self.err(e))?;
        let rows = q.query_map([], |r| r.get(0)).map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }
}

/// A queue order as SQL.
fn order_sql(order: Order) -> &'static str {
    match order {
        Order::Newest => "p.arrived_at DESC, p.id",
        Order::Probability => "p.probability DESC, p.id",
        Order::Due => "p.arrived_at, p.id",
    }
}

/// The condition `who` adds to a view (on `?1`, the name it binds; empty when none).
fn who_sql(who: Who) -> (&'static str, String) {
    match who {
        Who::All => ("AND ?1 = ''", String::new()),
        Who::Mine(name) => (
            "AND EXISTS (SELECT 1 FROM assignments a WHERE a.post_id = p.id AND a.who = ?1)",
            name.to_owned(),
        ),
        Who::Unassigned => (
            "AND ?1 = '' AND NOT EXISTS (SELECT 1 FROM assignments a WHERE a.post_id = p.id)",
            String::new(),
        ),
    }
}

/// Whole seconds of `d`, as SQLite stores them.
fn secs(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2)
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

/// One row of a post's decision history.
#[derive(Debug, Clone)]
struct Made {
    decision: Decision,
    who: String,
    at: String,
    /// The group decision it was part of.
    bulk: Option<i64>,
}

fn history_of(db: &Connection, post: &str) -> rusqlite::Result<Vec<Made>> {
    let mut q = db.prepare_cached(
        "SELECT decision, who, at, bulk FROM decisions WHERE post_id = ?1 ORDER BY seq",
    )?;
    let rows = q.query_map([post], |r| {
        Ok(Made {
            decision: decision_at(r, 0)?.ok_or_else(|| bad(0, "decision", "NULL".into()))?,
            who: r.get(1)?,
            at: r.get(2)?,
            bulk: r.get(3)?,
        })
    })?;
    rows.collect()
}

/// The history replayed: each undo takes back the decision before it. The decision left on
/// top, with who made it, when, and its group decision.
fn replay(history: &[Made]) -> Option<Made> {
    let mut stack = Vec::new();
    for h in history {
        match h.decision {
            Decision::Undo => {
                stack.pop();
            }
            _ => stack.push(h),
        }
    }
    stack.pop().cloned()
}

/// Records `decision` on `post` inside `tx` (`bulk`: as part of that group decision) and
/// keeps `current`. `None`: no such post; `Some(Err)`: nothing to undo; else the post's
/// current decision after it.
fn decide_in(
    tx: &Connection,
    post: &str,
    decision: Decision,
    who: &str,
    bulk: Option<i64>,
    at: DateTime<Utc>,
) -> rusqlite::Result<Option<Result<Option<Decision>, DeskError>>> {
    let exists = tx
        .query_row("SELECT 1 FROM posts WHERE id = ?1", [post], |_| Ok(()))
        .optional()?
        .is_some();
    if !exists {
        return Ok(None);
    }
    let top = replay(&history_of(tx, post)?);
    match (decision, &top) {
        (Decision::Undo, None) => {
            return Ok(Some(Err(DeskError::NothingToUndo(post.to_owned()))));
        }
        // The same person pressing the same key again: already so.
        (d, Some(now)) if d == now.decision && now.who == who && bulk.is_none() => {
            return Ok(Some(Ok(Some(d))));
        }
        _ => {}
    }
    tx.execute(
        "INSERT INTO decisions (post_id, decision, who, at, bulk) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![post, decision.as_str(), who, at.to_rfc3339(), bulk],
    )?;
    let now = replay(&history_of(tx, post)?);
    match &now {
        Some(m) => tx.execute(
            "INSERT OR REPLACE INTO current (post_id, decision, who, at, bulk) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![post, m.decision.as_str(), m.who, m.at, m.bulk],
        ),
        None => tx.execute("DELETE FROM current WHERE post_id = ?1", [post]),
    }?;
    Ok(Some(Ok(now.map(|m| m.decision))))
}

impl flagship_core::live::Sink for DeskStore {
    fn write(
        &mut self,
        scored: &[flagship_core::live::Scored],
    ) -> Result<(), flagship_core::live::SinkError> {
        self.add(scored)
            .map(drop)
            .map_err(flagship_core::live::SinkError::of)
    }

    fn explained(
        &mut self,
        why: &[flagship_core::live::Explained],
    ) -> Result<(), flagship_core::live::SinkError> {
        self.explain(why)
            .map(drop)
            .map_err(flagship_core::live::SinkError::of)
    }
}
