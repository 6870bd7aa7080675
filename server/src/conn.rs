//! Admission of TCP connections, shared by the gRPC and HTTP front ends: at
//! most `max_connections` open at once, and a connection that sends nothing
//! within `first_byte_timeout` is closed before it ever reaches HTTP.
//!
//! Without these, connections are limited only by the process's file
//! descriptors, and a client that opens connections and stays silent (idle
//! sockets, slowloris) holds them, and a share of memory, for good: neither
//! hyper nor tonic times out a connection that never sends its HTTP/2
//! preface or HTTP/1 request line. Over the limit a connection is closed at
//! once (counted in `rir_connections_refused_total{reason="limit"}`) rather
//! than left in the kernel's backlog, so a client learns at once and a
//! balancer can try another replica.
//!
//! Connections that did speak stay open while the client keeps them (HTTP/2
//! keepalive pings, set on the gRPC server, find dead peers).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus::{IntCounter, IntCounterVec, IntGauge};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// How connections are admitted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnLimits {
    /// Connections open at once, gRPC and HTTP together.
    pub(crate) max_connections: usize,
    /// Close a connection that has sent no byte by then.
    pub(crate) first_byte_timeout: Duration,
    /// TCP keepalive probes after this much idle time (None: off).
    pub(crate) tcp_keepalive: Option<Duration>,
    /// HTTP/1: close a connection whose request head has not arrived this
    /// long after the server began to read it, including the idle time
    /// before the next request on a kept-alive connection (None: never).
    pub(crate) header_timeout: Option<Duration>,
    /// gRPC: close a connection whose first call (TLS handshake and
    /// HTTP/2 preface included) has not arrived this long after its first
    /// byte (None: never).
    pub(crate) handshake_timeout: Option<Duration>,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_connections: 10_000,
            first_byte_timeout: Duration::from_secs(10),
            tcp_keepalive: Some(Duration::from_secs(60)),
            header_timeout: Some(Duration::from_secs(30)),
            handshake_timeout: Some(Duration::from_secs(30)),
        }
    }
}

/// One front end's gate: its places and its counters.
#[derive(Clone)]
pub(crate) struct Gate {
    limits: ConnLimits,
    places: Arc<Semaphore>,
    open: IntGauge,
    refused: IntCounterVec,
    stalls: IntCounter,
    heads_cut: IntCounter,
    handshakes_cut: IntCounter,
    /// The first-call deadline of each connection (gRPC only).
    first_call: Option<Duration>,
    front: String,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("limits", &self.limits)
            .finish()
    }
}

/// A connection holding its place under the limit until it is dropped (closed).
pub(crate) struct Admitted {
    io: TcpStream,
    _place: Place,
    /// Until its first call arrives, the deadline for it (gRPC).
    first_call: Option<FirstCall>,
}

/// The deadline of a connection's first call: the TLS handshake, the
/// HTTP/2 preface and the first call's headers must all come by then. A
/// half-sent preface (`PRI * HTTP/2.0` and nothing more) held a gRPC
/// connection for good; hyper times out neither it nor a stalled
/// handshake.
struct FirstCall {
    /// Set by the gRPC front end when a call arrives on the connection.
    spoke: Arc<AtomicBool>,
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// `rir_connections_cut_total{front, reason="handshake"}`.
    cut: IntCounter,
}

/// What the gRPC front end learns of a connection with each call: its
/// address, and the flag that lifts its first-call deadline
/// ([`AdmittedInfo::spoke`]).
#[derive(Debug, Clone)]
pub(crate) struct AdmittedInfo {
    spoke: Option<Arc<AtomicBool>>,
}

impl AdmittedInfo {
    /// A call arrived on this connection: it is past its handshake.
    pub(crate) fn spoke(&self) {
        if let Some(s) = &self.spoke {
            s.store(true, Ordering::Release);
        }
    }
}

