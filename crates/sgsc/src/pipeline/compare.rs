//! `compare`: baseline, unsafe, distill and safe on the same harness, over several seeds
//! (METHOD.md §5); [`crate::report::compare`] tabulates them.
//!
//! For each seed: the `baseline` run is trained; its checkpoint is that seed's reference and its
//! preservation set is built from it; then `unsafe`, `distill` and `safe` all start from the
//! reference's weights. `distill` adds the reference's distillation on every training batch, as
//! `safe` does, so `unsafe` → `distill` → `safe` adds one thing at a time.
//!
//! Every compressing run ends at the same size, so the table compares accuracy at equal bytes.
//! With a target (`quant.target_bytes`) every compressing run steers to it and none waits for
//! another: the preservation set and then `safe` form one lane, `unsafe` and `distill` one lane
//! each, and with `jobs` > 1 the lanes share the threads from the start, one libtorch thread each
//! (on 2 cores: `safe`'s lane beside `unsafe`, then `distill` where `unsafe` ended). Without a
//! target, `safe` finds the smallest model within its budget first, on every thread, and
//! `unsafe` and `distill` then run side by side to its file length.
//!
//! A run whose folder already holds a `summary.json` is not trained again, and an interrupted
//! run resumes from its checkpoint, so a comparison can be stopped and restarted.

use super::run;
use crate::config::ExperimentConfig;
use crate::data::load_train_validation;
use crate::error::{Error, Result};
use crate::preserve::{build_and_save, PreservationOptions, PreservationSet, SplitInfo};
use crate::report::{read_summary, Summary, SUMMARY_FILE};
use crate::train::safety::{file_digest, load_reference};
use crate::train::trainer::{checkpoint_path, RunOptions};
use crate::train::Mode;
use std::path::{Path, PathBuf};
use tch::Device;

/// Where and how a comparison runs.
#[derive(Debug, Clone)]
pub struct ComparisonOptions {
    /// Training seeds; each trains all four modes.
    pub seeds: Vec<u64>,
    /// Folder holding one folder per run (`<mode>-seed<seed>`), plus `comparison.csv`.
    pub out_dir: PathBuf,
    /// Data folders to search, in order.
    pub data_dirs: Vec<PathBuf>,
    /// Where tensors live.
    pub device: Device,
    /// How the preservation sets are built.
    pub preservation: PreservationOptions,
    /// Show progress bars (only when runs go one at a time).
    pub progress: bool,
    /// Gamma of the safe runs when it differs from the config's (where the law starts).
    pub safe_gamma: Option<f64>,
    /// Config overrides (`section.key=value`) for the compressing runs only, for example a
    /// fine-tuning learning rate, since they start from the trained baseline.
    pub compress_overrides: Vec<String>,
    /// Lanes of compressing runs trained side by side, each on one libtorch thread (1: one run
    /// at a time, on every thread).
    pub jobs: usize,
}

/// Trains (or reloads) every run of the comparison and returns their summaries, seed by seed in
/// the order baseline, unsafe, distill, safe.
pub fn run_comparison(
    config: &ExperimentConfig,
    options: &ComparisonOptions,
) -> Result<Vec<Summary>> {
    // The compressing runs' config, checked before anything trains.
    let overrides_label = Path::new("<compress overrides>");
    let mut compressing = config.with_overrides(&options.compress_overrides, overrides_label)?;
    let safety = compressing.safety.take().ok_or_else(|| Error::Config {
        path: "<config>".into(),
        message: "compare needs a [safety] section for its distill and safe runs".into(),
    })?;
    let mut summaries = Vec::new();
    for &seed in &options.seeds {
        let mut seeded = config.clone();
        seeded.train.seed = seed;
        seeded.safety = None;
        let baseline_dir = options.out_dir.join(format!("baseline-seed{seed}"));
        summaries.push(run_once(&seeded, Mode::Baseline, &baseline_dir, options)?);

        let reference = checkpoint_path(&baseline_dir);
        let preservation_set = baseline_dir.join("preservation.json");
        let config_of = |mode: Mode, target: Option<i64>| -> Result<ExperimentConfig> {
            let mut run = compressing.clone();
            run.train.seed = seed;
            run.train.init_from = Some(reference.clone());
            run.quant.target_bytes = target;
            if mode.distils() {
                run.safety = Some(crate::config::SafetyConfig {
                    preservation_set: preservation_set.clone(),
                    reference: reference.clone(),
                    ..safety.clone()
                });
            }
            if let (Mode::Safe, Some(gamma)) = (mode, options.safe_gamma) {
                run.quant.gamma = gamma;
            }
            run.validate(Path::new("<compare>"))?;
            Ok(run)
        };
        let dir = |mode: Mode| options.out_dir.join(format!("{mode}-seed{seed}"));
        let safe_config = config_of(Mode::Safe, compressing.quant.target_bytes)?;
        // The preservation set, then safe: the one lane that needs the set.
        let preserve_then_safe = |options: &ComparisonOptions| -> Result<Summary> {
            let wanted = PreservationOptions {
                audit_share: safety.audit_share,
                ..options.preservation.clone()
            };
            ensure_preservation_set(&seeded, &reference, &preservation_set, &wanted, options)?;
            run_once(&safe_config, Mode::Safe, &dir(Mode::Safe), options)
        };
        // unsafe and distill, to `target`.
        let others = |target: i64| -> Result<Vec<(ExperimentConfig, Mode, PathBuf)>> {
            [Mode::Unsafe, Mode::Distill]
                .into_iter()
                .map(|mode| Ok((config_of(mode, Some(target))?, mode, dir(mode))))
                .collect()
        };
        match compressing.quant.target_bytes {
            // With a target nobody waits for anybody: safe's lane and the other two runs share
            // the threads from the start.
            Some(target) => {
                let others = others(target)?;
                let mut lanes: Vec<Lane<'_>> = vec![Box::new(preserve_then_safe)];
                lanes.extend(others.iter().map(lane_of));
                let mut done = run_in_lanes(lanes, options)?;
                let safe_run = done.remove(0);
                summaries.extend(done);
                summaries.push(safe_run);
            }
            // Without one, safe finds its size first, on every thread; the other two then run
            // to that size.
            None => {
                let safe_run = preserve_then_safe(options)?;
                tracing::info!(
                    "safe ended at {} B: unsafe and distill run to that size",
                    safe_run.size_bytes
                );
                let others = others(safe_run.size_bytes)?;
                summaries.extend(run_in_lanes(others.iter().map(lane_of).collect(), options)?);
                summaries.push(safe_run);
            }
        }
    }
    Ok(summaries)
}

