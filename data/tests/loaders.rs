//! The loaders read files in the official formats and reject damaged ones.

use rir_data::cifar::Flavour;
use rir_data::{DataError, Source, load};
use rir_testkit::data as fixtures;

#[test]
fn cifar10_reads_all_batches_and_names() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixtures::write_cifar(tmp.path(), fixtures::Cifar::Ten, 7, 5, 1).unwrap();
    let ds = load(Source::Cifar(Flavour::Ten), &dir).unwrap();
    assert_eq!(ds.train.len(), 35);
    assert_eq!(ds.test.len(), 5);
    assert_eq!(ds.info.class_names.len(), 10);
    assert_eq!(ds.info.class_names[0], "airplane");
    assert_eq!(ds.info.input.channels, 3);
    assert_eq!(ds.train.images.len(), 35 * 3072);
    assert_eq!(ds.info.mean.len(), 3);
}

#[test]
fn cifar100_picks_fine_or_coarse_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixtures::write_cifar(tmp.path(), fixtures::Cifar::Hundred, 40, 10, 2).unwrap();
    let fine = load(Source::Cifar(Flavour::HundredFine), &dir).unwrap();
    let coarse = load(Source::Cifar(Flavour::HundredCoarse), &dir).unwrap();
    assert_eq!(fine.info.class_names.len(), 100);
    assert_eq!(coarse.info.class_names.len(), 20);
    // The fixture writes coarse = fine % 20: the two label sets must agree.
    for (f, c) in fine.train.labels.iter().zip(&coarse.train.labels) {
        assert_eq!(f % 20, *c);
    }
    assert_eq!(fine.train.images, coarse.train.images);
}

#[test]
fn truncated_cifar_batch_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixtures::write_cifar(tmp.path(), fixtures::Cifar::Ten, 3, 3, 1).unwrap();
    let f = dir.join("data_batch_3.bin");
    let len = std::fs::metadata(&f).unwrap().len();
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..len as usize - 100]).unwrap();
    let err = load(Source::Cifar(Flavour::Ten), &dir).unwrap_err();
    assert!(matches!(err, DataError::Truncated { .. }), "{err}");
    assert!(err.to_string().contains("data_batch_3.bin"), "{err}");
}

#[test]
fn out_of_range_cifar_label_is_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixtures::write_cifar(tmp.path(), fixtures::Cifar::Ten, 2, 2, 1).unwrap();
    let f = dir.join("test_batch.bin");
    let mut bytes = std::fs::read(&f).unwrap();
    bytes[3073] = 42;
    std::fs::write(&f, bytes).unwrap();
    let err = load(Source::Cifar(Flavour::Ten), &dir)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("test_batch.bin") && err.contains("label 42"),
        "{err}"
    );
}

#[test]
fn fashion_mnist_reads_gzip_and_raw() {
    for gz in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        fixtures::write_fashion_mnist(tmp.path(), 30, 10, 28, gz, 4).unwrap();
        let ds = load(Source::FashionMnist, tmp.path()).unwrap();
        assert_eq!((ds.train.len(), ds.test.len()), (30, 10));
        assert_eq!(ds.info.input.height, 28);
        assert_eq!(ds.info.class_names[9], "Ankle boot");
    }
}

#[test]
fn truncated_gzip_and_idx_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    fixtures::write_fashion_mnist(tmp.path(), 20, 5, 28, true, 4).unwrap();
    let f = tmp.path().join("train-images-idx3-ubyte.gz");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    let err = load(Source::FashionMnist, tmp.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("train-images-idx3-ubyte.gz"), "{err}");

    let tmp = tempfile::tempdir().unwrap();
    fixtures::write_fashion_mnist(tmp.path(), 20, 5, 28, false, 4).unwrap();
    let f = tmp.path().join("t10k-labels-idx1-ubyte");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() - 2]).unwrap();
    let err = load(Source::FashionMnist, tmp.path()).unwrap_err();
    assert!(matches!(err, DataError::Truncated { .. }), "{err}");
}

#[test]
fn missing_folder_says_what_to_do() {
    let err = load(
        Source::Cifar(Flavour::Ten),
        std::path::Path::new("/nonexistent/x"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("rir-train fetch cifar10"), "{err}");
}

#[test]
fn real_fashion_mnist_when_installed() {
    let dir = std::path::Path::new(rir_data::dataset::FASHION_MNIST_DEBIAN_DIR);
    if !dir.is_dir() {
        eprintln!("skipped: {} absent", dir.display());
        return;
    }
    let ds = load(Source::FashionMnist, dir).unwrap();
    assert_eq!((ds.train.len(), ds.test.len()), (60_000, 10_000));
    // Published Fashion-MNIST statistics: mean 0.2860, std 0.3530.
    assert!(
        (ds.info.mean[0] - 0.2860).abs() < 1e-3,
        "{:?}",
        ds.info.mean
    );
    assert!((ds.info.std[0] - 0.3530).abs() < 1e-3, "{:?}", ds.info.std);
}

#[test]
fn shape_without_reading_matches_what_loading_finds() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sources = vec![];
    for (kind, flavour) in [
        (fixtures::Cifar::Ten, Flavour::Ten),
        (fixtures::Cifar::Hundred, Flavour::HundredFine),
    ] {
        let dir = fixtures::write_cifar(tmp.path(), kind, 2, 2, 3).unwrap();
        sources.push((Source::Cifar(flavour), dir.clone()));
        if flavour == Flavour::HundredFine {
            sources.push((Source::Cifar(Flavour::HundredCoarse), dir));
        }
    }
    let fmnist = tmp.path().join("fmnist");
    fixtures::write_fashion_mnist(&fmnist, 4, 2, 28, false, 3).unwrap();
    sources.push((Source::FashionMnist, fmnist));
    for (source, dir) in sources {
        let ds = load(source, &dir).unwrap();
        let (input, classes) = source.shape();
        assert_eq!(input, ds.info.input, "{}", source.name());
        assert_eq!(classes, ds.info.class_names.len(), "{}", source.name());
    }
}
