//! CIFAR-10 and CIFAR-100 in their canonical binary form (the "binary version" archives).
//!
//! A file is a run of fixed-size records, no header: CIFAR-10's are one label byte then 3,072
//! pixel bytes (the red plane, the green plane, the blue plane, each 32 rows of 32); CIFAR-100's
//! are a coarse label byte, a fine label byte, then the same pixels. sgsc uses the fine labels.

use crate::images::{check_labels, ImageShape};
use crate::DataError;

/// The shape of a CIFAR image.
pub const SHAPE: ImageShape = ImageShape {
    channels: 3,
    height: 32,
    width: 32,
};

/// Which CIFAR: its files, record layout and class names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cifar {
    /// 10 classes, `data_batch_1.bin` ... `data_batch_5.bin` and `test_batch.bin`.
    Ten,
    /// 100 fine classes, `train.bin` and `test.bin`.
    Hundred,
}

/// CIFAR-10's class names, in label order (`batches.meta.txt`).
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// CIFAR-100's fine class names, in label order (`fine_label_names.txt`).
pub const CIFAR100_CLASSES: [&str; 100] = [
    "apple",
    "aquarium_fish",
    "baby",
    "bear",
    "beaver",
    "bed",
    "bee",
    "beetle",
    "bicycle",
    "bottle",
    "bowl",
    "boy",
    "bridge",
    "bus",
    "butterfly",
    "camel",
    "can",
    "castle",
    "caterpillar",
    "cattle",
    "chair",
    "chimpanzee",
    "clock",
    "cloud",
    "cockroach",
    "couch",
    "crab",
    "crocodile",
    "cup",
    "dinosaur",
    "dolphin",
    "elephant",
    "flatfish",
    "forest",
    "fox",
    "girl",
    "hamster",
    "house",
    "kangaroo",
    "keyboard",
    "lamp",
    "lawn_mower",
    "leopard",
    "lion",
    "lizard",
    "lobster",
    "man",
    "maple_tree",
    "motorcycle",
    "mountain",
    "mouse",
    "mushroom",
    "oak_tree",
    "orange",
    "orchid",
    "otter",
    "palm_tree",
    "pear",
    "pickup_truck",
    "pine_tree",
    "plain",
    "plate",
    "poppy",
    "porcupine",
    "possum",
    "rabbit",
    "raccoon",
    "ray",
    "road",
    "rocket",
    "rose",
    "sea",
    "seal",
    "shark",
    "shrew",
    "skunk",
    "skyscraper",
    "snail",
    "snake",
    "spider",
    "squirrel",
    "streetcar",
    "sunflower",
    "sweet_pepper",
    "table",
    "tank",
    "telephone",
    "television",
    "tiger",
    "tractor",
    "train",
    "trout",
    "tulip",
    "turtle",
    "wardrobe",
    "whale",
    "willow_tree",
    "wolf",
    "woman",
    "worm",
];

impl Cifar {
    /// Label bytes before the pixels of each record.
    pub fn label_bytes(self) -> usize {
        match self {
            Cifar::Ten => 1,
            Cifar::Hundred => 2,
        }
    }

    /// Bytes of one record.
    pub fn record_bytes(self) -> usize {
        self.label_bytes() + SHAPE.values()
    }

    /// The class names, in label order.
    pub fn classes(self) -> &'static [&'static str] {
        match self {
            Cifar::Ten => &CIFAR10_CLASSES,
            Cifar::Hundred => &CIFAR100_CLASSES,
        }
    }

    /// The folder the canonical archive unpacks to, where `data.dir` is not given.
    pub fn default_dir(self) -> &'static str {
        match self {
            Cifar::Ten => "cifar-10-batches-bin",
            Cifar::Hundred => "cifar-100-binary",
        }
    }

    /// The training files, in order.
    pub fn train_files(self) -> Vec<String> {
        match self {
            Cifar::Ten => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
            Cifar::Hundred => vec!["train.bin".into()],
        }
    }

    /// The test file.
    pub fn test_file(self) -> &'static str {
        match self {
            Cifar::Ten => "test_batch.bin",
            Cifar::Hundred => "test.bin",
        }
    }
}

/// The pixels and labels of one batch file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CifarBatch {
    /// Pixels, 3,072 per image (red, green, blue planes).
    pub images: Vec<u8>,
    /// The (fine) label of each image.
    pub labels: Vec<u8>,
}

/// Parses the bytes of one batch file; `file` labels errors. The length must be a whole number
/// of records and every label must name a class.
pub fn parse_batch(bytes: &[u8], cifar: Cifar, file: &str) -> Result<CifarBatch, DataError> {
    let record = cifar.record_bytes();
    if bytes.is_empty() || !bytes.len().is_multiple_of(record) {
        return Err(DataError::Truncated {
            file: file.to_string(),
            expected: (bytes.len() / record + 1) * record,
            found: bytes.len(),
        });
    }
    let count = bytes.len() / record;
    let mut images = Vec::with_capacity(count * SHAPE.values());
    let mut labels = Vec::with_capacity(count);
    for chunk in bytes.chunks_exact(record) {
        labels.push(chunk[cifar.label_bytes() - 1]);
        images.extend_from_slice(&chunk[cifar.label_bytes()..]);
    }
    check_labels(&labels, cifar.classes().len(), file)?;
    Ok(CifarBatch { images, labels })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(labels: &[u8], pixel: u8) -> Vec<u8> {
        let mut bytes = labels.to_vec();
        bytes.extend((0..SHAPE.values()).map(|i| pixel.wrapping_add(i as u8)));
        bytes
    }

    #[test]
    fn reads_records_and_fine_labels() {
        let mut bytes = record(&[3], 0);
        bytes.extend(record(&[9], 100));
        let batch = parse_batch(&bytes, Cifar::Ten, "b").unwrap();
        assert_eq!(batch.labels, vec![3, 9]);
        assert_eq!(batch.images.len(), 2 * 3072);
        assert_eq!(batch.images[3072], 100);
        assert_eq!(batch.images[3072 + 1024], 100u8.wrapping_add(0));
        // CIFAR-100: coarse 19, fine 57; the fine label is kept.
        let batch = parse_batch(&record(&[19, 57], 5), Cifar::Hundred, "t").unwrap();
        assert_eq!(batch.labels, vec![57]);
        assert_eq!(batch.images[0], 5);
        assert_eq!(CIFAR100_CLASSES[57], "pear");
    }

    #[test]
    fn partial_records_and_stray_labels_are_refused() {
        let bytes = record(&[1], 0);
        for len in [0, 1, 3072, bytes.len() + 5] {
            let mut cut = bytes.clone();
            cut.resize(len, 0);
            assert!(
                matches!(
                    parse_batch(&cut, Cifar::Ten, "b"),
                    Err(DataError::Truncated { .. })
                ),
                "length {len}"
            );
        }
        let mut bytes = record(&[1], 0);
        bytes.extend(record(&[10], 0));
        assert!(matches!(
            parse_batch(&bytes, Cifar::Ten, "b"),
            Err(DataError::LabelOutOfRange {
                entry: 1,
                label: 10,
                classes: 10,
                ..
            })
        ));
    }
}
