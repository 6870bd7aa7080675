//! Triton's `config.pbtxt`: a [`ModelConfig`] in the protobuf text format,
//! read and written through the schema in `model_config.proto` (with
//! prost-reflect), so that the file means to rir what it means to Triton.
//! The exporter writes one beside each model; the server reads it back.

use std::sync::OnceLock;

use prost_reflect::text_format::FormatOptions;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};

use crate::inference::ModelConfig;

/// Why a `config.pbtxt` could not be read: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigTextError {
    /// 1-based line of the problem (the last line when the text ends early).
    pub line: usize,
    /// What is wrong, as the text-format parser says it.
    pub message: String,
}

impl std::fmt::Display for ConfigTextError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ConfigTextError {}

/// The descriptor of `inference.ModelConfig`, decoded once from the
/// crate's own descriptor set.
fn descriptor() -> &'static MessageDescriptor {
    static DESCRIPTOR: OnceLock<MessageDescriptor> = OnceLock::new();
    DESCRIPTOR.get_or_init(|| {
        DescriptorPool::decode(crate::FILE_DESCRIPTOR_SET)
            .expect("the crate's descriptor set decodes")
            .get_message_by_name("inference.ModelConfig")
            .expect("model_config.proto defines inference.ModelConfig")
    })
}

/// Reads `config.pbtxt` text. Every field of Triton's schema is accepted;
/// an unknown field name, a wrong type or a syntax error is refused with
/// its line.
pub fn parse(text: &str) -> Result<ModelConfig, ConfigTextError> {
    let text = &colon_before_lists(text);
    let message = DynamicMessage::parse_text_format(descriptor().clone(), text).map_err(|e| {
        let offset = miette::Diagnostic::labels(&e)
            .and_then(|mut labels| labels.next())
            .map_or(text.len(), |l| l.offset());
        ConfigTextError {
            line: line_of(text, offset),
            message: e.to_string(),
        }
    })?;
    message
        .transcode_to::<ModelConfig>()
        .map_err(|e| ConfigTextError {
            line: 1,
            message: e.to_string(),
        })
}

/// `text` with a `:` between a field name and the `[` of a list that
/// follows it without one (`input [ { ... } ]`).
///
/// The text format lets a list of messages follow its field name without a
/// colon, and Triton's own configs are written that way; prost-reflect's
/// parser requires the colon. Adding it changes nothing else: strings and
/// comments are passed over, no line moves, and a name followed by `[` can
/// only be a field name (inside lists, values are followed by `,` or `]`).
fn colon_before_lists(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut chars = text.chars().peekable();
    // Whether the last token was a name, with only blanks after it.
    let mut after_name = false;
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' => {
                out.push(c);
                while let Some(d) = chars.next() {
                    out.push(d);
                    match d {
                        '\\' => out.extend(chars.next()),
                        _ if d == c => break,
                        '\n' => break,
                        _ => {}
                    }
                }
                after_name = false;
            }
            '#' => {
                out.push(c);
                while let Some(&d) = chars.peek() {
                    if d == '\n' {
                        break;
                    }
                    out.extend(chars.next());
                }
            }
            '[' if after_name => {
                out.push_str(":[");
                after_name = false;
            }
            c if c.is_whitespace() => out.push(c),
            c if c.is_alphanumeric() || c == '_' => {
                out.push(c);
                while let Some(&d) = chars.peek().filter(|d| d.is_alphanumeric() || **d == '_') {
                    out.push(d);
                    chars.next();
                }
                after_name = true;
            }
            c => {
                out.push(c);
                after_name = false;
            }
        }
    }
    out
}

/// The 1-based line that byte `offset` of `text` is on.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    1 + text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
}

