//! Turning request tensors and encoded images into the float32 NCHW images
//! a model takes, and outputs back into response tensors. Every rejection
//! says what was wrong, for an INVALID_ARGUMENT status.

use std::borrow::Cow;

use rir_contract::Datatype;

/// A request's images, decoded: `n` images of `C x H x W` floats.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedImages {
    /// `n * C * H * W` floats, NCHW.
    pub data: Vec<f32>,
    /// Number of images.
    pub n: usize,
}

/// Why an input tensor cannot feed the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TensorError {
    /// A dimension below zero.
    #[error("shape {0:?} has a negative dimension")]
    NegativeDimension(Vec<i64>),
    /// Not the model's shape in either accepted layout.
    #[error(
        "input `{name}` has shape {shape:?}; expected [batch, {c}, {h}, {w}] for FP32 or [batch, {h}, {w}, {c}] for UINT8",
        c = chw[0], h = chw[1], w = chw[2]
    )]
    Shape {
        /// The input.
        name: String,
        /// Its shape as sent.
        shape: Vec<i64>,
        /// The model's `[C, H, W]`.
        chw: [usize; 3],
    },
    /// Neither FP32 nor UINT8.
    #[error("input `{name}` has datatype {datatype}; expected FP32 (NCHW) or UINT8 (NHWC)")]
    Datatype {
        /// The input.
        name: String,
        /// Its datatype as sent.
        datatype: String,
    },
    /// A batch of no images.
    #[error("input `{0}` has batch size 0")]
    Empty(String),
    /// More images than the model takes at once.
    #[error("batch of {n} exceeds the model's max batch size {max}")]
    TooMany {
        /// Images in the request.
        n: usize,
        /// The model's max batch size.
        max: usize,
    },
    /// More or fewer values than the shape needs.
    #[error("input `{name}`: {got} {what}, shape {shape:?} of {datatype} needs {need}")]
    Count {
        /// The input.
        name: String,
        /// What was counted (`FP32 values`, `bytes of raw contents`).
        what: &'static str,
        /// How many there were.
        got: usize,
        /// How many the shape needs.
        need: usize,
        /// The shape.
        shape: Vec<i64>,
        /// The datatype.
        datatype: String,
    },
    /// A UINT8 value above 255.
    #[error("input `{name}`: UINT8 value {value} out of range")]
    Range {
        /// The input.
        name: String,
        /// The value.
        value: u32,
    },
    /// Typed values of another datatype than the tensor's.
    #[error("input `{name}`: its values are not of its datatype {datatype}")]
    Contents {
        /// The input.
        name: String,
        /// The declared datatype.
        datatype: String,
    },
    /// NaN or infinite values, refused by `--reject-nonfinite`.
    #[error("input `{0}` contains NaN or infinite values")]
    NonFinite(String),
}

fn dims_of(shape: &[i64]) -> Result<Vec<usize>, TensorError> {
    shape
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| TensorError::NegativeDimension(shape.to_vec())))
        .collect()
}

/// One input tensor as a front end received it, before any check: the
/// gRPC and the HTTP handlers both build one, and [`decode_input`] holds
/// the rules.
#[derive(Debug, Clone)]
pub struct TensorInput<'a> {
    /// Input name.
    pub name: &'a str,
    /// KServe datatype name (`FP32`, `UINT8`, ...).
    pub datatype: &'a str,
    /// Shape as sent, batch first.
    pub shape: &'a [i64],
    /// The values.
    pub data: TensorData<'a>,
}

