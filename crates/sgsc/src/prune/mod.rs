//! Pruning stage: physically removing output channels from a network (METHOD.md §4).
//!
//! Removing channel c of a quantized layer drops its weights, bit depth, exponent and bias, the
//! statistics (and affine scale/shift) of the batch norm that normalises it, and the inputs of the
//! next quantized layer that it feeds (for a linear layer after flattening, the `h*w` columns of
//! that channel). Every cut is returned as a [`Slice`] so the optimizer can cut its moments the
//! same way. A channel whose weights are all zero (and which has no bias or affine shift) outputs
//! zero through ReLU and a batch norm whose running mean is zero, so removing it leaves the
//! network's outputs unchanged. One that still sends a constant (its bias, its batch norm's
//! shift) can go where the constant folds into the next layer's bias ([`live::fold_consumer`]):
//! removing it adds that constant times its weights in the next layer to the next layer's bias.
//!
//! Transformers are cut in structured units ([`plan`]): an MLP hidden unit (a row of the first MLP
//! layer, a column of the second) and an attention head (its rows of query, key and value, and its
//! columns of the output projection), removed once all its value rows are dead, since a head whose
//! values are zero adds nothing whatever it attends to. Rows that write the residual stream
//! (output projection, MLP out) are never removed.

use crate::error::{Error, Result};
use crate::models::network::{Layer, Network};
use crate::models::transformer::{MLP_IN_PART, VALUE_PART};
use crate::size::live;
use tch::{Kind, Tensor};

/// One named tensor cut down to `indices` along `dim`.
#[derive(Debug)]
pub struct Slice {
    /// Tensor name, as in `Network::state`.
    pub name: String,
    /// Dimension cut.
    pub dim: i64,
    /// Positions kept along that dimension, in order.
    pub indices: Tensor,
}

/// Keeps `tensor` at `indices` along `dim`, as a fresh leaf with the same `requires_grad`.
fn cut(tensor: &mut Tensor, dim: i64, indices: &Tensor) -> Result<()> {
    let requires_grad = tensor.requires_grad();
    let kept = tch::no_grad(|| tensor.f_index_select(dim, indices))?.f_detach()?;
    *tensor = kept.set_requires_grad(requires_grad);
    Ok(())
}

/// Adds what the channels of quantized layer `index` outside `keep` send at zero codes (their
/// constant outputs) to the bias of the layer reading them, where that is exact
/// ([`live::fold_consumer`]); nothing otherwise. Their codes are taken to be zero.
fn fold_constants(network: &Network, index: usize, keep: &[i64]) -> Result<()> {
    let Some(consumer) = live::fold_consumer(network, index) else {
        return Ok(());
    };
    let mut arriving = live::arriving_constants(network, index, consumer)?;
    for &channel in keep {
        arriving[channel as usize] = 0.0;
    }
    if arriving.iter().all(|&value| value == 0.0) {
        return Ok(());
    }
    let bias = network
        .bias(consumer)
        .ok_or_else(|| Error::Model(format!("{} has no bias", network.quantized[consumer].name)))?;
    tch::no_grad(|| -> Result<()> {
        let weight = network.quantized_weight(consumer).quantized()?;
        let outputs = weight.size()[0];
        // Each output's weights summed over the positions of each input channel: what one unit
        // of a constant input channel adds to that output.
        let per_input = weight
            .f_reshape([outputs, arriving.len() as i64, -1])?
            .f_sum_dim_intlist([2].as_slice(), false, None::<Kind>)?;
        let arriving = Tensor::f_from_slice(&arriving)?.f_to_device(weight.device())?;
        let _ = bias.shallow_clone().f_add_(&per_input.f_mv(&arriving)?)?;
        Ok(())
    })
}

