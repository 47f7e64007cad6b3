//! Test helpers for the desk's users (the desk's and the binary's tests): a plain HTTP/1.1
//! client and form encoding, and a burst of the same questions from many people (the
//! question-groups test and `bench groups`). Not used by the product.

use std::collections::HashMap;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A plain HTTP/1.1 exchange: (status, headers lower-cased, body).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, HashMap<String, Vec<String>>, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut h: HashMap<String, Vec<String>> = HashMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            h.entry(k.trim().to_ascii_lowercase())
                .or_default()
                .push(v.trim().to_owned());
        }
    }
    (status, h, body.to_owned())
}

/// A form body, percent-encoded.
pub fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            let enc: String = v
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                        (b as char).to_string()
                    }
                    b => format!("%{b:02X}"),
                })
                .collect();
            format!("{k}={enc}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The CSRF token a page or form carries (`<meta name="csrf" content=…>` or the hidden
/// `csrf` field).
pub fn csrf_of(html: &str) -> Option<String> {
    [r#"name="csrf" content=""#, r#"name="csrf" value=""#]
        .iter()
        .find_map(|m| html.split(m).nth(1))
        .and_then(|r| r.split('"').next())
        .map(str::to_owned)
}

/// A desk served on a free loopback port until [`Served::stop`].
pub struct Served {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), crate::server::ServerError>>,
}

impl Served {
    /// Serves `desk` on `127.0.0.1:0`.
    pub async fn start(desk: std::sync::Arc<crate::server::Desk>) -> Served {
        let (listener, addr) = crate::server::bind("127.0.0.1:0".parse().expect("an address"))
            .await
            .expect("a free loopback port");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(crate::server::serve(desk, listener, async move {
            let _ = stopped.await;
        }));
        Served {
            addr,
            stop: Some(stop),
            task,
        }
    }

    /// Stops the server and waits for it (a graceful shutdown, within 15 s).
    pub async fn stop(mut self) {
        drop(self.stop.take());
        tokio::time::timeout(std::time::Duration::from_secs(15), &mut self.task)
            .await
            .expect("a graceful shutdown within 15 s")
            .expect("the server task")
            .expect("the server");
    }
}

/// Logs `user` in through the login form: the session cookie (`name=value`) and the CSRF
/// token of the desk page it opens.
pub async fn login(addr: SocketAddr, user: &str, password: &str) -> (String, String) {
    let (_, h, page) = http(addr, "GET", "/login", &[], "").await;
    let login_cookie = cookie_of(&h).expect("the login form's cookie");
    let csrf = csrf_of(&page).expect("the login form's token");
    let (status, h, body) = http(
        addr,
        "POST",
        "/login",
        &[("Cookie", &login_cookie)],
        &form(&[("user", user), ("password", password), ("csrf", &csrf)]),
    )
    .await;
    assert_eq!(status, 303, "{user} logs in: {body}");
    let session = cookie_of(&h).expect("a session cookie");
    let (_, _, page) = http(addr, "GET", "/", &[("Cookie", &session)], "").await;
    let csrf = csrf_of(&page).expect("the page's CSRF token");
    (session, csrf)
}

/// The `name=value` part of the first `Set-Cookie` header.
pub fn cookie_of(headers: &HashMap<String, Vec<String>>) -> Option<String> {
    headers
        .get("set-cookie")?
        .first()?
        .split(';')
        .next()
        .map(str::to_owned)
}

/// One X v2 stream message (the demo's shape) for the question-groups replay.
pub fn x_message(n: usize, author: &str, text: &str) -> String {
    let id = 9_200_000_000_000_000_000u64 + n as u64;
    serde_json::json!({
        "data": {
            "id": id.to_string(),
            "text": text,
            "created_at": (chrono::Utc::now() - chrono::Duration::minutes(30 - n as i64)).to_rfc3339(),
            "author_id": format!("{}", 1_600_000_000 + n),
            "lang": "en",
            "source": "Twitter Web App",
        },
        "includes": {"users": [{"id": format!("{}", 1_600_000_000 + n), "username": author, "name": author}]},
        "matching_rules": [{"id": "1", "tag": "jwst"}],
    })
    .to_string()
}

/// The same few questions asked by many people, as a burst around a mission event (written
/// for this test: the recorded posts hold no such burst), with a hostile one among them.
pub const BURST: &[(&str, &str)] = &[
    (
        "ana_k",
        "When will the James Webb telescope release its first images? Still waiting and nothing",
    ),
    (
        "bo_99",
        "when are the first webb images coming out?? been waiting forever",
    ),
    (
        "cy_astro",
        "Does anyone know when the first images from the Webb telescope will be released?",
    ),
    (
        "dee",
        "what date will JWST publish its first pictures? can't find it anywhere",
    ),
    (
        "<img src=x onerror=alert(6)>",
        "<script>alert(5)</script> when will webb's first images be out?",
    ),
    (
        "ed_s",
        "When do the first James Webb Space Telescope images come out?",
    ),
    (
        "fay",
        "Was the webb telescope mirror damaged by the micrometeoroid hit?",
    ),
    (
        "gus",
        "did that micrometeoroid strike damage JWST's mirror? worried",
    ),
    (
        "hal",
        "is the james webb mirror broken after the micrometeoroid impact?",
    ),
    (
        "ivy",
        "the nasa livestream audio keeps cutting out, terrible stream",
    ),
];