/// The values of an input tensor in the form its protocol carried them.
#[derive(Debug, Clone)]
pub enum TensorData<'a> {
    /// Little-endian bytes (gRPC raw contents, HTTP binary data).
    Raw(&'a [u8]),
    /// Typed floats (gRPC `fp32_contents`, JSON numbers).
    Fp32(Cow<'a, [f32]>),
    /// Typed unsigned integers (gRPC `uint_contents`, JSON integers).
    Uint(Cow<'a, [u32]>),
}

/// Reads one input tensor: FP32 `[n, C, H, W]`, or UINT8 `[n, H, W, C]`
/// (raw pixels, converted to [0, 1] and NCHW here), from raw bytes or
/// typed values. NaN and infinite values pass, as in Triton (the outputs
/// say what the model makes of them), unless `reject_nonfinite`.
pub fn decode_input(
    t: &TensorInput<'_>,
    chw: [usize; 3],
    max_batch: usize,
    reject_nonfinite: bool,
) -> Result<DecodedImages, TensorError> {
    let (datatype, n) = layout(t, chw)?;
    if n == 0 {
        return Err(TensorError::Empty(t.name.to_string()));
    }
    if n > max_batch {
        return Err(TensorError::TooMany { n, max: max_batch });
    }
    let [c, h, w] = chw;
    let data = values(t, datatype, n * c * h * w, |pixels| {
        nhwc_to_nchw(pixels, n, chw)
    })?;
    if reject_nonfinite && data.iter().any(|v: &f32| !v.is_finite()) {
        return Err(TensorError::NonFinite(t.name.to_string()));
    }
    Ok(DecodedImages { data, n })
}

/// The tensor's datatype and batch size, once its shape is the model's in
/// the layout of its datatype.
fn layout(t: &TensorInput<'_>, [c, h, w]: [usize; 3]) -> Result<(Datatype, usize), TensorError> {
    let dims = dims_of(t.shape)?;
    let datatype = Datatype::from_name(t.datatype);
    let (n, fits) = match (datatype, dims.as_slice()) {
        (Some(Datatype::Fp32), [n, c2, h2, w2]) => (*n, [*c2, *h2, *w2] == [c, h, w]),
        (Some(Datatype::Uint8), [n, h2, w2, c2]) => (*n, [*h2, *w2, *c2] == [h, w, c]),
        (Some(Datatype::Fp32 | Datatype::Uint8), _) => (0, false),
        _ => {
            return Err(TensorError::Datatype {
                name: t.name.to_string(),
                datatype: t.datatype.to_string(),
            });
        }
    };
    match (datatype, fits) {
        (Some(d), true) => Ok((d, n)),
        _ => Err(TensorError::Shape {
            name: t.name.to_string(),
            shape: t.shape.to_vec(),
            chw: [c, h, w],
        }),
    }
}

/// The `count` values of the tensor as floats: FP32 as they are, UINT8
/// pixels through `pixels_to_floats`.
fn values(
    t: &TensorInput<'_>,
    datatype: Datatype,
    count: usize,
    pixels_to_floats: impl Fn(&[u8]) -> Vec<f32>,
) -> Result<Vec<f32>, TensorError> {
    let wrong_count = |what: &'static str, got: usize, need: usize| TensorError::Count {
        name: t.name.to_string(),
        what,
        got,
        need,
        shape: t.shape.to_vec(),
        datatype: t.datatype.to_string(),
    };
    match (datatype, &t.data) {
        (Datatype::Fp32, TensorData::Raw(bytes)) if bytes.len() != count * 4 => {
            Err(wrong_count("bytes of raw contents", bytes.len(), count * 4))
        }
        (Datatype::Fp32, TensorData::Raw(bytes)) => Ok(rir_proto::raw::f32s(bytes)),
        (Datatype::Fp32, TensorData::Fp32(v)) if v.len() != count => {
            Err(wrong_count("FP32 values", v.len(), count))
        }
        (Datatype::Fp32, TensorData::Fp32(v)) => Ok(v.to_vec()),
        (Datatype::Uint8, TensorData::Raw(bytes)) if bytes.len() != count => {
            Err(wrong_count("bytes of raw contents", bytes.len(), count))
        }
        (Datatype::Uint8, TensorData::Raw(bytes)) => Ok(pixels_to_floats(bytes)),
        (Datatype::Uint8, TensorData::Uint(v)) if v.len() != count => {
            Err(wrong_count("UINT8 values", v.len(), count))
        }
        (Datatype::Uint8, TensorData::Uint(v)) => {
            let pixels = v
                .iter()
                .map(|&value| {
                    u8::try_from(value).map_err(|_| TensorError::Range {
                        name: t.name.to_string(),
                        value,
                    })
                })
                .collect::<Result<Vec<u8>, _>>()?;
            Ok(pixels_to_floats(&pixels))
        }
        _ => Err(TensorError::Contents {
            name: t.name.to_string(),
            datatype: t.datatype.to_string(),
        }),
    }
}

/// `n` HWC u8 images to CHW floats in [0, 1].
pub(crate) fn nhwc_to_nchw(pixels: &[u8], n: usize, [c, h, w]: [usize; 3]) -> Vec<f32> {
    let mut out = vec![0f32; n * c * h * w];
    for i in 0..n {
        for y in 0..h {
            for x in 0..w {
                for ch in 0..c {
                    out[((i * c + ch) * h + y) * w + x] =
                        pixels[((i * h + y) * w + x) * c + ch] as f32 / 255.0;
                }
            }
        }
    }
    out
}

/// Bounds on one encoded image, checked before any pixel is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// Most pixels (width x height) an image may declare.
    pub max_pixels: u64,
    /// Most bytes of one encoded image.
    pub max_bytes: usize,
}

