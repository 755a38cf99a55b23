//! Every loader on fixture files the test writes: IDX, CIFAR, image folders (PNG and JPEG, grey
//! and RGB) and text; pixel values, labels and class names checked, and every bad input refused
//! with an error of its kind.

use flate2::write::GzEncoder;
use sgsc_data::{
    load_test, load_train_validation, DataConfig, DataError, DatasetKind, InputOptions, Split,
};
use std::io::Write;
use std::path::{Path, PathBuf};

fn config(dataset: DatasetKind, dir: Option<&Path>, validation_size: usize) -> DataConfig {
    DataConfig {
        dataset,
        dir: dir.map(Path::to_path_buf),
        path: None,
        classes: None,
        sha256: Default::default(),
        validation_size,
        test_size: None,
        block_size: None,
        split_seed: 0,
        input: InputOptions::default(),
    }
}

fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    bytes
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// Pixel `p` of image `i` of the IDX fixture.
fn idx_pixel(i: usize, p: usize) -> u8 {
    ((i * 37 + p * 11) % 256) as u8
}

/// An IDX set of 7x5 images in 3 classes: 12 training images (image files plain, labels
/// gzipped) and 4 test images (both gzipped).
fn write_idx_set(dir: &Path) {
    let images = |n: usize| -> Vec<u8> {
        (0..n)
            .flat_map(|i| (0..35).map(move |p| idx_pixel(i, p)))
            .collect()
    };
    let labels = |n: usize| -> Vec<u8> { (0..n).map(|i| (i % 3) as u8).collect() };
    std::fs::write(
        dir.join("train-images-idx3-ubyte"),
        idx_bytes(&[12, 7, 5], &images(12)),
    )
    .unwrap();
    std::fs::write(
        dir.join("train-labels-idx1-ubyte.gz"),
        gzip(&idx_bytes(&[12], &labels(12))),
    )
    .unwrap();
    std::fs::write(
        dir.join("t10k-images-idx3-ubyte.gz"),
        gzip(&idx_bytes(&[4, 7, 5], &images(4))),
    )
    .unwrap();
    std::fs::write(
        dir.join("t10k-labels-idx1-ubyte.gz"),
        gzip(&idx_bytes(&[4], &labels(4))),
    )
    .unwrap();
}

fn idx_config(dir: &Path) -> DataConfig {
    DataConfig {
        classes: Some(vec!["ant".into(), "bee".into(), "cow".into()]),
        ..config(DatasetKind::Idx, Some(dir), 3)
    }
}

#[test]
fn idx_sets_of_any_side_and_class_count_load_with_measured_normalisation() {
    let dir = tempfile::tempdir().unwrap();
    write_idx_set(dir.path());
    // Relative to a data folder, as `data.dir = "mine"` is.
    let data_dir = tempfile::tempdir().unwrap();
    std::fs::rename(dir.path(), data_dir.path().join("mine")).unwrap();
    let config = idx_config(Path::new("mine"));
    let dirs = vec![PathBuf::from("/nonexistent"), data_dir.path().to_path_buf()];
    let data = load_train_validation(&config, &[1, 7, 5], &dirs).unwrap();
    assert_eq!(data.classes.as_deref().unwrap(), ["ant", "bee", "cow"]);
    let train = data.train.images().unwrap();
    assert_eq!(train.len(), 9);
    assert_eq!(data.validation.len(), 3);
    assert_eq!(train.shape.dims(), vec![1, 7, 5]);
    for (position, &index) in train.source_indices.iter().enumerate() {
        let index = index as usize;
        assert_eq!(train.labels[position] as usize, index % 3);
        let expected: Vec<u8> = (0..35).map(|p| idx_pixel(index, p)).collect();
        assert_eq!(train.image(position), expected.as_slice());
    }
    // The normalisation is the training split's own (validation images left out), by hand.
    let values: Vec<f64> = train
        .source_indices
        .iter()
        .flat_map(|&i| (0..35).map(move |p| idx_pixel(i as usize, p) as f64 / 255.0))
        .collect();
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64;
    let measured = data.normalization().unwrap();
    assert!((measured.mean[0] as f64 - mean).abs() < 1e-6);
    assert!((measured.std[0] as f64 - variance.sqrt()).abs() < 1e-6);
    assert_eq!(
        data.validation.images().unwrap().normalization,
        *measured,
        "validation is normalised as training is"
    );
    let test = load_test(&config, &[1, 7, 5], &dirs, None).unwrap();
    let test = test.images().unwrap();
    assert_eq!(test.labels, vec![0, 1, 2, 0]);
    assert_eq!(test.image(3)[4], idx_pixel(3, 4));
    assert_eq!(test.normalization, *measured);
}

