//! The norms on the GPU back ends as laxc's own cubecl kernels: one launch for the forward pass
//! of a LayerNorm or RMSNorm (of a sum, for a LaX pathway's add-norm) and one or two for the
//! backward (the input's gradient with each block of 16 rows' sums toward `dγ` and `dβ`, then,
//! over more than 16 rows, the blocks' sums added), where Burn's ops took about 18 kernels a
//! norm (BENCHMARKS.md, attempts 77, 85 and 92). The forward kernel is one cube per row, the
//! backward's first one cube per block of rows: their units stride over a row's columns and add
//! their partial sums in shared memory. The launches go into Burn's fusion stream as custom
//! operations, so that they run in order with the ops around them.
//!
//! The arithmetic is `norm.rs`'s: `x̂ = (x − mean) · r` with `r = 1/√(var + ε)` (biased
//! variance; RMSNorm: no mean, `var` the mean square), `y = x̂ · γ (+ β)`, and from the output's
//! gradient `g`, with `h = g ⊙ γ`: `dx = r · (h − mean(h) − x̂ · mean(h ⊙ x̂))` (RMSNorm: no
//! `mean(h)`), `dγ = Σrows g ⊙ x̂`, `dβ = Σrows g`.

use super::cube_op::{
    cube_index, cube_sum, empty_f32, grid, on_gpu, register, units_for, FusedTensor, GpuOp, Kernels,
};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Shape, TensorMetadata};
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeRuntime};
use cubecl::prelude::*;

/// Which norm the forward kernel computes, and of what.
#[derive(Clone, Copy, Debug)]
struct NormKind {
    /// LayerNorm (centred, with β) rather than RMSNorm.
    layer: bool,
    /// Of `x + addend` (a LaX pathway's add-norm) rather than of `x`.
    summed: bool,
}

/// The forward pass on a GPU back end's own kernel: `(y, x̂, r)` with `r` a column, of `x` (of
/// `x + addend` where there is one), LayerNorm where there is a `beta`, else RMSNorm; the
/// tensors back where `I` is not a GPU back end or one is not f32 (bf16 runs keep norms in f32).
pub fn forward<I: Backend>(
    x: FloatTensor<I>,
    addend: Option<FloatTensor<I>>,
    gamma: FloatTensor<I>,
    beta: Option<FloatTensor<I>>,
    epsilon: f64,
) -> Result<[FloatTensor<I>; 3], NormInputs<I>> {
    let kind = NormKind {
        layer: beta.is_some(),
        summed: addend.is_some(),
    };
    let inputs: Vec<_> = [Some(x), addend, Some(gamma), beta]
        .into_iter()
        .flatten()
        .collect();
    let result = match inputs.iter().all(|t| t.dtype() == DType::F32) {
        true => on_gpu::<I, _>(Forward { epsilon, kind }, inputs),
        false => Err(inputs),
    };
    result.map_err(|inputs| {
        let mut inputs = inputs.into_iter();
        let mut next = || inputs.next().expect("as many as went in");
        let x = next();
        let addend = kind.summed.then(&mut next);
        let gamma = next();
        (x, addend, gamma, kind.layer.then(next))
    })
}

/// The op [`forward`] runs on a GPU back end.
struct Forward {
    epsilon: f64,
    kind: NormKind,
}

impl GpuOp for Forward {
    type Output<T: 'static> = [T; 3];

    fn run<R: CubeRuntime, BT: BoolElement>(
        self,
        inputs: Vec<FusedTensor<R>>,
    ) -> [FusedTensor<R>; 3] {
        register_forward::<R, BT>(inputs, self.epsilon as f32, self.kind)
    }
}

/// A norm's inputs `(x, addend, γ, β)`, given back.
pub type NormInputs<I> = (
    FloatTensor<I>,
    Option<FloatTensor<I>>,
    FloatTensor<I>,
    Option<FloatTensor<I>>,
);

