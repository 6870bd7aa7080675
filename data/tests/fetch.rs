//! Fetching an archive over a real HTTP connection (a loopback server
//! holding a CIFAR archive in the official layout): the md5 checked before
//! anything is unpacked, and what is unpacked loads.

use rir_data::cifar::Flavour;
use rir_data::fetch::{Archive, fetch, fetch_cifar};
use rir_testkit::web::serve_file;

/// A `.tar.gz` of a CIFAR-10 folder as the official archive holds it.
fn cifar_tarball() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    rir_testkit::data::write_cifar(dir.path(), rir_testkit::data::Cifar::Ten, 4, 4, 1).unwrap();
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    tar.append_dir_all(
        Flavour::Ten.folder(),
        dir.path().join(Flavour::Ten.folder()),
    )
    .unwrap();
    tar.into_inner().unwrap().finish().unwrap()
}

fn md5_hex(bytes: &[u8]) -> String {
    use md5::{Digest, Md5};
    hex::encode(Md5::digest(bytes))
}

#[test]
fn a_good_archive_is_unpacked_and_loads_and_a_bad_one_leaves_nothing() {
    let tarball = cifar_tarball();
    let site = serve_file(tarball.clone());
    let dest = tempfile::tempdir().unwrap();
    let good = Archive {
        url: format!("{site}/cifar-10-binary.tar.gz"),
        md5: md5_hex(&tarball),
        bytes: 1,
    };
    let mut seen = 0;
    fetch(&good, dest.path(), &mut |done, total| {
        seen = done;
        assert_eq!(total, tarball.len() as u64, "the server's length");
    })
    .unwrap();
    assert_eq!(seen, tarball.len() as u64);
    let data = rir_data::load(
        rir_data::Source::Cifar(Flavour::Ten),
        &dest.path().join(Flavour::Ten.folder()),
    )
    .unwrap();
    assert_eq!(data.test.len(), 4);

    // The official archive's md5 against other bytes (a mirror serving the
    // wrong file): refused, nothing unpacked, no partial file left.
    let dest = tempfile::tempdir().unwrap();
    let e = fetch_cifar(Flavour::Ten, dest.path(), Some(&site), &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("does not match the published c32a1d4ab5d03f1284b67883e8d87530"),
        "{e}"
    );
    assert!(e.contains(&site), "the address is named: {e}");
    let left: Vec<_> = std::fs::read_dir(dest.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}
