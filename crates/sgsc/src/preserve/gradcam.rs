//! Grad-CAM (Selvaraju et al.) at the last convolutional feature maps:
//! `CAM = relu(sum_k alpha_k A^k)`, `alpha_k` = spatial mean of d(logit of the predicted class)/dA^k.
//! An example's saliency score is its CAM mass (the sum of the map): large when the decision rests
//! on strong, positively contributing regions.

use crate::error::{Error, Result};
use crate::models::Network;
use tch::{Kind, Tensor};

/// Grad-CAM maps `[n, h, w]` of a batch and the logits `[n, classes]`, for the float network in
/// evaluation mode.
pub fn grad_cam(network: &Network, inputs: &Tensor) -> Result<(Tensor, Tensor)> {
    let (logits, taps) = network.forward_with_taps(
        inputs,
        false,
        crate::models::Weights::Float,
        &[feature_layer(network)?],
    )?;
    Ok((
        class_activation_maps(&taps[0], &logits)?,
        logits.f_detach()?,
    ))
}

/// The layer Grad-CAM reads: the last convolutional feature maps.
pub fn feature_layer(network: &Network) -> Result<usize> {
    network
        .feature_map_layer()
        .ok_or_else(|| Error::Model("Grad-CAM needs a convolutional layer".into()))
}

/// Grad-CAM maps `[n, h, w]` from feature maps `[n, k, h, w]` and the logits computed from them
/// (both still in the autograd graph).
pub fn class_activation_maps(feature_maps: &Tensor, logits: &Tensor) -> Result<Tensor> {
    let predicted = logits.f_argmax(-1, true)?;
    let score = logits.f_gather(1, &predicted, false)?.f_sum(Kind::Float)?;
    let gradients = Tensor::f_run_backward(&[&score], &[feature_maps], false, false)?;
    let alpha = gradients[0].f_mean_dim([2, 3].as_slice(), true, Kind::Float)?;
    Ok(alpha
        .f_mul(feature_maps)?
        .f_sum_dim_intlist(1, false, Kind::Float)?
        .f_relu()?
        .f_detach()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::fixtures::set_values;
    use crate::models::{LayerConfig, ModelConfig};

    #[test]
    fn map_matches_a_hand_computation() {
        // conv(1 -> 2, kernel 1) with weights 1 and -1, relu, flatten, linear(2*2*2 -> 2).
        let config = ModelConfig {
            input: vec![1, 2, 2],
            layers: vec![
                LayerConfig::Conv2d {
                    out_channels: 2,
                    kernel: 1,
                    stride: 1,
                    padding: 0,
                    bias: false,
                    groups: 1,
                },
                LayerConfig::Relu,
                LayerConfig::Flatten,
                LayerConfig::Linear {
                    out_features: 2,
                    bias: false,
                },
            ],
        };
        let network = Network::new(&config, 8.0, tch::Device::Cpu).unwrap();
        set_values(&network.quantized_weight(0).weight, &[1.0, -1.0]);
        // Class 0 weights over (channel, position): channel 0 -> [1, 2, 0, 0], channel 1 -> [4, 0, 0, 0].
        // Class 1 weights: all zero.
        set_values(
            &network.quantized_weight(1).weight,
            &[
                1.0, 2.0, 0.0, 0.0, 4.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
            ],
        );
        // Input pixels [1, 2, -1, 3]: A^0 = relu(x) = [1, 2, 0, 3], A^1 = relu(-x) = [0, 0, 1, 0].
        let input = Tensor::from_slice(&[1.0f32, 2.0, -1.0, 3.0]).view([1, 1, 2, 2]);
        let (cam, logits) = grad_cam(&network, &input).unwrap();
        // Logit 0 = 1*1 + 2*2 + 4*0 = 5 > logit 1 = 0, so class 0 is explained.
        assert_eq!(
            Vec::<f32>::try_from(&logits.view([-1])).unwrap(),
            vec![5.0, 0.0]
        );
        // dlogit0/dA^0 = [1, 2, 0, 0] -> alpha_0 = 0.75; dlogit0/dA^1 = [4, 0, 0, 0] -> alpha_1 = 1.
        // CAM = relu(0.75 * [1, 2, 0, 3] + 1 * [0, 0, 1, 0]) = [0.75, 1.5, 1, 2.25].
        assert_eq!(cam.size(), vec![1, 2, 2]);
        assert_eq!(
            Vec::<f32>::try_from(&cam.view([-1])).unwrap(),
            vec![0.75, 1.5, 1.0, 2.25]
        );
    }
}
