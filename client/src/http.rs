//! KServe v2 over HTTP/REST, for the load tester above all: one pooled
//! HTTP/1.1 client (keep-alive, a connection per request in flight), binary tensor
//! bodies as `tritonclient.http` and perf_analyzer send them, and the
//! server's `{"error"}` answers turned into the gRPC status the reports
//! count failures by.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rir_proto::inference::ModelInferRequest;
use rir_proto::inference::model_metadata_response::TensorMetadata;
use serde_json::{Value, json};

use rir_contract::Datatype;

use crate::ClientError;

/// The header giving the JSON part's length of a binary-data body.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// A KServe v2 REST client of one server.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    token: Option<String>,
}

/// One prepared POST: path, extra headers, body.
#[derive(Debug, Clone)]
pub struct Post {
    /// Path under the server's base URL.
    pub path: String,
    /// `Inference-Header-Content-Length`, when the body carries binary data.
    pub header_length: Option<usize>,
    /// The body.
    pub body: Bytes,
}

/// The gRPC code that says the same as an HTTP status, for the reports.
pub fn status_code(status: u16) -> tonic::Code {
    match status {
        400 | 413 | 415 | 422 => tonic::Code::InvalidArgument,
        401 | 403 => tonic::Code::Unauthenticated,
        404 => tonic::Code::NotFound,
        405 | 501 => tonic::Code::Unimplemented,
        408 | 504 => tonic::Code::DeadlineExceeded,
        409 => tonic::Code::FailedPrecondition,
        429 => tonic::Code::ResourceExhausted,
        502 | 503 => tonic::Code::Unavailable,
        _ => tonic::Code::Internal,
    }
}

impl HttpClient {
    /// A client of the server at `url` (`host:port` or `http://host:port`).
    pub fn new(
        url: &str,
        token: Option<String>,
        connect_timeout: Duration,
    ) -> Result<Self, ClientError> {
        if url.starts_with("https://") {
            return Err(ClientError::Setup(
                "-i http speaks plain HTTP; for HTTPS put the server behind a proxy or use -i grpc"
                    .into(),
            ));
        }
        let base = if url.contains("://") {
            url.trim_end_matches('/').to_string()
        } else {
            format!("http://{}", url.trim_end_matches('/'))
        };
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(HttpClient {
            client,
            base,
            token,
        })
    }

    /// A client of the server of the page at `url` (`[http://]host:port[/path]`),
    /// and the page's path (`default_path` when the URL names none).
    pub fn for_page(
        url: &str,
        default_path: &str,
        connect_timeout: Duration,
    ) -> Result<(Self, String), ClientError> {
        let full = match url.contains("://") {
            true => url.to_string(),
            false => format!("http://{url}"),
        };
        let bad = |why: String| ClientError::Setup(format!("{url}: {why}"));
        let uri: hyper::Uri = full.parse().map_err(|e| bad(format!("not a URL: {e}")))?;
        let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.authority()) else {
            return Err(bad("no host".into()));
        };
        let path = match uri.path_and_query().map(|p| p.as_str()) {
            None | Some("/") => default_path.to_string(),
            Some(p) => p.to_string(),
        };
        let client = HttpClient::new(&format!("{scheme}://{host}"), None, connect_timeout)?;
        Ok((client, path))
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn call(
        &self,
        method: hyper::Method,
        path: &str,
        header_length: Option<usize>,
        body: Bytes,
    ) -> Result<(u16, Bytes), tonic::Status> {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(n) = header_length {
            req = req
                .header(HEADER_LENGTH, n)
                .header("content-type", "application/octet-stream");
        } else if !body.is_empty() {
            req = req.header("content-type", "application/json");
        }
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| tonic::Status::invalid_argument(format!("request: {e}")))?;
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| tonic::Status::unavailable(crate::connect::error_chain(&e)))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("reading the answer: {e}")))?
            .to_bytes();
        Ok((status, body))
    }

    /// POSTs `p`; a non-2xx answer is the status it stands for, with the
    /// server's `{"error"}` message.
    pub async fn post(&self, p: &Post) -> Result<(), tonic::Status> {
        let (status, body) = self
            .call(
                hyper::Method::POST,
                &p.path,
                p.header_length,
                p.body.clone(),
            )
            .await?;
        check(status, &body).map(drop)
    }

    /// GETs `path`; a non-2xx answer is the status it stands for.
    async fn get(&self, path: &str) -> Result<Bytes, tonic::Status> {
        let (status, body) = self
            .call(hyper::Method::GET, path, None, Bytes::new())
            .await?;
        check(status, &body)
    }

    /// GETs `path` as JSON.
    pub async fn get_json(&self, path: &str) -> Result<Value, tonic::Status> {
        let body = self.get(path).await?;
        serde_json::from_slice(&body)
            .map_err(|e| tonic::Status::internal(format!("{path} did not answer JSON: {e}")))
    }

    /// GETs `path` as UTF-8 text (a Prometheus metrics page).
    pub async fn get_text(&self, path: &str) -> Result<String, tonic::Status> {
        let body = self.get(path).await?;
        String::from_utf8(body.to_vec())
            .map_err(|e| tonic::Status::internal(format!("{path} did not answer UTF-8: {e}")))
    }
}

