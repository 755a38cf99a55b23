//! The feedback controller of METHOD.md §4 (the safety guard), as decisions only: it reads the
//! preservation (audit part) and validation figures at each check (accuracy, or loss under a loss
//! budget) and says what the trainer must do. Keeping it free of tensors makes its behaviour
//! testable with scripted metrics.
//!
//! - Within budget: the state is safe; the trainer takes a snapshot (and may prune).
//! - A breach: lambda_p is multiplied by `breach_preservation_factor` (up to its cap), and gamma's
//!   response belongs to the pressure law ([`super::pressure`]). A breach whose breached figures
//!   rose since the last check is recovering: the pressure alone answers it, and the count of
//!   breaches in a row starts over. Breaches in a row before the
//!   `breaches_before_restore`-th stop there (the pressure eases, the model may recover by
//!   itself); from that one on, the trainer also restores the channels responsible to the
//!   snapshot and holds them there for a cool-down.
//! - `breaches_before_rollback` breaches in a row: the trainer rolls the model back to the snapshot,
//!   if that snapshot was measured within budget (a start outside it is no place to return to).
//! - Each safe check moves lambda_p's factor back towards 1 by `recovery`.
//!
//! Mid-run checks may judge a budget widened by a factor (see [`Budget::is_met_scaled`]): the
//! fine-tune's early high learning rate costs accuracy that has nothing to do with compression,
//! and passes as the rate decays. The final gate judges the budget itself.

use serde::{Deserialize, Serialize};

/// What a budget measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetMetric {
    /// Accuracy (a fraction); drops are in percentage points below the reference.
    #[default]
    Accuracy,
    /// Mean cross-entropy (nats per prediction, a language model's yardstick); drops are the
    /// nats it may rise above the reference.
    Loss,
}

impl BudgetMetric {
    /// A figure in this metric, for logs: `99.12%` or `1.9876 nats`.
    pub fn show(self, value: f64) -> String {
        match self {
            BudgetMetric::Accuracy => format!("{:.2}%", 100.0 * value),
            BudgetMetric::Loss => format!("{value:.4} nats"),
        }
    }
}

/// The limits a compressed model must stay within, relative to the reference.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    /// What is measured (accuracy unless said otherwise).
    #[serde(default)]
    pub metric: BudgetMetric,
    /// The reference's figure on the preservation set (accuracy fraction, or loss).
    pub reference_preservation: f64,
    /// The reference's figure on validation.
    pub reference_validation: f64,
    /// Largest allowed loss of quality on the preservation set: accuracy points (0.5 = half a
    /// percentage point), or nats of loss.
    pub max_preservation_drop: f64,
    /// Largest allowed loss of quality on validation, in the same units.
    pub max_validation_drop: f64,
}

impl Budget {
    /// Whether the figures (in the budget's metric) are within the budget.
    pub fn is_met(&self, preservation: f64, validation: f64) -> bool {
        self.is_met_scaled(preservation, validation, 1.0)
    }

    /// Whether the figures are within the budget with both drops multiplied by `scale` (at
    /// least 1: a mid-run check's allowance for the learning rate's transient).
    pub fn is_met_scaled(&self, preservation: f64, validation: f64, scale: f64) -> bool {
        let (preservation_breached, validation_breached) =
            self.breaches(preservation, validation, scale);
        !preservation_breached && !validation_breached
    }

    /// Which parts (preservation, validation) are outside the budget widened by `scale`.
    pub fn breaches(&self, preservation: f64, validation: f64, scale: f64) -> (bool, bool) {
        let lost = |reference: f64, value: f64| match self.metric {
            BudgetMetric::Accuracy => 100.0 * (reference - value),
            BudgetMetric::Loss => value - reference,
        };
        let scale = scale.max(1.0);
        (
            lost(self.reference_preservation, preservation)
                > scale * self.max_preservation_drop + 1e-9,
            lost(self.reference_validation, validation) > scale * self.max_validation_drop + 1e-9,
        )
    }

    /// Whether `now` is better than `before` in the budget's metric.
    fn improved(&self, now: f64, before: f64) -> bool {
        match self.metric {
            BudgetMetric::Accuracy => now > before,
            BudgetMetric::Loss => now < before,
        }
    }
}

/// What the trainer must do after a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Safe: keep this state as the safe snapshot.
    Snapshot,
    /// A breach answered by the pressure alone (gamma down, lambda_p up).
    Ease,
    /// A breach whose breached figures rose since the last check: the model is on its way
    /// back, and only the pressure answers (as [`Action::Ease`], also where there is none).
    Recovering,
    /// Breach: restore the most sensitive channels that changed since the snapshot (those whose
    /// stored width fell first; when none fell, those whose codes or exponents drifted).
    RestoreChannels,
    /// Repeated breach: return the whole model to the snapshot.
    RollBack,
}

