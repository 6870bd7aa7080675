//! Connection admission over real sockets: a thousand silent connections
//! neither starve nor slow a normal client and are closed after the
//! first-byte timeout; connections over the limit are closed on arrival, on
//! the gRPC and the HTTP front end alike.

mod common;

use std::time::{Duration, Instant};

use common::{Options, start};
use rir_proto::inference::ServerLiveRequest;
use rir_server::conn::{ConnLimits, Gate};
use rir_server::stats::Metrics;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

fn request() -> rir_proto::inference::ModelInferRequest {
    common::fp32_request("gray", 1, &[0.0; 784], true)
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
    url.trim_start_matches("http://")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_silent_connections_neither_starve_nor_slow_a_normal_client() {
    // 1,000 client sockets here and 1,000 accepted in the same process.
    rir_cli::raise_open_files_limit().unwrap();
    let metrics = Metrics::new().unwrap();
    let limits = ConnLimits {
        max_connections: 2_000,
        first_byte_timeout: Duration::from_secs(3),
        tcp_keepalive: None,
    };
    let mut o = Options::default();
    o.transport.gate = Some(Gate::new(limits, "grpc", &metrics));
    let s = start(None, o).await;

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
        opened.elapsed() < limits.first_byte_timeout,
        "the calls above must run while the silent connections are open"
    );
    assert_eq!(
        metrics.connections.with_label_values(&["grpc"]).get(),
        1_001,
        "every silent connection holds a slot until its timeout"
    );

    // After the first-byte timeout every silent connection is closed by the
    // server; the client that spoke keeps its connection.
    for (k, sock) in silent.iter_mut().enumerate() {
        assert!(
            closed_by_server(sock, Duration::from_secs(10)).await,
            "silent connection {k} still open"
        );
    }
    let refused = |reason| {
        metrics
            .connections_refused
            .with_label_values(&["grpc", reason])
            .get()
    };
    assert_eq!(refused("silent"), 1_000);
    assert_eq!(refused("limit"), 0);
    client.model_infer(request()).await.unwrap();
    assert_eq!(metrics.connections.with_label_values(&["grpc"]).get(), 1);
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_closed_on_arrival_on_both_front_ends() {
    let metrics = Metrics::new().unwrap();
    let limits = ConnLimits {
        max_connections: 10,
        first_byte_timeout: Duration::from_millis(1_500),
        tcp_keepalive: None,
    };
    let mut o = Options::default();
    o.transport.gate = Some(Gate::new(limits, "grpc", &metrics));
    o.http_gate = Some(Gate::new(limits, "http", &metrics));
    let s = start(None, o).await;

    for (front, url) in [("grpc", &s.url), ("http", &s.http_url)] {
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
        assert_eq!(
            metrics
                .connections_refused
                .with_label_values(&[front, "limit"])
                .get(),
            1,
            "{front}"
        );
        // Once the silent ones time out, the slots are free again.
        for sock in &mut held {
            assert!(
                closed_by_server(sock, Duration::from_secs(5)).await,
                "{front}"
            );
        }
    }
    let mut client = s.kserve().await;
    client.model_infer(request()).await.unwrap();
    let ready = common::get(format!("{}/v2/health/ready", s.http_url)).await;
    assert_eq!(ready.status, 200);
    s.shutdown().await.unwrap();
}
