//! Triton's model configuration, `<repository>/<model>/config.pbtxt`, in
//! the protobuf text format: the subset that describes an exported RiR
//! model and how to batch it. `rir-export` writes one beside the model so
//! the same repository serves in Triton; `rir-serve` reads it back.
//!
//! The reader takes any text-format message: fields this project does not
//! use are skipped, so a config written for Triton with more settings
//! still loads. Wrong types and syntax errors say where they are.

use std::fmt::Write as _;

use thiserror::Error;

/// Why a `config.pbtxt` could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("config.pbtxt line {line}: {message}")]
pub struct ConfigError {
    /// 1-based line of the problem.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// One tensor of `input` or `output`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorConfig {
    /// Tensor name.
    pub name: String,
    /// Triton data type (`TYPE_FP32`).
    pub data_type: String,
    /// Dimensions without the batch.
    pub dims: Vec<i64>,
}

/// Which versions of a model serve (Triton's `version_policy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionPolicy {
    /// The highest `n` versions (Triton's default is 1).
    Latest(usize),
    /// Every version.
    All,
    /// These versions.
    Specific(Vec<u64>),
}

impl VersionPolicy {
    /// The versions of `available` (ascending) this policy serves.
    pub fn select(&self, available: &[u64]) -> Vec<u64> {
        match self {
            VersionPolicy::All => available.to_vec(),
            VersionPolicy::Latest(n) => available[available.len().saturating_sub(*n)..].to_vec(),
            VersionPolicy::Specific(list) => available
                .iter()
                .copied()
                .filter(|v| list.contains(v))
                .collect(),
        }
    }
}

/// `dynamic_batching`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DynamicBatching {
    /// Batch sizes to form (the engine's buckets).
    pub preferred_batch_size: Vec<usize>,
    /// Longest a request waits for others.
    pub max_queue_delay_microseconds: Option<u64>,
}

/// The parts of a Triton model configuration that rir reads and writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TritonConfig {
    /// Model name (must equal the folder name).
    pub name: Option<String>,
    /// `onnxruntime_onnx` for ONNX models.
    pub platform: Option<String>,
    /// `onnxruntime` when given.
    pub backend: Option<String>,
    /// Most images per request and per run; 0 means the model has no batch dimension.
    pub max_batch_size: Option<usize>,
    /// Inputs.
    pub input: Vec<TensorConfig>,
    /// Outputs.
    pub output: Vec<TensorConfig>,
    /// Dynamic batching, when on.
    pub dynamic_batching: Option<DynamicBatching>,
    /// Total engine instances over all `instance_group`s, when given.
    pub instance_count: Option<usize>,
    /// Which versions serve.
    pub version_policy: VersionPolicy,
}

impl Default for TritonConfig {
    fn default() -> Self {
        TritonConfig {
            name: None,
            platform: None,
            backend: None,
            max_batch_size: None,
            input: vec![],
            output: vec![],
            dynamic_batching: None,
            instance_count: None,
            version_policy: VersionPolicy::Latest(1),
        }
    }
}

