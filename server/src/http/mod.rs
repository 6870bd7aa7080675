//! The HTTP front end: the KServe v2 REST protocol (Triton's HTTP API) on
//! its own port, plus `POST /v2/models/{name}/classify` for encoded images.
//! Handlers turn requests into the [`Core`]'s types and back; every error
//! is `{"error": "..."}` with the status [`ServeError::http_status`] gives.
//! A web page at `/` lists the models and classifies a dropped image.
//! [`metrics`] serves the Prometheus endpoint on a port of its own.

pub(crate) mod bounded;
pub(crate) mod conns;
pub(crate) mod kserve;
pub(crate) mod metrics;
pub(crate) mod tls;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use crate::auth::{Token, bearer_matches};
use crate::conn::Gate;
use crate::core::{Core, InferRequest};
use crate::error::{ServeError, ServerError};
use crate::stall;

/// Settings of the HTTP front end.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Largest request body, bytes (after decompression, too).
    pub(crate) max_body_bytes: usize,
    /// Largest body of a `/classify` call (an encoded image), bytes.
    pub(crate) max_image_body_bytes: usize,
    /// Answer 408 and close when a request body stops arriving for this
    /// long (zero: never).
    pub(crate) body_timeout: std::time::Duration,
    /// ... or has not all arrived this long after it began (zero: never).
    pub(crate) body_deadline: std::time::Duration,
    /// Bearer token every call but the health checks must carry, if auth is on.
    pub(crate) auth_token: Option<Token>,
}

/// Bodies up to this size, not compressed, are parsed on the thread that
/// received them (tens of microseconds); larger or compressed ones on a
/// blocking thread ([`Core::offload`]).
const INLINE_BODY: usize = 64 << 10;

/// The header that gives the JSON part's length when binary tensor data
/// follows it (Triton's binary tensor data extension).
pub(crate) const HEADER_LENGTH: &str = "inference-header-content-length";

/// An error answer: a status and `{"error": message}`.
#[derive(Debug)]
pub(crate) struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.0, axum::Json(json!({ "error": self.1 }))).into_response();
        let h = response.headers_mut();
        match self.0 {
            // The rest of a stalled body may never come: the connection
            // cannot carry another request.
            StatusCode::REQUEST_TIMEOUT => {
                h.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            // Full queue, spent budget, not ready yet: worth a retry soon.
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

impl From<ServeError> for ApiError {
    fn from(e: ServeError) -> Self {
        ApiError(e.http_status(), e.message())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        match stall::stalled_in(&r) {
            Some(stalled) => ApiError(StatusCode::REQUEST_TIMEOUT, stalled.to_string()),
            None => ApiError(r.status(), r.body_text()),
        }
    }
}

type Shared = State<Arc<Core>>;

/// `{name}` or `{name}/versions/{version}` in a route.
#[derive(Debug, Deserialize)]
struct ModelPath {
    name: String,
    #[serde(default)]
    version: String,
}

fn json(value: impl serde::Serialize) -> Response {
    axum::Json(value).into_response()
}

/// The web page at `/`: the models and their state, and an image to
/// classify, top 5 labels as bars. It calls the same REST routes as any
/// client.
const PAGE: &str = include_str!("page.html");

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
        .into_response()
}

async fn live() -> StatusCode {
    StatusCode::OK
}

/// Readiness answers 200 for true and a 4xx for false, as KServe v2 says
/// (Triton answers 400 too, also for an unknown model).
fn not_ready(reason: String) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, reason)
}

async fn ready(State(core): Shared) -> Result<StatusCode, ApiError> {
    if core.is_ready() {
        Ok(StatusCode::OK)
    } else {
        Err(not_ready("the server is not ready".into()))
    }
}

async fn server_metadata(State(core): Shared) -> Response {
    json(core.server_metadata())
}

async fn model_metadata(
    State(core): Shared,
    Path(p): Path<ModelPath>,
) -> Result<Response, ApiError> {
    Ok(json(core.model_metadata(&p.name, &p.version)?))
}

async fn model_ready(
    State(core): Shared,
    Path(p): Path<ModelPath>,
) -> Result<StatusCode, ApiError> {
    if core.model_ready(&p.name, &p.version) {
        Ok(StatusCode::OK)
    } else {
        Err(not_ready(format!("model `{}` is not ready", p.name)))
    }
}

