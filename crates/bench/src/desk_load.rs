//! `flagship-bench desk-load`: `cargo xtask bench desk-load` — the desk under load, on
//! loopback, for a bounded time.
//!
//! Two processes, so that the figures are the server's own:
//!
//! - **the server** (`flagship-bench desk-serve`, a child): the desk as `flagship desk` runs it
//!   while attached to a live loop — [`flagship_desk::server::serve`] with a users file (logins,
//!   CSRF, sessions in SQLite, the default caps), fed through [`LiveSink`] (the live loop's
//!   sink: `Desk::add`, committed, then pushed to open pages; then `explained`) with posts of
//!   the demo stream (`fixtures/demo/stream.jsonl.gz`, looped, fresh ids) at `--rate` posts/s
//!   in micro-batches every 100 ms. No model: every post gets a hashed probability in
//!   [0.5, 1) over a threshold of 0.4, so each one is flagged, lands in the queue and goes to
//!   every open page (the worst case for the event streams), and three of its words as its
//!   "why". It feeds for `--seconds`, then stops when the clients say so (`stop` on stdin),
//!   a minute later at most, or at once when its parent goes (stdin closes).
//! - **the clients** (this process): `--users` people log in (login form, CSRF, cookie), open
//!   `--pages` pages between them (`GET /`, then `GET /events`, kept open and drained; a page
//!   whose stream ends opens it again, as the page's script does), and make
//!   `--decisions-per-second` decisions (`POST /api/decide` with the session's CSRF token),
//!   each on a post a page was told about, spread over the users, timed from the request to
//!   the answer, on a fixed schedule (open loop: a slow answer does not slow the offered
//!   rate). The server's RSS is read from `/proc/PID/status` every `--sample-every` seconds.
//!
//! At the end every decision sent is looked up in the database (the post's history holds it,
//! by that user): lost = sent − stored. One JSON line.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use chrono::Utc;
use flagship_core::Post;
use flagship_core::live::{Explained, Sink, Why};
use flagship_desk::server::{Desk, LiveSink, Settings};
use flagship_desk::testing::{csrf_of, form};
use flagship_desk::{Decision, DeskStore};
use flagship_ingest::source::{PostSource, Replay};
use flagship_live::Scored;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(clap::Args)]
pub struct Args {
    /// How long the replay runs, in seconds.
    #[arg(long, default_value_t = 600)]
    seconds: u64,
    /// Posts a second into the desk.
    #[arg(long, default_value_t = 35.0)]
    rate: f64,
    /// Open pages (each with its event stream), spread over the users.
    #[arg(long, default_value_t = 200)]
    pages: usize,
    /// People logged in.
    #[arg(long, default_value_t = 20)]
    users: usize,
    #[arg(long, default_value_t = 20.0)]
    decisions_per_second: f64,
    /// Seconds between two readings of the server's RSS.
    #[arg(long, default_value_t = 10)]
    sample_every: u64,
    /// The RSS slope is fitted over the samples after this many seconds (half the run when
    /// the run is not twice as long).
    #[arg(long, default_value_t = 120)]
    warmup: u64,
}

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Holds `users.txt`; the desk's database is written here.
    #[arg(long)]
    dir: PathBuf,
    #[arg(long)]
    seconds: u64,
    #[arg(long)]
    rate: f64,
}

const DEMO: &str = "fixtures/demo/stream.jsonl.gz";
/// Fresh ids: X-like snowflakes far from the demo's (1.54e18).
const ID_BASE: u64 = 1_700_000_000_000_000_000;
const BATCH_EVERY: Duration = Duration::from_millis(100);
/// A request's answer (logins, pages, decisions) is awaited at most this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The `q` quantile of sorted `v` (NaN when empty).
fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// The demo stream's posts, in order.
fn demo_posts() -> Result<Vec<Post>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let posts = rt.block_on(async {
        let mut replay = Replay::new(vec![PathBuf::from(DEMO)], None);
        let mut posts = Vec::new();
        while let Some(l) = replay.next_line().await? {
            if let Ok(p) = flagship_platforms::jsonl::parse_record(&l.bytes, None) {
                posts.extend(p.posts);
            }
        }
        anyhow::Ok(posts)
    })?;
    ensure!(
        !posts.is_empty(),
        "no posts in {DEMO} (run from the workspace root)"
    );
    Ok(posts)
}

