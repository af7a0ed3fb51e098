//! Accepting and serving connections, with the hygiene a service in front of every request
//! needs (issue 14, point 7): a client that connects and says nothing, or sends its headers a
//! byte at a time, or holds an idle keep-alive connection forever, must not take a file
//! descriptor away from the clients that do send requests.
//!
//! - **Header-read timeout** ([`ConnectionLimits::header_read_timeout`]): a request head (the
//!   request line and headers) must arrive within it, counted from the accept for a new
//!   connection and from the first byte for the next request on a kept-alive one.
//! - **Idle timeout** ([`ConnectionLimits::idle_timeout`]): a connection with no request in
//!   flight and no byte of a new one for this long is closed. hyper 1.x's own
//!   `header_read_timeout` starts when it begins reading a head, which on a kept-alive
//!   connection is the moment it goes idle: it would close idle connections after the (short)
//!   header-read timeout, and gives no separate idle bound. So hyper's is off and both are
//!   enforced here by a per-connection watchdog that sees the bytes read and the requests in
//!   flight.
//! - **Cap** ([`ConnectionLimits::max_connections`], lowered at start to the descriptor limit
//!   minus [`DESCRIPTOR_HEADROOM`] for Redis, the spool and logs): at the cap a new connection
//!   is accepted and closed at once, so the backlog does not fill with connections that will
//!   never be served and `accept` never runs out of descriptors because of clients.
//! - **Head size**: at most [`MAX_HEADER_BYTES`], else 431.
//! - **Accept errors** (`EMFILE`, `ENFILE`, `ENOBUFS`...) back off (5 ms doubling to 1 s) and
//!   are logged at most every 5 s, instead of spinning on a listener that stays readable.
//! - **Shutdown**: stop accepting, let each connection finish its request in flight (no new
//!   keep-alive request is read), and close what is still open after
//!   [`ConnectionLimits::drain_timeout`].
//!
//! The application's `Router` is called once per request with `ConnectInfo<SocketAddr>` in its
//! extensions, as `axum::serve` would.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::tasks::Backoff;

/// Growing sleeps between failed accepts: 5 ms doubling to 1 s.
const ACCEPT_BACKOFF: Backoff = Backoff::new(Duration::from_millis(5), Duration::from_secs(1));

/// Descriptors kept free below the process limit when capping connections: Redis connections
/// (one per `GATEHOUSE_REDIS_CONNECTIONS`, plus lookups, pub/sub and reconnects), the audit
/// spool, the runtime's own and the one `accept` needs to close a connection at the cap.
pub const DESCRIPTOR_HEADROOM: usize = 64;

/// Largest request head (request line and headers) accepted; a larger one is a 431. Large
/// enough for a proxy's forwarded cookies (nginx buffers 4 x 8 KiB by default), small enough
/// that the cap times this stays modest (256 MiB at 4096 connections, against ~1.6 GiB with
/// hyper's default ~400 KiB buffer).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// How connections are bounded (`GATEHOUSE_HEADER_READ_TIMEOUT`, `GATEHOUSE_IDLE_TIMEOUT`,
/// `GATEHOUSE_MAX_CONNECTIONS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Longest wait for a request head (default 5 s).
    pub header_read_timeout: Duration,
    /// Longest a connection stays open with nothing in flight (default 75 s: above nginx's
    /// 60 s upstream keep-alive, so the proxy closes first).
    pub idle_timeout: Duration,
    /// Open connections at most (default 4096, lowered to the descriptor limit minus
    /// [`DESCRIPTOR_HEADROOM`]).
    pub max_connections: usize,
    /// Longest the shutdown waits for requests in flight.
    pub drain_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(75),
            max_connections: 4096,
            drain_timeout: Duration::from_secs(11),
        }
    }
}

/// `max_connections` lowered so that clients can never take the descriptors the process needs
/// for itself.
pub fn effective_max_connections(configured: usize) -> usize {
    match descriptor_limit() {
        Some(limit) => configured.min(limit.saturating_sub(DESCRIPTOR_HEADROOM).max(1)),
        None => configured,
    }
}

fn descriptor_limit() -> Option<usize> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    (ok && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur as usize)
}

