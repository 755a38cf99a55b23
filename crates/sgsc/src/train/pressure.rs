//! The pressure law: the one component that sets gamma in a compressing run (docs/guard.md).
//!
//! - **Fixed** (no target, `unsafe` or `distill`): gamma is the config's `quant.gamma`.
//! - **Target** (`quant.target_bytes = N`): every `control_every` steps the trainer measures the
//!   length of the `.sgsc` file the current state would make, and gamma steers it along a
//!   glide path: from the first measurement `S0` at step `t0` to N at `reach_step`
//!   (`quant.target_reach` of the run), geometrically, `aim(t) = S0 (N / S0)^((t - t0) /
//!   (reach_step - t0))`, then N. Above the aim, gamma is multiplied by the ratio `bytes / aim`,
//!   clamped to [[`MIN_STEP`], [`MAX_STEP`]] (twice the aim doubles it at once, 1% above still
//!   raises it by 10%); below it, by the ratio, down to `1 / MAX_STEP`. A gradual path leaves the
//!   weights time to follow the bits down. Within [`APPROACH`] times N the size is also measured
//!   after every step in between (gamma unchanged), to stop on the step it gets there. At or below N the run fine-tunes: gamma is 0
//!   and the bit depths are held where they are, so the size neither grows back through them nor
//!   overshoots on Adam's momentum (if it grows anyway, through weights or exponents widening
//!   codes up to the held depth, the next measurement above N resumes compressing, and the next
//!   one within N holds the depths anew).
//! - **Search** (`safe`, no target): each check within the budget multiplies gamma by
//!   `safety.gamma_growth`, so the run keeps compressing until the budget stops it: the smallest
//!   model within the budget, with no gamma to choose.
//!
//! In `safe` runs the guard's breaches feed the same law: a breach multiplies gamma by
//! `safety.breach_gamma_factor`, never below `safety.min_gamma_factor` times its start, and
//! holds it there (neither the size error nor growth may raise it) until a check is within budget
//! again. So the target pushes, the budget pulls back, and the budget wins. With a target, the
//! guard judges checks only once the model has been within it ([`PressureLaw::judges_checks`]:
//! the dip on the way down is the law's own doing). When it then restores channels or rolls
//! back, that size is refused and the law yields ([`PressureLaw::yield_target`]): the run
//! fine-tunes the state it returned to. Once a check finds the model within the budget itself,
//! the law searches for the smallest size the budget allows: it steers to the geometric mean of
//! the model's size and the smallest size refused ([`PressureLaw::advance`]), and so on, while
//! the two are more than [`SEARCH_RESOLUTION`] apart and the run has steps left for a glide.
//!
//! The law only decides; it holds no tensors, so its behaviour is tested with scripted sizes.

use serde::{Deserialize, Serialize};

/// The smallest factor by which gamma rises at a measurement above the target.
pub const MIN_STEP: f64 = 1.1;
/// The largest factor by which gamma rises at one measurement.
pub const MAX_STEP: f64 = 2.0;
/// Within this factor of the target, the size is measured after every step (without changing
/// gamma in between), so that the run stops compressing on the step it gets there instead of
/// up to `control_every` steps later.
pub const APPROACH: f64 = 1.5;

/// When the budget refused a size, the search for the smallest size it allows stops once the
/// safe state is within this factor of the smallest size refused.
pub const SEARCH_RESOLUTION: f64 = 1.05;

/// How the law reacts to checks of the safety guard (the `safe` mode only).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreachResponse {
    /// Gamma is multiplied by this on each breach (below 1).
    pub breach_factor: f64,
    /// Gamma never falls below this share of its starting value.
    pub min_factor: f64,
    /// Without a target, each safe check multiplies gamma by this (1: gamma stays).
    pub growth: f64,
    /// Steps the model fine-tunes at its target before the guard judges it there (one check
    /// interval): until then it is still recovering from the glide.
    pub settle_steps: i64,
}

/// Where a target run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Gamma is on: the model is larger than its target (or there is no target).
    Compress,
    /// The model is within its target: gamma is 0 and the bit depths are held.
    FineTune,
}

