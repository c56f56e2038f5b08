//! The swap of two middle axes as a contiguous copy made by rows or small transposes.

use super::{f32s, fills_its_buffer, output, written, CHUNK};
use burn::backend::flex::FlexTensor;
use burn::tensor::{TensorData, TensorMetadata};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// A contiguous 3-D (a, b, c) or 4-D (a, b, c, d) tensor with its axes 1 and 2 swapped, as a
/// contiguous (a, c, b) or (a, c, b, d) one, where Flex's own copy of a permuted view walks it
/// one element at a time through a general strided iterator (~7 % of a LLaMA step around the
/// attention heads; 40 % of a tensor-train step). Each of the `a` slabs is copied on its own
/// (in parallel): whole rows of d elements, or for 3-D a plain transpose of each (b × c) matrix.
/// Where `x` is itself a swapped view of a contiguous tensor (a product written with its
/// heads merged, `flex_gemm::Order`), the swap is that tensor, a view: nothing to copy.
pub fn swap_middle_axes(x: &FlexTensor) -> Option<FlexTensor> {
    let view = x.transpose(1, 2);
    if fills_its_buffer(&view) {
        return Some(view);
    }
    let xs = f32s(x)?;
    let dims = x.shape();
    let (swapped, [b, c, d]) = match dims.num_dims() {
        3 => {
            let [a, b, c] = dims.dims::<3>();
            (vec![a, c, b], [b, c, 1])
        }
        4 => {
            let [a, b, c, d] = dims.dims::<4>();
            (vec![a, c, b, d], [b, c, d])
        }
        _ => return None,
    };
    let slab = b * c * d;
    let mut out = output(xs.len());
    if slab > 0 {
        out.par_chunks_mut(slab)
            .zip(xs.par_chunks(slab))
            .with_min_len(CHUNK.div_ceil(slab))
            .for_each(|(to, from)| swap_slab(to, from, [b, c, d]));
    }
    // SAFETY: `swap_slab` writes every element of its slab, and the slabs cover the buffer.
    let out = unsafe { written(out) };
    Some(FlexTensor::from_data(TensorData::new(out, swapped)))
}

/// `to[k, j] = from[j, k]` for j < b, k < c, each element a row of d values.
fn swap_slab(to: &mut [MaybeUninit<f32>], from: &[f32], [b, c, d]: [usize; 3]) {
    if d == 1 {
        for (k, row) in to.chunks_exact_mut(b).enumerate() {
            for (j, value) in row.iter_mut().enumerate() {
                value.write(from[j * c + k]);
            }
        }
        return;
    }
    for (k, rows) in to.chunks_exact_mut(b * d).enumerate() {
        for (j, row) in rows.chunks_exact_mut(d).enumerate() {
            let at = (j * c + k) * d;
            for (value, &v) in row.iter_mut().zip(&from[at..at + d]) {
                value.write(v);
            }
        }
    }
}
