//! `sgsc sweep` end to end: a sweep killed part way (the whole process group, as Ctrl-C does)
//! resumes without training its finished runs again; `--emit slurm` writes chained job arrays.

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// A sweep of three 3-step unsafe runs of the shipped MNIST config into `folder/runs`.
fn write_sweep(folder: &Path) -> std::path::PathBuf {
    let config = common::workspace().join("configs/mnist-cnn.toml");
    let text = format!(
        "config = {config:?}\nout = {out:?}\n\
         [[stage]]\nname = \"g{{quant.gamma}}\"\n\
         set = {{ \"train.steps\" = 3, \"train.eval_every\" = 3, \"train.checkpoint_every\" = 3 }}\n\
         grid = {{ \"quant.gamma\" = [0.1, 0.2, 0.3] }}\n",
        config = config.display().to_string(),
        out = folder.join("runs").display().to_string(),
    );
    let path = folder.join("sweep.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The first data folder that exists (passed on with `--data-dir`, which every run must get).
fn data_dir() -> std::path::PathBuf {
    common::data_dirs()
        .into_iter()
        .find(|dir| dir.is_dir())
        .expect("a data folder")
}

fn sweep_command(sweep: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sgsc"));
    command
        .arg("sweep")
        .arg("--config")
        .arg(sweep)
        .args(["--parallel", "1", "--threads", "1"])
        .arg("--data-dir")
        .arg(data_dir())
        .env_remove("SGSC_DATA_DIR");
    command
}

#[test]
fn a_killed_sweep_resumes_without_repeating_finished_runs() {
    let _lock = common::training_lock();
    let folder = tempfile::tempdir().unwrap();
    let sweep = write_sweep(folder.path());
    let first_summary = folder.path().join("runs/g0.1/summary.json");

    // Start the sweep in its own process group and kill the group once the first run is done.
    let mut running = sweep_command(&sweep).process_group(0).spawn().unwrap();
    let started = Instant::now();
    while !first_summary.is_file() {
        assert!(
            running.try_wait().unwrap().is_none(),
            "the sweep ended early"
        );
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "no run finished"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let group = format!("-{}", running.id());
    let killed = Command::new("kill")
        .args(["-KILL", "--", &group])
        .status()
        .unwrap();
    assert!(killed.success());
    running.wait().unwrap();
    let finished_at = std::fs::metadata(&first_summary)
        .unwrap()
        .modified()
        .unwrap();
    assert!(
        !folder.path().join("runs/g0.3/summary.json").exists(),
        "the sweep was killed before its last run"
    );

    // Again: the first run is skipped, the others are trained (or resumed) to the end.
    let output = sweep_command(&sweep).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("3 runs in 1 stages, 1 already finished")
            || stdout.contains("2 already finished"),
        "{stdout}"
    );
    assert!(stdout.contains("stage 0: 3 of 3 runs finished"), "{stdout}");
    for gamma in ["0.1", "0.2", "0.3"] {
        let run = folder.path().join(format!("runs/g{gamma}"));
        assert!(
            run.join("summary.json").is_file(),
            "g{gamma} has no summary"
        );
        assert!(
            run.join("model.sgsc").is_file(),
            "g{gamma} has no model file"
        );
        assert!(!run.join("sweep.lock").exists(), "g{gamma} is still locked");
    }
    let modified = std::fs::metadata(&first_summary)
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(modified, finished_at, "the finished run was trained again");
}

#[test]
fn slurm_scripts_chain_one_job_array_per_stage() {
    let folder = tempfile::tempdir().unwrap();
    let config = common::workspace().join("configs/mnist-cnn.toml");
    let sweep = folder.path().join("sweep.toml");
    std::fs::write(
        &sweep,
        format!(
            "config = {:?}\nout = {:?}\n\
             [[stage]]\nname = \"base-{{train.seed}}\"\npreserve = true\nset = {{ mode = \"baseline\" }}\n\
             grid = {{ \"train.seed\" = [0, 1] }}\n\
             [[stage]]\nname = \"{{mode}}-{{train.seed}}\"\nset = {{ device = \"cuda\" }}\n\
             grid = {{ \"train.seed\" = [0, 1], mode = [\"unsafe\", \"safe\"] }}\n",
            config.display().to_string(),
            folder.path().join("runs").display().to_string()
        ),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_sgsc"))
        .arg("sweep")
        .arg("--config")
        .arg(&sweep)
        .args(["--emit", "slurm", "--threads", "4"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let slurm = folder.path().join("runs/slurm");
    let first = std::fs::read_to_string(slurm.join("stage-0.sbatch")).unwrap();
    let second = std::fs::read_to_string(slurm.join("stage-1.sbatch")).unwrap();
    assert!(first.contains("#SBATCH --array=0-1\n"), "{first}");
    assert!(first.contains("#SBATCH --cpus-per-task=4\n"), "{first}");
    assert!(!first.contains("--gres"), "{first}");
    assert!(
        first.contains("--stage 0 --index \"$SLURM_ARRAY_TASK_ID\""),
        "{first}"
    );
    assert!(second.contains("#SBATCH --array=0-3\n"), "{second}");
    assert!(second.contains("#SBATCH --gres=gpu:1\n"), "{second}");
    let submit = std::fs::read_to_string(slurm.join("submit.sh")).unwrap();
    assert!(
        submit.contains("job=$(sbatch --parsable stage-0.sbatch)"),
        "{submit}"
    );
    assert!(
        submit.contains("job=$(sbatch --parsable --dependency=afterok:\"$job\" stage-1.sbatch)"),
        "{submit}"
    );
}
