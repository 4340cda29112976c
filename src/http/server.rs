//! The accept loop: HTTP/1.1 connections with read timeouts, a bound on
//! how many are served at once, and a close that never waits forever.
//!
//! `axum::serve` has neither read timeouts nor a bound on its graceful
//! close, so one client that stops mid-request kept the daemon from
//! exiting on SIGTERM; and it serves every connection at once, so a burst
//! of 2,000 webhooks cost 2,000 sets of connection buffers.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::net::IpAddr;
use tower::ServiceExt;

use super::peer::TrustedProxies;
use super::tls::{self, ServerTls};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// A client gets this long to send a request's headers; it is also how
/// long an idle keep-alive connection stays open (hyper starts the same
/// timer while it waits for the next request).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once. More wait in the kernel's accept queue
/// (backpressure, nothing is refused): the writer is a single SQLite
/// connection, so more concurrency buys no throughput, only memory.
pub const MAX_CONNECTIONS: usize = 64;

/// The kernel's accept queue (capped by `net.core.somaxconn`), deep enough
/// for a burst of webhooks to wait there rather than be reset.
pub const LISTEN_BACKLOG: u32 = 4096;

/// On shutdown, requests in flight get this long to finish; then their
/// connections are dropped. The worker drains in parallel with its own 8 s
/// deadline, and the daemon must exit within 10 s of SIGTERM.
pub const CLOSE_GRACE: Duration = Duration::from_secs(4);

/// A connection's read buffer never grows past this (hyper's default is
/// about 400 KiB); headers must fit in it.
const MAX_BUF: usize = 64 * 1024;

/// Binds `addr` with a deep accept queue.
pub(super) fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

fn builder() -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_BUF)
        .keep_alive(true);
    b
}

/// Accepts until `shutdown`, then closes within [`CLOSE_GRACE`].
pub(super) async fn run(
    socket: TcpListener,
    app: Router,
    proxies: TrustedProxies,
    tls: Option<Arc<ServerTls>>,
    shutdown: CancellationToken,
) {
    let proxies = Arc::new(proxies);
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    let hard_stop = CancellationToken::new();
    let builder = builder();
    while let Some((stream, permit)) = next_connection(&socket, &limit, &shutdown).await {
        let _ = stream.set_nodelay(true);
        let Ok(peer) = stream.peer_addr() else {
            continue;
        };
        let service = service(app.clone(), proxies.clone(), peer.ip());
        let (builder, watcher) = (builder.clone(), graceful.watcher());
        let handshake = tls::handshake(tls.clone(), stream, shutdown.clone());
        let hard = hard_stop.clone();
        tokio::spawn(async move {
            // The TLS handshake runs here, not in the accept loop: a slow
            // client delays only itself.
            let conn = async move {
                let io = handshake.await?;
                Some(
                    watcher
                        .watch(builder.serve_connection(TokioIo::new(io), service))
                        .await,
                )
            };
            tokio::select! {
                served = conn => if let Some(Err(e)) = served {
                    tracing::debug!(error = %e, "HTTP connection ended with an error");
                },
                _ = hard.cancelled() => {}
            }
            drop(permit);
        });
    }
    // Stop accepting: connections still queued in the kernel are refused.
    drop(socket);
    close(graceful, hard_stop).await;
}

/// The router, with each request's [`ClientAddr`] in its extensions.
fn service(
    app: Router,
    proxies: Arc<TrustedProxies>,
    peer: IpAddr,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone {
    hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let client = proxies.client(peer, req.headers());
        req.extensions_mut().insert(client);
        app.clone().oneshot(req)
    })
}

/// Waits for a free slot, then for a connection; None on shutdown.
async fn next_connection(
    socket: &TcpListener,
    limit: &Arc<Semaphore>,
    shutdown: &CancellationToken,
) -> Option<(TcpStream, OwnedSemaphorePermit)> {
    let permit = tokio::select! {
        _ = shutdown.cancelled() => return None,
        p = limit.clone().acquire_owned() => p.ok()?,
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            accepted = socket.accept() => match accepted {
                Ok((stream, _)) => return Some((stream, permit)),
                Err(e) => {
                    // Out of file descriptors, or a connection reset while
                    // queued: pause briefly rather than spin, and go on.
                    tracing::warn!(error = %e, "cannot accept an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// Lets requests in flight finish for [`CLOSE_GRACE`], then drops the rest.
async fn close(graceful: GracefulShutdown, hard_stop: CancellationToken) {
    let open = graceful.count();
    if tokio::time::timeout(CLOSE_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace = ?CLOSE_GRACE,
            "HTTP clients still connected at shutdown; dropping their connections"
        );
        hard_stop.cancel();
    } else if open > 0 {
        tracing::debug!(open, "HTTP connections closed");
    }
}
