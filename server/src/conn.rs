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

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus::{IntCounter, IntCounterVec, IntGauge};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// How connections are admitted.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Connections open at once, gRPC and HTTP together.
    pub max_connections: usize,
    /// Close a connection that has sent no byte by then.
    pub first_byte_timeout: Duration,
    /// TCP keepalive probes after this much idle time (None: off).
    pub tcp_keepalive: Option<Duration>,
    /// HTTP/1: close a connection whose request head has not arrived this
    /// long after the server began to read it, including the idle time
    /// before the next request on a kept-alive connection (None: never).
    pub header_timeout: Option<Duration>,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_connections: 10_000,
            first_byte_timeout: Duration::from_secs(10),
            tcp_keepalive: Some(Duration::from_secs(60)),
            header_timeout: Some(Duration::from_secs(30)),
        }
    }
}

/// One front end's gate: its places and its counters.
#[derive(Clone)]
pub struct Gate {
    limits: ConnLimits,
    places: Arc<Semaphore>,
    open: IntGauge,
    refused: IntCounterVec,
    stalls: IntCounter,
    heads_cut: IntCounter,
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
pub struct Admitted {
    io: TcpStream,
    _place: Place,
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
    pub fn new(limits: ConnLimits, front: &str, metrics: &crate::stats::Metrics) -> Self {
        Gate {
            limits,
            places: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            open: metrics.connections.with_label_values(&[front]),
            refused: metrics.connections_refused.clone(),
            stalls: metrics.stalled.with_label_values(&[front]),
            heads_cut: metrics.connections_cut.with_label_values(&[front, "head"]),
            front: front.to_string(),
        }
    }

    /// The counter of this front end's requests whose body stopped
    /// arriving ([`crate::stall`]).
    pub fn stalls(&self) -> IntCounter {
        self.stalls.clone()
    }

    /// The HTTP/1 header read timeout of this front end's connections.
    pub fn header_timeout(&self) -> Option<Duration> {
        self.limits.header_timeout
    }

    /// The counter of connections closed for a head past that timeout.
    pub fn heads_cut(&self) -> IntCounter {
        self.heads_cut.clone()
    }

    /// Accepts from `listener` on a task of its own and hands over the
    /// connections admitted; the task ends, closing the listener, when the
    /// receiver is dropped.
    pub fn admit(&self, listener: TcpListener) -> mpsc::Receiver<Admitted> {
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

impl Admitted {
    /// The peer's address.
    pub fn peer(&self) -> io::Result<SocketAddr> {
        self.io.peer_addr()
    }
}

impl AsyncRead for Admitted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
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
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}