/// The gradients `(dx, dγ, dβ)` on a GPU back end's own kernels (dβ where `layer`), from
/// `[x̂, r, γ, g]`; the inputs back where `I` is not a GPU back end or a tensor is not f32.
pub fn gradients<I: Backend>(
    inputs: [FloatTensor<I>; 4],
    layer: bool,
) -> Result<NormGradients<I>, [FloatTensor<I>; 4]> {
    if inputs.iter().any(|t| t.dtype() != DType::F32) {
        return Err(inputs);
    }
    let result = on_gpu::<I, _>(Gradients { layer }, Vec::from(inputs));
    match result {
        Ok([dx, d_gamma, d_beta]) => Ok((dx, d_gamma, layer.then_some(d_beta))),
        Err(inputs) => Err(inputs
            .try_into()
            .unwrap_or_else(|_| unreachable!("four went in"))),
    }
}

/// The op [`gradients`] runs on a GPU back end.
struct Gradients {
    layer: bool,
}

impl GpuOp for Gradients {
    type Output<T: 'static> = [T; 3];

    fn run<R: CubeRuntime, BT: BoolElement>(
        self,
        inputs: Vec<FusedTensor<R>>,
    ) -> [FusedTensor<R>; 3] {
        let inputs = inputs
            .try_into()
            .unwrap_or_else(|_| unreachable!("the gradients have four inputs"));
        register_gradients::<R, BT>(inputs, self.layer)
    }
}

/// `(dx, dγ, dβ)`: dβ for LayerNorm only.
pub type NormGradients<I> = (FloatTensor<I>, FloatTensor<I>, Option<FloatTensor<I>>);

/// Registers the forward kernel in the inputs' fusion stream; its outputs are `y` and `x̂`
/// (the rows' shape) and `r` (a column).
fn register_forward<R: CubeRuntime, BT: BoolElement>(
    inputs: Vec<FusedTensor<R>>,
    epsilon: f32,
    kind: NormKind,
) -> [FusedTensor<R>; 3] {
    let [rows, width] = inputs[0].shape.dims::<2>();
    let shapes = [[rows, width], [rows, width], [rows, 1]].map(Shape::new);
    let kernel = NormForwardKernel { epsilon, kind };
    let out = register::<R, BT, _>("laxc_norm_rows_forward", inputs, shapes.to_vec(), 1, kernel);
    out.try_into()
        .unwrap_or_else(|_| unreachable!("the forward kernel has three outputs"))
}

/// Registers the gradient kernels in the inputs' fusion stream; their outputs are `dx` and the
/// vectors `dγ` and `dβ` (for RMSNorm a vector left unwritten, that nothing reads).
fn register_gradients<R: CubeRuntime, BT: BoolElement>(
    inputs: [FusedTensor<R>; 4],
    layer: bool,
) -> [FusedTensor<R>; 3] {
    let [rows, width] = inputs[0].shape.dims::<2>();
    let shapes = vec![
        Shape::new([rows, width]),
        Shape::new([width]),
        Shape::new([width]),
    ];
    let kernels = NormGradientKernels { layer };
    let launches = 1 + usize::from(row_blocks(rows) > 1);
    let out = register::<R, BT, _>(
        "laxc_norm_gradients",
        Vec::from(inputs),
        shapes,
        launches,
        kernels,
    );
    out.try_into()
        .unwrap_or_else(|_| unreachable!("the gradient kernels have three outputs"))
}

#[derive(Debug)]
struct NormForwardKernel {
    epsilon: f32,
    kind: NormKind,
}

#[derive(Debug)]
struct NormGradientKernels {
    layer: bool,
}

impl<R: CubeRuntime> Kernels<R> for NormForwardKernel {
    fn launch(&self, inputs: Vec<CubeTensor<R>>) -> Vec<CubeTensor<R>> {
        let mut inputs = inputs.into_iter();
        let mut next = || inputs.next().expect("the forward kernel's inputs");
        let x = next();
        let addend = if self.kind.summed { Some(next()) } else { None };
        let gamma = next();
        let beta = if self.kind.layer { Some(next()) } else { None };
        launch_forward(x, addend, gamma, beta, self.epsilon).to_vec()
    }
}

