//! Sweeps: many runs of one experiment config over a grid or a list of config values, run as
//! separate `sgsc train` processes ([`runner`]) or as a Slurm job array ([`slurm`]).
//!
//! A sweep file names the base config, the output folder and one or more stages. Each stage
//! expands into runs: every combination of its `grid` values, crossed with each entry of its
//! `list` (if any), on top of its `set` values. A value is a config key (`quant.gamma`), or one
//! of the run's own settings, `mode` and `device`. Stages run in order, so a later stage can use
//! an earlier one's results: `{key}` in a string value or in the run's `name` becomes the run's
//! value of that key, and `{out}` the sweep's folder, as in
//! `"safety.reference" = "{out}/baseline-seed{train.seed}/checkpoint.safetensors"`.

pub mod runner;
pub mod slurm;

use crate::config::ExperimentConfig;
use crate::error::{Error, Result};
use crate::train::Mode;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Config keys (and `mode`, `device`) with their values, in the file's order.
pub type Values = toml::map::Map<String, toml::Value>;

/// A sweep file (`sgsc sweep --config sweep.toml`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepConfig {
    /// Experiment config every run starts from.
    pub config: PathBuf,
    /// Folder holding one folder per run.
    pub out: PathBuf,
    /// Runs at once (default: one per core on the CPU, each on one thread).
    #[serde(default)]
    pub parallel: Option<usize>,
    /// Stages, in order: every run of a stage finishes before the next stage starts.
    pub stage: Vec<Stage>,
}

/// One stage of a sweep.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    /// Name of each run's folder, a template (`"{mode}-g{quant.gamma}-seed{train.seed}"`).
    pub name: String,
    /// Values every run of the stage sets.
    #[serde(default)]
    pub set: Values,
    /// Keys with lists of values; every combination is a run, in the file's order with the last
    /// key varying fastest.
    #[serde(default)]
    pub grid: Values,
    /// Explicit variants, each a table of values, crossed with every grid combination.
    #[serde(default)]
    pub list: Vec<Values>,
    /// Build each run's preservation set from its checkpoint once it finishes (for baselines
    /// that later `safe` runs use as their reference).
    #[serde(default)]
    pub preserve: bool,
}

/// One run of a sweep, ready to start.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedRun {
    /// Index of its stage.
    pub stage: usize,
    /// Its folder's name.
    pub name: String,
    /// Its folder.
    pub dir: PathBuf,
    /// Training mode.
    pub mode: Mode,
    /// `cpu` or `cuda`.
    pub device: String,
    /// Config overrides, `section.key=value` in TOML syntax, for `sgsc train --set`.
    pub overrides: Vec<String>,
    /// Build its preservation set afterwards.
    pub preserve: bool,
}

impl SweepConfig {
    /// Reads and checks a sweep file.
    pub fn load(path: &Path) -> Result<SweepConfig> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::io(path, source))?;
        Self::parse(&text, path)
    }

    /// Parses and checks the text of a sweep file (`path` only names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<SweepConfig> {
        let mut sweep: SweepConfig = toml::from_str(text).map_err(|error| Error::Config {
            path: path.to_path_buf(),
            message: error.to_string(),
        })?;
        if sweep.stage.is_empty() {
            return Err(sweep_error(path, "a sweep needs at least one [[stage]]"));
        }
        if sweep.parallel == Some(0) {
            return Err(sweep_error(path, "parallel must be at least 1"));
        }
        // `train.steps = 10` without quotes is a nested table in TOML: read it as "train.steps".
        for stage in &mut sweep.stage {
            stage.set = flatten(&stage.set);
            stage.grid = flatten(&stage.grid);
            stage.list = stage.list.iter().map(flatten).collect();
        }
        Ok(sweep)
    }

    /// Every run of every stage, in order. Each run's overrides are applied to the base config
    /// here, so a misspelt key or a bad value fails before anything trains; so do two runs with
    /// the same folder name.
    pub fn expand(&self, path: &Path) -> Result<Vec<PlannedRun>> {
        let mut runs: Vec<PlannedRun> = Vec::new();
        for (index, stage) in self.stage.iter().enumerate() {
            for values in stage.combinations(path)? {
                let run = self.plan(index, stage, &values, path)?;
                if runs.iter().any(|other| other.name == run.name) {
                    return Err(sweep_error(
                        path,
                        &format!(
                            "two runs are both named {:?}: put the swept keys in the stage's name",
                            run.name
                        ),
                    ));
                }
                runs.push(run);
            }
        }
        Ok(runs)
    }

    fn plan(
        &self,
        stage_index: usize,
        stage: &Stage,
        values: &Values,
        path: &Path,
    ) -> Result<PlannedRun> {
        let fill = |template: &str| fill_template(template, values, &self.out, path);
        let name = fill(&stage.name)?;
        if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
            return Err(sweep_error(path, &format!("{name:?} is not a folder name")));
        }
        let text = |key: &str, default: &str| -> Result<String> {
            match values.get(key) {
                None => Ok(default.to_string()),
                Some(toml::Value::String(value)) => fill(value),
                Some(other) => Err(sweep_error(
                    path,
                    &format!("{key} must be a string, not {other}"),
                )),
            }
        };
        let mode: Mode = text("mode", "unsafe")?
            .parse()
            .map_err(|message: String| sweep_error(path, &message))?;
        let device = text("device", "cpu")?;
        if device != "cpu" && device != "cuda" {
            return Err(sweep_error(
                path,
                &format!("device {device:?}: expected cpu or cuda"),
            ));
        }
        let mut overrides = Vec::new();
        for (key, value) in values {
            if key == "mode" || key == "device" {
                continue;
            }
            let value = match value {
                toml::Value::String(text) => toml::Value::String(fill(text)?),
                other => other.clone(),
            };
            overrides.push(format!("{key}={value}"));
        }
        // Parses the config with these overrides: unknown keys and bad values fail here.
        ExperimentConfig::load_with_overrides(&self.config, &overrides)?;
        Ok(PlannedRun {
            stage: stage_index,
            dir: self.out.join(&name),
            name,
            mode,
            device,
            overrides,
            preserve: stage.preserve,
        })
    }
}