#[test]
fn bad_idx_files_are_refused_by_kind() {
    let dir = tempfile::tempdir().unwrap();
    write_idx_set(dir.path());
    let config = idx_config(dir.path());
    let dirs = [dir.path().to_path_buf()];
    // A grey data set and a 3-channel model, another side, another class count.
    assert!(matches!(
        config.problem(&[3, 7, 5], Some(3)),
        Some(DataError::Channels {
            found: 1,
            expected: 3,
            ..
        })
    ));
    assert!(matches!(
        config.problem(&[1, 7, 5], Some(10)),
        Some(DataError::ClassCount {
            classes: 3,
            outputs: 10,
            ..
        })
    ));
    assert!(matches!(
        load_train_validation(&config, &[3, 7, 5], &dirs),
        Err(DataError::Channels { .. })
    ));
    match load_train_validation(&config, &[1, 28, 28], &dirs) {
        Err(DataError::Shape {
            found, expected, ..
        }) => {
            assert_eq!(found, vec![1, 7, 5]);
            assert_eq!(expected, vec![1, 28, 28]);
        }
        other => panic!("expected a shape error, got {other:?}"),
    }
    // Labels that do not match the images in count.
    let labels = dir.path().join("train-labels-idx1-ubyte.gz");
    std::fs::write(&labels, gzip(&idx_bytes(&[11], &[0; 11]))).unwrap();
    assert!(matches!(
        load_train_validation(&config, &[1, 7, 5], &dirs),
        Err(DataError::LabelCount {
            images: 12,
            labels: 11,
            ..
        })
    ));
    // A label outside the class count, named by its entry.
    let mut stray = vec![0u8; 12];
    stray[5] = 3;
    std::fs::write(&labels, gzip(&idx_bytes(&[12], &stray))).unwrap();
    assert!(matches!(
        load_train_validation(&config, &[1, 7, 5], &dirs),
        Err(DataError::LabelOutOfRange {
            entry: 5,
            label: 3,
            classes: 3,
            ..
        })
    ));
    std::fs::write(&labels, gzip(&idx_bytes(&[12], &[0; 12]))).unwrap();
    // A truncated image file.
    let images = dir.path().join("train-images-idx3-ubyte");
    let bytes = std::fs::read(&images).unwrap();
    std::fs::write(&images, &bytes[..bytes.len() - 7]).unwrap();
    assert!(matches!(
        load_train_validation(&config, &[1, 7, 5], &dirs),
        Err(DataError::Truncated { .. })
    ));
    // A header that claims billions of images on a tiny file.
    std::fs::write(&images, idx_bytes(&[4_000_000_000, 7, 5], &[1, 2, 3])).unwrap();
    assert!(matches!(
        load_train_validation(&config, &[1, 7, 5], &dirs),
        Err(DataError::TooLarge { .. })
    ));
    // A pinned file whose digest differs.
    std::fs::write(&images, &bytes).unwrap();
    let pinned = DataConfig {
        sha256: [("train-images-idx3-ubyte".to_string(), "00".repeat(32))].into(),
        ..config.clone()
    };
    assert!(matches!(
        load_train_validation(&pinned, &[1, 7, 5], &dirs),
        Err(DataError::Checksum { .. })
    ));
    // A pin that names no file of the set (a typo would switch the check off), a digest that is
    // not one, a zero side and an absurd shift are refused before anything is read.
    let typo = DataConfig {
        sha256: [("train-images.gz".to_string(), "00".repeat(32))].into(),
        ..config.clone()
    };
    assert!(matches!(
        typo.problem(&[1, 7, 5], None),
        Some(DataError::Config(_))
    ));
    let short = DataConfig {
        sha256: [("train-images-idx3-ubyte".to_string(), "abc".into())].into(),
        ..config.clone()
    };
    assert!(matches!(
        short.problem(&[1, 7, 5], None),
        Some(DataError::Config(_))
    ));
    assert!(matches!(
        config.problem(&[1, 0, 5], None),
        Some(DataError::Config(_))
    ));
    let mut shaky = config.clone();
    shaky.input.augmentation.max_shift_pixels = u32::MAX;
    assert!(matches!(
        shaky.problem(&[1, 7, 5], None),
        Some(DataError::Config(_))
    ));
    shaky.input.augmentation.max_shift_pixels = 2;
    shaky.input.augmentation.max_rotation_degrees = f32::INFINITY;
    assert!(matches!(
        shaky.problem(&[1, 7, 5], None),
        Some(DataError::Config(_))
    ));
    // A folder that is nowhere.
    let missing = idx_config(Path::new("no-such-folder"));
    assert!(matches!(
        load_train_validation(&missing, &[1, 7, 5], &dirs),
        Err(DataError::Missing { .. })
    ));
}

