//! The `.sgsc` byte layout (version 2; the spec is `docs/format.md`): a header, then three
//! sections, each with a CRC-32 of its stored bytes. All integers and floats are little-endian.
//!
//! ```text
//! "SGSC" | version u16 | section count u16 (= 3)
//! "META" | length u32 | raw DEFLATE of the description's JSON | crc32 u32
//! "DATA" | length u32 | tensors, in layer order              | crc32 u32
//! "RECD" | length u32 | the run record's JSON (plain)        | crc32 u32
//! ```
//!
//! The description (input, normalisation, classes or vocabulary, data source, layers) is known
//! before training ends and is compressed; the run record (certificate, summary) holds figures
//! measured at the very end and stays plain JSON, so that a file written with each figure at its
//! longest bounds the final file's length exactly (`docs/guard.md`, "The steered size").
//!
//! The reader trusts nothing: every length is checked against the bytes that remain before
//! anything is allocated, the description inflates to a bounded length, dimensions are bounded,
//! and the data section must be consumed exactly.

use crate::bits::{packed_bytes, BitReader, BitWriter};
use crate::error::{Result, RuntimeError};
use crate::model::{Layer, LayerSpec, Metadata, PackedModel, QuantizedMatrix, Storage, TensorData};
use crate::prelude::*;
use half::f16;
use serde::{Deserialize, Serialize};

/// First four bytes of every file.
pub const MAGIC: [u8; 4] = *b"SGSC";
/// The format version this crate writes and reads.
pub const VERSION: u16 = 2;
/// Tag of the description section (compressed JSON).
pub const META_TAG: [u8; 4] = *b"META";
/// Tag of the data section.
pub const DATA_TAG: [u8; 4] = *b"DATA";
/// Tag of the run record section (plain JSON).
pub const RECORD_TAG: [u8; 4] = *b"RECD";
/// Sections of a file, in order.
pub const SECTIONS: usize = 3;
/// Largest dimension of any tensor (inputs, channels, features, vocabulary, context).
pub const MAX_DIMENSION: usize = 1 << 20;
/// Most quantized weights in one model, all matrices together (a row of width 0 takes no code
/// bytes, so without this bound a few bytes could ask for a huge allocation).
pub const MAX_ELEMENTS: usize = 1 << 24;
/// Longest description JSON once inflated (a vocabulary of [`MAX_DIMENSION`] symbols fits).
pub const MAX_DESCRIPTION_BYTES: usize = 1 << 24;
/// Largest stored width of a code, in bits.
pub const MAX_WIDTH: u8 = 32;
/// Bytes of the file header.
pub const HEADER_BYTES: usize = 8;
/// Bytes a section adds around its payload: tag, length and checksum.
pub const SECTION_OVERHEAD: usize = 12;
/// DEFLATE level of the description (miniz's highest; the output is deterministic).
const DEFLATE_LEVEL: u8 = 10;

/// The description section's JSON: the metadata known before training ends, plus the layers.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetaSection {
    #[serde(flatten)]
    metadata: Metadata,
    layers: Vec<LayerSpec>,
}

/// The run record section's JSON: the figures measured at the end of the run.
#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordSection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    certificate: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    summary: Option<serde_json::Value>,
}

/// The stored length of each part of a file, as [`section_lengths`] reads it from the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SectionLengths {
    /// The compressed description.
    pub description: usize,
    /// The tensors.
    pub data: usize,
    /// The run record.
    pub record: usize,
}

/// Serialises a model to the bytes of a `.sgsc` file (after checking that its layers fit).
pub fn encode(model: &PackedModel) -> Result<Vec<u8>> {
    model.validate()?;
    let mut description = model.metadata.clone();
    let record = RecordSection {
        certificate: description.certificate.take(),
        summary: description.summary.take(),
    };
    let meta = MetaSection {
        metadata: description,
        layers: model
            .layers
            .iter()
            .map(|layer| layer.spec.clone())
            .collect(),
    };
    let json = serde_json::to_vec(&meta).map_err(|e| RuntimeError::Metadata(e.to_string()))?;
    let compressed = miniz_oxide::deflate::compress_to_vec(&json, DEFLATE_LEVEL);
    let record = serde_json::to_vec(&record).map_err(|e| RuntimeError::Metadata(e.to_string()))?;
    let mut data = Vec::new();
    for layer in &model.layers {
        write_layer(&mut data, layer)?;
    }
    let mut bytes = Vec::with_capacity(
        HEADER_BYTES + SECTIONS * SECTION_OVERHEAD + compressed.len() + data.len() + record.len(),
    );
    bytes.extend_from_slice(&MAGIC);
    bytes.extend_from_slice(&VERSION.to_le_bytes());
    bytes.extend_from_slice(&(SECTIONS as u16).to_le_bytes());
    for (tag, payload) in [
        (META_TAG, &compressed),
        (DATA_TAG, &data),
        (RECORD_TAG, &record),
    ] {
        let length = u32::try_from(payload.len())
            .map_err(|_| RuntimeError::Invalid("a section exceeds 4 GiB".into()))?;
        bytes.extend_from_slice(&tag);
        bytes.extend_from_slice(&length.to_le_bytes());
        bytes.extend_from_slice(payload);
        bytes.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    }
    Ok(bytes)
}