/// What a size measurement changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeDecision {
    /// The model just reached its target: hold the bit depths where they are now.
    StartFineTune,
    /// The model grew past its target while fine-tuning: release the held bit depths.
    ResumeCompress,
    /// Nothing to do (still within the target, or still compressing).
    Continue,
}

/// What the law has learned in a run (saved in checkpoints).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LawState {
    /// Gamma while compressing.
    pub gamma: f64,
    /// Compressing or fine-tuning.
    pub phase: Phase,
    /// After a breach: gamma may not rise until a check is within budget.
    pub held: bool,
    /// The last measured file length.
    pub last_bytes: Option<i64>,
    /// The first measurement (step, bytes): where the glide path starts.
    #[serde(default)]
    pub start: Option<(i64, i64)>,
    /// Whether the model has been within its target once: the glide path is over.
    #[serde(default)]
    pub reached: bool,
    /// The step after which it first was (absent in checkpoints of older versions).
    #[serde(default)]
    pub reached_at: Option<i64>,
    /// The guard undid compression at the target (a restore or a roll-back) and no size in
    /// between is left to try: the run fine-tunes at the size it is now, gamma 0.
    #[serde(default)]
    pub yielded: bool,
    /// The size the run steers to now, when the budget refused the target: between the smallest
    /// size refused and the safe state's size (absent: the target).
    #[serde(default)]
    pub aim_bytes: Option<i64>,
    /// The largest size the budget refused so far (the target, or a size searched for since).
    #[serde(default)]
    pub refused: Option<i64>,
    /// The step by which the current glide reaches `aim_bytes` (absent: the run's reach step).
    #[serde(default)]
    pub aim_reach_step: Option<i64>,
}

/// The pressure law of one run.
#[derive(Debug, Clone)]
pub struct PressureLaw {
    start: f64,
    target: Option<i64>,
    reach_step: i64,
    response: Option<BreachResponse>,
    state: LawState,
}

impl PressureLaw {
    /// A law starting at `gamma`, steering to `target` bytes if given, along a glide path that
    /// gets there at `reach_step`; `response` is the guard's (safe runs only).
    pub fn new(
        gamma: f64,
        target: Option<i64>,
        reach_step: i64,
        response: Option<BreachResponse>,
    ) -> Self {
        PressureLaw {
            start: gamma,
            target,
            reach_step,
            response,
            state: LawState {
                gamma,
                phase: Phase::Compress,
                held: false,
                last_bytes: None,
                start: None,
                reached: false,
                reached_at: None,
                yielded: false,
                aim_bytes: None,
                refused: None,
                aim_reach_step: None,
            },
        }
    }

    /// The target, if any.
    pub fn target(&self) -> Option<i64> {
        self.target
    }

    /// The size the run steers to now: the target, or after the budget refused it, a size
    /// between the smallest one refused and the safe state's (see [`PressureLaw::retreat`]).
    pub fn steering_target(&self) -> Option<i64> {
        self.target
            .map(|target| self.state.aim_bytes.unwrap_or(target))
    }

    /// Gamma now: 0 while fine-tuning within the target.
    pub fn gamma(&self) -> f64 {
        match self.state.phase {
            Phase::Compress => self.state.gamma,
            Phase::FineTune => 0.0,
        }
    }

    /// The phase now.
    pub fn phase(&self) -> Phase {
        self.state.phase
    }

    /// The size the glide path aims at after `step` (the target once `reach_step` is passed).
    pub fn aim(&self, step: i64) -> Option<f64> {
        let target = self.steering_target()? as f64;
        let Some((first_step, first_bytes)) = self.state.start else {
            return Some(target);
        };
        let reach_step = self.state.aim_reach_step.unwrap_or(self.reach_step);
        let span = (reach_step - first_step) as f64;
        let progress = if span <= 0.0 {
            1.0
        } else {
            ((step - first_step) as f64 / span).clamp(0.0, 1.0)
        };
        let first = (first_bytes as f64).max(target);
        Some(first * (target / first).powf(progress))
    }

