//! Hostile images through Classify: decompression bombs (a small PNG whose
//! header declares 20000 x 20000 pixels) and oversized files are refused
//! from their header and size, with the reason, without decoding, so that
//! many at once leave the memory where it was.

use std::io::Write;

use rir_proto::classify::ClassifyRequest;
use rir_testkit::images::png;
use rir_testserver::server::TestServer;
use tonic::Code;

/// A valid grayscale PNG of `side` x `side` black pixels, compressed as it
/// is written (its inflated size is never held in memory here).
fn png_bomb(side: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend_from_slice(&crc.sum().to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&side.to_be_bytes());
    ihdr.extend_from_slice(&side.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]); // 8-bit gray, no interlace
    chunk(&mut out, b"IHDR", &ihdr);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let row = vec![0u8; side as usize + 1]; // filter byte + pixels
    for _ in 0..side {
        z.write_all(&row).unwrap();
    }
    chunk(&mut out, b"IDAT", &z.finish().unwrap());
    chunk(&mut out, b"IEND", &[]);
    out
}

/// The process's peak resident memory so far, KiB (Linux).
fn peak_rss_kib() -> u64 {
    rir_process::peak_resident_kib("self").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decompression_bombs_are_refused_from_their_header() {
    let bomb = png_bomb(20_000);
    println!("the bomb: {} bytes", bomb.len());
    assert!(
        bomb.len() < 1 << 20,
        "the bomb is small: {} bytes",
        bomb.len()
    );
    // It is a real image: its header reads as 20000 x 20000.
    let dims =
        image::ImageReader::with_format(std::io::Cursor::new(&bomb), image::ImageFormat::Png)
            .into_dimensions()
            .unwrap();
    assert_eq!(dims, (20_000, 20_000));

    let s = TestServer::start(None, &[]).await;
    let before = peak_rss_kib();
    let mut calls = vec![];
    for _ in 0..32 {
        let (mut c, bomb) = (s.classifier().await, bomb.clone());
        calls.push(tokio::spawn(async move {
            c.classify(ClassifyRequest {
                images: vec![bomb],
                ..Default::default()
            })
            .await
        }));
    }
    for call in calls {
        let e = call.await.unwrap().unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(
            e.message().contains("20000 x 20000") && e.message().contains("--max-image-pixels"),
            "{}",
            e.message()
        );
    }
    let grew = peak_rss_kib().saturating_sub(before);
    println!("32 bombs at once: peak RSS grew by {} KiB", grew);
    // Decoding even one would take 400 MB.
    assert!(grew < 64 << 10, "peak RSS grew by {grew} KiB");
    // A normal image still classifies.
    let ok = s
        .classifier()
        .await
        .classify(ClassifyRequest {
            images: vec![png(28, 28, false)],
            ..Default::default()
        })
        .await;
    assert!(ok.is_ok());
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_limits_are_the_servers_options() {
    let flags = ["--max-image-pixels", "900", "--max-image-bytes", "4000"];
    let s = TestServer::start(None, &flags).await;
    let mut c = s.classifier().await;
    let classify = |images: Vec<Vec<u8>>| ClassifyRequest {
        images,
        ..Default::default()
    };
    // 28 x 28 fits; 31 x 31 is over the pixel limit; a noisy 60 x 60 RGB
    // PNG is over the byte limit.
    assert!(c.classify(classify(vec![png(28, 28, false)])).await.is_ok());
    let e = c
        .classify(classify(vec![png(31, 31, false)]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("31 x 31 = 961 pixels"),
        "{}",
        e.message()
    );
    let noisy = {
        let mut out = std::io::Cursor::new(Vec::new());
        image::RgbImage::from_fn(60, 60, |x, y| {
            let v = (x * 7919 + y * 104729) as u8;
            image::Rgb([v, v.wrapping_mul(3), v.wrapping_mul(7)])
        })
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
        out.into_inner()
    };
    assert!(noisy.len() > 4000, "{}", noisy.len());
    let e = c.classify(classify(vec![noisy])).await.unwrap_err();
    assert!(e.message().contains("--max-image-bytes"), "{}", e.message());
    s.shutdown().await.unwrap();
}