/// Reads a model from the bytes of a `.sgsc` file, validating everything.
pub fn decode(bytes: &[u8]) -> Result<PackedModel> {
    let mut cursor = Cursor::new(bytes);
    header(&mut cursor)?;
    let compressed = section(&mut cursor, META_TAG)?;
    let data = section(&mut cursor, DATA_TAG)?;
    let record = section(&mut cursor, RECORD_TAG)?;
    if cursor.remaining() > 0 {
        return Err(RuntimeError::Sections(format!(
            "{} bytes after the last section",
            cursor.remaining()
        )));
    }
    let json =
        miniz_oxide::inflate::decompress_to_vec_with_limit(compressed, MAX_DESCRIPTION_BYTES)
            .map_err(|e| {
                RuntimeError::Metadata(format!("the description does not inflate: {e}"))
            })?;
    let meta: MetaSection =
        serde_json::from_slice(&json).map_err(|e| RuntimeError::Metadata(e.to_string()))?;
    if meta.metadata.certificate.is_some() || meta.metadata.summary.is_some() {
        return Err(RuntimeError::Metadata(
            "the certificate and the summary belong to the run record, not the description".into(),
        ));
    }
    let record: RecordSection =
        serde_json::from_slice(record).map_err(|e| RuntimeError::Metadata(e.to_string()))?;
    // The layers must fit the input and each other before their tensors are read.
    crate::model::validate_specs(&meta.metadata, &meta.layers)?;
    let mut data = Cursor::new(data);
    let layers = meta
        .layers
        .iter()
        .enumerate()
        .map(|(index, spec)| read_layer(&mut data, spec, index))
        .collect::<Result<Vec<_>>>()?;
    if data.remaining() > 0 {
        return Err(RuntimeError::Invalid(format!(
            "{} bytes of the data section belong to no layer",
            data.remaining()
        )));
    }
    let model = PackedModel {
        metadata: Metadata {
            certificate: record.certificate,
            summary: record.summary,
            ..meta.metadata
        },
        layers,
    };
    model.check_layers()?;
    Ok(model)
}

/// The stored length of each section of a file, read from its framing (checksums checked, the
/// contents not parsed).
pub fn section_lengths(bytes: &[u8]) -> Result<SectionLengths> {
    let mut cursor = Cursor::new(bytes);
    header(&mut cursor)?;
    Ok(SectionLengths {
        description: section(&mut cursor, META_TAG)?.len(),
        data: section(&mut cursor, DATA_TAG)?.len(),
        record: section(&mut cursor, RECORD_TAG)?.len(),
    })
}

/// Reads and checks the magic bytes, the version and the section count.
fn header(cursor: &mut Cursor) -> Result<()> {
    if cursor.take(4, "magic")? != MAGIC {
        return Err(RuntimeError::BadMagic);
    }
    let version = cursor.u16("version")?;
    if version != VERSION {
        return Err(RuntimeError::UnsupportedVersion {
            found: version,
            supported: VERSION,
        });
    }
    let count = cursor.u16("section count")?;
    if count as usize != SECTIONS {
        return Err(RuntimeError::Sections(format!(
            "{count} sections; version {VERSION} has exactly {SECTIONS} (META, DATA, RECD)"
        )));
    }
    Ok(())
}

