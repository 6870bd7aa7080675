//! The load tester against a server whose behaviour the test scripts (the
//! stub, over real loopback gRPC): the figures it reports must be the ones
//! injected.
//!
//! The tests here run one at a time (`one_at_a_time`): each drives a stub
//! server and a load generator on this machine's cores, and two of them side
//! by side on a 2-core CI machine add milliseconds of scheduling delay to
//! each other's figures.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rir_client::connect::{ConnectOptions, connect};
use rir_loadtest::LoadError;
use rir_loadtest::load::{Arrivals, Load, RunOptions, Schedule, Stability, Stop};
use rir_loadtest::run::{Outcome, run};
use rir_loadtest::workload::{Api, InputData, Workload, WorkloadOptions};
use rir_testkit::doubles::stub::{Script, StubServer};

/// Held by each test for its whole run, so no two of them share the cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().await
}

async fn workload(url: &str, batch: usize) -> Arc<Workload> {
    let chans = connect(&ConnectOptions {
        url: url.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let o = WorkloadOptions {
        api: Api::Infer,
        model: "stub".into(),
        version: String::new(),
        batch,
        input: InputData::Random,
        seed: 1,
        top_k: 0,
        timeout: None,
        shapes: vec![],
        json_tensors: false,
    };
    Arc::new(Workload::prepare(chans, &o).await.unwrap())
}

fn requests(n: u64) -> RunOptions {
    RunOptions {
        warmup: Duration::ZERO,
        stop: Stop::Requests(n),
        stability: None,
        interval: None,
        timeline: None,
        max_in_flight: 10_000,
        seed: 7,
        progress: false,
    }
}

async fn measure(script: Script, load: Load, o: RunOptions) -> (Result<Outcome, LoadError>, u64) {
    let stub = StubServer::start(script).await.unwrap();
    let w = workload(&stub.url, 1).await;
    let r = run(w, load, &o).await;
    let received = stub.received.load(Ordering::SeqCst);
    stub.shutdown().await;
    (r, received)
}

/// `measured` is at least `injected` - 0.05 ms: the tool may add loopback
/// and scheduling time, never remove any.
fn at_least(what: &str, measured: f64, injected: f64) {
    assert!(
        measured >= injected - 0.05,
        "{what}: measured {measured:.3} ms, below the injected {injected:.3} ms"
    );
}

/// What scheduling on a busy 2-core machine may add to a figure that many
/// samples decide. The mistakes these tests are for (a wrong unit, timing
/// from the wrong instant, a queue counted or not) are off by far more.
const SLACK_MS: f64 = 3.0;

/// `measured` lies in [`injected` - 0.05 ms, `injected` + `slack` ms]. Only
/// for figures that several samples decide (min, median, p95, mean), never
/// for one slow sample (p99 or max of a few hundred), which a scheduling
/// hiccup on a busy machine can push anywhere.
fn near(what: &str, measured: f64, injected: f64, slack: f64) {
    assert!(
        measured >= injected - 0.05 && measured <= injected + slack,
        "{what}: measured {measured:.3} ms, injected {injected:.3} ms (allowed +{slack} ms)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn percentiles_match_injected_latencies() {
    let _serial = one_at_a_time().await;
    // 9 in 10 requests take 2 ms, every tenth 20 ms: p50 2 ms; p95, p99, max 20 ms.
    let script = Script {
        delay: Some(Arc::new(|n| {
            Duration::from_millis(if n % 10 == 9 { 20 } else { 2 })
        })),
        ..Script::instant("stub")
    };
    let (r, _) = measure(script, Load::Closed { concurrency: 1 }, requests(300)).await;
    let r = r.unwrap().report;
    assert_eq!((r.requests, r.ok), (300, 300));
    let l = r.latency_ms;
    near("min", l.min, 2.0, SLACK_MS);
    near("p50", l.p50, 2.0, SLACK_MS);
    // 30 of the 300 take 20 ms: p95 is one of them, whatever a few
    // outliers do.
    near("p95", l.p95, 20.0, SLACK_MS + 1.0);
    at_least("p99", l.p99, 20.0);
    at_least("max", l.max, 20.0);
    near("avg", l.avg, 0.9 * 2.0 + 0.1 * 20.0, SLACK_MS);
    // Closed loop at concurrency 1: throughput is 1 / mean latency.
    let expected = 1000.0 / l.avg;
    assert!(
        (r.requests_per_s / expected - 1.0).abs() < 0.15,
        "{} req/s vs {expected}",
        r.requests_per_s
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_rate_and_latency_match() {
    let _serial = one_at_a_time().await;
    // A server answering in 3 ms, driven at 200/s: latency 3 ms, throughput 200/s.
    let script = Script {
        delay: Some(Arc::new(|_| Duration::from_millis(3))),
        ..Script::instant("stub")
    };
    let load = Load::Open {
        rate: 200.0,
        arrivals: Arrivals::Poisson,
    };
    let (r, _) = measure(script, load, requests(400)).await;
    let r = r.unwrap().report;
    assert_eq!(r.ok, 400);
    near("p50", r.latency_ms.p50, 3.0, SLACK_MS);
    assert!(
        (r.requests_per_s / 200.0 - 1.0).abs() < 0.2,
        "{} req/s",
        r.requests_per_s
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_sees_a_stall_that_closed_loop_hides() {
    let _serial = one_at_a_time().await;
    // The server stalls 500 ms when its 200th request arrives, about 1 s
    // into a 3 s run at 200 requests/s. Every request scheduled during the
    // stall waits for its end: about 100 of 600, with latencies spread from
    // 500 ms down to nothing. Measured from the intended send time they fill
    // the top 1/6 of the distribution.
    let stall = Script {
        stall: Some((200, Duration::from_millis(500))),
        ..Script::instant("stub")
    };
    let open = Load::Open {
        rate: 200.0,
        arrivals: Arrivals::Constant,
    };
    let (r, _) = measure(stall.clone(), open.clone(), requests(600)).await;
    let l = r.unwrap().report.latency_ms;
    assert!(l.max >= 450.0, "max {}", l.max);
    assert!(l.p99 >= 400.0, "p99 {}", l.p99);
    assert!(l.p90 >= 100.0, "p90 {}", l.p90);
    assert!(l.p50 < 50.0, "p50 {}", l.p50);

    // With one request allowed in flight the generator itself is held up by
    // the stall; the requests it sends late still count from their intended
    // time, so the figures are the same.
    let (r, _) = measure(
        stall.clone(),
        open,
        RunOptions {
            max_in_flight: 1,
            ..requests(600)
        },
    )
    .await;
    let r = r.unwrap().report;
    let l = r.latency_ms;
    assert!(l.p99 >= 400.0, "p99 {}", l.p99);
    assert!(l.p90 >= 100.0, "p90 {}", l.p90);
    assert!(r.late_sends >= 50, "late sends {}", r.late_sends);

    // A closed loop waits with the server: the stall is one slow sample.
    let (r, _) = measure(stall, Load::Closed { concurrency: 1 }, requests(600)).await;
    let l = r.unwrap().report.latency_ms;
    assert!(l.max >= 450.0, "max {}", l.max);
    assert!(l.p99 < 100.0, "closed-loop p99 {}", l.p99);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_counted_by_status() {
    let _serial = one_at_a_time().await;
    // Request 0 is the probe; of requests 1..=100, n % 5 == 1 fail with
    // UNAVAILABLE and n % 5 == 3 with RESOURCE_EXHAUSTED: 20 each.
    let script = Script {
        error: Some(Arc::new(|n| match n % 5 {
            1 => Some(tonic::Code::Unavailable),
            3 => Some(tonic::Code::ResourceExhausted),
            _ => None,
        })),
        ..Script::instant("stub")
    };
    let (r, received) = measure(script, Load::Closed { concurrency: 1 }, requests(100)).await;
    let r = r.unwrap().report;
    assert_eq!(received, 101);
    assert_eq!(r.requests, 100);
    assert_eq!(r.ok, 60);
    assert_eq!(r.errors.get("UNAVAILABLE"), Some(&20));
    assert_eq!(r.errors.get("RESOURCE_EXHAUSTED"), Some(&20));
    assert_eq!(r.errors.len(), 2);
    assert!(r.error_messages["UNAVAILABLE"].contains("scripted failure"));
    // Only successes carry latency.
    assert!(r.latency_ms.p50 > 0.0);
    let table = rir_loadtest::report::table(std::slice::from_ref(&r));
    assert!(
        table.contains("RESOURCE_EXHAUSTED:20 UNAVAILABLE:20"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_where_everything_fails_stops_early_with_the_reason() {
    let _serial = one_at_a_time().await;
    let script = Script {
        error: Some(Arc::new(|n| {
            (n > 0).then_some(tonic::Code::ResourceExhausted)
        })),
        ..Script::instant("stub")
    };
    let (r, received) = measure(script, Load::Closed { concurrency: 4 }, requests(100_000)).await;
    match r {
        Err(LoadError::AllFailing { code, message, .. }) => {
            assert_eq!(code, "RESOURCE_EXHAUSTED");
            assert!(message.contains("scripted failure"), "{message}");
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a run of failures was reported as a result"),
    }
    // It stops at the 50th failure, give or take the requests in flight.
    assert!(received < 200, "kept sending: {received} requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_counts_are_exact_in_both_loops() {
    let _serial = one_at_a_time().await;
    for load in [
        Load::Closed { concurrency: 8 },
        Load::Open {
            rate: 2000.0,
            arrivals: Arrivals::Constant,
        },
    ] {
        let mut o = requests(250);
        o.warmup = Duration::from_millis(200);
        let stub = StubServer::start(Script::instant("stub")).await.unwrap();
        let w = workload(&stub.url, 3).await;
        let r = run(w, load, &o).await.unwrap().report;
        assert_eq!((r.requests, r.ok, r.batch), (250, 250, 3), "{}", r.load);
        // Warm-up requests were sent but not counted; every request the
        // server received carried the batch of 3.
        let received = stub.received.load(Ordering::SeqCst);
        assert!(received > 251, "{}", r.load);
        assert_eq!(
            stub.images.load(Ordering::SeqCst),
            3 * received,
            "{}",
            r.load
        );
        stub.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stability_mode_stops_when_windows_agree() {
    let _serial = one_at_a_time().await;
    let script = Script {
        delay: Some(Arc::new(|_| Duration::from_millis(2))),
        ..Script::instant("stub")
    };
    let o = RunOptions {
        stability: Some(Stability {
            window: Duration::from_millis(300),
            tolerance: 0.25,
            max_windows: 12,
        }),
        ..requests(1)
    };
    let (r, _) = measure(script, Load::Closed { concurrency: 2 }, o).await;
    let r = r.unwrap().report;
    assert_eq!(r.stable, Some(true), "{r:?}");
    assert!((3..=12).contains(&r.windows));
    // The report covers the last three windows.
    assert!((r.seconds - 0.9).abs() < 0.2, "{} s", r.seconds);
    near("p50", r.latency_ms.p50, 2.0, SLACK_MS);
}

fn for_seconds(warmup: f64) -> RunOptions {
    RunOptions {
        warmup: Duration::from_secs_f64(warmup),
        stop: Stop::Duration(Duration::from_secs(1)),
        ..requests(0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_steps_and_ramps_send_what_they_schedule() {
    let _serial = one_at_a_time().await;
    // Steps of 0.6 s at 100, 300 and 200/s, constant arrivals: 60, 180 and
    // 120 requests, a row each, whatever the -d of the options says.
    let steps = Load::Scheduled {
        schedule: Schedule::Steps {
            rates: vec![100.0, 300.0, 200.0].into(),
            step: Duration::from_millis(600),
        },
        arrivals: Arrivals::Constant,
    };
    let (r, received) = measure(Script::instant("stub"), steps, for_seconds(0.3)).await;
    let r = r.unwrap().report;
    // Each row's planned rate (the schedule's mean over the row's span as
    // measured, so within 2 %), and the rate measured: answers over the
    // row's own seconds. The last row runs until the run stops, which
    // came up to 0.1 s after its last send under the whole suite's load
    // (120 answers over 0.70 s), so it is held to 20 %.
    let rows: Vec<(u64, f64, f64)> = r
        .intervals
        .iter()
        .map(|i| (i.requests, i.rate.unwrap(), i.requests_per_s))
        .collect();
    assert_eq!(rows.len(), 3, "{rows:?}");
    for ((n, planned, measured), (want_n, want_rate, slack)) in
        rows.iter()
            .zip([(60, 100.0, 0.05), (180, 300.0, 0.05), (120, 200.0, 0.2)])
    {
        assert!(n.abs_diff(want_n) <= 2, "{rows:?}");
        assert!((planned / want_rate - 1.0).abs() < 0.02, "{rows:?}");
        assert!((measured / want_rate - 1.0).abs() < slack, "{rows:?}");
    }
    assert!(
        r.intervals[1].label().starts_with("rate 300/s, 0.6-1.2 s"),
        "{}",
        r.intervals[1].label()
    );
    assert!(r.requests.abs_diff(360) <= 3, "{}", r.requests);
    assert_eq!((r.not_sent, r.failed()), (0, 0));
    // The warm-up ran at the first rate (0.3 s at 100/s), before the steps.
    assert!((received - 1 - r.requests).abs_diff(30) <= 3, "{received}");

    // A ramp from 100 to 500/s over 1.5 s: 450 requests, rising row by row.
    let ramp = Load::Scheduled {
        schedule: Schedule::Ramp {
            from: 100.0,
            to: 500.0,
            over: Duration::from_millis(1500),
        },
        arrivals: Arrivals::Constant,
    };
    let (r, _) = measure(Script::instant("stub"), ramp, for_seconds(0.0)).await;
    let r = r.unwrap().report;
    assert!(r.requests.abs_diff(450) <= 4, "{}", r.requests);
    assert_eq!(r.intervals.len(), 10);
    let counts: Vec<u64> = r.intervals.iter().map(|i| i.requests).collect();
    // Each tenth (0.15 s) sends 6 more than the one before: 18 first, 72 last.
    assert!(
        counts[0].abs_diff(18) <= 2 && counts[9].abs_diff(72) <= 3,
        "{counts:?}"
    );
    assert!(counts.windows(2).all(|w| w[1] > w[0]), "{counts:?}");
    assert!((r.rate.unwrap() - 300.0).abs() < 1e-9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_the_generator_could_not_make_are_counted_late_or_not_sent() {
    let _serial = one_at_a_time().await;
    // 10 ms answers, one request in flight, 400/s asked for 1 s: about 100
    // go, nearly all late, and the other ~300 due before the stop never go.
    let script = Script {
        delay: Some(Arc::new(|_| Duration::from_millis(10))),
        ..Script::instant("stub")
    };
    let load = Load::Open {
        rate: 400.0,
        arrivals: Arrivals::Constant,
    };
    let o = RunOptions {
        max_in_flight: 1,
        ..for_seconds(0.0)
    };
    let (r, _) = measure(script, load, o).await;
    let r = r.unwrap().report;
    assert!(r.requests >= 50 && r.requests <= 110, "{}", r.requests);
    assert!(
        r.late_sends + 5 >= r.requests,
        "{} late of {}",
        r.late_sends,
        r.requests
    );
    // Every scheduled send is either made or counted as not made.
    assert!(
        (r.requests + r.not_sent).abs_diff(400) <= 3,
        "{} + {}",
        r.requests,
        r.not_sent
    );
    let table = rir_loadtest::report::table(std::slice::from_ref(&r));
    assert!(table.contains("were never sent"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generator_that_keeps_up_reports_no_late_sends() {
    let _serial = one_at_a_time().await;
    // Instant answers, 100/s for 1 s with room for every request in flight:
    // the generator has 10 ms between sends, far more than a send takes,
    // so none is more than 1 ms late (a loaded machine may delay one or two).
    let load = Load::Open {
        rate: 100.0,
        arrivals: Arrivals::Constant,
    };
    let (r, _) = measure(Script::instant("stub"), load, for_seconds(0.0)).await;
    let r = r.unwrap().report;
    assert!(r.requests.abs_diff(100) <= 2, "{}", r.requests);
    assert!(r.late_sends <= 2, "{} late of {}", r.late_sends, r.requests);
    assert_eq!(r.not_sent, 0);
}
