//! PNG files to send: a gradient of any size, grayscale or RGB.

/// A PNG of `w` x `h` with a gradient, RGB or grayscale.
pub fn png(w: u32, h: u32, rgb: bool) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    let written = if rgb {
        image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 8) as u8, (y * 8) as u8, 128]))
            .write_to(&mut out, image::ImageFormat::Png)
    } else {
        image::GrayImage::from_fn(w, h, |x, y| image::Luma([((x + y) * 4) as u8]))
            .write_to(&mut out, image::ImageFormat::Png)
    };
    written.expect("encoding a PNG in memory");
    out.into_inner()
}
