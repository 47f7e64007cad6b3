//! A local fake of the Kinesis Firehose `PutRecordBatch` API for fault-injection tests (here
//! and through the binary): per-call scripted behaviour that moto cannot produce — per-record
//! `ErrorCode`s, throttling, 5xx storms, hangs, answers with fewer responses than records —
//! and a record of every record it accepted. It speaks the AWS JSON 1.1 protocol the SDK uses
//! (`POST /`, `X-Amz-Target: Firehose_20150804.PutRecordBatch`). Not used by the product.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;

/// What the fake does with one `PutRecordBatch` call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Call {
    /// Takes every record.
    Accept,
    /// Answers this HTTP status with a service error; takes nothing.
    Status(u16),
    /// Takes all but every `n`-th record, which get `ServiceUnavailableException`.
    RejectEvery(usize),
    /// Answers one response fewer than there were records; takes nothing.
    Partial,
    /// Waits this long, then closes the connection without answering.
    Hang(Duration),
}

#[derive(Default)]
struct State {
    script: Vec<Call>,
    /// Calls answered `Status(503)` until this instant (an outage), whatever the script says.
    down_until: Option<Instant>,
    calls: usize,
    accepted: Vec<Vec<u8>>,
}

/// The fake endpoint; stops serving when dropped (its threads end with the process).
pub struct FakeFirehose {
    port: u16,
    state: Arc<Mutex<State>>,
}

impl FakeFirehose {
    /// Serves on a free loopback port; calls follow `script`, then [`Call::Accept`].
    pub fn start(script: Vec<Call>) -> FakeFirehose {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().expect("address").port();
        let state = Arc::new(Mutex::new(State {
            script: script.into_iter().rev().collect(),
            ..State::default()
        }));
        let s = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || serve(conn, &s));
            }
        });
        FakeFirehose { port, state }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every call fails with 503 for `d` from now (Firehose down).
    pub fn down_for(&self, d: Duration) {
        self.state.lock().expect("state").down_until = Some(Instant::now() + d);
    }

    /// Calls answered so far (each SDK attempt is one).
    pub fn calls(&self) -> usize {
        self.state.lock().expect("state").calls
    }

    /// The records it took, in order (each a JSON line as ingest sends it).
    pub fn accepted(&self) -> Vec<Vec<u8>> {
        self.state.lock().expect("state").accepted.clone()
    }
}

fn respond(conn: &mut TcpStream, status: u16, body: &str) -> std::io::Result<()> {
    write!(
        conn,
        "HTTP/1.1 {status} X\r\nContent-Type: application/x-amz-json-1.1\r\nx-amzn-RequestId: fake\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
}

/// A record Firehose did not take.
const REJECTED: &str =
    "{\"ErrorCode\":\"ServiceUnavailableException\",\"ErrorMessage\":\"Slow down.\"}";

/// A `PutRecordBatch` answer with these per-record responses.
fn batch_answer(conn: &mut TcpStream, responses: Vec<String>) -> std::io::Result<()> {
    let failed = responses.iter().filter(|r| r.as_str() == REJECTED).count();
    respond(
        conn,
        200,
        &format!(
            "{{\"FailedPutCount\":{failed},\"Encrypted\":false,\"RequestResponses\":[{}]}}",
            responses.join(",")
        ),
    )
}

fn serve(conn: TcpStream, state: &Mutex<State>) {
    let mut reader = BufReader::new(conn.try_clone().expect("clone the connection"));
    let mut conn = conn;
    loop {
        // Request line and headers.
        let mut len = 0usize;
        let mut first = true;
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" && !first {
                break;
            }
            first = false;
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let records: Vec<Vec<u8>> = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["Records"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|r| r["Data"].as_str())
            .filter_map(|d| base64::engine::general_purpose::STANDARD.decode(d).ok())
            .collect();
        let call = {
            let mut s = state.lock().expect("state");
            s.calls += 1;
            if s.down_until.is_some_and(|t| Instant::now() < t) {
                Call::Status(503)
            } else {
                s.script.pop().unwrap_or(Call::Accept)
            }
        };
        let ok = |i: usize| format!("{{\"RecordId\":\"r{i}\"}}");
        let answer = match call {
            Call::Accept => {
                let mut s = state.lock().expect("state");
                s.accepted.extend(records.iter().cloned());
                batch_answer(&mut conn, (0..records.len()).map(ok).collect())
            }
            Call::RejectEvery(n) => {
                let mut rs = Vec::new();
                for (i, r) in records.iter().enumerate() {
                    if (i + 1) % n.max(1) == 0 {
                        rs.push(REJECTED.to_owned());
                    } else {
                        state.lock().expect("state").accepted.push(r.clone());
                        rs.push(ok(i));
                    }
                }
                batch_answer(&mut conn, rs)
            }
            // One response fewer than records, none of them taken.
            Call::Partial => batch_answer(
                &mut conn,
                (0..records.len().saturating_sub(1)).map(ok).collect(),
            ),
            Call::Status(code) => respond(
                &mut conn,
                code,
                "{\"__type\":\"ServiceUnavailableException\",\"message\":\"injected outage\"}",
            ),
            Call::Hang(d) => {
                std::thread::sleep(d);
                return;
            }
        };
        if answer.is_err() {
            return;
        }
    }
}