async fn model_config(State(core): Shared, Path(p): Path<ModelPath>) -> Result<Response, ApiError> {
    Ok(json(core.model_config(&p.name, &p.version)?))
}

async fn all_statistics(State(core): Shared) -> Result<Response, ApiError> {
    Ok(json(json!({ "model_stats": core.statistics("", "")? })))
}

async fn model_statistics(
    State(core): Shared,
    Path(p): Path<ModelPath>,
) -> Result<Response, ApiError> {
    Ok(json(
        json!({ "model_stats": core.statistics(&p.name, &p.version)? }),
    ))
}

/// `?since=SECONDS` of a live view call.
#[derive(Debug, Deserialize)]
struct LiveQuery {
    #[serde(default = "all_windows")]
    since: f64,
}

fn all_windows() -> f64 {
    -1.0
}

/// The live view's data for the page's charts ([`crate::live`]).
async fn live_view(
    State(core): Shared,
    query: Result<Query<LiveQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let query = query.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    Ok(json(core.live_report(query.since)))
}

/// The body of `POST /v2/repository/index`.
#[derive(Debug, Default, Deserialize)]
struct IndexRequest {
    #[serde(default)]
    ready: bool,
}

/// A JSON body that may be empty (then the default).
fn optional_json<T: Default + serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("bad JSON body: {e}")))
}

async fn repository_index(
    State(core): Shared,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let r: IndexRequest = optional_json(&body?)?;
    Ok(json(core.repository_index(r.ready)))
}

/// The body of a load or unload call: only `parameters`, none supported.
#[derive(Debug, Default, Deserialize)]
struct ControlRequest {
    #[serde(default)]
    parameters: serde_json::Map<String, serde_json::Value>,
}

async fn repository_load(
    State(core): Shared,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let r: ControlRequest = optional_json(&body?)?;
    core.load_model(&name, r.parameters.keys().map(String::as_str))
        .await?;
    Ok(StatusCode::OK)
}

async fn repository_unload(
    State(core): Shared,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let _: ControlRequest = optional_json(&body?)?;
    core.unload_model(&name).await?;
    Ok(StatusCode::OK)
}

/// The request's `Content-Encoding`, lower-cased (None: none).
fn content_encoding(headers: &HeaderMap) -> Result<Option<String>, BodyError> {
    match headers.get(header::CONTENT_ENCODING) {
        None => Ok(None),
        Some(v) => Ok(Some(
            v.to_str()
                .map_err(|_| BodyError::EncodingNotText)?
                .trim()
                .to_ascii_lowercase(),
        )),
    }
}

/// `Inference-Header-Content-Length`, when given.
fn header_length(headers: &HeaderMap) -> Result<Option<usize>, BodyError> {
    match headers.get(HEADER_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .map(Some)
            .ok_or_else(|| BodyError::HeaderLength(crate::error::clip(&format!("{v:?}"), 64))),
    }
}

/// The body with its `encoding` (gzip, deflate) undone, at most `limit`
/// bytes once inflated.
fn inflate(encoding: Option<String>, body: Bytes, limit: usize) -> Result<Bytes, BodyError> {
    use std::io::Read;
    let Some(encoding) = encoding else {
        return Ok(body);
    };
    let reader: Box<dyn Read + '_> = match encoding.as_str() {
        "identity" => return Ok(body),
        "gzip" => Box::new(flate2::read::GzDecoder::new(&body[..])),
        "deflate" => Box::new(flate2::read::ZlibDecoder::new(&body[..])),
        _ => return Err(BodyError::Encoding(crate::error::clip(&encoding, 64))),
    };
    let mut out = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| BodyError::Inflate {
            encoding,
            detail: e.to_string(),
        })?;
    if out.len() > limit {
        return Err(BodyError::Inflated(limit));
    }
    Ok(out.into())
}

