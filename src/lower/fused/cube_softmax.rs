//! Softmax over the last axis on the GPU back ends (attention's, its causal mask added inside):
//! one kernel of laxc's own each way, where Burn's ops were a reduction for the maximum, one for
//! the sum, the element-wise passes between them and a division forward, and a reduction and
//! its passes backward (BENCHMARKS.md, attempt 97). One cube per row; its units stride over the
//! row's columns and meet in shared memory.
//!
//! The arithmetic is Burn's: `y = e / Σ e` with `e = exp(v − max v)`, `v = scale · x (+ bias)`
//! (attention's scale, where the scores' product does not apply it: `fused::scaled_softmax`);
//! backward `dx = scale · y ⊙ (g − Σ g ⊙ y)`.

use super::cube_op::{
    cube_index, cube_max, cube_sum, empty_f32, grid, on_gpu, register, units_for, FusedTensor,
    GpuOp, Kernels,
};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, TensorMetadata};
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeRuntime};
use cubecl::prelude::*;

/// The softmax of `scale · x` (plus `bias`, of `x`'s shape) over its last axis, where `I` is a
/// GPU back end's inner backend and the tensors are f32; else `x` back.
pub fn softmax<I: Backend>(
    x: FloatTensor<I>,
    bias: Option<&FloatTensor<I>>,
    scale: f32,
) -> Result<FloatTensor<I>, FloatTensor<I>> {
    let takes = super::gpu_inner::<I>()
        && x.dtype() == DType::F32
        && bias.is_none_or(|b| b.dtype() == DType::F32 && b.shape() == x.shape());
    if !takes {
        return Err(x);
    }
    let op = Rows {
        pass: Pass::Forward {
            biased: bias.is_some(),
        },
        scale,
    };
    let inputs = [Some(x), bias.cloned()].into_iter().flatten().collect();
    on_gpu::<I, _>(op, inputs).map_err(|mut inputs| inputs.swap_remove(0))
}

/// The input's gradient `scale · y ⊙ (g − Σ g ⊙ y)` from the softmax's output `y` and the
/// output's gradient `g` (rows along the last axis), where `I` is a GPU back end's inner
/// backend and both are f32 of one shape; else `g` back.
pub fn softmax_backward<I: Backend>(
    y: &FloatTensor<I>,
    g: FloatTensor<I>,
    scale: f32,
) -> Result<FloatTensor<I>, FloatTensor<I>> {
    let takes = super::gpu_inner::<I>()
        && [y, &g].iter().all(|t| t.dtype() == DType::F32)
        && y.shape() == g.shape();
    if !takes {
        return Err(g);
    }
    let op = Rows {
        pass: Pass::Backward,
        scale,
    };
    on_gpu::<I, _>(op, vec![y.clone(), g]).map_err(|mut inputs| inputs.swap_remove(1))
}

#[derive(Debug, Clone, Copy)]
enum Pass {
    /// Inputs `x` (and the bias where `biased`).
    Forward { biased: bool },
    /// Inputs `y` and `g`.
    Backward,
}

/// The op [`softmax`] and [`softmax_backward`] run on a GPU back end.
#[derive(Debug, Clone, Copy)]
struct Rows {
    pass: Pass,
    scale: f32,
}

impl GpuOp for Rows {
    type Output<T: 'static> = T;

    fn run<R: CubeRuntime, BT: BoolElement>(self, inputs: Vec<FusedTensor<R>>) -> FusedTensor<R> {
        let shape = inputs[0].shape.clone();
        let name = match self.pass {
            Pass::Forward { .. } => "laxc_softmax",
            Pass::Backward => "laxc_softmax_backward",
        };
        let mut out = register::<R, BT, _>(name, inputs, vec![shape], 1, self);
        out.pop().expect("the kernel has one output")
    }
}

