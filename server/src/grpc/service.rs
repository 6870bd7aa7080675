//! The gRPC handlers: KServe v2 / Triton `inference.GRPCInferenceService`
//! and `rir.v1.ImageClassifier`. Each turns its messages into the
//! [`Core`]'s calls and back; the rules live in the core.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rir_proto::classify::{self, image_classifier_server::ImageClassifier};
use rir_proto::inference::{
    self as pb, InferParameter, InferTensorContents,
    grpc_inference_service_server::GrpcInferenceService, infer_parameter::ParameterChoice,
    model_config::SchedulingChoice, model_infer_response::InferOutputTensor,
};
use tonic::{Request, Response, Status};

use rir_contract::Datatype;

use crate::core::{Core, InferRequest, InferResult, OutputData, RequestedOutput};
use crate::error::InvalidRequest;
use crate::protocol::{StatisticDuration, TensorMetadata};
use crate::tensors::{TensorData, TensorInput};

/// The gRPC service object (cheap to clone).
#[derive(Clone)]
pub(crate) struct Service {
    /// The shared request path.
    pub(crate) core: Arc<Core>,
}

/// The deadline a client set with the `grpc-timeout` header, if any.
pub(crate) fn deadline_of<T>(req: &Request<T>) -> Option<Instant> {
    let raw = req.metadata().get("grpc-timeout")?.to_str().ok()?;
    Instant::now().checked_add(grpc_timeout(raw)?)
}

/// A `grpc-timeout` value as the gRPC spec writes it: at most 8 digits and
/// a unit (H, M, S, m, u, n). Anything else is no timeout.
pub(crate) fn grpc_timeout(raw: &str) -> Option<Duration> {
    let (digits, unit) = raw.split_at(raw.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(v * 3600),
        "M" => Duration::from_secs(v * 60),
        "S" => Duration::from_secs(v),
        "m" => Duration::from_millis(v),
        "u" => Duration::from_micros(v),
        "n" => Duration::from_nanos(v),
        _ => return None,
    })
}

fn int_param(
    p: &HashMap<String, InferParameter>,
    key: &'static str,
) -> Result<Option<usize>, InvalidRequest> {
    match p.get(key).and_then(|v| v.parameter_choice.as_ref()) {
        None => Ok(None),
        Some(ParameterChoice::Int64Param(v)) if *v > 0 => Ok(Some(*v as usize)),
        Some(other) => Err(InvalidRequest::Parameter {
            key,
            expected: "a positive int64",
            got: format!("{other:?}"),
        }),
    }
}

fn duration(d: StatisticDuration) -> Option<pb::StatisticDuration> {
    Some(pb::StatisticDuration {
        count: d.count,
        ns: d.ns,
    })
}

/// The core's view of one gRPC input tensor: raw bytes when the request
/// carries them, else the typed contents of its datatype.
fn tensor_input<'a>(
    t: &'a pb::model_infer_request::InferInputTensor,
    raw: Option<&'a [u8]>,
) -> Result<TensorInput<'a>, InvalidRequest> {
    let typed = t.contents.as_ref();
    let typed_empty = typed.is_none_or(|x| *x == InferTensorContents::default());
    let data = match raw {
        Some(bytes) if typed_empty => TensorData::Raw(bytes),
        Some(_) => return Err(InvalidRequest::BothContents(t.name.clone())),
        None if t.datatype == Datatype::Uint8.name() => {
            TensorData::Uint(Cow::Borrowed(typed.map_or(&[][..], |c| &c.uint_contents)))
        }
        None => TensorData::Fp32(Cow::Borrowed(typed.map_or(&[][..], |c| &c.fp32_contents))),
    };
    Ok(TensorInput {
        name: &t.name,
        datatype: &t.datatype,
        shape: &t.shape,
        data,
    })
}

#[tonic::async_trait]
impl GrpcInferenceService for Service {
    async fn server_live(
        &self,
        _: Request<pb::ServerLiveRequest>,
    ) -> Result<Response<pb::ServerLiveResponse>, Status> {
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        Ok(Response::new(pb::ServerReadyResponse {
            ready: self.core.is_ready(),
        }))
    }

