//! The Prometheus series two crates must spell the same way: Triton's
//! per-model counters, which rir-serve exports under Triton's names so that
//! dashboards and perf_analyzer read them, and which rir-loadtest scrapes
//! for its server-side breakdown. Every series carries the labels `model`
//! and `version`.

/// Successful inference requests.
pub const REQUEST_SUCCESS: &str = "nv_inference_request_success";
/// Failed inference requests.
pub const REQUEST_FAILURE: &str = "nv_inference_request_failure";
/// Images (items) inferred.
pub const INFERENCE_COUNT: &str = "nv_inference_count";
/// Engine executions (batches).
pub const EXEC_COUNT: &str = "nv_inference_exec_count";
/// Cumulative time of successful requests in the server, microseconds.
pub const REQUEST_DURATION_US: &str = "nv_inference_request_duration_us";
/// Their cumulative time queued, microseconds.
pub const QUEUE_DURATION_US: &str = "nv_inference_queue_duration_us";
/// Their cumulative time preparing inputs, microseconds.
pub const COMPUTE_INPUT_DURATION_US: &str = "nv_inference_compute_input_duration_us";
/// Their cumulative time in the engine, microseconds.
pub const COMPUTE_INFER_DURATION_US: &str = "nv_inference_compute_infer_duration_us";
/// Their cumulative time preparing outputs, microseconds.
pub const COMPUTE_OUTPUT_DURATION_US: &str = "nv_inference_compute_output_duration_us";
