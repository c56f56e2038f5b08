//! A tensor gate's `kron(G1, G0)` on the GPU back ends: one kernel of laxc's own each way,
//! where the composed broadcast product was a product forward and, backward, two products and
//! four reductions over the broadcast axes (BENCHMARKS.md, attempt 99).
//!
//! `K[(i, j), (a, b)] = G1[i, a] · G0[j, b]` for `G1 (s0, t0)` and `G0 (s1, t1)`, K of
//! `(s0·s1, t0·t1)`; backward, from `dK`, `dG1[i, a] = Σ_{j,b} dK[(i, j), (a, b)] · G0[j, b]`
//! and `dG0[j, b] = Σ_{i,a} dK[(i, j), (a, b)] · G1[i, a]`, a unit an element of either.

use super::cube_op::{empty_f32, grid, on_gpu, register, unit_index, FusedTensor, GpuOp, Kernels};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Shape, TensorMetadata};
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeRuntime};
use cubecl::prelude::*;

/// Units of a cube of either kernel: one an element.
const UNITS: u32 = 256;

/// `kron(g1, g0)` where `I` is a GPU back end's inner backend and both cores are f32 matrices;
/// else the cores back.
pub fn kron<I: Backend>(
    g1: FloatTensor<I>,
    g0: FloatTensor<I>,
) -> Result<FloatTensor<I>, [FloatTensor<I>; 2]> {
    if !takes::<I>(&[&g1, &g0]) {
        return Err([g1, g0]);
    }
    let out = on_gpu::<I, _>(Kron::Forward, vec![g1, g0]).map_err(pair)?;
    Ok(out.into_iter().next().expect("the kernel has one output"))
}

/// `[dg1, dg0]` of `kron(g1, g0)` from its gradient `dk`, where `I` is a GPU back end's inner
/// backend and all three are f32 matrices of the kron's shapes; else `dk` back.
pub fn kron_backward<I: Backend>(
    g1: &FloatTensor<I>,
    g0: &FloatTensor<I>,
    dk: FloatTensor<I>,
) -> Result<[FloatTensor<I>; 2], FloatTensor<I>> {
    if !takes::<I>(&[g1, g0, &dk]) {
        return Err(dk);
    }
    let ([s0, t0], [s1, t1]) = (g1.shape().dims::<2>(), g0.shape().dims::<2>());
    if dk.shape().dims::<2>() != [s0 * s1, t0 * t1] {
        return Err(dk);
    }
    let inputs = vec![g1.clone(), g0.clone(), dk];
    let out = on_gpu::<I, _>(Kron::Backward, inputs).map_err(|mut inputs| inputs.remove(2))?;
    Ok(pair(out))
}

/// Whether the kernels take `tensors`: f32 matrices on a GPU back end.
fn takes<I: Backend>(tensors: &[&FloatTensor<I>]) -> bool {
    super::gpu_inner::<I>()
        && (tensors.iter()).all(|t| t.dtype() == DType::F32 && t.shape().num_dims() == 2)
}

fn pair<T>(inputs: Vec<T>) -> [T; 2] {
    inputs
        .try_into()
        .unwrap_or_else(|_| unreachable!("two inputs"))
}

/// The op [`kron`] and [`kron_backward`] run on a GPU back end.
#[derive(Debug, Clone, Copy)]
enum Kron {
    /// Inputs `g1`, `g0`; output `K`.
    Forward,
    /// Inputs `g1`, `g0`, `dK`; outputs `dg1`, `dg0`.
    Backward,
}

impl GpuOp for Kron {
    type Output<T: 'static> = Vec<T>;

    fn run<R: CubeRuntime, BT: BoolElement>(
        self,
        inputs: Vec<FusedTensor<R>>,
    ) -> Vec<FusedTensor<R>> {
        let (g1, g0) = (inputs[0].shape.clone(), inputs[1].shape.clone());
        let ([s0, t0], [s1, t1]) = (g1.dims::<2>(), g0.dims::<2>());
        match self {
            Kron::Forward => {
                let shape = Shape::new([s0 * s1, t0 * t1]);
                register::<R, BT, _>("laxc_kron", inputs, vec![shape], 1, self)
            }
            Kron::Backward => {
                register::<R, BT, _>("laxc_kron_backward", inputs, vec![g1, g0], 1, self)
            }
        }
    }
}

