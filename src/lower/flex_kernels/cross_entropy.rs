//! Cross-entropy from logits and its input gradient: one pass over a row each way (after its
//! maximum) on the vectorized `exp` of `math`.
//!
//! Why: composed of Flex's ops, the loss made seven passes over the logits forward (the
//! maximum, a broadcast subtraction, libm's `expf` element by element, a row sum, …) and kept
//! `exp(x − max)`, a tensor as large as the logits, for a backward pass of four more. On a
//! LLaMA-60M (vocabulary 32,000) `expf` alone was 3 % of a step. Here the forward pass keeps
//! each row's `logsumexp` (one number a row) and the backward pass recomputes the softmax from
//! the logits, written over them.

use super::math::exp;
use super::{f32s, max_of, overwritable, own_f32s, sum_by, vectorized, Kernel, CHUNK};
use burn::backend::flex::FlexTensor;
use burn::tensor::{DType, TensorData, TensorMetadata};
use rayon::prelude::*;

/// Each row's `[loss, logsumexp]` of f32 logits `x` (rows, classes) and integer `targets`
/// (rows, 1), each as a (rows, 1) tensor: `logsumexp(x) = max + ln Σ exp(x − max)`, the loss
/// `logsumexp(x) − x[target]`. `None` unless `x` is contiguous f32 of two axes and every
/// target a class index.
pub fn cross_entropy(x: &FlexTensor, targets: &FlexTensor) -> Option<[FlexTensor; 2]> {
    let (xs, [rows, classes]) = (f32s(x)?, matrix(x)?);
    let targets = class_indices(targets, rows, classes)?;
    let mut stats = vec![[0.0f32; 2]; rows];
    let per_task = rows_per_task(classes);
    stats
        .par_chunks_mut(per_task)
        .zip(xs.par_chunks(per_task * classes))
        .zip(targets.par_chunks(per_task))
        .for_each(|((stats, logits), targets)| {
            vectorized(LossRows {
                stats,
                logits,
                targets,
                classes,
            })
        });
    let column = |k: usize| {
        let values = stats.iter().map(|s| s[k]).collect::<Vec<f32>>();
        FlexTensor::from_data(TensorData::new(values, [rows, 1]))
    };
    Some([column(0), column(1)])
}

/// The logits' gradient `(softmax(x) − onehot(target)) · g` written over the logits
/// `x_then_dx`, from each row's `logsumexp` (as [`cross_entropy`] gave it) and the loss's
/// gradient `g` (rows, 1). `None`, and `x_then_dx` untouched, unless the shapes are those.
pub fn cross_entropy_backward(
    x_then_dx: &mut FlexTensor,
    logsumexp: &FlexTensor,
    targets: &FlexTensor,
    g: &FlexTensor,
) -> Option<()> {
    let [rows, classes] = matrix(x_then_dx)?;
    let (lse, gs) = (f32s(logsumexp)?, f32s(g)?);
    let targets = class_indices(targets, rows, classes)?;
    if !overwritable(x_then_dx) || lse.len() != rows || gs.len() != rows {
        return None;
    }
    let per_task = rows_per_task(classes);
    own_f32s(x_then_dx)
        .par_chunks_mut(per_task * classes)
        .zip(lse.par_chunks(per_task))
        .zip(gs.par_chunks(per_task))
        .zip(targets.par_chunks(per_task))
        .for_each(|(((x_then_dx, lse), g), targets)| {
            vectorized(GradientRows {
                x_then_dx,
                lse,
                g,
                targets,
                classes,
            })
        });
    Some(())
}

/// The (rows, classes) of a matrix with at least one class (its dtype and layout are
/// `f32s`' and `overwritable`'s to check).
fn matrix(x: &FlexTensor) -> Option<[usize; 2]> {
    let dims = x.shape();
    (dims.len() == 2 && dims[1] > 0).then(|| [dims[0], dims[1]])
}

/// The targets as indices, one per row, each below `classes`.
fn class_indices(targets: &FlexTensor, rows: usize, classes: usize) -> Option<Vec<usize>> {
    let indices: Vec<i64> = match targets.dtype() {
        DType::I64 => targets.as_slice::<i64>()?.to_vec(),
        DType::I32 => targets
            .as_slice::<i32>()?
            .iter()
            .map(|&t| t as i64)
            .collect(),
        _ => return None,
    };
    let valid = indices.len() == rows && indices.iter().all(|&t| (0..classes as i64).contains(&t));
    valid.then(|| indices.into_iter().map(|t| t as usize).collect())
}

/// Rows per task: about [`CHUNK`] elements, at least one row.
fn rows_per_task(classes: usize) -> usize {
    CHUNK.div_ceil(classes.max(1))
}

/// e^d, exactly 0 below e^−87 (where `exp` clamps), as the softmax kernel takes it.
#[inline(always)]
fn exp_or_zero(d: f32) -> f32 {
    if d < -87.0 {
        0.0
    } else {
        exp(d)
    }
}

