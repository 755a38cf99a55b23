//! The feedback controller of METHOD.md §4 (the safety guard), as decisions only: it reads the
//! preservation and validation accuracy at each check and says what the trainer must do. Keeping
//! it free of tensors makes its behaviour testable with scripted metrics.
//!
//! - Within budget: the state is safe; the trainer takes a snapshot (and may prune).
//! - A breach: the trainer restores the channels responsible to the snapshot and keeps them from
//!   shrinking, and the pressure changes (gamma scaled down, lambda_p up) for a cool-down.
//! - `breaches_before_rollback` breaches in a row: the trainer rolls everything back to the snapshot.

use serde::Serialize;

/// The limits a compressed model must stay within, in accuracy points below the reference.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Budget {
    /// Reference accuracy on the preservation set (fraction).
    pub reference_preservation: f64,
    /// Reference accuracy on validation (fraction).
    pub reference_validation: f64,
    /// Largest allowed drop on the preservation set, in points (0.5 = half a percentage point).
    pub max_preservation_drop: f64,
    /// Largest allowed drop on validation, in points.
    pub max_validation_drop: f64,
}

impl Budget {
    /// Whether accuracies (fractions) are within the budget.
    pub fn is_met(&self, preservation: f64, validation: f64) -> bool {
        100.0 * (self.reference_preservation - preservation) <= self.max_preservation_drop + 1e-9
            && 100.0 * (self.reference_validation - validation) <= self.max_validation_drop + 1e-9
    }
}

/// What the trainer must do after a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Safe: keep this state as the safe snapshot.
    Snapshot,
    /// Breach: restore the channels whose bits fell since the snapshot, most sensitive first.
    RestoreChannels,
    /// Repeated breach: return the whole model to the snapshot.
    RollBack,
}

/// Counts of what the controller decided over a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Events {
    /// Checks that found the model outside the budget.
    pub breaches: u32,
    /// Targeted channel restores.
    pub restores: u32,
    /// Whole-model roll-backs.
    pub rollbacks: u32,
}

/// Decides on each check and keeps the cool-down.
#[derive(Debug, Clone)]
pub struct Controller {
    /// The budget checked.
    pub budget: Budget,
    breaches_before_rollback: u32,
    cooldown_steps: i64,
    consecutive_breaches: u32,
    cooldown_until: i64,
    /// What was decided so far.
    pub events: Events,
}

impl Controller {
    /// A controller for `budget` that rolls back after `breaches_before_rollback` breaches in a row
    /// and keeps the pressure changed for `cooldown_steps` after each breach.
    pub fn new(budget: Budget, breaches_before_rollback: u32, cooldown_steps: i64) -> Self {
        Controller {
            budget,
            breaches_before_rollback: breaches_before_rollback.max(1),
            cooldown_steps,
            consecutive_breaches: 0,
            cooldown_until: i64::MIN,
            events: Events::default(),
        }
    }

    /// Decides what to do at `step` given the accuracies (fractions) measured there.
    pub fn observe(&mut self, step: i64, preservation: f64, validation: f64) -> Action {
        if self.budget.is_met(preservation, validation) {
            self.consecutive_breaches = 0;
            return Action::Snapshot;
        }
        self.events.breaches += 1;
        self.consecutive_breaches += 1;
        self.cooldown_until = step + self.cooldown_steps;
        if self.consecutive_breaches >= self.breaches_before_rollback {
            self.consecutive_breaches = 0;
            self.events.rollbacks += 1;
            Action::RollBack
        } else {
            self.events.restores += 1;
            Action::RestoreChannels
        }
    }

    /// Whether `step` is inside a cool-down (changed pressure, restored channels held).
    pub fn cooling_down(&self, step: i64) -> bool {
        step < self.cooldown_until
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn controller() -> Controller {
        let budget = Budget {
            reference_preservation: 0.98,
            reference_validation: 0.99,
            max_preservation_drop: 0.5,
            max_validation_drop: 1.0,
        };
        Controller::new(budget, 3, 100)
    }

    #[test]
    fn budget_is_in_points_below_the_reference() {
        let budget = controller().budget;
        assert!(budget.is_met(0.975, 0.98));
        assert!(
            !budget.is_met(0.974, 0.99),
            "0.6 points lost on the preservation set"
        );
        assert!(!budget.is_met(0.98, 0.979), "1.1 points lost on validation");
    }

    #[test]
    fn safe_checks_only_take_snapshots() {
        let mut controller = controller();
        for step in [100, 200, 300] {
            assert_eq!(controller.observe(step, 0.98, 0.99), Action::Snapshot);
            assert!(!controller.cooling_down(step + 1));
        }
        assert_eq!(controller.events, Events::default());
    }

    #[test]
    fn a_breach_restores_channels_and_cools_down() {
        let mut controller = controller();
        assert_eq!(controller.observe(100, 0.98, 0.99), Action::Snapshot);
        assert_eq!(controller.observe(200, 0.96, 0.99), Action::RestoreChannels);
        assert!(controller.cooling_down(250));
        assert!(!controller.cooling_down(300));
        // A safe check in between resets the count: breaches must come in a row to roll back.
        assert_eq!(controller.observe(300, 0.98, 0.99), Action::Snapshot);
        assert_eq!(controller.observe(400, 0.96, 0.99), Action::RestoreChannels);
        assert_eq!(
            controller.events,
            Events {
                breaches: 2,
                restores: 2,
                rollbacks: 0
            }
        );
    }

    #[test]
    fn repeated_breaches_roll_back() {
        let mut controller = controller();
        let actions: Vec<Action> = (1..=7)
            .map(|i| controller.observe(100 * i, 0.90, 0.99))
            .collect();
        use Action::*;
        assert_eq!(
            actions,
            vec![
                RestoreChannels,
                RestoreChannels,
                RollBack,
                RestoreChannels,
                RestoreChannels,
                RollBack,
                RestoreChannels
            ]
        );
        assert_eq!(
            controller.events,
            Events {
                breaches: 7,
                restores: 5,
                rollbacks: 2
            }
        );
    }
}