impl TritonConfig {
    /// The configuration as `config.pbtxt` text.
    pub fn to_pbtxt(&self) -> String {
        let mut s = String::new();
        let q = |v: &str| format!("{v:?}");
        if let Some(n) = &self.name {
            let _ = writeln!(s, "name: {}", q(n));
        }
        if let Some(p) = &self.platform {
            let _ = writeln!(s, "platform: {}", q(p));
        }
        if let Some(b) = &self.backend {
            let _ = writeln!(s, "backend: {}", q(b));
        }
        if let Some(m) = self.max_batch_size {
            let _ = writeln!(s, "max_batch_size: {m}");
        }
        for (field, list) in [("input", &self.input), ("output", &self.output)] {
            if list.is_empty() {
                continue;
            }
            let entries: Vec<String> = list
                .iter()
                .map(|t| {
                    let dims: Vec<String> = t.dims.iter().map(i64::to_string).collect();
                    format!(
                        "  {{\n    name: {}\n    data_type: {}\n    dims: [ {} ]\n  }}",
                        q(&t.name),
                        t.data_type,
                        dims.join(", ")
                    )
                })
                .collect();
            let _ = writeln!(s, "{field} [\n{}\n]", entries.join(",\n"));
        }
        match &self.version_policy {
            VersionPolicy::Latest(1) => {}
            VersionPolicy::Latest(n) => {
                let _ = writeln!(s, "version_policy: {{ latest: {{ num_versions: {n} }} }}");
            }
            VersionPolicy::All => {
                let _ = writeln!(s, "version_policy: {{ all: {{ }} }}");
            }
            VersionPolicy::Specific(v) => {
                let v: Vec<String> = v.iter().map(u64::to_string).collect();
                let _ = writeln!(
                    s,
                    "version_policy: {{ specific: {{ versions: [ {} ] }} }}",
                    v.join(", ")
                );
            }
        }
        if let Some(n) = self.instance_count {
            let _ = writeln!(s, "instance_group [\n  {{\n    count: {n}\n  }}\n]");
        }
        if let Some(d) = &self.dynamic_batching {
            let sizes: Vec<String> = d
                .preferred_batch_size
                .iter()
                .map(usize::to_string)
                .collect();
            let _ = writeln!(s, "dynamic_batching {{");
            if !sizes.is_empty() {
                let _ = writeln!(s, "  preferred_batch_size: [ {} ]", sizes.join(", "));
            }
            if let Some(us) = d.max_queue_delay_microseconds {
                let _ = writeln!(s, "  max_queue_delay_microseconds: {us}");
            }
            let _ = writeln!(s, "}}");
        }
        s
    }

    /// Reads `config.pbtxt` text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let fields = Parser::new(text)?.message(None)?;
        let mut c = TritonConfig::default();
        for (line, name, value) in fields {
            let err = |message: String| ConfigError { line, message };
            match name.as_str() {
                "name" => c.name = Some(value.text(&name).map_err(err)?),
                "platform" => c.platform = Some(value.text(&name).map_err(err)?),
                "backend" => c.backend = Some(value.text(&name).map_err(err)?),
                "max_batch_size" => c.max_batch_size = Some(value.count(&name).map_err(err)?),
                "input" | "output" => {
                    for m in value.messages(&name).map_err(err)? {
                        let t = tensor(m).map_err(err)?;
                        if name == "input" {
                            c.input.push(t);
                        } else {
                            c.output.push(t);
                        }
                    }
                }
                "dynamic_batching" => {
                    let mut d = DynamicBatching::default();
                    for m in value.messages(&name).map_err(err)? {
                        for (line, f, v) in m {
                            let err = |message: String| ConfigError { line, message };
                            match f.as_str() {
                                "preferred_batch_size" => {
                                    for x in v.scalars(&f).map_err(err)? {
                                        d.preferred_batch_size.push(x.count(&f).map_err(err)?);
                                    }
                                }
                                "max_queue_delay_microseconds" => {
                                    d.max_queue_delay_microseconds =
                                        Some(v.count(&f).map_err(err)? as u64);
                                }
                                _ => {}
                            }
                        }
                    }
                    c.dynamic_batching = Some(d);
                }
                "instance_group" => {
                    for m in value.messages(&name).map_err(err)? {
                        let mut count = 1;
                        for (line, f, v) in m {
                            if f == "count" {
                                count = v
                                    .count(&f)
                                    .map_err(|message| ConfigError { line, message })?;
                            }
                        }
                        *c.instance_count.get_or_insert(0) += count;
                    }
                }
                "version_policy" => {
                    c.version_policy = version_policy(value.messages(&name).map_err(err)?, line)?;
                }
                _ => {}
            }
        }
        Ok(c)
    }
}