/// The `i`-th post of the replay: the demo's `i mod len`-th with a fresh id, flagged.
fn scored(post: &Post, i: usize) -> Scored {
    let id = (ID_BASE + i as u64).to_string();
    let p = 0.5 + ((i * 7919) % 500) as f32 / 1000.0;
    let now = Utc::now();
    Scored {
        post: Post {
            url: Some(flagship_platforms::x::url(
                &id,
                post.author_username.as_deref(),
            )),
            id,
            created_at: Some(now),
            ..post.clone()
        },
        text_model: post.text.to_lowercase(),
        matched: Vec::new(),
        client: post.source.clone(),
        probability: p,
        need_support: true,
        threshold: 0.4,
        model_id: "desk-load".into(),
        scored_at: now,
        latency_ms: 0.0,
        hurried: false,
        why: Vec::new(),
    }
}

/// Three of a post's longest words as its "why" (what the live loop sends after the write).
fn explained(s: &Scored) -> Explained {
    let mut words: Vec<&str> = s.text_model.split_whitespace().collect();
    words.sort_by_key(|w| std::cmp::Reverse(w.len()));
    Explained {
        platform: s.post.platform,
        id: s.post.id.clone(),
        why: words
            .iter()
            .take(3)
            .enumerate()
            .map(|(k, w)| Why {
                word: (*w).to_owned(),
                weight: 0.3 - 0.1 * k as f32,
            })
            .collect(),
        embedding: Vec::new(),
    }
}

/// What the feeder did.
struct Fed {
    posts: usize,
    seconds: f64,
    write_ms: Vec<f64>,
}

/// Feeds `rate` posts a second for `run` into the desk through the live loop's sink, one
/// micro-batch every [`BATCH_EVERY`]; bounded: it stops at the count, or a minute late.
fn feed(desk: Arc<Desk>, posts: &[Post], rate: f64, run: Duration) -> Result<Fed> {
    let mut sink = LiveSink(desk);
    let total = (rate * run.as_secs_f64()).round() as usize;
    let start = Instant::now();
    let give_up = start + run + Duration::from_secs(60);
    let (mut n, mut next) = (0usize, start);
    let mut write_ms = Vec::new();
    while n < total && Instant::now() < give_up {
        next += BATCH_EVERY;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let due = ((start.elapsed().as_secs_f64() * rate) as usize).min(total);
        if due <= n {
            continue;
        }
        let batch: Vec<Scored> = (n..due)
            .map(|i| scored(&posts[i % posts.len()], i))
            .collect();
        let t = Instant::now();
        sink.write(&batch)?;
        write_ms.push(ms(t.elapsed()));
        sink.explained(&batch.iter().map(explained).collect::<Vec<_>>())?;
        n = due;
    }
    Ok(Fed {
        posts: n,
        seconds: start.elapsed().as_secs_f64(),
        write_ms,
    })
}

