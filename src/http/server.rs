//! The accept loop: HTTP/1.1 connections with read timeouts, bounds on how
//! many are served at once, in all and per client (see [`super::conns`]),
//! and a close that never waits forever.
//!
//! `axum::serve` has neither read timeouts nor a bound on its graceful
//! close, so one client that stops mid-request kept the daemon from
//! exiting on SIGTERM; and it serves every connection at once, so a burst
//! of 2,000 webhooks cost 2,000 sets of connection buffers. A connection's
//! slot is taken before it is served (see [`super::conns`]): strangers'
//! connections make room for a newcomer, a trusted proxy's burst beyond the
//! cap waits in the kernel's accept queue, and a stranger for whom no room
//! can be made is closed.

use std::sync::Arc;
use std::time::Duration;

use std::net::IpAddr;

use axum::Router;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::Response;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::conns::{Conn, ConnHandle, Conns, MAX_CONNECTIONS, MAX_PER_CLIENT, Refused, Slot};
use super::peer::{ClientAddr, TrustedProxies, unmap};
use super::tls::{self, ServerTls};

/// A client gets this long to send a request's headers; it is also how
/// long an idle keep-alive connection stays open (hyper starts the same
/// timer while it waits for the next request).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

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
    let conns = Conns::new(MAX_CONNECTIONS, MAX_PER_CLIENT);
    let graceful = GracefulShutdown::new();
    let hard_stop = CancellationToken::new();
    let builder = builder();
    while let Some((stream, peer, slot)) =
        next_connection(&socket, &conns, &proxies, &shutdown).await
    {
        let _ = stream.set_nodelay(true);
        let service = service(
            app.clone(),
            proxies.clone(),
            conns.clone(),
            slot.conn.clone(),
            peer,
        );
        let (builder, watcher) = (builder.clone(), graceful.watcher());
        let handshake = tls::handshake(tls.clone(), stream, shutdown.clone());
        let hard = hard_stop.clone();
        tokio::spawn(async move {
            let closing = slot.conn.closing().clone();
            // The TLS handshake runs here, not in the accept loop: a slow
            // client delays only itself (and holds a slot a newcomer may take).
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
                _ = closing.cancelled() => {}
                _ = hard.cancelled() => {}
            }
            drop(slot);
        });
    }
    // Stop accepting: connections still queued in the kernel are refused.
    drop(socket);
    close(graceful, hard_stop).await;
}

/// The router, with each request's [`ClientAddr`] and connection in its
/// extensions; a client behind a trusted proxy that already has its share
/// of requests in flight gets 429 at once.
fn service(
    app: Router,
    proxies: Arc<TrustedProxies>,
    conns: Arc<Conns>,
    conn: Arc<Conn>,
    peer: IpAddr,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone {
    hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let client = proxies.client(peer, req.headers());
        let busy = conn.busy();
        // A proxy's own requests are not capped: its clients are.
        let forwarded = (client.0 != peer).then(|| conns.forwarded(client.key()));
        req.extensions_mut().insert(client);
        req.extensions_mut().insert(ConnHandle(conn.clone()));
        let app = app.clone();
        async move {
            let _busy = busy;
            if let Some(None) = forwarded {
                refused("forwarded_per_client");
                return Ok(too_many());
            }
            app.oneshot(req).await
        }
    })
}

fn too_many() -> Response {
    let mut r = super::reject(
        StatusCode::TOO_MANY_REQUESTS,
        "too many requests at once from your address",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// Counts a connection or request the listener turned away.
fn refused(reason: &str) {
    crate::metrics::metrics()
        .http_refused
        .get_or_create(&vec![("reason", reason.to_string())])
        .inc();
}

/// The next connection with its peer and slot; None on shutdown. A client
/// over its share is closed at once; when no slot can be made for it, a
/// stranger is closed and a trusted proxy waits for one to free.
async fn next_connection(
    socket: &TcpListener,
    conns: &Arc<Conns>,
    proxies: &TrustedProxies,
    shutdown: &CancellationToken,
) -> Option<(TcpStream, IpAddr, Slot)> {
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return None,
            accepted = socket.accept() => match accepted {
                Ok((stream, peer)) => (stream, unmap(peer.ip())),
                Err(e) => {
                    // Out of file descriptors, or a connection reset while
                    // queued: pause briefly rather than spin, and go on.
                    tracing::warn!(error = %e, "cannot accept an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let exempt = proxies.trusts(peer);
        loop {
            // Enabled before the admission is tried: no release is missed.
            let freed = conns.freed();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match conns.admit(ClientAddr(peer).key(), exempt) {
                Ok((slot, evicted)) => {
                    if evicted {
                        refused("evicted");
                    }
                    return Some((stream, peer, slot));
                }
                Err(Refused::PerClient) => {
                    refused("per_client");
                    break;
                }
                // A stranger is not waited for: that would stall the
                // accept loop, and every client behind it, for its sake.
                Err(Refused::Full) if !exempt => {
                    refused("full");
                    break;
                }
                // A trusted proxy's burst waits its turn (backpressure).
                Err(Refused::Full) => tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = freed => {}
                    // Or a connection has aged past its grace meanwhile.
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                },
            }
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
