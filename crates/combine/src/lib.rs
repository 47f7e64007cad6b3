//! flagship-combine: gathers the raw Firehose objects of each hour into one Parquet file.
//!
//! This foundation groups a listing of raw objects by their arrival hour (keys outside the
//! Firehose layout are returned apart, to be reported, never guessed at). Parsing, dedup,
//! quarantine, the incremental manifest and the legacy TSV reader land with the combine
//! issue. It reads the raw area and writes the combined area; it never filters or cleans.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use flagship_core::layout::hour_of_key;
use flagship_core::storage::Entry;

/// Raw objects by arrival hour, plus the keys that are not in the layout.
#[derive(Debug, Default, PartialEq)]
pub struct Hours {
    pub hours: BTreeMap<DateTime<Utc>, Vec<Entry>>,
    pub outside_layout: Vec<Entry>,
}

/// Groups a listing by hour; within an hour objects stay in key (= arrival) order.
pub fn group_by_hour(entries: impl IntoIterator<Item = Entry>) -> Hours {
    let mut out = Hours::default();
    for e in entries {
        match hour_of_key(&e.key) {
            Some(h) => out.hours.entry(h).or_default().push(e),
            None => out.outside_layout.push(e),
        }
    }
    for v in out.hours.values_mut() {
        v.sort_by(|a, b| a.key.cmp(&b.key));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use chrono::TimeZone;
    use flagship_core::layout::object_key;
    use flagship_core::storage::{Location, S3Options, Store};

    #[tokio::test]
    async fn groups_a_real_listing_by_hour() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            &Location::Local(dir.path().to_owned()),
            &S3Options::default(),
        )
        .unwrap();
        let t = |h, m| Utc.with_ymd_and_hms(2022, 1, 9, h, m, 0).unwrap();
        for (at, id) in [(t(23, 59), "c"), (t(23, 1), "b"), (t(22, 30), "a")] {
            let key = object_key("kinesis-demo", "s", at, id);
            store.put(&key, Bytes::from_static(b"{}\n")).await.unwrap();
        }
        store
            .put("kinesis-demo/README", Bytes::from_static(b"x"))
            .await
            .unwrap();
        let g = group_by_hour(store.list("kinesis-demo").await.unwrap());
        let counts: Vec<(u32, usize)> = g
            .hours
            .iter()
            .map(|(h, v)| (chrono::Timelike::hour(h), v.len()))
            .collect();
        assert_eq!(counts, [(22, 1), (23, 2)]);
        assert!(g.hours[&t(23, 0)][0].key.ends_with("-b"));
        assert_eq!(g.outside_layout.len(), 1);
        assert_eq!(g.outside_layout[0].key, "kinesis-demo/README");
    }
}
