//! Running a sweep's runs as separate `sgsc train` (and `sgsc preserve`) processes, a few at a
//! time. A run whose folder holds its `summary.json` (and, for a preserving stage, its
//! `preservation.json`) is finished and skipped, and one with a checkpoint but no summary is
//! resumed from it, so a killed sweep picks up where it stopped. A lock file in each run's
//! folder keeps two sweeps from training the same run at once.

use super::PlannedRun;
use crate::error::{Error, Result};
use crate::train::trainer::checkpoint_path;
use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// How a sweep's processes are started.
#[derive(Debug, Clone)]
pub struct RunnerOptions {
    /// The `sgsc` executable each run calls (normally the running one).
    pub executable: PathBuf,
    /// The base experiment config.
    pub config: PathBuf,
    /// Data folder passed on to each run.
    pub data_dir: Option<PathBuf>,
    /// Runs at once.
    pub parallel: usize,
    /// Threads each run's libtorch and rayon may use (`OMP_NUM_THREADS`, `RAYON_NUM_THREADS`).
    pub threads_per_run: usize,
}

/// What became of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunStatus {
    /// It had finished before: nothing was done.
    AlreadyFinished,
    /// It was trained (or resumed) to the end now.
    Finished,
    /// Another sweep process holds its lock.
    Busy,
    /// A process failed; the message says which and where its log is.
    Failed(String),
}

impl RunStatus {
    /// Why `run` did not finish, for the sweep's output; `None` when it did (now or before).
    pub fn failure(&self, run: &PlannedRun) -> Option<String> {
        match self {
            RunStatus::Failed(message) => Some(format!("{}: {message}", run.name)),
            RunStatus::Busy => Some(format!(
                "{}: another process holds {}",
                run.name,
                lock_path(&run.dir).display()
            )),
            RunStatus::AlreadyFinished | RunStatus::Finished => None,
        }
    }
}

/// The lock file of a run's folder (see [`RunLock`]).
fn lock_path(dir: &Path) -> PathBuf {
    dir.join("sweep.lock")
}

/// A finished run's files: its summary and, where its stage preserves, its preservation set.
pub fn is_finished(run: &PlannedRun) -> bool {
    run.dir.join("summary.json").is_file() && (!run.preserve || has_preservation_set(&run.dir))
}

/// Whether the run folder `dir` holds a preservation set of the current format (an older or
/// damaged one is built again).
fn has_preservation_set(dir: &Path) -> bool {
    crate::preserve::PreservationSet::load(&dir.join("preservation.json")).is_ok()
}