async fn infer(
    State(core): Shared,
    State(config): State<Arc<HttpConfig>>,
    Path(p): Path<ModelPath>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bad =
        |e: BodyError| ApiError::from(core.invalid_request(&p.name, &p.version, e.to_string()));
    let body = body?;
    let encoding = content_encoding(&headers).map_err(bad)?;
    let header_length = header_length(&headers).map_err(bad)?;
    let inline = encoding.is_none() && body.len() <= INLINE_BODY;
    let limit = config.max_body_bytes;
    let read = move || -> Result<(Bytes, kserve::Decoded), BodyError> {
        let body = inflate(encoding, body, limit)?;
        let decoded = kserve::decode(&body, header_length)?;
        Ok((body, decoded))
    };
    let (body, decoded) = match inline {
        true => read(),
        false => core.offload(None, read).await?,
    }
    .map_err(bad)?;
    let result = core
        .infer(InferRequest {
            model: &p.name,
            version: &p.version,
            inputs: decoded.inputs(&body),
            outputs: decoded.outputs(),
            deadline: None,
            parent: core.trace_parent(&headers),
        })
        .await?;
    let encoded = kserve::encode(&decoded, result)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let mut response = encoded.body.into_response();
    let h = response.headers_mut();
    match encoded.header_length {
        Some(n) => {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            h.insert(HEADER_LENGTH, HeaderValue::from(n));
        }
        None => {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
    }
    Ok(response)
}

/// `?top_k=N` of a classify call.
#[derive(Debug, Deserialize)]
struct ClassifyQuery {
    #[serde(default)]
    top_k: usize,
}

async fn classify(
    State(core): Shared,
    Path(p): Path<ModelPath>,
    query: Result<Query<ClassifyQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let query = query.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    let body = body?;
    let parent = core.trace_parent(&headers);
    let c = core
        .classify(
            &p.name,
            &p.version,
            &[body],
            query.top_k,
            None,
            parent.as_ref(),
        )
        .await?;
    Ok(json(c))
}

async fn no_route(request: Request) -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        format!(
            "no route {} {}; see /v2, /v2/models/{{name}}[/versions/{{v}}]/{{ready,config,stats,infer,classify}}",
            request.method(),
            request.uri().path()
        ),
    )
}

async fn wrong_method(request: Request) -> ApiError {
    ApiError(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}

async fn require_token(
    State(config): State<Arc<HttpConfig>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = &config.auth_token else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if bearer_matches(given, token.expose()) {
        next.run(request).await
    } else {
        ApiError(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token (header `Authorization: Bearer <token>`)".into(),
        )
        .into_response()
    }
}

/// A route that changes the server (model control) refuses what a
/// browser page on another site can send without asking: a form's or
/// plain text's content type (415), and any `Origin` that is not this
/// server's own host (403). Clients that are not browsers send JSON or
/// nothing, and no Origin.
async fn refuse_cross_site(request: Request, next: Next) -> Response {
    let headers = request.headers();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("?").to_ascii_lowercase());
    if let Some(t) = content_type.filter(|t| !t.starts_with("application/json")) {
        return ApiError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "model control takes a JSON body (Content-Type: application/json) or none, not `{}`",
                crate::error::clip(&t, 64)
            ),
        )
        .into_response();
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin = headers
        .get(header::ORIGIN)
        .map(|v| v.to_str().unwrap_or("?"));
    let same_site = |o: &str| {
        let authority = o.split_once("://").map_or(o, |(_, a)| a);
        host.is_some_and(|h| h.eq_ignore_ascii_case(authority))
    };
    if let Some(o) = origin.filter(|o| !same_site(o)) {
        return ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "model control refuses calls from web pages of another origin (`{}`)",
                crate::error::clip(o, 128)
            ),
        )
        .into_response();
    }
    next.run(request).await
}

/// The body limit of a request: image calls take encoded images.
fn body_limit(config: &HttpConfig, path: &str) -> usize {
    match path.ends_with("/classify") {
        true => config.max_image_body_bytes,
        false => config.max_body_bytes,
    }
}

