//! Question groups and saved answers on a real SQLite file: flagged posts with near
//! embeddings share a group and far ones do not, an unflagged or unembedded post stays alone,
//! open groups survive a reopen, one group decision decides every waiting member (each row
//! marked bulk) and its undo takes them all back, labels can leave bulk decisions out, and
//! saved answers keep who changed what.

use chrono::{TimeZone, Utc};
use flagship_core::live::{Explained, Scored};
use flagship_core::{Platform, Post};
use flagship_desk::{Decision, DeskError, DeskStore, Order};

fn scored(id: &str, author: &str, p: f32) -> Scored {
    Scored {
        post: Post {
            platform: Platform::Bluesky,
            id: id.into(),
            url: Some(format!("https://bsky.app/profile/{author}/post/{id}")),
            created_at: Some(Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap()),
            text: format!("post {id}"),
            author_username: Some(author.into()),
            ..Post::default()
        },
        text_model: format!("post {id}"),
        matched: vec![],
        client: None,
        probability: p,
        need_support: f64::from(p) >= 0.5,
        threshold: 0.5,
        model_id: "m1".into(),
        scored_at: Utc::now(),
        latency_ms: 1.0,
        hurried: false,
        why: vec![],
    }
}

fn unit(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

fn embedded(id: &str, v: &[f32]) -> Explained {
    Explained {
        platform: Platform::Bluesky,
        id: id.into(),
        why: vec![],
        embedding: unit(v),
    }
}

#[test]
fn near_questions_group_and_a_group_is_decided_and_undone_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("desk.sqlite");
    let mut store = DeskStore::open(&path).unwrap();
    store
        .add(&[
            scored("a", "ana", 0.9),
            scored("b", "bo", 0.8),
            scored("c", "cy", 0.7),
            scored("far", "di", 0.9),
            scored("low", "ed", 0.2),
        ])
        .unwrap();
    let done = store
        .explain(&[
            embedded("a", &[1.0, 0.0, 0.0]),
            embedded("b", &[1.0, 0.1, 0.0]),
            embedded("far", &[0.0, 1.0, 0.0]),
            // Not flagged: never grouped.
            embedded("low", &[1.0, 0.0, 0.0]),
        ])
        .unwrap();
    assert_eq!(done.found, 4);
    let group_of = |id: &str| done.grouped.iter().find(|(p, _)| p == id).map(|(_, g)| *g);
    let g = group_of("a").unwrap();
    assert_eq!(group_of("b"), Some(g));
    assert_ne!(group_of("far"), Some(g));
    assert_eq!(group_of("low"), None);
    drop(store);

    // A reopen keeps the open group: a post like them joins it.
    let mut store = DeskStore::open(&path).unwrap();
    assert_eq!(store.open_groups(), 2);
    let done = store.explain(&[embedded("c", &[1.0, 0.0, 0.1])]).unwrap();
    assert_eq!(done.grouped, vec![("c".to_owned(), g)]);
    // A post explained twice keeps its group.
    assert!(
        store
            .explain(&[embedded("c", &[0.0, 0.0, 1.0])])
            .unwrap()
            .grouped
            .is_empty()
    );

    let card = store.group_card(g).unwrap();
    assert_eq!((card.size, card.waiting, card.authors), (3, 3, 3));
    assert_eq!(card.platforms, ["bluesky"]);
    assert_eq!(card.representative.id, "a");
    let members: Vec<&str> = card.members.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(members, ["a", "b", "c"]);
    assert!(
        store
            .queue(Order::Newest, 10)
            .unwrap()
            .iter()
            .all(|i| i.id == "far" || i.group == Some(g))
    );

    // One post decided alone first: the group decision takes the two still waiting.
    store.decide("b", Decision::NoReply, "ana").unwrap();
    let done = store.decide_group(g, Decision::NeedsReply, "bo").unwrap();
    let changed: Vec<&str> = done.posts.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(changed, ["a", "c"]);
    assert!(
        done.posts
            .iter()
            .all(|(_, d)| *d == Some(Decision::NeedsReply))
    );
    assert_eq!(store.current("a").unwrap(), Some(Decision::NeedsReply));
    let card = store.group_card(g).unwrap();
    assert_eq!(
        (card.waiting, card.decision),
        (0, Some(Decision::NeedsReply))
    );
    assert_eq!(store.history("a").unwrap()[0].1, "bo");

    // Labels: with bulk decisions, all three; without, the one decided alone.
    let all: Vec<String> = store
        .labels(true)
        .unwrap()
        .into_iter()
        .map(|l| l.0)
        .collect();
    assert_eq!(all, ["a", "b", "c"]);
    let alone: Vec<String> = store
        .labels(false)
        .unwrap()
        .into_iter()
        .map(|l| l.0)
        .collect();
    assert_eq!(alone, ["b"]);

    // Undo takes the whole group decision back — not the post decided alone.
    let undone = store.decide_group(g, Decision::Undo, "bo").unwrap();
    assert_eq!(undone.bulk, done.bulk);
    assert_eq!(undone.posts.len(), 2);
    assert_eq!(store.current("a").unwrap(), None);
    assert_eq!(store.current("c").unwrap(), None);
    assert_eq!(store.current("b").unwrap(), Some(Decision::NoReply));
    assert_eq!(store.group_card(g).unwrap().waiting, 2);
    let e = store.decide_group(g, Decision::Undo, "bo").unwrap_err();
    assert!(matches!(e, DeskError::NothingToUndoInGroup(_)), "{e}");
    assert!(matches!(
        store.decide_group(999, Decision::Done, "bo").unwrap_err(),
        DeskError::NoGroup(999)
    ));
}

