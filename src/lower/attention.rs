//! Attention's pieces: rotate-half RoPE, the causal mask and scaled dot-product attention.
//! The IR keeps RoPE and attention as single coarse nodes; these are their Burn functions.

use super::fused;
use super::precision::{cast_like, widen};
use burn::tensor::{backend::Backend, Tensor, TensorData};

/// Tables for rotate-half RoPE (frequency base `theta`, 10000 in the original LLaMA) over a
/// whole (seq, hidden) row, every head alike: `cos[t, i]` and `sin[t, i]`, with the sign of
/// rotate-half folded into `sin` (negative on the first half of each head), so that
/// `rope(x) = x·cos + swap_halves(x)·sin`.
pub fn rope_tables<B: Backend>(
    [seq, heads, hidden]: [usize; 3],
    theta: f64,
    device: &B::Device,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    rope_tables_at::<B>(0, [seq, heads, hidden], theta, device)
}

/// [`rope_tables`] for the positions `start .. start + seq` (a pass that continues a cached
/// sequence).
pub fn rope_tables_at<B: Backend>(
    start: usize,
    [seq, heads, hidden]: [usize; 3],
    theta: f64,
    device: &B::Device,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let hd = hidden / heads;
    let half = hd / 2;
    // A head's index i and i + half share a frequency, and every head of a position the same
    // angles: each (position, frequency) pair's cosine and sine are computed once, in f64, and
    // copied to its places (the table had a `powf` and a `cos` and `sin` per entry, 1.6 ms of
    // a tiny LLaMA's 35 ms step, every step).
    let frequencies: Vec<f64> = (0..half)
        .map(|j| 1.0 / theta.powf((2 * j) as f64 / hd as f64))
        .collect();
    let mut cos = Vec::with_capacity(seq * hidden);
    let mut sin = Vec::with_capacity(seq * hidden);
    let (mut head_cos, mut head_sin) = (vec![0f32; hd], vec![0f32; hd]);
    for t in start..start + seq {
        for (j, f) in frequencies.iter().enumerate() {
            let a = t as f64 * f;
            let (c, s) = (a.cos() as f32, a.sin());
            (head_cos[j], head_cos[j + half]) = (c, c);
            (head_sin[j], head_sin[j + half]) = ((-s) as f32, s as f32);
        }
        for _ in 0..heads {
            cos.extend_from_slice(&head_cos);
            sin.extend_from_slice(&head_sin);
        }
    }
    (
        Tensor::from_data(TensorData::new(cos, [seq, hidden]), device),
        Tensor::from_data(TensorData::new(sin, [seq, hidden]), device),
    )
}

/// Rotate-half RoPE of q or k in the (batch·seq, hidden) layout: per head, `x·cos +
/// rotate_half(x)·sin` with `rotate_half([x1, x2]) = [−x2, x1]` (the sign lives in `sin`).
/// One autodiff node on the CPU and GPU backends (`fused::rope`).
pub fn rope<B: Backend>(
    x: Tensor<B, 2>,
    heads: usize,
    cos: &Tensor<B, 2>,
    sin: &Tensor<B, 2>,
) -> Tensor<B, 2> {
    fused::rope(x, heads, [cos, sin])
}

/// [`rope`] composed of Burn's ops, and with `transposed` its transpose
/// `x·cos + swap_halves(x·sin)` (the input gradient, `swap_halves` being its own inverse).
pub fn rope_composed<B: Backend>(
    x: Tensor<B, 2>,
    heads: usize,
    [cos, sin]: [Tensor<B, 2>; 2],
    transposed: bool,
) -> Tensor<B, 2> {
    let n = x.dims()[0];
    // Tables of the full (batch·seq, hidden) shape: a broadcast operand would send the product
    // down the backends' strided path again.
    let full = |t: Tensor<B, 2>| {
        let seq = t.dims()[0];
        if seq == n {
            t
        } else {
            t.repeat_dim(0, n / seq)
        }
    };
    let (cos, sin) = (full(cos), full(sin));
    if transposed {
        x.clone() * cos + swap_halves(x * sin, heads)
    } else {
        x.clone() * cos + swap_halves(x, heads) * sin
    }
}

/// Each head's two halves swapped, `[x1, x2] → [x2, x1]`.
fn swap_halves<B: Backend>(x: Tensor<B, 2>, heads: usize) -> Tensor<B, 2> {
    let [n, hidden] = x.dims();
    let half = hidden / heads / 2;
    let per_head = x.reshape([n * heads, 2 * half]);
    Tensor::cat(
        vec![
            per_head.clone().narrow(1, half, half),
            per_head.narrow(1, 0, half),
        ],
        1,
    )
    .reshape([n, hidden])
}

/// The causal mask as an additive bias, 0 on and below the diagonal and −10³⁰ above, in the
/// full (batch, heads, seq, seq) shape of the scores: adding a broadcast operand, or
/// `mask_fill` with a broadcast mask, sends the CPU backends down an element-by-element strided
/// path (BENCHMARKS.md, attempt 3).
pub fn causal_bias<B: Backend>([batch, heads, n]: [usize; 3], device: &B::Device) -> Tensor<B, 4> {
    causal_bias_after::<B>([batch, heads, n], 0, device)
}

/// The mask of a pass over `seq` new queries that follow `offset` cached positions (0: a whole
/// sequence, [`causal_bias`]): query t (position offset + t) sees keys 0 ..= offset + t; 0
/// where it may look, −10³⁰ elsewhere, in the full (batch, heads, seq, offset + seq) shape.
pub fn causal_bias_after<B: Backend>(
    [batch, heads, seq]: [usize; 3],
    offset: usize,
    device: &B::Device,
) -> Tensor<B, 4> {
    let keys = offset + seq;
    let mut bias = vec![0f32; batch * heads * seq * keys];
    for (i, row) in bias.chunks_exact_mut(keys).enumerate() {
        row[offset + i % seq + 1..].fill(-1e30);
    }
    Tensor::from_data(TensorData::new(bias, [batch, heads, seq, keys]), device)
}

/// Scaled dot-product attention, softmax(q kᵀ / √d + mask) v, over (batch, heads, seq, d).
/// Written out (the same matmul / mask / softmax graph Burn's CPU fallback runs under autodiff)
/// so that every op on the path is one the finite-difference tests cover. The output is laid
/// out for the heads' merge (`fused::matmul_merging_heads`).
pub fn sdpa<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    causal_bias: Option<&Tensor<B, 4>>,
) -> Tensor<B, 4> {
    let scale = 1.0 / (q.dims()[3] as f64).sqrt();
    // The scale inside the product, or inside the softmax where its kernel takes it.
    let in_softmax = fused::softmax_scales::<B>(q.dtype());
    let (product_scale, softmax_scale) = if in_softmax {
        (1.0, scale)
    } else {
        (scale, 1.0)
    };
    let scores = fused::matmul_transposed(q, k, product_scale);
    // The mask and the softmax in f32, whatever the scores were computed in.
    let probabilities = fused::scaled_softmax(widen(scores), causal_bias, softmax_scale);
    let probabilities = cast_like(probabilities, &v);
    fused::matmul_merging_heads(probabilities, v)
}
