//! Property-based fuzzing of every reader of outside input: the tensor
//! decoder, the image decoder, the repository scanner, `config.pbtxt`
//! parsing, the checkpoint loader and ONNX model reading in rir-infer. Each
//! gets arbitrary bytes and mutations of a valid input (bit flips, byte
//! overwrites, truncation). The property: it never panics, and it allocates
//! at most a stated bound while it runs (a counting allocator in this test
//! binary measures each call's peak), so a length field that claims 2^60
//! bytes costs nothing.
//!
//! `PROPTEST_CASES` sets the cases per property: CI runs the defaults below;
//! README gives the command and the figures of the long run.

use std::alloc::{GlobalAlloc, Layout, System};
use std::borrow::Cow;
use std::cell::Cell;
use std::path::Path;
use std::sync::OnceLock;

use proptest::prelude::*;
use rir_server::tensors::{
    ImageHeader, ImageLimits, TensorData, TensorInput, decode_image, decode_input,
};

/// Counts the bytes live on each thread and their peak.
struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn track(grow: usize, shrink: usize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get().saturating_add(grow).saturating_sub(shrink);
        live.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counters only add and subtract sizes in thread-locals that never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            track(l.size(), 0);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            track(l.size(), 0);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        track(0, l.size());
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            track(new, l.size());
        }
        q
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// What `f` allocated at its peak, beyond what was live before it.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let out = f();
    (out, PEAK.with(Cell::get).saturating_sub(base))
}

const MIB: usize = 1 << 20;

fn config(default_cases: u32) -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = default_cases;
    }
    c
}

/// A valid input with up to 8 mutations: flips, overwrites, a truncation.
fn mutated(valid: &'static [u8]) -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(
            (any::<prop::sample::Index>(), any::<u8>(), any::<bool>()),
            0..8,
        ),
        prop::option::of(any::<prop::sample::Index>()),
    )
        .prop_map(move |(edits, cut)| {
            let mut b = valid.to_vec();
            for (at, v, flip) in edits {
                if b.is_empty() {
                    break;
                }
                let i = at.index(b.len());
                b[i] = if flip { b[i] ^ (1 << (v % 8)) } else { v };
            }
            if let Some(c) = cut {
                b.truncate(c.index(b.len() + 1));
            }
            b
        })
}

fn bytes_or_mutated(valid: &'static [u8], max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..max),
        mutated(valid),
        mutated(valid)
    ]
}

fn png() -> &'static [u8] {
    static PNG: OnceLock<Vec<u8>> = OnceLock::new();
    PNG.get_or_init(|| {
        let img = image::GrayImage::from_fn(28, 28, |x, y| image::Luma([(x * 9 + y * 5) as u8]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    })
}

fn jpeg() -> &'static [u8] {
    static JPEG: OnceLock<Vec<u8>> = OnceLock::new();
    JPEG.get_or_init(|| {
        let img =
            image::RgbImage::from_fn(32, 24, |x, y| image::Rgb([x as u8 * 7, y as u8 * 9, 80]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
        out.into_inner()
    })
}

fn default_model() -> &'static [u8] {
    static ONNX: OnceLock<Vec<u8>> = OnceLock::new();
    ONNX.get_or_init(|| {
        let p =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/rir-fashion-mnist/1/model.onnx");
        std::fs::read(p).unwrap()
    })
}

fn checkpoint() -> &'static [u8] {
    static CK: OnceLock<Vec<u8>> = OnceLock::new();
    CK.get_or_init(|| {
        let spec = rir_arch::preset::build(
            "micro",
            rir_arch::Variant::Rir,
            rir_arch::InputSpec::new(1, 28, 28),
            10,
        )
        .unwrap();
        rir_checkpoint::synthetic::random_checkpoint(&spec, 1)
            .to_bytes()
            .unwrap()
    })
}

const CONFIG: &str = include_str!("../../models/rir-fashion-mnist/config.pbtxt");

fn dim() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(-1i64),
        Just(0),
        1..70i64,
        Just(28),
        Just(1 << 31),
        Just(1 << 62),
        Just(i64::MAX),
        Just(i64::MIN),
        any::<i64>(),
    ]
}

