//! Character-level text: a corpus cut into contiguous blocks that a seeded shuffle deals to
//! train, validation and test; a vocabulary built from the training blocks; and windows of
//! `context` characters whose targets are the next characters.
//!
//! Training reads every window that fits inside a training block (a random one per batch row);
//! validation and test read non-overlapping windows, so each of their characters is scored once
//! (apart from a block's first character, which has no context before it in the block). No
//! window crosses a block edge, so no text of one split leaks into another's context.
//!
//! A character of the validation or test blocks that the training blocks lack is mapped to one
//! unknown symbol, [`UNKNOWN`], added to the vocabulary only when it is needed.

use crate::DataError;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

/// The symbol that stands for every character the training blocks lack (U+FFFD, the Unicode
/// replacement character).
pub const UNKNOWN: char = '\u{FFFD}';

/// The symbols of a corpus, sorted; a symbol's id is its position. Saved with every text model,
/// since the ids mean nothing without it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vocabulary {
    /// Distinct characters in ascending order.
    pub symbols: Vec<char>,
}

impl Vocabulary {
    /// The distinct characters of `text`.
    pub fn from_text(text: &str) -> Self {
        let mut symbols: Vec<char> = text.chars().collect();
        symbols.sort_unstable();
        symbols.dedup();
        Vocabulary { symbols }
    }

    /// Number of symbols.
    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    /// True for an empty vocabulary.
    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }

    /// Ids of the characters of `text`; a character outside the vocabulary is an error naming
    /// it and its position.
    pub fn encode(&self, text: &str) -> Result<Vec<u16>, DataError> {
        text.chars()
            .enumerate()
            .map(|(position, symbol)| {
                self.symbols
                    .binary_search(&symbol)
                    .map(|id| id as u16)
                    .map_err(|_| DataError::UnknownSymbol { symbol, position })
            })
            .collect()
    }

    /// The characters of `ids`; an id outside the vocabulary is an error.
    pub fn decode(&self, ids: &[i64]) -> Result<String, DataError> {
        ids.iter()
            .map(|&id| {
                usize::try_from(id)
                    .ok()
                    .and_then(|id| self.symbols.get(id).copied())
                    .ok_or(DataError::UnknownId {
                        id,
                        vocabulary: self.len(),
                    })
            })
            .collect()
    }
}

/// Windows of one split of an encoded corpus.
#[derive(Debug, Clone)]
pub struct TextSplit {
    /// The whole corpus, encoded (shared by the splits; each reads only its own windows).
    pub tokens: Arc<Vec<u16>>,
    /// Start of each window: its offset in the corpus, in characters.
    pub starts: Vec<u32>,
    /// Characters per window.
    pub context: usize,
}

impl TextSplit {
    /// Number of windows.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// True when the split has no window.
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// The windows at `positions`, in that order.
    pub fn subset(&self, positions: &[usize]) -> TextSplit {
        TextSplit {
            tokens: Arc::clone(&self.tokens),
            starts: positions.iter().map(|&p| self.starts[p]).collect(),
            context: self.context,
        }
    }

    /// Token ids (`positions.len()` rows of `context`) and their next-character targets (one
    /// per logit row of a language model) for the windows at `positions`.
    pub fn batch(&self, positions: &[usize]) -> (Vec<i64>, Vec<i64>) {
        let mut inputs = Vec::with_capacity(positions.len() * self.context);
        let mut targets = Vec::with_capacity(positions.len() * self.context);
        for &position in positions {
            let start = self.starts[position] as usize;
            let window = &self.tokens[start..start + self.context + 1];
            inputs.extend(window[..self.context].iter().map(|&id| id as i64));
            targets.extend(window[1..].iter().map(|&id| id as i64));
        }
        (inputs, targets)
    }
}

/// Train, validation and test windows of a corpus, with the vocabulary of its training blocks.
#[derive(Debug, Clone)]
pub struct TextSplits {
    /// The training blocks' symbols.
    pub vocabulary: Vocabulary,
    /// Every window inside a training block.
    pub train: TextSplit,
    /// Non-overlapping windows of the validation blocks.
    pub validation: TextSplit,
    /// Non-overlapping windows of the test blocks (final reports only).
    pub test: TextSplit,
    /// Characters of the validation and test blocks mapped to [`UNKNOWN`].
    pub unknown_characters: usize,
}

/// How a corpus is cut.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockSplit {
    /// Characters per block.
    pub block_size: usize,
    /// Characters (rounded up to whole blocks) dealt to validation.
    pub validation_size: usize,
    /// Characters (rounded up to whole blocks) dealt to test.
    pub test_size: usize,
    /// Seed of the shuffle that deals the blocks.
    pub seed: u64,
}

