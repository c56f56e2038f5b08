//! Rotate-half RoPE in one pass each way, the tables read by position.

use super::{f32s, like, output, vectorized, written, Kernel, CHUNK};
use burn::backend::flex::FlexTensor;
use burn::tensor::TensorMetadata;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Rotate-half RoPE of `x` (rows, hidden), rows in (batch, seq) order, with (seq, hidden)
/// tables: per head, with `a` in the first half and `b = a + half` its partner,
/// `y[a] = x[a] cos[a] + x[b] sin[a]` and `y[b] = x[b] cos[b] + x[a] sin[b]`; with
/// `transposed` the transpose (the input gradient), `y[a] = x[a] cos[a] + x[b] sin[b]` and
/// `y[b] = x[b] cos[b] + x[a] sin[a]`. Each row reads its position's table row. `None` unless
/// all are contiguous f32 of matching shapes.
pub fn rope(
    x: &FlexTensor,
    [cos, sin]: [&FlexTensor; 2],
    heads: usize,
    transposed: bool,
) -> Option<FlexTensor> {
    let (xs, cs, ss) = (f32s(x)?, f32s(cos)?, f32s(sin)?);
    let (dims, table) = (x.shape(), cos.shape());
    if dims.num_dims() != 2 || table.num_dims() != 2 || sin.shape() != table {
        return None;
    }
    let ([n, hidden], [seq, width]) = (dims.dims::<2>(), table.dims::<2>());
    if width != hidden || seq == 0 || n % seq != 0 || heads == 0 || hidden % (2 * heads) != 0 {
        return None;
    }
    let half = hidden / heads / 2;
    let mut out = output(xs.len());
    out.par_chunks_mut(hidden)
        .zip(xs.par_chunks(hidden))
        .enumerate()
        .with_min_len(CHUNK.div_ceil(hidden))
        .for_each(|(row, (y, x))| {
            let at = row % seq * hidden;
            let tables = [&cs[at..at + hidden], &ss[at..at + hidden]];
            vectorized(RopeRow {
                y,
                x,
                tables,
                half,
                transposed,
            })
        });
    // SAFETY: each row's heads, `2 · half` wide, tile it (`hidden` is a multiple of
    // `2 · heads`), and every index of a head is written as `a` or as `b`.
    Some(like(x, unsafe { written(out) }))
}

/// One row of [`rope`]: `y` and `x` hold `hidden` elements, `tables` the row's position's
/// cosines and sines, heads `2 · half` wide.
struct RopeRow<'a> {
    y: &'a mut [MaybeUninit<f32>],
    x: &'a [f32],
    tables: [&'a [f32]; 2],
    half: usize,
    transposed: bool,
}

impl Kernel for RopeRow<'_> {
    type Output = ();

    /// Each head's halves as slices zipped together, so that the loop has no index to check
    /// and vectorizes (an indexed loop over the row ran scalar: 3 % of a LLaMA step).
    #[inline(always)]
    fn run(self) {
        let width = 2 * self.half;
        let [cos, sin] = self.tables;
        let heads = self
            .y
            .chunks_exact_mut(width)
            .zip(self.x.chunks_exact(width));
        for ((y, x), (c, s)) in heads.zip(cos.chunks_exact(width).zip(sin.chunks_exact(width))) {
            let (ya, yb) = y.split_at_mut(self.half);
            let (xa, xb) = x.split_at(self.half);
            let (ca, cb) = c.split_at(self.half);
            let (mut sa, mut sb) = s.split_at(self.half);
            if self.transposed {
                (sa, sb) = (sb, sa);
            }
            let pairs = ya.iter_mut().zip(yb).zip(xa.iter().zip(xb));
            let factors = ca.iter().zip(cb).zip(sa.iter().zip(sb));
            for (((ya, yb), (&xa, &xb)), ((&ca, &cb), (&sa, &sb))) in pairs.zip(factors) {
                ya.write(xa * ca + xb * sa);
                yb.write(xb * cb + xa * sb);
            }
        }
    }
}