    /// Whether the size should be measured after this step although no control point is due:
    /// compressing, and within [`APPROACH`] times the target at the last measurement.
    pub fn approaching(&self) -> bool {
        match (self.steering_target(), self.state.last_bytes) {
            (Some(target), Some(bytes)) => {
                self.state.phase == Phase::Compress && (bytes as f64) <= APPROACH * target as f64
            }
            _ => false,
        }
    }

    /// Takes a measurement of the stored size after `step` (`bytes`, the file's length for the
    /// current state); `control_point` says whether gamma may change at it (an approach
    /// measurement only switches phases). Without a target it is only recorded.
    pub fn observe_size(&mut self, bytes: i64, step: i64, control_point: bool) -> SizeDecision {
        self.state.last_bytes = Some(bytes);
        self.state.start.get_or_insert((step, bytes));
        let Some(target) = self.steering_target() else {
            return SizeDecision::Continue;
        };
        if self.state.yielded {
            return SizeDecision::Continue;
        }
        if bytes <= target {
            let entered = self.state.phase == Phase::Compress;
            self.state.phase = Phase::FineTune;
            if !self.state.reached {
                self.state.reached = true;
                self.state.reached_at = Some(step);
            }
            return if entered {
                SizeDecision::StartFineTune
            } else {
                SizeDecision::Continue
            };
        }
        let resumed = self.state.phase == Phase::FineTune;
        self.state.phase = Phase::Compress;
        if control_point {
            let ratio = bytes as f64 / self.aim(step).unwrap_or(target as f64);
            let factor = if ratio > 1.0 {
                // After a breach, nothing may raise gamma until a check is within budget.
                if self.state.held {
                    1.0
                } else {
                    ratio.clamp(MIN_STEP, MAX_STEP)
                }
            } else {
                ratio.max(1.0 / MAX_STEP)
            };
            self.state.gamma *= factor;
        }
        if resumed {
            SizeDecision::ResumeCompress
        } else {
            SizeDecision::Continue
        }
    }

    /// Whether the guard judges a check: always without a target; with one, once the model has
    /// been within it. On the way down, a dip below the budget is the law's own doing and
    /// passes when the pressure stops; a target never reached leaves the run to the final
    /// gate.
    pub fn judges_checks(&self) -> bool {
        self.target.is_none() || self.state.reached
    }

    /// Whether a check after `step` comes while the model is still settling at its target: it
    /// got there less than `settle_steps` before, fine-tunes there (the law has not yielded),
    /// and is recovering from the glide. Such a check is not judged ([`judges_checks`] stays
    /// true from the first arrival on; the trainer tells the stages apart).
    ///
    /// [`judges_checks`]: PressureLaw::judges_checks
    pub fn settling(&self, step: i64) -> bool {
        let settle = self.response.map_or(0, |response| response.settle_steps);
        match self.state.reached_at {
            Some(at) => {
                self.state.phase == Phase::FineTune && !self.state.yielded && step - at < settle
            }
            None => false,
        }
    }

    /// The model held a state within the budget itself at `bytes` after step `step`, while the
    /// law had yielded or was holding a size it searched for: steer to the geometric mean of
    /// `bytes` and the smallest size refused, along a glide that gets there at `reach_step`.
    /// False (nothing changed) when no size was refused, or the two are within
    /// [`SEARCH_RESOLUTION`].
    pub fn advance(&mut self, bytes: i64, step: i64, reach_step: i64) -> bool {
        let Some(refused) = self.state.refused else {
            return false;
        };
        if (bytes as f64) <= refused as f64 * SEARCH_RESOLUTION {
            return false;
        }
        let aim = (refused as f64 * bytes as f64).sqrt().round() as i64;
        self.state.aim_bytes = Some(aim);
        self.state.start = Some((step, bytes));
        self.state.aim_reach_step = Some(reach_step);
        self.state.reached = false;
        self.state.reached_at = None;
        self.state.yielded = false;
        self.state.phase = Phase::Compress;
        self.state.held = false;
        true
    }

    /// Whether the model is on a glide to a size the law searched for (not yet reached).
    pub fn searching(&self) -> bool {
        self.state.aim_bytes.is_some() && !self.state.reached && !self.state.yielded
    }