impl<R: CubeRuntime> Kernels<R> for NormGradientKernels {
    fn launch(&self, inputs: Vec<CubeTensor<R>>) -> Vec<CubeTensor<R>> {
        let [normalized, r, gamma, g] = inputs
            .try_into()
            .unwrap_or_else(|_| unreachable!("the gradient kernels have four inputs"));
        launch_gradients(normalized, r, gamma, g, self.layer).to_vec()
    }
}

fn launch_forward<R: CubeRuntime>(
    x: CubeTensor<R>,
    addend: Option<CubeTensor<R>>,
    gamma: CubeTensor<R>,
    beta: Option<CubeTensor<R>>,
    epsilon: f32,
) -> [CubeTensor<R>; 3] {
    let [rows, width] = x.shape().dims::<2>();
    let client = x.client.clone();
    let empty = |shape: [usize; 2]| empty_f32(&x, Shape::new(shape));
    let [y, normalized, r] = [empty([rows, width]), empty([rows, width]), empty([rows, 1])];
    let units = units_for(width);
    let (summed, layer) = (addend.is_some(), beta.is_some());
    // An absent input's binding is another input's, never read (the flags are compile-time).
    let addend = addend.unwrap_or_else(|| x.clone());
    let beta = beta.unwrap_or_else(|| gamma.clone());
    norm_rows_forward::launch::<f32, R>(
        &client,
        grid(rows),
        CubeDim::new_1d(units),
        x.into_tensor_arg(),
        addend.into_tensor_arg(),
        gamma.into_tensor_arg(),
        beta.into_tensor_arg(),
        y.clone().into_tensor_arg(),
        normalized.clone().into_tensor_arg(),
        r.clone().into_tensor_arg(),
        epsilon,
        layer,
        summed,
        units,
    );
    [y, normalized, r]
}

/// Rows a cube of the gradient kernel takes: its row sums one row after another, then each of
/// its units walks its columns down the block, writing `dx` and summing toward `dγ` and `dβ`.
/// Sixteen: 128 cubes for a LLaMA-60M pathway's 2,048 rows, each column's sum over them 16
/// terms a unit, and the blocks' sums then a second kernel's.
const ROWS_A_CUBE: u32 = 16;
/// Columns a cube of the column-sum kernel, and the lanes of rows each column is split over.
const COLUMNS: u32 = 32;
const LANES: u32 = 8;

/// Blocks of [`ROWS_A_CUBE`] rows, a cube each in the gradient kernel (one: no second kernel).
fn row_blocks(rows: usize) -> usize {
    rows.div_ceil(ROWS_A_CUBE as usize).max(1)
}

/// `[dx, dγ, dβ]`: one kernel writes `dx` and each block's column sums, in one pass over each
/// column of the block's rows of `x̂` and `g` (attempt 85 had a pass of its own, a kernel more,
/// summing the columns over blocks of 128 rows); over more than one block, a second adds the
/// blocks' sums.
fn launch_gradients<R: CubeRuntime>(
    normalized: CubeTensor<R>,
    r: CubeTensor<R>,
    gamma: CubeTensor<R>,
    g: CubeTensor<R>,
    layer: bool,
) -> [CubeTensor<R>; 3] {
    let [rows, width] = normalized.shape().dims::<2>();
    let client = normalized.client.clone();
    let blocks = row_blocks(rows);
    let empty = |shape: Shape| empty_f32(&normalized, shape);
    let dx = empty(Shape::new([rows, width]));
    let sums_shape = match blocks {
        1 => Shape::new([width]),
        _ => Shape::new([blocks, width]),
    };
    let [sum_gx, sum_g] = [(); 2].map(|_| empty(sums_shape.clone()));
    let units = units_for(width);
    norm_rows_gradient::launch::<f32, R>(
        &client,
        grid(blocks),
        CubeDim::new_1d(units),
        normalized.clone().into_tensor_arg(),
        r.into_tensor_arg(),
        gamma.into_tensor_arg(),
        g.into_tensor_arg(),
        dx.clone().into_tensor_arg(),
        sum_gx.clone().into_tensor_arg(),
        sum_g.clone().into_tensor_arg(),
        layer,
        units,
    );
    if blocks == 1 {
        return [dx, sum_gx, sum_g];
    }
    let [d_gamma, d_beta] = [(); 2].map(|_| empty(Shape::new([width])));
    norm_columns_sum::launch::<f32, R>(
        &client,
        CubeCount::Static((width as u32).div_ceil(COLUMNS), 1, 1),
        CubeDim::new_2d(COLUMNS, LANES),
        sum_gx.into_tensor_arg(),
        sum_g.into_tensor_arg(),
        d_gamma.clone().into_tensor_arg(),
        d_beta.clone().into_tensor_arg(),
        layer,
    );
    [dx, d_gamma, d_beta]
}

