//! AdamW's step over a parameter on the GPU back ends as one cubecl kernel and one op the host
//! registers, where Burn's step is fourteen element-wise ops a parameter tensor, each
//! registered by the host (its fusion then runs several tensors' ops in one kernel, so this
//! launches a few more kernels and registers thirteen ops a tensor fewer: BENCHMARKS.md,
//! attempt 81). The arithmetic is
//! `flex_kernels::adamw`'s, op for op (Burn's order): with `g` the gradient times the clip's
//! factor, `m ← m·β₁ + g·(1 − β₁)`, `v ← v·β₂ + g²·(1 − β₂)` (at the first step from zero
//! moments, their products skipped as Burn skips them), `x ← x·(1 − lr·λ) − lr · (m / c₁) /
//! (√(v / c₂) + ε)`. The launch goes into Burn's fusion stream as a custom operation, in order
//! with the ops around it.

use super::cube_op::{empty_f32, grid, on_gpu, register, unit_index, FusedTensor, GpuOp, Kernels};
use crate::lower::flex_kernels::AdamWStep;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, TensorMetadata};
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeRuntime};
use cubecl::prelude::*;

/// A parameter, its gradient and its two moments (none at the first step).
pub type AdamWInputs<I> = (FloatTensor<I>, FloatTensor<I>, Option<[FloatTensor<I>; 2]>);

/// One step over `param`: the new parameter and moments `[x, m, v]` from one kernel where `I`
/// is a GPU back end's inner backend and every tensor is f32 of one shape; else the inputs back
/// for another step.
pub fn adamw_step<I: Backend>(
    (param, grad, moments): AdamWInputs<I>,
    step: &AdamWStep,
) -> Result<[FloatTensor<I>; 3], AdamWInputs<I>> {
    let first = moments.is_none();
    let inputs: Vec<_> = [param, grad]
        .into_iter()
        .chain(moments.into_iter().flatten())
        .collect();
    let shape = inputs[0].shape();
    let takes = |t: &FloatTensor<I>| t.dtype() == DType::F32 && t.shape() == shape;
    let result = match inputs.iter().all(takes) {
        true => on_gpu::<I, _>(Step(*step), inputs),
        false => Err(inputs),
    };
    result.map_err(|inputs| {
        let mut inputs = inputs.into_iter();
        let mut next = || inputs.next().expect("as many as went in");
        let (param, grad) = (next(), next());
        let moments = (!first).then(|| [next(), next()]);
        (param, grad, moments)
    })
}

/// The op [`adamw_step`] runs on a GPU back end.
struct Step(AdamWStep);

impl GpuOp for Step {
    type Output<T: 'static> = [T; 3];

    fn run<R: CubeRuntime, BT: BoolElement>(
        self,
        inputs: Vec<FusedTensor<R>>,
    ) -> [FusedTensor<R>; 3] {
        register_step::<R, BT>(inputs, self.0)
    }
}

/// Registers the kernel in the inputs' fusion stream; its outputs are the parameter and the
/// two moments.
fn register_step<R: CubeRuntime, BT: BoolElement>(
    inputs: Vec<FusedTensor<R>>,
    step: AdamWStep,
) -> [FusedTensor<R>; 3] {
    let shapes = vec![inputs[0].shape.clone(); 3];
    let out = register::<R, BT, _>("laxc_adamw_step", inputs, shapes, 1, AdamWKernel(step));
    out.try_into()
        .unwrap_or_else(|_| unreachable!("the step has three outputs"))
}

#[derive(Debug)]
struct AdamWKernel(AdamWStep);

impl<R: CubeRuntime> Kernels<R> for AdamWKernel {
    fn launch(&self, inputs: Vec<CubeTensor<R>>) -> Vec<CubeTensor<R>> {
        launch(inputs, &self.0).to_vec()
    }
}

/// Units a cube; each unit takes one element.
const UNITS: u32 = 256;

fn launch<R: CubeRuntime>(inputs: Vec<CubeTensor<R>>, s: &AdamWStep) -> [CubeTensor<R>; 3] {
    let first = inputs.len() == 2;
    let mut inputs = inputs.into_iter();
    let (param, grad) = (inputs.next().expect("param"), inputs.next().expect("grad"));
    // At the first step the moments' bindings are the gradient's, never read (`first` is
    // compile-time).
    let m = inputs.next().unwrap_or_else(|| grad.clone());
    let v = inputs.next().unwrap_or_else(|| grad.clone());
    let (client, shape) = (param.client.clone(), param.shape());
    let [x_out, m_out, v_out] = [(); 3].map(|_| empty_f32(&param, shape.clone()));
    let count = grid(shape.num_elements().div_ceil(UNITS as usize));
    adamw::launch::<f32, R>(
        &client,
        count,
        CubeDim::new_1d(UNITS),
        param.into_tensor_arg(),
        grad.into_tensor_arg(),
        m.into_tensor_arg(),
        v.into_tensor_arg(),
        x_out.clone().into_tensor_arg(),
        m_out.clone().into_tensor_arg(),
        v_out.clone().into_tensor_arg(),
        s.beta_1,
        s.beta_2,
        s.rest_1,
        s.rest_2,
        s.correction_1,
        s.correction_2,
        s.epsilon,
        s.lr,
        s.decay.unwrap_or(1.0),
        s.grad_scale,
        first,
        s.decay.is_some(),
    );
    [x_out, m_out, v_out]
}

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn adamw<F: Float>(
    param: &Tensor<F>,
    grad: &Tensor<F>,
    m: &Tensor<F>,
    v: &Tensor<F>,
    x_out: &mut Tensor<F>,
    m_out: &mut Tensor<F>,
    v_out: &mut Tensor<F>,
    beta_1: f32,
    beta_2: f32,
    rest_1: f32,
    rest_2: f32,
    correction_1: f32,
    correction_2: f32,
    epsilon: f32,
    lr: f32,
    // `1 − lr·λ`, read where `decays`.
    decay: f32,
    grad_scale: f32,
    #[comptime] first: bool,
    #[comptime] decays: bool,
) {
    let i = unit_index();
    if i >= param.len() {
        terminate!();
    }
    // The clip's product, rounded as its own pass rounded it.
    let g = grad[i] * F::cast_from(grad_scale);
    let mut moment_1 = g * F::cast_from(rest_1);
    let mut moment_2 = (g * g) * F::cast_from(rest_2);
    if !first {
        moment_1 = m[i] * F::cast_from(beta_1) + moment_1;
        moment_2 = v[i] * F::cast_from(beta_2) + moment_2;
    }
    m_out[i] = moment_1;
    v_out[i] = moment_2;
    let corrected_2 = moment_2 / F::cast_from(correction_2);
    let delta =
        (moment_1 / F::cast_from(correction_1)) / (F::sqrt(corrected_2) + F::cast_from(epsilon));
    let mut x = param[i];
    if decays {
        x *= F::cast_from(decay);
    }
    x_out[i] = x - delta * F::cast_from(lr);
}