struct LossRows<'a> {
    stats: &'a mut [[f32; 2]],
    logits: &'a [f32],
    targets: &'a [usize],
    classes: usize,
}

impl Kernel for LossRows<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let rows = self.logits.chunks_exact(self.classes);
        for ((stats, row), &target) in self.stats.iter_mut().zip(rows).zip(self.targets) {
            let max = max_of(row);
            let lse = max + sum_by(row, |v| exp_or_zero(v - max)).ln();
            *stats = [lse - row[target], lse];
        }
    }
}

struct GradientRows<'a> {
    x_then_dx: &'a mut [f32],
    lse: &'a [f32],
    g: &'a [f32],
    targets: &'a [usize],
    classes: usize,
}

impl Kernel for GradientRows<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let rows = self.x_then_dx.chunks_exact_mut(self.classes);
        let per_row = self.lse.iter().zip(self.g).zip(self.targets);
        for (row, ((&lse, &g), &target)) in rows.zip(per_row) {
            for v in row.iter_mut() {
                *v = exp_or_zero(*v - lse) * g;
            }
            row[target] -= g;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::tensor;
    use super::*;

    fn logits(rows: usize, classes: usize, spread: f32) -> Vec<f32> {
        (0..rows * classes)
            .map(|i| spread * ((i as f32 * 0.731).sin() + 0.3 * (i as f32 * 0.057).cos()))
            .collect()
    }

    fn values(t: &FlexTensor) -> Vec<f32> {
        t.clone().into_data().to_vec::<f32>().expect("f32")
    }

    /// Loss and gradient against the formulas in f64 (the log-sum-exp from the maximum), for
    /// rows of a few classes and of a vocabulary's, logits small and ±80 apart, over enough rows
    /// for several tasks: within 2e-6 of the loss's size, and in the gradient 1e-6 plus the
    /// rounding of an f32 `logsumexp`.
    #[test]
    fn loss_and_gradient_follow_the_formulas() {
        for (rows, classes, spread) in [(7, 5, 1.0), (3, 32_000, 4.0), (300, 256, 40.0)] {
            let x = logits(rows, classes, spread);
            let targets: Vec<i64> = (0..rows).map(|r| ((r * 7919) % classes) as i64).collect();
            let g: Vec<f32> = (0..rows).map(|r| 0.5 + r as f32 / rows as f32).collect();
            let t = FlexTensor::from_data(TensorData::new(targets.clone(), [rows, 1]));
            let [loss, lse] = cross_entropy(&tensor(x.clone(), [rows, classes]), &t).unwrap();
            let mut dx = tensor(x.clone(), [rows, classes]);
            cross_entropy_backward(&mut dx, &lse, &t, &tensor(g.clone(), [rows, 1])).unwrap();
            let (loss, dx) = (values(&loss), values(&dx));
            for r in 0..rows {
                let row: Vec<f64> = x[r * classes..(r + 1) * classes]
                    .iter()
                    .map(|&v| v as f64)
                    .collect();
                let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
                let want = lse - row[targets[r] as usize];
                let scale = want.abs().max(1.0);
                assert!(
                    (loss[r] as f64 - want).abs() <= 2e-6 * scale,
                    "loss of row {r} ({rows} × {classes}): {} against {want}",
                    loss[r]
                );
                for (j, v) in row.iter().enumerate() {
                    let onehot = if j == targets[r] as usize { 1.0 } else { 0.0 };
                    let want = ((v - lse).exp() - onehot) * g[r] as f64;
                    let got = dx[r * classes + j] as f64;
                    // `logsumexp` is kept in f32: its rounding (half an ulp of |lse|) is a
                    // relative error of the softmax.
                    let tolerance = 1e-6 + 2.0 * f32::EPSILON as f64 * lse.abs() * want.abs();
                    assert!(
                        (got - want).abs() <= tolerance,
                        "dx[{r}, {j}] ({rows} × {classes}): {got} against {want}"
                    );
                }
            }
        }
    }

    /// A target outside the classes, a float target tensor or logits of another rank are not
    /// taken (the node then composes Burn's ops, which report the error their way).
    #[test]
    fn declines_what_it_cannot_compute() {
        let x = tensor(logits(2, 3, 1.0), [2, 3]);
        let t = |v: Vec<i64>| FlexTensor::from_data(TensorData::new(v, [2, 1]));
        assert!(cross_entropy(&x, &t(vec![0, 3])).is_none());
        assert!(cross_entropy(&x, &t(vec![0, -1])).is_none());
        assert!(cross_entropy(&x, &tensor(vec![0.0, 1.0], [2, 1])).is_none());
        let cube = FlexTensor::from_data(TensorData::new(logits(2, 3, 1.0), [1, 2, 3]));
        assert!(cross_entropy(&cube, &t(vec![0, 1])).is_none());
        assert!(cross_entropy(&x, &t(vec![0, 2])).is_some());
    }
}
