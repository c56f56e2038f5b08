//! The Kronecker product of a tensor gate's two cores, and its backward.

use super::{f32s, output, written};
use burn::backend::flex::FlexTensor;
use burn::tensor::{TensorData, TensorMetadata};

/// `kron(g1, g0)` for `g1 (s0, t0)` and `g0 (s1, t1)`: the (s0·s1, t0·t1) matrix whose element
/// `[(i, j), (a, b)]` (row-major pairs) is `g1[i, a] · g0[j, b]`, each one product as the
/// broadcast product computes it. `None` unless both are 2-D contiguous f32.
pub fn kron(g1: &FlexTensor, g0: &FlexTensor) -> Option<FlexTensor> {
    let ([s0, t0], [s1, t1]) = (dims(g1)?, dims(g0)?);
    let (g1s, g0s) = (f32s(g1)?, f32s(g0)?);
    let mut out = output(s0 * s1 * t0 * t1);
    // Row (i, j) is, for each a, the row j of g0 times g1[i, a].
    let rows = out.chunks_exact_mut(t0 * t1).enumerate();
    for (row, values) in rows {
        let (i, j) = (row / s1, row % s1);
        let g0_row = &g0s[j * t1..(j + 1) * t1];
        for (a, block) in values.chunks_exact_mut(t1).enumerate() {
            let factor = g1s[i * t0 + a];
            for (out, &g) in block.iter_mut().zip(g0_row) {
                out.write(factor * g);
            }
        }
    }
    // SAFETY: the loops write every element of every row, and the rows cover the buffer.
    let out = unsafe { written(out) };
    Some(FlexTensor::from_data(TensorData::new(
        out,
        [s0 * s1, t0 * t1],
    )))
}

/// The gradients `[dg1, dg0]` of [`kron`] given the output gradient `dk` (s0·s1, t0·t1):
/// `dg1[i, a] = Σ_j Σ_b dk[(i, j), (a, b)] g0[j, b]` and
/// `dg0[j, b] = Σ_i Σ_a dk[(i, j), (a, b)] g1[i, a]`, each sum in that order (j or i outer).
/// `None` unless contiguous f32 of matching shapes.
pub fn kron_backward(g1: &FlexTensor, g0: &FlexTensor, dk: &FlexTensor) -> Option<[FlexTensor; 2]> {
    let ([s0, t0], [s1, t1]) = (dims(g1)?, dims(g0)?);
    if dims(dk)? != [s0 * s1, t0 * t1] {
        return None;
    }
    let (g1s, g0s, dks) = (f32s(g1)?, f32s(g0)?, f32s(dk)?);
    let at = |i: usize, j: usize, a: usize, b: usize| dks[(i * s1 + j) * t0 * t1 + a * t1 + b];
    let mut dg1 = vec![0.0f32; s0 * t0];
    let mut dg0 = vec![0.0f32; s1 * t1];
    for i in 0..s0 {
        for j in 0..s1 {
            for a in 0..t0 {
                let mut along_b = 0.0f32;
                for b in 0..t1 {
                    along_b += at(i, j, a, b) * g0s[j * t1 + b];
                    dg0[j * t1 + b] += at(i, j, a, b) * g1s[i * t0 + a];
                }
                dg1[i * t0 + a] += along_b;
            }
        }
    }
    Some([
        FlexTensor::from_data(TensorData::new(dg1, [s0, t0])),
        FlexTensor::from_data(TensorData::new(dg0, [s1, t1])),
    ])
}

/// The two sides of a 2-D tensor.
fn dims(t: &FlexTensor) -> Option<[usize; 2]> {
    let shape = t.shape();
    (shape.num_dims() == 2).then(|| shape.dims::<2>())
}