impl Default for ImageLimits {
    /// 16.8 megapixels (4096 x 4096) and 16 MiB: any photo a camera or
    /// phone takes, far below PIL's bomb limit of about 89 megapixels.
    fn default() -> Self {
        ImageLimits {
            max_pixels: 4096 * 4096,
            max_bytes: 16 << 20,
        }
    }
}

/// Why an encoded image cannot feed the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// More bytes than `--max-image-bytes`.
    #[error("the image is {bytes} bytes, over the limit of {limit} (--max-image-bytes)")]
    TooLarge {
        /// Its size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// No image format recognized.
    #[error("not a PNG or JPEG image: {0}")]
    NotAnImage(String),
    /// An image format other than PNG and JPEG.
    #[error("{0:?} images are not accepted; send PNG or JPEG")]
    Format(image::ImageFormat),
    /// The header cannot be read.
    #[error("cannot read the {format:?} header: {detail}")]
    Header {
        /// The format.
        format: image::ImageFormat,
        /// What the decoder said.
        detail: String,
    },
    /// More declared pixels than `--max-image-pixels`.
    #[error(
        "the image declares {width} x {height} = {} pixels, over the limit of {limit} (--max-image-pixels)",
        u64::from(*width) * u64::from(*height)
    )]
    TooManyPixels {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// The limit.
        limit: u64,
    },
    /// The pixels cannot be decoded.
    #[error("cannot decode the {format:?} image: {detail}")]
    Decode {
        /// The format.
        format: image::ImageFormat,
        /// What the decoder said.
        detail: String,
    },
    /// A model whose input has neither 1 nor 3 channels.
    #[error("the model takes {0} channels; images can only feed 1 or 3")]
    Channels(usize),
}

/// Encoded images up to this size whose header declares at most
/// [`SMALL_IMAGE_PIXELS`] decode in tens of microseconds: less than waking
/// a blocking-pool thread for them costs.
pub(crate) const SMALL_IMAGE_BYTES: usize = 64 << 10;

/// Most pixels (128 x 128) an image may declare to be decoded in place.
pub(crate) const SMALL_IMAGE_PIXELS: u64 = 128 * 128;

/// What an encoded image's header declares, read and checked against the
/// limits before any pixel is decoded; it is read once per image and
/// decides both where the image is decoded and what the decoder is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHeader {
    format: image::ImageFormat,
    width: u32,
    height: u32,
    bytes: usize,
}

impl ImageHeader {
    /// Reads the header of PNG or JPEG `bytes`: INVALID_ARGUMENT reasons
    /// for too many bytes, another format, an unreadable header or too many
    /// declared pixels.
    pub fn read(bytes: &[u8], limits: &ImageLimits) -> Result<Self, ImageError> {
        if bytes.len() > limits.max_bytes {
            return Err(ImageError::TooLarge {
                bytes: bytes.len(),
                limit: limits.max_bytes,
            });
        }
        let format =
            image::guess_format(bytes).map_err(|e| ImageError::NotAnImage(e.to_string()))?;
        if !matches!(format, image::ImageFormat::Png | image::ImageFormat::Jpeg) {
            return Err(ImageError::Format(format));
        }
        let (width, height) = image::ImageReader::with_format(std::io::Cursor::new(bytes), format)
            .into_dimensions()
            .map_err(|e| ImageError::Header {
                format,
                detail: e.to_string(),
            })?;
        let header = ImageHeader {
            format,
            width,
            height,
            bytes: bytes.len(),
        };
        if header.pixels() > limits.max_pixels {
            return Err(ImageError::TooManyPixels {
                width,
                height,
                limit: limits.max_pixels,
            });
        }
        Ok(header)
    }

    /// Width x height as declared.
    pub(crate) fn pixels(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }

    /// Small enough to decode on the calling thread: at most
    /// [`SMALL_IMAGE_BYTES`], declaring at most [`SMALL_IMAGE_PIXELS`].
    pub fn is_small(&self) -> bool {
        self.bytes <= SMALL_IMAGE_BYTES && self.pixels() <= SMALL_IMAGE_PIXELS
    }

