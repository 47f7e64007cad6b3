//! The desk store on a real SQLite file: posts never twice, decisions durable across a
//! reopen with who and when, undo, two people on one post, the queue and the uncertain band,
//! today's precision, labels out, and clear errors for a locked or foreign database.

use chrono::{TimeZone, Utc};
use flagship_core::live::Scored;
use flagship_core::{Platform, Post};
use flagship_desk::{Decision, DeskError, DeskStore, Order};

fn scored(id: &str, platform: Platform, minute: u32, p: f32) -> Scored {
    Scored {
        post: Post {
            platform,
            id: id.into(),
            url: Some(format!("https://example.org/{minute}")),
            created_at: Some(Utc.with_ymd_and_hms(2026, 11, 30, 12, minute, 0).unwrap()),
            text: format!("<script>alert({minute})</script> post {minute}"),
            author_username: Some("someone".into()),
            ..Post::default()
        },
        text_model: format!("post {minute}"),
        matched: vec![],
        client: None,
        probability: p,
        need_support: f64::from(p) >= 0.5,
        threshold: 0.5,
        model_id: "m1".into(),
        scored_at: Utc::now(),
        latency_ms: 1.0,
        hurried: false,
        why: vec![flagship_core::live::Why {
            word: "late".into(),
            weight: 0.25,
        }],
    }
}

fn batch() -> Vec<Scored> {
    vec![
        scored("1", Platform::X, 1, 0.9),
        scored(
            "at://did:plc:a/app.bsky.feed.post/k",
            Platform::Bluesky,
            2,
            0.55,
        ),
        scored(
            "https://m.social/users/b/statuses/3",
            Platform::Mastodon,
            3,
            0.45,
        ),
        scored("4", Platform::X, 4, 0.1),
        scored("5", Platform::X, 5, 0.7),
    ]
}

#[test]
fn decisions_are_durable_audited_and_become_labels() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deep/desk.sqlite");
    let mut store = DeskStore::open(&path).unwrap();
    store.add(&batch()).unwrap();
    store.add(&batch()).unwrap(); // the live loop sending a post again: still once
    let queue = store.queue(Order::Newest, 10).unwrap();
    let ids: Vec<&str> = queue.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["5", "at://did:plc:a/app.bsky.feed.post/k", "1"]);
    let by_p: Vec<String> = store
        .queue(Order::Probability, 10)
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(by_p, ["1", "5", "at://did:plc:a/app.bsky.feed.post/k"]);
    // Text is stored as sent; escaping is the page's job.
    assert!(queue[0].text.starts_with("<script>"));
    // Why each post was flagged comes back with it.
    assert_eq!(queue[0].why[0].word, "late");
    // The live loop's words, sent after the post, replace what it had; an unknown id is
    // not found (and nothing else changes).
    let later = |id: &str, word: &str| flagship_core::live::Explained {
        platform: Platform::X,
        id: id.into(),
        why: vec![flagship_core::live::Why {
            word: word.into(),
            weight: 0.5,
        }],
        embedding: Vec::new(),
    };
    assert_eq!(
        store
            .explain(&[later("5", "broken"), later("nope", "x")])
            .unwrap()
            .found,
        1
    );
    let queue = store.queue(Order::Newest, 10).unwrap();
    assert_eq!(queue[0].why[0].word, "broken");
    assert_eq!(queue[2].why[0].word, "late");

    // The uncertain band holds the unflagged post just under the threshold too.
    let unsure: Vec<String> = store
        .uncertain(0.06, 10)
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(
        unsure,
        [
            "at://did:plc:a/app.bsky.feed.post/k",
            "https://m.social/users/b/statuses/3"
        ]
    );

    assert_eq!(
        store.decide("1", Decision::NeedsReply, "ana").unwrap(),
        Some(Decision::NeedsReply)
    );
    // Two people on one post: both in the history, the latest shown.
    store.decide("5", Decision::NoReply, "ana").unwrap();
    store.decide("5", Decision::NeedsReply, "bo").unwrap();
    // An undo steps back one decision.
    store.decide("1", Decision::Done, "ana").unwrap();
    assert_eq!(
        store.decide("1", Decision::Undo, "ana").unwrap(),
        Some(Decision::NeedsReply)
    );
    store
        .decide(
            "https://m.social/users/b/statuses/3",
            Decision::NoReply,
            "bo",
        )
        .unwrap();
    assert!(matches!(
        store.decide("nope", Decision::Done, "ana"),
        Err(DeskError::NoPost(_))
    ));
    drop(store);

    // A restart keeps everything.
    let store = DeskStore::open(&path).unwrap();
    let h = store.history("5").unwrap();
    let who: Vec<(&str, Decision)> = h.iter().map(|(d, w, _)| (w.as_str(), *d)).collect();
    assert_eq!(
        who,
        [("ana", Decision::NoReply), ("bo", Decision::NeedsReply)]
    );
    assert_eq!(store.current("5").unwrap(), Some(Decision::NeedsReply));
    // Who made each current decision (what the exports credit).
    let decided: Vec<(String, String)> = store
        .decided()
        .unwrap()
        .into_iter()
        .map(|(i, who)| (i.id, who))
        .collect();
    assert_eq!(
        decided,
        [
            ("1".to_string(), "ana".to_string()),
            ("5".into(), "bo".into()),
            ("https://m.social/users/b/statuses/3".into(), "bo".into()),
        ]
    );
    let left: Vec<String> = store
        .queue(Order::Newest, 10)
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(left, ["at://did:plc:a/app.bsky.feed.post/k"]);
    let today = store
        .today(Utc::now() - chrono::Duration::hours(1))
        .unwrap();
    assert_eq!((today.seen, today.flagged, today.decided), (5, 3, 3));
    assert_eq!(today.precision, Some(1.0));
    // Decisions as the split stage's labels: needs a reply → 0, none needed → 2.
    assert_eq!(
        store.labels(true).unwrap(),
        [
            ("1".to_owned(), 0),
            ("5".to_owned(), 0),
            ("https://m.social/users/b/statuses/3".to_owned(), 2)
        ]
    );
}