/// Builds the seed's preservation set from its reference with the options `wanted`, unless a set
/// built so on the same split is there already (one of an older format, or built otherwise, is
/// rebuilt, and the log says why).
fn ensure_preservation_set(
    seeded: &ExperimentConfig,
    reference: &Path,
    preservation_set: &Path,
    wanted: &PreservationOptions,
    options: &ComparisonOptions,
) -> Result<()> {
    let split = SplitInfo::train(seeded.data.validation_size, seeded.data.split_seed);
    if preservation_set.exists() {
        match PreservationSet::load(preservation_set) {
            Ok(set) if set.options == *wanted && set.split == split => return Ok(()),
            Ok(_) => tracing::info!(
                "{}: built with other options or on another split; building it again",
                preservation_set.display()
            ),
            Err(e) => tracing::info!("{e}; building it again"),
        }
    }
    let network = load_reference(reference, seeded, options.device)?;
    let data = load_train_validation(&seeded.data, &seeded.model.input, &options.data_dirs)?;
    build_and_save(
        &network,
        reference,
        &data,
        split,
        &seeded.data.input,
        wanted.clone(),
        seeded.train.eval_batch_size,
        options.device,
        preservation_set,
        &preservation_set.with_extension("png"),
    )?;
    Ok(())
}

/// One lane's work: trains one or more runs, one after the other, and returns the last one's
/// summary. It takes the options it should run under (quiet ones in a shared lane).
type Lane<'a, T = Summary> = Box<dyn FnOnce(&ComparisonOptions) -> Result<T> + Send + 'a>;

/// The lane of one run (config, mode, folder).
fn lane_of((config, mode, dir): &(ExperimentConfig, Mode, PathBuf)) -> Lane<'_> {
    Box::new(move |options: &ComparisonOptions| run_once(config, *mode, dir, options))
}