/// Reads one section with the expected tag and checks its checksum.
fn section<'a>(cursor: &mut Cursor<'a>, expected: [u8; 4]) -> Result<&'a [u8]> {
    let name = String::from_utf8_lossy(&expected).into_owned();
    let tag = cursor.take(4, &format!("{name} tag"))?;
    if tag != expected {
        return Err(RuntimeError::Sections(format!(
            "expected section {name}, found tag {:?}",
            String::from_utf8_lossy(tag)
        )));
    }
    let length = cursor.u32(&format!("{name} length"))? as usize;
    let payload = cursor.take(length, &format!("{name} payload"))?;
    let stored = cursor.u32(&format!("{name} checksum"))?;
    let computed = crc32fast::hash(payload);
    // Under the fuzzer (`cargo fuzz` sets `cfg(fuzzing)`) a wrong checksum is let through, so
    // that mutated inputs reach the parsers behind it instead of stopping here.
    if stored != computed && !cfg!(fuzzing) {
        return Err(RuntimeError::Checksum {
            section: name,
            stored,
            computed,
        });
    }
    Ok(payload)
}

/// A bounds-checked reader over bytes, with a budget of quantized weights still allowed.
struct Cursor<'a> {
    bytes: &'a [u8],
    offset: usize,
    weights_left: usize,
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Cursor {
            bytes,
            offset: 0,
            weights_left: MAX_ELEMENTS,
        }
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.offset
    }

    fn take(&mut self, needed: usize, what: &str) -> Result<&'a [u8]> {
        if needed > self.remaining() {
            return Err(RuntimeError::Truncated {
                what: what.to_string(),
                offset: self.offset,
                needed,
                available: self.remaining(),
            });
        }
        let slice = &self.bytes[self.offset..self.offset + needed];
        self.offset += needed;
        Ok(slice)
    }

    fn u16(&mut self, what: &str) -> Result<u16> {
        let bytes = self.take(2, what)?;
        Ok(u16::from_le_bytes([bytes[0], bytes[1]]))
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        let bytes = self.take(4, what)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    /// `count` finite f32 values; the byte count is checked before anything is allocated.
    fn floats(&mut self, count: usize, what: &str) -> Result<Vec<f32>> {
        let needed = count
            .checked_mul(4)
            .ok_or_else(|| RuntimeError::Invalid(format!("{what}: {count} floats overflow")))?;
        let bytes = self.take(needed, what)?;
        let values: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if let Some(value) = values.iter().find(|v| !v.is_finite()) {
            return Err(RuntimeError::Invalid(format!(
                "{what}: {value} is not finite"
            )));
        }
        Ok(values)
    }
}

fn write_floats(out: &mut Vec<u8>, values: &[f32]) {
    for value in values {
        out.extend_from_slice(&value.to_le_bytes());
    }
}

/// Widths (u8 per row), exponents (f16 per row of non-zero width), then the codes bit-packed
/// row after row at each row's width, padded to a whole byte at the end of the matrix.
/// The matrix's lengths were checked by `PackedModel::validate` before encoding.
fn write_matrix(out: &mut Vec<u8>, matrix: &QuantizedMatrix) -> Result<()> {
    out.extend_from_slice(&matrix.widths);
    for (&width, exponent) in matrix.widths.iter().zip(&matrix.exponents) {
        if width > 0 {
            out.extend_from_slice(&exponent.to_bits().to_le_bytes());
        }
    }
    let mut writer = BitWriter::new();
    for (row, &width) in matrix.widths.iter().enumerate() {
        let codes = &matrix.codes[row * matrix.columns..(row + 1) * matrix.columns];
        if width > MAX_WIDTH || crate::bits::width_of(codes) > u32::from(width) {
            return Err(RuntimeError::Invalid(format!(
                "row {row}: codes do not fit the stated width {width}"
            )));
        }
        for &code in codes.iter().filter(|_| width > 0) {
            writer.push(code, u32::from(width));
        }
    }
    out.extend_from_slice(&writer.finish());
    Ok(())
}

