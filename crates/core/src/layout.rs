//! Kinesis Firehose's S3 key layout, shared by ingest's local sink (which writes it) and
//! combine (which reads it): `prefix/YYYY/MM/DD/HH/<stream>-<version>-YYYY-MM-DD-HH-MM-SS-<uuid>`,
//! in the UTC hour the records *arrived*.

use chrono::{DateTime, NaiveDate, TimeZone, Timelike, Utc};

/// The key Firehose gives an object delivered at `at` (the uuid is the caller's).
pub fn object_key(prefix: &str, stream: &str, at: DateTime<Utc>, uuid: &str) -> String {
    let prefix = prefix.trim_matches('/');
    let sep = if prefix.is_empty() { "" } else { "/" };
    format!(
        "{prefix}{sep}{}/{stream}-1-{}-{uuid}",
        at.format("%Y/%m/%d/%H"),
        at.format("%Y-%m-%d-%H-%M-%S")
    )
}

/// The arrival hour of a key: the last `YYYY/MM/DD/HH/` folders before the object name.
/// `None` for keys outside the layout (they are reported, not guessed at).
pub fn hour_of_key(key: &str) -> Option<DateTime<Utc>> {
    let parts: Vec<&str> = key.split('/').collect();
    if parts.len() < 5 {
        return None;
    }
    let n = parts.len();
    let [y, m, d, h] = [parts[n - 5], parts[n - 4], parts[n - 3], parts[n - 2]];
    let digits = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_digit());
    if !(digits(y, 4) && digits(m, 2) && digits(d, 2) && digits(h, 2)) {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?)?;
    let t = date.and_hms_opt(h.parse().ok()?, 0, 0)?;
    Some(Utc.from_utc_datetime(&t))
}

/// The start of the hour containing `t`.
pub fn hour_floor(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_minute(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .expect("valid hour")
}

/// The file a combined / filtered / processed hour is stored in: `YYYYMMDDHH.parquet` (the
/// seed's hour names).
pub fn hour_file(hour: DateTime<Utc>) -> String {
    format!("{}.parquet", hour.format("%Y%m%d%H"))
}

/// The hour of a [`hour_file`] name (folders before it are ignored); `None` for other names.
pub fn hour_of_file(key: &str) -> Option<DateTime<Utc>> {
    let name = key.rsplit('/').next()?.strip_suffix(".parquet")?;
    if name.len() != 10 || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(
        name[0..4].parse().ok()?,
        name[4..6].parse().ok()?,
        name[6..8].parse().ok()?,
    )?;
    Some(Utc.from_utc_datetime(&date.and_hms_opt(name[8..10].parse().ok()?, 0, 0)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_roundtrip_matches_the_seed_layout() {
        let at = Utc.with_ymd_and_hms(2021, 12, 31, 19, 58, 56).unwrap();
        let k = object_key(
            "datasets/twitter/kinesis-demo/",
            "twitter_delivery_stream",
            at,
            "0c2b5e8e-7f0f-4b7e-9a0e-2f1d3c4b5a69",
        );
        assert_eq!(
            k,
            "datasets/twitter/kinesis-demo/2021/12/31/19/twitter_delivery_stream-1-2021-12-31-19-58-56-0c2b5e8e-7f0f-4b7e-9a0e-2f1d3c4b5a69"
        );
        assert_eq!(hour_of_key(&k), Some(hour_floor(at)));
        assert_eq!(hour_file(hour_floor(at)), "2021123119.parquet");
        assert_eq!(hour_of_file("x/2021123119.parquet"), Some(hour_floor(at)));
        assert_eq!(hour_of_file("2021123124.parquet"), None);
        assert_eq!(hour_of_file("_manifest/x.json"), None);
        assert_eq!(
            hour_of_key("2022/01/10/01/x"),
            Some(Utc.with_ymd_and_hms(2022, 1, 10, 1, 0, 0).unwrap())
        );
    }

    #[test]
    fn keys_outside_the_layout_are_none() {
        for k in [
            "x",
            "a/b/c/d/e",
            "2022/13/01/00/x",
            "2022/01/01/24/x",
            "2022/1/01/00/x",
            "2022/01/01/00",
        ] {
            assert_eq!(hour_of_key(k), None, "{k}");
        }
    }
}
