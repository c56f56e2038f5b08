//! Rotate-half RoPE on the GPU back ends: one kernel of laxc's own each way, where the
//! composed form (`attention::rope_composed`) was a concatenation of each head's swapped
//! halves (a zeroed tensor and two slice assignments), the tables repeated over the batch, two
//! products and a sum forward, and about as many backward (the default spec's 4 layers: 65 of
//! its step's 637 kernels, its fills and slice assignments among them; BENCHMARKS.md, attempt
//! 88). Each cube takes a row (a token), each unit columns of it, and reads the tables at the
//! row's position.

use super::cube_op::{
    cube_index, empty_f32, grid, on_gpu, register, units_for, FusedTensor, GpuOp, Kernels,
};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, TensorMetadata};
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeRuntime};
use cubecl::prelude::*;

/// RoPE of the (rows, hidden) `x`, rows ordered (batch, position), with `heads` heads and the
/// (positions, hidden) tables `[cos, sin]` (`attention::rope_tables`, the rotation's sign in
/// `sin`): `x·cos + P(x)·sin`, or with `transposed` its transpose `x·cos + P(x·sin)` (the
/// input gradient), `P` the swap of each head's halves. One registered op and one kernel where
/// `I` is a GPU back end's inner backend and all three are f32; else `x` back.
pub fn rope<I: Backend>(
    x: FloatTensor<I>,
    heads: usize,
    [cos, sin]: [&FloatTensor<I>; 2],
    transposed: bool,
) -> Result<FloatTensor<I>, FloatTensor<I>> {
    if !super::gpu_inner::<I>() {
        return Err(x);
    }
    let [rows, width] = x.shape().dims::<2>();
    let positions = cos.shape().dims::<2>()[0];
    let head = width / heads.max(1);
    let takes = [&x, cos, sin].iter().all(|t| t.dtype() == DType::F32)
        && head.is_multiple_of(2)
        && head * heads == width
        && positions > 0
        && rows.is_multiple_of(positions);
    if !takes {
        return Err(x);
    }
    let op = Rope {
        head: head as u32,
        transposed,
    };
    on_gpu::<I, _>(op, vec![x, cos.clone(), sin.clone()])
        .map_err(|mut inputs| inputs.swap_remove(0))
}

/// The op [`rope`] runs on a GPU back end: `head` channels a head.
#[derive(Debug, Clone, Copy)]
struct Rope {
    head: u32,
    transposed: bool,
}

impl GpuOp for Rope {
    type Output<T: 'static> = T;

    fn run<R: CubeRuntime, BT: BoolElement>(self, inputs: Vec<FusedTensor<R>>) -> FusedTensor<R> {
        let shape = inputs[0].shape.clone();
        let mut out = register::<R, BT, _>("laxc_rope", inputs, vec![shape], 1, self);
        out.pop().expect("the kernel has one output")
    }
}

impl<R: CubeRuntime> Kernels<R> for Rope {
    fn launch(&self, inputs: Vec<CubeTensor<R>>) -> Vec<CubeTensor<R>> {
        let [x, cos, sin] = inputs
            .try_into()
            .unwrap_or_else(|_| unreachable!("RoPE reads x and its two tables"));
        let [rows, width] = x.shape().dims::<2>();
        let y = empty_f32(&x, x.shape());
        let units = units_for(width);
        rope_rows::launch::<f32, R>(
            &x.client.clone(),
            grid(rows),
            CubeDim::new_1d(units),
            x.into_tensor_arg(),
            cos.into_tensor_arg(),
            sin.into_tensor_arg(),
            y.clone().into_tensor_arg(),
            self.head,
            self.transposed,
        );
        vec![y]
    }
}

/// Row `cube_index()` of `y`: at each column `c` of a head, with `p` the column of the other
/// half of that head at the same offset, `y[c] = x[c]·cos[c] + x[p]·sin[c]`, or with
/// `transposed` `x[c]·cos[c] + x[p]·sin[p]`, the tables' row the row's position.
#[cube(launch)]
fn rope_rows<F: Float>(
    x: &Tensor<F>,
    cos: &Tensor<F>,
    sin: &Tensor<F>,
    y: &mut Tensor<F>,
    head: u32,
    #[comptime] transposed: bool,
) {
    let row = cube_index();
    if row >= x.shape(0) {
        terminate!();
    }
    let width = x.shape(1);
    let start = row * width;
    let table = (row % cos.shape(0)) * width;
    let (head, half) = (head as usize, (head / 2) as usize);
    let mut c = UNIT_POS_X as usize;
    while c < width {
        let offset = c % head;
        let mut partner = c + half;
        if offset >= half {
            partner = c - half;
        }
        let mut sine = sin[table + c];
        if transposed {
            sine = sin[table + partner];
        }
        y[start + c] = x[start + c] * cos[table + c] + x[start + partner] * sine;
        c += CUBE_DIM_X as usize;
    }
}
