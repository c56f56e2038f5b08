//! Rotate-half RoPE in one pass each way, the tables read by position.

use super::{f32s, overwritable, own_f32s, vectorized, Kernel, CHUNK};
use burn::backend::flex::FlexTensor;
use burn::tensor::TensorMetadata;
use rayon::prelude::*;

/// Rotate-half RoPE of `x` (rows, hidden), rows in (batch, seq) order, with (seq, hidden)
/// tables: per head, with `a` in the first half and `b = a + half` its partner,
/// `y[a] = x[a] cos[a] + x[b] sin[a]` and `y[b] = x[b] cos[b] + x[a] sin[b]`; with
/// `transposed` the transpose (the input gradient), `y[a] = x[a] cos[a] + x[b] sin[b]` and
/// `y[b] = x[b] cos[b] + x[a] sin[a]`. Each row reads its position's table row. Written over
/// `x` (q or k just out of their product, or the output gradient, read by nothing else: in
/// cache, where a new buffer is not; `own_f32s` copies a buffer `x` shares first). `None`,
/// and `x` untouched, unless f32 of matching shapes (the tables contiguous).
pub fn rope(
    x: &mut FlexTensor,
    [cos, sin]: [&FlexTensor; 2],
    heads: usize,
    transposed: bool,
) -> Option<()> {
    let (cs, ss) = (f32s(cos)?, f32s(sin)?);
    let (dims, table) = (x.shape(), cos.shape());
    if !overwritable(x) || dims.num_dims() != 2 || table.num_dims() != 2 {
        return None;
    }
    let ([n, hidden], [seq, width]) = (dims.dims::<2>(), table.dims::<2>());
    if sin.shape() != table || width != hidden || seq == 0 || n % seq != 0 {
        return None;
    }
    if heads == 0 || hidden % (2 * heads) != 0 {
        return None;
    }
    let half = hidden / heads / 2;
    own_f32s(x)
        .par_chunks_mut(hidden)
        .enumerate()
        .with_min_len(CHUNK.div_ceil(hidden))
        .for_each(|(row, x_then_y)| {
            let at = row % seq * hidden;
            let tables = [&cs[at..at + hidden], &ss[at..at + hidden]];
            vectorized(RopeRow {
                x_then_y,
                tables,
                half,
                transposed,
            })
        });
    Some(())
}

/// One row of [`rope`]: `x_then_y` holds `hidden` elements, `tables` the row's position's
/// cosines and sines, heads `2 · half` wide; each pair `(a, b)` is read before it is written.
struct RopeRow<'a> {
    x_then_y: &'a mut [f32],
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
        let heads = self.x_then_y.chunks_exact_mut(width);
        for (head, (c, s)) in heads.zip(cos.chunks_exact(width).zip(sin.chunks_exact(width))) {
            let (ya, yb) = head.split_at_mut(self.half);
            let (ca, cb) = c.split_at(self.half);
            let (mut sa, mut sb) = s.split_at(self.half);
            if self.transposed {
                (sa, sb) = (sb, sa);
            }
            let factors = ca.iter().zip(cb).zip(sa.iter().zip(sb));
            for ((ya, yb), ((&ca, &cb), (&sa, &sb))) in ya.iter_mut().zip(yb).zip(factors) {
                let (xa, xb) = (*ya, *yb);
                *ya = xa * ca + xb * sa;
                *yb = xb * cb + xa * sb;
            }
        }
    }
}