/// `flagship-bench desk-serve`: the server side (see the module's notes). Prints
/// `{"addr":…}` once listening, and one JSON line about the feed at the end.
pub fn serve(a: ServeArgs) -> Result<()> {
    let posts = demo_posts()?;
    // `stop` on stdin: the clients are done. The parent gone (stdin closed): stop at once.
    let (stop_line, told_to_stop) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(l) if l.trim() == "stop" => {
                    let _ = stop_line.send(());
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        eprintln!("desk-serve: the bench went away; stopping");
        std::process::exit(3);
    });
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let store = DeskStore::open(&a.dir.join("desk.sqlite"))?;
        let methods =
            flagship_desk::auth::Methods::load(Some(a.dir.join("users.txt").as_path()), None)?;
        let mut settings = Settings::from_config(&flagship_core::Config::default());
        settings.reports = None;
        let loopback: SocketAddr = "127.0.0.1:0".parse()?;
        let desk = Desk::new(store, methods, settings, loopback)?;
        let (listener, addr) = flagship_desk::server::bind(loopback).await?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(flagship_desk::server::serve(
            desk.clone(),
            listener,
            async move {
                let _ = stopped.await;
            },
        ));
        println!("{}", serde_json::json!({ "addr": addr.to_string() }));
        std::io::stdout().flush()?;
        let fed = {
            let desk = desk.clone();
            let run = Duration::from_secs(a.seconds);
            tokio::task::spawn_blocking(move || feed(desk, &posts, a.rate, run)).await??
        };
        // The pages stay open until the clients are done (a minute at most).
        let _ =
            tokio::task::spawn_blocking(move || told_to_stop.recv_timeout(Duration::from_secs(60)))
                .await?;
        desk.close();
        let _ = stop.send(());
        match tokio::time::timeout(Duration::from_secs(15), server).await {
            Ok(r) => r??,
            Err(_) => eprintln!("desk-serve: the server took over 15 s to stop"),
        }
        let mut w = fed.write_ms;
        w.sort_by(f64::total_cmp);
        println!(
            "{}",
            serde_json::json!({
                "posts_added": fed.posts,
                "feed_seconds": fed.seconds,
                "batches": w.len(),
                "write_p50_ms": quantile(&w, 0.5),
                "write_p99_ms": quantile(&w, 0.99),
                "write_max_ms": w.last().copied().unwrap_or(f64::NAN),
            })
        );
        anyhow::Ok(())
    })
}