#[test]
fn a_locked_or_foreign_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("desk.sqlite");
    let mut store = DeskStore::open(&path).unwrap();
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE;").unwrap();
    let e = store.add(&batch()).unwrap_err();
    assert!(matches!(e, DeskError::Locked { .. }), "{e}");
    assert!(e.to_string().contains("locked by another process"), "{e}");
    other.execute_batch("ROLLBACK;").unwrap();
    store.add(&batch()).unwrap();

    let foreign = dir.path().join("other.sqlite");
    rusqlite::Connection::open(&foreign)
        .unwrap()
        .execute_batch("PRAGMA user_version = 99;")
        .unwrap();
    let e = DeskStore::open(&foreign).err().unwrap();
    assert!(e.to_string().contains("schema version 99"), "{e}");
}

/// Back from schema 8 to 4 (the team's tables stay: their step only creates what is missing):
/// no hurried mark, no replies, no question groups, group decisions or saved answers.
const BACK_TO_4: &str = "DROP TABLE parents; DROP INDEX replies_post; DROP TABLE replies;
     ALTER TABLE posts DROP COLUMN refs;
     DROP TABLE answer_history; DROP TABLE answers;
     ALTER TABLE current DROP COLUMN bulk; ALTER TABLE decisions DROP COLUMN bulk;
     DROP TABLE group_decisions; DROP INDEX posts_group;
     ALTER TABLE posts DROP COLUMN embedding; ALTER TABLE posts DROP COLUMN group_id;
     DROP TABLE groups; ALTER TABLE posts DROP COLUMN hurried;";

#[test]
fn a_schema_2_desk_is_upgraded_in_place_and_keeps_its_posts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("desk.sqlite");
    {
        let mut store = DeskStore::open(&path).unwrap();
        store.add(&batch()).unwrap();
    }
    // Back to what schema 2 looked like: no `why` column, no sessions.
    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute_batch(BACK_TO_4).unwrap();
    db.execute_batch(
        "ALTER TABLE posts DROP COLUMN why; DROP TABLE sessions; PRAGMA user_version = 2;",
    )
    .unwrap();
    drop(db);
    // A reader (export, monitor, split) upgrades it too, then reads it.
    let store = DeskStore::open_existing(&path).unwrap();
    let queue = store.queue(Order::Newest, 10).unwrap();
    assert_eq!(queue.len(), 3);
    assert!(queue.iter().all(|i| i.why.is_empty()));
    drop(store);
    let store = DeskStore::open(&path).unwrap();
    assert_eq!(store.queue(Order::Newest, 10).unwrap().len(), 3);
}