/// CIFAR-10 record `i`: label `i % 10`, pixels from `i`.
fn cifar_record(i: usize) -> Vec<u8> {
    let mut bytes = vec![(i % 10) as u8];
    bytes.extend((0..3072).map(|p| ((i * 13 + p) % 251) as u8));
    bytes
}

fn write_cifar10(dir: &Path) {
    for batch in 1..=5 {
        let records: Vec<u8> = (0..2)
            .flat_map(|r| cifar_record((batch - 1) * 2 + r))
            .collect();
        std::fs::write(dir.join(format!("data_batch_{batch}.bin")), records).unwrap();
    }
    let test: Vec<u8> = (100..103).flat_map(cifar_record).collect();
    std::fs::write(dir.join("test_batch.bin"), test).unwrap();
}

#[test]
fn cifar_batches_load_in_order_with_published_class_names() {
    let dir = tempfile::tempdir().unwrap();
    write_cifar10(dir.path());
    let config = config(DatasetKind::Cifar10, Some(dir.path()), 2);
    let data = load_train_validation(&config, &[3, 32, 32], &[]).unwrap();
    assert_eq!(data.classes.as_ref().unwrap()[0], "airplane");
    assert_eq!(data.classes.as_ref().unwrap()[9], "truck");
    let train = data.train.images().unwrap();
    assert_eq!(train.len() + data.validation.len(), 10);
    for (position, &index) in train.source_indices.iter().enumerate() {
        assert_eq!(train.image(position), &cifar_record(index as usize)[1..]);
        assert_eq!(train.labels[position] as usize, index as usize % 10);
    }
    assert_eq!(data.normalization().unwrap().mean.len(), 3);
    let test = load_test(&config, &[3, 32, 32], &[], None).unwrap();
    assert_eq!(test.images().unwrap().labels, vec![0, 1, 2]);
    assert_eq!(test.images().unwrap().image(1), &cifar_record(101)[1..]);
    // A grey model, a missing batch and a partial record are refused.
    assert!(matches!(
        config.problem(&[1, 32, 32], Some(10)),
        Some(DataError::Channels { .. })
    ));
    let mut cut = cifar_record(0);
    cut.pop();
    std::fs::write(dir.path().join("data_batch_3.bin"), cut).unwrap();
    assert!(matches!(
        load_train_validation(&config, &[3, 32, 32], &[]),
        Err(DataError::Truncated { .. })
    ));
    std::fs::remove_file(dir.path().join("data_batch_3.bin")).unwrap();
    assert!(matches!(
        load_train_validation(&config, &[3, 32, 32], &[]),
        Err(DataError::Missing { .. })
    ));
}

/// A `width` x `height` RGB image of one colour per 8x8 block, so that JPEG keeps it closely.
fn blocks(width: u32, height: u32, seed: u8) -> image::RgbImage {
    image::RgbImage::from_fn(width, height, |x, y| {
        let block = (x / 8 + 3 * (y / 8)) as u8;
        image::Rgb([
            seed.wrapping_mul(40).wrapping_add(block * 30),
            100 + block * 20,
            200 - seed * 10,
        ])
    })
}

fn save(image: &image::RgbImage, path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image.save(path).unwrap();
}

/// An image folder with classes `cat` (PNG) and `dog` (JPEG), 16x8 images, and one 32x16 PNG
/// that must be resized.
fn write_image_folder(dir: &Path) {
    for split in ["train", "test"] {
        for i in 0..3u8 {
            save(&blocks(16, 8, i), &dir.join(format!("{split}/cat/{i}.png")));
            save(
                &blocks(16, 8, i + 3),
                &dir.join(format!("{split}/dog/{i}.jpg")),
            );
        }
    }
    save(&blocks(32, 16, 1), &dir.join("train/cat/big.png"));
    std::fs::write(dir.join("train/cat/notes.txt"), "not an image").unwrap();
}

