//! Every RPC and every bad input, over a real loopback socket, against
//! models exported by rir-export and run by ONNX Runtime. Expected outputs
//! come from running the same ONNX file in-process (rir-infer), not from the
//! server.

use std::collections::HashMap;
use std::time::Duration;

use rir_infer::engine::{max_abs_diff, output};
use rir_infer::{Engine, OrtEngine, OrtOptions};
use rir_proto::classify::ClassifyRequest;
use rir_proto::inference::{
    self as pb, InferParameter,
    infer_parameter::ParameterChoice,
    model_infer_request::{InferInputTensor, InferRequestedOutputTensor},
};
use rir_testkit::images::png;
use rir_testkit::requests::fp32_request;
use rir_testserver::models::{write_model, write_preset};
use rir_testserver::server::TestServer;
use tonic::Code;

fn pixels(n: usize, per: usize, seed: u32) -> Vec<f32> {
    (0..n * per)
        .map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 1000.0)
        .collect()
}

/// What ONNX Runtime in this process says for the same model and input.
fn reference(path: &std::path::Path, data: &[f32], shape: &[usize]) -> Vec<rir_infer::Output> {
    OrtEngine::load(path, &OrtOptions::default())
        .unwrap()
        .run(data, shape)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metadata_and_config() {
    let s = TestServer::start(None, &[]).await;
    let mut c = s.kserve().await;
    assert!(
        c.server_live(pb::ServerLiveRequest {})
            .await
            .unwrap()
            .into_inner()
            .live
    );
    assert!(
        c.server_ready(pb::ServerReadyRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    let md = c
        .server_metadata(pb::ServerMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(md.name, "rir");
    assert!(md.extensions.contains(&"statistics".to_string()));
    let ready = |name: &str, version: &str| pb::ModelReadyRequest {
        name: name.into(),
        version: version.into(),
    };
    assert!(
        c.model_ready(ready("gray", ""))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    assert!(
        c.model_ready(ready("gray", "1"))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    // A broken model is reported, not ready, while the others serve.
    assert!(
        !c.model_ready(ready("broken", ""))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    // An unknown model or version is not ready, not an error (as in
    // Triton: stock clients' is_model_ready returns false).
    for (name, version) in [("nope", ""), ("gray", "7")] {
        let r = c.model_ready(ready(name, version)).await.unwrap();
        assert!(!r.into_inner().ready, "{name} {version}");
    }

    let m = c
        .model_metadata(pb::ModelMetadataRequest {
            name: "rgb".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(m.versions, vec!["1"]);
    assert_eq!(m.inputs[0].name, "image");
    assert_eq!(m.inputs[0].shape, vec![-1, 3, 32, 32]);
    assert_eq!(
        m.outputs
            .iter()
            .map(|o| o.name.as_str())
            .collect::<Vec<_>>(),
        ["logits", "probabilities"]
    );
    let m = c
        .model_metadata(pb::ModelMetadataRequest {
            name: "gray".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(m.versions, vec!["1", "2"]);

    let cfg = c
        .model_config(pb::ModelConfigRequest {
            name: "gray".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    assert_eq!(cfg.platform, "onnxruntime_onnx");
    assert_eq!(cfg.max_batch_size, Some(16));
    assert_eq!(cfg.input[0].dims, vec![1, 28, 28]);
    assert_eq!(cfg.input[0].data_type, pb::DataType::TypeFp32 as i32);
    assert_eq!(cfg.output[1].dims, vec![10]);
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infer_raw_and_typed_match_onnx_runtime() {
    let s = TestServer::start(None, &[]).await;
    let mut c = s.kserve().await;
    let path = s.model_path("gray");
    let data = pixels(3, 784, 7);
    let want = reference(&path, &data, &[3, 1, 28, 28]);
    for raw in [true, false] {
        let r = c
            .model_infer(fp32_request("gray", 3, &data, raw))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.model_name, "gray");
        assert_eq!(r.model_version, "2", "the latest version serves by default");
        assert_eq!(r.id, "req-1");
        assert_eq!(r.outputs.len(), 2);
        for (k, o) in r.outputs.iter().enumerate() {
            assert_eq!(o.shape, vec![3, 10]);
            assert_eq!(o.datatype, "FP32");
            let got = if raw {
                rir_proto::raw::f32s(&r.raw_output_contents[k])
            } else {
                o.contents.clone().unwrap().fp32_contents
            };
            let expect = &output(&want, &o.name).unwrap().data;
            assert!(max_abs_diff(&got, expect) < 1e-5, "{} raw={raw}", o.name);
        }
        assert_eq!(r.raw_output_contents.is_empty(), !raw);
    }
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uint8_nhwc_input_equals_its_fp32_form() {
    // Three RGB images of 16 rows by 24 columns (H != W, n > 1), NHWC bytes.
    // The expected NCHW floats are transposed here, by the test's own loop,
    // and run by ONNX Runtime in process: nothing of the server's decides
    // what is right.
    let dir = tempfile::tempdir().unwrap();
    write_model(
        dir.path(),
        "wide",
        1,
        rir_arch::InputSpec::new(3, 16, 24),
        5,
    );
    let s = TestServer::start(Some(dir.path()), &[]).await;
    let mut c = s.kserve().await;
    let (n, h, w) = (3usize, 16usize, 24usize);
    let bytes: Vec<u8> = (0..n * h * w * 3).map(|i| (i * 7 % 251) as u8).collect();
    let mut nchw = Vec::with_capacity(bytes.len());
    for image in bytes.chunks_exact(h * w * 3) {
        for channel in 0..3 {
            for pixel in image.chunks_exact(3) {
                nchw.push(pixel[channel] as f32 / 255.0);
            }
        }
    }
    let want = reference(&s.model_path("wide"), &nchw, &[n, 3, h, w]);
    let u8_req = pb::ModelInferRequest {
        model_name: "wide".into(),
        inputs: vec![InferInputTensor {
            name: "image".into(),
            datatype: "UINT8".into(),
            shape: vec![n as i64, h as i64, w as i64, 3],
            ..Default::default()
        }],
        raw_input_contents: vec![bytes],
        ..Default::default()
    };
    let a = c.model_infer(u8_req).await.unwrap().into_inner();
    let logits = rir_proto::raw::f32s(&a.raw_output_contents[0]);
    assert_eq!(logits.len(), n * 10);
    let expect = &output(&want, "logits").unwrap().data;
    assert!(
        max_abs_diff(&logits, expect) < 1e-5,
        "{logits:?} vs {expect:?}"
    );
    // A transposed layout (NCHW bytes read as NHWC) gives other logits: the
    // check above can fail.
    assert!(
        max_abs_diff(
            &logits,
            &output(
                &reference(
                    &s.model_path("wide"),
                    &nchw.iter().rev().copied().collect::<Vec<_>>(),
                    &[n, 3, h, w]
                ),
                "logits"
            )
            .unwrap()
            .data
        ) > 1e-4
    );
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classification_extension_returns_top_k_strings() {
    let s = TestServer::start(None, &[]).await;
    let mut c = s.kserve().await;
    let data = pixels(2, 784, 3);
    let mut req = fp32_request("gray", 2, &data, false);
    req.outputs = vec![InferRequestedOutputTensor {
        name: "probabilities".into(),
        parameters: HashMap::from([(
            "classification".to_string(),
            InferParameter {
                parameter_choice: Some(ParameterChoice::Int64Param(3)),
            },
        )]),
    }];
    let r = c.model_infer(req).await.unwrap().into_inner();
    let o = &r.outputs[0];
    assert_eq!(
        (o.datatype.as_str(), o.shape.clone()),
        ("BYTES", vec![2, 3])
    );
    let items: Vec<String> = o
        .contents
        .as_ref()
        .unwrap()
        .bytes_contents
        .iter()
        .map(|b| String::from_utf8(b.clone()).unwrap())
        .collect();
    assert_eq!(items.len(), 6);
    let first: Vec<&str> = items[0].split(':').collect();
    assert_eq!(first.len(), 3, "{items:?}");
    assert!(
        first[2].starts_with("class "),
        "label from the model's metadata: {items:?}"
    );
    // Against ONNX Runtime in this process: each image's three most
    // probable classes, in order, with their probabilities.
    let want = reference(&s.model_path("gray"), &data, &[2, 1, 28, 28]);
    let probabilities = &output(&want, "probabilities").unwrap().data;
    for (image, row) in probabilities.chunks(probabilities.len() / 2).enumerate() {
        let mut order: Vec<usize> = (0..row.len()).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        for (k, &class) in order[..3].iter().enumerate() {
            let item = &items[image * 3 + k];
            let fields: Vec<&str> = item.split(':').collect();
            let p: f32 = fields[0].parse().unwrap();
            assert!(
                (p - row[class]).abs() < 1e-5,
                "image {image}: {item} vs {}",
                row[class]
            );
            assert_eq!(
                fields[1],
                class.to_string(),
                "image {image}, rank {k}: {items:?}"
            );
        }
    }
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classify_decodes_converts_and_resizes_images() {
    let s = TestServer::start(None, &[]).await;
    let mut c = s.classifier().await;
    // A 28x28 grayscale PNG, a 40x20 RGB PNG (converted and resized) and a JPEG.
    let mut jpeg = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_fn(28, 28, |x, _| image::Rgb([x as u8 * 9, 0, 0]))
        .write_to(&mut jpeg, image::ImageFormat::Jpeg)
        .unwrap();
    let r = c
        .classify(ClassifyRequest {
            images: vec![png(28, 28, false), png(40, 20, true), jpeg.into_inner()],
            top_k: 4,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.model_name, "gray");
    assert_eq!(r.results.len(), 3);
    for res in &r.results {
        assert_eq!(res.labels.len(), 4);
        assert!(
            res.labels
                .windows(2)
                .all(|w| w[0].probability >= w[1].probability)
        );
        assert!(res.labels[0].name.starts_with("class "));
    }
    // The 28x28 grayscale PNG must give exactly what the raw pixels give.
    let pix: Vec<f32> = image::load_from_memory(&png(28, 28, false))
        .unwrap()
        .to_luma8()
        .into_raw()
        .iter()
        .map(|&p| p as f32 / 255.0)
        .collect();
    let path = s.model_path("gray");
    let want = reference(&path, &pix, &[1, 1, 28, 28]);
    let probs = &output(&want, "probabilities").unwrap().data;
    let best = r.results[0].labels[0].index as usize;
    assert!((probs[best] - r.results[0].labels[0].probability).abs() < 1e-5);
    // Small images decode in place, large ones on a blocking thread: a
    // 300x200 RGB PNG gives what its decode gives in the engine.
    let large = png(300, 200, true);
    let header = rir_server::tensors::ImageHeader::read(&large, &Default::default()).unwrap();
    assert!(!header.is_small());
    let pix = rir_server::tensors::decode_image(&large, [1, 28, 28], &Default::default()).unwrap();
    let want = reference(&path, &pix, &[1, 1, 28, 28]);
    let probs = &output(&want, "probabilities").unwrap().data;
    let r = c
        .classify(ClassifyRequest {
            images: vec![large],
            top_k: 3,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    for l in &r.results[0].labels {
        assert!(
            (probs[l.index as usize] - l.probability).abs() < 1e-5,
            "{l:?}"
        );
    }
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_finite_inputs_run_by_default_and_are_refused_on_request() {
    // Three images: a NaN in the first, an infinity in the second, the
    // third clean.
    let data = pixels(3, 784, 1);
    let mut odd = data.clone();
    odd[5] = f32::NAN;
    odd[784 + 7] = f32::INFINITY;
    let request = fp32_request("gray", 3, &odd, true);
    // Default: the request runs, as in Triton; a non-finite value spreads
    // through the outputs of the image that holds it, and only that image.
    let s = TestServer::start(None, &[]).await;
    let mut c = s.kserve().await;
    let out = c.model_infer(request.clone()).await.unwrap().into_inner();
    assert_eq!(out.raw_output_contents.len(), 2, "both outputs answered");
    let logits = rir_proto::raw::f32s(&out.raw_output_contents[0]);
    let rows: Vec<&[f32]> = logits.chunks(logits.len() / 3).collect();
    assert_eq!(rows.len(), 3);
    assert!(
        rows[0].iter().any(|v| v.is_nan()),
        "NaN image: {:?}",
        rows[0]
    );
    assert!(
        rows[1].iter().any(|v| !v.is_finite()),
        "infinite image: {:?}",
        rows[1]
    );
    assert!(
        rows[2].iter().all(|v| v.is_finite()),
        "clean image: {:?}",
        rows[2]
    );
    // The clean image's answer is the one it gets alone.
    let alone = c
        .model_infer(fp32_request("gray", 1, &data[2 * 784..], true))
        .await
        .unwrap()
        .into_inner();
    let alone = rir_proto::raw::f32s(&alone.raw_output_contents[0]);
    assert_eq!(alone.len(), rows[2].len());
    for (a, b) in alone.iter().zip(rows[2]) {
        assert!(
            (a - b).abs() <= 1e-5 * a.abs().max(1.0),
            "{alone:?} vs {:?}",
            rows[2]
        );
    }
    s.shutdown().await.unwrap();
    // --reject-nonfinite: INVALID_ARGUMENT naming the problem.
    let s = TestServer::start(None, &["--reject-nonfinite"]).await;
    let e = s.kserve().await.model_infer(request).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
    assert!(e.message().contains("NaN or infinite"), "{}", e.message());
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_get_clear_statuses() {
    let s = TestServer::start(None, &[]).await;
    let mut c = s.kserve().await;
    let data = pixels(1, 784, 1);
    // Each case: one mutation of a good request, the status and a phrase of
    // the reason.
    let good = fp32_request("gray", 1, &data, true);
    let with = |f: &dyn Fn(&mut pb::ModelInferRequest)| {
        let mut r = good.clone();
        f(&mut r);
        r
    };
    let cases = [
        (
            with(&|r| r.model_name = "nope".into()),
            Code::NotFound,
            "unknown model",
        ),
        (
            with(&|r| r.model_version = "9".into()),
            Code::NotFound,
            "no version 9",
        ),
        (
            with(&|r| r.model_name = "broken".into()),
            Code::Unavailable,
            "not ready",
        ),
        (
            with(&|r| r.inputs[0].datatype = "INT64".into()),
            Code::InvalidArgument,
            "datatype INT64",
        ),
        (
            with(&|r| r.inputs[0].shape = vec![1, 1, 28, 27]),
            Code::InvalidArgument,
            "expected [batch, 1, 28, 28]",
        ),
        (
            with(&|r| r.raw_input_contents[0].truncate(3135)),
            Code::InvalidArgument,
            "3135 bytes",
        ),
        (
            fp32_request("gray", 17, &pixels(17, 784, 1), true),
            Code::InvalidArgument,
            "max batch size 16",
        ),
        (
            pb::ModelInferRequest {
                model_name: "gray".into(),
                ..Default::default()
            },
            Code::InvalidArgument,
            "no inputs",
        ),
        (
            with(&|r| {
                r.inputs[0].shape = vec![0, 1, 28, 28];
                r.raw_input_contents = vec![vec![]];
            }),
            Code::InvalidArgument,
            "batch size 0",
        ),
        (
            with(&|r| r.inputs[0].name = "pixels".into()),
            Code::InvalidArgument,
            "unknown input `pixels`",
        ),
        (
            {
                let mut r = fp32_request("gray", 1, &data, false);
                r.raw_input_contents = vec![vec![0; 3136]];
                r
            },
            Code::InvalidArgument,
            "both raw_input_contents and typed",
        ),
        (
            with(&|r| {
                r.outputs = vec![InferRequestedOutputTensor {
                    name: "features".into(),
                    ..Default::default()
                }]
            }),
            Code::InvalidArgument,
            "unknown output `features`",
        ),
    ];
    for (request, code, needle) in cases {
        let e = c.model_infer(request).await.expect_err(needle);
        assert_eq!(e.code(), code, "{}", e.message());
        assert!(
            e.message().contains(needle),
            "`{}` does not mention `{needle}`",
            e.message()
        );
    }
    // Oversized: over the 4 MiB limit of the test server.
    let huge = vec![0u8; 5 << 20];
    let mut r = fp32_request("gray", 1, &data, true);
    r.raw_input_contents = vec![huge];
    let e = c.model_infer(r).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{}", e.message());
    // The connection survives all of that.
    assert!(
        c.model_infer(fp32_request("gray", 1, &data, true))
            .await
            .is_ok()
    );

    let mut k = s.classifier().await;
    let corrupt = png(28, 28, false)[..60].to_vec();
    let e = k
        .classify(ClassifyRequest {
            images: vec![png(28, 28, false), corrupt],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("image 1"), "{}", e.message());
    let e = k
        .classify(ClassifyRequest {
            images: vec![b"GIF89a....".to_vec()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = k.classify(ClassifyRequest::default()).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("no images"));
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_count_what_ran() {
    let s = TestServer::start(None, &[]).await;
    let mut c = s.kserve().await;
    for n in [1usize, 3] {
        c.model_infer(fp32_request("gray", n, &pixels(n, 784, 1), true))
            .await
            .unwrap();
    }
    let _ = c
        .model_infer(fp32_request("gray", 1, &pixels(1, 700, 1), true))
        .await;
    let st = c
        .model_statistics(pb::ModelStatisticsRequest {
            name: "gray".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let m = &st.model_stats[0];
    assert_eq!((m.name.as_str(), m.version.as_str()), ("gray", "2"));
    assert_eq!(m.inference_count, 4);
    assert_eq!(m.execution_count, 2);
    let inf = m.inference_stats.as_ref().unwrap();
    assert_eq!(inf.success.as_ref().unwrap().count, 2);
    assert_eq!(inf.fail.as_ref().unwrap().count, 1);
    // perf_analyzer refuses statistics whose compute counts differ.
    for phase in [
        &inf.queue,
        &inf.compute_input,
        &inf.compute_infer,
        &inf.compute_output,
    ] {
        let d = phase.as_ref().unwrap();
        assert_eq!(d.count, 2);
        assert!(d.ns > 0 || std::ptr::eq(phase, &inf.queue));
    }
    assert!(m.last_inference > 0);
    let all = c
        .model_statistics(pb::ModelStatisticsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.model_stats.len(), 4, "every version of every model");
    let text = s.metrics().await;
    assert!(
        text.contains("rir_inference_count{model=\"gray\"} 4"),
        "{text}"
    );
    assert!(
        text.contains(
            "rir_requests_total{model=\"gray\",outcome=\"error\",reason=\"InvalidArgument\"} 1"
        ),
        "{text}"
    );
    // Triton's names carry the same counts and times, per version.
    let triton = |name: &str| -> f64 {
        let key = format!("{name}{{model=\"gray\",version=\"2\"}} ");
        let line = text.lines().find(|l| l.starts_with(&key));
        line.and_then(|l| l[key.len()..].parse().ok())
            .unwrap_or_else(|| panic!("{key} in {text}"))
    };
    assert_eq!(triton("nv_inference_request_success"), 2.0);
    assert_eq!(triton("nv_inference_request_failure"), 1.0);
    assert_eq!(triton("nv_inference_count"), 4.0);
    assert_eq!(triton("nv_inference_exec_count"), 2.0);
    for (name, d) in [
        ("nv_inference_request_duration_us", &inf.success),
        ("nv_inference_queue_duration_us", &inf.queue),
        ("nv_inference_compute_input_duration_us", &inf.compute_input),
        ("nv_inference_compute_infer_duration_us", &inf.compute_infer),
        (
            "nv_inference_compute_output_duration_us",
            &inf.compute_output,
        ),
    ] {
        let us = d.as_ref().unwrap().ns as f64 / 1000.0;
        assert!(
            (triton(name) - us).abs() < 0.01,
            "{name}: {} vs {us}",
            triton(name)
        );
    }
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_clients_with_batching_get_unbatched_results() {
    let s = TestServer::start(None, &["--max-queue-delay-us", "20000"]).await;
    let path = s.model_path("gray");
    let mut tasks = vec![];
    for i in 0..24u32 {
        let mut c = s.kserve().await;
        let n = 1 + (i as usize % 3);
        let data = pixels(n, 784, i);
        tasks.push(tokio::spawn(async move {
            let r = c
                .model_infer(fp32_request("gray", n, &data, true))
                .await
                .unwrap()
                .into_inner();
            (data, n, rir_proto::raw::f32s(&r.raw_output_contents[0]))
        }));
    }
    for t in tasks {
        let (data, n, got) = t.await.unwrap();
        let want = reference(&path, &data, &[n, 1, 28, 28]);
        assert!(max_abs_diff(&got, &output(&want, "logits").unwrap().data) < 1e-4);
    }
    let snap = s.core().models().get("gray", "").unwrap().stats.snapshot();
    assert_eq!(snap.inference_count, 24 + 24);
    assert!(
        snap.execution_count < 24,
        "batching formed no batch: {} executions",
        snap.execution_count
    );
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_is_refused() {
    // The paper-size network (about 6 ms per image here) with a queue of 2:
    // forty simultaneous requests cannot all fit.
    let dir = tempfile::tempdir().unwrap();
    write_preset(
        dir.path(),
        "paper",
        1,
        rir_arch::InputSpec::new(3, 32, 32),
        "paper",
        1,
    );
    let flags = ["--queue-capacity", "2", "--max-batch", "1"];
    let s = TestServer::start(Some(dir.path()), &flags).await;
    let mut tasks = vec![];
    for i in 0..40u32 {
        let mut c = s.kserve().await;
        tasks.push(tokio::spawn(async move {
            let mut r = fp32_request("paper", 1, &pixels(1, 3072, i), true);
            r.inputs[0].shape = vec![1, 3, 32, 32];
            c.model_infer(r).await
        }));
    }
    let mut codes = HashMap::new();
    for t in tasks {
        let code = match t.await.unwrap() {
            Ok(_) => Code::Ok,
            Err(e) => e.code(),
        };
        *codes.entry(code).or_insert(0) += 1;
    }
    assert!(codes.get(&Code::Ok).copied().unwrap_or(0) > 0, "{codes:?}");
    assert!(
        codes.get(&Code::ResourceExhausted).copied().unwrap_or(0) > 0,
        "{codes:?}"
    );
    assert_eq!(codes.len(), 2, "{codes:?}");
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_shutdown_finishes_calls_in_flight() {
    let s = TestServer::start(None, &["--max-queue-delay-us", "300000"]).await;
    let mut tasks = vec![];
    for i in 0..8u32 {
        let mut c = s.kserve().await;
        tasks.push(tokio::spawn(async move {
            c.model_infer(fp32_request("gray", 1, &pixels(1, 784, i), true))
                .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let core = s.core().clone();
    let url = s.url.clone();
    s.shutdown().await.unwrap();
    for t in tasks {
        assert!(
            t.await.unwrap().is_ok(),
            "a call in flight failed during shutdown"
        );
    }
    assert!(!core.is_ready());
    assert!(
        rir_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient::connect(
            url
        )
        .await
        .is_err()
    );
}

/// `message` with `authorization: <header>` when given.
fn authorized<T>(message: T, header: Option<&str>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    if let Some(h) = header {
        req.metadata_mut()
            .insert("authorization", h.parse().unwrap());
    }
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_is_required_when_set() {
    let s = TestServer::start(None, &["--auth-token", "s3cret"]).await;
    let (mut kserve, mut classifier) = (s.kserve().await, s.classifier().await);
    let infer = fp32_request("gray", 1, &pixels(1, 784, 3), true);
    let classify = ClassifyRequest {
        images: vec![png(28, 28, false)],
        ..Default::default()
    };
    // Each service, each call kind: refused without the token or with
    // another, answered with it. Classify has its own interceptor.
    for header in [
        None,
        Some("Bearer wrong"),
        Some("s3cret"),
        Some("Bearer s3cret"),
    ] {
        let right = header == Some("Bearer s3cret");
        let results = [
            (
                "ServerLive",
                kserve
                    .server_live(authorized(pb::ServerLiveRequest {}, header))
                    .await
                    .map(|_| ()),
            ),
            (
                "ModelInfer",
                kserve
                    .model_infer(authorized(infer.clone(), header))
                    .await
                    .map(|_| ()),
            ),
            (
                "Classify",
                classifier
                    .classify(authorized(classify.clone(), header))
                    .await
                    .map(|_| ()),
            ),
        ];
        for (call, result) in results {
            match (right, result) {
                (true, Ok(())) => {}
                (false, Err(e)) => {
                    assert_eq!(e.code(), Code::Unauthenticated, "{call} {header:?}: {e:?}");
                    assert!(
                        e.message().contains("bearer token"),
                        "{call}: {}",
                        e.message()
                    );
                }
                (_, r) => panic!("{call} with {header:?}: {r:?}"),
            }
        }
    }
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tract_backend_serves_the_same_numbers() {
    let s = TestServer::start(None, &["--backend", "tract"]).await;
    let mut c = s.kserve().await;
    let path = s.model_path("gray");
    let data = pixels(2, 784, 5);
    let r = c
        .model_infer(fp32_request("gray", 2, &data, true))
        .await
        .unwrap()
        .into_inner();
    let want = reference(&path, &data, &[2, 1, 28, 28]);
    assert!(
        max_abs_diff(
            &rir_proto::raw::f32s(&r.raw_output_contents[0]),
            &output(&want, "logits").unwrap().data
        ) < 1e-4
    );
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_triton_python_client_works_unchanged() {
    let s = TestServer::start(None, &[]).await;
    let path = s.model_path("gray");
    let addr = s.url.trim_start_matches("http://").to_string();
    rir_testkit::python::run_triton_client("grpc", &addr, "gray", &path).await;
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nvidia_perf_analyzer_measures_rir_serve_unchanged() {
    // perf_analyzer reads ModelMetadata, ModelConfig and ModelStatistics
    // (it aborts when the compute counts in the statistics differ) and
    // drives ModelInfer, over gRPC and over HTTP (binary tensors, its
    // default there). scripts/perf-analyzer.sh installs it from PyPI.
    let s = TestServer::start(None, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let script = rir_testkit::python::root().join("scripts/perf-analyzer.sh");
    for (protocol, url) in [("grpc", &s.url), ("http", &s.http_url)] {
        let csv = dir.path().join(format!("pa-{protocol}.csv"));
        let host = url.trim_start_matches("http://").to_string();
        let (out_csv, script) = (csv.clone(), script.clone());
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new("bash")
                .arg(script)
                .args(["-m", "gray", "-u", &host, "-i", protocol])
                .args(["--concurrency-range", "2"])
                // Stabilize on the median with a loose threshold: the test checks
                // compatibility, not figures, on a machine shared with other tests.
                .args(["--measurement-interval", "500", "--percentile=50"])
                .args(["--stability-percentage", "50", "--max-trials", "30"])
                // No input options: perf_analyzer's default random data, as a
                // new user runs it.
                .arg("-f")
                .arg(&out_csv)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "perf_analyzer -i {protocol}:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("Server:"), "{stdout}");
        let pa = rir_bench::perf_analyzer::parse_perf_csv(&std::fs::read_to_string(&csv).unwrap())
            .unwrap();
        assert!(pa.ips > 0.0 && pa.p50 > 0.0, "-i {protocol}: {pa:?}");
    }
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_and_plaintext_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path, pem) = rir_testkit::tls::self_signed(dir.path());
    let (cert, key) = (
        cert_path.display().to_string(),
        key_path.display().to_string(),
    );
    let s = TestServer::start(None, &["--tls-cert", &cert, "--tls-key", &key]).await;
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(pem))
        .domain_name("localhost");
    let url = s.url.replace("http://", "https://");
    let channel = tonic::transport::Channel::from_shared(url)
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c =
        rir_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient::new(
            channel,
        );
    assert!(
        c.server_live(pb::ServerLiveRequest {})
            .await
            .unwrap()
            .into_inner()
            .live
    );
    let r = c
        .model_infer(fp32_request("gray", 1, &pixels(1, 784, 1), true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.outputs.len(), 2);
    // A plaintext client cannot talk to the TLS port.
    let plain: Result<_, String> = async {
        let mut p = rir_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient::connect(s.url.clone())
            .await
            .map_err(|e| e.to_string())?;
        p.server_live(pb::ServerLiveRequest {}).await.map_err(|e| e.to_string())
    }
    .await;
    assert!(plain.is_err());
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_serves_prometheus_text() {
    let s = TestServer::start(None, &[]).await;
    let mut c = s.kserve().await;
    c.model_infer(fp32_request("gray", 2, &pixels(2, 784, 1), true))
        .await
        .unwrap();
    let page = rir_testkit::web::get(s.metrics_url.clone()).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.headers["content-type"], "text/plain; version=0.0.4",
        "the Prometheus text format"
    );
    let text = page.text();
    for needle in [
        "rir_inference_count{model=\"gray\"} 2",
        "rir_execution_count{model=\"gray\"} 1",
        "rir_batch_size_bucket{model=\"gray\",le=\"2\"} 1",
        "rir_queue_seconds_count{model=\"gray\"} 1",
        "rir_compute_seconds_count{model=\"gray\"} 1",
        "rir_requests_total{model=\"gray\",outcome=\"ok\",reason=\"OK\"} 1",
        "rir_pending_requests{model=\"gray\"}",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    // The process gauges: this test's own process, read independently.
    let gauge = |name: &str| -> f64 {
        rir_testkit::web::metric(&text, name).unwrap_or_else(|| panic!("no {name} in\n{text}"))
    };
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let rss_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    let ratio = gauge("process_resident_memory_bytes") / (rss_kib * 1024.0);
    assert!((0.8..1.25).contains(&ratio), "RSS gauge / VmRSS = {ratio}");
    assert!(gauge("process_open_fds") >= 4.0);
    // Any path serves the page, as Prometheus scrape configs may differ.
    let other = rir_testkit::web::get(s.metrics_url.replace("/metrics", "/")).await;
    assert!(other.text().contains("rir_inference_count"));
    s.shutdown().await.unwrap();

    // Behind its own token (--metrics-token): 401 without it, with
    // another, or with the API's token; 200 with it.
    let flags = ["--auth-token", "s3cret", "--metrics-token", "scrape-only"];
    let s = TestServer::start(None, &flags).await;
    for (header, status) in [
        (None, 401),
        (Some("Bearer nope"), 401),
        (Some("Bearer s3cret"), 401),
        (Some("Bearer scrape-only"), 200),
    ] {
        let headers: Vec<(&str, &str)> = header.map(|h| ("authorization", h)).into_iter().collect();
        let page = rir_testkit::web::call("GET", s.metrics_url.clone(), &headers, vec![]).await;
        assert_eq!(page.status, status, "{header:?}: {}", page.text());
        assert_eq!(
            page.text().contains("process_resident_memory_bytes"),
            status == 200
        );
    }
    s.shutdown().await.unwrap();
}

/// A CA, and certificates it signs for `names`: (cert PEM, key PEM).
struct Ca {
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
    pem: String,
}

impl Ca {
    fn new() -> Ca {
        let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "rir test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca { params, key, pem }
    }

    fn sign(&self, names: &[&str]) -> (String, String) {
        let params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_serves_only_clients_with_a_certificate_the_ca_signed() {
    use rir_client::connect::{ConnectOptions, connect, kserve_client};
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let ca = Ca::new();
    let (server_cert, server_key) = ca.sign(&["localhost"]);
    let (client_cert, client_key) = ca.sign(&["client"]);
    let stranger = Ca::new().sign(&["client"]);
    let path = |p: std::path::PathBuf| p.display().to_string();
    let (cert, key) = (
        path(write("s.pem", &server_cert)),
        path(write("s.key", &server_key)),
    );
    let client_ca = path(write("ca.pem", &ca.pem));
    let flags = [
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-client-ca",
        &client_ca,
    ];
    let s = TestServer::start(None, &flags).await;
    let url = s
        .url
        .replace("http://", "https://")
        .replace("127.0.0.1", "localhost");
    let options = |client: Option<(std::path::PathBuf, std::path::PathBuf)>| ConnectOptions {
        url: url.clone(),
        ca_cert: Some(dir.path().join("ca.pem")),
        client_cert: client,
        ..Default::default()
    };
    // A client that presents a certificate the CA signed is served.
    let good = options(Some((
        write("c.pem", &client_cert),
        write("c.key", &client_key),
    )));
    let mut c = kserve_client(connect(&good).await.unwrap().remove(0));
    let r = c
        .model_infer(fp32_request("gray", 1, &pixels(1, 784, 1), true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.outputs.len(), 2);
    // No certificate, or one another CA signed: refused in the handshake
    // (the connection, or at the latest the first call, fails).
    for (what, client) in [
        ("no client certificate", None),
        (
            "a certificate from another CA",
            Some((write("x.pem", &stranger.0), write("x.key", &stranger.1))),
        ),
    ] {
        let refused = match connect(&options(client)).await {
            Err(_) => true,
            Ok(mut chans) => kserve_client(chans.remove(0))
                .server_live(pb::ServerLiveRequest {})
                .await
                .is_err(),
        };
        assert!(refused, "{what} was served");
    }
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_every_service_and_health_answers_per_service() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let s = TestServer::start(None, &[]).await;
    let channel = tonic::transport::Channel::from_shared(s.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    // What grpcurl and Postman do first: list the services.
    let mut reflection = ServerReflectionClient::new(channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("{answer:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for want in [
        "inference.GRPCInferenceService",
        "rir.v1.ImageClassifier",
        "grpc.health.v1.Health",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    // Health: the whole server, each service, and an unknown one.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for service in [
        "",
        "inference.GRPCInferenceService",
        "rir.v1.ImageClassifier",
    ] {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
    let unknown = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "no.Such".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    s.shutdown().await.unwrap();

    // With a token, reflection wants it (it lists every call); health
    // does not.
    let s = TestServer::start(None, &["--auth-token", "s3cret"]).await;
    let channel = tonic::transport::Channel::from_shared(s.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let list = || ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let e = ServerReflectionClient::new(channel.clone())
        .server_reflection_info(tokio_stream::iter(vec![list()]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{}", e.message());
    let mut with = tonic::Request::new(tokio_stream::iter(vec![list()]));
    with.metadata_mut()
        .insert("authorization", "Bearer s3cret".parse().unwrap());
    assert!(
        ServerReflectionClient::new(channel.clone())
            .server_reflection_info(with)
            .await
            .is_ok()
    );
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    assert!(
        health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .is_ok()
    );
    s.shutdown().await.unwrap();
}
