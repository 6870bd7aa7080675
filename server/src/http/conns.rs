//! HTTP/1 connections served with a deadline on the request head: the
//! REST front end and the metrics endpoint both serve here.
//!
//! The connection gate ([`crate::conn`]) closes sockets that send nothing,
//! but one byte gets a connection past it, and axum's own loop gives hyper
//! no timer, so a client that sent `G` (or trickled its head a byte every
//! 20 s) held its connection for good. Here every connection gets hyper's
//! header read timeout, which runs from when the server starts reading a
//! head to when the head is complete: a slow head, and a kept-alive
//! connection idle past it before its next request, are closed and
//! counted in `rir_connections_cut_total{front, reason="head"}`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::conn::Admitted;

/// How connections are served: their deadlines, TLS, and the counter of
/// those cut.
#[derive(Clone)]
pub(crate) struct Serving {
    /// hyper's header read timeout (None: none).
    pub(crate) header_timeout: Option<Duration>,
    /// TLS, with the longest its handshake may take.
    pub(crate) tls: Option<(TlsAcceptor, Duration)>,
    /// `rir_connections_cut_total{front, reason="head"}` (TLS handshakes
    /// past their deadline count here too: they never sent a head).
    pub(crate) heads_cut: IntCounter,
}

/// Serves `app` on the connections `admitted` hands over until `shutdown`
/// resolves, then lets requests in flight finish and returns.
pub(crate) async fn serve(
    app: Router,
    mut admitted: mpsc::Receiver<Admitted>,
    serving: Serving,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let (open_tx, open_rx) = watch::channel(());
    let mut shutdown = pin!(shutdown);
    loop {
        let io = tokio::select! {
            c = admitted.recv() => match c {
                Some(c) => c,
                None => break,
            },
            _ = &mut shutdown => break,
        };
        let (app, serving) = (app.clone(), serving.clone());
        let (stop, open) = (stop_rx.clone(), open_rx.clone());
        tokio::spawn(async move {
            match serving.tls.clone() {
                None => connection(app, io, &serving, stop).await,
                Some((acceptor, within)) => {
                    match tokio::time::timeout(within, acceptor.accept(io)).await {
                        Ok(Ok(tls)) => connection(app, tls, &serving, stop).await,
                        Ok(Err(e)) => tracing::debug!("TLS handshake failed: {e}"),
                        Err(_) => serving.heads_cut.inc(),
                    }
                }
            }
            drop(open);
        });
    }
    drop(admitted);
    let _ = stop_tx.send(true);
    drop(open_rx);
    open_tx.closed().await;
}

/// One connection, until the client closes it, a deadline passes, or a
/// stop is raised (then once its request in flight is answered).
async fn connection<Io>(app: Router, io: Io, serving: &Serving, mut stop: watch::Receiver<bool>)
where
    Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(
        app.map_request(|r: http::Request<Incoming>| r.map(Body::new))
            .map_err(|e: Infallible| match e {}),
    );
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new());
    builder.header_read_timeout(serving.header_timeout);
    let mut conn = pin!(builder.serve_connection(TokioIo::new(io), service));
    let mut stopping = false;
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    if e.is_timeout() {
                        serving.heads_cut.inc();
                    }
                    tracing::debug!("HTTP connection ended: {e}");
                }
                return;
            }
            _ = stop.wait_for(|s| *s), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}