fn tensor(fields: Vec<Field>) -> Result<TensorConfig, String> {
    let mut t = TensorConfig {
        name: String::new(),
        data_type: String::new(),
        dims: vec![],
    };
    for (_, f, v) in fields {
        match f.as_str() {
            "name" => t.name = v.text(&f)?,
            "data_type" => t.data_type = v.text(&f)?,
            "dims" => {
                for d in v.scalars(&f)? {
                    t.dims.push(d.int(&f)?);
                }
            }
            _ => {}
        }
    }
    if t.name.is_empty() {
        return Err("a tensor without a name".into());
    }
    Ok(t)
}

fn version_policy(messages: Vec<Vec<Field>>, line: usize) -> Result<VersionPolicy, ConfigError> {
    let err = |message: String| ConfigError { line, message };
    let mut policy = VersionPolicy::Latest(1);
    for m in messages {
        for (line, kind, v) in m {
            let err = |message: String| ConfigError { line, message };
            let inner: Vec<Field> = v
                .messages(&kind)
                .map_err(err)?
                .into_iter()
                .flatten()
                .collect();
            policy = match kind.as_str() {
                "all" => VersionPolicy::All,
                "latest" => {
                    let mut n = 1;
                    for (line, f, v) in inner {
                        if f == "num_versions" {
                            n = v
                                .count(&f)
                                .map_err(|message| ConfigError { line, message })?;
                        }
                    }
                    VersionPolicy::Latest(n)
                }
                "specific" => {
                    let mut list = vec![];
                    for (line, f, v) in inner {
                        if f == "versions" {
                            for x in v
                                .scalars(&f)
                                .map_err(|message| ConfigError { line, message })?
                            {
                                list.push(
                                    x.count(&f)
                                        .map_err(|message| ConfigError { line, message })?
                                        as u64,
                                );
                            }
                        }
                    }
                    VersionPolicy::Specific(list)
                }
                other => return Err(err(format!("unknown version_policy `{other}`"))),
            };
        }
    }
    if policy == VersionPolicy::Latest(0) {
        return Err(err(
            "version_policy latest needs num_versions of at least 1".into(),
        ));
    }
    Ok(policy)
}

/// A field: its line, name and value.
type Field = (usize, String, Value);

/// A text-format value.
#[derive(Debug, Clone)]
enum Value {
    /// A number, an enum name or a string (unquoted).
    Scalar(String),
    /// A nested message.
    Message(Vec<Field>),
    /// `[ ... ]` of scalars or messages.
    List(Vec<Value>),
}

impl Value {
    fn text(&self, field: &str) -> Result<String, String> {
        match self {
            Value::Scalar(s) => Ok(s.clone()),
            _ => Err(format!("`{field}` must be a single value")),
        }
    }

    fn int(&self, field: &str) -> Result<i64, String> {
        self.text(field)?
            .parse()
            .map_err(|_| format!("`{field}` must be an integer"))
    }

    fn count(&self, field: &str) -> Result<usize, String> {
        usize::try_from(self.int(field)?).map_err(|_| format!("`{field}` must not be negative"))
    }

    /// The scalars of a list, or the one scalar.
    fn scalars(&self, field: &str) -> Result<Vec<Value>, String> {
        match self {
            Value::List(items) => Ok(items.clone()),
            Value::Scalar(_) => Ok(vec![self.clone()]),
            Value::Message(_) => Err(format!("`{field}` must be a value or a list of values")),
        }
    }

    /// The messages of a list, or the one message.
    fn messages(&self, field: &str) -> Result<Vec<Vec<Field>>, String> {
        let one = |v: &Value| match v {
            Value::Message(m) => Ok(m.clone()),
            _ => Err(format!("`{field}` must be a message {{ ... }}")),
        };
        match self {
            Value::List(items) => items.iter().map(one).collect(),
            v => Ok(vec![one(v)?]),
        }
    }
}

/// A token and its line.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Str(String),
    Punct(char),
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    at: usize,
}

