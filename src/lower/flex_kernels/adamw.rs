//! One AdamW step of a parameter in one pass: the two moments and the parameter together, where
//! Burn's AdamW makes about fourteen passes (each scalar, on one thread) and allocates a tensor
//! for each. Every operation is Burn's, in Burn's order and in f32, so the results are equal bit
//! for bit (`train::optimizer` tests it).

use super::{f32s, like, output, vectorized, written, written_part, Kernel, CHUNK};
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
}

/// `[parameter, first moment, second moment]` after one step from `param` with gradient `grad`
/// and the moments of the steps before (`None` at the first step: both start at zero, where
/// Burn's first step skips the products with zero moments; so does this one). `None` unless
/// every tensor is contiguous f32 of one shape.
pub fn adamw(
    param: &FlexTensor,
    grad: &FlexTensor,
    moments: Option<[&FlexTensor; 2]>,
    step: &AdamWStep,
) -> Option<[FlexTensor; 3]> {
    let (ps, gs) = (f32s(param)?, f32s(grad)?);
    let shape = param.shape();
    if grad.shape() != shape {
        return None;
    }
    let before = match moments {
        Some([m, v]) if m.shape() == shape && v.shape() == shape => Some([f32s(m)?, f32s(v)?]),
        Some(_) => return None,
        None => None,
    };
    let n = ps.len();
    let (mut p_out, mut m_out, mut v_out) = (output(n), output(n), output(n));
    let outs = p_out
        .par_chunks_mut(CHUNK)
        .zip(m_out.par_chunks_mut(CHUNK))
        .zip(v_out.par_chunks_mut(CHUNK));
    let ins = ps.par_chunks(CHUNK).zip(gs.par_chunks(CHUNK));
    outs.zip(ins)
        .enumerate()
        .for_each(|(i, (((p, m), v), (x, g)))| {
            let at = i * CHUNK..i * CHUNK + x.len();
            vectorized(AdamWChunk {
                out: [p, m, v],
                param: x,
                grad: g,
                moments: before.map(|[m, v]| [&m[at.clone()], &v[at]]),
                step,
            })
        });
    // SAFETY: `AdamWChunk` writes every element of its three chunks, which cover the buffers.
    let [p_out, m_out, v_out] = [p_out, m_out, v_out].map(|out| unsafe { written(out) });
    Some([like(param, p_out), like(param, m_out), like(param, v_out)])
}

/// One task's elements of [`adamw`].
struct AdamWChunk<'a> {
    out: [&'a mut [MaybeUninit<f32>]; 3],
    param: &'a [f32],
    grad: &'a [f32],
    moments: Option<[&'a [f32]; 2]>,
    step: &'a AdamWStep,
}

impl Kernel for AdamWChunk<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let s = *self.step;
        let [p_out, m_out, v_out] = self.out;
        // The moments: Burn's `m·β₁ + g·(1 − β₁)` and `v·β₂ + g²·(1 − β₂)`.
        match self.moments {
            Some([m, v]) => {
                for ((out, &m), &g) in m_out.iter_mut().zip(m).zip(self.grad) {
                    out.write(m * s.beta_1 + g * s.rest_1);
                }
                for ((out, &v), &g) in v_out.iter_mut().zip(v).zip(self.grad) {
                    out.write(v * s.beta_2 + (g * g) * s.rest_2);
                }
            }
            None => {
                for (out, &g) in m_out.iter_mut().zip(self.grad) {
                    out.write(g * s.rest_1);
                }
                for (out, &g) in v_out.iter_mut().zip(self.grad) {
                    out.write((g * g) * s.rest_2);
                }
            }
        }
        // SAFETY: the loops above wrote both moments whole.
        let (m_out, v_out) = unsafe { (written_part(m_out), written_part(v_out)) };
        // The parameter: `x·(1 − lr·λ) − lr · m̂ / (√v̂ + ε)`.
        let moments = m_out.iter().zip(v_out.iter());
        for ((out, &x), (&m, &v)) in p_out.iter_mut().zip(self.param).zip(moments) {
            let delta = (m / s.correction_1) / ((v / s.correction_2).sqrt() + s.epsilon);
            let decayed = match s.decay {
                Some(d) => x * d,
                None => x,
            };
            out.write(decayed - delta * s.lr);
        }
    }
}
