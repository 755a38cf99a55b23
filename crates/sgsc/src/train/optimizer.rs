//! Adam with two parameter groups (weights; bit depths and exponents), written out so that its
//! moments can be checkpointed, restored and (later) pruned along with the channels they belong to.
//!
//! The update is PyTorch's `torch.optim.Adam` (no weight decay, no amsgrad):
//! `m = b1 m + (1-b1) g`, `v = b2 v + (1-b2) g^2`,
//! `p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)`.

use crate::error::{Error, Result};
use crate::models::ParameterGroup;
use crate::prune::Slice;
use std::collections::HashMap;
use tch::Tensor;

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;

/// Learning rate and epsilon of one group at one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupSettings {
    /// Step size.
    pub learning_rate: f64,
    /// Denominator floor.
    pub eps: f64,
}

/// One optimised tensor with its moments.
#[derive(Debug)]
struct Slot {
    name: String,
    parameter: Tensor,
    group: ParameterGroup,
    first_moment: Tensor,
    second_moment: Tensor,
}

/// Adam over named parameters, each in a [`ParameterGroup`].
#[derive(Debug)]
pub struct Adam {
    slots: Vec<Slot>,
    /// Updates taken so far (Adam's `t`).
    pub steps_taken: i64,
}

impl Adam {
    /// Prepares zeroed moments for `parameters` (as returned by `Network::parameters`, filtered
    /// to the groups being trained).
    pub fn new(parameters: Vec<(String, Tensor, ParameterGroup)>) -> Result<Self> {
        let slots = parameters
            .into_iter()
            .map(|(name, parameter, group)| {
                Ok(Slot {
                    first_moment: parameter.f_zeros_like()?,
                    second_moment: parameter.f_zeros_like()?,
                    name,
                    parameter,
                    group,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Adam {
            slots,
            steps_taken: 0,
        })
    }

    /// Clears the gradients of every optimised tensor.
    pub fn zero_grad(&mut self) {
        for slot in &mut self.slots {
            slot.parameter.zero_grad();
        }
    }

    /// Takes one Adam step with the settings of each group.
    pub fn step(&mut self, settings: impl Fn(ParameterGroup) -> GroupSettings) -> Result<()> {
        self.steps_taken += 1;
        let t = self.steps_taken as i32;
        let first_correction = 1.0 - BETA1.powi(t);
        let second_correction = (1.0 - BETA2.powi(t)).sqrt();
        tch::no_grad(|| -> Result<()> {
            for slot in &mut self.slots {
                let gradient = slot.parameter.f_grad()?;
                if !gradient.defined() {
                    continue;
                }
                let GroupSettings { learning_rate, eps } = settings(slot.group);
                let _ = slot.first_moment.f_mul_scalar_(BETA1)?;
                let _ = slot
                    .first_moment
                    .f_add_(&gradient.f_mul_scalar(1.0 - BETA1)?)?;
                let _ = slot.second_moment.f_mul_scalar_(BETA2)?;
                let _ = slot
                    .second_moment
                    .f_add_(&gradient.f_square()?.f_mul_scalar(1.0 - BETA2)?)?;
                let denominator = slot
                    .second_moment
                    .f_sqrt()?
                    .f_div_scalar(second_correction)?
                    .f_add_scalar(eps)?;
                let update = slot
                    .first_moment
                    .f_div(&denominator)?
                    .f_mul_scalar(learning_rate / first_correction)?;
                let _ = slot.parameter.f_sub_(&update)?;
            }
            Ok(())
        })
    }

    /// The moments by name (`adam.m.<parameter>`, `adam.v.<parameter>`), for checkpoints.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.slots
            .iter()
            .flat_map(|slot| {
                [
                    (
                        format!("adam.m.{}", slot.name),
                        slot.first_moment.shallow_clone(),
                    ),
                    (
                        format!("adam.v.{}", slot.name),
                        slot.second_moment.shallow_clone(),
                    ),
                ]
            })
            .collect()
    }

    /// After pruning: cuts each moment the way `slices` cut its parameter, and points every slot at
    /// the network's current tensor (pruning replaces the tensors it cuts).
    pub fn apply_pruning(
        &mut self,
        slices: &[Slice],
        parameters: Vec<(String, Tensor, ParameterGroup)>,
    ) -> Result<()> {
        let mut current: HashMap<String, Tensor> = parameters
            .into_iter()
            .map(|(name, tensor, _)| (name, tensor))
            .collect();
        for slot in &mut self.slots {
            for slice in slices.iter().filter(|slice| slice.name == slot.name) {
                slot.first_moment = slot
                    .first_moment
                    .f_index_select(slice.dim, &slice.indices)?;
                slot.second_moment = slot
                    .second_moment
                    .f_index_select(slice.dim, &slice.indices)?;
            }
            if let Some(tensor) = current.remove(&slot.name) {
                slot.parameter = tensor;
            }
        }
        Ok(())
    }

    /// Restores moments saved by [`Adam::state`] and the step count.
    pub fn load_state(&mut self, state: &HashMap<String, Tensor>, steps_taken: i64) -> Result<()> {
        for slot in &mut self.slots {
            for (kind, moment) in [
                ("m", &mut slot.first_moment),
                ("v", &mut slot.second_moment),
            ] {
                let name = format!("adam.{kind}.{}", slot.name);
                let saved = state.get(&name).ok_or_else(|| {
                    Error::Model(format!("saved state has no optimizer tensor {name}"))
                })?;
                if saved.size() != moment.size() {
                    return Err(Error::Model(format!(
                        "{name} has shape {:?}, expected {:?}",
                        saved.size(),
                        moment.size()
                    )));
                }
                tch::no_grad(|| moment.f_copy_(saved))?;
            }
        }
        self.steps_taken = steps_taken;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn first_steps_match_hand_computed_adam() {
        // For a constant gradient g, Adam's bias-corrected step is lr * g / (|g| + eps') with
        // m_hat = g and v_hat = g^2 at every step, so each step moves by almost exactly lr.
        let parameter = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        let mut adam = Adam::new(vec![(
            "p".into(),
            parameter.shallow_clone(),
            ParameterGroup::Weights,
        )])
        .unwrap();
        let settings = |_| GroupSettings {
            learning_rate: 0.1,
            eps: 1e-8,
        };
        for _ in 0..3 {
            adam.zero_grad();
            (&parameter * Tensor::from_slice(&[3.0f32, -0.5]))
                .sum(Kind::Float)
                .backward();
            adam.step(settings).unwrap();
        }
        let values = Vec::<f32>::try_from(&parameter).unwrap();
        assert!((values[0] - (1.0 - 0.3)).abs() < 1e-5, "{values:?}");
        assert!((values[1] - (-2.0 + 0.3)).abs() < 1e-5, "{values:?}");
        assert_eq!(adam.steps_taken, 3);
    }

    #[test]
    fn groups_get_their_own_settings() {
        let weight = Tensor::from_slice(&[0.0f32]).set_requires_grad(true);
        let bits = Tensor::from_slice(&[0.0f32]).set_requires_grad(true);
        let mut adam = Adam::new(vec![
            ("w".into(), weight.shallow_clone(), ParameterGroup::Weights),
            ("b".into(), bits.shallow_clone(), ParameterGroup::Quantizer),
        ])
        .unwrap();
        (&weight + &bits).sum(Kind::Float).backward();
        adam.step(|group| GroupSettings {
            learning_rate: if group == ParameterGroup::Weights {
                0.01
            } else {
                0.5
            },
            eps: 1e-8,
        })
        .unwrap();
        assert!((weight.double_value(&[0]) + 0.01).abs() < 1e-6);
        assert!((bits.double_value(&[0]) + 0.5).abs() < 1e-6);
    }
}