fn read_matrix(
    cursor: &mut Cursor,
    rows: usize,
    columns: usize,
    what: &str,
) -> Result<QuantizedMatrix> {
    let weights = product(rows, columns, what)?;
    if weights > cursor.weights_left {
        return Err(RuntimeError::Invalid(format!(
            "{what}: {rows}x{columns} takes the model past {MAX_ELEMENTS} weights"
        )));
    }
    cursor.weights_left -= weights;
    let widths = cursor.take(rows, &format!("{what} widths"))?.to_vec();
    if let Some(width) = widths.iter().find(|&&w| w > MAX_WIDTH) {
        return Err(RuntimeError::Invalid(format!(
            "{what}: code width {width} exceeds {MAX_WIDTH}"
        )));
    }
    let mut exponents = Vec::with_capacity(rows);
    for &width in &widths {
        exponents.push(if width > 0 {
            f16::from_bits(cursor.u16(&format!("{what} exponent"))?)
        } else {
            f16::ZERO
        });
    }
    let bits: usize = widths.iter().map(|&w| w as usize * columns).sum();
    let bytes = cursor.take(
        packed_bytes(bits, 1).unwrap_or(usize::MAX),
        &format!("{what} codes"),
    )?;
    if let Some(exponent) = exponents.iter().find(|e| !e.is_finite()) {
        return Err(RuntimeError::Invalid(format!(
            "{what}: exponent {exponent} is not finite"
        )));
    }
    let mut reader = BitReader::new(bytes);
    let mut codes = Vec::with_capacity(rows * columns);
    for &width in &widths {
        for _ in 0..columns {
            codes.push(if width == 0 {
                0
            } else {
                reader
                    .read(u32::from(width))
                    .ok_or_else(|| RuntimeError::Invalid(format!("{what}: codes run short")))?
            });
        }
    }
    Ok(QuantizedMatrix {
        rows,
        columns,
        widths,
        exponents,
        codes,
    })
}

/// Writes a layer's tensors in the order its description lists them (the model was validated,
/// so they match the list).
fn write_layer(out: &mut Vec<u8>, layer: &Layer) -> Result<()> {
    for tensor in &layer.tensors {
        match tensor {
            TensorData::Codes(matrix) => write_matrix(out, matrix)?,
            TensorData::Floats(values) => write_floats(out, values),
        }
    }
    Ok(())
}

/// Reads the tensors that `spec` lists, in order. Every length is checked against the bytes
/// left (and codes against the model's weight budget) before anything is allocated; the values
/// themselves are checked by `PackedModel::validate`.
fn read_layer(cursor: &mut Cursor, spec: &LayerSpec, index: usize) -> Result<Layer> {
    let tensors = spec
        .stored_tensors()
        .iter()
        .map(|stored| {
            let what = format!("layers.{index}.{}", stored.name);
            let (rows, columns) = stored
                .rows_and_columns()
                .ok_or_else(|| RuntimeError::Invalid(format!("{what}: the shape overflows")))?;
            Ok(match stored.storage {
                Storage::Codes => TensorData::Codes(read_matrix(cursor, rows, columns, &what)?),
                Storage::Floats | Storage::NonNegative => {
                    TensorData::Floats(cursor.floats(product(rows, columns, &what)?, &what)?)
                }
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Layer {
        spec: spec.clone(),
        tensors,
    })
}

/// `a * b` for dimensions, or an error on overflow.
fn product(a: usize, b: usize, what: &str) -> Result<usize> {
    a.checked_mul(b)
        .ok_or_else(|| RuntimeError::Invalid(format!("{what}: {a} x {b} overflows")))
}

/// Where the bytes of one stored tensor go (for `sgsc inspect`).
#[derive(Debug, Clone, PartialEq)]
pub struct TensorBytes {
    /// `layers.<i>` plus a part name for transformer blocks.
    pub name: String,
    /// Rows (output channels) stored.
    pub rows: usize,
    /// Rows with a non-zero width.
    pub alive: usize,
    /// Codes per row.
    pub columns: usize,
    /// `(width, rows of that width)`, ascending.
    pub widths: Vec<(u8, usize)>,
    /// Bytes in the data section: widths, exponents, codes and bias.
    pub bytes: usize,
}

/// Bytes of each quantized matrix (with its bias) in the data section, in file order.
pub fn quantized_bytes(model: &PackedModel) -> Vec<TensorBytes> {
    let mut sizes = Vec::new();
    for (index, layer) in model.layers.iter().enumerate() {
        for (part, dense) in layer.dense_parts() {
            let matrix = dense.weight;
            let alive = matrix.widths.iter().filter(|&&w| w > 0).count();
            let mut widths = alloc::collections::BTreeMap::new();
            for &width in &matrix.widths {
                *widths.entry(width).or_insert(0) += 1;
            }
            sizes.push(TensorBytes {
                name: match part {
                    "" => format!("layers.{index}"),
                    part => format!("layers.{index}.{part}"),
                },
                rows: matrix.rows,
                alive,
                columns: matrix.columns,
                widths: widths.into_iter().collect(),
                bytes: matrix.rows
                    + 2 * alive
                    + packed_bytes(matrix.code_bits(), 1).unwrap_or(0)
                    + 4 * dense.bias.map_or(0, |b| b.len()),
            });
        }
    }
    sizes
}
