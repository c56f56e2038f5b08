//! The linear gate's product `α · h` by a one-element `α`, and its backward with both
//! gradients in one pass: the gate's node wherever no norm of the sum takes it (a pathway
//! without a norm, a half-precision pass). Where one does, `norm::scaled_norm_backward`
//! computes the same gradients inside the norm's backward pass.

use super::{f32s, like, output, sum_by_pairs, vectorized, written, Kernel, CHUNK};
use burn::backend::flex::FlexTensor;
use burn::tensor::{TensorData, TensorMetadata};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// `h · α` for a one-element `alpha`, each element `h · α` as the broadcast product computes it.
/// `None` unless both are contiguous f32 and `alpha` has one element.
pub fn scale(h: &FlexTensor, alpha: &FlexTensor) -> Option<FlexTensor> {
    let (hs, &[alpha]) = (f32s(h)?, f32s(alpha)?) else {
        return None;
    };
    let mut out = output(hs.len());
    out.par_chunks_mut(CHUNK)
        .zip(hs.par_chunks(CHUNK))
        .for_each(|(out, h)| vectorized(Scaled { out, h, alpha }));
    // SAFETY: `Scaled` writes every element of its chunk, and the chunks cover the buffer.
    Some(like(h, unsafe { written(out) }))
}

/// The gradients `[dh, dα]` of `h · α` given the output gradient `g`: `dh = g · α` and
/// `dα = Σ g ⊙ h` (shaped as `alpha`), in one pass over `g` and `h`. The tasks' partial sums
/// are added in task order, so the result does not depend on how the pool ran them. `None`
/// unless contiguous f32 of matching shapes and a one-element `alpha`.
pub fn scale_backward(
    h: &FlexTensor,
    alpha: &FlexTensor,
    g: &FlexTensor,
) -> Option<[FlexTensor; 2]> {
    let (hs, gs, &[a]) = (f32s(h)?, f32s(g)?, f32s(alpha)?) else {
        return None;
    };
    if h.shape() != g.shape() {
        return None;
    }
    let mut dh = output(hs.len());
    let mut partial = Vec::new();
    dh.par_chunks_mut(CHUNK)
        .zip(hs.par_chunks(CHUNK).zip(gs.par_chunks(CHUNK)))
        .map(|(dh, (h, g))| vectorized(ScaledGradient { dh, h, g, alpha: a }))
        .collect_into_vec(&mut partial);
    let d_alpha: f32 = partial.iter().sum();
    // SAFETY: `ScaledGradient` writes every element of its chunk, which the chunks cover.
    let dh = like(h, unsafe { written(dh) });
    Some([
        dh,
        FlexTensor::from_data(TensorData::new(vec![d_alpha], alpha.shape())),
    ])
}

/// A chunk of [`scale`].
struct Scaled<'a> {
    out: &'a mut [MaybeUninit<f32>],
    h: &'a [f32],
    alpha: f32,
}

impl Kernel for Scaled<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        for (out, &h) in self.out.iter_mut().zip(self.h) {
            out.write(h * self.alpha);
        }
    }
}

/// A chunk of [`scale_backward`]: its `dh`, and its share of `dα`.
struct ScaledGradient<'a> {
    dh: &'a mut [MaybeUninit<f32>],
    h: &'a [f32],
    g: &'a [f32],
    alpha: f32,
}

impl Kernel for ScaledGradient<'_> {
    type Output = f32;

    #[inline(always)]
    fn run(self) -> f32 {
        for (dh, &g) in self.dh.iter_mut().zip(self.g) {
            dh.write(g * self.alpha);
        }
        sum_by_pairs(self.g, self.h, |g, h| g * h)
    }
}