/// A plain HTTP/1.1 exchange (`Connection: close`): status, head, body. Bounded by
/// [`REQUEST_TIMEOUT`].
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, String, String)> {
    tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if method == "POST" {
            req.push_str(&format!(
                "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes()).await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        let text = String::from_utf8_lossy(&out).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        anyhow::Ok((status, head.to_owned(), body.to_owned()))
    })
    .await
    .with_context(|| format!("{method} {path}: no answer in {REQUEST_TIMEOUT:?}"))?
}

/// The `name=value` of the `Set-Cookie` header for cookie `name`.
fn set_cookie(head: &str, name: &str) -> Option<String> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case("set-cookie"))
        .filter_map(|(_, v)| v.trim().split(';').next())
        .find(|kv| kv.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

/// A logged-in person: their name, session cookie and the session's CSRF token.
#[derive(Clone)]
struct Person {
    user: String,
    cookie: String,
    csrf: String,
}

/// Logs `user` in through the login form (its CSRF token bound to a cookie).
async fn login(addr: SocketAddr, user: &str, password: &str) -> Result<Person> {
    let (status, head, body) = http(addr, "GET", "/login", &[], "").await?;
    ensure!(status == 200, "GET /login: {status}");
    let login_cookie = set_cookie(&head, "flagship_login").context("no login cookie")?;
    let csrf = csrf_of(&body).context("no CSRF field")?;
    let (status, head, _) = http(
        addr,
        "POST",
        "/login",
        &[("Cookie", login_cookie.as_str())],
        &form(&[
            ("user", user),
            ("password", password),
            ("csrf", csrf.as_str()),
        ]),
    )
    .await?;
    ensure!(status == 303, "POST /login as {user}: {status}");
    let cookie = set_cookie(&head, "flagship_session").context("no session cookie")?;
    let (_, csrf) = open_page(addr, &cookie).await?;
    Ok(Person {
        user: user.to_owned(),
        cookie,
        csrf,
    })
}

/// `GET /` as a page does: its time (ms) and the page's CSRF token.
async fn open_page(addr: SocketAddr, cookie: &str) -> Result<(f64, String)> {
    let t = Instant::now();
    let (status, _, body) = http(addr, "GET", "/", &[("Cookie", cookie)], "").await?;
    ensure!(status == 200, "GET /: {status}");
    let csrf = csrf_of(&body).context("no CSRF meta")?;
    Ok((ms(t.elapsed()), csrf))
}

/// What the open pages heard, in all.
#[derive(Default)]
struct Heard {
    streams_opened: AtomicU64,
    /// `GET /events` answered other than 200 (429: a cap).
    streams_refused: AtomicU64,
    /// Streams that ended (or failed) before the run did, then opened again.
    streams_reopened: AtomicU64,
    bytes: AtomicU64,
    posts: AtomicU64,
    decided: AtomicU64,
    today: AtomicU64,
    why: AtomicU64,
    reload: AtomicU64,
}

/// One open page: `GET /events` kept open and drained until `end`, reopened (after a
/// second) if it ends before. The page that `ids` is given to queues the ids of the posts it
/// is told about, for the decisions.
async fn page(
    addr: SocketAddr,
    cookie: String,
    end: tokio::time::Instant,
    heard: Arc<Heard>,
    ids: Option<Arc<Mutex<VecDeque<String>>>>,
) {
    let mut first = true;
    while tokio::time::Instant::now() < end {
        if !first {
            heard.streams_reopened.fetch_add(1, Relaxed);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        first = false;
        let _ = tokio::time::timeout_at(end, stream(addr, &cookie, &heard, ids.as_deref())).await;
    }
}

async fn stream(
    addr: SocketAddr,
    cookie: &str,
    heard: &Heard,
    ids: Option<&Mutex<VecDeque<String>>>,
) -> Result<()> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        format!(
            "GET /events HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\nAccept: text/event-stream\r\n\r\n"
        )
        .as_bytes(),
    )
    .await?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    let mut head_done = false;
    let mut event = String::new();
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        heard.bytes.fetch_add(n as u64, Relaxed);
        pending.extend_from_slice(&buf[..n]);
        if !head_done {
            let Some(at) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&pending[..at]).into_owned();
            if !head.starts_with("HTTP/1.1 200") {
                heard.streams_refused.fetch_add(1, Relaxed);
                bail!("GET /events: {}", head.lines().next().unwrap_or(""));
            }
            heard.streams_opened.fetch_add(1, Relaxed);
            head_done = true;
            pending.drain(..at + 4);
        }
        // Whole lines only (hyper writes each event as one chunk: lines are never split
        // by the chunked framing, whose size lines are skipped as unknown lines).
        let Some(last) = pending.iter().rposition(|&b| b == b'\n') else {
            continue;
        };
        for line in pending[..last].split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let Some(name) = line.strip_prefix(b"event:") {
                event = String::from_utf8_lossy(name).trim().to_owned();
                let counter = match event.as_str() {
                    "post" => &heard.posts,
                    "decided" => &heard.decided,
                    "today" => &heard.today,
                    "why" => &heard.why,
                    "reload" => &heard.reload,
                    _ => continue,
                };
                counter.fetch_add(1, Relaxed);
            } else if let (Some(data), Some(ids), "post") =
                (line.strip_prefix(b"data:"), ids, event.as_str())
            {
                let data = String::from_utf8_lossy(data);
                let mut q = ids.lock().unwrap_or_else(|e| e.into_inner());
                for part in data.split(r#"data-id=""#).skip(1) {
                    let id = &part[..part.find('"').unwrap_or(0)];
                    if id.len() == 19 && id.bytes().all(|b| b.is_ascii_digit()) {
                        q.push_back(id.to_owned());
                    }
                }
            }
        }
        pending.drain(..=last);
    }
}