    /// The guard undid compression (a restore or a roll-back): the size steered to is refused
    /// (the largest size refused so far bounds the search from below: a smaller one would be
    /// refused too), and the run fine-tunes at the size the model has now (gamma 0, the trainer
    /// holds the bit depths anew), until a state within the budget lets it
    /// [`advance`](Self::advance).
    pub fn yield_target(&mut self) {
        if let Some(steered) = self.steering_target() {
            self.state.refused = Some(self.state.refused.map_or(steered, |r| r.max(steered)));
            self.state.yielded = true;
            self.state.phase = Phase::FineTune;
        }
    }

    /// Takes the outcome of a judged guard check: `within` the (check-time) budget or not.
    pub fn observe_check(&mut self, within: bool) {
        let Some(response) = self.response else {
            return;
        };
        if within {
            self.state.held = false;
            if self.target.is_none() {
                self.state.gamma *= response.growth;
            }
        } else {
            self.state.held = true;
            self.state.gamma =
                (self.state.gamma * response.breach_factor).max(self.start * response.min_factor);
        }
    }

    /// What the law has learned so far.
    pub fn state(&self) -> LawState {
        self.state
    }

    /// Continues from a saved [`LawState`].
    pub fn set_state(&mut self, state: LawState) {
        self.state = state;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESPONSE: BreachResponse = BreachResponse {
        breach_factor: 0.5,
        min_factor: 0.125,
        growth: 1.5,
        settle_steps: 100,
    };

    #[test]
    fn a_fixed_law_keeps_gamma() {
        let mut law = PressureLaw::new(0.07, None, 0, None);
        law.observe_size(1_000_000, 0, true);
        law.observe_check(false);
        assert_eq!(law.gamma(), 0.07);
        assert_eq!(law.state().last_bytes, Some(1_000_000));
    }

    #[test]
    fn above_the_target_gamma_rises_by_the_size_ratio_within_its_clamp() {
        let mut law = PressureLaw::new(0.1, Some(1000), 0, None);
        law.observe_size(1500, 0, true);
        assert!((law.gamma() - 0.15).abs() < 1e-12, "x 1.5");
        law.observe_size(5000, 0, true);
        assert!((law.gamma() - 0.30).abs() < 1e-12, "x 2 at most");
        law.observe_size(1001, 0, true);
        assert!((law.gamma() - 0.33).abs() < 1e-12, "x 1.1 at least");
    }

    #[test]
    fn the_glide_path_aims_geometrically_from_the_first_measurement_to_the_target() {
        let mut law = PressureLaw::new(0.1, Some(1000), 200, None);
        assert_eq!(law.aim(0), Some(1000.0), "no measurement yet");
        law.observe_size(16_000, 0, true);
        assert!((law.gamma() - 0.1).abs() < 1e-12, "on the path");
        assert!(
            (law.aim(100).unwrap() - 4000.0).abs() < 1e-6,
            "halfway: 16000 x (1/16)^0.5"
        );
        assert!((law.aim(500).unwrap() - 1000.0).abs() < 1e-6);
        // Behind the path, gamma rises by the ratio; ahead of it, it falls by the ratio.
        law.observe_size(6000, 100, true);
        assert!((law.gamma() - 0.15).abs() < 1e-12);
        law.observe_size(3000, 100, true);
        assert!((law.gamma() - 0.1125).abs() < 1e-12);
        law.observe_size(100_000, 150, true);
        law.observe_size(10, 150, false);
        assert_eq!(law.phase(), Phase::FineTune);
    }

    #[test]
    fn near_the_target_every_step_is_measured_without_raising_gamma() {
        let mut law = PressureLaw::new(0.1, Some(1000), 0, None);
        law.observe_size(2000, 0, true);
        assert!(!law.approaching(), "twice the target is still far");
        law.observe_size(1400, 0, true);
        assert!(law.approaching());
        let gamma = law.gamma();
        assert_eq!(law.observe_size(1200, 0, false), SizeDecision::Continue);
        assert_eq!(law.gamma(), gamma, "only control points move gamma");
        assert_eq!(law.observe_size(990, 0, false), SizeDecision::StartFineTune);
        assert!(
            !law.approaching(),
            "fine-tuning: back to the control points"
        );
    }

    #[test]
    fn at_the_target_the_run_fine_tunes_until_it_grows_past_it() {
        let mut law = PressureLaw::new(0.1, Some(1000), 0, None);
        assert_eq!(law.observe_size(2000, 0, true), SizeDecision::Continue);
        assert_eq!(law.observe_size(1000, 0, true), SizeDecision::StartFineTune);
        assert_eq!((law.phase(), law.gamma()), (Phase::FineTune, 0.0));
        assert_eq!(law.observe_size(990, 0, true), SizeDecision::Continue);
        assert_eq!(law.phase(), Phase::FineTune);
        // Grown past the target: compressing again, from the gamma it had, raised once.
        assert_eq!(
            law.observe_size(1050, 0, true),
            SizeDecision::ResumeCompress
        );
        assert_eq!(law.phase(), Phase::Compress);
        assert!((law.gamma() - 0.2 * 1.1).abs() < 1e-12);
        assert_eq!(law.observe_size(900, 0, true), SizeDecision::StartFineTune);
    }

    #[test]
    fn without_a_target_safe_checks_grow_gamma_and_breaches_cut_it_to_a_floor() {
        let mut law = PressureLaw::new(0.08, None, 0, Some(RESPONSE));
        law.observe_check(true);
        law.observe_check(true);
        assert!((law.gamma() - 0.18).abs() < 1e-12, "0.08 x 1.5 x 1.5");
        for _ in 0..10 {
            law.observe_check(false);
        }
        assert!((law.gamma() - 0.01).abs() < 1e-12, "floor: 0.08 / 8");
        law.observe_check(true);
        assert!((law.gamma() - 0.015).abs() < 1e-12);
    }

    #[test]
    fn after_a_breach_the_size_error_may_not_raise_gamma_until_a_safe_check() {
        let mut law = PressureLaw::new(0.4, Some(1000), 0, Some(RESPONSE));
        law.observe_check(false);
        assert!((law.gamma() - 0.2).abs() < 1e-12);
        law.observe_size(3000, 0, true);
        law.observe_size(3000, 0, true);
        assert!((law.gamma() - 0.2).abs() < 1e-12, "held");
        law.observe_check(true);
        assert!((law.gamma() - 0.2).abs() < 1e-12, "no growth with a target");
        law.observe_size(3000, 0, true);
        assert!((law.gamma() - 0.4).abs() < 1e-12, "released: x 2");
    }

    #[test]
    fn a_restored_state_decides_as_the_original_would() {
        let mut original = PressureLaw::new(0.1, Some(1000), 0, Some(RESPONSE));
        original.observe_size(1800, 0, true);
        original.observe_check(false);
        let mut resumed = PressureLaw::new(0.1, Some(1000), 0, Some(RESPONSE));
        resumed.set_state(original.state());
        for law in [&mut original, &mut resumed] {
            law.observe_check(true);
            law.observe_size(1400, 0, true);
        }
        assert_eq!(original.state(), resumed.state());
    }

    #[test]
    fn checks_are_judged_after_the_glide_path_only() {
        let mut law = PressureLaw::new(0.1, Some(1000), 400, Some(RESPONSE));
        assert!(PressureLaw::new(0.1, None, 400, Some(RESPONSE)).judges_checks());
        law.observe_size(4000, 0, true);
        assert!(!law.judges_checks(), "on the way down");
        law.observe_size(1100, 500, true);
        assert!(!law.judges_checks(), "past the reach step, not yet there");
        law.observe_size(990, 510, false);
        assert!(law.judges_checks(), "reached");
        law.observe_size(1500, 520, true);
        assert_eq!(law.phase(), Phase::Compress);
        assert!(law.judges_checks(), "once reached, always judged");
    }

    #[test]
    fn a_model_settles_for_one_check_interval_after_it_first_reaches_the_target() {
        let mut law = PressureLaw::new(0.1, Some(1000), 400, Some(RESPONSE));
        law.observe_size(4000, 0, true);
        assert!(!law.settling(100), "not there yet");
        law.observe_size(990, 282, false);
        assert_eq!(law.state().reached_at, Some(282));
        assert!(law.settling(300), "18 steps after arriving");
        assert!(law.settling(381));
        assert!(!law.settling(382), "100 steps after arriving");
        // Arriving again later does not restart the period.
        law.observe_size(1200, 390, true);
        law.observe_size(995, 395, false);
        assert_eq!(law.state().reached_at, Some(282));
        // Compressing again, or yielded, the model is not settling.
        let mut again = law.clone();
        again.observe_size(1200, 300, true);
        assert!(!again.settling(300), "compressing");
        law.yield_target();
        assert!(!law.settling(300), "yielded");
        // Without a guard there is nothing to settle for.
        let mut plain = PressureLaw::new(0.1, Some(1000), 400, None);
        plain.observe_size(990, 282, false);
        assert!(!plain.settling(300));
    }

    #[test]
    fn a_refused_size_is_bisected_geometrically_toward_a_safe_state() {
        let mut law = PressureLaw::new(0.1, Some(1000), 100, Some(RESPONSE));
        law.observe_size(16_000, 0, true);
        law.observe_size(990, 100, false);
        assert!(law.judges_checks());
        assert!(!law.advance(990, 300, 400), "nothing refused yet");
        // The budget refused 1000 B and rolled back to a 16,000 B state: fine-tune it.
        law.observe_check(false);
        law.yield_target();
        assert_eq!(law.state().refused, Some(1000));
        assert_eq!((law.phase(), law.gamma()), (Phase::FineTune, 0.0));
        assert!(!law.searching());
        // Within the budget there: aim at 4000 B (the geometric mean), along a new glide that
        // gets there at step 400.
        assert!(law.advance(16_000, 200, 400));
        assert_eq!(law.steering_target(), Some(4000));
        assert_eq!(law.target(), Some(1000), "the target itself stays");
        assert!(
            law.searching() && !law.judges_checks(),
            "a glide: dips are not judged"
        );
        assert!(
            !law.state().held,
            "gamma may rise again to follow the glide"
        );
        assert_eq!(law.phase(), Phase::Compress);
        assert!((law.aim(300).unwrap() - 8000.0).abs() < 1e-6, "halfway");
        assert_eq!(law.observe_size(5000, 400, true), SizeDecision::Continue);
        assert_eq!(
            law.observe_size(3990, 401, false),
            SizeDecision::StartFineTune
        );
        assert!(law.judges_checks() && !law.searching());
        assert!(law.settling(450), "it settles at the size searched for too");
        // Held within the budget there: try between 1000 and 4000 B, 2000 B.
        assert!(law.advance(3990, 600, 700));
        assert_eq!(law.steering_target(), Some(1997));
        // Refused at 1997 B, back at a 3990 B state: the search continues between 1997 and
        // whatever size is next held within the budget.
        law.yield_target();
        assert_eq!(law.state().refused, Some(1997));
        assert!(law.advance(3990, 800, 900));
        assert_eq!(law.steering_target(), Some(2823));
        // Within the resolution of the refused size there is nothing left to try.
        law.yield_target();
        assert!(!law.advance(2900, 950, 990));
        assert!(law.state().yielded);
        let mut plain = PressureLaw::new(0.1, None, 0, Some(RESPONSE));
        plain.yield_target();
        assert!(!plain.advance(5000, 10, 20), "no target: nothing to search");
    }

    #[test]
    fn a_yielded_target_fine_tunes_at_any_size() {
        let mut law = PressureLaw::new(0.1, Some(1000), 0, Some(RESPONSE));
        law.observe_size(990, 0, true);
        law.yield_target();
        assert_eq!(
            law.observe_size(2500, 10, true),
            SizeDecision::Continue,
            "no resumption"
        );
        assert_eq!(law.phase(), Phase::FineTune);
        assert_eq!(law.gamma(), 0.0);
        assert!(law.state().yielded);
        let mut fixed = PressureLaw::new(0.1, None, 0, None);
        fixed.yield_target();
        assert_eq!(fixed.gamma(), 0.1, "no target: nothing to yield");
    }
}