/// Runs `lanes`, `options.jobs` at a time, each on one libtorch thread, and returns their
/// summaries in order. The lanes are taken in order as threads come free, so with 2 jobs and
/// three lanes the third starts when the first of the other two ends. With 1 job they run one
/// after the other on every thread.
fn run_in_lanes<T: Send>(lanes: Vec<Lane<'_, T>>, options: &ComparisonOptions) -> Result<Vec<T>> {
    if options.jobs <= 1 || lanes.len() <= 1 {
        return lanes.into_iter().map(|lane| lane(options)).collect();
    }
    let count = lanes.len();
    let queue = std::sync::Mutex::new(lanes.into_iter().enumerate());
    let results = std::sync::Mutex::new(Vec::with_capacity(count));
    let quiet = ComparisonOptions {
        progress: false,
        ..options.clone()
    };
    let threads = tch::get_num_threads();
    let panicked = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..options.jobs.min(count))
            .map(|_| {
                scope.spawn(|| {
                    // OpenMP's thread count is per thread: set it in the lane's own.
                    tch::set_num_threads(1);
                    loop {
                        let next = queue.lock().map(|mut queue| queue.next());
                        let Ok(Some((index, lane))) = next else {
                            break;
                        };
                        let result = lane(&quiet);
                        if let Ok(mut results) = results.lock() {
                            results.push((index, result));
                        }
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .filter_map(|worker| worker.join().err())
            .count()
            > 0
    });
    tch::set_num_threads(threads);
    let mut results = results.into_inner().unwrap_or_default();
    if panicked || results.len() != count {
        return Err(Error::Training("a comparison run panicked".into()));
    }
    results.sort_by_key(|(index, _)| *index);
    results.into_iter().map(|(_, result)| result).collect()
}

/// One run of the comparison, or its saved summary if it already finished.
fn run_once(
    config: &ExperimentConfig,
    mode: Mode,
    out_dir: &Path,
    options: &ComparisonOptions,
) -> Result<Summary> {
    if let Ok(summary) = read_summary(&out_dir.join(SUMMARY_FILE)) {
        // A finished safe run that another preservation set guarded (the set was built again
        // since, for example in a newer format) is not reused against a budget it never had. (A
        // half-finished one is refused when it resumes.)
        if let (Some(certificate), Some(safety)) = (&summary.safety, &config.safety) {
            let digest = file_digest(&safety.preservation_set)?;
            if certificate.preservation_set_sha256 != digest {
                return Err(Error::Checkpoint {
                    path: out_dir.join(SUMMARY_FILE),
                    message: format!(
                        "was guarded by another preservation set (sha256 {}, now {digest}); \
                         delete the run's folder or use another --out",
                        certificate.preservation_set_sha256
                    ),
                });
            }
        }
        tracing::info!("{} already finished; using its summary", out_dir.display());
        let saved = ExperimentConfig::load(&out_dir.join("config.toml"));
        if saved.as_ref().ok() != Some(config) {
            tracing::warn!(
                "{} was trained with another config than this comparison's (see its config.toml); \
                 delete the folder or use another --out to train it again",
                out_dir.display()
            );
        }
        return Ok(summary);
    }
    tracing::info!(
        "training {mode} (seed {}) into {}",
        config.train.seed,
        out_dir.display()
    );
    let run_options = RunOptions {
        mode,
        out_dir: out_dir.to_path_buf(),
        data_dirs: options.data_dirs.clone(),
        resume: true,
        device: options.device,
        progress: options.progress,
        stop_at: None,
    };
    let (summary, _) = run(config, &run_options)?.ok_or_else(|| {
        Error::Training(format!(
            "{} stopped before its last step",
            out_dir.display()
        ))
    })?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    fn options(jobs: usize) -> ComparisonOptions {
        ComparisonOptions {
            seeds: vec![0],
            out_dir: PathBuf::from("unused"),
            data_dirs: Vec::new(),
            device: Device::Cpu,
            preservation: PreservationOptions::default(),
            progress: true,
            safe_gamma: None,
            compress_overrides: Vec::new(),
            jobs,
        }
    }

    /// Two jobs, three lanes: the first two start at once, the third where one of them ended;
    /// the results come back in the lanes' order, and a lane's error after every lane has run.
    #[test]
    fn lanes_share_threads_in_order() {
        let spans = Mutex::new(vec![None; 3]);
        let running = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let lane = |index: usize, millis: u64| -> Lane<'_, usize> {
            let (spans, running, most) = (&spans, &running, &most);
            Box::new(move |options: &ComparisonOptions| {
                assert!(!options.progress, "a shared lane runs quietly");
                let start = Instant::now();
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(millis));
                running.fetch_sub(1, Ordering::SeqCst);
                spans.lock().unwrap()[index] = Some((start, Instant::now()));
                Ok(10 * index)
            })
        };
        let results = run_in_lanes(vec![lane(0, 200), lane(1, 50), lane(2, 50)], &options(2));
        assert_eq!(results.unwrap(), vec![0, 10, 20]);
        assert_eq!(most.load(Ordering::SeqCst), 2);
        let spans: Vec<(Instant, Instant)> =
            spans.into_inner().unwrap().into_iter().flatten().collect();
        let first_end = spans[0].1.min(spans[1].1);
        assert!(
            spans[2].0 >= first_end,
            "the third lane waits for a free thread"
        );

        let ran = AtomicUsize::new(0);
        let failing: Vec<Lane<'_, usize>> = (0..3usize)
            .map(|index| {
                let ran = &ran;
                Box::new(move |_: &ComparisonOptions| {
                    ran.fetch_add(1, Ordering::SeqCst);
                    if index == 0 {
                        Err(Error::Training("lane 0 failed".into()))
                    } else {
                        Ok(index)
                    }
                }) as Lane<'_, usize>
            })
            .collect();
        let error = run_in_lanes(failing, &options(2)).unwrap_err();
        assert!(matches!(error, Error::Training(ref message) if message == "lane 0 failed"));
        assert_eq!(ran.load(Ordering::SeqCst), 3, "the other lanes still ran");
    }

    /// One job: the lanes run one after the other on the caller's thread, with its options.
    #[test]
    fn one_job_runs_lanes_in_turn() {
        let lanes: Vec<Lane<'_, bool>> = (0..2)
            .map(|_| Box::new(|options: &ComparisonOptions| Ok(options.progress)) as Lane<'_, bool>)
            .collect();
        assert_eq!(run_in_lanes(lanes, &options(1)).unwrap(), vec![true, true]);
    }
}
