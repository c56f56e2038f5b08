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
use burn::tensor::{DType, Shape, TensorMetadata};
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
    tables: [&FloatTensor<I>; 2],
    transposed: bool,
) -> Result<FloatTensor<I>, FloatTensor<I>> {
    let layout = Layout {
        x_by_heads: false,
        y_by_heads: false,
    };
    rope_laid_out::<I>(x, heads, tables, transposed, layout)
}

/// [`rope`] of rows `x` with its output split by head, `(batch, heads, positions, head)`
/// (attention's layout, so that no copy splits it; BENCHMARKS.md, attempt 96); or with
/// `transposed` the input gradient of that: `x` the output's gradient, split by head, and the
/// result rows again.
pub fn rope_by_heads<I: Backend>(
    x: FloatTensor<I>,
    heads: usize,
    tables: [&FloatTensor<I>; 2],
    transposed: bool,
) -> Result<FloatTensor<I>, FloatTensor<I>> {
    let layout = Layout {
        x_by_heads: transposed,
        y_by_heads: !transposed,
    };
    rope_laid_out::<I>(x, heads, tables, transposed, layout)
}

/// Where the kernel reads `x` and writes `y`: as rows of the hidden width, or split by head.
#[derive(Debug, Clone, Copy)]
struct Layout {
    x_by_heads: bool,
    y_by_heads: bool,
}

fn rope_laid_out<I: Backend>(
    x: FloatTensor<I>,
    heads: usize,
    [cos, sin]: [&FloatTensor<I>; 2],
    transposed: bool,
    layout: Layout,
) -> Result<FloatTensor<I>, FloatTensor<I>> {
    if !super::gpu_inner::<I>() {
        return Err(x);
    }
    let [positions, width] = cos.shape().dims::<2>();
    let dims = x.shape().to_vec();
    let (rows, x_width) = match (layout.x_by_heads, &dims[..]) {
        (false, &[rows, w]) => (rows, w),
        (true, &[batch, h, p, d]) if h == heads && p == positions => (batch * p, h * d),
        _ => return Err(x),
    };
    let head = width / heads.max(1);
    let takes = [&x, cos, sin].iter().all(|t| t.dtype() == DType::F32)
        && x_width == width
        && head.is_multiple_of(2)
        && head * heads == width
        && positions > 0
        && rows.is_multiple_of(positions);
    if !takes {
        return Err(x);
    }
    let y_shape = match layout.y_by_heads {
        true => Shape::new([rows / positions, heads, positions, head]),
        false => Shape::new([rows, width]),
    };
    let op = Rope {
        head: head as u32,
        rows: rows as u32,
        width: width as u32,
        transposed,
        layout,
        y_shape,
    };
    on_gpu::<I, _>(op, vec![x, cos.clone(), sin.clone()])
        .map_err(|mut inputs| inputs.swap_remove(0))
}

/// The op [`rope`] and [`rope_by_heads`] run on a GPU back end: `rows` tokens of `width`
/// channels, `head` channels a head.
#[derive(Debug, Clone)]
struct Rope {
    head: u32,
    rows: u32,
    width: u32,
    transposed: bool,
    layout: Layout,
    y_shape: Shape,
}

impl GpuOp for Rope {
    type Output<T: 'static> = T;

    fn run<R: CubeRuntime, BT: BoolElement>(self, inputs: Vec<FusedTensor<R>>) -> FusedTensor<R> {
        let shape = self.y_shape.clone();
        let mut out = register::<R, BT, _>("laxc_rope", inputs, vec![shape], 1, self);
        out.pop().expect("the kernel has one output")
    }
}

impl<R: CubeRuntime> Kernels<R> for Rope {
    /// `x` split by head is read through its strides: the keys' gradient comes from their
    /// product transposed, and a copy first would be a launch more a layer.
    fn reads_strided(&self, index: usize) -> bool {
        index == 0 && self.layout.x_by_heads
    }

    fn launch(&self, inputs: Vec<CubeTensor<R>>) -> Vec<CubeTensor<R>> {
        let [x, cos, sin] = inputs
            .try_into()
            .unwrap_or_else(|_| unreachable!("RoPE reads x and its two tables"));
        let y = empty_f32(&x, self.y_shape.clone());
        let units = units_for(self.width as usize);
        rope_rows::launch::<f32, R>(
            &x.client.clone(),
            grid(self.rows as usize),
            CubeDim::new_1d(units),
            x.into_tensor_arg(),
            cos.into_tensor_arg(),
            sin.into_tensor_arg(),
            y.clone().into_tensor_arg(),
            self.rows,
            self.width,
            self.head,
            self.transposed,
            self.layout.x_by_heads,
            self.layout.y_by_heads,
        );
        vec![y]
    }
}

/// Token row `cube_index()` of `y`: at each column `c` of a head, with `p` the column of the
/// other half of that head at the same offset, `y[c] = x[c]·cos[c] + x[p]·sin[c]`, or with
/// `transposed` `x[c]·cos[c] + x[p]·sin[p]`, the tables' row the row's position. `x` and `y`
/// each as rows of `width` or split by head ([`element`]; `x` split by head read through its
/// strides, [`strided`]).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn rope_rows<F: Float>(
    x: &Tensor<F>,
    cos: &Tensor<F>,
    sin: &Tensor<F>,
    y: &mut Tensor<F>,
    rows: u32,
    width: u32,
    head: u32,
    #[comptime] transposed: bool,
    #[comptime] x_by_heads: bool,
    #[comptime] y_by_heads: bool,
) {
    let row = cube_index();
    if row >= rows as usize {
        terminate!();
    }
    let width = width as usize;
    let positions = cos.shape(0);
    let table = (row % positions) * width;
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
        let mut own = element(row, c, width, head, positions, false);
        let mut other = element(row, partner, width, head, positions, false);
        if x_by_heads {
            own = strided(x, row, c, head, positions);
            other = strided(x, row, partner, head, positions);
        }
        let at = element(row, c, width, head, positions, y_by_heads);
        y[at] = x[own] * cos[table + c] + x[other] * sine;
        c += CUBE_DIM_X as usize;
    }
}

/// Where token `row`'s channel `column` is in `x` split by head, `(batch, heads, positions,
/// head)`, read through `x`'s strides.
#[cube]
fn strided<F: Float>(
    x: &Tensor<F>,
    row: usize,
    column: usize,
    head: usize,
    positions: usize,
) -> usize {
    (row / positions) * x.stride(0)
        + (column / head) * x.stride(1)
        + (row % positions) * x.stride(2)
        + (column % head) * x.stride(3)
}

/// Where token `row`'s channel `column` is: in rows of `width`, or `by_heads` in the
/// (batch, heads, positions, head) layout, the row being (sample, position).
#[cube]
fn element(
    row: usize,
    column: usize,
    width: usize,
    head: usize,
    positions: usize,
    #[comptime] by_heads: bool,
) -> usize {
    let mut at = row * width + column;
    if by_heads {
        let (sample, position) = (row / positions, row % positions);
        at = sample * width * positions
            + (column / head) * positions * head
            + position * head
            + column % head;
    }
    at
}
