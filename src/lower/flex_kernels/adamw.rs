//! One AdamW step of a parameter in one pass: the two moments and the parameter together, where
//! Burn's AdamW makes about fourteen passes (each scalar, on one thread) and allocates a tensor
//! for each. Every operation is Burn's, in Burn's order and in f32, so the results are equal bit
//! for bit (`train::optimizer` tests it).

use super::{
    f32s, like, output, overwritable, own_f32s, vectorized, written, written_part, Kernel, CHUNK,
};
use burn::backend::flex::FlexTensor;
use burn::tensor::TensorMetadata;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// The step's constants, as Burn's AdamW turns them into f32.
#[derive(Clone, Copy, Debug)]
pub struct AdamWStep {
    pub beta_1: f32,
    pub beta_2: f32,
    /// `1 − β₁` and `1 − β₂`, computed in f32.
    pub rest_1: f32,
    pub rest_2: f32,
    /// The bias corrections `1 − β₁ᵗ` and `1 − β₂ᵗ` of this step `t`.
    pub correction_1: f32,
    pub correction_2: f32,
    pub epsilon: f32,
    pub lr: f32,
    /// `1 − lr · weight decay` (None: no decay, the parameter is not multiplied).
    pub decay: Option<f32>,
    /// The factor each gradient element is multiplied by first (the clip's; 1, which leaves
    /// every value as it is, when it does not clip).
    pub grad_scale: f32,
}

/// One step over `param` with gradient `grad` at the first step, where both moments start at
/// zero (Burn's first step skips the products with zero moments; so does this one): the
/// parameter written over `param` (the optimizer reads it last; `own_f32s` copies a buffer
/// something else holds first), the two moments returned. `None`, and `param` untouched,
/// unless both are f32 of one shape (`grad` contiguous).
pub fn adamw_first(
    param: &mut FlexTensor,
    grad: &FlexTensor,
    step: &AdamWStep,
) -> Option<[FlexTensor; 2]> {
    let gs = f32s(grad)?;
    if !overwritable(param) || grad.shape() != param.shape() {
        return None;
    }
    let (mut m_out, mut v_out) = (output(gs.len()), output(gs.len()));
    let moments = m_out
        .par_chunks_mut(CHUNK)
        .zip(v_out.par_chunks_mut(CHUNK))
        .map(|(m, v)| Moments::First([m, v]));
    in_tasks(own_f32s(param), gs, moments, step);
    // SAFETY: `AdamWChunk` writes every element of both moments' chunks, which cover them.
    let [m, v] = [m_out, v_out].map(|out| unsafe { written(out) });
    Some([like(grad, m), like(grad, v)])
}

/// One step over `param` with gradient `grad` and the moments `m`, `v` of the steps before,
/// all three written over (as [`adamw_first`]'s parameter). `None`, and all untouched, unless
/// every tensor is f32 of one shape (`grad` contiguous).
pub fn adamw(
    param: &mut FlexTensor,
    grad: &FlexTensor,
    [m, v]: [&mut FlexTensor; 2],
    step: &AdamWStep,
) -> Option<()> {
    let gs = f32s(grad)?;
    let takes = |t: &FlexTensor| overwritable(t) && t.shape() == grad.shape();
    if !(takes(param) && takes(m) && takes(v)) {
        return None;
    }
    let moments = own_f32s(m)
        .par_chunks_mut(CHUNK)
        .zip(own_f32s(v).par_chunks_mut(CHUNK))
        .map(|(m, v)| Moments::Kept([m, v]));
    in_tasks(own_f32s(param), gs, moments, step);
    Some(())
}

/// The step over `param` in tasks of `CHUNK` elements, each with its share of `grad` and the
/// task's `moments`.
fn in_tasks<'a>(
    param: &'a mut [f32],
    grad: &'a [f32],
    moments: impl IndexedParallelIterator<Item = Moments<'a>>,
    step: &'a AdamWStep,
) {
    param
        .par_chunks_mut(CHUNK)
        .zip(grad.par_chunks(CHUNK))
        .zip(moments)
        .for_each(|((param, grad), moments)| {
            vectorized(AdamWChunk {
                param,
                grad,
                moments,
                step,
            })
        });
}

/// One task's elements of a step: the parameter updated in place.
struct AdamWChunk<'a> {
    param: &'a mut [f32],
    grad: &'a [f32],
    moments: Moments<'a>,
    step: &'a AdamWStep,
}

/// A task's moments: new ones to write at the first step, else the kept ones to update.
enum Moments<'a> {
    First([&'a mut [MaybeUninit<f32>]; 2]),
    Kept([&'a mut [f32]; 2]),
}

impl Kernel for AdamWChunk<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let s = *self.step;
        let g = self.grad;
        // The clip's product, `g · factor`, rounded as its own pass rounded it.
        let scaled = |g: f32| g * s.grad_scale;
        // The moments: Burn's `m·β₁ + g·(1 − β₁)` and `v·β₂ + g²·(1 − β₂)`.
        let [m, v] = match self.moments {
            Moments::Kept([m, v]) => {
                for (m, &g) in m.iter_mut().zip(g) {
                    *m = *m * s.beta_1 + scaled(g) * s.rest_1;
                }
                for (v, &g) in v.iter_mut().zip(g) {
                    let g = scaled(g);
                    *v = *v * s.beta_2 + (g * g) * s.rest_2;
                }
                [m, v]
            }
            Moments::First([m_out, v_out]) => {
                for (out, &g) in m_out.iter_mut().zip(g) {
                    out.write(scaled(g) * s.rest_1);
                }
                for (out, &g) in v_out.iter_mut().zip(g) {
                    let g = scaled(g);
                    out.write((g * g) * s.rest_2);
                }
                // SAFETY: the loops above wrote both moments whole.
                unsafe { [written_part(m_out), written_part(v_out)] }
            }
        };
        // The parameter: `x·(1 − lr·λ) − lr · m̂ / (√v̂ + ε)`.
        let moments = m.iter().zip(v.iter());
        for (x, (&m, &v)) in self.param.iter_mut().zip(moments) {
            let delta = (m / s.correction_1) / ((v / s.correction_2).sqrt() + s.epsilon);
            let decayed = match s.decay {
                Some(d) => *x * d,
                None => *x,
            };
            *x = decayed - delta * s.lr;
        }
    }
}
