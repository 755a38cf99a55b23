//! k-means (Lloyd's algorithm with k-means++ seeding) on the rows of a tensor, seeded, for the
//! diversity criterion of the preservation set.

use crate::error::{Error, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

/// A clustering: centroids `[k, d]` and the cluster of every point.
#[derive(Debug)]
pub struct Clustering {
    /// Cluster centres.
    pub centroids: Tensor,
    /// Cluster index of each point.
    pub assignments: Vec<i64>,
}

/// Squared Euclidean distances `[n, k]` between the rows of `points` `[n, d]` and `centres` `[k, d]`.
pub fn squared_distances(points: &Tensor, centres: &Tensor) -> Result<Tensor> {
    let point_norms = points.f_square()?.f_sum_dim_intlist(1, true, Kind::Float)?;
    let centre_norms = centres
        .f_square()?
        .f_sum_dim_intlist(1, false, Kind::Float)?;
    Ok(point_norms
        .f_add(&centre_norms.f_unsqueeze(0)?)?
        .f_sub(
            &points
                .f_matmul(&centres.f_transpose(0, 1)?)?
                .f_mul_scalar(2.0)?,
        )?
        .f_clamp_min(0.0)?)
}

/// Clusters the rows of `points` (`[n, d]`, float) into `k` groups: k-means++ seeding from a ChaCha
/// stream of `seed`, then at most `iterations` Lloyd steps (fewer if the assignments settle).
pub fn kmeans(points: &Tensor, k: usize, iterations: usize, seed: u64) -> Result<Clustering> {
    let n = points.size()[0] as usize;
    if k == 0 || k > n {
        return Err(Error::Model(format!(
            "k-means: cannot make {k} clusters of {n} points"
        )));
    }
    let points = points.f_to_kind(Kind::Float)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut chosen = vec![rng.random_range(0..n)];
    let mut nearest = squared_distances(&points, &points.f_get(chosen[0] as i64)?.f_unsqueeze(0)?)?
        .f_view([-1])?;
    while chosen.len() < k {
        let weights = Vec::<f32>::try_from(&nearest)?;
        let total: f64 = weights.iter().map(|&w| w as f64).sum();
        let next = if total > 0.0 {
            let mut target = rng.random::<f64>() * total;
            weights
                .iter()
                .position(|&w| {
                    target -= w as f64;
                    target <= 0.0
                })
                .unwrap_or(n - 1)
        } else {
            // Every point coincides with a chosen centre: take the first unchosen one.
            (0..n).find(|i| !chosen.contains(i)).unwrap_or(0)
        };
        chosen.push(next);
        let distance = squared_distances(&points, &points.f_get(next as i64)?.f_unsqueeze(0)?)?
            .f_view([-1])?;
        nearest = nearest.f_minimum(&distance)?;
    }
    let indices = Tensor::f_from_slice(&chosen.iter().map(|&i| i as i64).collect::<Vec<_>>())?;
    let mut centroids = points.f_index_select(0, &indices)?;
    let mut assignments = Vec::new();
    for _ in 0..iterations.max(1) {
        let assignment = squared_distances(&points, &centroids)?.f_argmin(1, false)?;
        let new_assignments = Vec::<i64>::try_from(&assignment)?;
        if new_assignments == assignments {
            break;
        }
        assignments = new_assignments;
        let sums = Tensor::f_zeros_like(&centroids)?.f_index_add(0, &assignment, &points)?;
        let counts = Tensor::f_zeros([k as i64], (Kind::Float, points.device()))?.f_index_add(
            0,
            &assignment,
            &Tensor::f_ones([n as i64], (Kind::Float, points.device()))?,
        )?;
        let means = sums.f_div(&counts.f_clamp_min(1.0)?.f_unsqueeze(1)?)?;
        // An empty cluster keeps its previous centre.
        let empty = counts.f_eq(0.0)?.f_unsqueeze(1)?;
        centroids = centroids.f_where_self(&empty, &means)?;
    }
    Ok(Clustering {
        centroids,
        assignments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_match_a_hand_count() {
        let points = Tensor::from_slice(&[0.0f32, 0.0, 3.0, 4.0]).view([2, 2]);
        let centres = Tensor::from_slice(&[0.0f32, 0.0, 1.0, 1.0]).view([2, 2]);
        let d = Vec::<f32>::try_from(&squared_distances(&points, &centres).unwrap().view([-1]))
            .unwrap();
        assert_eq!(d, vec![0.0, 2.0, 25.0, 13.0]);
    }

    #[test]
    fn recovers_separable_clusters() {
        // Three tight blobs around (0, 0), (10, 0) and (0, 10), 20 points each, interleaved.
        tch::manual_seed(3);
        let centres = [[0.0f32, 0.0], [10.0, 0.0], [0.0, 10.0]];
        let mut values = Vec::new();
        let noise =
            Vec::<f32>::try_from(&(Tensor::randn([120], (Kind::Float, tch::Device::Cpu)) * 0.3))
                .unwrap();
        for i in 0..60 {
            let centre = centres[i % 3];
            values.push(centre[0] + noise[2 * i]);
            values.push(centre[1] + noise[2 * i + 1]);
        }
        let points = Tensor::from_slice(&values).view([60, 2]);
        for seed in 0..5 {
            let clustering = kmeans(&points, 3, 50, seed).unwrap();
            // Points of one blob share a cluster, and the three blobs get three different clusters.
            let blob_cluster: Vec<i64> = (0..3).map(|blob| clustering.assignments[blob]).collect();
            for (i, &cluster) in clustering.assignments.iter().enumerate() {
                assert_eq!(cluster, blob_cluster[i % 3], "seed {seed}, point {i}");
            }
            let mut distinct = blob_cluster.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct.len(), 3, "seed {seed}");
        }
    }

    #[test]
    fn too_many_clusters_is_an_error() {
        let points = Tensor::zeros([2, 3], (Kind::Float, tch::Device::Cpu));
        assert!(matches!(kmeans(&points, 3, 10, 0), Err(Error::Model(_))));
    }
}