/// One decision sent: on which post, by whom, what, and how it went.
struct Sent {
    id: String,
    user: String,
    decision: Decision,
    status: u16,
    ms: f64,
}

/// `POST /api/decide` as the page's script sends it (the CSRF token in `X-CSRF-Token`).
async fn decide(addr: SocketAddr, p: &Person, id: &str, decision: Decision) -> (u16, f64) {
    let t = Instant::now();
    let status = http(
        addr,
        "POST",
        "/api/decide",
        &[
            ("Cookie", p.cookie.as_str()),
            ("X-CSRF-Token", p.csrf.as_str()),
        ],
        &form(&[("id", id), ("decision", decision.as_str())]),
    )
    .await
    .map_or(0, |(s, _, _)| s);
    (status, ms(t.elapsed()))
}

/// What the clients saw.
struct Load {
    login_ms: Vec<f64>,
    page_ms: Vec<f64>,
    heard: Arc<Heard>,
    sent: Vec<Sent>,
    /// Decision slots with no post yet told to the pages, or too many in flight.
    skipped: usize,
    /// (seconds since the start, VmRSS KiB) of the server.
    rss: Vec<(f64, u64)>,
    server_hwm_kib: u64,
}

/// A line of `/proc/PID/status` in KiB (`VmRSS:`, `VmHWM:`), where Linux reports it.
pub fn proc_kib(pid: u32, key: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

async fn clients(
    a: &Args,
    addr: SocketAddr,
    people: &[(String, String)],
    pid: u32,
) -> Result<Load> {
    let start = tokio::time::Instant::now();
    let end = start + Duration::from_secs(a.seconds);
    // The server's RSS, every `sample_every` s from now to the end.
    let sampler = tokio::spawn({
        let every = Duration::from_secs(a.sample_every.max(1));
        async move {
            let mut rss = Vec::new();
            let mut tick = tokio::time::interval_at(start, every);
            loop {
                let at = tick.tick().await;
                if at > end {
                    break;
                }
                if let Some(kib) = proc_kib(pid, "VmRSS:") {
                    rss.push(((at - start).as_secs_f64(), kib));
                }
            }
            (rss, proc_kib(pid, "VmHWM:").unwrap_or(0))
        }
    });
    let mut login_ms = Vec::new();
    let mut persons = Vec::new();
    for (user, password) in people {
        let t = Instant::now();
        persons.push(login(addr, user, password).await?);
        login_ms.push(ms(t.elapsed()));
    }
    let heard = Arc::new(Heard::default());
    let ids = Arc::new(Mutex::new(VecDeque::new()));
    let mut pages = tokio::task::JoinSet::new();
    let mut page_ms = Vec::new();
    for k in 0..a.pages {
        let p = &persons[k % persons.len()];
        let (t, _) = open_page(addr, &p.cookie).await?;
        page_ms.push(t);
        pages.spawn(page(
            addr,
            p.cookie.clone(),
            end,
            heard.clone(),
            (k == 0).then(|| ids.clone()),
        ));
    }
    // Decisions on a fixed schedule, each on a post the pages were told about, in turn by
    // each person; at most 256 in flight.
    let slots = (a.decisions_per_second * a.seconds as f64).round() as usize;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / a.decisions_per_second));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(256));
    let mut decisions = tokio::task::JoinSet::new();
    let mut skipped = 0;
    for k in 0..slots {
        if tick.tick().await >= end {
            break;
        }
        let id = ids.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
        let (Some(id), Ok(permit)) = (id, in_flight.clone().try_acquire_owned()) else {
            skipped += 1;
            continue;
        };
        let p = persons[k % persons.len()].clone();
        let decision = [Decision::NeedsReply, Decision::NoReply, Decision::Done][k % 3];
        decisions.spawn(async move {
            let (status, ms) = decide(addr, &p, &id, decision).await;
            drop(permit);
            Sent {
                id,
                user: p.user,
                decision,
                status,
                ms,
            }
        });
    }
    // Every decision answered (each is bounded by REQUEST_TIMEOUT), and the pages closed.
    let mut sent = Vec::new();
    while let Some(s) = decisions.join_next().await {
        sent.push(s?);
    }
    tokio::time::sleep_until(end).await;
    pages.abort_all();
    while pages.join_next().await.is_some() {}
    let (rss, server_hwm_kib) = sampler.await?;
    Ok(Load {
        login_ms,
        page_ms,
        heard,
        sent,
        skipped,
        rss,
        server_hwm_kib,
    })
}

