//! Bad requests mixed into a run (`--bad-fraction`): the classes of
//! malformed input a hostile or buggy client sends, each with the gRPC
//! status a KServe v2 server owes it. A soak with a share of them shows that
//! bad input neither crashes the server, nor leaks memory, nor slows the
//! good requests, and that every one of them is answered with its status.
//!
//! The tensor classes are built from the workload's own good request (so
//! they fit any model); the image classes go through rir's `Classify` call
//! and are left out against servers that do not have it.

use std::collections::BTreeMap;

use rir_contract::Datatype;
use rir_data::rng::Rng;
use rir_proto::classify::ClassifyRequest;
use rir_proto::inference::ModelInferRequest;
use serde::Serialize;
use tonic::Code;

/// One gRPC call: a KServe v2 inference or an rir classification.
#[derive(Debug, Clone)]
pub enum Call {
    /// `inference.GRPCInferenceService/ModelInfer`.
    Infer(ModelInferRequest),
    /// `rir.v1.ImageClassifier/Classify`.
    Classify(ClassifyRequest),
}

/// A class of bad request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Hostile {
    /// The item shape with one more column than the model takes (data to match).
    WrongShape,
    /// The right shape with one element of data missing.
    ShortData,
    /// BYTES where the model takes numbers.
    WrongDatatype,
    /// A batch of 2^62 items declared, one item sent.
    HugeShape,
    /// A negative dimension.
    NegativeDim,
    /// An input the model does not have.
    UnknownInput,
    /// A model the server does not serve.
    UnknownModel,
    /// A model name that climbs out of the repository (`../`).
    PathInName,
    /// A version the model does not have.
    UnknownVersion,
    /// Random bytes as an image.
    GarbageImage,
    /// The first half of a valid PNG.
    TruncatedPng,
    /// A PNG of a few hundred bytes whose header declares 20000 x 20000 pixels (a decompression bomb).
    ImageBomb,
    /// A classification of no images.
    NoImages,
}

impl Hostile {
    /// Every class, tensor classes first.
    pub const ALL: [Hostile; 13] = [
        Hostile::WrongShape,
        Hostile::ShortData,
        Hostile::WrongDatatype,
        Hostile::HugeShape,
        Hostile::NegativeDim,
        Hostile::UnknownInput,
        Hostile::UnknownModel,
        Hostile::PathInName,
        Hostile::UnknownVersion,
        Hostile::GarbageImage,
        Hostile::TruncatedPng,
        Hostile::ImageBomb,
        Hostile::NoImages,
    ];

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Hostile::WrongShape => "wrong-shape",
            Hostile::ShortData => "short-data",
            Hostile::WrongDatatype => "wrong-datatype",
            Hostile::HugeShape => "huge-shape",
            Hostile::NegativeDim => "negative-dim",
            Hostile::UnknownInput => "unknown-input",
            Hostile::UnknownModel => "unknown-model",
            Hostile::PathInName => "path-in-name",
            Hostile::UnknownVersion => "unknown-version",
            Hostile::GarbageImage => "garbage-image",
            Hostile::TruncatedPng => "truncated-png",
            Hostile::ImageBomb => "image-bomb",
            Hostile::NoImages => "no-images",
        }
    }

    /// The status the server owes it.
    pub fn expected(self) -> Code {
        match self {
            Hostile::UnknownModel | Hostile::PathInName | Hostile::UnknownVersion => Code::NotFound,
            _ => Code::InvalidArgument,
        }
    }

    /// Whether it goes through `Classify`.
    pub fn is_image(self) -> bool {
        matches!(
            self,
            Hostile::GarbageImage | Hostile::TruncatedPng | Hostile::ImageBomb | Hostile::NoImages
        )
    }

    /// The bad request of this class for `model`: a tensor class is the
    /// good request `good` spoiled (none without one); an image class is a
    /// `Classify` call.
    pub fn call(self, good: Option<&ModelInferRequest>, model: &str) -> Option<Call> {
        if self.is_image() {
            let images = match self {
                Hostile::GarbageImage => {
                    let mut rng = fastrand::Rng::with_seed(7);
                    vec![(0..512).map(|_| rng.u8(..)).collect()]
                }
                Hostile::TruncatedPng => {
                    let png = small_png();
                    vec![png[..png.len() / 2].to_vec()]
                }
                Hostile::ImageBomb => vec![png_header_only(20_000, 20_000)],
                _ => vec![],
            };
            return Some(Call::Classify(ClassifyRequest {
                model_name: model.to_string(),
                model_version: String::new(),
                images,
                top_k: 1,
            }));
        }
        let mut r = good?.clone();
        let t = r.inputs.first_mut()?;
        let elem = r
            .raw_input_contents
            .first()
            .map(|d| d.len())
            .zip(usize::try_from(t.shape.iter().product::<i64>()).ok())
            .and_then(|(bytes, n)| (n > 0).then(|| bytes / n))
            .unwrap_or(4);
        match self {
            Hostile::WrongShape => {
                let last = t.shape.last_mut()?;
                *last += 1;
                let n = usize::try_from(t.shape.iter().product::<i64>()).ok()?;
                r.raw_input_contents = vec![vec![0; n * elem]];
            }
            Hostile::ShortData => {
                let d = r.raw_input_contents.first_mut()?;
                d.truncate(d.len().saturating_sub(elem));
            }
            Hostile::WrongDatatype => t.datatype = Datatype::Bytes.name().into(),
            Hostile::HugeShape => *t.shape.first_mut()? = 1 << 62,
            Hostile::NegativeDim => *t.shape.get_mut(1)? = -3,
            Hostile::UnknownInput => t.name = "no-such-input".into(),
            Hostile::UnknownModel => r.model_name = "no-such-model".into(),
            Hostile::PathInName => r.model_name = format!("../{}", r.model_name),
            Hostile::UnknownVersion => r.model_version = "987654321".into(),
            _ => return None,
        }
        Some(Call::Infer(r))
    }
}