/// Runs `runs` (one stage's) with `options.parallel` at a time; returns each run's status in
/// the order given.
pub fn run_all(runs: &[PlannedRun], options: &RunnerOptions) -> Vec<RunStatus> {
    let queue = Mutex::new((0..runs.len()).collect::<VecDeque<_>>());
    let statuses = Mutex::new(vec![RunStatus::Busy; runs.len()]);
    std::thread::scope(|scope| {
        for _ in 0..options.parallel.max(1).min(runs.len().max(1)) {
            scope.spawn(|| loop {
                let Some(index) = queue
                    .lock()
                    .map(|mut queue| queue.pop_front())
                    .ok()
                    .flatten()
                else {
                    return;
                };
                let status = run_one(&runs[index], options)
                    .unwrap_or_else(|error| RunStatus::Failed(error.to_string()));
                if let Ok(mut statuses) = statuses.lock() {
                    statuses[index] = status;
                }
            });
        }
    });
    statuses
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Trains one run (resuming it if it has a checkpoint) and builds its preservation set if its
/// stage asks for one; output goes to `sweep.log` in its folder.
pub fn run_one(run: &PlannedRun, options: &RunnerOptions) -> Result<RunStatus> {
    if is_finished(run) {
        // Clears the lock a sweep killed between the run's end and the lock's removal left.
        drop(RunLock::take(&run.dir)?);
        return Ok(RunStatus::AlreadyFinished);
    }
    std::fs::create_dir_all(&run.dir).map_err(|source| Error::io(&run.dir, source))?;
    let Some(lock) = RunLock::take(&run.dir)? else {
        return Ok(RunStatus::Busy);
    };
    let log_path = run.dir.join("sweep.log");
    if !run.dir.join("summary.json").is_file() {
        let mut train = command(options, "train", &log_path)?;
        train
            .arg("--config")
            .arg(&options.config)
            .args(["--mode", &run.mode.to_string(), "--device", &run.device])
            .arg("--out")
            .arg(&run.dir);
        for value in &run.overrides {
            train.args(["--set", value]);
        }
        if checkpoint_path(&run.dir).is_file() {
            train.arg("--resume");
        }
        if let Some(status) = finish(train, "sgsc train", &log_path, &lock)? {
            return Ok(status);
        }
    }
    if run.preserve && !has_preservation_set(&run.dir) {
        let mut preserve = command(options, "preserve", &log_path)?;
        preserve
            .arg("--reference")
            .arg(checkpoint_path(&run.dir))
            .args(["--device", &run.device]);
        if let Some(status) = finish(preserve, "sgsc preserve", &log_path, &lock)? {
            return Ok(status);
        }
    }
    Ok(RunStatus::Finished)
}

/// `sgsc <subcommand>` with the run's thread limits, data folder and log file.
fn command(options: &RunnerOptions, subcommand: &str, log_path: &Path) -> Result<Command> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .map_err(|source| Error::io(log_path, source))?;
    let errors = log
        .try_clone()
        .map_err(|source| Error::io(log_path, source))?;
    let mut command = Command::new(&options.executable);
    command.arg(subcommand);
    let threads = options.threads_per_run.max(1).to_string();
    command
        .env("OMP_NUM_THREADS", &threads)
        .env("MKL_NUM_THREADS", &threads)
        .env("RAYON_NUM_THREADS", &threads)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(errors);
    if let Some(dir) = &options.data_dir {
        command.arg("--data-dir").arg(dir);
    }
    Ok(command)
}

/// Runs `command` to its end, the lock naming it meanwhile; `None` when it succeeded, else the
/// failed status.
fn finish(
    mut command: Command,
    what: &str,
    log_path: &Path,
    lock: &RunLock,
) -> Result<Option<RunStatus>> {
    let mut child = command
        .spawn()
        .map_err(|source| Error::io(log_path, source))?;
    lock.hand_to(child.id())?;
    let status = child.wait().map_err(|source| Error::io(log_path, source))?;
    lock.hand_to(std::process::id())?;
    Ok((!status.success()).then(|| {
        RunStatus::Failed(format!(
            "{what} exited with {status}; see {}",
            log_path.display()
        ))
    }))
}

/// `sweep.lock` in a run's folder, holding the process id of whoever works on the run: the
/// sweep, and while a training process it started runs, that process (which would outlive a
/// sweep killed on its own). A lock whose process is gone is taken over. Best effort: the lock
/// names a process of this machine, so two machines sharing a folder must not sweep it at once.
struct RunLock {
    path: PathBuf,
}

impl RunLock {
    /// Takes the run's lock, or `None` when a live process holds it.
    fn take(dir: &Path) -> Result<Option<RunLock>> {
        let path = lock_path(dir);
        let own = std::process::id().to_string();
        // The lock appears whole or not at all: written beside it, then linked into place.
        let staged = dir.join(format!("sweep.lock.{own}"));
        std::fs::write(&staged, &own).map_err(|source| Error::io(&staged, source))?;
        let taken = Self::link(&staged, &path);
        let _ = std::fs::remove_file(&staged);
        taken
    }