/// Removes every output channel of quantized layer `index` (an index into `network.quantized`)
/// that is not in `keep` (ascending channel positions), with everything that depends on it, its
/// constant output folded into the next layer's bias where that is exact. A
/// depthwise convolution fed by these channels must then be cut the same way, by its own call
/// (its rows of the channels kept, as [`plan`] lists them); a depthwise convolution's own cut
/// must keep whole groups.
pub fn remove_channels(network: &mut Network, index: usize, keep: &[i64]) -> Result<Vec<Slice>> {
    let info = network
        .quantized
        .get(index)
        .cloned()
        .ok_or_else(|| Error::Model(format!("no quantized layer {index}")))?;
    if index + 1 == network.quantized.len() {
        return Err(Error::Model(format!(
            "{}: the last layer's channels are the network's outputs (one per class) and cannot be removed",
            info.name
        )));
    }
    let channels = network.quantized_weight(index).weight.size()[0];
    if keep.is_empty()
        || keep.windows(2).any(|w| w[0] >= w[1])
        || keep.iter().any(|&c| c < 0 || c >= channels)
    {
        return Err(Error::Model(format!(
            "{}: channels to keep must be ascending, distinct, within 0..{channels} and not all gone",
            info.name
        )));
    }
    let grouped_consumer = network
        .readers(index)
        .map(|j| &network.quantized[j])
        .find(|consumer| consumer.groups > 1 && !consumer.is_depthwise());
    if let Some(consumer) = grouped_consumer {
        return Err(Error::Model(format!(
            "{}: it feeds the grouped convolution {}, whose groups would become unequal",
            info.name, consumer.name
        )));
    }
    // A depthwise convolution's output channels per input channel.
    let multiplier = info.is_depthwise().then(|| channels / info.groups);
    if let Some(multiplier) = multiplier {
        let whole_groups = keep.len() as i64 % multiplier == 0
            && keep.chunks(multiplier as usize).all(|group| {
                group
                    .iter()
                    .all(|&c| c / multiplier == group[0] / multiplier)
            });
        if !whole_groups {
            return Err(Error::Model(format!(
                "{}: a depthwise convolution loses whole groups of {multiplier} channels",
                info.name
            )));
        }
    }
    fold_constants(network, index, keep)?;
    let device = network.quantized_weight(index).weight.device();
    let kept = Tensor::f_from_slice(keep)?.f_to_device(device)?;
    let mut slices = Vec::new();
    let mut record = |name: String, dim: i64| {
        slices.push(Slice {
            name,
            dim,
            indices: kept.shallow_clone(),
        })
    };

    // The layer's own output channels.
    let prefix = info.name.clone();
    let (weight, bias) = network.weight_and_bias_mut(index);
    for (name, tensor) in [
        ("weight", &mut weight.weight),
        ("bit_depth", &mut weight.bit_depth),
        ("exponent", &mut weight.exponent),
    ] {
        cut(tensor, 0, &kept)?;
        record(format!("{prefix}.{name}"), 0);
    }
    if let Some(bias) = bias {
        cut(bias, 0, &kept)?;
        record(format!("{prefix}.bias"), 0);
    }

    // The batch norm that normalises those channels.
    if let Some(norm_layer) = info.norm {
        let Layer::BatchNorm(norm) = &mut network.layers[norm_layer] else {
            unreachable!("norm indices only point at batch norms")
        };
        let prefix = format!("layers.{norm_layer}");
        cut(&mut norm.running_mean, 0, &kept)?;
        cut(&mut norm.running_var, 0, &kept)?;
        record(format!("{prefix}.running_mean"), 0);
        record(format!("{prefix}.running_var"), 0);
        if let Some((scale, shift)) = &mut norm.affine {
            cut(scale, 0, &kept)?;
            cut(shift, 0, &kept)?;
            record(format!("{prefix}.weight"), 0);
            record(format!("{prefix}.bias"), 0);
        }
    }

    // A depthwise convolution keeps one group per input channel left.
    if let Some(multiplier) = multiplier {
        let groups = keep.len() as i64 / multiplier;
        network.quantized[index].groups = groups;
        if let Layer::Conv2d(conv) = &mut network.layers[info.layer] {
            conv.groups = groups;
        }
    }

    // The inputs of the layers these channels feed (a depthwise convolution reads one channel
    // per group: its rows are cut next, in their own call, as `plan` lists them).
    let consumers: Vec<usize> = network
        .readers(index)
        .filter(|&j| !network.quantized[j].is_depthwise())
        .collect();
    for consumer in consumers {
        let consumer_info = network.quantized[consumer].clone();
        let positions = consumer_info.positions_per_input;
        let columns: Vec<i64> = if network.is_conv(consumer) {
            keep.to_vec()
        } else {
            keep.iter()
                .flat_map(|&c| (c * positions)..((c + 1) * positions))
                .collect()
        };
        let columns = Tensor::f_from_slice(&columns)?.f_to_device(device)?;
        cut(
            &mut network.weight_and_bias_mut(consumer).0.weight,
            1,
            &columns,
        )?;
        slices.push(Slice {
            name: format!("{}.weight", consumer_info.name),
            dim: 1,
            indices: columns,
        });
        network.quantized[consumer].input_channels = keep.len() as i64;
    }
    Ok(slices)
}