/// `y = x̂ · γ (+ β)`, `x̂` and `r` of row `cube_index()` of `x` (of `x + addend` if `summed`).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn norm_rows_forward<F: Float>(
    x: &Tensor<F>,
    addend: &Tensor<F>,
    gamma: &Tensor<F>,
    beta: &Tensor<F>,
    y: &mut Tensor<F>,
    normalized: &mut Tensor<F>,
    r: &mut Tensor<F>,
    epsilon: f32,
    #[comptime] layer: bool,
    #[comptime] summed: bool,
    #[comptime] units: u32,
) {
    let row = cube_index();
    if row >= x.shape(0) {
        terminate!();
    }
    let width = x.shape(1);
    let start = row * width;
    let (first, step) = (UNIT_POS_X as usize, CUBE_DIM_X as usize);
    let count = F::cast_from(width as u32);
    let mut partial = SharedMemory::<F>::new(units as usize);

    let mut mean = F::new(0.0);
    if layer {
        let mut sum = F::new(0.0);
        let mut c = first;
        while c < width {
            sum += read_input::<F>(x, addend, start + c, summed);
            c += step;
        }
        mean = cube_sum::<F>(sum, &mut partial) / count;
    }
    let mut squares = F::new(0.0);
    let mut c = first;
    while c < width {
        let centred = read_input::<F>(x, addend, start + c, summed) - mean;
        squares += centred * centred;
        c += step;
    }
    let variance = cube_sum::<F>(squares, &mut partial) / count;
    let inverse = F::new(1.0) / F::sqrt(variance + F::cast_from(epsilon));

    let mut c = first;
    while c < width {
        let n = (read_input::<F>(x, addend, start + c, summed) - mean) * inverse;
        normalized[start + c] = n;
        let mut out = n * gamma[c];
        if layer {
            out += beta[c];
        }
        y[start + c] = out;
        c += step;
    }
    if first == 0 {
        r[row] = inverse;
    }
}

/// `x[i]`, or `x[i] + addend[i]` where `summed`.
#[cube]
fn read_input<F: Float>(
    x: &Tensor<F>,
    addend: &Tensor<F>,
    i: usize,
    #[comptime] summed: bool,
) -> F {
    let mut value = x[i];
    if summed {
        value += addend[i];
    }
    value
}

