//! Reading a `/metrics` answer in tests with a real Prometheus text parser
//! (`prometheus-parse`), and finding one sample in it.

pub use prometheus_parse::{Scrape, Value};

/// Parses a Prometheus text exposition (panics on a malformed one).
pub fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

/// The value of the one sample `name` whose labels include `labels` (panics unless exactly
/// one matches, or on a histogram / summary sample).
pub fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<_> = s
        .samples
        .iter()
        .filter(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .collect();
    assert_eq!(found.len(), 1, "one {name}{labels:?} in {:?}", s.samples);
    match found[0].value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
        ref other => panic!("{name}: {other:?}"),
    }
}