#[test]
fn a_schema_3_desk_gains_its_sessions_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("desk.sqlite");
    {
        let mut store = DeskStore::open(&path).unwrap();
        store.add(&batch()).unwrap();
    }
    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute_batch(BACK_TO_4).unwrap();
    db.execute_batch("DROP TABLE sessions; PRAGMA user_version = 3;")
        .unwrap();
    drop(db);
    let store = DeskStore::open_existing(&path).unwrap();
    assert_eq!(store.sessions_of("ana").unwrap(), 0);
    drop(store);
    let mut store = DeskStore::open(&path).unwrap();
    let policy = flagship_desk::auth::SessionPolicy::default();
    let (id, s) = store.open_session("ana", &policy, 1_000).unwrap();
    assert_eq!(
        store.session(&id, &policy, 1_001).unwrap().unwrap().csrf,
        s.csrf
    );
    assert_eq!(store.queue(Order::Newest, 10).unwrap().len(), 3);
    let version: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, flagship_desk::SCHEMA);
}

#[test]
fn sessions_end_when_idle_or_old_and_each_user_keeps_a_few() {
    use flagship_desk::auth::SessionPolicy;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let mut store = DeskStore::open(&dir.path().join("desk.sqlite")).unwrap();
    let policy = SessionPolicy {
        idle: Duration::from_secs(600),
        max: Duration::from_secs(3600),
        per_user: 2,
    };
    let t0 = 1_700_000_000;
    // Idle: used within 600 s it lives (each use counts), unused for 600 s it ends.
    let (idle, _) = store.open_session("ana", &policy, t0).unwrap();
    assert!(store.session(&idle, &policy, t0 + 500).unwrap().is_some());
    assert!(store.session(&idle, &policy, t0 + 1_000).unwrap().is_some());
    assert!(store.session(&idle, &policy, t0 + 1_600).unwrap().is_none());
    // Absolute: used every 500 s, it still ends 3600 s after it opened.
    let (old, _) = store.open_session("bo", &policy, t0).unwrap();
    let mut t = t0;
    while t + 500 < t0 + 3_600 {
        t += 500;
        assert!(store.session(&old, &policy, t).unwrap().is_some(), "at {t}");
    }
    assert!(store.session(&old, &policy, t0 + 3_600).unwrap().is_none());
    // A third session of one user ends the first; a logout ends one; a revocation all.
    let (a, _) = store.open_session("carla", &policy, t0).unwrap();
    let (b, _) = store.open_session("carla", &policy, t0 + 1).unwrap();
    let (c, _) = store.open_session("carla", &policy, t0 + 2).unwrap();
    assert!(store.session(&a, &policy, t0 + 3).unwrap().is_none());
    assert!(store.session(&b, &policy, t0 + 3).unwrap().is_some());
    store.close_session(&b).unwrap();
    assert!(store.session(&b, &policy, t0 + 3).unwrap().is_none());
    assert_eq!(store.revoke_user("carla").unwrap(), 1);
    assert!(store.session(&c, &policy, t0 + 3).unwrap().is_none());
    // The ids are never stored.
    assert!(
        !store
            .session_keys()
            .unwrap()
            .iter()
            .any(|k| [&a, &b, &c].contains(&k))
    );
}

#[test]
fn the_hurried_mark_is_stored_and_a_careful_score_clears_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("desk.sqlite");
    let mut store = DeskStore::open(&path).unwrap();
    let marks = |store: &DeskStore| -> Vec<(String, bool)> {
        let mut v: Vec<(String, bool)> = store
            .queue(Order::Newest, 10)
            .unwrap()
            .into_iter()
            .map(|i| (i.id, i.hurried))
            .collect();
        v.sort();
        v
    };
    let mut quick = scored("1", Platform::X, 1, 0.9);
    quick.hurried = true;
    store
        .add(&[quick.clone(), scored("5", Platform::X, 5, 0.7)])
        .unwrap();
    assert_eq!(marks(&store), [("1".into(), true), ("5".into(), false)]);
    // Scored again later, with care: the mark went with the old score.
    let mut careful = quick;
    careful.hurried = false;
    careful.scored_at += chrono::Duration::seconds(1);
    store.add(&[careful]).unwrap();
    assert_eq!(marks(&store), [("1".into(), false), ("5".into(), false)]);
    let mut again = scored("5", Platform::X, 5, 0.7);
    again.hurried = true;
    again.scored_at += chrono::Duration::seconds(1);
    store.add(&[again]).unwrap();
    assert_eq!(marks(&store), [("1".into(), false), ("5".into(), true)]);
    drop(store);
    // A schema-7 desk (no mark) gains the column; its posts read as scored with care.
    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute_batch("ALTER TABLE posts DROP COLUMN hurried; PRAGMA user_version = 7;")
        .unwrap();
    drop(db);
    let store = DeskStore::open_existing(&path).unwrap();
    assert_eq!(marks(&store), [("1".into(), false), ("5".into(), false)]);
    let version: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, flagship_desk::SCHEMA);
}
