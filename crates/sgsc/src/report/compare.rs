//! The comparison table of `compare` (baseline, unsafe and safe over several seeds, METHOD.md
//! §5; the runs themselves are [`crate::pipeline::compare`]'s): per mode, the seed mean and
//! spread of each figure, as text and as CSV.

use super::Summary;
use crate::train::Mode;

/// Mean and sample standard deviation (0 for a single value).
pub fn mean_and_std(values: &[f64]) -> (f64, f64) {
    let n = values.len();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return (mean, 0.0);
    }
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    (mean, variance.sqrt())
}

/// One row per mode: test accuracy (a language model's test loss, nats per character) mean ±
/// std, size, ratio to float, train-test gap, controller events, wall time, and for guarded
/// runs how many met their budget, over the seeds.
pub fn comparison_table(summaries: &[Summary]) -> String {
    let language_model = summaries.iter().any(|s| s.language_model);
    let mut table = format!(
        "{:<9} {:>5} {:>6} {:>17} {:>19} {:>8} {:>15} {:>22} {:>8} {:>10}\n",
        "mode",
        "runs",
        "gamma",
        if language_model {
            "test loss (nats)"
        } else {
            "test accuracy"
        },
        "size (bytes)",
        "ratio",
        "train-test gap",
        "breach/restore/rollback",
        "wall",
        "budget met"
    );
    for mode in Mode::ALL.map(Mode::name) {
        let runs: Vec<&Summary> = summaries.iter().filter(|s| s.mode == mode).collect();
        if runs.is_empty() {
            continue;
        }
        let column = |value: fn(&Summary) -> f64| {
            mean_and_std(&runs.iter().map(|s| value(s)).collect::<Vec<_>>())
        };
        let (size, size_std) = column(|s| s.size_bytes as f64);
        let (ratio, _) = column(|s| s.ratio_to_float);
        let (quality, gap) = if language_model {
            let (loss, loss_std) = column(|s| s.test_loss);
            let (gap, gap_std) = column(|s| s.test_loss - s.train_loss);
            (
                format!("{loss:.4} ± {loss_std:.4}"),
                format!("{gap:+.4} ± {gap_std:.4}"),
            )
        } else {
            let (accuracy, accuracy_std) = column(|s| 100.0 * s.test_accuracy);
            let (gap, gap_std) = column(|s| 100.0 * s.train_test_gap);
            (
                format!("{accuracy:.2} ± {accuracy_std:.2}%"),
                format!("{gap:.2} ± {gap_std:.2}pt"),
            )
        };
        let (wall, _) = column(|s| s.wall_seconds);
        let events = runs.iter().fold([0u32; 3], |sum, s| {
            let e = s.controller_events;
            [
                sum[0] + e.breaches,
                sum[1] + e.restored_channels,
                sum[2] + e.rollbacks,
            ]
        });
        let gammas: Vec<f64> = runs.iter().filter_map(|s| s.gamma).collect();
        let gamma = match gammas.first() {
            Some(first) if gammas.len() == runs.len() && gammas.iter().all(|g| g == first) => {
                format!("{first}")
            }
            Some(_) => "mixed".into(),
            None => "-".into(),
        };
        // Guarded runs: how many met their budget in the end (their certificates say so).
        let certified: Vec<bool> = runs
            .iter()
            .filter_map(|s| s.safety.as_ref().map(|certificate| certificate.met))
            .collect();
        let budget_met = if certified.is_empty() {
            "-".to_string()
        } else {
            format!(
                "{}/{}",
                certified.iter().filter(|met| **met).count(),
                certified.len()
            )
        };
        table.push_str(&format!(
            "{:<9} {:>5} {:>6} {:>17} {:>10.0} ± {:<6.0} {:>8.4} {:>15} {:>22} {:>7.0}s {:>10}\n",
            mode,
            runs.len(),
            gamma,
            quality,
            size,
            size_std,
            ratio,
            gap,
            format!("{}/{}/{}", events[0], events[1], events[2]),
            wall,
            budget_met
        ));
    }
    table
}

/// Every run as a CSV line (header first).
pub fn comparison_csv(summaries: &[Summary]) -> String {
    let mut csv = String::from(
        "mode,seed,steps,gamma,test_accuracy,test_loss,train_accuracy,train_test_gap,validation_accuracy,size_bytes,size_kind,float_bytes,ratio_to_float,bits_per_weight,breaches,restores,rollbacks,wall_seconds,train_loss,validation_loss,language_model\n",
    );
    for s in summaries {
        let e = s.controller_events;
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            s.mode,
            s.seed,
            s.steps,
            s.gamma.map(|g| g.to_string()).unwrap_or_default(),
            s.test_accuracy,
            s.test_loss,
            s.train_accuracy,
            s.train_test_gap,
            s.validation_accuracy,
            s.size_bytes,
            s.size_kind,
            s.float_bytes,
            s.ratio_to_float,
            s.bits_per_weight,
            e.breaches,
            e.restored_channels,
            e.rollbacks,
            s.wall_seconds,
            s.train_loss,
            s.validation_loss,
            s.language_model
        ));
    }
    csv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_std() {
        let (mean, std) = mean_and_std(&[99.0, 99.2, 99.4]);
        assert!((mean - 99.2).abs() < 1e-12);
        assert!((std - 0.2).abs() < 1e-12);
        assert_eq!(mean_and_std(&[5.0]), (5.0, 0.0));
    }
}