    fn link(staged: &Path, path: &Path) -> Result<Option<RunLock>> {
        for _ in 0..2 {
            match std::fs::hard_link(staged, path) {
                Ok(()) => {
                    return Ok(Some(RunLock {
                        path: path.to_path_buf(),
                    }))
                }
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                    let owner = std::fs::read_to_string(path).unwrap_or_default();
                    if lock_holder_alive(path, owner.trim()) {
                        return Ok(None);
                    }
                    // Stale: removed only if it still names the dead process.
                    if std::fs::read_to_string(path).unwrap_or_default() == owner {
                        match std::fs::remove_file(path) {
                            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                                return Err(Error::io(path, error))
                            }
                            _ => {}
                        }
                    }
                }
                Err(source) => return Err(Error::io(path, source)),
            }
        }
        Ok(None)
    }

    /// Names `pid` as the run's worker.
    fn hand_to(&self, pid: u32) -> Result<()> {
        std::fs::write(&self.path, pid.to_string()).map_err(|source| Error::io(&self.path, source))
    }
}

impl Drop for RunLock {
    /// Removes the lock if it still names this sweep or a process of it that has ended (another
    /// sweep may have taken over a lock that looked stale).
    fn drop(&mut self) {
        let owner = std::fs::read_to_string(&self.path).unwrap_or_default();
        let owner = owner.trim();
        if owner == std::process::id().to_string() || !lock_holder_alive(&self.path, owner) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Whether the process a lock names is running: it is in `/proc`, not a zombie (a killed
/// process nobody has reaped), and started before the lock was last written (so a process that
/// merely reuses the id, after a reboot say, does not count). A lock that is not a number counts
/// as live, and so does every lock where there is no `/proc` (not Linux): delete a stale
/// `sweep.lock` by hand there.
fn lock_holder_alive(lock: &Path, pid: &str) -> bool {
    let Ok(pid) = pid.parse::<u32>() else {
        return true;
    };
    if !Path::new("/proc/self").exists() {
        return true;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (name) state ... starttime ...": the fields after the name, starttime the 20th.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return false;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return false;
    }
    let started = fields
        .get(19)
        .and_then(|ticks| ticks.parse::<u64>().ok())
        .zip(boot_time());
    let written = std::fs::metadata(lock)
        .and_then(|meta| meta.modified())
        .ok();
    match (started, written) {
        // /proc counts in USER_HZ, 100 ticks a second on Linux.
        (Some((ticks, boot)), Some(written)) => {
            let started = boot + std::time::Duration::from_millis(ticks * 10);
            started <= written + std::time::Duration::from_secs(2)
        }
        _ => true,
    }
}

/// When the machine booted (`btime` of `/proc/stat`).
fn boot_time() -> Option<std::time::SystemTime> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let seconds = stat.lines().find_map(|line| line.strip_prefix("btime "))?;
    let seconds = seconds.trim().parse::<u64>().ok()?;
    Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_is_live_only_while_the_process_that_wrote_it_runs() {
        let folder = tempfile::tempdir().unwrap();
        let lock = folder.path().join("sweep.lock");
        let own = std::process::id().to_string();
        std::fs::write(&lock, &own).unwrap();
        assert!(
            lock_holder_alive(&lock, &own),
            "this process, lock written now"
        );
        assert!(
            lock_holder_alive(&lock, "not a pid"),
            "unreadable locks count as live"
        );
        assert!(!lock_holder_alive(&lock, "4000000000"), "no such process");
        if Path::new("/proc/self").exists() {
            // A lock written a day before this process started names another process that
            // happened to have the same id.
            let day_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(86_400);
            let file = std::fs::File::options().write(true).open(&lock).unwrap();
            file.set_modified(day_ago).unwrap();
            assert!(!lock_holder_alive(&lock, &own), "a reused process id");
        }
    }

    #[test]
    fn a_run_lock_is_taken_once_and_released_on_drop() {
        let folder = tempfile::tempdir().unwrap();
        let first = RunLock::take(folder.path()).unwrap().expect("free");
        assert!(
            RunLock::take(folder.path()).unwrap().is_none(),
            "held by this process"
        );
        drop(first);
        assert!(!folder.path().join("sweep.lock").exists());
        assert!(
            RunLock::take(folder.path()).unwrap().is_some(),
            "free again"
        );
    }
}
