//! Rotate-half RoPE in one pass each way, the tables read by position.

use super::{f32s, like, output, written, CHUNK};
use burn::backend::flex::FlexTensor;
use burn::tensor::TensorMetadata;
use rayon::prelude::*;

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
            let (c, s) = (&cs[at..at + hidden], &ss[at..at + hidden]);
            for head in (0..hidden).step_by(2 * half) {
                for a in head..head + half {
                    let b = a + half;
                    let (sa, sb) = if transposed {
                        (s[b], s[a])
                    } else {
                        (s[a], s[b])
                    };
                    y[a].write(x[a] * c[a] + x[b] * sa);
                    y[b].write(x[b] * c[b] + x[a] * sb);
                }
            }
        });
    // SAFETY: each row's heads, `2 · half` wide, tile it (`hidden` is a multiple of
    // `2 · heads`), and every index of a head is written as `a` or as `b`.
    Some(like(x, unsafe { written(out) }))
}