    /// Decodes `bytes`, the image this header was read from, into CHW
    /// floats in [0, 1] of the model's channels (grayscale or RGB) and size
    /// (resized with a triangle filter when the image is another size). The
    /// decoder is held to the declared dimensions, so a small file that
    /// inflates to gigapixels (a decompression bomb) costs only the header
    /// read.
    pub(crate) fn decode(
        &self,
        bytes: &[u8],
        [c, h, w]: [usize; 3],
    ) -> Result<Vec<f32>, ImageError> {
        let format = self.format;
        let mut decoder_limits = image::Limits::default();
        decoder_limits.max_image_width = Some(self.width);
        decoder_limits.max_image_height = Some(self.height);
        // RGBA at 16 bits per channel is the largest buffer a PNG decodes to.
        decoder_limits.max_alloc = Some(self.pixels().saturating_mul(8).max(1 << 20));
        let mut r = image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
        r.limits(decoder_limits);
        let img = r.decode().map_err(|e| ImageError::Decode {
            format,
            detail: e.to_string(),
        })?;
        let img = if (img.width() as usize, img.height() as usize) != (w, h) {
            img.resize_exact(w as u32, h as u32, image::imageops::FilterType::Triangle)
        } else {
            img
        };
        let pixels: Vec<u8> = match c {
            1 => img.to_luma8().into_raw(),
            3 => img.to_rgb8().into_raw(),
            _ => return Err(ImageError::Channels(c)),
        };
        Ok(nhwc_to_nchw(&pixels, 1, [c, h, w]))
    }
}

/// Decodes PNG or JPEG bytes into CHW floats of the model's channels and
/// size: [`ImageHeader::read`] against `limits`, then
/// [`ImageHeader::decode`].
pub fn decode_image(
    bytes: &[u8],
    chw: [usize; 3],
    limits: &ImageLimits,
) -> Result<Vec<f32>, ImageError> {
    ImageHeader::read(bytes, limits)?.decode(bytes, chw)
}

/// BYTES elements in Triton's raw layout: each a 4-byte little-endian length, then the bytes.
pub(crate) fn bytes_raw(items: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for i in items {
        out.extend_from_slice(&(i.len() as u32).to_le_bytes());
        out.extend_from_slice(i);
    }
    out
}

/// The classification extension: for each of the `n` rows of `values`
/// (`k` wide), the `top` best as `"value:index:label"` (label omitted when unknown).
pub(crate) fn classification(
    values: &[f32],
    k: usize,
    top: usize,
    labels: &[String],
) -> Vec<Vec<u8>> {
    let mut out = vec![];
    for row in values.chunks_exact(k) {
        for (i, v) in top_k(row, top) {
            let s = match labels.get(i) {
                Some(l) => format!("{v:.6}:{i}:{l}"),
                None => format!("{v:.6}:{i}"),
            };
            out.push(s.into_bytes());
        }
    }
    out
}

/// Indices and values of the `k` largest entries, largest first.
pub(crate) fn top_k(row: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut idx: Vec<(usize, f32)> = row.iter().copied().enumerate().collect();
    idx.sort_by(|a, b| b.1.total_cmp(&a.1));
    idx.truncate(k.min(row.len()));
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nhwc_transposes() {
        // One 1x2 RGB image: pixels (r,g,b) = (0, 51, 102), (153, 204, 255).
        let out = nhwc_to_nchw(&[0, 51, 102, 153, 204, 255], 1, [3, 1, 2]);
        let want = [0.0, 0.6, 0.2, 0.8, 0.4, 1.0];
        assert_eq!(out.len(), want.len(), "{out:?}");
        for (a, b) in out.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{out:?}");
        }
    }

    fn png(w: u32, h: u32) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        image::GrayImage::from_fn(w, h, |x, y| image::Luma([(x * 3 + y) as u8]))
            .write_to(&mut out, image::ImageFormat::Png)
            .unwrap();
        out.into_inner()
    }

    /// Whether `bytes` would decode in place: a readable header that is small.
    fn is_small_image(bytes: &[u8]) -> bool {
        ImageHeader::read(bytes, &ImageLimits::default()).is_ok_and(|h| h.is_small())
    }

    #[test]
    fn only_small_images_decode_in_place() {
        assert!(is_small_image(&png(28, 28)));
        assert!(is_small_image(&png(128, 128)));
        assert!(!is_small_image(&png(129, 128)));
        // A tiny file whose header claims 10,000 columns (or cannot be read) is not small.
        let mut bomb = png(4, 4);
        bomb[16..20].copy_from_slice(&10_000u32.to_be_bytes());
        assert!(!is_small_image(&bomb));
        assert!(!is_small_image(b"not an image"));
        assert!(!is_small_image(&[]));
    }

    #[test]
    fn classification_strings_follow_triton() {
        let s = classification(
            &[0.1, 0.7, 0.2],
            3,
            2,
            &["a".into(), "b".into(), "c".into()],
        );
        assert_eq!(s, vec![b"0.700000:1:b".to_vec(), b"0.200000:2:c".to_vec()]);
        assert_eq!(bytes_raw(&[b"ab".to_vec()]), vec![2, 0, 0, 0, b'a', b'b']);
    }
}