impl Stage {
    /// The values of each run: `set`, then one grid combination, then one list entry (later
    /// ones win where keys repeat).
    fn combinations(&self, path: &Path) -> Result<Vec<Values>> {
        let mut points = vec![self.set.clone()];
        for (key, choices) in &self.grid {
            let choices = match choices {
                toml::Value::Array(choices) if !choices.is_empty() => choices,
                _ => {
                    return Err(sweep_error(
                        path,
                        &format!("grid.{key:?} must be a list of one or more values"),
                    ))
                }
            };
            points = points
                .iter()
                .flat_map(|point| {
                    choices.iter().map(move |choice| {
                        let mut point = point.clone();
                        point.insert(key.clone(), choice.clone());
                        point
                    })
                })
                .collect();
        }
        if self.list.is_empty() {
            return Ok(points);
        }
        Ok(points
            .iter()
            .flat_map(|point| {
                self.list.iter().map(move |entry| {
                    let mut point = point.clone();
                    point.extend(entry.clone());
                    point
                })
            })
            .collect())
    }
}

/// Nested tables as dotted keys (`{ train = { steps = 10 } }` as `"train.steps" = 10`), in order.
fn flatten(values: &Values) -> Values {
    fn walk(prefix: &str, values: &Values, flat: &mut Values) {
        for (key, value) in values {
            let key = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            match value {
                toml::Value::Table(inner) => walk(&key, inner, flat),
                other => {
                    flat.insert(key, other.clone());
                }
            }
        }
    }
    let mut flat = Values::new();
    walk("", values, &mut flat);
    flat
}

/// Replaces each `{key}` in `template` by the run's value of `key` (strings without quotes,
/// numbers as written by Rust: `0.5`, `2`), and `{out}` by the sweep's folder.
fn fill_template(template: &str, values: &Values, out: &Path, path: &Path) -> Result<String> {
    let mut filled = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        filled.push_str(&rest[..open]);
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| sweep_error(path, &format!("unclosed {{ in {template:?}")))?
            + open;
        let key = &rest[open + 1..close];
        let value = match (key, values.get(key)) {
            ("out", _) => out.display().to_string(),
            (_, Some(toml::Value::String(text))) => text.clone(),
            (_, Some(toml::Value::Float(number))) => number.to_string(),
            (_, Some(toml::Value::Integer(number))) => number.to_string(),
            (_, Some(toml::Value::Boolean(flag))) => flag.to_string(),
            (_, Some(other)) => other.to_string(),
            (_, None) => {
                return Err(sweep_error(
                    path,
                    &format!("{template:?} uses {{{key}}}, which this stage does not set"),
                ))
            }
        };
        filled.push_str(&value);
        rest = &rest[close + 1..];
    }
    filled.push_str(rest);
    Ok(filled)
}