    async fn model_ready(
        &self,
        req: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let r = req.into_inner();
        Ok(Response::new(pb::ModelReadyResponse {
            ready: self.core.model_ready(&r.name, &r.version),
        }))
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        let m = self.core.server_metadata();
        Ok(Response::new(pb::ServerMetadataResponse {
            name: m.name.into(),
            version: m.version.into(),
            extensions: m.extensions.into_iter().map(String::from).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        req: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let r = req.into_inner();
        let m = self.core.model_metadata(&r.name, &r.version)?;
        let tensor = |t: TensorMetadata| pb::model_metadata_response::TensorMetadata {
            name: t.name,
            datatype: t.datatype.name().into(),
            shape: t.shape,
        };
        Ok(Response::new(pb::ModelMetadataResponse {
            name: m.name,
            versions: m.versions,
            platform: m.platform.into(),
            inputs: m.inputs.into_iter().map(tensor).collect(),
            outputs: m.outputs.into_iter().map(tensor).collect(),
        }))
    }

    async fn model_config(
        &self,
        req: Request<pb::ModelConfigRequest>,
    ) -> Result<Response<pb::ModelConfigResponse>, Status> {
        let r = req.into_inner();
        let c = self.core.model_config(&r.name, &r.version)?;
        let data_type = |name: &str| {
            pb::DataType::from_str_name(name).unwrap_or(pb::DataType::TypeInvalid) as i32
        };
        Ok(Response::new(pb::ModelConfigResponse {
            config: Some(pb::ModelConfig {
                name: c.name,
                platform: c.platform.into(),
                backend: c.backend.into(),
                max_batch_size: Some(c.max_batch_size as i32),
                input: c
                    .input
                    .into_iter()
                    .map(|i| pb::ModelInput {
                        name: i.name,
                        data_type: data_type(i.data_type),
                        format: pb::model_input::Format::from_str_name(i.format)
                            .unwrap_or(pb::model_input::Format::None)
                            as i32,
                        dims: i.dims,
                        ..Default::default()
                    })
                    .collect(),
                output: c
                    .output
                    .into_iter()
                    .map(|o| pb::ModelOutput {
                        name: o.name,
                        data_type: data_type(o.data_type),
                        dims: o.dims,
                        ..Default::default()
                    })
                    .collect(),
                scheduling_choice: c.dynamic_batching.map(|d| {
                    SchedulingChoice::DynamicBatching(pb::ModelDynamicBatching {
                        preferred_batch_size: d
                            .preferred_batch_size
                            .into_iter()
                            .map(|s| s as i32)
                            .collect(),
                        max_queue_delay_microseconds: Some(d.max_queue_delay_microseconds),
                        ..Default::default()
                    })
                }),
                instance_group: c
                    .instance_group
                    .into_iter()
                    .map(|g| pb::ModelInstanceGroup {
                        count: g.count as i32,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
        }))
    }

    async fn model_statistics(
        &self,
        req: Request<pb::ModelStatisticsRequest>,
    ) -> Result<Response<pb::ModelStatisticsResponse>, Status> {
        let r = req.into_inner();
        let model_stats = self
            .core
            .statistics(&r.name, &r.version)?
            .into_iter()
            .map(|m| {
                let s = m.inference_stats;
                pb::ModelStatistics {
                    name: m.name,
                    version: m.version,
                    last_inference: m.last_inference,
                    inference_count: m.inference_count,
                    execution_count: m.execution_count,
                    inference_stats: Some(pb::InferStatistics {
                        success: duration(s.success),
                        fail: duration(s.fail),
                        queue: duration(s.queue),
                        compute_input: duration(s.compute_input),
                        compute_infer: duration(s.compute_infer),
                        compute_output: duration(s.compute_output),
                    }),
                    batch_stats: m
                        .batch_stats
                        .into_iter()
                        .map(|b| pb::InferBatchStatistics {
                            batch_size: b.batch_size,
                            compute_input: duration(b.compute_input),
                            compute_infer: duration(b.compute_infer),
                            compute_output: duration(b.compute_output),
                        })
                        .collect(),
                }
            })
            .collect();
        Ok(Response::new(pb::ModelStatisticsResponse { model_stats }))
    }

    async fn repository_index(
        &self,
        req: Request<pb::RepositoryIndexRequest>,
    ) -> Result<Response<pb::RepositoryIndexResponse>, Status> {
        let r = req.into_inner();
        let models = self
            .core
            .repository_index(r.ready)
            .into_iter()
            .map(|e| pb::repository_index_response::ModelIndex {
                name: e.name,
                version: e.version,
                state: e.state.as_str().into(),
                reason: e.reason,
            })
            .collect();
        Ok(Response::new(pb::RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        req: Request<pb::RepositoryModelLoadRequest>,
    ) -> Result<Response<pb::RepositoryModelLoadResponse>, Status> {
        let r = req.into_inner();
        let parameters = r.parameters.keys().map(String::as_str);
        self.core.load_model(&r.model_name, parameters).await?;
        Ok(Response::new(pb::RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        req: Request<pb::RepositoryModelUnloadRequest>,
    ) -> Result<Response<pb::RepositoryModelUnloadResponse>, Status> {
        let r = req.into_inner();
        self.core.unload_model(&r.model_name).await?;
        Ok(Response::new(pb::RepositoryModelUnloadResponse {}))
    }

    async fn model_infer(
        &self,
        req: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let deadline = deadline_of(&req);
        let parent = self.core.trace_parent(req.metadata().as_ref());
        let r = req.into_inner();
        let (inputs, outputs) = read_infer(&r).map_err(|e| {
            self.core
                .invalid_request(&r.model_name, &r.model_version, e.to_string())
        })?;
        let result = self
            .core
            .infer(InferRequest {
                model: &r.model_name,
                version: &r.model_version,
                inputs,
                outputs,
                deadline,
                parent,
            })
            .await?;
        let raw = !r.raw_input_contents.is_empty();
        Ok(Response::new(infer_response(result, r.id, raw)))
    }
}

/// A ModelInfer request's inputs (raw contents, or typed ones) and the
/// outputs it asks for, as the core takes them.
fn read_infer(
    r: &pb::ModelInferRequest,
) -> Result<(Vec<TensorInput<'_>>, Vec<RequestedOutput>), InvalidRequest> {
    let raw = &r.raw_input_contents;
    if !raw.is_empty() && raw.len() != r.inputs.len() {
        return Err(InvalidRequest::RawContents {
            raw: raw.len(),
            inputs: r.inputs.len(),
        });
    }
    let inputs = r
        .inputs
        .iter()
        .enumerate()
        .map(|(i, t)| tensor_input(t, raw.get(i).map(Vec::as_slice)))
        .collect::<Result<Vec<_>, _>>()?;
    let outputs = r
        .outputs
        .iter()
        .map(|o| {
            Ok(RequestedOutput {
                name: o.name.clone(),
                classification: int_param(&o.parameters, "classification")?,
            })
        })
        .collect::<Result<Vec<_>, InvalidRequest>>()?;
    Ok((inputs, outputs))
}

/// The response to request `id`: raw output contents when the request sent
/// raw inputs, else typed contents.
fn infer_response(result: InferResult, id: String, raw: bool) -> pb::ModelInferResponse {
    let mut raw_out = vec![];
    let outputs = result
        .outputs
        .into_iter()
        .map(|o| {
            let datatype = o.data.datatype().name().into();
            let contents = match raw {
                true => {
                    raw_out.push(o.data.to_bytes());
                    None
                }
                false => Some(match o.data {
                    OutputData::Fp32(v) => InferTensorContents {
                        fp32_contents: v,
                        ..Default::default()
                    },
                    OutputData::Bytes(items) => InferTensorContents {
                        bytes_contents: items,
                        ..Default::default()
                    },
                }),
            };
            InferOutputTensor {
                name: o.name,
                datatype,
                shape: o.shape,
                parameters: HashMap::new(),
                contents,
            }
        })
        .collect();
    pb::ModelInferResponse {
        model_name: result.model_name,
        model_version: result.model_version,
        id,
        parameters: HashMap::new(),
        outputs,
        raw_output_contents: raw_out,
    }
}

#[tonic::async_trait]
impl ImageClassifier for Service {
    async fn classify(
        &self,
        req: Request<classify::ClassifyRequest>,
    ) -> Result<Response<classify::ClassifyResponse>, Status> {
        let deadline = deadline_of(&req);
        let parent = self.core.trace_parent(req.metadata().as_ref());
        let r = req.into_inner();
        let c = self
            .core
            .classify(
                &r.model_name,
                &r.model_version,
                &r.images,
                r.top_k as usize,
                deadline,
                parent.as_ref(),
            )
            .await?;
        Ok(Response::new(classify::ClassifyResponse {
            model_name: c.model_name,
            model_version: c.model_version,
            results: c
                .results
                .into_iter()
                .map(|labels| classify::Classification {
                    labels: labels
                        .into_iter()
                        .map(|l| classify::Label {
                            index: l.index,
                            name: l.name,
                            probability: l.probability,
                        })
                        .collect(),
                })
                .collect(),
        }))
    }
}

#[cfg(test)]
mod timeout_tests {
    use super::*;

    #[test]
    fn grpc_timeouts_read_as_the_spec_writes_them_and_nothing_else() {
        assert_eq!(grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(
            grpc_timeout("99999999H"),
            Some(Duration::from_secs(99_999_999 * 3600))
        );
        assert_eq!(grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(grpc_timeout("7n"), Some(Duration::from_nanos(7)));
        // Nine digits, u64::MAX, signs, no digits, no unit: no timeout
        // (u64::MAX seconds overflowed the clock and panicked the stream).
        for bad in [
            "123456789S",
            "18446744073709551615S",
            "-5S",
            "+5S",
            "S",
            "",
            "5",
            "5x",
        ] {
            assert_eq!(grpc_timeout(bad), None, "{bad:?}");
        }
    }
}