/// Counts of what the controller decided over a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Events {
    /// Checks that found the model outside the budget.
    pub breaches: u32,
    /// Channels restored to the snapshot (summed over breaches; older summaries counted
    /// restore actions under the name `restores`).
    #[serde(alias = "restores")]
    pub restored_channels: u32,
    /// Whole-model roll-backs.
    pub rollbacks: u32,
}

/// How lambda_p reacts to breaches and recovers on safe checks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PressureSettings {
    /// Lambda_p is multiplied by this on each breach (above 1).
    pub breach_preservation_factor: f64,
    /// Lambda_p's multiplier stays at or below this (at least 1).
    pub max_preservation_factor: f64,
    /// On each safe check, the lambda_p factor is divided by this (at least 1), back to 1.
    pub recovery: f64,
}

/// What a controller has learned during a run (saved in checkpoints, so a resumed run goes on
/// with the same pressure, cool-down and event counts).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ControllerState {
    /// Breaches since the last safe check.
    pub consecutive_breaches: u32,
    /// First step after the current cool-down.
    pub cooldown_until: i64,
    /// Current multiplier of lambda_p.
    pub preservation_factor: f64,
    /// What was decided so far.
    pub events: Events,
    /// The figures (preservation, validation) of the last check, judged or not.
    #[serde(default)]
    pub last_figures: Option<(f64, f64)>,
}

/// Decides on each check, keeps the cool-down and the current pressure.
#[derive(Debug, Clone)]
pub struct Controller {
    /// The budget checked.
    pub budget: Budget,
    breaches_before_restore: u32,
    breaches_before_rollback: u32,
    cooldown_steps: i64,
    pressure: PressureSettings,
    consecutive_breaches: u32,
    cooldown_until: i64,
    preservation_factor: f64,
    last_figures: Option<(f64, f64)>,
    /// What was decided so far.
    pub events: Events,
}

impl Controller {
    /// A controller for `budget` that restores channels from the `breaches_before_restore`-th
    /// breach in a row and rolls back at the `breaches_before_rollback`-th, holds restored channels
    /// for `cooldown_steps` after each breach and adapts the pressure.
    pub fn new(
        budget: Budget,
        breaches_before_restore: u32,
        breaches_before_rollback: u32,
        cooldown_steps: i64,
        pressure: PressureSettings,
    ) -> Self {
        Controller {
            budget,
            breaches_before_restore: breaches_before_restore.max(1),
            breaches_before_rollback: breaches_before_rollback.max(1),
            cooldown_steps,
            pressure,
            consecutive_breaches: 0,
            cooldown_until: i64::MIN,
            preservation_factor: 1.0,
            last_figures: None,
            events: Events::default(),
        }
    }

    /// The current multiplier of lambda_p.
    pub fn preservation_factor(&self) -> f64 {
        self.preservation_factor
    }

    /// Decides what to do at `step` given the preservation and validation figures measured there
    /// (accuracy fractions, or losses under a loss budget), judged against the budget with its
    /// drops multiplied by `scale` (1 at the final gate's strictness).
    /// `may_roll_back` says whether there is a state measured within budget to return to: when
    /// there is none (the starting state was already outside the budget, for example a start at
    /// two bits per weight), repeated breaches keep restoring channels instead, since rolling back
    /// would only return to a state no better than the one it leaves.
    pub fn observe(
        &mut self,
        step: i64,
        preservation: f64,
        validation: f64,
        may_roll_back: bool,
        scale: f64,
    ) -> Action {
        let before = self.last_figures.replace((preservation, validation));
        let (preservation_breached, validation_breached) =
            self.budget.breaches(preservation, validation, scale);
        if !preservation_breached && !validation_breached {
            self.consecutive_breaches = 0;
            self.preservation_factor = (self.preservation_factor / self.pressure.recovery).max(1.0);
            return Action::Snapshot;
        }
        self.preservation_factor = (self.preservation_factor
            * self.pressure.breach_preservation_factor)
            .min(self.pressure.max_preservation_factor);
        self.events.breaches += 1;
        self.cooldown_until = step.saturating_add(self.cooldown_steps);
        // Judged against the run's own trajectory: a breach whose breached figures all rose
        // since the last check is a model on its way back; the pressure alone answers it, and
        // the count of breaches in a row starts over.
        let recovering = before.is_some_and(|(last_preservation, last_validation)| {
            (!preservation_breached || self.budget.improved(preservation, last_preservation))
                && (!validation_breached || self.budget.improved(validation, last_validation))
        });
        if recovering {
            self.consecutive_breaches = 0;
            return Action::Recovering;
        }
        self.consecutive_breaches += 1;
        if may_roll_back && self.consecutive_breaches >= self.breaches_before_rollback {
            self.record_rollback();
            Action::RollBack
        } else if self.consecutive_breaches < self.breaches_before_restore {
            Action::Ease
        } else {
            Action::RestoreChannels
        }
    }

