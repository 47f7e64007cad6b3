//! The server loop: accepts connections under a cap (a semaphore of
//! `desk.max_connections`; past it, connections wait in the listen backlog) and serves each
//! on its own task with hyper's HTTP/1 and a timer — a request's head must arrive within
//! `desk.header_timeout_s` of the connection opening or of the previous answer (so a
//! half-sent request, or a kept-alive connection left idle, is closed), and a request other
//! than an event stream is answered within `desk.request_timeout_s` (503 past it). The
//! router (axum) is the service; each request carries its peer's address
//! (`ConnectInfo<SocketAddr>`).
//!
//! Graceful shutdown: the listener closes, open event streams end (`Desk::close`), each
//! connection finishes the answer in progress (at most [`GRACE`]) and closes; `serve`
//! returns when every connection has.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower_service::Service;

use super::ServerError;
use super::state::{Desk, Limits};

/// How long a connection may take to finish its answer once the desk stops.
pub(super) const GRACE: Duration = Duration::from_secs(10);

pub(super) async fn serve(
    app: Router,
    d: Arc<Desk>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let limits = d.settings.limits.clone();
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(max));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            biased;
            () = &mut shutdown => break,
            s = slots.clone().acquire_owned() => s.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, go on.
                    tracing::warn!("desk: accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        tokio::spawn(connection(
            app.clone(),
            stream,
            peer,
            limits.clone(),
            stop_rx.clone(),
            slot,
        ));
    }
    drop(listener);
    d.close();
    stop_tx.send_replace(true);
    // Each connection holds a slot until it ends: all slots back, all connections ended.
    let _ = slots.acquire_many(max as u32).await;
    Ok(())
}

/// Serves one connection until it ends, or until the desk stops (then its answer in
/// progress, at most [`GRACE`]); its slot is given back when this returns.
async fn connection(
    app: Router,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let request_timeout = limits.request_timeout;
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let stream = req.uri().path() == "/events";
        let answer = app.clone().call(req);
        async move {
            if stream {
                return answer.await;
            }
            match tokio::time::timeout(request_timeout, answer).await {
                Ok(answer) => answer,
                Err(_) => Ok::<_, Infallible>(too_slow(request_timeout)),
            }
        }
    });
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let conn = http.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, "desk: connection: {e}");
            }
        }
        _ = async { stop.wait_for(|s| *s).await.map(drop) } => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(GRACE, conn).await;
        }
    }
}

fn too_slow(limit: Duration) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(serde_json::json!({
            "error": format!(
                "the desk took longer than {} s to answer (a decision sent may still have been recorded: reload)",
                limit.as_secs()
            )
        })),
    )
        .into_response()
}