fn datatype() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("FP32".to_string()),
        Just("UINT8".to_string()),
        Just("INT64".to_string()),
        Just("BYTES".to_string()),
        "[A-Z0-9]{0,6}",
    ]
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn the_tensor_decoder_never_panics_and_stays_bounded(
        datatype in datatype(),
        shape in prop::collection::vec(dim(), 0..6),
        which in 0..3u8,
        raw in prop::collection::vec(any::<u8>(), 0..16_384),
        floats in prop::collection::vec(any::<f32>(), 0..4_096),
        uints in prop::collection::vec(any::<u32>(), 0..4_096),
        rgb in any::<bool>(),
        reject in any::<bool>(),
    ) {
        let data = match which {
            0 => TensorData::Raw(&raw),
            1 => TensorData::Fp32(Cow::Borrowed(&floats)),
            _ => TensorData::Uint(Cow::Borrowed(&uints)),
        };
        let chw = if rgb { [3, 32, 32] } else { [1, 28, 28] };
        let t = TensorInput { name: "image", datatype: &datatype, shape: &shape, data };
        let (r, peak) = peak_of(|| decode_input(&t, chw, 64, reject));
        if let Ok(b) = &r {
            prop_assert!(b.n >= 1 && b.n <= 64, "batch {}", b.n);
            prop_assert_eq!(b.data.len(), b.n * chw.iter().product::<usize>());
        }
        // The output (at most 64 images of floats), a converted copy of the
        // input, and change.
        let bound = 2 * 64 * 3 * 32 * 32 * 4 + 4 * raw.len().max(floats.len() * 4) + MIB;
        prop_assert!(peak <= bound, "{peak} bytes for {shape:?} {datatype}");
    }

    #[test]
    fn the_image_decoder_never_panics_and_stays_within_its_limits(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..4_096),
            mutated(png()),
            mutated(jpeg()),
        ],
        rgb in any::<bool>(),
    ) {
        let limits = ImageLimits { max_pixels: 512 * 512, max_bytes: 1 << 20 };
        let chw = if rgb { [3, 32, 32] } else { [1, 28, 28] };
        // Which path a request's image takes is decided on the same bytes.
        let (small, head_peak) =
            peak_of(|| ImageHeader::read(&bytes, &limits).is_ok_and(|h| h.is_small()));
        prop_assert!(head_peak <= MIB, "reading the header took {head_peak} bytes");
        let (r, peak) = peak_of(|| decode_image(&bytes, chw, &limits));
        if small {
            prop_assert!(bytes.len() <= 64 << 10);
        }
        if let Ok(v) = &r {
            prop_assert_eq!(v.len(), chw.iter().product::<usize>());
            prop_assert!(v.iter().all(|x| (0.0..=1.0).contains(x)));
        }
        // Decoding is held to 512 x 512 declared pixels: RGBA bytes, a float
        // copy for resizing, the output.
        prop_assert!(peak <= 512 * 512 * (4 + 16) + 4 * MIB, "{peak} bytes");
    }

    #[test]
    fn config_pbtxt_parsing_never_panics(
        text in prop_oneof![
            any::<String>(),
            mutated(CONFIG.as_bytes()).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
            "[a-z_{}:\\[\\], \"0-9\n#-]{0,400}",
        ]
    ) {
        // The schema's descriptors are decoded once per process, by the first
        // parse: that one is not what a file costs.
        let _ = rir_proto::config_text::parse("");
        let (_, peak) = peak_of(|| rir_proto::config_text::parse(&text));
        prop_assert!(peak <= 64 * text.len() + MIB, "{peak} bytes for {} bytes", text.len());
    }

    #[test]
    fn the_checkpoint_loader_never_panics_and_stays_bounded(
        bytes in bytes_or_mutated(checkpoint(), 4_096)
    ) {
        let (_, peak) = peak_of(|| rir_checkpoint::Checkpoint::from_bytes(&bytes, Path::new("fuzz.safetensors")));
        // A header may claim any length: only what is there is read.
        prop_assert!(peak <= 4 * bytes.len() + MIB, "{peak} bytes for {} bytes", bytes.len());
    }

    #[test]
    fn onnx_model_reading_never_panics_and_stays_bounded(
        bytes in bytes_or_mutated(default_model(), 4_096)
    ) {
        let (_, peak) = peak_of(|| rir_contract::ModelInfo::from_bytes(&bytes));
        prop_assert!(peak <= 8 * bytes.len() + MIB, "{peak} bytes for {} bytes", bytes.len());
    }
}

/// One entry of a generated repository: a path of up to three parts and
/// what the file there holds.
fn entry() -> impl Strategy<Value = (Vec<String>, u8)> {
    let part = prop_oneof![
        Just("m".to_string()),
        Just("1".to_string()),
        Just("02".to_string()),
        Just("0".to_string()),
        Just("-1".to_string()),
        Just("18446744073709551616".to_string()),
        Just("model.onnx".to_string()),
        Just("config.pbtxt".to_string()),
        Just(".hidden".to_string()),
        Just("ü nicode".to_string()),
        "[a-z0-9._-]{1,8}",
    ];
    (prop::collection::vec(part, 1..4), 0..5u8)
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn the_repository_scanner_never_panics(entries in prop::collection::vec(entry(), 0..12)) {
        let dir = tempfile::tempdir().unwrap();
        for (parts, content) in &entries {
            let path = parts.iter().fold(dir.path().to_path_buf(), |p, s| p.join(s));
            if path.exists() {
                continue;
            }
            if let Some(parent) = path.parent()
                && (parent.is_file() || std::fs::create_dir_all(parent).is_err())
            {
                continue;
            }
            let bytes: &[u8] = match content {
                0 => b"",
                1 => b"not onnx",
                2 => CONFIG.as_bytes(),
                3 => default_model(),
                _ => {
                    let _ = std::fs::create_dir_all(&path);
                    continue;
                }
            };
            let _ = std::fs::write(&path, bytes);
        }
        if let Ok(names) = rir_server::scan::model_names(dir.path()) {
            for name in names {
                let found = rir_server::scan::scan_model(dir.path(), &name);
                let _ = rir_server::scan::read_config(dir.path(), &name);
                let _ = rir_server::scan::fingerprints(dir.path(), &name);
                for f in found {
                    prop_assert_eq!(&f.name, &name);
                }
            }
        }
    }
}

#[test]
fn the_counting_allocator_sees_a_call_s_peak() {
    let (_, peak) = peak_of(|| {
        let v = vec![1u8; 10 * MIB];
        std::hint::black_box(&v);
        drop(v);
        std::hint::black_box(vec![0u8; MIB]);
    });
    assert!((10 * MIB..11 * MIB).contains(&peak), "{peak}");
}
