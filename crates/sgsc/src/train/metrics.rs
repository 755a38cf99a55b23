//! The run's metrics log: one JSON object per line (`metrics.jsonl`), each with a `step` field.

use crate::error::{Error, Result};
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Appends JSON lines to a run's metrics file.
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsLog {
    /// Opens the log for a run starting at `resume_step`: lines from steps after it (written by an
    /// interrupted run past its last checkpoint) are dropped, so the log never repeats a step.
    pub fn open(path: &Path, resume_step: i64) -> Result<Self> {
        let io = |source| Error::io(path, source);
        let kept: Vec<String> = match std::fs::read_to_string(path) {
            Ok(text) if resume_step > 0 => text
                .lines()
                .filter(|line| {
                    serde_json::from_str::<serde_json::Value>(line)
                        .ok()
                        .and_then(|value| value.get("step").and_then(|s| s.as_i64()))
                        .is_some_and(|step| step <= resume_step)
                })
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        };
        let mut file = std::fs::File::create(path).map_err(io)?;
        for line in kept {
            writeln!(file, "{line}").map_err(io)?;
        }
        Ok(MetricsLog {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Appends one record.
    pub fn write(&mut self, record: &impl Serialize) -> Result<()> {
        let line = serde_json::to_string(record).map_err(|e| Error::Training(e.to_string()))?;
        writeln!(self.file, "{line}").map_err(|source| Error::io(&self.path, source))
    }
}