fn check(status: u16, body: &Bytes) -> Result<Bytes, tonic::Status> {
    if (200..300).contains(&status) {
        return Ok(body.clone());
    }
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(String::from))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    Err(tonic::Status::new(
        status_code(status),
        format!("HTTP {status}: {message}"),
    ))
}

/// What is wrong with a server's REST metadata or with a request that
/// cannot go as a REST body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestError {
    /// The model metadata is not what KServe v2 says it is.
    #[error("{0}")]
    Metadata(&'static str),
    /// A datatype that has no JSON form here.
    #[error("JSON tensors of {0} are not supported; use binary data")]
    JsonDatatype(String),
}

/// The inputs a model's REST metadata declares (an absent list is empty).
pub fn inputs_of(meta: &Value) -> Result<Vec<TensorMetadata>, RestError> {
    let Some(list) = meta.get("inputs") else {
        return Ok(vec![]);
    };
    let bad = RestError::Metadata;
    let list = list
        .as_array()
        .ok_or(bad("the metadata's `inputs` is not a list"))?;
    list.iter()
        .map(|t| {
            let name = t["name"].as_str().ok_or(bad("an input without a name"))?;
            let datatype = t["datatype"]
                .as_str()
                .ok_or(bad("an input without a datatype"))?;
            let shape = t["shape"]
                .as_array()
                .ok_or(bad("an input without a shape"))?
                .iter()
                .map(|d| d.as_i64().ok_or(bad("a dimension that is not an integer")))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(TensorMetadata {
                name: name.into(),
                datatype: datatype.into(),
                shape,
            })
        })
        .collect()
}

/// The model's REST path: `/v2/models/NAME[/versions/V]`.
pub fn model_path(model: &str, version: &str) -> String {
    if version.is_empty() {
        format!("/v2/models/{model}")
    } else {
        format!("/v2/models/{model}/versions/{version}")
    }
}

/// Raw little-endian tensor bytes as JSON numbers.
fn json_values(datatype: &str, raw: &[u8]) -> Result<Vec<Value>, RestError> {
    fn each<const N: usize>(raw: &[u8], f: impl Fn([u8; N]) -> Value) -> Vec<Value> {
        raw.chunks_exact(N)
            .map(|c| f(c.try_into().unwrap_or([0; N])))
            .collect()
    }
    Ok(match Datatype::from_name(datatype) {
        Some(Datatype::Fp32) => each::<4>(raw, |b| json!(f32::from_le_bytes(b))),
        Some(Datatype::Fp64) => each::<8>(raw, |b| json!(f64::from_le_bytes(b))),
        Some(Datatype::Int32) => each::<4>(raw, |b| json!(i32::from_le_bytes(b))),
        Some(Datatype::Int64) => each::<8>(raw, |b| json!(i64::from_le_bytes(b))),
        Some(Datatype::Int8) => raw.iter().map(|b| json!(*b as i8)).collect(),
        Some(Datatype::Uint8 | Datatype::Bool) => raw.iter().map(|b| json!(b)).collect(),
        _ => return Err(RestError::JsonDatatype(datatype.to_string())),
    })
}

/// A prepared gRPC inference request as a REST body: the same tensors as
/// JSON values (`json`), or as Triton's binary tensor data with outputs
/// asked for as binary data.
pub fn infer_post(r: &ModelInferRequest, json_tensors: bool) -> Result<Post, RestError> {
    let path = format!("{}/infer", model_path(&r.model_name, &r.model_version));
    if json_tensors {
        let inputs = r
            .inputs
            .iter()
            .zip(&r.raw_input_contents)
            .map(|(t, raw)| {
                Ok(json!({
                    "name": t.name,
                    "shape": t.shape,
                    "datatype": t.datatype,
                    "data": json_values(&t.datatype, raw)?,
                }))
            })
            .collect::<Result<Vec<Value>, RestError>>()?;
        return Ok(Post {
            path,
            header_length: None,
            body: json!({ "inputs": inputs }).to_string().into_bytes().into(),
        });
    }
    let inputs: Vec<Value> = r
        .inputs
        .iter()
        .zip(&r.raw_input_contents)
        .map(|(t, raw)| {
            json!({
                "name": t.name,
                "shape": t.shape,
                "datatype": t.datatype,
                "parameters": {"binary_data_size": raw.len()},
            })
        })
        .collect();
    let header = json!({"inputs": inputs, "parameters": {"binary_data_output": true}}).to_string();
    let mut body = header.clone().into_bytes();
    for raw in &r.raw_input_contents {
        body.extend_from_slice(raw);
    }
    Ok(Post {
        path,
        header_length: Some(header.len()),
        body: body.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_url_splits_into_its_server_and_path() {
        let t = Duration::from_secs(1);
        let (c, path) = HttpClient::for_page("127.0.0.1:8002", "/metrics", t).unwrap();
        assert_eq!(
            (c.base(), path.as_str()),
            ("http://127.0.0.1:8002", "/metrics")
        );
        let (c, path) = HttpClient::for_page("http://host:9/m/x?y=1", "/metrics", t).unwrap();
        assert_eq!((c.base(), path.as_str()), ("http://host:9", "/m/x?y=1"));
        let (_, path) = HttpClient::for_page("http://host:9/", "/metrics", t).unwrap();
        assert_eq!(path, "/metrics");
        for bad in ["", "http://", "https://host:9/metrics", "host name:9"] {
            assert!(HttpClient::for_page(bad, "/metrics", t).is_err(), "{bad:?}");
        }
    }
}