#[test]
fn saved_answers_keep_who_changed_what() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = DeskStore::open(&dir.path().join("desk.sqlite")).unwrap();
    let id = store
        .save_answer(
            None,
            "Launch date",
            "Hi {author}, launch is on 22 Dec: {link}",
            "ana",
        )
        .unwrap();
    store
        .save_answer(
            Some(id),
            "Launch date",
            "Hi {author}, it launches 25 Dec.",
            "bo",
        )
        .unwrap();
    let other = store
        .save_answer(None, "<b>Images</b>", "Soon.", "bo")
        .unwrap();
    store
        .set_answer_embedding(
            other,
            store.answers().unwrap()[0].updated_at,
            &[1.0, 0.0],
            "enc",
        )
        .unwrap();
    store.delete_answer(other, "cy").unwrap();
    let answers = store.answers().unwrap();
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].body, "Hi {author}, it launches 25 Dec.");
    assert_eq!(answers[0].updated_by, "bo");
    let h = store.answer_history(10).unwrap();
    let log: Vec<(&str, &str)> = h
        .iter()
        .map(|c| (c.action.as_str(), c.who.as_str()))
        .collect();
    assert_eq!(
        log,
        [
            ("deleted", "cy"),
            ("created", "bo"),
            ("edited", "bo"),
            ("created", "ana")
        ]
    );
    assert!(matches!(
        store.save_answer(Some(other), "x", "y", "ana").unwrap_err(),
        DeskError::NoAnswer(_)
    ));
    // An embedding is kept only for the text it was made from.
    let a = &answers[0];
    store
        .set_answer_embedding(a.id, a.updated_at, &[0.6, 0.8], "enc")
        .unwrap();
    assert_eq!(
        store.answers().unwrap()[0].embedding,
        Some((vec![0.6, 0.8], "enc".to_owned()))
    );
    store
        .save_answer(Some(a.id), "Launch date", "changed", "ana")
        .unwrap();
    assert_eq!(store.answers().unwrap()[0].embedding, None);
}

/// Replies as the store keeps them: each attempt with its own key, how it ended, the latest
/// sent reply on the post; a parent from the desk's own posts or the fetched cache; a post's
/// references kept from the live post.
#[test]
fn replies_and_parents_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = DeskStore::open(&dir.path().join("desk.sqlite")).unwrap();
    let mut child = scored("at://did:plc:b/app.bsky.feed.post/c", "bo", 0.9);
    child.post.cid = Some("bafychild".into());
    child.post.reply_parent = Some(flagship_core::PostRef {
        id: "at://did:plc:a/app.bsky.feed.post/p".into(),
        cid: Some("bafyparent".into()),
        instance: None,
    });
    store
        .add(&[
            scored("at://did:plc:a/app.bsky.feed.post/p", "ana", 0.2),
            child,
        ])
        .unwrap();
    let item = store.item("at://did:plc:b/app.bsky.feed.post/c").unwrap();
    assert_eq!(item.refs.cid.as_deref(), Some("bafychild"));
    assert_eq!(
        item.refs.parent.as_ref().unwrap().cid.as_deref(),
        Some("bafyparent")
    );
    assert!(item.replied.is_none());

    let first = store.start_reply(&item.id, "Hi @bo", "ana", None).unwrap();
    let second = store.start_reply(&item.id, "Hi @bo", "ana", None).unwrap();
    assert_ne!(first.key, second.key, "each attempt its own key");
    assert_eq!(first.state, "sending");
    store
        .finish_reply(first.id, "unknown", None, None, Some("timed out"))
        .unwrap();
    store
        .finish_reply(
            second.id,
            "sent",
            Some("3kreply"),
            Some("https://bsky.app/profile/m/post/3kreply"),
            None,
        )
        .unwrap();
    let rows = store.replies_of(&item.id).unwrap();
    let states: Vec<&str> = rows.iter().map(|r| r.state.as_str()).collect();
    assert_eq!(states, ["sent", "unknown"]);
    let replied = store.item(&item.id).unwrap().replied.unwrap();
    assert_eq!(
        replied.url.as_deref(),
        Some("https://bsky.app/profile/m/post/3kreply")
    );
    assert_eq!(replied.who, "ana");

    // The parent: the desk's own post; a fetched one once kept.
    let p = store
        .parent("at://did:plc:a/app.bsky.feed.post/p")
        .unwrap()
        .unwrap();
    assert_eq!(p.text, "post at://did:plc:a/app.bsky.feed.post/p");
    assert!(store.parent("114870341462245939").unwrap().is_none());
    store
        .cache_parent(
            "114870341462245939",
            &flagship_desk::Parent {
                author: Some("@cy".into()),
                text: "<b>is it delayed?</b>".into(),
                url: None,
            },
        )
        .unwrap();
    assert_eq!(
        store.parent("114870341462245939").unwrap().unwrap().text,
        "<b>is it delayed?</b>"
    );
}
