//! Hostile requests, built as the bytes that travel: what `rir-bench
//! hostile` throws at a server and what rir-server's tests send to show
//! each defence. A prost message of millions of entries would cost the
//! sender what it costs the server, so the attacks are wire bytes, sent
//! over raw gRPC calls, raw HTTP/1.1 and raw TCP.

use std::io::Write as _;
use std::time::{Duration, Instant};

use prost::bytes::{Buf, BufMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// gRPC messages as their bytes, both ways.
#[derive(Debug, Clone, Default)]
pub struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let v = buf.chunk().to_vec();
        buf.advance(v.len());
        Ok(Some(v))
    }
}

/// The status a gRPC call of `path` with `message` as its bytes got
/// (`Ok` for an answer).
pub async fn raw_call(url: &str, path: &'static str, message: Vec<u8>) -> tonic::Status {
    let channel = match tonic::transport::Channel::from_shared(url.to_string()) {
        Ok(c) => c,
        Err(e) => return tonic::Status::invalid_argument(e.to_string()),
    };
    let channel = match channel.connect().await {
        Ok(c) => c,
        Err(e) => return tonic::Status::unavailable(e.to_string()),
    };
    let mut grpc = tonic::client::Grpc::new(channel).max_encoding_message_size(usize::MAX);
    if let Err(e) = grpc.ready().await {
        return tonic::Status::unavailable(e.to_string());
    }
    let path = http::uri::PathAndQuery::from_static(path);
    match grpc.unary(tonic::Request::new(message), path, Raw).await {
        Ok(_) => tonic::Status::ok("answered"),
        Err(s) => s,
    }
}

/// The ModelInfer call's path.
pub const MODEL_INFER: &str = "/inference.GRPCInferenceService/ModelInfer";

/// The Classify call's path.
pub const CLASSIFY: &str = "/rir.v1.ImageClassifier/Classify";

/// A message whose field 1 is `model` followed by empty entries of
/// length-delimited field `field` (2 bytes each), `bytes` long in all:
/// ModelInfer's `inputs` (5), `outputs` (6) or `raw_input_contents` (7),
/// or Classify's `images` (3).
pub fn empty_entries(model: &str, field: u8, bytes: usize) -> Vec<u8> {
    let mut m = vec![0x0a, model.len() as u8];
    m.extend_from_slice(model.as_bytes());
    let n = bytes.saturating_sub(m.len()) / 2;
    m.reserve(2 * n);
    for _ in 0..n {
        m.extend_from_slice(&[(field << 3) | 2, 0]);
    }
    m
}

/// A gzip REST body of about `inflated` bytes once inflated: one FP32
/// input `input` whose `data` is one-element arrays, `[0],[0],...`
/// (compressed as it is written: never held inflated here).
pub fn nested_arrays_gzip(input: &str, inflated: usize) -> Vec<u8> {
    let head = format!(r#"{{"inputs":[{{"name":"{input}","shape":[1],"datatype":"FP32","data":["#);
    gzip_of(head.as_bytes(), "[0],", inflated, b"[0]]}]}")
}

/// A gzip REST body of about `inflated` bytes of requested outputs with
/// empty parameters.
pub fn many_outputs_gzip(inflated: usize) -> Vec<u8> {
    let unit = r#"{"name":"o","parameters":{}},"#;
    gzip_of(
        br#"{"inputs":[],"outputs":["#,
        unit,
        inflated,
        br#"{"name":"o"}]}"#,
    )
}

fn gzip_of(head: &[u8], unit: &str, inflated: usize, tail: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let chunk = unit.repeat(4096);
    let write = |z: &mut flate2::write::GzEncoder<Vec<u8>>, b: &[u8]| {
        z.write_all(b).expect("writing to memory")
    };
    write(&mut z, head);
    for _ in 0..inflated.saturating_sub(head.len() + tail.len()) / chunk.len() {
        write(&mut z, chunk.as_bytes());
    }
    write(&mut z, tail);
    z.finish().expect("writing to memory")
}

/// One HTTP/1.1 POST over a fresh connection: the status code, or 0 when
/// the connection closed without one.
pub async fn http_post(
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<u16> {
    let mut s = TcpStream::connect(addr).await?;
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await?;
    s.write_all(body).await?;
    Ok(status_of(&read_all(&mut s, Duration::from_secs(120)).await))
}

/// The status code of an HTTP/1.1 answer (0: none).
fn status_of(answer: &str) -> u16 {
    answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// What the peer sends on `s` until it closes, or until `within`.
async fn read_all(s: &mut TcpStream, within: Duration) -> String {
    let until = Instant::now() + within;
    let mut got = Vec::new();
    let mut b = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout_at(until.into(), s.read(&mut b)).await {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&b[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Opens a connection to `addr`, sends `first`, then a byte of `trickle`
/// every `every` (none when empty), and waits for the server to close it:
/// how long that took, or None when it was still open after `within`.
pub async fn held_open(
    addr: &str,
    first: &[u8],
    trickle: &[u8],
    every: Duration,
    within: Duration,
) -> std::io::Result<Option<Duration>> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(first).await?;
    let started = Instant::now();
    let mut pending = trickle.iter();
    let mut b = [0u8; 4096];
    while started.elapsed() < within {
        match tokio::time::timeout(every, s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(Some(started.elapsed())),
            // The server spoke (HTTP/2 SETTINGS, an error page): keep
            // reading until it closes.
            Ok(Ok(_)) => {}
            Err(_) => {
                if let Some(byte) = pending.next()
                    && s.write_all(&[*byte]).await.is_err()
                {
                    return Ok(Some(started.elapsed()));
                }
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_bytes_are_what_they_say() {
        // By hand: field 1 "m" (0x0a 0x01 'm'), then (10 - 3) / 2 = 3
        // empty entries of field 5: tag (5 << 3) | 2 = 0x2a, length 0.
        let m = empty_entries("m", 5, 10);
        assert_eq!(m, [0x0a, 1, b'm', 0x2a, 0, 0x2a, 0, 0x2a, 0]);
        use std::io::Read as _;
        let body = nested_arrays_gzip("x", 1 << 20);
        let mut text = String::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_string(&mut text)
            .unwrap();
        assert!(text.len() <= 1 << 20 && text.len() > (1 << 20) - 20_000);
        assert!(
            text.ends_with("[0],[0]]}]}"),
            "{}",
            &text[text.len() - 20..]
        );
        assert!(body.len() < 10_000, "{}", body.len());
        assert_eq!(status_of("HTTP/1.1 413 Payload Too Large\r\n"), 413);
        assert_eq!(status_of(""), 0);
    }
}
