//! The desk's defences over real sockets on loopback and a real SQLite file: no proxied
//! request to a desk without logins (and no start behind TLS without them); failed logins
//! counted per (client, name) behind a trusted proxy, never blocking the token; timeouts and
//! caps that keep `/healthz` answering under half-sent requests; sessions that survive a
//! restart, hashed, capped per user and revoked with a password.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use flagship_desk::DeskStore;
use flagship_desk::auth::{Methods, add_user, hash_password, session_key};
use flagship_desk::server::{Desk, ServerError, Settings};
use flagship_desk::testing::{Served, cookie_of, csrf_of, form, http};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PASSWORD: &str = "correct horse battery";
const TOKEN: &str = "0123456789abcdef0123456789abcdef-token";

fn settings() -> Settings {
    let mut s = Settings::from_config(&flagship_core::Config::default());
    s.reports = None;
    s
}

/// A desk over `db` with `methods` and `settings`, served on a free loopback port.
async fn serve_db(db: &Path, methods: Methods, settings: Settings) -> Served {
    let desk = Desk::new(
        DeskStore::open(db).unwrap(),
        methods,
        settings,
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    Served::start(desk).await
}

/// Logs `user` in with `password` from `client` (through the test's trusted proxy: an
/// `X-Forwarded-For`): the status and the session cookie, if one was set.
async fn login(
    addr: SocketAddr,
    user: &str,
    password: &str,
    forwarded: &[(&str, &str)],
) -> (u16, Option<String>) {
    let (status, h, page) = http(addr, "GET", "/login", forwarded, "").await;
    assert_eq!(status, 200, "{page}");
    let login_cookie = cookie_of(&h).unwrap();
    let csrf = csrf_of(&page).unwrap();
    let mut headers = forwarded.to_vec();
    headers.push(("Cookie", &login_cookie));
    let (status, h, _) = http(
        addr,
        "POST",
        "/login",
        &headers,
        &form(&[("user", user), ("password", password), ("csrf", &csrf)]),
    )
    .await;
    (status, (status == 303).then(|| cookie_of(&h)).flatten())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desk_without_logins_refuses_tls_and_proxied_requests() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("desk.sqlite");

    // `secure_cookie` says a TLS proxy is in front: without a login method it never starts.
    let mut tls = settings();
    tls.secure_cookie = true;
    let e = Desk::new(
        DeskStore::open(&db).unwrap(),
        Methods::default(),
        tls,
        "127.0.0.1:0".parse().unwrap(),
    )
    .err()
    .expect("refused");
    assert!(matches!(e, ServerError::OpenBehindTls), "{e}");
    assert!(e.to_string().contains("no login method"), "{e}");

    let s = serve_db(&db, Methods::default(), settings()).await;
    let (status, _, _) = http(s.addr, "GET", "/", &[], "").await;
    assert_eq!(status, 200, "the local user's page");
    for header in [
        ("X-Forwarded-For", "203.0.113.7"),
        ("Forwarded", "for=203.0.113.7;proto=https"),
        ("X-Forwarded-Proto", "https"),
        ("X-Real-IP", "203.0.113.7"),
    ] {
        let (status, _, body) = http(s.addr, "GET", "/", &[header], "").await;
        assert_eq!(status, 403, "{header:?}: {body}");
        assert!(
            body.contains("answers no request a proxy forwarded"),
            "{body}"
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_proxy_failures_count_per_client_and_name_and_never_block_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let users = HashMap::from([
        ("ana".to_owned(), hash_password(PASSWORD).unwrap()),
        ("bo".to_owned(), hash_password(PASSWORD).unwrap()),
    ]);
    let mut st = settings();
    st.trusted_proxies = vec!["127.0.0.1".into()];
    let s = serve_db(
        &dir.path().join("desk.sqlite"),
        Methods::new(users, Some(TOKEN.into())),
        st,
    )
    .await;
    let attacker = [("X-Forwarded-For", "6.6.6.6, 203.0.113.66")];
    for _ in 0..5 {
        assert_eq!(login(s.addr, "ana", "guess", &attacker).await.0, 401);
    }
    assert_eq!(
        login(s.addr, "ana", "guess", &attacker).await.0,
        429,
        "the guesser is limited"
    );
    // Another client, through the same proxy, logs in as ana; bo from the guesser's address
    // too: the limit is per (client, name), not per proxy.
    let (status, cookie) = login(
        s.addr,
        "ana",
        PASSWORD,
        &[("X-Forwarded-For", "198.51.100.2")],
    )
    .await;
    assert_eq!(status, 303);
    assert!(cookie.is_some());
    assert_eq!(login(s.addr, "bo", PASSWORD, &attacker).await.0, 303);
    // A spoofed leftmost address changes nothing: the proxy's rightmost entry is the client.
    let spoofed = [("X-Forwarded-For", "1.2.3.4, 203.0.113.66")];
    assert_eq!(login(s.addr, "ana", "guess", &spoofed).await.0, 429);

    // Wrong tokens from the guesser are limited; the right token passes whatever failed.
    let wrong = "Bearer wrong-token-wrong-token-wrong-token";
    for _ in 0..5 {
        let h = [attacker[0], ("Authorization", wrong)];
        assert_eq!(http(s.addr, "GET", "/api/today", &h, "").await.0, 401);
    }
    let h = [attacker[0], ("Authorization", wrong)];
    assert_eq!(http(s.addr, "GET", "/api/today", &h, "").await.0, 429);
    let right = format!("Bearer {TOKEN}");
    let h = [attacker[0], ("Authorization", right.as_str())];
    let (status, _, body) = http(s.addr, "GET", "/api/today", &h, "").await;
    assert_eq!(status, 200, "{body}");
    // The token logs in through the form too, limited or not.
    assert_eq!(login(s.addr, "carla", TOKEN, &attacker).await.0, 303);
    s.stop().await;
}

/// Opens a connection and sends part of a request head, one more header line every 100 ms
/// until the server closes it or `until`; when it was closed.
async fn slow_request(addr: SocketAddr, until: Instant) -> Option<Duration> {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).await.ok()?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .ok()?;
    let mut buf = [0u8; 256];
    while Instant::now() < until {
        match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {} // hyper's 408, then the close
            Err(_) => {
                if s.write_all(b"X-Slow: 1\r\n").await.is_err() {
                    return Some(start.elapsed());
                }
            }
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_are_cut_and_healthz_keeps_answering() {
    let dir = tempfile::tempdir().unwrap();
    let mut st = settings();
    st.limits.header_timeout = Duration::from_secs(1);
    st.limits.max_connections = 24;
    st.limits.max_streams = 8;
    let s = serve_db(&dir.path().join("desk.sqlite"), Methods::default(), st).await;

    // 48 slow requests (twice the connection cap), for at most 8 s.
    let until = Instant::now() + Duration::from_secs(8);
    let slow: Vec<_> = (0..48)
        .map(|_| tokio::spawn(slow_request(s.addr, until)))
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..6 {
        let t = Instant::now();
        let (status, _, body) = tokio::time::timeout(
            Duration::from_secs(5),
            http(s.addr, "GET", "/healthz", &[], ""),
        )
        .await
        .expect("/healthz answers within 5 s");
        assert_eq!((status, body.as_str()), (200, "ok"));
        assert!(t.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for (i, h) in slow.into_iter().enumerate() {
        let closed = h.await.unwrap();
        assert!(
            closed.is_some(),
            "slow request {i} was still open after 8 s: no header timeout"
        );
    }

    // A kept-alive connection left idle is closed too (the header timer restarts after an
    // answer).
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"ok") {
        let n = c.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before the answer");
        got.extend_from_slice(&buf[..n]);
    }
    let closed = tokio::time::timeout(Duration::from_secs(4), c.read(&mut buf))
        .await
        .expect("an idle kept-alive connection is closed within 4 s");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    s.stop().await;
}

/// Opens an event stream with `cookie`: its status (the stream is kept open in the vector).
async fn open_stream(addr: SocketAddr, cookie: &str, keep: &mut Vec<TcpStream>) -> u16 {
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(
        format!("GET /events HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = [0u8; 64];
    let n = c.read(&mut buf).await.unwrap();
    let status = String::from_utf8_lossy(&buf[..n])
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    keep.push(c);
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_are_capped_per_session_and_in_all() {
    let dir = tempfile::tempdir().unwrap();
    let users = HashMap::from([
        ("ana".to_owned(), hash_password(PASSWORD).unwrap()),
        ("bo".to_owned(), hash_password(PASSWORD).unwrap()),
    ]);
    let mut st = settings();
    st.limits.max_streams_per_session = 2;
    st.limits.max_streams = 3;
    let s = serve_db(
        &dir.path().join("desk.sqlite"),
        Methods::new(users, None),
        st,
    )
    .await;
    let ana = login(s.addr, "ana", PASSWORD, &[]).await.1.unwrap();
    let bo = login(s.addr, "bo", PASSWORD, &[]).await.1.unwrap();
    let mut open = Vec::new();
    assert_eq!(open_stream(s.addr, &ana, &mut open).await, 200);
    assert_eq!(open_stream(s.addr, &ana, &mut open).await, 200);
    assert_eq!(
        open_stream(s.addr, &ana, &mut open).await,
        429,
        "per session"
    );
    assert_eq!(open_stream(s.addr, &bo, &mut open).await, 200);
    assert_eq!(open_stream(s.addr, &bo, &mut open).await, 429, "in all");
    // A closed page gives its stream back.
    open.clear();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut again = Vec::new();
    assert_eq!(open_stream(s.addr, &bo, &mut again).await, 200);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_outlive_a_restart_hashed_capped_and_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("desk.sqlite");
    let users_file = dir.path().join("users.txt");
    add_user(&users_file, "ana", PASSWORD, None).unwrap();
    let methods = || Methods::load(Some(&users_file), None).unwrap();
    let mut st = settings();
    st.sessions.per_user = 2;
    st.secure_cookie = true;

    // Behind TLS the cookie is `__Host-` (Secure, Path=/, no Domain).
    let s = serve_db(&db, methods(), st.clone()).await;
    let (status, h, _) = {
        let (_, h, page) = http(s.addr, "GET", "/login", &[], "").await;
        let login_cookie = cookie_of(&h).unwrap();
        let csrf = csrf_of(&page).unwrap();
        http(
            s.addr,
            "POST",
            "/login",
            &[("Cookie", &login_cookie)],
            &form(&[("user", "ana"), ("password", PASSWORD), ("csrf", &csrf)]),
        )
        .await
    };
    assert_eq!(status, 303);
    let set = &h["set-cookie"][0];
    assert!(
        set.starts_with("__Host-flagship_session=")
            && set.contains("; Path=/;")
            && set.contains("; Secure")
            && !set.contains("Domain"),
        "{set}"
    );
    let first = cookie_of(&h).unwrap();
    s.stop().await;

    // A restart keeps the session; the database holds its hash, never the id.
    let s = serve_db(&db, methods(), st.clone()).await;
    let (status, _, body) = http(s.addr, "GET", "/api/today", &[("Cookie", &first)], "").await;
    assert_eq!(status, 200, "the session outlived the restart: {body}");
    let id = first.split_once('=').unwrap().1;
    let keys = DeskStore::open(&db).unwrap().session_keys().unwrap();
    assert!(keys.contains(&session_key(id)) && !keys.iter().any(|k| k == id));

    // Two more logins: the cap (2) ends the oldest.
    let second = login(s.addr, "ana", PASSWORD, &[]).await.1.unwrap();
    let _third = login(s.addr, "ana", PASSWORD, &[]).await.1.unwrap();
    let (status, _, _) = http(s.addr, "GET", "/api/today", &[("Cookie", &first)], "").await;
    assert_eq!(status, 401, "the oldest session ended");
    assert_eq!(DeskStore::open(&db).unwrap().sessions_of("ana").unwrap(), 2);

    // A new password (what `flagship desk user add` does): the old one no longer logs in
    // (the running desk reads the file again) and her sessions end.
    std::thread::sleep(Duration::from_millis(20));
    add_user(&users_file, "ana", "a brand new password", None).unwrap();
    DeskStore::open(&db).unwrap().revoke_user("ana").unwrap();
    let (status, _, _) = http(s.addr, "GET", "/api/today", &[("Cookie", &second)], "").await;
    assert_eq!(status, 401, "revoked");
    assert_eq!(login(s.addr, "ana", PASSWORD, &[]).await.0, 401);
    assert_eq!(
        login(s.addr, "ana", "a brand new password", &[]).await.0,
        303
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_looping_get_slash_never_piles_up_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("desk.sqlite");
    let mut st = settings();
    st.sessions.per_user = 3;
    let s = serve_db(&db, Methods::default(), st).await;
    for _ in 0..25 {
        let (status, h, _) = http(s.addr, "GET", "/", &[], "").await;
        assert_eq!(status, 200);
        assert!(cookie_of(&h).is_some());
    }
    let user = std::env::var("USER").unwrap_or_else(|_| "local".into());
    let store = DeskStore::open(&db).unwrap();
    assert_eq!(store.sessions_of(&user).unwrap(), 3);
    assert_eq!(store.session_keys().unwrap().len(), 3);
    s.stop().await;
}
