//! Stream rule sync against a local fake of X's rules endpoint holding rules of this mission,
//! of another mission and of another tool: only this mission's stale rule is deleted, the
//! missing ones are validated (dry run) then added with this mission's tag, the others are
//! never touched; an empty rule set is refused before any call.

use std::sync::{Arc, Mutex};

use flagship_ingest::xstream::{XStream, XStreamConfig};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// The requests the fake saw: (method and target, body).
type Seen = Arc<Mutex<Vec<(String, String)>>>;

async fn serve(listener: tokio::net::TcpListener, seen: Seen) {
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            return;
        };
        let seen = seen.clone();
        tokio::spawn(async move {
            let (r, mut w) = sock.into_split();
            let mut r = BufReader::new(r);
            loop {
                let mut request = String::new();
                if r.read_line(&mut request).await.unwrap_or(0) == 0 {
                    return;
                }
                let mut len = 0;
                loop {
                    let mut h = String::new();
                    r.read_line(&mut h).await.unwrap();
                    if h == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':')
                        && k.eq_ignore_ascii_case("content-length")
                    {
                        len = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; len];
                r.read_exact(&mut body).await.unwrap();
                let target = request.trim().to_owned();
                seen.lock()
                    .unwrap()
                    .push((target.clone(), String::from_utf8(body).unwrap()));
                let answer = if target.starts_with("GET ") {
                    r#"{"data":[
                        {"id":"1","value":"(old term) lang:en","tag":"flagship:jwst:1"},
                        {"id":"2","value":"(mars rover)","tag":"flagship:mars:1"},
                        {"id":"3","value":"(cats)","tag":"someone-elses-bot"},
                        {"id":"4","value":"(dogs)"},
                        {"id":"5","value":"(from an old version)","tag":"flagship-3"},
                        {"id":"6","value":"(jwst:b mission)","tag":"flagship:jwst:b:1"}
                    ],"meta":{"result_count":6}}"#
                } else {
                    r#"{"meta":{"summary":{"created":1,"valid":1,"deleted":1}}}"#
                };
                w.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
                        answer.len()
                    )
                    .as_bytes(),
                )
                .await
                .unwrap();
            }
        });
    }
}

#[tokio::test]
async fn only_this_missions_rules_are_managed() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen: Seen = Arc::default();
    tokio::spawn(serve(listener, seen.clone()));
    let x = XStream::new(XStreamConfig::new(&base, "test-token".into())).unwrap();

    let e = x.sync_rules("jwst", &[]).await.unwrap_err().to_string();
    assert!(e.contains("refusing"), "{e}");
    assert!(
        seen.lock().unwrap().is_empty(),
        "no call for an empty rule set"
    );

    let wanted = vec!["(james webb) lang:en".to_string(), "(dogs)".to_string()];
    let sync = x.sync_rules("jwst", &wanted).await.unwrap();
    assert_eq!(sync.added, ["(james webb) lang:en"]);
    // This mission's stale rule and an untagged-era `flagship-3` rule (taken over on upgrade);
    // never mission `jwst:b`'s, whose tag merely starts with `flagship:jwst:`.
    assert_eq!(
        sync.deleted,
        ["(old term) lang:en", "(from an old version)"]
    );
    assert_eq!(sync.kept, 1);
    assert_eq!(sync.foreign, 4);

    let seen = seen.lock().unwrap().clone();
    let posts: Vec<_> = seen.iter().filter(|(t, _)| t.starts_with("POST")).collect();
    assert_eq!(posts.len(), 3, "{seen:?}");
    // Dry run, then the add, both tagged as this mission's.
    assert!(posts[0].0.contains("dry_run=true"), "{:?}", posts[0]);
    for (_, body) in &posts[..2] {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["add"][0]["value"], "(james webb) lang:en");
        assert!(
            v["add"][0]["tag"]
                .as_str()
                .unwrap()
                .starts_with("flagship:jwst:"),
            "{body}"
        );
    }
    // The delete names this mission's stale rule only — never mars's, the bot's or an untagged one.
    let v: serde_json::Value = serde_json::from_str(&posts[2].1).unwrap();
    assert_eq!(v["delete"]["ids"], serde_json::json!(["1", "5"]));
}