#[test]
fn image_folders_read_png_and_jpeg_as_grey_or_rgb() {
    let dir = tempfile::tempdir().unwrap();
    write_image_folder(dir.path());
    let config = config(DatasetKind::ImageFolder, Some(dir.path()), 1);
    let rgb = load_test(&config, &[3, 8, 16], &[], None).unwrap();
    let Split::Images(rgb) = rgb else {
        panic!("images expected")
    };
    assert_eq!(rgb.labels, vec![0, 0, 0, 1, 1, 1]);
    // PNG: exact, as planes (red, green, blue).
    let expected = blocks(16, 8, 2);
    let image = rgb.image(2);
    for (i, pixel) in expected.pixels().enumerate() {
        for channel in 0..3 {
            assert_eq!(image[channel * 128 + i], pixel.0[channel]);
        }
    }
    // JPEG: within a small tolerance of what was encoded.
    let expected = blocks(16, 8, 4);
    let image = rgb.image(4);
    let worst = expected
        .pixels()
        .enumerate()
        .flat_map(|(i, pixel)| {
            (0..3).map(move |c| (image[c * 128 + i] as i32 - pixel.0[c] as i32).abs())
        })
        .max()
        .unwrap();
    assert!(worst <= 8, "JPEG pixels differ by up to {worst}");
    // Grey, and the larger training image resized to the input.
    let data = load_train_validation(&config, &[1, 8, 16], &[]).unwrap();
    assert_eq!(data.classes.as_deref().unwrap(), ["cat", "dog"]);
    assert_eq!(data.train.len() + data.validation.len(), 7);
    let train = data.train.images().unwrap();
    assert_eq!(train.image(0).len(), 128);
    assert_eq!(train.normalization.mean.len(), 1);
}

#[test]
fn bad_image_folders_are_refused_by_kind() {
    let dir = tempfile::tempdir().unwrap();
    write_image_folder(dir.path());
    let config = config(DatasetKind::ImageFolder, Some(dir.path()), 1);
    std::fs::write(
        dir.path().join("test/dog/broken.png"),
        b"\x89PNG not really",
    )
    .unwrap();
    assert!(matches!(
        load_test(&config, &[3, 8, 16], &[], None),
        Err(DataError::Decode { file, .. }) if file.ends_with("broken.png")
    ));
    std::fs::create_dir_all(dir.path().join("train/emu")).unwrap();
    assert!(matches!(
        load_train_validation(&config, &[3, 8, 16], &[]),
        Err(DataError::EmptyClass { folder }) if folder.ends_with("emu")
    ));
    let data = tempfile::tempdir().unwrap();
    let stray = config.clone();
    std::fs::create_dir_all(data.path().join("train/a")).unwrap();
    save(&blocks(8, 8, 0), &data.path().join("train/a/0.png"));
    save(&blocks(8, 8, 0), &data.path().join("test/b/0.png"));
    let stray = DataConfig {
        dir: Some(data.path().to_path_buf()),
        ..stray
    };
    assert!(matches!(
        load_test(&stray, &[1, 8, 8], &[], None),
        Err(DataError::Malformed { .. })
    ));
    assert!(matches!(
        config.problem(&[2, 8, 16], None),
        Some(DataError::Config(_))
    ));
}

#[test]
fn any_text_file_is_cut_into_windows_of_the_model_context() {
    let dir = tempfile::tempdir().unwrap();
    let text: String = (0..40)
        .map(|i| {
            if i == 17 {
                "zebra!\n".to_string()
            } else {
                format!("line {i} of text\n")
            }
        })
        .collect();
    std::fs::write(dir.path().join("corpus.txt"), &text).unwrap();
    let config = DataConfig {
        path: Some("corpus.txt".into()),
        test_size: Some(64),
        block_size: Some(64),
        ..config(DatasetKind::Text, None, 64)
    };
    let dirs = [dir.path().to_path_buf()];
    let data = load_train_validation(&config, &[8], &dirs).unwrap();
    let vocabulary = data.vocabulary.as_ref().unwrap();
    assert!(vocabulary.symbols.contains(&'t') && vocabulary.symbols.contains(&'\n'));
    let Split::Text(train) = &data.train else {
        panic!("text expected")
    };
    let (inputs, targets) = train.batch(&[0]);
    assert_eq!(inputs.len(), 8);
    assert_eq!(inputs[1..], targets[..7], "targets are the next characters");
    assert!(data.normalization().is_none() && data.classes.is_none());
    // Not UTF-8, and no context: refused.
    std::fs::write(dir.path().join("corpus.txt"), [0xff, 0xfe, 0x00]).unwrap();
    assert!(matches!(
        load_train_validation(&config, &[8], &dirs),
        Err(DataError::Malformed { .. })
    ));
    assert!(matches!(
        config.problem(&[1, 8, 8], None),
        Some(DataError::Config(_))
    ));
}
