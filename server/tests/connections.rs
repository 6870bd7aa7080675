//! Connection admission over real sockets: a thousand silent connections
//! neither starve nor slow a normal client and are closed after the
//! first-byte timeout; connections over the limit are closed on arrival, on
//! the gRPC and the HTTP front end alike.

use std::time::{Duration, Instant};

use rir_proto::inference::ServerLiveRequest;
use rir_testkit::requests::fp32_request;
use rir_testkit::server::TestServer;
use rir_testkit::web::get;
use tokio::io::AsyncReadExt;
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
    url.trim_start_matches("http://")
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
async fn connections_over_the_limit_are_closed_on_arrival_on_both_front_ends() {
    let flags = [
        "--max-connections",
        "10",
        "--first-byte-timeout-ms",
        "1500",
        "--tcp-keepalive-secs",
        "0",
    ];
    let s = TestServer::start(None, &flags).await;

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
        let series = format!("rir_connections_refused_total{{front=\"{front}\",reason=\"limit\"}}");
        assert_eq!(s.metric(&series).await, 1.0, "{front}");
        // Once the silent ones time out, their places are free again.
        for sock in &mut held {
            assert!(
                closed_by_server(sock, Duration::from_secs(5)).await,
                "{front}"
            );
        }
    }
    let mut client = s.kserve().await;
    client.model_infer(request()).await.unwrap();
    let ready = get(format!("{}/v2/health/ready", s.http_url)).await;
    assert_eq!(ready.status, 200);
    s.shutdown().await.unwrap();
}