    /// Records the figures of a check that was not judged (a dip on a target's glide path), so
    /// that the first judged check compares with them.
    pub fn record_figures(&mut self, preservation: f64, validation: f64) {
        self.last_figures = Some((preservation, validation));
    }

    /// Counts `channels` restored by a breach's [`Action::RestoreChannels`].
    pub fn record_restored(&mut self, channels: usize) {
        self.events.restored_channels += channels as u32;
    }

    /// Counts a roll-back: one the controller decided, or one the trainer made instead of a
    /// restore that found nothing to restore.
    pub fn record_rollback(&mut self) {
        self.consecutive_breaches = 0;
        self.events.rollbacks += 1;
    }

    /// What the controller has learned so far.
    pub fn state(&self) -> ControllerState {
        ControllerState {
            consecutive_breaches: self.consecutive_breaches,
            cooldown_until: self.cooldown_until,
            preservation_factor: self.preservation_factor,
            events: self.events,
            last_figures: self.last_figures,
        }
    }

    /// Continues from a saved [`ControllerState`].
    pub fn set_state(&mut self, state: ControllerState) {
        self.consecutive_breaches = state.consecutive_breaches;
        self.cooldown_until = state.cooldown_until;
        self.preservation_factor = state.preservation_factor;
        self.events = state.events;
        self.last_figures = state.last_figures;
    }

    /// Whether `step` is inside a cool-down (restored channels held at their snapshot bits).
    pub fn cooling_down(&self, step: i64) -> bool {
        step < self.cooldown_until
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pressure() -> PressureSettings {
        PressureSettings {
            breach_preservation_factor: 2.0,
            max_preservation_factor: 8.0,
            recovery: 1.25,
        }
    }

    fn controller() -> Controller {
        let budget = Budget {
            metric: BudgetMetric::Accuracy,
            reference_preservation: 0.98,
            reference_validation: 0.99,
            max_preservation_drop: 0.5,
            max_validation_drop: 1.0,
        };
        Controller::new(budget, 1, 3, 100, pressure())
    }

    #[test]
    fn preservation_pressure_rises_on_breaches_and_recovers_on_safe_checks() {
        let mut controller = controller();
        assert_eq!(controller.preservation_factor(), 1.0);
        controller.observe(100, 0.90, 0.99, true, 1.0);
        controller.observe(200, 0.90, 0.99, true, 1.0);
        assert_eq!(controller.preservation_factor(), 4.0);
        controller.observe(300, 0.98, 0.99, true, 1.0);
        assert!((controller.preservation_factor() - 3.2).abs() < 1e-12);
        for step in 4..20 {
            controller.observe(100 * step, 0.98, 0.99, true, 1.0);
        }
        assert_eq!(controller.preservation_factor(), 1.0, "back to 1");
    }

    #[test]
    fn a_scaled_check_allows_more_and_the_final_budget_does_not() {
        let mut controller = controller();
        // 0.8 points lost on the preservation set: over 0.5, within 2 x 0.5.
        assert_eq!(
            controller.observe(100, 0.972, 0.99, true, 2.0),
            Action::Snapshot
        );
        assert_eq!(
            controller.observe(200, 0.972, 0.99, true, 1.0),
            Action::RestoreChannels
        );
        assert!(
            controller.budget.is_met_scaled(0.972, 0.99, 2.0)
                && !controller.budget.is_met(0.972, 0.99)
        );
        assert!(
            !controller.budget.is_met_scaled(0.972, 0.99, 0.5),
            "a scale below 1 is 1"
        );
    }

    #[test]
    fn preservation_pressure_stops_at_its_cap() {
        let mut controller = controller();
        for step in 1..=5 {
            controller.observe(100 * step, 0.90, 0.99, true, 1.0);
        }
        assert_eq!(
            controller.preservation_factor(),
            8.0,
            "2^5 = 32 capped at 8"
        );
    }

    #[test]
    fn a_restored_state_decides_as_the_original_would() {
        let mut original = controller();
        original.observe(100, 0.90, 0.99, true, 1.0);
        original.observe(200, 0.90, 0.99, true, 1.0);
        let mut resumed = controller();
        resumed.set_state(original.state());
        assert_eq!(resumed.state(), original.state());
        assert!(resumed.cooling_down(250));
        // The third breach in a row rolls back in both.
        assert_eq!(
            resumed.observe(300, 0.90, 0.99, true, 1.0),
            Action::RollBack
        );
        assert_eq!(
            original.observe(300, 0.90, 0.99, true, 1.0),
            Action::RollBack
        );
        assert_eq!(resumed.state(), original.state());
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
    fn a_loss_budget_is_in_nats_above_the_reference() {
        let budget = Budget {
            metric: BudgetMetric::Loss,
            reference_preservation: 2.0,
            reference_validation: 1.9,
            max_preservation_drop: 0.05,
            max_validation_drop: 0.03,
        };
        assert!(budget.is_met(2.05, 1.93));
        assert!(
            budget.is_met(1.5, 1.2),
            "a lower loss is always within budget"
        );
        assert!(
            !budget.is_met(2.051, 1.9),
            "0.051 nats more on the preservation set"
        );
        assert!(!budget.is_met(2.0, 1.931), "0.031 nats more on validation");
        assert_eq!(BudgetMetric::Loss.show(1.23456), "1.2346 nats");
        assert_eq!(BudgetMetric::Accuracy.show(0.99123), "99.12%");
    }

    #[test]
    fn safe_checks_only_take_snapshots() {
        let mut controller = controller();
        for step in [100, 200, 300] {
            assert_eq!(
                controller.observe(step, 0.98, 0.99, true, 1.0),
                Action::Snapshot
            );
            assert!(!controller.cooling_down(step + 1));
        }
        assert_eq!(controller.events, Events::default());
    }

    #[test]
    fn a_breach_restores_channels_and_cools_down() {
        let mut controller = controller();
        assert_eq!(
            controller.observe(100, 0.98, 0.99, true, 1.0),
            Action::Snapshot
        );
        assert_eq!(
            controller.observe(200, 0.96, 0.99, true, 1.0),
            Action::RestoreChannels
        );
        assert!(controller.cooling_down(250));
        assert!(!controller.cooling_down(300));
        // A safe check in between resets the count: breaches must come in a row to roll back.
        assert_eq!(
            controller.observe(300, 0.98, 0.99, true, 1.0),
            Action::Snapshot
        );
        assert_eq!(
            controller.observe(400, 0.96, 0.99, true, 1.0),
            Action::RestoreChannels
        );
        controller.record_restored(3);
        controller.record_restored(0);
        assert_eq!(
            controller.events,
            Events {
                breaches: 2,
                restored_channels: 3,
                rollbacks: 0
            },
            "restores count channels, not breaches"
        );
    }

    #[test]
    fn a_graded_response_eases_first_then_restores_then_rolls_back() {
        let mut controller = Controller::new(controller().budget, 2, 3, 100, pressure());
        let actions: Vec<Action> = (1..=4)
            .map(|i| controller.observe(100 * i, 0.90, 0.99, true, 1.0))
            .collect();
        use Action::*;
        assert_eq!(actions, vec![Ease, RestoreChannels, RollBack, Ease]);
        assert_eq!(
            controller.observe(500, 0.98, 0.99, true, 1.0),
            Snapshot,
            "a safe check starts the count again"
        );
        assert_eq!(controller.observe(600, 0.90, 0.99, true, 1.0), Ease);
    }

    #[test]
    fn repeated_breaches_roll_back() {
        let mut controller = controller();
        let actions: Vec<Action> = (1..=7)
            .map(|i| controller.observe(100 * i, 0.90, 0.99, true, 1.0))
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
                restored_channels: 0,
                rollbacks: 2
            }
        );
    }