/// One of the `max_connections` places, and the gauge it counts in.
struct Place {
    _permit: OwnedSemaphorePermit,
    open: IntGauge,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl Gate {
    /// A gate with `limits` for the front end `front` (`grpc`, `http`),
    /// counting into `metrics`.
    pub(crate) fn new(limits: ConnLimits, front: &str, metrics: &crate::stats::Metrics) -> Self {
        Gate {
            limits,
            places: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            open: metrics.connections.with_label_values(&[front]),
            refused: metrics.connections_refused.clone(),
            stalls: metrics.stalled.with_label_values(&[front]),
            heads_cut: metrics.connections_cut.with_label_values(&[front, "head"]),
            handshakes_cut: metrics
                .connections_cut
                .with_label_values(&[front, "handshake"]),
            first_call: None,
            front: front.to_string(),
        }
    }

    /// The counter of this front end's requests whose body stopped
    /// arriving ([`crate::stall`]).
    pub(crate) fn stalls(&self) -> IntCounter {
        self.stalls.clone()
    }

    /// Gives each connection `timeout` (None: none) from its first byte to
    /// its first call ([`AdmittedInfo::spoke`] marks it).
    pub(crate) fn expecting_calls(mut self, timeout: Option<Duration>) -> Self {
        self.first_call = timeout;
        self
    }

    /// The HTTP/1 header read timeout of this front end's connections.
    pub(crate) fn header_timeout(&self) -> Option<Duration> {
        self.limits.header_timeout
    }

    /// The counter of connections closed for a head past that timeout.
    pub(crate) fn heads_cut(&self) -> IntCounter {
        self.heads_cut.clone()
    }

    /// Accepts from `listener` on a task of its own and hands over the
    /// connections admitted; the task ends, closing the listener, when the
    /// receiver is dropped.
    pub(crate) fn admit(&self, listener: TcpListener) -> mpsc::Receiver<Admitted> {
        let (tx, rx) = mpsc::channel(64);
        let gate = self.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = tx.closed() => break,
                    r = listener.accept() => r,
                };
                let tcp = match accepted {
                    Ok((tcp, _)) => tcp,
                    Err(e) => {
                        // Out of file descriptors and the like: wait for
                        // connections to close instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = gate.places.clone().try_acquire_owned() else {
                    gate.refused
                        .with_label_values(&[&gate.front, "limit"])
                        .inc();
                    tracing::debug!(
                        "connection refused: {} open, the limit",
                        gate.limits.max_connections
                    );
                    continue;
                };
                gate.open.inc();
                let place = Place {
                    _permit: permit,
                    open: gate.open.clone(),
                };
                configure(&tcp, gate.limits.tcp_keepalive);
                let first_call = gate.first_call.map(|d| FirstCall {
                    spoke: Arc::new(AtomicBool::new(false)),
                    deadline: Box::pin(tokio::time::sleep(d)),
                    cut: gate.handshakes_cut.clone(),
                });
                let (tx, wait) = (tx.clone(), gate.limits.first_byte_timeout);
                let silent = gate.refused.with_label_values(&[&gate.front, "silent"]);
                tokio::spawn(async move {
                    let mut byte = [0u8; 1];
                    match tokio::time::timeout(wait, tcp.peek(&mut byte)).await {
                        Ok(Ok(n)) if n > 0 => {
                            let _ = tx
                                .send(Admitted {
                                    io: tcp,
                                    _place: place,
                                    first_call,
                                })
                                .await;
                        }
                        // Closed by the peer, or silent: drop it.
                        Ok(_) => {}
                        Err(_) => silent.inc(),
                    }
                });
            }
        });
        rx
    }
}

fn configure(tcp: &TcpStream, keepalive: Option<Duration>) {
    let _ = tcp.set_nodelay(true);
    if let Some(idle) = keepalive {
        let ka = socket2::TcpKeepalive::new().with_time(idle);
        let _ = socket2::SockRef::from(tcp).set_tcp_keepalive(&ka);
    }
}

impl AsyncRead for Admitted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(f) = &mut self.first_call {
            if f.spoke.load(Ordering::Acquire) {
                self.first_call = None;
            } else if f.deadline.as_mut().poll(cx).is_ready() {
                f.cut.inc();
                self.first_call = None;
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no call within the handshake timeout (--handshake-timeout-ms)",
                )));
            }
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Admitted {
    type ConnectInfo = AdmittedInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        AdmittedInfo {
            spoke: self.first_call.as_ref().map(|f| f.spoke.clone()),
        }
    }
}