/// The least-squares slope of `(seconds, KiB)` in KiB a minute (NaN under two points).
fn slope_kib_per_min(points: &[(f64, u64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return f64::NAN;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1 as f64).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 as f64 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    sxy / sxx * 60.0
}

/// How many of `sent` the database holds: the post's history has that decision by that user.
fn stored(db: &Path, sent: &[Sent]) -> Result<usize> {
    let store = DeskStore::open_existing(db)?;
    let mut found = 0;
    for s in sent {
        if store
            .history(&s.id)?
            .iter()
            .any(|(d, who, _)| *d == s.decision && *who == s.user)
        {
            found += 1;
        }
    }
    Ok(found)
}

/// Waits for `child` at most `limit`, then kills it; whether it ended by itself, well.
fn wait_bounded(child: &mut std::process::Child, limit: Duration) -> Result<bool> {
    let until = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status.success());
        }
        if Instant::now() >= until {
            eprintln!("desk-load: the server did not stop in {limit:?}: killing it");
            child.kill().ok();
            child.wait().ok();
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn run(a: Args) -> Result<()> {
    ensure!(
        a.users > 0 && a.pages > 0 && a.seconds > 0,
        "users, pages, seconds: positive"
    );
    ensure!(
        a.rate > 0.0 && a.decisions_per_second > 0.0,
        "rates: positive"
    );
    let dir = tempfile::tempdir()?;
    let users_file = dir.path().join("users.txt");
    let people: Vec<(String, String)> = (1..=a.users)
        .map(|i| {
            (
                format!("load{i:02}"),
                format!("load-{i:02}-{}", flagship_desk::auth::random_token()),
            )
        })
        .collect();
    for (user, password) in &people {
        flagship_desk::auth::add_user(&users_file, user, password, None)?;
    }
    let mut child = Command::new(std::env::current_exe()?)
        .arg("desk-serve")
        .arg("--dir")
        .arg(dir.path())
        .args(["--seconds", &a.seconds.to_string()])
        .args(["--rate", &a.rate.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start the desk server")?;
    let pid = child.id();
    let mut out = BufReader::new(child.stdout.take().context("no server stdout")?);
    let mut first = String::new();
    out.read_line(&mut first)?;
    let addr: SocketAddr = serde_json::from_str::<serde_json::Value>(&first)
        .ok()
        .and_then(|v| v["addr"].as_str().and_then(|a| a.parse().ok()))
        .with_context(|| format!("the server did not say where it listens: {first:?}"))?;
    eprintln!(
        "desk-load: server pid {pid} on {addr}: {} posts/s, {} pages, {} users, {} decisions/s for {} s",
        a.rate, a.pages, a.users, a.decisions_per_second, a.seconds
    );
    let rest = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let load = tokio::runtime::Runtime::new()?.block_on(clients(&a, addr, &people, pid));
    if let Some(stdin) = child.stdin.as_mut() {
        let _ = stdin.write_all(b"stop\n").and_then(|()| stdin.flush());
    }
    let clean = wait_bounded(&mut child, Duration::from_secs(60))?;
    drop(child.stdin.take());
    let rest = rest.join().unwrap_or_default();
    let load = load?;
    ensure!(clean, "the desk server failed (see above)");
    let served: serde_json::Value = rest
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .context("the server printed no summary")?;
    let stored = stored(&dir.path().join("desk.sqlite"), &load.sent)?;

    let ok = load.sent.iter().filter(|s| s.status == 200).count();
    let mut lat: Vec<f64> = load.sent.iter().map(|s| s.ms).collect();
    lat.sort_by(f64::total_cmp);
    let mut pages = load.page_ms.clone();
    pages.sort_by(f64::total_cmp);
    let warm = if a.seconds >= 2 * a.warmup {
        a.warmup as f64
    } else {
        a.seconds as f64 / 2.0
    };
    let after: Vec<(f64, u64)> = load.rss.iter().copied().filter(|p| p.0 >= warm).collect();
    let rss_text: Vec<String> = load
        .rss
        .iter()
        .map(|(t, k)| format!("{t:.0}:{k}"))
        .collect();
    let h = &load.heard;
    let get = |c: &AtomicU64| c.load(Relaxed);
    println!(
        "{}",
        serde_json::json!({
            "seconds": a.seconds,
            "rate": a.rate,
            "pages": a.pages,
            "users": a.users,
            "decisions_per_second": a.decisions_per_second,
            "posts_added": served["posts_added"],
            "feed_seconds": served["feed_seconds"],
            "batches": served["batches"],
            "write_p50_ms": served["write_p50_ms"],
            "write_p99_ms": served["write_p99_ms"],
            "write_max_ms": served["write_max_ms"],
            "login_max_ms": load.login_ms.iter().copied().fold(0.0, f64::max),
            "page_p50_ms": quantile(&pages, 0.5),
            "page_p99_ms": quantile(&pages, 0.99),
            "streams_opened": get(&h.streams_opened),
            "streams_refused": get(&h.streams_refused),
            "streams_reopened": get(&h.streams_reopened),
            "stream_mib": get(&h.bytes) as f64 / 1048576.0,
            "post_events": get(&h.posts),
            "decided_events": get(&h.decided),
            "today_events": get(&h.today),
            "why_events": get(&h.why),
            "reload_events": get(&h.reload),
            "decisions_skipped": load.skipped,
            "decisions_sent": load.sent.len(),
            "decisions_ok": ok,
            "decisions_failed": load.sent.len() - ok,
            "decisions_stored": stored,
            "decisions_lost": load.sent.len() - stored,
            "decision_p50_ms": quantile(&lat, 0.5),
            "decision_p99_ms": quantile(&lat, 0.99),
            "decision_max_ms": lat.last().copied().unwrap_or(f64::NAN),
            "rss_samples": rss_text.join(" "),
            "rss_first_mib": load.rss.first().map_or(f64::NAN, |p| p.1 as f64 / 1024.0),
            "rss_last_mib": load.rss.last().map_or(f64::NAN, |p| p.1 as f64 / 1024.0),
            "rss_peak_mib": load.server_hwm_kib as f64 / 1024.0,
            "rss_warmup_s": warm,
            "rss_slope_kib_per_min": slope_kib_per_min(&after),
        })
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slope_is_per_minute() {
        let pts: Vec<(f64, u64)> = (0..10).map(|i| (i as f64 * 10.0, 1000 + i * 5)).collect();
        assert!((slope_kib_per_min(&pts) - 30.0).abs() < 1e-9);
        assert!(slope_kib_per_min(&pts[..1]).is_nan());
    }

    #[test]
    fn quantiles_and_cookies() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(quantile(&v, 0.5), 3.0);
        assert_eq!(quantile(&v, 0.99), 5.0);
        let head = "HTTP/1.1 303 See Other\r\nset-cookie: flagship_session=abc; Path=/\r\n";
        assert_eq!(
            set_cookie(head, "flagship_session").as_deref(),
            Some("flagship_session=abc")
        );
        assert_eq!(set_cookie(head, "flagship_login"), None);
    }
}
