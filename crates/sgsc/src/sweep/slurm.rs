//! `sgsc sweep --emit slurm`: the same sweep as Slurm job arrays, one per stage, each depending
//! on the one before. Every array task runs `sgsc sweep --stage S --index I`, one run, with the
//! same skip-and-resume rules as a local sweep, so a resubmitted array only does what is left.

use super::{PlannedRun, SweepConfig};
use crate::error::{Error, Result};
use crate::files::write_atomically;
use std::path::{Path, PathBuf};

/// Writes `<out>/slurm/stage-<i>.sbatch` for every stage and `<out>/slurm/submit.sh`, which
/// submits them in order; returns the submit script's path. Paths in the scripts are absolute.
pub fn emit(
    sweep: &SweepConfig,
    sweep_path: &Path,
    runs: &[PlannedRun],
    executable: &Path,
    data_dir: Option<&Path>,
    threads_per_run: &dyn Fn(usize) -> usize,
) -> Result<PathBuf> {
    let absolute = |path: &Path| -> Result<PathBuf> {
        std::path::absolute(path).map_err(|source| Error::io(path, source))
    };
    let folder = absolute(&sweep.out)?.join("slurm");
    std::fs::create_dir_all(&folder).map_err(|source| Error::io(&folder, source))?;
    let workdir = absolute(Path::new("."))?;
    let data_arg = match data_dir {
        Some(dir) => format!(" --data-dir {}", quote(&absolute(dir)?)),
        None => String::new(),
    };
    let mut submit = String::from(
        "#!/usr/bin/env bash\n# Submits the sweep's stages as Slurm job arrays, each after the one before.\nset -euo pipefail\ncd \"$(dirname \"$0\")\"\n",
    );
    let mut first = true;
    for (stage, _) in sweep.stage.iter().enumerate() {
        let count = runs.iter().filter(|run| run.stage == stage).count();
        if count == 0 {
            continue;
        }
        let threads_per_run = threads_per_run(stage);
        let gpu = runs
            .iter()
            .any(|run| run.stage == stage && run.device.starts_with("cuda"));
        let script = format!(
            "#!/usr/bin/env bash\n\
             #SBATCH --job-name=sgsc-stage{stage}\n\
             #SBATCH --array=0-{last}\n\
             #SBATCH --cpus-per-task={threads_per_run}\n\
             {gres}\
             #SBATCH --output={log}/stage{stage}-%a.out\n\
             set -euo pipefail\n\
             cd {workdir}\n\
             exec {executable} sweep --config {sweep_file} --stage {stage} --index \"$SLURM_ARRAY_TASK_ID\" --threads {threads_per_run}{data_arg}\n",
            last = count - 1,
            gres = if gpu { "#SBATCH --gres=gpu:1\n" } else { "" },
            log = quote(&folder),
            workdir = quote(&workdir),
            executable = quote(&absolute(executable)?),
            sweep_file = quote(&absolute(sweep_path)?),
        );
        let path = folder.join(format!("stage-{stage}.sbatch"));
        write_atomically(&path, script.as_bytes())?;
        let after = if first {
            String::new()
        } else {
            "--dependency=afterok:\"$job\" ".into()
        };
        first = false;
        submit.push_str(&format!(
            "job=$(sbatch --parsable {after}stage-{stage}.sbatch)\necho \"stage {stage}: job $job\"\n"
        ));
    }
    let path = folder.join("submit.sh");
    write_atomically(&path, submit.as_bytes())?;
    Ok(path)
}

/// A path for a shell script, single-quoted.
fn quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}