impl std::fmt::Display for Hostile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A valid 28 x 28 grey PNG.
fn small_png() -> Vec<u8> {
    let pixels: Vec<u8> = (0..28 * 28).map(|i| (i % 251) as u8).collect();
    let mut out = Vec::new();
    let encoder = image::codecs::png::PngEncoder::new(&mut out);
    // Encoding a well-formed buffer into memory cannot fail; an empty
    // result would still be a bad image.
    let _ =
        image::ImageEncoder::write_image(encoder, &pixels, 28, 28, image::ExtendedColorType::L8);
    out
}

/// A PNG declaring `width` x `height` 8-bit RGB pixels, with the first
/// rows' data only (zeros, deflated): what a decoder that trusts the header
/// would allocate for, in a few hundred bytes.
fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let chunk = |out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]| {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        out.extend_from_slice(&crc.sum().to_be_bytes());
    };
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    let rows = vec![0u8; 4 * (1 + 3 * width as usize)];
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    // Writing into a Vec cannot fail.
    let _ = std::io::Write::write_all(&mut z, &rows);
    chunk(&mut out, b"IDAT", &z.finish().unwrap_or_default());
    chunk(&mut out, b"IEND", &[]);
    out
}

/// Which requests of a run are bad, and what they are: a fixed share,
/// spread over the classes, chosen by a hash of the request's index (so a
/// run with the same seed sends the same mix).
#[derive(Debug, Clone)]
pub struct Mix {
    fraction: f64,
    seed: u64,
    calls: Vec<(Hostile, Call)>,
}

/// A stateless hash of `x`: the first output of SplitMix64 seeded with it.
fn mix(x: u64) -> u64 {
    Rng::new(x).next_u64()
}

impl Mix {
    /// `fraction` of the requests (0 to 1) bad, drawn from `classes`
    /// (the ones that can be built from `good` for `model`).
    pub fn new(
        fraction: f64,
        seed: u64,
        classes: &[Hostile],
        good: Option<&ModelInferRequest>,
        model: &str,
    ) -> Mix {
        let calls = classes
            .iter()
            .filter_map(|&h| Some((h, h.call(good, model)?)))
            .collect();
        Mix {
            fraction,
            seed,
            calls,
        }
    }

    /// The classes in the mix.
    pub fn classes(&self) -> Vec<Hostile> {
        self.calls.iter().map(|(h, _)| *h).collect()
    }

    /// The same mix without the classes `drop`.
    pub fn without(mut self, drop: &[Hostile]) -> Mix {
        self.calls.retain(|(h, _)| !drop.contains(h));
        self
    }

    /// The bad request that request `i` is, if it is one (request 0, the
    /// probe, never is).
    pub fn pick(&self, i: u64) -> Option<&(Hostile, Call)> {
        if i == 0 || self.calls.is_empty() {
            return None;
        }
        let h = mix(i ^ self.seed.rotate_left(17));
        let unit = (h >> 11) as f64 / (1u64 << 53) as f64;
        (unit < self.fraction).then(|| &self.calls[(mix(h) % self.calls.len() as u64) as usize])
    }
}