    #[test]
    fn without_a_safe_state_repeated_breaches_keep_restoring() {
        let mut controller = controller();
        let actions: Vec<Action> = (1..=4)
            .map(|i| controller.observe(100 * i, 0.90, 0.99, false, 1.0))
            .collect();
        assert_eq!(actions, vec![Action::RestoreChannels; 4]);
        assert_eq!(
            controller.events,
            Events {
                breaches: 4,
                restored_channels: 0,
                rollbacks: 0
            }
        );
        controller.record_rollback();
        assert_eq!(controller.events.rollbacks, 1);
    }

    #[test]
    fn a_breach_on_its_way_back_only_eases() {
        use Action::*;
        let mut controller = controller();
        // Validation breaches (reference 0.99, 1 point allowed) at every check below.
        controller.record_figures(0.98, 0.95);
        let checks = [
            (100, 0.98, 0.96, Recovering, "rising"),
            (
                200,
                0.978,
                0.97,
                Recovering,
                "the breached figure rose; the other is within",
            ),
            (300, 0.98, 0.97, RestoreChannels, "no longer rising: acts"),
            (
                400,
                0.90,
                0.975,
                RestoreChannels,
                "the preservation figure fell outside",
            ),
        ];
        for (step, preservation, validation, expected, why) in checks {
            let action = controller.observe(step, preservation, validation, true, 1.0);
            assert_eq!(action, expected, "step {step}: {why}");
            if step == 200 {
                assert_eq!(controller.state().consecutive_breaches, 0);
                assert_eq!(controller.state().events.breaches, 2, "still breaches");
            }
        }
    }
}
