//! The exported ONNX graph as its readers see it: one input, two outputs,
//! and `metadata_props` that describe the model without running it.

/// The graph's input: float32 NCHW pixels in [0, 1] (normalized inside the graph).
pub const INPUT: &str = "image";

/// The output of raw class scores, `[batch, classes]`.
pub const LOGITS: &str = "logits";

/// The output of class probabilities (a softmax of the logits), `[batch, classes]`.
pub const PROBABILITIES: &str = "probabilities";

/// Keys of the ONNX `metadata_props` the exporter writes and the server,
/// the verifier and the clients read.
pub mod keys {
    /// JSON array of class names in label order.
    pub const CLASS_NAMES: &str = "rir.class_names";
    /// Data-set name.
    pub const DATASET: &str = "rir.dataset";
    /// JSON description of the input (layout, range, shape).
    pub const INPUT: &str = "rir.input";
    /// JSON mean and std applied inside the graph.
    pub const NORMALIZATION: &str = "rir.normalization";
    /// JSON model specification.
    pub const SPEC: &str = "rir.spec";
    /// JSON training figures: [`super::RecordedMetrics`].
    pub const METRICS: &str = "rir.metrics";
    /// sha256 of the checkpoint file.
    pub const CHECKPOINT_SHA256: &str = "rir.checkpoint_sha256";
    /// Version of rir-export.
    pub const EXPORTER_VERSION: &str = "rir.exporter_version";
    /// `folded` or `unfolded`.
    pub const FORM: &str = "rir.form";
    /// `fp32`, `fp16` or `int8`: the arithmetic of the body (input and
    /// outputs are float32 either way). Absent in exports older than the
    /// option: fp32.
    pub const PRECISION: &str = "rir.precision";
    /// JSON: how an int8 model was quantized (calibration method, image
    /// count, seed, weight grid) and the sha256 of its float32 source.
    pub const QUANTIZATION: &str = "rir.quantization";
}

/// What [`keys::METRICS`] holds: how far the checkpoint was trained and
/// what the trainer measured on the test split. Readers compare a served or
/// re-run accuracy with [`RecordedMetrics::test_accuracy`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RecordedMetrics {
    /// Epochs completed.
    pub epochs: usize,
    /// The best test accuracy of any epoch, as a fraction.
    pub best_test_acc: Option<f64>,
    /// The last epoch's figures as the trainer recorded them (its
    /// `test_acc` is the accuracy of these very weights).
    pub last: Option<serde_json::Value>,
}

impl RecordedMetrics {
    /// Reads the JSON value of [`keys::METRICS`].
    pub fn parse(json: &str) -> Option<Self> {
        serde_json::from_str(json).ok()
    }

    /// The test accuracy of the exported weights: the last epoch's.
    pub fn test_accuracy(&self) -> Option<f64> {
        self.last.as_ref()?.get("test_acc")?.as_f64()
    }
}

/// What [`keys::QUANTIZATION`] holds: how an int8 model was made from its
/// float32 source, and what it scored when it was made, so that a served
/// int8 model is held to its own figure, not to the source's.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Quantization {
    /// Calibration method: `minmax`, `percentile` or `entropy`.
    pub method: String,
    /// Calibration images (training images of the recorded data set).
    pub images: usize,
    /// Seed of their draw.
    pub seed: u64,
    /// Kernels: int8, symmetric, one scale per output channel or per kernel.
    pub per_channel: bool,
    /// Largest kernel code: 127, or 63 with 7-bit kernels.
    pub max_code: i8,
    /// Convolutions made integer.
    pub convolutions: usize,
    /// Tensors on 8-bit grids.
    pub tensors: usize,
    /// sha256 of the float32 source file.
    pub source_sha256: String,
    /// The int8 model's top-1 accuracy on the whole test split when it was
    /// made (ONNX Runtime on the CPU), if the split was at hand.
    pub test_accuracy: Option<f64>,
    /// The float32 source's on the same images.
    pub source_test_accuracy: Option<f64>,
}

impl Quantization {
    /// Reads the JSON value of [`keys::QUANTIZATION`].
    pub fn parse(json: &str) -> Option<Self> {
        serde_json::from_str(json).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recorded_accuracy_is_the_last_epochs() {
        let json = r#"{"epochs":3,"best_test_acc":0.91,"last":{"epoch":3,"test_acc":0.9}}"#;
        let m = RecordedMetrics::parse(json).unwrap();
        assert_eq!(m.epochs, 3);
        assert_eq!(m.test_accuracy(), Some(0.9));
        let none = RecordedMetrics::parse(r#"{"epochs":0,"best_test_acc":null,"last":null}"#);
        assert_eq!(none.unwrap().test_accuracy(), None);
        assert!(RecordedMetrics::parse("{not json").is_none());
    }
}
