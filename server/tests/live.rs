//! The live view of the web page, in a real browser: after known traffic,
//! the page shows the request count the server's statistics hold and the
//! throughput the client measured.

use std::time::{Duration, Instant};

use rir_testkit::requests::fp32_request;
use rir_testkit::web::{attribute, get, headless_dom};
use rir_testserver::server::TestServer;

/// Sends `callers` closed loops of one-image requests for `span`; returns
/// how many succeeded.
async fn traffic(s: &TestServer, callers: usize, span: Duration) -> u64 {
    let until = Instant::now() + span;
    let mut loops = Vec::new();
    for i in 0..callers {
        let mut c = s.kserve().await;
        loops.push(tokio::spawn(async move {
            let mut n = 0;
            while Instant::now() < until {
                let r = fp32_request("gray", 1, &[i as f32 * 0.1; 784], true);
                c.model_infer(r).await.expect("an inference");
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for l in loops {
        total += l.await.expect("a caller");
    }
    total
}

/// One window as the page lists it in `data-live-windows`: its end and
/// length (server seconds), its requests and its requests per second.
fn windows(dom: &str) -> Vec<(f64, f64, u64, f64)> {
    let listed = attribute(dom, "data-live-windows").expect("the page lists its windows");
    listed
        .split_whitespace()
        .map(|w| {
            let f: Vec<&str> = w.split(':').collect();
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
                f[3].parse().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_servers_request_count_and_the_measured_throughput() {
    let s = TestServer::start(None, &[]).await;
    // The first call starts the sampler; its uptime maps this test's clock
    // onto the server's.
    let first = get(format!("{}/v2/rir/live", s.http_url)).await.json();
    let watched = Instant::now();
    let uptime = first["uptime_s"].as_f64().unwrap();
    assert_eq!(first["windows"].as_array().unwrap().len(), 0);
    let server_s = |at: Instant| uptime + at.duration_since(watched).as_secs_f64();
    let began = Instant::now();
    let sent = traffic(&s, 2, Duration::from_millis(3500)).await;
    let ended = Instant::now();
    let measured = sent as f64 / ended.duration_since(began).as_secs_f64();
    // One more sample after the last request, then the page.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let url = format!("{}/", s.http_url);
    let dom = tokio::task::spawn_blocking(move || headless_dom(&url, 3000))
        .await
        .unwrap();
    let stats = get(format!("{}/v2/models/gray/stats", s.http_url))
        .await
        .json();
    let counted = stats["model_stats"][0]["inference_stats"]["success"]["count"]
        .as_u64()
        .unwrap();
    assert_eq!(counted, sent, "the server counted what the client sent");
    let total: u64 = attribute(&dom, "data-live-total").unwrap().parse().unwrap();
    assert_eq!(total, sent, "the page's total is the server's count");
    let windows = windows(&dom);
    let in_windows: u64 = windows.iter().map(|w| w.2).sum();
    assert_eq!(in_windows, sent, "every request falls in one window");
    // Windows wholly inside the traffic show the rate the client saw.
    let (from, to) = (server_s(began) + 0.05, server_s(ended) - 0.05);
    let inside: Vec<_> = windows
        .iter()
        .filter(|(t, seconds, ..)| t - seconds >= from && *t <= to)
        .collect();
    assert!(inside.len() >= 2, "{windows:?} within {from}..{to}");
    for (t, seconds, n, rate) in inside {
        assert!((rate - *n as f64 / seconds).abs() < 0.01 * rate.max(1.0));
        assert!(
            (rate / measured - 1.0).abs() < 0.3,
            "window ending {t}: {rate}/s shown, {measured}/s measured"
        );
    }
    // Their latency: the server's p50 is within the client's round trip
    // (two callers in a closed loop: 2 / measured seconds on average).
    let report = get(format!("{}/v2/rir/live", s.http_url)).await.json();
    let client_ms = 2.0 / measured * 1e3;
    for w in report["windows"].as_array().unwrap() {
        let t = w["t"].as_f64().unwrap();
        if t - w["seconds"].as_f64().unwrap() < from || t > to {
            continue;
        }
        let (p50, p99) = (w["p50_ms"].as_f64().unwrap(), w["p99_ms"].as_f64().unwrap());
        assert!(0.0 < p50 && p50 <= p99, "{w}");
        assert!(p50 < 1.2 * client_ms, "p50 {p50} ms, client {client_ms} ms");
        let (queue, compute) = (
            w["queue_ms"].as_f64().unwrap(),
            w["compute_ms"].as_f64().unwrap(),
        );
        assert!(compute > 0.0 && queue + compute < 1.2 * client_ms, "{w}");
    }
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_sampled_before_someone_watches_and_since_skips_windows_seen() {
    // The sampler starts with the first call (its stopping a minute after
    // the last is a unit test of the live module).
    let s = TestServer::start(None, &[]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let first = get(format!("{}/v2/rir/live", s.http_url)).await.json();
    assert_eq!(
        first["windows"].as_array().unwrap().len(),
        0,
        "nothing was sampled before anyone watched"
    );
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let later = get(format!("{}/v2/rir/live?since=-1", s.http_url))
        .await
        .json();
    let n = later["windows"].as_array().unwrap().len();
    assert!((1..=4).contains(&n), "{n} windows after 2.3 s: {later}");
    let since = later["windows"][0]["t"].as_f64().unwrap();
    let after = get(format!("{}/v2/rir/live?since={since}", s.http_url))
        .await
        .json();
    // The windows after the first, and any that ended since the last call.
    let (seen, rest) = (
        later["windows"].as_array().unwrap(),
        after["windows"].as_array().unwrap(),
    );
    assert!(rest.len() >= n - 1, "{rest:?}");
    assert_eq!(
        rest[..n - 1],
        seen[1..],
        "since= leaves out the windows already seen"
    );
    assert!(rest.iter().all(|w| w["t"].as_f64().unwrap() > since));
    let bad = get(format!("{}/v2/rir/live?since=soon", s.http_url)).await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    s.shutdown().await.unwrap();
}