impl<R: CubeRuntime> Kernels<R> for Kron {
    fn launch(&self, inputs: Vec<CubeTensor<R>>) -> Vec<CubeTensor<R>> {
        let [s0, t0] = inputs[0].shape().dims::<2>();
        let [s1, t1] = inputs[1].shape().dims::<2>();
        let client = inputs[0].client.clone();
        let dim = CubeDim::new_1d(UNITS);
        let dims = [s0, t0, s1, t1].map(|n| n as u32);
        match self {
            Kron::Forward => {
                let k = empty_f32(&inputs[0], Shape::new([s0 * s1, t0 * t1]));
                let count = grid((s0 * s1 * t0 * t1).div_ceil(UNITS as usize));
                kron_forward::launch::<f32, R>(
                    &client,
                    count,
                    dim,
                    inputs[0].clone().into_tensor_arg(),
                    inputs[1].clone().into_tensor_arg(),
                    k.clone().into_tensor_arg(),
                    dims[0],
                    dims[1],
                    dims[2],
                    dims[3],
                );
                vec![k]
            }
            Kron::Backward => {
                let dg1 = empty_f32(&inputs[0], inputs[0].shape());
                let dg0 = empty_f32(&inputs[1], inputs[1].shape());
                let count = grid((s0 * t0 + s1 * t1).div_ceil(UNITS as usize));
                kron_cores_backward::launch::<f32, R>(
                    &client,
                    count,
                    dim,
                    inputs[0].clone().into_tensor_arg(),
                    inputs[1].clone().into_tensor_arg(),
                    inputs[2].clone().into_tensor_arg(),
                    dg1.clone().into_tensor_arg(),
                    dg0.clone().into_tensor_arg(),
                    dims[0],
                    dims[1],
                    dims[2],
                    dims[3],
                );
                vec![dg1, dg0]
            }
        }
    }
}

/// Element `unit_index()` of `K = kron(g1, g0)`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn kron_forward<F: Float>(
    g1: &Tensor<F>,
    g0: &Tensor<F>,
    k: &mut Tensor<F>,
    s0: u32,
    t0: u32,
    s1: u32,
    t1: u32,
) {
    let e = unit_index();
    let (s0, t0, s1, t1) = (s0 as usize, t0 as usize, s1 as usize, t1 as usize);
    let width = t0 * t1;
    if e >= s0 * s1 * width {
        terminate!();
    }
    let (row, col) = (e / width, e % width);
    let (i, j, a, b) = (row / s1, row % s1, col / t1, col % t1);
    k[e] = g1[i * t0 + a] * g0[j * t1 + b];
}

/// Unit `u = unit_index()`: `dg1`'s element `u`, or past `dg1`'s `s0 · t0`
/// elements `dg0`'s element `u − s0 · t0`, each a sum over the other core's elements.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn kron_cores_backward<F: Float>(
    g1: &Tensor<F>,
    g0: &Tensor<F>,
    dk: &Tensor<F>,
    dg1: &mut Tensor<F>,
    dg0: &mut Tensor<F>,
    s0: u32,
    t0: u32,
    s1: u32,
    t1: u32,
) {
    let u = unit_index();
    let (s0, t0, s1, t1) = (s0 as usize, t0 as usize, s1 as usize, t1 as usize);
    let width = t0 * t1;
    if u < s0 * t0 {
        let (i, a) = (u / t0, u % t0);
        let mut sum = F::new(0.0);
        let mut j = 0usize;
        while j < s1 {
            let row = (i * s1 + j) * width + a * t1;
            let mut b = 0usize;
            while b < t1 {
                sum += dk[row + b] * g0[j * t1 + b];
                b += 1;
            }
            j += 1;
        }
        dg1[u] = sum;
    } else if u < s0 * t0 + s1 * t1 {
        let v = u - s0 * t0;
        let (j, b) = (v / t1, v % t1);
        let mut sum = F::new(0.0);
        let mut i = 0usize;
        while i < s0 {
            let row = (i * s1 + j) * width + b;
            let mut a = 0usize;
            while a < t0 {
                sum += dk[row + a * t1] * g1[i * t0 + a];
                a += 1;
            }
            i += 1;
        }
        dg0[v] = sum;
    }
}
