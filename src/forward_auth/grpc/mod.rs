//! Envoy's `envoy.service.auth.v3.Authorization/Check` over gRPC (`GATEHOUSE_GRPC_LISTEN`):
//! the forward-auth check for meshes and gateways that ask only over gRPC (Istio, Envoy
//! Gateway, Contour).
//!
//! The same check as `/v1/forward-auth`, not a second one: [`request`] reads the
//! `CheckRequest` into a [`Question`] (which fields count, and why the convention headers
//! never do), [`check::answer`] decides it exactly as for HTTP (route table, credentials,
//! decision, audit with source `forward_auth`), and [`response`] writes the HTTP answer into
//! the `CheckResponse` (status codes, the six headers, `headers_to_remove`).
//!
//! The protos are `envoy-types`' generated code; HTTP/2 is hyper's, through tonic. The listener
//! serves plain-text HTTP/2 only (h2c): TLS is the mesh's (a sidecar in front, mTLS between
//! proxies), and the address should be one only the proxies reach. It is bounded like the HTTP
//! one: at most `GATEHOUSE_MAX_CONNECTIONS` connections (one more is closed at once), each call
//! within `GATEHOUSE_REQUEST_TIMEOUT` (or the caller's shorter `grpc-timeout`), HTTP/2
//! keep-alive pings to drop dead peers, and a shutdown that drains for at most the drain
//! timeout.

mod request;
mod response;

use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::http::Method;
use envoy_types::pb::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tracing::Instrument as _;

use super::check::{self, Question};
use crate::http::{AddressHeader, AppState, ConnectionLimits, Refused};
use crate::tasks::Backoff;
use crate::throttle::Throttle;

use self::response::code_name;

/// Largest `CheckRequest` accepted (headers, and a body only if Envoy is told to send one):
/// a larger one fails the call, and Envoy fails closed.
pub const MAX_CHECK_BYTES: usize = 1024 * 1024;

/// HTTP/2 keep-alive: a ping after this long without frames, and the connection is dropped
/// if the answer takes longer than [`KEEPALIVE_TIMEOUT`].
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Growing sleeps between failed accepts, as on the HTTP listener.
const ACCEPT_BACKOFF: Backoff = Backoff::new(Duration::from_millis(5), Duration::from_secs(1));

/// The `Authorization` service over the forward-auth check.
#[derive(Clone)]
pub struct ExtAuthz {
    state: AppState,
}

impl ExtAuthz {
    /// The service of `state`.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    /// The answer to `check`, asked from `peer`.
    pub async fn answer(&self, peer: Option<IpAddr>, check: &CheckRequest) -> CheckResponse {
        let state = &self.state;
        let read = request::read(check);
        // As the `envoy` HTTP style: only X-Forwarded-For, and only from a trusted peer.
        let client_ip = peer.map(|peer| {
            state
                .trusted_proxies
                .client_ip_from(peer, &read.headers, AddressHeader::ForwardedFor)
        });
        let request_id = read
            .request_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let question = Question {
            original: read.original,
            // The Check call itself is an HTTP/2 POST.
            asked_method: &Method::POST,
            headers: &read.headers,
            client_ip,
            request_id: Some(request_id.clone()),
        };
        let span = tracing::info_span!("grpc", method = "Check", request_id);
        let answer = check::answer(state, &question).instrument(span).await;
        if let Some(Refused::Credentials(reason)) = answer.extensions().get::<Refused>() {
            state.metrics.auth.failed(reason);
        }
        response::check_response(answer, &read.headers).await
    }
}

#[tonic::async_trait]
impl Authorization for ExtAuthz {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let started = Instant::now();
        let peer = request.remote_addr().map(|a| a.ip().to_canonical());
        let answer = self.answer(peer, request.get_ref()).await;
        let code = answer
            .status
            .as_ref()
            .map_or(tonic::Code::Unknown, |s| tonic::Code::from(s.code));
        self.state
            .metrics
            .grpc
            .answered("Check", code_name(code), started.elapsed());
        Ok(tonic::Response::new(answer))
    }
}

/// Serves the `Authorization` service on `listener` until `shutdown` fires, then lets calls in
/// flight finish for at most `limits.drain_timeout`.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let timeout = state.request_timeout;
    let service =
        AuthorizationServer::new(ExtAuthz::new(state)).max_decoding_message_size(MAX_CHECK_BYTES);
    let incoming = accepted(listener, limits.max_connections, shutdown.clone());
    let served = tonic::transport::Server::builder()
        .timeout(timeout)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned());
    let drained = async {
        shutdown.cancelled().await;
        tokio::time::sleep(limits.drain_timeout).await;
    };
    tokio::select! {
        served = served => served.map_err(io::Error::other),
        () = drained => {
            tracing::warn!("gRPC calls still open after the drain timeout: closed");
            Ok(())
        }
    }
}

/// The accepted connections, at most `cap` open at once: one more is closed at once (as on the
/// HTTP listener, so a flood of idle connections cannot take every descriptor). Ends when
/// `shutdown` fires.
fn accepted(
    listener: TcpListener,
    cap: usize,
    shutdown: CancellationToken,
) -> impl futures_util::Stream<Item = io::Result<Held>> {
    let open = Arc::new(Semaphore::new(cap));
    futures_util::stream::unfold(
        (listener, open, shutdown, ACCEPT_BACKOFF),
        |(listener, open, shutdown, mut backoff)| async move {
            loop {
                let accepted = tokio::select! {
                    () = shutdown.cancelled() => return None,
                    accepted = listener.accept() => accepted,
                };
                match accepted {
                    Ok((stream, _)) => {
                        backoff.reset();
                        let Ok(permit) = open.clone().try_acquire_owned() else {
                            static AT_CAP: Throttle = Throttle::new();
                            if let Some(suppressed) = AT_CAP.allow() {
                                tracing::warn!(
                                    suppressed,
                                    "gRPC connection cap reached: connection closed"
                                );
                            }
                            continue;
                        };
                        let _ = stream.set_nodelay(true);
                        let held = Held {
                            stream,
                            _permit: permit,
                        };
                        return Some((Ok(held), (listener, open, shutdown, backoff)));
                    }
                    Err(e) => {
                        static FAILED: Throttle = Throttle::new();
                        if let Some(suppressed) = FAILED.allow() {
                            tracing::warn!(error = %e, suppressed, "gRPC accept failed");
                        }
                        if !backoff.wait(&shutdown).await {
                            return None;
                        }
                    }
                }
            }
        },
    )
}

/// A connection holding its place under the cap until it closes.
struct Held {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl Connected for Held {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Held {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Held {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