/// The rows of block `cube_index()` ([`ROWS_A_CUBE`] rows): `dx = r · (h − mean(h) − x̂ ·
/// mean(h ⊙ x̂))` with `h = g ⊙ γ` (RMSNorm: no `mean(h)`), and the block's column sums
/// `Σ g ⊙ x̂` and (LayerNorm) `Σ g` into row `cube_index()` of `sum_gx` and `sum_g`. First each
/// row's two means, one row after another, every unit taking part in their sums, kept in shared
/// memory with the row's `r`; then each unit walks its columns down the block.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn norm_rows_gradient<F: Float>(
    normalized: &Tensor<F>,
    r: &Tensor<F>,
    gamma: &Tensor<F>,
    g: &Tensor<F>,
    dx: &mut Tensor<F>,
    sum_gx: &mut Tensor<F>,
    sum_g: &mut Tensor<F>,
    #[comptime] layer: bool,
    #[comptime] units: u32,
) {
    let block = cube_index();
    let rows = normalized.shape(0);
    let top = block * ROWS_A_CUBE as usize;
    if top >= rows {
        terminate!();
    }
    let mut end = top + ROWS_A_CUBE as usize;
    if end > rows {
        end = rows;
    }
    let width = normalized.shape(1);
    let (first, step) = (UNIT_POS_X as usize, CUBE_DIM_X as usize);
    let count = F::cast_from(width as u32);
    let mut partial = SharedMemory::<F>::new(units as usize);
    let mut means_hx = SharedMemory::<F>::new(ROWS_A_CUBE as usize);
    let mut means_h = SharedMemory::<F>::new(ROWS_A_CUBE as usize);
    let mut inverses = SharedMemory::<F>::new(ROWS_A_CUBE as usize);

    let mut row = top;
    while row < end {
        let start = row * width;
        let mut sum_h = F::new(0.0);
        let mut sum_hx = F::new(0.0);
        let mut c = first;
        while c < width {
            let h = g[start + c] * gamma[c];
            if layer {
                sum_h += h;
            }
            sum_hx += h * normalized[start + c];
            c += step;
        }
        let mean_hx = cube_sum::<F>(sum_hx, &mut partial) / count;
        let mut mean_h = F::new(0.0);
        if layer {
            mean_h = cube_sum::<F>(sum_h, &mut partial) / count;
        }
        if first == 0 {
            means_hx[row - top] = mean_hx;
            means_h[row - top] = mean_h;
            inverses[row - top] = r[row];
        }
        row += 1;
    }
    sync_cube();

    let mut c = first;
    while c < width {
        let gamma_c = gamma[c];
        let mut total_gx = F::new(0.0);
        let mut total_g = F::new(0.0);
        let mut row = top;
        while row < end {
            let i = row * width + c;
            let (g_i, n) = (g[i], normalized[i]);
            let h = g_i * gamma_c;
            let at = row - top;
            dx[i] = inverses[at] * (h - means_h[at] - n * means_hx[at]);
            total_gx += g_i * n;
            if layer {
                total_g += g_i;
            }
            row += 1;
        }
        sum_gx[block * width + c] = total_gx;
        if layer {
            sum_g[block * width + c] = total_g;
        }
        c += step;
    }
}

/// The column sums of the blocks' sums, `a` and (LayerNorm) `b`, both (blocks, width), into
/// `sum_a` and `sum_b`: a column to each unit column of a cube (`COLUMNS` × `LANES` units), its
/// `CUBE_DIM_Y` lanes taking every `CUBE_DIM_Y`-th block, the lanes' sums added in shared
/// memory.
#[cube(launch)]
fn norm_columns_sum<F: Float>(
    a: &Tensor<F>,
    b: &Tensor<F>,
    sum_a: &mut Tensor<F>,
    sum_b: &mut Tensor<F>,
    #[comptime] layer: bool,
) {
    let (rows, width) = (a.shape(0), a.shape(1));
    let column = (CUBE_POS_X * CUBE_DIM_X + UNIT_POS_X) as usize;
    let (lane, lanes) = (UNIT_POS_Y as usize, CUBE_DIM_Y as usize);
    let mut total_a = F::new(0.0);
    let mut total_b = F::new(0.0);
    if column < width {
        let mut row = lane;
        while row < rows {
            let i = row * width + column;
            total_a += a[i];
            if layer {
                total_b += b[i];
            }
            row += lanes;
        }
    }
    let mut partial_a = SharedMemory::<F>::new((COLUMNS * LANES) as usize);
    let mut partial_b = SharedMemory::<F>::new((COLUMNS * LANES) as usize);
    let slot = lane * CUBE_DIM_X as usize + UNIT_POS_X as usize;
    partial_a[slot] = total_a;
    partial_b[slot] = total_b;
    sync_cube();
    if lane == 0 && column < width {
        let mut column_a = F::new(0.0);
        let mut column_b = F::new(0.0);
        let mut other = 0;
        while other < lanes {
            let at = other * CUBE_DIM_X as usize + UNIT_POS_X as usize;
            column_a += partial_a[at];
            column_b += partial_b[at];
            other += 1;
        }
        sum_a[column] = column_a;
        if layer {
            sum_b[column] = column_b;
        }
    }
}
