//! Connection admission over real sockets: a thousand silent connections
//! neither starve nor slow a normal client and are closed after the
//! first-byte timeout; connections over the limit are closed on arrival, on
//! the gRPC and the HTTP front end alike.

use std::time::{Duration, Instant};

use rir_proto::inference::ServerLiveRequest;
use rir_testkit::requests::fp32_request;
use rir_testkit::web::get;
use rir_testserver::server::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn request() -> rir_proto::inference::ModelInferRequest {
    fp32_request("gray", 1, &[0.0; 784], true)
}

/// Whether the server closed `s` within `wait` (a read sees EOF or a reset).
async fn closed_by_server(s: &mut TcpStream, wait: Duration) -> bool {
    let mut b = [0u8; 16];
    matches!(
        tokio::time::timeout(wait, s.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

fn host(url: &str) -> &str {
    let rest = url.trim_start_matches("http://");
    rest.split('/').next().unwrap_or(rest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_silent_connections_neither_starve_nor_slow_a_normal_client() {
    // 1,000 client sockets here and 1,000 accepted in the same process.
    rir_process::raise_open_files_limit().unwrap();
    let first_byte_timeout = Duration::from_secs(3);
    let flags = [
        "--max-connections",
        "2000",
        "--first-byte-timeout-ms",
        "3000",
        "--tcp-keepalive-secs",
        "0",
    ];
    let s = TestServer::start(None, &flags).await;
    let open = "rir_open_connections{front=\"grpc\"}";

    let mut silent = Vec::with_capacity(1_000);
    for _ in 0..1_000 {
        silent.push(TcpStream::connect(host(&s.url)).await.unwrap());
    }
    let opened = Instant::now();
    let mut client = s.kserve().await;
    client.server_live(ServerLiveRequest {}).await.unwrap();
    let mut ms: Vec<f64> = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        client.model_infer(request()).await.unwrap();
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    println!(
        "beside 1,000 silent connections: p50 {:.2} ms, max {:.2} ms over 50 calls",
        ms[25], ms[49]
    );
    // Robust bound: the median, an order of magnitude above an unloaded
    // call (about 1 ms), not a single sample.
    assert!(ms[25] < 10.0, "p50 {:.2} ms", ms[25]);
    assert!(
        opened.elapsed() < first_byte_timeout,
        "the calls above must run while the silent connections are open"
    );
    assert_eq!(
        s.metric(open).await,
        1_001.0,
        "every silent connection holds a place until its timeout"
    );

    // After the first-byte timeout every silent connection is closed by the
    // server; the client that spoke keeps its connection.
    for (k, sock) in silent.iter_mut().enumerate() {
        assert!(
            closed_by_server(sock, Duration::from_secs(10)).await,
            "silent connection {k} still open"
        );
    }
    let refused = |reason: &str| {
        format!("rir_connections_refused_total{{front=\"grpc\",reason=\"{reason}\"}}")
    };
    assert_eq!(s.metric(&refused("silent")).await, 1_000.0);
    assert_eq!(s.metric(&refused("limit")).await, 0.0);
    client.model_infer(request()).await.unwrap();
    assert_eq!(s.metric(open).await, 1.0);
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_closed_on_arrival_on_every_listener() {
    let flags = [
        "--max-connections",
        "10",
        "--first-byte-timeout-ms",
        "1500",
        "--tcp-keepalive-secs",
        "0",
    ];
    let s = TestServer::start(None, &flags).await;

    for (front, url) in [
        ("grpc", &s.url),
        ("http", &s.http_url),
        ("metrics", &s.metrics_url),
    ] {
        let mut held = Vec::new();
        for _ in 0..10 {
            held.push(TcpStream::connect(host(url)).await.unwrap());
        }
        // The 11th: accepted by the kernel, closed by the server at once.
        let mut over = TcpStream::connect(host(url)).await.unwrap();
        assert!(
            closed_by_server(&mut over, Duration::from_millis(1_000)).await,
            "{front}: the connection over the limit stayed open"
        );
        // Once the silent ones time out, their places are free again (the
        // metrics listener's too, so it can be scraped).
        for sock in &mut held {
            assert!(
                closed_by_server(sock, Duration::from_secs(5)).await,
                "{front}"
            );
        }
        let series = format!("rir_connections_refused_total{{front=\"{front}\",reason=\"limit\"}}");
        assert_eq!(s.metric(&series).await, 1.0, "{front}");
    }
    let mut client = s.kserve().await;
    client.model_infer(request()).await.unwrap();
    let ready = get(format!("{}/v2/health/ready", s.http_url)).await;
    assert_eq!(ready.status, 200);
    s.shutdown().await.unwrap();
}

/// Everything the server sends on `s` until it closes it, or until `wait`
/// has passed (then the bool is false).
async fn read_until_closed(s: &mut TcpStream, wait: Duration) -> (String, bool) {
    let mut got = vec![];
    let until = Instant::now() + wait;
    let mut b = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(until.into(), s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(Ok(n)) => got.extend_from_slice(&b[..n]),
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
        }
    }
}

/// A REST inference body of one 28x28 image.
fn infer_body() -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "inputs": [{"name": "image", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": vec![0.5f32; 784]}]
    }))
    .unwrap()
}

/// The head of a REST inference POST of `length` body bytes to `addr`.
fn infer_head(addr: &str, length: usize) -> String {
    format!(
        "POST /v2/models/gray/infer HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n"
    )
}

/// The first bytes of the answer on `c` (within 10 s), as text.
async fn first_answer(c: &mut TcpStream) -> String {
    let mut answer = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&answer[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_body_that_stops_arriving_gets_408_and_its_connection_closed() {
    let s = TestServer::start(None, &["--body-timeout-ms", "500"]).await;
    let addr = host(&s.http_url).to_string();
    let headers = |length: usize| infer_head(&addr, length);
    // Headers promising 100,000 bytes, then 10, then nothing: 408 with the
    // reason, and the connection closed, after the timeout, not before.
    let mut stalled = TcpStream::connect(&addr).await.unwrap();
    stalled
        .write_all(headers(100_000).as_bytes())
        .await
        .unwrap();
    stalled.write_all(b"{\"inputs\":").await.unwrap();
    let sent = Instant::now();
    let (answer, closed) = read_until_closed(&mut stalled, Duration::from_secs(10)).await;
    let waited = sent.elapsed();
    assert!(closed, "the stalled connection is still open: {answer}");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("stopped arriving"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    // After the timeout, and not long after (the next check of the idle
    // timer, plus a loaded machine's slack).
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_millis(2500),
        "answered after {waited:?}"
    );
    assert_eq!(
        s.metric(r#"rir_stalled_requests_total{front="http"}"#)
            .await,
        1.0
    );

    // A slow client that keeps sending (a piece every 200 ms, each gap
    // under the timeout, the whole over it) is served.
    let body = infer_body();
    let mut slow = TcpStream::connect(&addr).await.unwrap();
    slow.write_all(headers(body.len()).as_bytes())
        .await
        .unwrap();
    for piece in body.chunks(body.len().div_ceil(6)) {
        slow.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let answer = first_answer(&mut slow).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(
        s.metric(r#"rir_stalled_requests_total{front="http"}"#)
            .await,
        1.0
    );
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_timeout_of_zero_waits_for_good() {
    // With both body bounds off, a body paused for 1.5 s (three times the
    // timeout the test above uses) is still read to its end and served.
    let flags = ["--body-timeout-ms", "0", "--body-deadline-ms", "0"];
    let s = TestServer::start(None, &flags).await;
    let addr = host(&s.http_url).to_string();
    let body = infer_body();
    let mut c = TcpStream::connect(&addr).await.unwrap();
    c.write_all(infer_head(&addr, body.len()).as_bytes())
        .await
        .unwrap();
    c.write_all(&body[..10]).await.unwrap();
    let (early, closed) = read_until_closed(&mut c, Duration::from_millis(1500)).await;
    assert!(
        !closed && early.is_empty(),
        "answered a paused body: {early}"
    );
    c.write_all(&body[10..]).await.unwrap();
    let answer = first_answer(&mut c).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(
        s.metric(r#"rir_stalled_requests_total{front="http"}"#)
            .await,
        0.0
    );
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_message_that_stops_half_way_ends_its_call_with_deadline_exceeded() {
    let s = TestServer::start(None, &["--body-timeout-ms", "500"]).await;
    let tcp = TcpStream::connect(host(&s.url)).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let head = http::Request::post(format!(
        "{}/inference.GRPCInferenceService/ModelInfer",
        s.url
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .unwrap();
    let (response, mut send) = client.send_request(head, false).unwrap();
    // A gRPC frame announcing a 1,000-byte message, 10 bytes of it, then
    // nothing (the stream stays open).
    let mut frame = vec![0u8];
    frame.extend_from_slice(&1000u32.to_be_bytes());
    frame.extend_from_slice(&[0u8; 10]);
    send.send_data(frame.into(), false).unwrap();
    let sent = Instant::now();
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("an answer, not a held stream")
        .unwrap();
    let (head, mut body) = response.into_parts();
    // The status comes in the headers (trailers-only) or in the trailers.
    let trailers = match head.headers.get("grpc-status") {
        Some(_) => head.headers,
        None => {
            while body.data().await.is_some() {}
            body.trailers().await.unwrap().expect("trailers")
        }
    };
    let waited = sent.elapsed();
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_millis(2500),
        "ended after {waited:?}"
    );
    assert_eq!(
        trailers["grpc-status"], "4",
        "DEADLINE_EXCEEDED: {trailers:?}"
    );
    let message = trailers["grpc-message"].to_str().unwrap();
    assert!(
        message.contains("stopped%20arriving") || message.contains("stopped arriving"),
        "{message}"
    );
    assert_eq!(
        s.metric(r#"rir_stalled_requests_total{front="grpc"}"#)
            .await,
        1.0
    );
    // The server still serves calls.
    s.kserve().await.model_infer(request()).await.unwrap();
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_limits_reach_the_wire() {
    let flags = ["--http2-max-streams", "3", "--max-header-bytes", "2048"];
    let s = TestServer::start(None, &flags).await;
    // The stream limit is what the server's SETTINGS frame announces, and
    // so what every HTTP/2 client holds itself to.
    let tcp = TcpStream::connect(host(&s.url)).await.unwrap();
    let (_client, mut connection) = h2::client::handshake(tcp).await.unwrap();
    // Drive the connection a moment so that the server's SETTINGS arrive.
    let driven = tokio::time::timeout(Duration::from_millis(500), &mut connection).await;
    assert!(driven.is_err(), "the connection ended: {driven:?}");
    assert_eq!(connection.max_concurrent_send_streams(), 3);
    drop(connection);

    // Headers over --max-header-bytes: the call is refused, and the next
    // call with ordinary headers is served.
    let mut c = s.kserve().await;
    let mut big = tonic::Request::new(ServerLiveRequest {});
    big.metadata_mut()
        .insert("x-padding", "p".repeat(4096).parse().unwrap());
    assert!(
        c.server_live(big).await.is_err(),
        "4 KiB of headers under a 2 KiB limit"
    );
    let mut c = s.kserve().await;
    let mut small = tonic::Request::new(ServerLiveRequest {});
    small
        .metadata_mut()
        .insert("x-padding", "p".repeat(512).parse().unwrap());
    assert!(c.server_live(small).await.unwrap().into_inner().live);
    s.shutdown().await.unwrap();
}

/// The `timer_active` field of this process's TCP sockets from local port
/// `local` (the server's side of each connection), from /proc/net/tcp:
/// 2 is the keepalive timer, 0 none.
fn server_side_timers(local: u16) -> Vec<u32> {
    let table = std::fs::read_to_string("/proc/self/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let port = u16::from_str_radix(f[1].rsplit(':').next()?, 16).ok()?;
            let established = f[3] == "01";
            let timer = f[5].split(':').next()?.parse().ok()?;
            (port == local && established).then_some(timer)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_keepalive_is_set_on_accepted_connections_unless_off() {
    for (seconds, want) in [("60", 2), ("0", 0)] {
        let s = TestServer::start(None, &["--tcp-keepalive-secs", seconds]).await;
        let port: u16 = host(&s.url).rsplit(':').next().unwrap().parse().unwrap();
        let mut c = s.kserve().await;
        c.server_live(ServerLiveRequest {}).await.unwrap();
        // Idle now: the only timer an established socket may have is the
        // keepalive one.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let timers = server_side_timers(port);
        assert!(!timers.is_empty(), "the server's socket is listed");
        assert!(
            timers.iter().all(|&t| t == want),
            "--tcp-keepalive-secs {seconds}: {timers:?}"
        );
        drop(c);
        s.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_keepalive_closes_a_peer_that_never_answers_pings() {
    let s = TestServer::start(None, &["--http2-keepalive-secs", "1"]).await;
    let mut peer = TcpStream::connect(host(&s.url)).await.unwrap();
    // The client preface and an empty SETTINGS frame, then silence: no
    // SETTINGS ack, no PING ack.
    peer.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    peer.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    let started = Instant::now();
    let mut frames = vec![];
    let mut buf = vec![];
    let mut b = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(30), peer.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => buf.extend_from_slice(&b[..n]),
            Err(_) => break false,
        }
        // Frame headers: 3 bytes of length, then the type.
        while buf.len() >= 9 {
            let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
            if buf.len() < 9 + len {
                break;
            }
            frames.push(buf[3]);
            buf.drain(..9 + len);
        }
    };
    assert!(closed, "the unresponsive peer was not closed in 30 s");
    assert!(
        frames.contains(&6),
        "the server pinged: frame types {frames:?}"
    );
    assert!(started.elapsed() >= Duration::from_secs(1));
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_heads_that_never_finish_are_cut_at_the_header_timeout_on_rest_and_metrics() {
    let flags = [
        "--header-timeout-ms",
        "1000",
        "--first-byte-timeout-ms",
        "10000",
    ];
    let s = TestServer::start(None, &flags).await;
    for (front, url) in [("http", &s.http_url), ("metrics", &s.metrics_url)] {
        // A `G` and nothing more: past the first-byte gate, never a head.
        let mut g = TcpStream::connect(host(url)).await.unwrap();
        g.write_all(b"G").await.unwrap();
        // A head trickled a byte every 300 ms: each byte comes in time,
        // the head never does.
        let mut trickle = TcpStream::connect(host(url)).await.unwrap();
        let started = Instant::now();
        let head = b"GET /metrics HTTP/1.1\r\nhost: x\r\n";
        let mut cut = false;
        for b in head {
            if trickle.write_all(&[*b]).await.is_err() {
                cut = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            if started.elapsed() > Duration::from_secs(4) {
                break;
            }
        }
        let waited = started.elapsed();
        assert!(
            cut || closed_by_server(&mut trickle, Duration::from_millis(100)).await,
            "{front}: a trickled head is still open after {waited:?}"
        );
        assert!(waited < Duration::from_secs(4), "{front}: {waited:?}");
        assert!(
            closed_by_server(&mut g, Duration::from_secs(2)).await,
            "{front}: the `G` connection is still open"
        );
        let series = format!("rir_connections_cut_total{{front=\"{front}\",reason=\"head\"}}");
        assert_eq!(s.metric(&series).await, 2.0, "{front}");
    }
    // A kept-alive connection idle past the timeout is closed too, and a
    // client that speaks in time is served.
    let ready = get(format!("{}/v2/health/ready", s.http_url)).await;
    assert_eq!(ready.status, 200);
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_body_that_trickles_in_time_piece_by_piece_still_ends_at_its_deadline() {
    let flags = ["--body-timeout-ms", "1000", "--body-deadline-ms", "1500"];
    let s = TestServer::start(None, &flags).await;
    let addr = host(&s.http_url).to_string();
    let mut t = TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v2/models/gray/infer HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n"
    );
    t.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    // A byte every 250 ms: never 1 s without one, for 5 s.
    let answer = loop {
        let _ = t.write_all(b" ").await;
        tokio::time::sleep(Duration::from_millis(250)).await;
        let mut b = [0u8; 4096];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(1), t.read(&mut b)).await {
            break String::from_utf8_lossy(&b[..n]).into_owned();
        }
        assert!(started.elapsed() < Duration::from_secs(5), "never cut");
    };
    let waited = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("--body-deadline-ms"), "{answer}");
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(4),
        "cut after {waited:?}"
    );
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_connection_without_a_first_call_is_cut_at_the_handshake_timeout() {
    let flags = [
        "--handshake-timeout-ms",
        "1000",
        "--tcp-keepalive-secs",
        "0",
    ];
    let s = TestServer::start(None, &flags).await;
    // A client that calls at once keeps its connection past the deadline.
    let mut client = s.kserve().await;
    client.model_infer(request()).await.unwrap();
    // Half a preface, then nothing: held for good before.
    let mut half = TcpStream::connect(host(&s.url)).await.unwrap();
    half.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let started = Instant::now();
    // The server speaks first in HTTP/2 (its SETTINGS): read until it closes.
    let (_, closed) = read_until_closed(&mut half, Duration::from_secs(5)).await;
    assert!(closed, "a half-sent preface is still open");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
        "cut after {waited:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    client.model_infer(request()).await.unwrap();
    let cut = r#"rir_connections_cut_total{front="grpc",reason="handshake"}"#;
    assert_eq!(s.metric(cut).await, 1.0);
    assert_eq!(s.metric(r#"rir_open_connections{front="grpc"}"#).await, 1.0);
    s.shutdown().await.unwrap();

    // Under TLS: a handshake that stops after its first bytes.
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = rir_testkit::tls::self_signed(dir.path());
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let tls = [&flags[..], &["--tls-cert", &cert, "--tls-key", &key]].concat();
    let s = TestServer::start(None, &tls).await;
    let mut stalled = TcpStream::connect(host(&s.url)).await.unwrap();
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x00, 0xff])
        .await
        .unwrap();
    let started = Instant::now();
    assert!(
        closed_by_server(&mut stalled, Duration::from_secs(5)).await,
        "a stalled TLS handshake is still open"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    s.shutdown().await.unwrap();
}

/// The metrics page fetched over TLS, trusting `ca_pem`: status line and body.
async fn scrape_over_tls(addr: &str, ca_pem: &str, token: &str) -> String {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let request = format!(
        "GET /metrics HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n"
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut page = String::new();
    tls.read_to_string(&mut page).await.unwrap();
    page
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_tls_the_metrics_and_their_token_never_cross_in_the_clear() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, pem) = rir_testkit::tls::self_signed(dir.path());
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let flags = [
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--metrics-token",
        "scrape",
    ];
    let s = TestServer::start(None, &flags).await;
    let addr = host(&s.metrics_url).to_string();
    let page = scrape_over_tls(&addr, &pem, "scrape").await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("rir_open_connections"), "{page}");
    let refused = scrape_over_tls(&addr, &pem, "wrong").await;
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    // Plain HTTP gets no page: the server waits for a TLS handshake and
    // closes on what is not one.
    let mut plain = TcpStream::connect(&addr).await.unwrap();
    plain
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let (answer, closed) = read_until_closed(&mut plain, Duration::from_secs(5)).await;
    assert!(closed, "{answer}");
    assert!(!answer.contains("rir_open_connections"), "{answer}");
    s.shutdown().await.unwrap();
}
