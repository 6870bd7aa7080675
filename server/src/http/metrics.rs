//! The Prometheus endpoint, on a port of its own: the text format of every
//! metric at any path (`/metrics` by convention), served by axum behind
//! the same connection gate and head deadline as the REST front end. With
//! its token (`--metrics-token`, never the API's), a scrape must carry
//! `Authorization: Bearer <token>` (Prometheus's `authorization` or
//! `bearer_token` scrape settings) or gets 401.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::auth::{Token, bearer_matches};
use crate::conn::Gate;
use crate::core::Core;
use crate::error::ServerError;
use crate::stats::Metrics;

/// The content type of the Prometheus text format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4";

/// What the endpoint serves, and who may read it.
#[derive(Clone)]
struct Endpoint {
    metrics: Arc<Metrics>,
    /// Where the served models' readiness is read at each scrape.
    core: Arc<Core>,
    token: Option<Token>,
}

async fn scrape(State(e): State<Endpoint>, headers: HeaderMap) -> Response {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if e.token
        .as_ref()
        .is_some_and(|t| !bearer_matches(given, t.expose()))
    {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, TEXT_FORMAT)],
            "missing or wrong bearer token (header `Authorization: Bearer <token>`)\n",
        )
            .into_response();
    }
    let text = e.metrics.render_with_ready(e.core.models().readiness());
    ([(header::CONTENT_TYPE, TEXT_FORMAT)], text).into_response()
}

/// Serves `metrics` on the connections `gate` admits from `listener`,
/// over `tls` when given (with its handshake deadline), until `shutdown`
/// resolves.
pub(crate) async fn serve(
    metrics: Arc<Metrics>,
    core: Arc<Core>,
    token: Option<Token>,
    listener: tokio::net::TcpListener,
    gate: Gate,
    tls: Option<(tokio_rustls::TlsAcceptor, std::time::Duration)>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let app = Router::new().fallback(scrape).with_state(Endpoint {
        metrics,
        core,
        token,
    });
    let serving = super::conns::Serving {
        header_timeout: gate.header_timeout(),
        tls,
        heads_cut: gate.heads_cut(),
    };
    super::conns::serve(app, gate.admit(listener), serving, shutdown).await;
    Ok(())
}
