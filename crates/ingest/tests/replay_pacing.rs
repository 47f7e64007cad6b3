//! A paced replay hands each line out when the recording says it happened (÷ speed), counted
//! from the first line — so a fast replay keeps its rate instead of adding each timer's
//! overshoot — and waits out a long quiet spell for a minute at most. On tokio's paused
//! clock, so the times are exact.

use flagship_ingest::source::{PostSource, Replay};

fn message(id: u32, at: &str) -> String {
    format!(r#"{{"data":{{"id":"{id}","text":"the telescope","created_at":"{at}"}}}}"#)
}

#[tokio::test(start_paused = true)]
async fn lines_are_due_at_their_recorded_times_over_the_speed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stream.jsonl");
    // Ten lines a second apart, then one an hour later, then one a second after that.
    let mut lines: Vec<String> = (0..10)
        .map(|i| message(i, &format!("2026-12-01T10:00:{i:02}.000Z")))
        .collect();
    lines.push(message(10, "2026-12-01T11:00:09.000Z"));
    lines.push(message(11, "2026-12-01T11:00:10.000Z"));
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();

    let mut replay = Replay::new(vec![file], Some(100.0));
    let start = tokio::time::Instant::now();
    let mut at = Vec::new();
    while let Some(line) = replay.next_line().await.unwrap() {
        assert!(!line.bytes.is_empty());
        at.push(start.elapsed().as_millis());
    }
    // A second of recording is 10 ms at ×100: due at 0, 10, …, 90 ms exactly.
    assert_eq!(
        &at[..10],
        &(0..10).map(|i| i * 10).collect::<Vec<u128>>()[..]
    );
    // An hour is 36 s at ×100: waited in full (under the minute's cap)…
    assert_eq!(at[10], 90 + 36_000);
    assert_eq!(at[11], 90 + 36_000 + 10);

    // …while at ×1 the hour's gap is cut to a minute, and the pace goes on from there.
    let mut slow = Replay::new(vec![dir.path().join("stream.jsonl")], Some(1.0));
    let start = tokio::time::Instant::now();
    let mut at = Vec::new();
    while let Some(_line) = slow.next_line().await.unwrap() {
        at.push(start.elapsed().as_secs());
    }
    assert_eq!(at, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 69, 70]);
}

/// A recording that goes back in time (a later file from an earlier period) is paced from
/// there again, not handed out at once.
#[tokio::test(start_paused = true)]
async fn a_step_back_in_time_starts_the_pacing_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stream.jsonl");
    let lines = [
        message(1, "2026-12-01T10:00:00.000Z"),
        message(2, "2026-12-01T10:00:01.000Z"),
        message(3, "2026-12-01T09:00:00.000Z"),
        message(4, "2026-12-01T09:00:01.000Z"),
        message(5, "2026-12-01T09:00:02.000Z"),
    ];
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let mut replay = Replay::new(vec![file], Some(100.0));
    let start = tokio::time::Instant::now();
    let mut at = Vec::new();
    while let Some(_line) = replay.next_line().await.unwrap() {
        at.push(start.elapsed().as_millis());
    }
    assert_eq!(at, [0, 10, 10, 20, 30]);
}