/// `config` as `config.pbtxt` text, one field a line, nested messages
/// indented; only the fields that are set are written.
pub fn format(config: &ModelConfig) -> String {
    let mut message = DynamicMessage::new(descriptor().clone());
    message
        .transcode_from(config)
        .expect("a ModelConfig transcodes to its own descriptor");
    let mut text = message.to_text_format_with_options(&FormatOptions::new().pretty(true));
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::{
        DataType, ModelDynamicBatching, ModelInput, ModelInstanceGroup, ModelOutput,
        ModelVersionPolicy, model_config::SchedulingChoice, model_version_policy::PolicyChoice,
        model_version_policy::Specific,
    };

    fn example() -> ModelConfig {
        let tensor = |name: &str, dims: Vec<i64>| ModelOutput {
            name: name.into(),
            data_type: DataType::TypeFp32 as i32,
            dims,
            ..Default::default()
        };
        ModelConfig {
            name: "rir".into(),
            platform: "onnxruntime_onnx".into(),
            max_batch_size: Some(64),
            input: vec![ModelInput {
                name: "image".into(),
                data_type: DataType::TypeFp32 as i32,
                dims: vec![1, 28, 28],
                ..Default::default()
            }],
            output: vec![
                tensor("logits", vec![10]),
                tensor("probabilities", vec![10]),
            ],
            scheduling_choice: Some(SchedulingChoice::DynamicBatching(ModelDynamicBatching {
                preferred_batch_size: vec![1, 2, 4, 8, 16, 32, 64],
                max_queue_delay_microseconds: Some(0),
                ..Default::default()
            })),
            instance_group: vec![ModelInstanceGroup {
                count: 2,
                ..Default::default()
            }],
            version_policy: Some(ModelVersionPolicy {
                policy_choice: Some(PolicyChoice::Specific(Specific {
                    versions: vec![1, 3],
                })),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn what_is_written_reads_back() {
        let c = example();
        let text = format(&c);
        assert!(text.contains("max_batch_size: 64"), "{text}");
        assert!(text.contains("data_type: TYPE_FP32"), "{text}");
        assert_eq!(parse(&text).unwrap(), c);
    }

    #[test]
    fn triton_style_configs_with_other_fields_read() {
        let text = r#"
            # A config as people write them for Triton.
            name: "densenet_onnx"
            platform: "onnxruntime_onnx"
            max_batch_size : 8
            input [ { name: "data_0", data_type: TYPE_FP32, format: FORMAT_NCHW, dims: [ 3, 224, 224 ]
                      reshape { shape: [ 1, 3, 224, 224 ] } } ]
            output < name: "fc6_1" data_type: TYPE_FP32 dims: 1000 label_filename: "labels.txt" >
            instance_group [ { count: 2, kind: KIND_CPU }, { kind: KIND_GPU gpus: [ 0 ] } ]
            dynamic_batching { preferred_batch_size: [ 4, 8 ] max_queue_delay_microseconds: 100 }
            version_policy: { latest: { num_versions: 2 } }
            optimization { execution_accelerators { gpu_execution_accelerator : [ { name : "tensorrt" } ] } }
            parameters { key: "intra_op_thread_count" value: { string_value: "2" } }
        "#;
        let c = parse(text).unwrap();
        assert_eq!(c.name, "densenet_onnx");
        assert_eq!(c.max_batch_size, Some(8));
        assert_eq!(c.input[0].dims, vec![3, 224, 224]);
        assert_eq!(c.output[0].dims, vec![1000]);
        assert_eq!(c.instance_group.len(), 2);
        let Some(SchedulingChoice::DynamicBatching(d)) = c.scheduling_choice else {
            panic!("dynamic batching");
        };
        assert_eq!(d.preferred_batch_size, vec![4, 8]);
        assert_eq!(d.max_queue_delay_microseconds, Some(100));
        assert_eq!(parse("").unwrap(), ModelConfig::default());
        assert_eq!(parse("max_batch_size: 0").unwrap().max_batch_size, Some(0));
    }

    #[test]
    fn bad_configs_say_which_line() {
        let cases = [
            ("name: \"x\"\nmax_batch_size: \"a\"", 2, "expected"),
            ("name: \"x\nplatform: \"y\"", 1, ""),
            ("input [ { name: \"a\" }", 1, "end of input"),
            (
                "name: \"x\"\n\nnewest_field: 3",
                3,
                "field 'newest_field' not found",
            ),
            ("instance_group [ { kind: KIND_TPU } ]", 1, "KIND_TPU"),
            ("name = 3", 1, "invalid token"),
        ];
        for (text, line, needle) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text}: {e}");
            assert!(e.message.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn lists_of_messages_read_with_or_without_a_colon() {
        let with = "input: [ { name: \"a\" } ]\noutput: [ { name: \"b\" }, { name: \"c\" } ]";
        let without = "input [ { name: \"a\" } ]\noutput [ { name: \"b\" }, { name: \"c\" } ]";
        assert_eq!(parse(with).unwrap(), parse(without).unwrap());
        assert_eq!(parse(without).unwrap().output.len(), 2);
        // Strings and comments are left alone, and lines do not move.
        assert_eq!(
            colon_before_lists("name: \"x [\" # y [\ninput ["),
            "name: \"x [\" # y [\ninput :["
        );
        let e = parse("\n\ninput [ { nope: 1 } ]").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
    }

    #[test]
    fn a_hostile_file_nests_no_deeper_than_the_schema() {
        // The parser descends only into fields the schema has, and no
        // message of the schema contains itself: nesting ends at the first
        // field that is not there, long before the stack could.
        let deep = "optimization { ".repeat(100_000);
        let e = parse(&deep).unwrap_err();
        assert!(e.message.contains("field 'optimization' not found"), "{e}");
        let lists = "input [ ".repeat(100_000);
        assert!(parse(&lists).is_err());
    }
}
