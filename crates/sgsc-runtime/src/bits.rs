//! Bit packing of two's-complement integer codes at an exact width (1 to 32 bits), least
//! significant bit first, with no padding between codes.

use crate::prelude::*;
/// Appends codes to a byte buffer at a given width.
#[derive(Debug, Default)]
pub struct BitWriter {
    bytes: Vec<u8>,
    /// Bits pending in `accumulator` (fewer than 8 between calls).
    pending: u32,
    accumulator: u64,
}

impl BitWriter {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the low `width` bits of `code` (which must fit a `width`-bit two's complement).
    pub fn push(&mut self, code: i32, width: u32) {
        debug_assert!((1..=32).contains(&width));
        let mask = if width == 32 {
            u32::MAX
        } else {
            (1u32 << width) - 1
        };
        self.accumulator |= u64::from(code as u32 & mask) << self.pending;
        self.pending += width;
        while self.pending >= 8 {
            self.bytes.push(self.accumulator as u8);
            self.accumulator >>= 8;
            self.pending -= 8;
        }
    }

    /// The bytes written, the last one padded with zero bits.
    pub fn finish(mut self) -> Vec<u8> {
        if self.pending > 0 {
            self.bytes.push(self.accumulator as u8);
        }
        self.bytes
    }
}

/// Reads codes back from bytes written by [`BitWriter`].
#[derive(Debug)]
pub struct BitReader<'a> {
    bytes: &'a [u8],
    /// Next bit to read, counted from the start of `bytes`.
    position: usize,
}

impl<'a> BitReader<'a> {
    /// A reader at the first bit of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        BitReader { bytes, position: 0 }
    }

    /// Reads one `width`-bit two's-complement code (sign-extended), or `None` past the end.
    pub fn read(&mut self, width: u32) -> Option<i32> {
        debug_assert!((1..=32).contains(&width));
        let end = self.position.checked_add(width as usize)?;
        if end > self.bytes.len() * 8 {
            return None;
        }
        let mut value: u64 = 0;
        let mut got = 0;
        while got < width {
            let bit = self.position + got as usize;
            let take = (8 - (bit % 8) as u32).min(width - got);
            let byte = u64::from(self.bytes[bit / 8] >> (bit % 8)) & ((1 << take) - 1);
            value |= byte << got;
            got += take;
        }
        self.position = end;
        let shift = 64 - width;
        Some(((value << shift) as i64 >> shift) as i32)
    }

    /// Bits read so far.
    pub fn position(&self) -> usize {
        self.position
    }
}

/// Bytes that `count` codes of `width` bits take, or `None` on overflow.
pub fn packed_bytes(count: usize, width: u32) -> Option<usize> {
    count
        .checked_mul(width as usize)?
        .checked_add(7)
        .map(|bits| bits / 8)
}

/// Smallest two's-complement width (0 to 32) that holds every code; 0 when all are 0.
pub fn width_of(codes: &[i32]) -> u32 {
    let (low, high) = codes.iter().fold((0i64, 0i64), |(low, high), &c| {
        (low.min(c as i64), high.max(c as i64))
    });
    if low == 0 && high == 0 {
        return 0;
    }
    (1..=32u32)
        .find(|&width| {
            let half = 1i64 << (width - 1);
            -half <= low && high < half
        })
        .unwrap_or(32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_width_round_trips_its_extremes() {
        for width in 1..=32u32 {
            let low = -(1i64 << (width - 1));
            let high = (1i64 << (width - 1)) - 1;
            let codes: Vec<i32> = [low, high, 0, -1, low + 1, high.min(3), 1.min(high)]
                .iter()
                .map(|&c| c as i32)
                .collect();
            let mut writer = BitWriter::new();
            for &code in &codes {
                writer.push(code, width);
            }
            let bytes = writer.finish();
            assert_eq!(bytes.len(), packed_bytes(codes.len(), width).unwrap());
            let mut reader = BitReader::new(&bytes);
            let back: Vec<i32> = codes.iter().map(|_| reader.read(width).unwrap()).collect();
            assert_eq!(back, codes, "width {width}");
        }
    }

    #[test]
    fn codes_are_laid_out_lsb_first() {
        // 3-bit codes 1 (001), -1 (111), 2 (010), each from its lowest bit: byte 0 holds bits
        // 0-7 = 1,0,0 | 1,1,1 | 0,1 (read from bit 7 down: 0b1_0_111_001); byte 1 holds the last 0.
        let mut writer = BitWriter::new();
        for code in [1, -1, 2] {
            writer.push(code, 3);
        }
        assert_eq!(writer.finish(), vec![0b1011_1001, 0b0000_0000]);
    }

    #[test]
    fn mixed_widths_and_the_end_of_the_buffer() {
        let mut writer = BitWriter::new();
        writer.push(-3, 3);
        writer.push(100, 8);
        writer.push(-1, 1);
        let bytes = writer.finish();
        let mut reader = BitReader::new(&bytes);
        assert_eq!(reader.read(3), Some(-3));
        assert_eq!(reader.read(8), Some(100));
        assert_eq!(reader.read(1), Some(-1));
        assert_eq!(reader.position(), 12);
        assert_eq!(reader.read(5), None, "only 4 padding bits remain");
    }

    #[test]
    fn width_is_the_smallest_that_holds_the_codes() {
        assert_eq!(width_of(&[0, 0]), 0);
        assert_eq!(width_of(&[-1]), 1);
        assert_eq!(width_of(&[1]), 2);
        assert_eq!(width_of(&[-4, 3]), 3);
        assert_eq!(width_of(&[4]), 4);
        assert_eq!(width_of(&[i32::MIN, i32::MAX]), 32);
    }
}
