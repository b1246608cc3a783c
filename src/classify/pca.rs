//! Principal components of a set of row vectors: the directions of most variance, found by
//! Jacobi rotations of the covariance matrix (small, dense and symmetric here: one row and
//! column per embedding dimension).

/// Centres `rows` (`n` rows of `dim` floats, row-major) on their mean and projects them onto
/// their first `keep` principal components, most variance first. Returns the new rows
/// (`n × keep`). `keep` is capped at `dim`.
pub(crate) fn centre_and_project(rows: &[f32], dim: usize, keep: usize) -> Vec<f32> {
    let keep = keep.min(dim);
    let n = rows.len().checked_div(dim).unwrap_or(0);
    if n == 0 {
        return Vec::new();
    }
    let mut mean = vec![0f64; dim];
    for row in rows.chunks_exact(dim) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += f64::from(*v);
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);

    let mut covariance = vec![0f64; dim * dim];
    let mut centred = vec![0f64; dim];
    for row in rows.chunks_exact(dim) {
        for ((c, v), m) in centred.iter_mut().zip(row).zip(&mean) {
            *c = f64::from(*v) - m;
        }
        for i in 0..dim {
            let ci = centred[i];
            for j in i..dim {
                covariance[i * dim + j] += ci * centred[j];
            }
        }
    }
    for i in 0..dim {
        for j in 0..i {
            covariance[i * dim + j] = covariance[j * dim + i];
        }
    }
    let (values, vectors) = symmetric_eigen(covariance, dim);
    let mut order: Vec<usize> = (0..dim).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
    // One contiguous row per kept component (column k of `vectors` is the k-th eigenvector).
    let basis: Vec<f64> = order
        .into_iter()
        .take(keep)
        .flat_map(|k| (0..dim).map(move |i| (i, k)))
        .map(|(i, k)| vectors[i * dim + k])
        .collect();

    let mut out = Vec::with_capacity(n * keep);
    for row in rows.chunks_exact(dim) {
        for (c, (v, m)) in centred.iter_mut().zip(row.iter().zip(&mean)) {
            *c = f64::from(*v) - m;
        }
        for component in basis.chunks_exact(dim) {
            let dot: f64 = component.iter().zip(&centred).map(|(b, c)| b * c).sum();
            out.push(dot as f32);
        }
    }
    out
}

/// Eigenvalues and eigenvectors (as the columns of a row-major `dim × dim` matrix) of a
/// symmetric matrix, by cyclic Jacobi sweeps until the off-diagonal mass is negligible.
fn symmetric_eigen(mut a: Vec<f64>, dim: usize) -> (Vec<f64>, Vec<f64>) {
    let mut v = vec![0f64; dim * dim];
    for i in 0..dim {
        v[i * dim + i] = 1.0;
    }
    let scale: f64 = a.iter().map(|x| x * x).sum::<f64>().max(f64::MIN_POSITIVE);
    for _sweep in 0..60 {
        let off: f64 = (0..dim)
            .flat_map(|i| (0..dim).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * dim + j] * a[i * dim + j])
            .sum();
        if off <= 1e-22 * scale {
            break;
        }
        for p in 0..dim {
            for q in p + 1..dim {
                let apq = a[p * dim + q];
                if apq.abs() <= 1e-300 {
                    continue;
                }
                let theta = (a[q * dim + q] - a[p * dim + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                // A ← Jᵀ A J, touching rows and columns p and q only.
                for k in 0..dim {
                    let akp = a[k * dim + p];
                    let akq = a[k * dim + q];
                    a[k * dim + p] = c * akp - s * akq;
                    a[k * dim + q] = s * akp + c * akq;
                }
                for k in 0..dim {
                    let apk = a[p * dim + k];
                    let aqk = a[q * dim + k];
                    a[p * dim + k] = c * apk - s * aqk;
                    a[q * dim + k] = s * apk + c * aqk;
                }
                for k in 0..dim {
                    let vkp = v[k * dim + p];
                    let vkq = v[k * dim + q];
                    v[k * dim + p] = c * vkp - s * vkq;
                    v[k * dim + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let values = (0..dim).map(|i| a[i * dim + i]).collect();
    (values, v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eigen_of_a_known_symmetric_matrix() {
        // [[2, 1], [1, 2]] has eigenvalues 3 (along [1, 1]) and 1 (along [1, -1]).
        let (values, vectors) = symmetric_eigen(vec![2.0, 1.0, 1.0, 2.0], 2);
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        assert!((sorted[0] - 1.0).abs() < 1e-9 && (sorted[1] - 3.0).abs() < 1e-9);
        let top = if values[0] > values[1] { 0 } else { 1 };
        assert!((vectors[top].abs() - vectors[2 + top].abs()).abs() < 1e-9);
        assert!(vectors[top] * vectors[2 + top] > 0.0);
    }

    #[test]
    fn projection_keeps_the_direction_of_most_variance() {
        // Points spread along x (±3) with a little y (±0.1), offset by (10, 10).
        let rows: Vec<f32> = [(-3.0, 0.1), (3.0, -0.1), (-1.0, -0.1), (1.0, 0.1)]
            .iter()
            .flat_map(|(x, y)| [10.0 + x, 10.0 + y])
            .collect();
        let projected = centre_and_project(&rows, 2, 1);
        assert_eq!(projected.len(), 4);
        let magnitudes: Vec<f32> = projected.iter().map(|v| v.abs()).collect();
        for (got, want) in magnitudes.iter().zip([3.0, 3.0, 1.0, 1.0]) {
            assert!((got - want).abs() < 0.01, "{projected:?}");
        }
        // Centred: the projections sum to zero.
        assert!(projected.iter().sum::<f32>().abs() < 1e-4);
    }
}