/// Refuses a body whose declared length is over its limit before reading
/// any of it (a body without a declared length is cut off at the limit as
/// it is read), and holds its share of the in-flight budget
/// ([`crate::core::Budget`]) from before it is read to the response: twice
/// what it declares, or its limit when it declares nothing or is
/// compressed.
async fn refuse_oversized(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limit = body_limit(&state.config, request.uri().path());
    let h = request.headers();
    let declared = h
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared.filter(|n| *n > limit as u64) {
        return ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the body is {n} bytes, over the length limit of {limit} (--max-message-bytes)"
            ),
        )
        .into_response();
    }
    if request.method() != axum::http::Method::POST {
        return next.run(request).await;
    }
    let compressed = h.contains_key(header::CONTENT_ENCODING);
    let holds = match (declared, compressed) {
        (Some(n), false) => n as usize,
        _ => limit,
    };
    match state.core.budget().take(holds.saturating_mul(2)) {
        Ok(_share) => next.run(request).await,
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Both states the handlers draw from.
#[derive(Clone)]
struct AppState {
    core: Arc<Core>,
    config: Arc<HttpConfig>,
}

impl axum::extract::FromRef<AppState> for Arc<Core> {
    fn from_ref(s: &AppState) -> Self {
        s.core.clone()
    }
}

impl axum::extract::FromRef<AppState> for Arc<HttpConfig> {
    fn from_ref(s: &AppState) -> Self {
        s.config.clone()
    }
}

/// Every route of the HTTP front end.
pub(crate) fn router(core: Arc<Core>, config: HttpConfig) -> Router {
    let state = AppState {
        core,
        config: Arc::new(config),
    };
    let mut models = Router::new();
    for prefix in ["/v2/models/{name}", "/v2/models/{name}/versions/{version}"] {
        models = models
            .route(prefix, get(model_metadata))
            .route(&format!("{prefix}/ready"), get(model_ready))
            .route(&format!("{prefix}/config"), get(model_config))
            .route(&format!("{prefix}/stats"), get(model_statistics))
            .route(&format!("{prefix}/infer"), post(infer))
            .route(&format!("{prefix}/classify"), post(classify));
    }
    let control = Router::new()
        .route("/v2/repository/index", post(repository_index))
        .route("/v2/repository/models/{name}/load", post(repository_load))
        .route(
            "/v2/repository/models/{name}/unload",
            post(repository_unload),
        )
        .route_layer(middleware::from_fn(refuse_cross_site));
    let guarded = models
        .route("/v2", get(server_metadata))
        .route("/v2/models/stats", get(all_statistics))
        .route("/v2/rir/live", get(live_view))
        .merge(control)
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    let largest = state
        .config
        .max_body_bytes
        .max(state.config.max_image_body_bytes);
    Router::new()
        .route("/", get(page))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .merge(guarded)
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(largest))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            refuse_oversized,
        ))
        .with_state(state)
}

/// Serves the HTTP front end on the connections `gate` admits from
/// `listener` until `shutdown` resolves, then lets requests in flight finish.
pub(crate) async fn serve(
    core: Arc<Core>,
    config: HttpConfig,
    listener: tokio::net::TcpListener,
    gate: Gate,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let timing = stall::BodyTiming {
        idle: config.body_timeout,
        total: config.body_deadline,
    };
    let stalls = gate.stalls();
    let app = router(core, config).layer(tower::util::MapRequestLayer::new(
        move |request: Request| {
            request.map(|body| {
                axum::body::Body::new(stall::guarded(body, timing, stalls.clone(), |s| {
                    Box::new(s)
                }))
            })
        },
    ));
    let serving = conns::Serving {
        header_timeout: gate.header_timeout(),
        tls: None,
        heads_cut: gate.heads_cut(),
    };
    conns::serve(app, gate.admit(listener), serving, shutdown).await;
    Ok(())
}

/// Why a REST inference body cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BodyError {
    /// A `Content-Encoding` header that is not text.
    #[error("Content-Encoding is not text")]
    EncodingNotText,
    /// An encoding other than gzip, deflate and identity.
    #[error("Content-Encoding `{0}` is not supported; use gzip, deflate or none")]
    Encoding(String),
    /// The compressed body is broken.
    #[error("cannot {encoding}-decode the body: {detail}")]
    Inflate {
        /// The encoding.
        encoding: String,
        /// What the decoder said.
        detail: String,
    },
    /// The body inflates past the limit.
    #[error("the body inflates to more than {0} bytes")]
    Inflated(usize),
    /// `Inference-Header-Content-Length` is not a byte count.
    #[error("{HEADER_LENGTH} must be a byte count, got {0}")]
    HeaderLength(String),
    /// The body itself (JSON, binary data).
    #[error(transparent)]
    Kserve(#[from] kserve::DecodeError),
}
