//! A TrueType font for plotters' text. plotters draws text only with a font
//! it has been given, so one is embedded in the binaries: DejaVu Sans
//! (`figures/fonts/`, Bitstream Vera licence, `DejaVuSans-LICENSE.txt`). Plots
//! never depend on the fonts a machine happens to have.

use plotters::style::FontStyle;

/// DejaVu Sans, embedded.
const DEJAVU_SANS: &[u8] = include_bytes!("../fonts/DejaVuSans.ttf");

/// Registers the embedded font as plotters' "sans-serif" (once per
/// process); false only if plotters refuses it.
pub fn register_sans_serif() -> bool {
    static DONE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DONE.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, DEJAVU_SANS).is_ok()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_embedded_font_registers() {
        assert!(super::register_sans_serif());
    }
}
