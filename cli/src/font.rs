//! A TrueType font for plotters' text. plotters draws text only with a font
//! it has been given; the DejaVu fonts Debian installs (`fonts-dejavu-core`)
//! are looked for at run time, so no font is embedded in the binaries.

use plotters::style::FontStyle;

/// Places where a sans-serif TrueType font usually lives.
const FONT_PATHS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// Registers the first font found as plotters' "sans-serif" (once per
/// process); false when none is installed.
pub fn register_sans_serif() -> bool {
    static DONE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DONE.get_or_init(|| {
        FONT_PATHS.iter().any(|p| {
            std::fs::read(p).is_ok_and(|bytes| {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
            })
        })
    })
}