/// What the server answered to one class of bad request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct HostileCount {
    /// The status it is owed.
    pub expected: String,
    /// How many were sent and answered.
    pub sent: u64,
    /// How many were answered with `expected`.
    pub as_expected: u64,
    /// The others, by the status they got (`OK` for one that succeeded).
    pub otherwise: BTreeMap<String, u64>,
    /// The first message of an answer other than `expected`.
    pub message: Option<String>,
}

impl HostileCount {
    /// None yet, of a class owed `expected`.
    pub fn owed(expected: Code) -> Self {
        HostileCount {
            expected: rir_client::error::code_name(expected).to_string(),
            ..Default::default()
        }
    }

    /// Answered with another status than the one owed.
    pub fn mismatched(&self) -> u64 {
        self.sent - self.as_expected
    }

    /// Adds another record of the same class.
    pub fn merge(&mut self, o: &HostileCount) {
        if self.expected.is_empty() {
            self.expected.clone_from(&o.expected);
        }
        self.sent += o.sent;
        self.as_expected += o.as_expected;
        for (k, v) in &o.otherwise {
            *self.otherwise.entry(k.clone()).or_default() += v;
        }
        if self.message.is_none() {
            self.message.clone_from(&o.message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rir_proto::inference::model_infer_request::InferInputTensor;

    fn good() -> ModelInferRequest {
        ModelInferRequest {
            model_name: "m".into(),
            inputs: vec![InferInputTensor {
                name: "image".into(),
                datatype: "FP32".into(),
                shape: vec![2, 1, 28, 28],
                ..Default::default()
            }],
            raw_input_contents: vec![vec![0; 2 * 28 * 28 * 4]],
            ..Default::default()
        }
    }

    #[test]
    fn the_mix_sends_its_share_spread_over_every_class() {
        let mix = Mix::new(0.05, 3, &Hostile::ALL, Some(&good()), "m");
        assert_eq!(mix.classes(), Hostile::ALL);
        let mut by: BTreeMap<Hostile, u64> = BTreeMap::new();
        let n = 200_000;
        for i in 0..n {
            if let Some((h, _)) = mix.pick(i) {
                *by.entry(*h).or_default() += 1;
            }
        }
        let total: u64 = by.values().sum();
        let share = total as f64 / n as f64;
        assert!((share - 0.05).abs() < 0.003, "{share}");
        assert_eq!(by.len(), Hostile::ALL.len());
        let each = total as f64 / by.len() as f64;
        assert!(
            by.values().all(|&c| (c as f64 - each).abs() < each * 0.15),
            "{by:?}"
        );
        assert!(mix.pick(0).is_none());
    }

    #[test]
    fn each_tensor_class_spoils_only_what_it_names() {
        let g = good();
        let spoiled = |h: Hostile| match h.call(Some(&g), "m") {
            Some(Call::Infer(r)) => r,
            other => panic!("{h}: {other:?}"),
        };
        let r = spoiled(Hostile::WrongShape);
        assert_eq!(r.inputs[0].shape, [2, 1, 28, 29]);
        assert_eq!(r.raw_input_contents[0].len(), 2 * 28 * 29 * 4);
        let r = spoiled(Hostile::ShortData);
        assert_eq!(r.inputs[0].shape, g.inputs[0].shape);
        assert_eq!(r.raw_input_contents[0].len(), 2 * 28 * 28 * 4 - 4);
        assert_eq!(spoiled(Hostile::HugeShape).inputs[0].shape[0], 1 << 62);
        assert_eq!(spoiled(Hostile::NegativeDim).inputs[0].shape[1], -3);
        assert_eq!(spoiled(Hostile::PathInName).model_name, "../m");
        assert!(Hostile::WrongShape.call(None, "m").is_none());
    }

    #[test]
    fn the_bomb_is_small_and_declares_its_size_in_a_valid_header() {
        let bomb = png_header_only(20_000, 20_000);
        assert!(bomb.len() < 1000, "{}", bomb.len());
        let d = image::ImageReader::new(std::io::Cursor::new(&bomb))
            .with_guessed_format()
            .expect("in memory");
        assert_eq!(
            d.into_dimensions().expect("a valid header"),
            (20_000, 20_000)
        );
        let png = small_png();
        assert!(image::load_from_memory(&png).is_ok());
        assert!(image::load_from_memory(&png[..png.len() / 2]).is_err());
    }
}