/// How the output channels of a quantized layer may be removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// One channel at a time: conv and linear layers, the MLP's hidden units.
    Channels,
    /// A head at a time, when all of a head's `head_dim` value rows may go; its rows of the
    /// query and key layers (these quantized-layer indices) go with them.
    Heads {
        /// Rows per head.
        head_dim: i64,
        /// Index of the block's query layer.
        query: usize,
        /// Index of the block's key layer.
        key: usize,
    },
    /// A channel together with the `multiplier` channels of the depthwise convolution (this
    /// quantized-layer index) that read it, when it and all of them may go.
    WithDepthwise {
        /// Index of the depthwise convolution.
        depthwise: usize,
        /// Its output channels per input channel.
        multiplier: i64,
    },
    /// Never on its own: the network's outputs, rows that write a transformer's residual stream,
    /// query and key rows (they go with their head), depthwise channels (they go with their
    /// input channel), the channels of any other grouped convolution and of the layer feeding
    /// one, and the channels of a residual stream (see `QuantizedLayerInfo::residual`).
    Never,
}

/// How quantized layer `index`'s channels may be removed.
pub fn removal(network: &Network, index: usize) -> Removal {
    let info = &network.quantized[index];
    let grouped_consumer = network
        .readers(index)
        .find(|&consumer| network.quantized[consumer].groups > 1);
    if index + 1 == network.quantized.len() || info.groups > 1 || info.residual {
        return Removal::Never;
    }
    if let Some(consumer) = grouped_consumer {
        let depthwise = &network.quantized[consumer];
        // The depthwise channels must be free to go too: not the outputs, and read by no
        // grouped convolution themselves.
        let free = consumer + 1 < network.quantized.len()
            && network
                .readers(consumer)
                .all(|next| network.quantized[next].groups == 1);
        if !depthwise.is_depthwise() || !free {
            return Removal::Never;
        }
        return Removal::WithDepthwise {
            depthwise: consumer,
            multiplier: network.quantized_weight(consumer).weight.size()[0] / depthwise.groups,
        };
    }
    match &network.layers[info.layer] {
        Layer::TransformerBlock(block) => match info.part {
            VALUE_PART => Removal::Heads {
                head_dim: block.head_dim,
                query: index - 2,
                key: index - 1,
            },
            MLP_IN_PART => Removal::Channels,
            _ => Removal::Never,
        },
        _ => Removal::Channels,
    }
}

