//! The HTTP front end (KServe v2 REST) over a real loopback socket: each
//! route against its gRPC twin on the same server, NVIDIA's stock
//! `tritonclient.http`, curl, and bad requests. Expected numbers come from
//! the gRPC side and from ONNX Runtime in this process, not from the HTTP
//! code under test.

use rir_infer::engine::{max_abs_diff, output};
use rir_infer::{Engine, OrtEngine, OrtOptions};
use rir_proto::classify::ClassifyRequest;
use rir_proto::inference::{self as pb, model_infer_request::InferInputTensor};
use rir_testkit::images::png;
use rir_testkit::web::{call, get, headless_dom};
use rir_testserver::server::TestServer;
use serde_json::{Value, json};

fn pixels(n: usize, seed: u32) -> Vec<f32> {
    (0..n * 784)
        .map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 1000.0)
        .collect()
}

fn as_f32(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_routes_answer_what_their_grpc_twins_answer() {
    let s = TestServer::start(None, &[]).await;
    let mut c = s.kserve().await;
    let base = s.http_url.clone();

    assert_eq!(get(format!("{base}/v2/health/live")).await.status, 200);
    assert_eq!(get(format!("{base}/v2/health/ready")).await.status, 200);
    let server = get(format!("{base}/v2")).await.json();
    let g = c
        .server_metadata(pb::ServerMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(server["name"], g.name);
    assert_eq!(server["extensions"], json!(g.extensions));

    // Readiness: 200 ready, 4xx not ready or unknown (KServe v2, Triton).
    assert_eq!(
        get(format!("{base}/v2/models/gray/ready")).await.status,
        200
    );
    assert_eq!(
        get(format!("{base}/v2/models/gray/versions/1/ready"))
            .await
            .status,
        200
    );
    let broken = get(format!("{base}/v2/models/broken/ready")).await;
    assert_eq!(broken.status, 400, "{}", broken.error());
    assert_eq!(
        get(format!("{base}/v2/models/nope/ready")).await.status,
        400
    );

    for (name, version) in [("gray", ""), ("gray", "1"), ("rgb", "")] {
        let path = if version.is_empty() {
            format!("{base}/v2/models/{name}")
        } else {
            format!("{base}/v2/models/{name}/versions/{version}")
        };
        let meta = get(path.clone()).await.json();
        let g = c
            .model_metadata(pb::ModelMetadataRequest {
                name: name.into(),
                version: version.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(meta["name"], g.name);
        assert_eq!(meta["versions"], json!(g.versions));
        assert_eq!(meta["platform"], g.platform);
        assert_eq!(meta["inputs"][0]["shape"], json!(g.inputs[0].shape));
        assert_eq!(meta["outputs"][1]["name"], g.outputs[1].name);
        let config = get(format!("{path}/config")).await.json();
        let g = c
            .model_config(pb::ModelConfigRequest {
                name: name.into(),
                version: version.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .config
            .unwrap();
        assert_eq!(config["max_batch_size"], g.max_batch_size.unwrap());
        assert_eq!(config["input"][0]["dims"], json!(g.input[0].dims));
        assert_eq!(config["input"][0]["data_type"], "TYPE_FP32");
        assert_eq!(config["backend"], g.backend);
    }

    // Inference: JSON in and out, binary in and out, and gRPC's raw
    // tensors, on the same three images, against ONNX Runtime in process.
    let data = pixels(3, 5);
    let path = s.model_path("gray");
    let want = OrtEngine::load(&path, &OrtOptions::default())
        .unwrap()
        .run(&data, &[3, 1, 28, 28])
        .unwrap();
    let want_logits = &output(&want, "logits").unwrap().data;
    let json_body = json!({
        "id": "r-7",
        "inputs": [{"name": "image", "shape": [3, 1, 28, 28], "datatype": "FP32", "data": data}],
        "outputs": [{"name": "logits"}]
    });
    let r = call(
        "POST",
        format!("{base}/v2/models/gray/infer"),
        &[("content-type", "application/json")],
        serde_json::to_vec(&json_body).unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let j = r.json();
    assert_eq!(j["id"], "r-7");
    assert_eq!(j["model_version"], "2");
    assert_eq!(j["outputs"][0]["shape"], json!([3, 10]));
    assert!(max_abs_diff(&as_f32(&j["outputs"][0]["data"]), want_logits) < 1e-5);

    let header = serde_json::to_vec(&json!({
        "inputs": [{"name": "image", "shape": [3, 1, 28, 28], "datatype": "FP32",
                    "parameters": {"binary_data_size": data.len() * 4}}],
        "parameters": {"binary_data_output": true}
    }))
    .unwrap();
    let mut body = header.clone();
    body.extend_from_slice(&rir_proto::raw::f32_bytes(&data));
    let r = call(
        "POST",
        format!("{base}/v2/models/gray/infer"),
        &[("inference-header-content-length", &header.len().to_string())],
        body,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let n: usize = r.headers["inference-header-content-length"]
        .parse()
        .unwrap();
    let j: Value = serde_json::from_slice(&r.body[..n]).unwrap();
    assert_eq!(j["outputs"][0]["name"], "logits");
    assert_eq!(j["outputs"][0]["parameters"]["binary_data_size"], 120);
    let binary_logits = rir_proto::raw::f32s(&r.body[n..n + 120]);
    assert!(max_abs_diff(&binary_logits, want_logits) < 1e-5);
    assert_eq!(r.body.len(), n + 240, "logits then probabilities");

    let g = c
        .model_infer(pb::ModelInferRequest {
            model_name: "gray".into(),
            inputs: vec![InferInputTensor {
                name: "image".into(),
                datatype: "FP32".into(),
                shape: vec![3, 1, 28, 28],
                ..Default::default()
            }],
            raw_input_contents: vec![rir_proto::raw::f32_bytes(&data)],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rir_proto::raw::f32s(&g.raw_output_contents[0]),
        binary_logits
    );

    // Classification of a PNG body, against gRPC Classify of the same image.
    let image = png(28, 28, false);
    let r = call(
        "POST",
        format!("{base}/v2/models/gray/classify?top_k=3"),
        &[("content-type", "image/png")],
        image.clone(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let j = r.json();
    let g = s
        .classifier()
        .await
        .classify(ClassifyRequest {
            model_name: "gray".into(),
            images: vec![image],
            top_k: 3,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let labels = j["results"][0].as_array().unwrap();
    assert_eq!(labels.len(), 3);
    for (l, want) in labels.iter().zip(&g.results[0].labels) {
        assert_eq!(l["index"], want.index);
        assert_eq!(l["name"], want.name);
        assert!((l["probability"].as_f64().unwrap() as f32 - want.probability).abs() < 1e-6);
    }

    // Statistics: the same counts both ways, per model and for all.
    let rest = get(format!("{base}/v2/models/gray/stats")).await.json();
    let g = c
        .model_statistics(pb::ModelStatisticsRequest {
            name: "gray".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let (r0, g0) = (&rest["model_stats"][0], &g.model_stats[0]);
    assert_eq!(r0["inference_count"], g0.inference_count);
    assert_eq!(
        r0["inference_count"],
        3 + 3 + 3 + 1 + 1,
        "JSON, binary, gRPC, two classifications"
    );
    assert_eq!(
        r0["inference_stats"]["success"]["count"],
        g0.inference_stats
            .as_ref()
            .unwrap()
            .success
            .as_ref()
            .unwrap()
            .count
    );
    let all = get(format!("{base}/v2/models/stats")).await.json();
    assert_eq!(
        all["model_stats"].as_array().unwrap().len(),
        4,
        "every version of every model"
    );
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_a_4xx_with_a_message_and_the_server_stays_up() {
    let s = TestServer::start(None, &[]).await;
    let base = s.http_url.clone();
    let infer = format!("{base}/v2/models/gray/infer");
    let good = serde_json::to_vec(&json!({
        "inputs": [{"name": "image", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": pixels(1, 1)}]
    }))
    .unwrap();
    let mut gzip_garbage = vec![0x1f, 0x8b];
    gzip_garbage.extend_from_slice(b"not really gzip");
    // method, url, headers, body, status, a phrase of the error.
    type Case<'a> = (
        &'a str,
        String,
        Vec<(&'a str, &'a str)>,
        Vec<u8>,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        ("POST", infer.clone(), vec![], b"{\"inputs\": [".to_vec(), 400, "not a KServe v2 inference request"),
        ("POST", infer.clone(), vec![], b"[]".to_vec(), 400, "not a KServe v2 inference request"),
        ("POST", infer.clone(), vec![("inference-header-content-length", "ten")], good.clone(), 400, "must be a byte count"),
        ("POST", infer.clone(), vec![("inference-header-content-length", "999999")], good.clone(), 400, "the body has"),
        ("POST", infer.clone(), vec![("content-encoding", "br")], good.clone(), 400, "not supported"),
        ("POST", infer.clone(), vec![("content-encoding", "gzip")], gzip_garbage, 400, "cannot gzip-decode"),
        ("POST", infer.clone(), vec![], br#"{"inputs":[{"name":"image","shape":[1,1,28,27],"datatype":"FP32","data":[1]}]}"#.to_vec(), 400, "expected [batch, 1, 28, 28]"),
        ("POST", infer.clone(), vec![], br#"{"inputs":[{"name":"image","shape":[1,1,28,28],"datatype":"FP32","data":[1]}]}"#.to_vec(), 400, "needs 784"),
        ("POST", infer.clone(), vec![], br#"{"inputs":[],"outputs":[{"name":"logits","parameters":{"classification":"many"}}]}"#.to_vec(), 400, "classification"),
        ("POST", format!("{base}/v2/models/nope/infer"), vec![], good.clone(), 404, "unknown model"),
        ("POST", format!("{base}/v2/models/gray/versions/x/infer"), vec![], good.clone(), 404, "versions are numbers"),
        ("POST", format!("{base}/v2/models/broken/infer"), vec![], good.clone(), 503, "not ready"),
        ("GET", infer.clone(), vec![], vec![], 405, "not allowed"),
        ("GET", format!("{base}/v3"), vec![], vec![], 404, "no route"),
        ("POST", format!("{base}/v2/models/gray/classify"), vec![], b"GIF89a...".to_vec(), 400, "image 0"),
        ("POST", format!("{base}/v2/models/gray/classify"), vec![], vec![], 400, "image 0"),
        ("POST", format!("{base}/v2/models/gray/classify?top_k=many"), vec![], png(28, 28, false), 400, "top_k"),
    ];
    for (method, url, headers, body, status, needle) in cases {
        let r = call(method, url.clone(), &headers, body).await;
        assert_eq!(
            r.status,
            status,
            "{method} {url}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let e = r.error();
        assert!(
            e.contains(needle),
            "{method} {url}: `{e}` does not mention `{needle}`"
        );
    }
    // A body over the test server's 4 MiB limit is refused from its
    // headers: the answer comes before the body is sent (a client that
    // kept writing would see the connection close), so speak raw HTTP.
    let addr = base.trim_start_matches("http://").to_string();
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v2/models/gray/infer HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\n\r\n",
        5 << 20
    );
    tokio::io::AsyncWriteExt::write_all(&mut sock, head.as_bytes())
        .await
        .unwrap();
    // Read until the JSON body has come (the server may keep the
    // connection open), at most 10 s.
    let mut answer = vec![];
    let read = async {
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&answer).ends_with('}') {
            let n = tokio::io::AsyncReadExt::read(&mut sock, &mut buf)
                .await
                .unwrap();
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), read)
        .await
        .expect("an answer to an oversized body");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("{\"error\":\"") && answer.contains("length limit"),
        "{answer}"
    );
    // A gzip body that inflates past the limit is refused, not inflated.
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut z, &vec![b' '; 6 << 20]).unwrap();
    let bomb = z.finish().unwrap();
    let r = call("POST", infer.clone(), &[("content-encoding", "gzip")], bomb).await;
    assert_eq!(r.status, 400);
    assert!(r.error().contains("inflates to more than"), "{}", r.error());
    // Still serving, and the refusals that named a served model were counted.
    let r = call("POST", infer.clone(), &[], good).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let stats = get(format!("{base}/v2/models/gray/stats")).await.json();
    assert!(
        stats["model_stats"][0]["inference_stats"]["fail"]["count"]
            .as_u64()
            .unwrap()
            >= 8
    );
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bearer_token_guards_everything_but_health() {
    let flags = [
        "--auth-token",
        "s3cret",
        "--model-control-mode",
        "explicit",
        "--load-model",
        "gray",
    ];
    let s = TestServer::start(None, &flags).await;
    let base = s.http_url.clone();
    assert_eq!(get(format!("{base}/v2/health/live")).await.status, 200);
    assert_eq!(get(format!("{base}/v2/health/ready")).await.status, 200);
    let infer = serde_json::to_vec(&json!({
        "inputs": [{"name": "image", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": pixels(1, 4)}]
    }))
    .unwrap();
    // Every other route, reading and writing: 401 and the reason without
    // the token or with another, the route's own answer with it.
    let routes = [
        ("GET", format!("{base}/v2"), vec![]),
        ("GET", format!("{base}/v2/models/gray"), vec![]),
        ("GET", format!("{base}/v2/rir/live"), vec![]),
        ("POST", format!("{base}/v2/models/gray/infer"), infer),
        (
            "POST",
            format!("{base}/v2/models/gray/classify"),
            png(28, 28, false),
        ),
        ("POST", format!("{base}/v2/repository/index"), vec![]),
        (
            "POST",
            format!("{base}/v2/repository/models/gray/load"),
            vec![],
        ),
    ];
    for (method, url, body) in routes {
        for header in [
            None,
            Some("Bearer nope"),
            Some("s3cret"),
            Some("Bearer s3cret"),
        ] {
            let headers: Vec<(&str, &str)> =
                header.map(|h| ("authorization", h)).into_iter().collect();
            let r = call(method, url.clone(), &headers, body.clone()).await;
            if header == Some("Bearer s3cret") {
                assert_eq!(r.status, 200, "{method} {url}: {}", r.text());
            } else {
                assert_eq!(
                    r.status,
                    401,
                    "{method} {url} with {header:?}: {}",
                    r.text()
                );
                assert!(r.error().contains("bearer token"), "{}", r.error());
            }
        }
    }
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_triton_http_client_works_unchanged() {
    let s = TestServer::start(None, &[]).await;
    let path = s.model_path("gray");
    let addr = s.http_url.trim_start_matches("http://").to_string();
    rir_testkit::python::run_triton_client("http", &addr, "gray", &path).await;
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_classifies_an_image_and_runs_json_inference() {
    let s = TestServer::start(None, &[]).await;
    let base = s.http_url.clone();
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("shirt.png");
    std::fs::write(&image, png(28, 28, false)).unwrap();
    let request = dir.path().join("request.json");
    std::fs::write(
        &request,
        serde_json::to_vec(&json!({
            "inputs": [{"name": "image", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": pixels(1, 3)}],
            "outputs": [{"name": "probabilities", "parameters": {"classification": 2}}]
        }))
        .unwrap(),
    )
    .unwrap();
    let curl = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new("curl")
                .args(["-sS", "--fail-with-body"])
                .args(&args)
                .output()
                .expect("curl");
            assert!(
                out.status.success(),
                "curl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice::<Value>(&out.stdout).unwrap()
        })
    };
    let classified = curl(vec![
        "--data-binary".into(),
        format!("@{}", image.display()),
        "-H".into(),
        "content-type: image/png".into(),
        format!("{base}/v2/models/gray/classify?top_k=2"),
    ])
    .await
    .unwrap();
    // The labels and probabilities gRPC Classify gives for the same file.
    let g = s
        .classifier()
        .await
        .classify(ClassifyRequest {
            images: vec![std::fs::read(&image).unwrap()],
            top_k: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let labels = classified["results"][0].as_array().unwrap();
    assert_eq!(labels.len(), 2);
    for (got, want) in labels.iter().zip(&g.results[0].labels) {
        assert_eq!(got["name"], want.name.as_str(), "{classified}");
        let p = got["probability"].as_f64().unwrap() as f32;
        assert!((p - want.probability).abs() < 1e-6, "{classified}");
    }
    let inferred = curl(vec![
        "--data-binary".into(),
        format!("@{}", request.display()),
        format!("{base}/v2/models/gray/infer"),
    ])
    .await
    .unwrap();
    let top = inferred["outputs"][0]["data"].as_array().unwrap();
    assert_eq!(top.len(), 2);
    assert!(top[0].as_str().unwrap().contains(":class "), "{inferred}");
    // The top two classes ONNX Runtime in this process gives.
    let mut want = OrtEngine::load(&s.model_path("gray"), &OrtOptions::default()).unwrap();
    let want = want.run(&pixels(1, 3), &[1, 1, 28, 28]).unwrap();
    let row = &output(&want, "probabilities").unwrap().data;
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
    for (k, item) in top.iter().enumerate() {
        let fields: Vec<&str> = item.as_str().unwrap().split(':').collect();
        assert_eq!(fields[1], order[k].to_string(), "{inferred}");
        let p: f32 = fields[0].parse().unwrap();
        assert!((p - row[order[k]]).abs() < 1e-5, "{inferred}");
    }
    s.shutdown().await.unwrap();
}

/// Standard base64, for a `data:` URL.
fn base64(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Percent-encodes everything but unreserved characters.
fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_page_classifies_an_image_in_a_real_browser() {
    // Debian's chromium, headless, loads the page with ?image= (the page
    // then fetches the image and sends it as a user's dropped file would
    // be) and prints the DOM once the page is done. The labels it shows
    // must be the gRPC Classify answer for the same image.
    let s = TestServer::start(None, &[]).await;
    let image = png(28, 28, false);
    let url = format!(
        "{}/?model=gray&image={}",
        s.http_url,
        query_escape(&format!("data:image/png;base64,{}", base64(&image)))
    );
    let dom = tokio::task::spawn_blocking(move || headless_dom(&url, 15000))
        .await
        .unwrap();
    assert!(
        dom.contains("data-classified=\"yes\""),
        "the page did not classify:\n{dom}"
    );
    let shown: Vec<(String, f32)> = dom
        .split("<li data-label=\"")
        .skip(1)
        .map(|rest| {
            let (label, rest) = rest.split_once('"').unwrap();
            let p = rest
                .split_once("data-probability=\"")
                .and_then(|(_, r)| r.split_once('"'))
                .unwrap()
                .0;
            (label.to_string(), p.parse().unwrap())
        })
        .collect();
    let want = s
        .classifier()
        .await
        .classify(ClassifyRequest {
            model_name: "gray".into(),
            images: vec![image],
            top_k: 5,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shown.len(), 5, "{dom}");
    for ((label, p), w) in shown.iter().zip(&want.results[0].labels) {
        assert_eq!(label, &w.name);
        assert!(
            (p - w.probability).abs() < 1e-6,
            "{label}: {p} vs {}",
            w.probability
        );
    }
    assert!(
        dom.contains("class=\"READY\""),
        "the model table lists ready models"
    );
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_deadline_get_the_servers_default() {
    // A default of one millisecond passes while a request waits 50 ms in
    // the queue for company: gRPC calls without `grpc-timeout` and every
    // HTTP request are answered DEADLINE_EXCEEDED / 504 and not run; a gRPC
    // call with its own deadline runs.
    let flags = ["--default-timeout-ms", "1", "--max-queue-delay-us", "50000"];
    let s = TestServer::start(None, &flags).await;
    let body = serde_json::to_vec(&json!({
        "inputs": [{"name": "image", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": pixels(1, 1)}]
    }))
    .unwrap();
    let r = call(
        "POST",
        format!("{}/v2/models/gray/infer", s.http_url),
        &[],
        body,
    )
    .await;
    assert_eq!(r.status, 504, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.error().contains("deadline"), "{}", r.error());
    let mut c = s.kserve().await;
    let request = || pb::ModelInferRequest {
        model_name: "gray".into(),
        inputs: vec![InferInputTensor {
            name: "image".into(),
            datatype: "FP32".into(),
            shape: vec![1, 1, 28, 28],
            ..Default::default()
        }],
        raw_input_contents: vec![rir_proto::raw::f32_bytes(&pixels(1, 1))],
        ..Default::default()
    };
    let e = c.model_infer(request()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::DeadlineExceeded, "{}", e.message());
    let mut own = tonic::Request::new(request());
    own.set_timeout(std::time::Duration::from_secs(10));
    assert!(c.model_infer(own).await.is_ok());
    let stats = s.core().statistics("gray", "").unwrap();
    assert_eq!(
        stats[0].inference_count, 1,
        "the expired requests never ran"
    );
    s.shutdown().await.unwrap();
}

/// A JSON infer body of one 28x28 image whose pixels are all `value`.
fn one_image(value: f32) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "inputs": [{"name": "image", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": vec![value; 784]}]
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_bodies_answer_as_plain_ones() {
    use std::io::Write;
    let s = TestServer::start(None, &[]).await;
    let infer = format!("{}/v2/models/gray/infer", s.http_url);
    let body = serde_json::to_vec(&json!({
        "inputs": [{"name": "image", "shape": [2, 1, 28, 28], "datatype": "FP32", "data": pixels(2, 9)}]
    }))
    .unwrap();
    let plain = call("POST", infer.clone(), &[], body.clone()).await;
    assert_eq!(plain.status, 200, "{}", plain.text());
    let mut deflate = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    deflate.write_all(&body).unwrap();
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(&body).unwrap();
    for (encoding, bytes) in [
        ("deflate", deflate.finish().unwrap()),
        ("gzip", gzip.finish().unwrap()),
    ] {
        assert!(bytes.len() < body.len());
        let r = call(
            "POST",
            infer.clone(),
            &[("content-encoding", encoding)],
            bytes,
        )
        .await;
        assert_eq!(r.status, 200, "{encoding}: {}", r.text());
        assert_eq!(r.json()["outputs"], plain.json()["outputs"], "{encoding}");
    }
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_failure_is_500_over_http_and_internal_over_grpc() {
    let dir = tempfile::tempdir().unwrap();
    rir_testserver::models::write_failing_on_bright_pixels(dir.path(), "fragile", 1);
    let s = TestServer::start(Some(dir.path()), &["--default-model", "fragile"]).await;
    let infer = format!("{}/v2/models/fragile/infer", s.http_url);
    // A pixel in [0, 1] runs (row 1 of the table); 7 makes the engine fail.
    let ok = call("POST", infer.clone(), &[], one_image(1.0)).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(
        as_f32(&ok.json()["outputs"][0]["data"]),
        (10..20).map(|v| v as f32).collect::<Vec<_>>()
    );
    let failed = call("POST", infer, &[], one_image(7.0)).await;
    assert_eq!(failed.status, 500, "{}", failed.text());
    assert!(failed.error().contains("onnxruntime"), "{}", failed.error());
    let request = rir_testkit::requests::fp32_request("fragile", 1, &[7.0; 784], true);
    let e = s.kserve().await.model_infer(request).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Internal, "{}", e.message());
    // The server still serves afterwards.
    let again = call(
        "POST",
        format!("{}/v2/models/fragile/infer", s.http_url),
        &[],
        one_image(0.0),
    )
    .await;
    assert_eq!(again.status, 200);
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_429_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::one_slot(dir.path()).await;
    let infer = format!("{}/v2/models/gray/infer", s.http_url);
    let calls: Vec<_> = (0..24)
        .map(|_| tokio::spawn(call("POST", infer.clone(), &[], one_image(0.5))))
        .collect();
    let mut statuses = std::collections::BTreeMap::new();
    for c in calls {
        let r = c.await.unwrap();
        if r.status == 429 {
            assert!(r.error().contains("queue"), "{}", r.error());
        }
        *statuses.entry(r.status).or_insert(0) += 1;
    }
    assert!(statuses.get(&200).is_some_and(|&n| n > 0), "{statuses:?}");
    assert!(statuses.get(&429).is_some_and(|&n| n > 0), "{statuses:?}");
    assert_eq!(statuses.len(), 2, "only 200 and 429: {statuses:?}");
    s.shutdown().await.unwrap();
}