/// Reads the UTF-8 corpus at `path` and splits it into windows of `context`; unknown characters
/// are counted in the log.
pub fn load(path: &Path, context: usize, split: BlockSplit) -> Result<TextSplits, DataError> {
    let bytes = crate::locate::read(path)?;
    let text = String::from_utf8(bytes).map_err(|error| DataError::Malformed {
        file: path.display().to_string(),
        reason: format!("not UTF-8 text ({error})"),
    })?;
    let splits = split_corpus(&text, context, split).map_err(|error| match error {
        DataError::Malformed { reason, .. } => DataError::Malformed {
            file: path.display().to_string(),
            reason,
        },
        other => other,
    })?;
    if splits.unknown_characters > 0 {
        tracing::warn!(
            "{}: {} characters of the validation and test blocks are not in the training blocks; they are read as the unknown symbol {UNKNOWN:?}",
            path.display(),
            splits.unknown_characters
        );
    }
    Ok(splits)
}

/// Cuts `text` into blocks, deals them to the splits by a seeded shuffle and encodes it with the
/// vocabulary of the training blocks. A symbol that occurs only outside the training blocks is
/// read as [`UNKNOWN`], which then joins the vocabulary.
pub fn split_corpus(
    text: &str,
    context: usize,
    split: BlockSplit,
) -> Result<TextSplits, DataError> {
    let malformed = |reason: String| DataError::Malformed {
        file: "corpus".into(),
        reason,
    };
    let characters: Vec<char> = text.chars().collect();
    if split.block_size <= context + 1 || context == 0 {
        return Err(malformed(format!(
            "block size {} must exceed the context {context} plus one",
            split.block_size
        )));
    }
    let blocks = characters.len().div_ceil(split.block_size);
    let validation_blocks = split.validation_size.div_ceil(split.block_size);
    let test_blocks = split.test_size.div_ceil(split.block_size);
    if validation_blocks == 0 || test_blocks == 0 || validation_blocks + test_blocks >= blocks {
        return Err(malformed(format!(
            "{} characters make {blocks} blocks of {}: not enough for {validation_blocks} validation blocks, {test_blocks} test blocks and training",
            characters.len(),
            split.block_size
        )));
    }
    let mut order: Vec<usize> = (0..blocks).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(split.seed));
    let mut validation = order[..validation_blocks].to_vec();
    let mut test = order[validation_blocks..validation_blocks + test_blocks].to_vec();
    let mut train = order[validation_blocks + test_blocks..].to_vec();
    for list in [&mut validation, &mut test, &mut train] {
        list.sort_unstable();
    }
    let range = |block: usize| {
        block * split.block_size..((block + 1) * split.block_size).min(characters.len())
    };
    let training_text: String = train
        .iter()
        .flat_map(|&block| characters[range(block)].iter())
        .collect();
    let mut vocabulary = Vocabulary::from_text(&training_text);
    let unknown_characters = characters
        .iter()
        .filter(|c| vocabulary.symbols.binary_search(c).is_err())
        .count();
    if unknown_characters > 0 && vocabulary.symbols.binary_search(&UNKNOWN).is_err() {
        vocabulary.symbols.push(UNKNOWN);
        vocabulary.symbols.sort_unstable();
    }
    if vocabulary.len() > usize::from(u16::MAX) + 1 {
        return Err(malformed(format!(
            "{} distinct characters: at most 65,536 fit the 16-bit token ids",
            vocabulary.len()
        )));
    }
    let unknown_id = vocabulary.symbols.binary_search(&UNKNOWN).unwrap_or(0) as u16;
    let tokens: Arc<Vec<u16>> = Arc::new(
        characters
            .iter()
            .map(|c| {
                vocabulary
                    .symbols
                    .binary_search(c)
                    .map_or(unknown_id, |id| id as u16)
            })
            .collect(),
    );
    let windows = |blocks: &[usize], stride: usize| -> TextSplit {
        let starts = blocks
            .iter()
            .flat_map(|&block| {
                let range = range(block);
                (range.start..range.end.saturating_sub(context))
                    .step_by(stride)
                    .map(|start| start as u32)
            })
            .collect();
        TextSplit {
            tokens: Arc::clone(&tokens),
            starts,
            context,
        }
    };
    Ok(TextSplits {
        train: windows(&train, 1),
        validation: windows(&validation, context),
        test: windows(&test, context),
        vocabulary,
        unknown_characters,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(seed: u64) -> BlockSplit {
        BlockSplit {
            block_size: 10,
            validation_size: 20,
            test_size: 10,
            seed,
        }
    }

    #[test]
    fn vocabulary_round_trips_and_rejects_strangers() {
        let vocabulary = Vocabulary::from_text("hello\nworld\n");
        assert_eq!(
            vocabulary.symbols,
            vec!['\n', 'd', 'e', 'h', 'l', 'o', 'r', 'w']
        );
        let ids = vocabulary.encode("world\nhello").unwrap();
        assert_eq!(ids, vec![7, 5, 6, 4, 1, 0, 3, 2, 4, 4, 5]);
        let ids: Vec<i64> = ids.iter().map(|&id| id as i64).collect();
        assert_eq!(vocabulary.decode(&ids).unwrap(), "world\nhello");
        assert!(matches!(
            vocabulary.encode("held!"),
            Err(DataError::UnknownSymbol {
                symbol: '!',
                position: 4
            })
        ));
        assert!(matches!(
            vocabulary.decode(&[8]),
            Err(DataError::UnknownId { id: 8, .. })
        ));
        assert!(vocabulary.decode(&[-1]).is_err());
        let json = serde_json::to_string(&vocabulary).unwrap();
        assert_eq!(
            serde_json::from_str::<Vocabulary>(&json).unwrap(),
            vocabulary
        );
    }

    #[test]
    fn splits_are_disjoint_blocks_and_windows_stay_inside_them() {
        let text: String = (0..100).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        let splits = split_corpus(&text, 4, cut(3)).unwrap();
        let block_of = |start: u32| start as usize / 10;
        let blocks = |split: &TextSplit| {
            let mut blocks: Vec<usize> = split.starts.iter().map(|&s| block_of(s)).collect();
            blocks.dedup();
            blocks
        };
        let (train, validation, test) = (
            blocks(&splits.train),
            blocks(&splits.validation),
            blocks(&splits.test),
        );
        assert_eq!(validation.len(), 2);
        assert_eq!(test.len(), 1);
        assert_eq!(train.len(), 7);
        for block in &train {
            assert!(!validation.contains(block) && !test.contains(block));
        }
        assert!(!validation.contains(&test[0]));
        // A window and its targets (context + 1 characters) never leave their block.
        for split in [&splits.train, &splits.validation, &splits.test] {
            for &start in &split.starts {
                assert_eq!(block_of(start), block_of(start + 4));
            }
        }
        // Training reads every start (6 per block of 10), evaluation every 4th (2 per block).
        assert_eq!(splits.train.len(), 7 * 6);
        assert_eq!(splits.validation.len(), 2 * 2);
        // The same seed deals the same blocks.
        assert_eq!(
            split_corpus(&text, 4, cut(3)).unwrap().test.starts,
            splits.test.starts
        );
    }

    #[test]
    fn batches_pair_each_character_with_the_next() {
        let text = "abcdefgh".repeat(7);
        let text = text.as_str();
        let splits = split_corpus(
            text,
            3,
            BlockSplit {
                block_size: 8,
                validation_size: 8,
                test_size: 8,
                seed: 0,
            },
        )
        .unwrap();
        let position = 0;
        let start = splits.train.starts[position] as usize;
        let (inputs, targets) = splits.train.batch(&[position]);
        assert_eq!(inputs.len(), 3);
        let decode = |ids: &[i64]| splits.vocabulary.decode(ids).unwrap();
        assert_eq!(decode(&inputs), text[start..start + 3]);
        assert_eq!(decode(&targets), text[start + 1..start + 4]);
    }

    #[test]
    fn symbols_missing_from_training_become_the_unknown_symbol() {
        // '!' sits in one block only; some seeds deal that block away from training.
        let text = format!("{}!{}", "ab".repeat(25), "ba".repeat(25));
        let mut unknown_seeds = 0;
        for seed in 0..20 {
            let splits = split_corpus(&text, 4, cut(seed)).unwrap();
            if splits.unknown_characters == 0 {
                assert_eq!(splits.vocabulary.symbols, vec!['!', 'a', 'b']);
                continue;
            }
            unknown_seeds += 1;
            assert_eq!(splits.unknown_characters, 1);
            assert_eq!(splits.vocabulary.symbols, vec!['a', 'b', UNKNOWN]);
            assert_eq!(
                splits.train.tokens[50], 2,
                "'!' is read as the unknown symbol"
            );
        }
        assert!(
            unknown_seeds > 0 && unknown_seeds < 20,
            "{unknown_seeds} of 20 seeds dealt '!' away from training"
        );
    }

    #[test]
    fn tiny_corpora_and_long_contexts_are_errors() {
        let text = format!("{}!{}", "ab".repeat(25), "ba".repeat(25));
        assert!(matches!(
            split_corpus("abcdefghij", 4, cut(0)),
            Err(DataError::Malformed { .. })
        ));
        assert!(matches!(
            split_corpus(&text, 12, cut(0)),
            Err(DataError::Malformed { .. })
        ));
    }
}