/// Serves `router` on `listener` until `shutdown` fires, then drains (see the module docs).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let max = effective_max_connections(limits.max_connections);
    if max < limits.max_connections {
        tracing::warn!(
            configured = limits.max_connections,
            max,
            "GATEHOUSE_MAX_CONNECTIONS lowered to fit the open-file limit (ulimit -n) minus {DESCRIPTOR_HEADROOM}"
        );
    }
    let limits = Arc::new(limits);
    let mut connections = JoinSet::new();
    let mut backoff = ACCEPT_BACKOFF;
    let mut accept_errors = Throttled::default();
    let mut refused = Throttled::default();
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff.reset();
                accepted
            }
            // The peer gave up before we accepted: nothing is wrong with the listener.
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                let delay = backoff.next_wait();
                accept_errors.warn(|suppressed| {
                    tracing::error!(error = %e, retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), suppressed, "accept failed; backing off");
                });
                tokio::select! {
                    () = tokio::time::sleep(delay) => continue,
                    () = shutdown.cancelled() => break,
                }
            }
        };
        while connections.try_join_next().is_some() {}
        if connections.len() >= max {
            drop(stream);
            refused.warn(|suppressed| {
                tracing::warn!(
                    max,
                    suppressed,
                    "at the connection cap (GATEHOUSE_MAX_CONNECTIONS); closing new connections"
                );
            });
            continue;
        }
        let _ = stream.set_nodelay(true);
        connections.spawn(serve_connection(
            stream,
            peer,
            router.clone(),
            limits.clone(),
            shutdown.clone(),
        ));
    }
    drop(listener);
    let drained = tokio::time::timeout(limits.drain_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "connections still open after the drain timeout; closing them"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// Errors of one connection that `accept` reports; the listener itself is fine.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: Arc<ConnectionLimits>,
    shutdown: CancellationToken,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            let busy = activity.begin();
            let call = router.clone().oneshot(request);
            async move {
                let response = call.await;
                drop(busy);
                response
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    // Ours, see the module docs; hyper's would also close idle connections early.
    builder
        .header_read_timeout(None)
        .max_header_size(MAX_HEADER_BYTES);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let mut draining = false;
    loop {
        let deadline = activity.deadline(&limits);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            () = shutdown.cancelled(), if !draining => {
                if activity.silent() {
                    return;
                }
                // Finish the request in flight (or whose head is arriving), then close.
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
            () = activity.changed.notified() => {}
            () = tokio::time::sleep_until(deadline) => {
                if let Some(why) = activity.expired(&limits) {
                    tracing::debug!(%peer, why, "closing connection");
                    return;
                }
            }
        }
    }
}

/// No head in progress.
const NONE: u64 = u64::MAX;

/// What a connection is doing, as seen by its reads and its requests, in milliseconds since
/// the accept.
struct Activity {
    origin: Instant,
    in_flight: AtomicU32,
    /// When the last request finished.
    idle_since: AtomicU64,
    /// When the head of the next request began (the accept, for a new connection), or `NONE`.
    head_since: AtomicU64,
    /// Whether any byte has arrived.
    head_bytes: AtomicBool,
    /// Wakes the watchdog when the deadline may have moved.
    changed: tokio::sync::Notify,
}

/// Marks a request in flight until dropped.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.idle_since.store(self.0.now(), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.changed.notify_one();
    }
}

impl Activity {
    fn new() -> Self {
        Self {
            origin: Instant::now(),
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
            head_bytes: AtomicBool::new(false),
            changed: tokio::sync::Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_since.store(NONE, Ordering::Relaxed);
        self.changed.notify_one();
        Busy(self.clone())
    }

    /// Bytes arrived: with nothing in flight they start the next request's head.
    fn read(&self) {
        self.head_bytes.store(true, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Relaxed) == 0 {
            let started = self.head_since.compare_exchange(
                NONE,
                self.now(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            if started.is_ok() {
                self.changed.notify_one();
            }
        }
    }

    /// Whether the client has sent nothing since the accept: closing loses nothing. (A
    /// connection that has served requests is left to hyper's graceful shutdown, which
    /// finishes writing the last response before closing.)
    fn silent(&self) -> bool {
        !self.head_bytes.load(Ordering::Relaxed)
    }

    /// When the connection expires if nothing changes (a request in flight is bounded by the
    /// request timeout instead: look again later).
    fn deadline(&self, limits: &ConnectionLimits) -> Instant {
        let at = |since: u64, limit: Duration| self.origin + Duration::from_millis(since) + limit;
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Instant::now() + limits.header_read_timeout.min(limits.idle_timeout);
        }
        match self.head_since.load(Ordering::Relaxed) {
            NONE => at(self.idle_since.load(Ordering::Relaxed), limits.idle_timeout),
            since => at(since, limits.header_read_timeout),
        }
    }

    /// Why the connection should be closed now, if it should.
    fn expired(&self, limits: &ConnectionLimits) -> Option<&'static str> {
        self.expired_at(limits, Instant::now())
    }

    fn expired_at(&self, limits: &ConnectionLimits, now: Instant) -> Option<&'static str> {
        if self.in_flight.load(Ordering::Relaxed) > 0 || now < self.deadline(limits) {
            return None;
        }
        Some(match self.head_since.load(Ordering::Relaxed) {
            NONE => "idle timeout",
            _ => "header read timeout",
        })
    }
}

/// The socket, reporting its reads to the connection's [`Activity`].
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A warning logged at most every [`Throttled::EVERY`], with the count it suppressed.
#[derive(Default)]
struct Throttled {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttled {
    const EVERY: Duration = Duration::from_secs(5);

    fn warn(&mut self, log: impl FnOnce(u64)) {
        let now = Instant::now();
        if self.last.is_some_and(|last| now < last + Self::EVERY) {
            self.suppressed += 1;
            return;
        }
        log(self.suppressed);
        self.last = Some(now);
        self.suppressed = 0;
    }
}

#[cfg(test)]
mod tests;
