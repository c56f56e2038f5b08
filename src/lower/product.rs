//! The one product of rows by a weight, `x (M, k) · w (k, n)`, that every lowered layer makes.
//!
//! Burn 0.21's cubecl matmul (wgpu, and the same kernels on CUDA) has a kernel,
//! autotune's `matmul_double_unit_max_tile_size`, that multiplies a tall matrix by an 8 × 8
//! right side read transposed wrong. Autotune picks it or not by timing, so the input gradient
//! of `x · w` for thousands of rows and an 8 × 8 `w` is right on one run and off by about its
//! own norm on the next (BENCHMARKS.md, "GPU"; tests/wgpu.rs pins the kernel and shows both).
//! Autotune only tries the double-buffered kernels on products with a side of 512 or more
//! (cubek-matmul's `should_tune_double_buffering`), so a small weight is applied to the rows in
//! groups of `GROUP`, `(M/g, g, k) · (1, k, n)`, and to the fewer than `GROUP` rows left over as
//! one plain product: the same sums, in products that kernel is never given. The CPU backends
//! (those with laxc's own autodiff nodes) skip the grouping: it would only cost them a batched
//! product and a sum over its groups for the weight's gradient.

use super::fused;
use burn::tensor::{backend::Backend, Tensor};

/// A weight with both sides at most this is small: 8 × 8 is the size known wrong; 4 × 4 and
/// 16 × 16 (tensor gates of rank 16 and 256) take the same path for margin.
pub const SMALL: usize = 16;
/// Rows per group of the batched product: under 512, and large, so that a CPU back end runs
/// few products (groups of 16 cost Flex 5% of a tensor-gate spec's step).
pub const GROUP: usize = 256;

/// `x · w` for `x (M, k)` and `w (k, n)`.
pub fn rows_times<B: Backend>(x: Tensor<B, 2>, w: Tensor<B, 2>) -> Tensor<B, 2> {
    let [m, k] = x.dims();
    let n = w.dims()[1];
    if k > SMALL || n > SMALL || m <= GROUP || fused::has_nodes::<B>() {
        return fused::matmul(x, w, 1.0);
    }
    in_groups(x, w)
}

/// `x · w` as products of `GROUP` rows each, `(M/g, g, k) · (1, k, n)`, and one plain product
/// of the rows left over.
fn in_groups<B: Backend>(x: Tensor<B, 2>, w: Tensor<B, 2>) -> Tensor<B, 2> {
    let [m, k] = x.dims();
    let n = w.dims()[1];
    let whole = m / GROUP * GROUP;
    let grouped = |x: Tensor<B, 2>| {
        x.reshape([whole / GROUP, GROUP, k])
            .matmul(w.clone().reshape([1, k, n]))
            .reshape([whole, n])
    };
    if whole == m {
        return grouped(x);
    }
    let rest = x.clone().narrow(0, whole, m - whole).matmul(w.clone());
    Tensor::cat(vec![grouped(x.narrow(0, 0, whole)), rest], 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::TensorData;

    type B = Autodiff<Flex>;

    fn values(len: usize, seed: f32) -> Vec<f32> {
        (0..len).map(|i| ((i as f32) * 0.61 + seed).sin()).collect()
    }

    /// The grouped product and its gradients are the plain product's, for row counts that are
    /// and are not a multiple of GROUP (the rows left over are one plain product).
    #[test]
    fn grouped_product_equals_the_plain_one_with_its_gradients() {
        let dev = Default::default();
        for (m, k, n) in [
            (1040, 8, 8),
            (2048, 4, 4),
            (999, 16, 8),
            (24, 8, 16),
            (64, 32, 8),
        ] {
            let x = Tensor::<B, 2>::from_data(TensorData::new(values(m * k, 0.3), [m, k]), &dev)
                .require_grad();
            let w = Tensor::<B, 2>::from_data(TensorData::new(values(k * n, 1.7), [k, n]), &dev)
                .require_grad();
            let upstream: Tensor<B, 2> =
                Tensor::from_data(TensorData::new(values(m * n, 2.9), [m, n]), &dev);
            let run = |product: Tensor<B, 2>| {
                let grads = (product.clone() * upstream.clone()).sum().backward();
                let flat = |t: Tensor<Flex, 2>| t.into_data().to_vec::<f32>().unwrap();
                (
                    flat(product.inner()),
                    flat(x.grad(&grads).unwrap()),
                    flat(w.grad(&grads).unwrap()),
                )
            };
            let plain = run(x.clone().matmul(w.clone()));
            // `rows_times` as the lowering calls it, and the grouping itself where it applies
            // (on this CPU backend `rows_times` skips it).
            let mut candidates = vec![("rows_times", run(rows_times(x.clone(), w.clone())))];
            if m > GROUP && k <= SMALL && n <= SMALL {
                candidates.push(("in groups", run(in_groups(x.clone(), w.clone()))));
            }
            for (how, got) in &candidates {
                for (name, a, b) in [
                    ("product", &got.0, &plain.0),
                    ("x gradient", &got.1, &plain.1),
                    ("w gradient", &got.2, &plain.2),
                ] {
                    // Relative to the norm: the w gradient sums a thousand rows in another order.
                    let diff: f32 = a.iter().zip(b).map(|(p, q)| (p - q).powi(2)).sum();
                    let size: f32 = b.iter().map(|q| q * q).sum();
                    let error = (diff / size).sqrt();
                    assert!(
                        error < 1e-6,
                        "{m}×{k} · {k}×{n} {how}: {name} differs by {error:.2e}"
                    );
                }
            }
        }
    }
}