/// Turns the channels that may go (`removable[index][channel]`, per quantized layer) into cuts
/// that respect the network's structure: `(quantized-layer index, channels to keep)`, each
/// keeping at least one channel (or head) and removing at least one.
pub fn plan(network: &Network, removable: &[Vec<bool>]) -> Result<Vec<(usize, Vec<i64>)>> {
    if removable.len() != network.quantized.len() {
        return Err(Error::Model(format!(
            "removal flags for {} layers, but the network has {} quantized layers",
            removable.len(),
            network.quantized.len()
        )));
    }
    let mut cuts = Vec::new();
    for (index, flags) in removable.iter().enumerate() {
        let channels = network.quantized_weight(index).weight.size()[0];
        if flags.len() as i64 != channels {
            return Err(Error::Model(format!(
                "{}: removal flags for {} channels, the layer has {channels}",
                network.quantized[index].name,
                flags.len()
            )));
        }
        match removal(network, index) {
            Removal::Never => {}
            Removal::Channels => {
                let keep: Vec<i64> = (0..channels).filter(|&c| !flags[c as usize]).collect();
                if !keep.is_empty() && keep.len() < flags.len() {
                    cuts.push((index, keep));
                }
            }
            Removal::WithDepthwise {
                depthwise,
                multiplier,
            } => {
                let rows = |c: i64| c * multiplier..(c + 1) * multiplier;
                let flags_of_depthwise = removable.get(depthwise).ok_or_else(|| {
                    Error::Model(format!("no removal flags for layer {depthwise}"))
                })?;
                let keep: Vec<i64> = (0..channels)
                    .filter(|&c| {
                        !(flags[c as usize] && rows(c).all(|row| flags_of_depthwise[row as usize]))
                    })
                    .collect();
                if !keep.is_empty() && keep.len() < flags.len() {
                    let depthwise_keep = keep.iter().flat_map(|&c| rows(c)).collect();
                    cuts.push((index, keep));
                    cuts.push((depthwise, depthwise_keep));
                }
            }
            Removal::Heads {
                head_dim,
                query,
                key,
            } => {
                let dead_head =
                    |head: i64| (head * head_dim..(head + 1) * head_dim).all(|c| flags[c as usize]);
                let heads = channels / head_dim;
                let mut kept_heads: Vec<i64> = (0..heads).filter(|&h| !dead_head(h)).collect();
                // A block keeps at least one head, so its attention stays well formed.
                if kept_heads.is_empty() {
                    kept_heads.push(0);
                }
                if kept_heads.len() as i64 == heads {
                    continue;
                }
                let keep: Vec<i64> = kept_heads
                    .iter()
                    .flat_map(|&h| h * head_dim..(h + 1) * head_dim)
                    .collect();
                for layer in [query, key, index] {
                    cuts.push((layer, keep.clone()));
                }
            }
        }
    }
    Ok(cuts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::fixtures::set_values;
    use crate::models::fixtures::{tiny_network, tiny_transformer};
    use crate::models::{LayerConfig, ModelConfig};
    use crate::size::prepare_for_storage;
    use tch::{Device, Kind};

    #[test]
    fn removing_dead_channels_leaves_outputs_unchanged() {
        let mut network = tiny_network();
        // Channel 1 of the first conv and channel 0 of the second are dead (zero bits).
        set_values(&network.quantized_weight(0).bit_depth, &[8.0, 0.0]);
        set_values(&network.quantized_weight(1).bit_depth, &[0.0, 8.0, 8.0]);
        tch::manual_seed(1);
        let input = Tensor::randn([5, 1, 6, 6], (Kind::Float, Device::Cpu));
        // Train-mode pass to give the batch norm real statistics, then the stored form (dead
        // channels' statistics zeroed).
        let _ = network.forward(&input, true, true).unwrap();
        prepare_for_storage(&network).unwrap();
        let before = network.forward(&input, false, true).unwrap();

        assert_eq!(
            crate::size::live::channels_with_bits(&network).unwrap()[0],
            1,
            "one channel of the first layer has bits"
        );
        let first = remove_channels(&mut network, 0, &[0]).unwrap();
        let second = remove_channels(&mut network, 1, &[1, 2]).unwrap();
        let after = network.forward(&input, false, true).unwrap();
        let difference = (&after - &before).abs().max().double_value(&[]);
        assert!(difference < 1e-5, "outputs moved by {difference}");

        // Every affected tensor shrank.
        assert_eq!(network.quantized_weight(0).weight.size(), vec![1, 1, 3, 3]);
        assert_eq!(network.quantized_weight(1).weight.size(), vec![2, 1, 3, 3]);
        assert_eq!(network.quantized_weight(1).bit_depth.size(), vec![2]);
        assert_eq!(network.quantized_weight(2).weight.size(), vec![4, 2 * 4]);
        assert_eq!(network.norm(0).unwrap().running_mean.size(), vec![1]);
        assert_eq!(network.quantized[1].input_channels, 1);
        assert_eq!(network.quantized[2].input_channels, 2);
        let names = |slices: &[Slice]| {
            slices
                .iter()
                .map(|s| format!("{}@{}", s.name, s.dim))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(&first),
            vec![
                "layers.0.weight@0",
                "layers.0.bit_depth@0",
                "layers.0.exponent@0",
                "layers.2.running_mean@0",
                "layers.2.running_var@0",
                "layers.3.weight@1"
            ]
        );
        assert_eq!(names(&second).last().unwrap(), "layers.5.weight@1");
        // The linear layer kept the columns of channels 1 and 2: positions 4..12 of the original 12.
        assert_eq!(
            Vec::<i64>::try_from(&second.last().unwrap().indices).unwrap(),
            (4..12).collect::<Vec<i64>>()
        );
        // Pruned parameters are still trainable leaves.
        assert!(network.quantized_weight(0).weight.requires_grad());
        assert!(network.quantized_weight(1).exponent.requires_grad());
    }

    #[test]
    fn removing_dead_heads_and_mlp_units_leaves_logits_unchanged() {
        let mut network = tiny_transformer();
        // Quantized layers 0..6 are block 1 (query, key, value, projection, mlp_in, mlp_out),
        // 6..12 block 2, 12 the head. Block 1: all of head 1's value rows are dead. Block 2: MLP
        // units 0 and 3 are dead; three of head 0's four value rows are dead (the head stays);
        // a projection row is dead (it writes the residual stream: it stays).
        let mut bits: Vec<Vec<f32>> = (0..network.quantized.len())
            .map(|i| vec![8.0; network.quantized_weight(i).bit_depth.size()[0] as usize])
            .collect();
        bits[2][4..8].fill(0.0);
        bits[10][0] = 0.0;
        bits[10][3] = 0.0;
        bits[8][0..3].fill(0.0);
        bits[9][0] = 0.0;
        for (index, values) in bits.iter().enumerate() {
            set_values(&network.quantized_weight(index).bit_depth, values);
        }
        tch::manual_seed(3);
        let input = Tensor::randint(5, [3, 6], (Kind::Int64, Device::Cpu));
        let before = network.forward(&input, false, true).unwrap();

        let removable: Vec<Vec<bool>> = bits
            .iter()
            .map(|layer| layer.iter().map(|&b| b == 0.0).collect())
            .collect();
        let cuts = plan(&network, &removable).unwrap();
        let summary: Vec<(usize, Vec<i64>)> = cuts.clone();
        assert_eq!(
            summary,
            vec![
                (0, (0..4).collect()),
                (1, (0..4).collect()),
                (2, (0..4).collect()),
                (10, [1, 2].into_iter().chain(4..16).collect()),
            ]
        );
        for (index, keep) in &cuts {
            remove_channels(&mut network, *index, keep).unwrap();
        }
        let after = network.forward(&input, false, true).unwrap();
        let difference = (&after - &before).abs().max().double_value(&[]);
        assert!(difference < 1e-5, "logits moved by {difference}");

        assert_eq!(network.quantized_weight(0).weight.size(), vec![4, 8]);
        assert_eq!(network.quantized_weight(2).bit_depth.size(), vec![4]);
        assert_eq!(network.quantized_weight(3).weight.size(), vec![8, 4]);
        assert_eq!(network.quantized_weight(10).weight.size(), vec![14, 8]);
        assert_eq!(network.quantized_weight(11).weight.size(), vec![8, 14]);
        assert_eq!(network.quantized[11].input_channels, 14);
        let Layer::TransformerBlock(block) = &network.layers[1] else {
            panic!("layer 1 is a block")
        };
        assert_eq!(block.heads(), 1);
    }

    #[test]
    fn a_block_keeps_its_last_head() {
        let network = tiny_transformer();
        let mut removable: Vec<Vec<bool>> = (0..network.quantized.len())
            .map(|i| vec![false; network.quantized_weight(i).bit_depth.size()[0] as usize])
            .collect();
        removable[2].fill(true);
        let cuts = plan(&network, &removable).unwrap();
        let layers: Vec<usize> = cuts.iter().map(|(index, _)| *index).collect();
        assert_eq!(layers, vec![0, 1, 2]);
        assert!(cuts.iter().all(|(_, keep)| keep == &vec![0, 1, 2, 3]));
        removable.pop();
        assert!(matches!(plan(&network, &removable), Err(Error::Model(_))));
    }

    /// conv(1->3, k3, bias) relu batch_norm(affine) max_pool(2) conv(3->2, k2, `padding`, bias)
    /// relu flatten linear(-> 4, bias) on a 1x8x8 input.
    fn biased_network(padding: i64) -> Network {
        let conv = |out_channels, kernel, padding| LayerConfig::Conv2d {
            out_channels,
            kernel,
            stride: 1,
            padding,
            bias: true,
            groups: 1,
        };
        let config = ModelConfig {
            input: vec![1, 8, 8],
            layers: vec![
                conv(3, 3, 0),
                LayerConfig::Relu,
                LayerConfig::BatchNorm { affine: true },
                LayerConfig::MaxPool(crate::models::config::Pool {
                    kernel: 2,
                    stride: None,
                    padding: 0,
                }),
                conv(2, 2, padding),
                LayerConfig::Relu,
                LayerConfig::Flatten,
                LayerConfig::Linear {
                    out_features: 4,
                    bias: true,
                },
            ],
        };
        Network::new(&config, 8.0, Device::Cpu).unwrap()
    }

    #[test]
    fn a_removed_biased_channel_folds_its_constant_into_the_next_bias() {
        for padding in [0, 1] {
            let mut network = biased_network(padding);
            tch::manual_seed(3);
            let input = Tensor::randn([5, 1, 8, 8], (Kind::Float, Device::Cpu));
            let _ = network.forward(&input, true, true).unwrap();
            // Channel 1 of the first conv and channel 0 of the second have no codes but a bias;
            // the batch norm shifts every channel.
            set_values(&network.quantized_weight(0).bit_depth, &[8.0, 0.0, 8.0]);
            set_values(network.bias(0).unwrap(), &[0.1, 0.7, -0.2]);
            let (_, shift) = network.norm(0).unwrap().affine.as_ref().unwrap();
            set_values(shift, &[0.3, -0.5, 0.25]);
            set_values(&network.quantized_weight(1).bit_depth, &[0.0, 8.0]);
            set_values(network.bias(1).unwrap(), &[0.4, -0.1]);
            prepare_for_storage(&network).unwrap();
            let before = network.forward(&input, false, true).unwrap();

            // The first conv's constant reaches an unpadded conv the same at every position, so
            // it folds; behind padding the borders see zeros instead, so the channel stays. The
            // second conv feeds a linear layer: it always folds.
            let alive = live::live_channels(&network).unwrap();
            assert_eq!(
                alive[0],
                vec![true, padding == 1, true],
                "padding {padding}"
            );
            assert_eq!(alive[1], vec![false, true]);
            let removable: Vec<Vec<bool>> = alive
                .iter()
                .map(|layer| layer.iter().map(|&a| !a).collect())
                .collect();
            let bias_before = Vec::<f32>::try_from(network.bias(2).unwrap()).unwrap();
            for (index, keep) in plan(&network, &removable).unwrap() {
                remove_channels(&mut network, index, &keep).unwrap();
            }
            let after = network.forward(&input, false, true).unwrap();
            let difference = (&after - &before).abs().max().double_value(&[]);
            assert!(
                difference < 1e-5,
                "padding {padding}: logits moved by {difference}"
            );
            let first = if padding == 0 { 2 } else { 3 };
            assert_eq!(network.quantized_weight(0).weight.size()[0], first);
            assert_eq!(
                network.quantized_weight(1).weight.size(),
                vec![1, first, 2, 2]
            );
            // The linear layer's bias took the constant: relu(0.4) times its weights' sums over
            // the removed channel's columns.
            let bias_after = Vec::<f32>::try_from(network.bias(2).unwrap()).unwrap();
            assert!(bias_after
                .iter()
                .zip(&bias_before)
                .any(|(after, before)| (after - before).abs() > 1e-3));
        }
    }

    #[test]
    fn invalid_channel_lists_are_errors() {
        let mut network = tiny_network();
        for keep in [vec![], vec![1, 0], vec![0, 0], vec![2]] {
            assert!(
                matches!(
                    remove_channels(&mut network, 0, &keep),
                    Err(Error::Model(_))
                ),
                "{keep:?}"
            );
        }
        assert!(matches!(
            remove_channels(&mut network, 7, &[0]),
            Err(Error::Model(_))
        ));
    }
}