/// Deepest nesting accepted: configs are shallow, and a hostile file must
/// not exhaust the stack.
const MAX_DEPTH: usize = 32;

impl Parser {
    fn new(text: &str) -> Result<Self, ConfigError> {
        let mut tokens = vec![];
        let mut line = 1;
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\n' => line += 1,
                c if c.is_whitespace() => {}
                '#' => {
                    while chars.peek().is_some_and(|c| *c != '\n') {
                        chars.next();
                    }
                }
                '"' | '\'' => {
                    let mut s = String::new();
                    loop {
                        match chars.next() {
                            None | Some('\n') => {
                                return Err(ConfigError {
                                    line,
                                    message: "a string is not closed".into(),
                                });
                            }
                            Some('\\') => match chars.next() {
                                Some('n') => s.push('\n'),
                                Some(e) => s.push(e),
                                None => {}
                            },
                            Some(q) if q == c => break,
                            Some(o) => s.push(o),
                        }
                    }
                    tokens.push((line, Token::Str(s)));
                }
                ':' | '{' | '}' | '[' | ']' | ',' | ';' | '<' | '>' => {
                    tokens.push((line, Token::Punct(c)));
                }
                c if c.is_alphanumeric() || "_-+.".contains(c) => {
                    let mut s = String::from(c);
                    while let Some(&n) = chars.peek() {
                        if n.is_alphanumeric() || "_-+.".contains(n) {
                            s.push(n);
                            chars.next();
                        } else {
                            break;
                        }
                    }
                    tokens.push((line, Token::Word(s)));
                }
                other => {
                    return Err(ConfigError {
                        line,
                        message: format!("unexpected character {other:?}"),
                    });
                }
            }
        }
        Ok(Parser { tokens, at: 0 })
    }

    fn line(&self) -> usize {
        self.tokens
            .get(self.at)
            .or(self.tokens.last())
            .map_or(1, |t| t.0)
    }

    fn fail<T>(&self, message: impl Into<String>) -> Result<T, ConfigError> {
        Err(ConfigError {
            line: self.line(),
            message: message.into(),
        })
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at).map(|t| &t.1)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).map(|t| t.1.clone());
        self.at += 1;
        t
    }

    /// Fields until `close` (or the end, at top level).
    fn message(&mut self, close: Option<char>) -> Result<Vec<Field>, ConfigError> {
        self.message_at(close, 0)
    }

    fn message_at(&mut self, close: Option<char>, depth: usize) -> Result<Vec<Field>, ConfigError> {
        if depth > MAX_DEPTH {
            return self.fail(format!("nested deeper than {MAX_DEPTH} levels"));
        }
        let mut fields = vec![];
        loop {
            match (self.peek(), close) {
                (None, None) => return Ok(fields),
                (None, Some(c)) => return self.fail(format!("missing `{c}`")),
                (Some(Token::Punct(p)), Some(c)) if *p == c => {
                    self.next();
                    return Ok(fields);
                }
                (Some(Token::Punct(',' | ';')), _) => {
                    self.next();
                }
                (Some(Token::Word(_)), _) => {
                    let line = self.line();
                    let Some(Token::Word(name)) = self.next() else {
                        unreachable!("peeked a word")
                    };
                    if self.peek() == Some(&Token::Punct(':')) {
                        self.next();
                    }
                    let value = self.value(depth)?;
                    fields.push((line, name, value));
                }
                (Some(t), _) => return self.fail(format!("expected a field name, found {t:?}")),
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, ConfigError> {
        match self.next() {
            Some(Token::Word(w)) => Ok(Value::Scalar(w)),
            Some(Token::Str(s)) => {
                // Adjacent strings concatenate.
                let mut s = s;
                while let Some(Token::Str(more)) = self.peek().cloned() {
                    self.next();
                    s.push_str(&more);
                }
                Ok(Value::Scalar(s))
            }
            Some(Token::Punct('{')) => Ok(Value::Message(self.message_at(Some('}'), depth + 1)?)),
            Some(Token::Punct('<')) => Ok(Value::Message(self.message_at(Some('>'), depth + 1)?)),
            Some(Token::Punct('[')) => {
                let mut items = vec![];
                loop {
                    match self.peek() {
                        Some(Token::Punct(']')) => {
                            self.next();
                            return Ok(Value::List(items));
                        }
                        Some(Token::Punct(',')) => {
                            self.next();
                        }
                        None => return self.fail("missing `]`"),
                        _ => items.push(self.value(depth + 1)?),
                    }
                }
            }
            Some(t) => self.fail(format!("expected a value, found {t:?}")),
            None => self.fail("expected a value, found the end"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> TritonConfig {
        TritonConfig {
            name: Some("rir".into()),
            platform: Some("onnxruntime_onnx".into()),
            backend: None,
            max_batch_size: Some(64),
            input: vec![TensorConfig {
                name: "image".into(),
                data_type: "TYPE_FP32".into(),
                dims: vec![1, 28, 28],
            }],
            output: vec![
                TensorConfig {
                    name: "logits".into(),
                    data_type: "TYPE_FP32".into(),
                    dims: vec![10],
                },
                TensorConfig {
                    name: "probabilities".into(),
                    data_type: "TYPE_FP32".into(),
                    dims: vec![10],
                },
            ],
            dynamic_batching: Some(DynamicBatching {
                preferred_batch_size: vec![1, 2, 4, 8, 16, 32, 64],
                max_queue_delay_microseconds: Some(0),
            }),
            instance_count: Some(2),
            version_policy: VersionPolicy::Specific(vec![1, 3]),
        }
    }

    #[test]
    fn what_is_written_reads_back() {
        let c = example();
        assert_eq!(TritonConfig::parse(&c.to_pbtxt()).unwrap(), c);
        for p in [
            VersionPolicy::All,
            VersionPolicy::Latest(1),
            VersionPolicy::Latest(3),
        ] {
            let c = TritonConfig {
                version_policy: p,
                ..example()
            };
            assert_eq!(TritonConfig::parse(&c.to_pbtxt()).unwrap(), c);
        }
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
        "#;
        let c = TritonConfig::parse(text).unwrap();
        assert_eq!(c.name.as_deref(), Some("densenet_onnx"));
        assert_eq!(c.max_batch_size, Some(8));
        assert_eq!(c.input[0].dims, vec![3, 224, 224]);
        assert_eq!(c.output[0].dims, vec![1000]);
        assert_eq!(c.instance_count, Some(3));
        let d = c.dynamic_batching.unwrap();
        assert_eq!(d.preferred_batch_size, vec![4, 8]);
        assert_eq!(d.max_queue_delay_microseconds, Some(100));
        assert_eq!(c.version_policy, VersionPolicy::Latest(2));
        assert_eq!(c.version_policy.select(&[1, 2, 5]), vec![2, 5]);
        assert_eq!(TritonConfig::parse("").unwrap(), TritonConfig::default());
    }

    #[test]
    fn bad_configs_say_which_line() {
        let cases = [
            ("name: \"x\"\nmax_batch_size: -1", 2, "negative"),
            ("name: \"x\nplatform: \"y\"", 1, "not closed"),
            ("input [ { name: \"a\" }", 1, "missing"),
            ("max_batch_size: { }", 1, "single value"),
            (
                "version_policy: { newest: { } }",
                1,
                "unknown version_policy",
            ),
            ("name = 3", 1, "unexpected character"),
            ("dims: [ 1, 2", 1, "missing `]`"),
        ];
        for (text, line, needle) in cases {
            let e = TritonConfig::parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text}: {e}");
            assert!(e.message.contains(needle), "{text}: {e}");
        }
        let deep = "a { ".repeat(100);
        assert!(
            TritonConfig::parse(&deep)
                .unwrap_err()
                .message
                .contains("deeper")
        );
    }
}