impl<R: CubeRuntime> Kernels<R> for Rows {
    fn launch(&self, inputs: Vec<CubeTensor<R>>) -> Vec<CubeTensor<R>> {
        let first = &inputs[0];
        let shape = first.shape();
        let width = *shape
            .as_slice()
            .last()
            .expect("a softmax's rows have an axis");
        let rows = shape.num_elements() / width.max(1);
        let out = empty_f32(first, shape);
        let client = first.client.clone();
        let units = units_for(width);
        let (count, dim) = (grid(rows), CubeDim::new_1d(units));
        let mut inputs = inputs.into_iter();
        let mut next = || inputs.next().expect("as many as registered");
        match self.pass {
            Pass::Forward { biased } => {
                let x = next();
                // Without a bias its binding is `x`'s, never read (the flag is compile-time).
                let bias = if biased { next() } else { x.clone() };
                softmax_rows::launch::<f32, R>(
                    &client,
                    count,
                    dim,
                    x.into_tensor_arg(),
                    bias.into_tensor_arg(),
                    out.clone().into_tensor_arg(),
                    rows as u32,
                    width as u32,
                    self.scale,
                    biased,
                    units,
                );
            }
            Pass::Backward => {
                let (y, g) = (next(), next());
                softmax_rows_backward::launch::<f32, R>(
                    &client,
                    count,
                    dim,
                    y.into_tensor_arg(),
                    g.into_tensor_arg(),
                    out.clone().into_tensor_arg(),
                    rows as u32,
                    width as u32,
                    self.scale,
                    units,
                );
            }
        }
        vec![out]
    }
}

/// Row `cube_index()` of `y`: `e / Σ e`, `e = exp(v − max v)`, `v = scale · x (+ bias)`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn softmax_rows<F: Float>(
    x: &Tensor<F>,
    bias: &Tensor<F>,
    y: &mut Tensor<F>,
    rows: u32,
    width: u32,
    scale: f32,
    #[comptime] biased: bool,
    #[comptime] units: u32,
) {
    let row = cube_index();
    if row >= rows as usize {
        terminate!();
    }
    let width = width as usize;
    let start = row * width;
    let (first, step) = (UNIT_POS_X as usize, CUBE_DIM_X as usize);
    let mut partial = SharedMemory::<F>::new(units as usize);

    // Below every f32 but −∞: a unit past the row's end offers it to the maximum.
    let mut most = F::new(-3.402_823_5e38);
    let mut c = first;
    while c < width {
        most = max(most, value::<F>(x, bias, start + c, scale, biased));
        c += step;
    }
    most = cube_max::<F>(most, &mut partial);

    let mut sum = F::new(0.0);
    let mut c = first;
    while c < width {
        sum += F::exp(value::<F>(x, bias, start + c, scale, biased) - most);
        c += step;
    }
    let total = cube_sum::<F>(sum, &mut partial);

    let mut c = first;
    while c < width {
        y[start + c] = F::exp(value::<F>(x, bias, start + c, scale, biased) - most) / total;
        c += step;
    }
}

/// `scale · x[i]`, plus `bias[i]` where `biased` (Burn's order: the product's scale, then the
/// mask).
#[cube]
fn value<F: Float>(
    x: &Tensor<F>,
    bias: &Tensor<F>,
    i: usize,
    scale: f32,
    #[comptime] biased: bool,
) -> F {
    let mut v = x[i] * F::cast_from(scale);
    if biased {
        v += bias[i];
    }
    v
}

/// Row `cube_index()` of `dx`: `scale · y ⊙ (g − Σ g ⊙ y)`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn softmax_rows_backward<F: Float>(
    y: &Tensor<F>,
    g: &Tensor<F>,
    dx: &mut Tensor<F>,
    rows: u32,
    width: u32,
    scale: f32,
    #[comptime] units: u32,
) {
    let row = cube_index();
    if row >= rows as usize {
        terminate!();
    }
    let width = width as usize;
    let start = row * width;
    let (first, step) = (UNIT_POS_X as usize, CUBE_DIM_X as usize);
    let mut partial = SharedMemory::<F>::new(units as usize);
    let mut sum = F::new(0.0);
    let mut c = first;
    while c < width {
        sum += g[start + c] * y[start + c];
        c += step;
    }
    let along = cube_sum::<F>(sum, &mut partial);
    let mut c = first;
    while c < width {
        dx[start + c] = y[start + c] * (g[start + c] - along) * F::cast_from(scale);
        c += step;
    }
}