fn sweep_error(path: &Path, message: &str) -> Error {
    Error::Config {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sweep over the shipped MNIST config, parsed from `text` (which omits `config`).
    fn sweep(text: &str) -> SweepConfig {
        let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/mnist-cnn.toml");
        let text = format!(
            "config = {:?}\nout = \"runs/s\"\n{text}",
            config.display().to_string()
        );
        SweepConfig::parse(&text, Path::new("sweep.toml")).expect("the sweep parses")
    }

    fn names_and_overrides(sweep: &SweepConfig) -> Vec<(String, Vec<String>)> {
        sweep
            .expand(Path::new("sweep.toml"))
            .expect("the sweep expands")
            .into_iter()
            .map(|run| (run.name, run.overrides))
            .collect()
    }

    #[test]
    fn a_grid_is_the_product_in_file_order_with_set_values_and_templates() {
        let sweep = sweep(
            r#"
            [[stage]]
            name = "{mode}-g{quant.gamma}-s{train.seed}"
            set = { "train.steps" = 10, "train.init_from" = "{out}/base-{train.seed}.safetensors" }
            grid = { "quant.gamma" = [0.5, 2.0], "train.seed" = [0, 1], mode = ["unsafe", "safe"] }
            "#,
        );
        let runs = sweep.expand(Path::new("sweep.toml")).unwrap();
        let names: Vec<&str> = runs.iter().map(|run| run.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "unsafe-g0.5-s0",
                "safe-g0.5-s0",
                "unsafe-g0.5-s1",
                "safe-g0.5-s1",
                "unsafe-g2-s0",
                "safe-g2-s0",
                "unsafe-g2-s1",
                "safe-g2-s1",
            ]
        );
        assert_eq!(runs[1].mode, Mode::Safe);
        assert_eq!(runs[1].dir, Path::new("runs/s/safe-g0.5-s0"));
        assert_eq!(runs[1].device, "cpu");
        assert_eq!(
            runs[1].overrides,
            [
                "train.steps=10",
                "train.init_from=\"runs/s/base-0.safetensors\"",
                "quant.gamma=0.5",
                "train.seed=0",
            ]
        );
    }

    #[test]
    fn a_list_crosses_the_grid_and_overrides_set_values() {
        let sweep = sweep(
            r#"
            [[stage]]
            name = "lr{train.learning_rate}-b{train.batch_size}"
            set = { "train.learning_rate" = 0.001, "train.steps" = 5 }
            grid = { "train.batch_size" = [64, 128] }
            list = [{ "train.learning_rate" = 0.01 }, { "train.learning_rate" = 0.1 }]
            "#,
        );
        let run = |name: &str, rate: &str, batch: &str| {
            let overrides = [
                format!("train.learning_rate={rate}"),
                "train.steps=5".into(),
                format!("train.batch_size={batch}"),
            ];
            (name.to_string(), overrides.to_vec())
        };
        assert_eq!(
            names_and_overrides(&sweep),
            [
                run("lr0.01-b64", "0.01", "64"),
                run("lr0.1-b64", "0.1", "64"),
                run("lr0.01-b128", "0.01", "128"),
                run("lr0.1-b128", "0.1", "128"),
            ]
        );
    }

    #[test]
    fn unquoted_dotted_keys_name_single_values() {
        let sweep = sweep(
            r#"
            [[stage]]
            name = "s{train.seed}"
            set = { train.steps = 10, quant = { gamma = 0.5 } }
            grid = { train.seed = [1, 2] }
            "#,
        );
        assert_eq!(
            names_and_overrides(&sweep),
            [
                (
                    "s1".into(),
                    vec![
                        "train.steps=10".into(),
                        "quant.gamma=0.5".into(),
                        "train.seed=1".into()
                    ]
                ),
                (
                    "s2".into(),
                    vec![
                        "train.steps=10".into(),
                        "quant.gamma=0.5".into(),
                        "train.seed=2".into()
                    ]
                ),
            ]
        );
    }

    #[test]
    fn stages_run_in_order_and_flag_preservation() {
        let sweep = sweep(
            r#"
            [[stage]]
            name = "baseline-{train.seed}"
            preserve = true
            set = { mode = "baseline" }
            grid = { "train.seed" = [3] }
            [[stage]]
            name = "safe"
            set = { mode = "safe", device = "cuda" }
            "#,
        );
        let runs = sweep.expand(Path::new("sweep.toml")).unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(
            (runs[0].stage, runs[0].mode, runs[0].preserve),
            (0, Mode::Baseline, true)
        );
        assert_eq!(
            (runs[1].stage, runs[1].mode, runs[1].preserve),
            (1, Mode::Safe, false)
        );
        assert_eq!(runs[1].device, "cuda");
    }

    #[test]
    fn mistakes_fail_before_anything_runs() {
        let expand = |text: &str| {
            sweep(text)
                .expand(Path::new("sweep.toml"))
                .unwrap_err()
                .to_string()
        };
        let error = expand("[[stage]]\nname = \"a\"\ngrid = { \"quant.gamaa\" = [1.0] }");
        assert!(error.contains("gamaa"), "{error}");
        let error = expand("[[stage]]\nname = \"same\"\ngrid = { \"quant.gamma\" = [1.0, 2.0] }");
        assert!(
            error.contains("two runs are both named \"same\""),
            "{error}"
        );
        let error = expand("[[stage]]\nname = \"{train.seed}\"");
        assert!(error.contains("does not set"), "{error}");
        let error = expand("[[stage]]\nname = \"a\"\nset = { mode = \"fast\" }");
        assert!(error.contains("unknown mode"), "{error}");
        let error = expand("[[stage]]\nname = \"a\"\ngrid = { \"quant.gamma\" = 1.0 }");
        assert!(error.contains("must be a list"), "{error}");
        let error = expand("[[stage]]\nname = \"a\"\ngrid = { \"quant.gamma\" = [] }");
        assert!(error.contains("one or more values"), "{error}");
        let error = expand("[[stage]]\nname = \"a\"\nset = { device = \"gpu\" }");
        assert!(error.contains("expected cpu or cuda"), "{error}");
        let unknown =
            SweepConfig::parse("config = \"c\"\nout = \"o\"\nstages = []", Path::new("s"));
        assert!(unknown.unwrap_err().to_string().contains("unknown field"));
    }
}
