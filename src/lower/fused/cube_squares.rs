//! The sums of squares of a step's gradients (the clip's global norm) on the GPU back ends: one
//! op the host registers for all of them, where Burn's `square().sum()` was two registered ops
//! and two or three kernels a parameter tensor (BENCHMARKS.md, attempt 82) and laxc's kernel a
//! tensor then one op and one kernel a tensor (attempt 83). When the stream reaches the op, its
//! kernels take up to [`MOST_INPUTS`] tensors each (fewer where the device binds fewer
//! buffers), tensors of one size in cubes together: each cube sums the squares of its strided
//! share of one tensor's elements in shared memory and writes one partial sum; the kernels'
//! partial sums are read from the device in one transfer (`cube_read`) and each tensor's are
//! added in f64.

use super::cube_op::{
    cube_index, cube_sum, empty_f32, grid, on_gpu, register, FusedTensor, GpuOp, Kernels,
};
use super::cube_read::read;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Shape, TensorMetadata};
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeRuntime};
use cubecl::prelude::*;

/// Units a cube (a power of two, for `cube_sum`).
const UNITS: u32 = 256;
/// Elements a unit takes at least before another cube is added, and the most cubes: a tensor
/// of up to 2,048 elements is one cube and one partial sum, the largest 512.
const PER_UNIT: usize = 8;
const MOST_CUBES: usize = 512;
/// The most tensors one kernel reads: each is a branch of its code, compiled for each count.
const MOST_INPUTS: usize = 32;

/// `Σ t²` of each tensor, in f64, from one registered op and one read where `I` is a GPU back
/// end's inner backend and every tensor is f32 and not empty; else the tensors back.
pub fn sums_of_squares<I: Backend>(
    tensors: Vec<FloatTensor<I>>,
) -> Result<Vec<f64>, Vec<FloatTensor<I>>> {
    let takes = |t: &FloatTensor<I>| t.dtype() == DType::F32 && t.shape().num_elements() > 0;
    if tensors.is_empty() || !tensors.iter().all(takes) {
        return Err(tensors);
    }
    on_gpu::<I, _>(SumsOfSquares, tensors)
}

/// The op [`sums_of_squares`] runs on a GPU back end.
struct SumsOfSquares;

impl GpuOp for SumsOfSquares {
    type Output<T: 'static> = Vec<f64>;

    fn run<R: CubeRuntime, BT: BoolElement>(self, tensors: Vec<FusedTensor<R>>) -> Vec<f64> {
        sums::<R, BT>(tensors)
    }
}

/// Cubes for `n` elements.
fn cubes_for(n: usize) -> usize {
    n.div_ceil(UNITS as usize * PER_UNIT).clamp(1, MOST_CUBES)
}

/// Tensors of one kernel: how many, and the cubes each takes (the same for all of them).
#[derive(Clone, Copy, Debug)]
struct Group {
    tensors: usize,
    cubes: usize,
}

/// The tensors in kernels: each kernel takes tensors of one number of cubes, so that a cube
/// finds its tensor by a division, at most `per_kernel` of them; the tensors' indices in the
/// kernels' order, and the kernels.
fn groups(lengths: &[usize], per_kernel: usize) -> (Vec<usize>, Vec<Group>) {
    let mut by_cubes = std::collections::BTreeMap::<usize, Vec<usize>>::new();
    for (i, &n) in lengths.iter().enumerate() {
        by_cubes.entry(cubes_for(n)).or_default().push(i);
    }
    let mut order = Vec::with_capacity(lengths.len());
    let mut groups = Vec::new();
    for (cubes, indices) in by_cubes {
        for chunk in indices.chunks(per_kernel) {
            order.extend_from_slice(chunk);
            groups.push(Group {
                tensors: chunk.len(),
                cubes,
            });
        }
    }
    (order, groups)
}

fn sums<R: CubeRuntime, BT: BoolElement>(tensors: Vec<FusedTensor<R>>) -> Vec<f64> {
    // A kernel binds its inputs, its partial sums and (on some runtimes) one buffer more.
    let bindings = R::client(tensors[0].client.device())
        .properties()
        .hardware
        .max_bindings;
    let per_kernel = MOST_INPUTS
        .min((bindings as usize).saturating_sub(2))
        .max(1);
    let lengths: Vec<usize> = tensors.iter().map(|t| t.shape.num_elements()).collect();
    let (order, groups) = groups(&lengths, per_kernel);
    let mut slots: Vec<Option<FusedTensor<R>>> = tensors.into_iter().map(Some).collect();
    let inputs = (order.iter())
        .map(|&i| slots[i].take().expect("each tensor once"))
        .collect();
    let shapes = (groups.iter())
        .map(|g| Shape::new([g.tensors * g.cubes]))
        .collect();
    let kernels = SquaresKernels(groups.clone());
    let partials = register::<R, BT, _>(
        "laxc_sums_of_squares",
        inputs,
        shapes,
        groups.len(),
        kernels,
    );
    let mut sums = vec![0.0; lengths.len()];
    let mut place = order.into_iter();
    for (values, group) in read::<R, BT>(partials).into_iter().zip(groups) {
        for tensor in values.chunks_exact(group.cubes) {
            let i = place.next().expect("a place for each tensor");
            sums[i] = tensor.iter().map(|&s| f64::from(s)).sum();
        }
    }
    sums
}

/// The kernels of [`groups`], in order.
#[derive(Debug)]
struct SquaresKernels(Vec<Group>);

impl<R: CubeRuntime> Kernels<R> for SquaresKernels {
    fn launch(&self, inputs: Vec<CubeTensor<R>>) -> Vec<CubeTensor<R>> {
        let mut inputs = inputs.into_iter();
        (self.0.iter())
            .map(|group| {
                let mut xs = SequenceArg::<R, Tensor<f32>>::new();
                let mut first = None;
                for x in inputs.by_ref().take(group.tensors) {
                    first.get_or_insert_with(|| x.clone());
                    xs.push(x.into_tensor_arg());
                }
                let like = first.expect("a kernel has tensors");
                let cubes = group.tensors * group.cubes;
                let partials = empty_f32(&like, Shape::new([cubes]));
                squares_kernel::launch::<f32, R>(
                    &like.client,
                    grid(cubes),
                    CubeDim::new_1d(UNITS),
                    xs,
                    partials.clone().into_tensor_arg(),
                    group.cubes as u32,
                    UNITS,
                );
                partials
            })
            .collect()
    }
}

/// `partials[cube] = Σ x[i]²` over the elements `i` of this cube's units in the tensor `xs[k]`
/// whose `cubes` cubes it is among (`k = cube / cubes`), each unit striding over those cubes:
/// the order of a kernel of its own over that tensor.
#[cube(launch)]
fn squares_kernel<F: Float>(
    xs: &Sequence<Tensor<F>>,
    partials: &mut Tensor<F>,
    cubes: u32,
    #[comptime] units: u32,
) {
    let cube = cube_index() as u32;
    let (tensor, local) = (cube / cubes, cube % cubes);
    let unit = UNIT_POS_X;
    let stride = (cubes * CUBE_DIM_X) as usize;
    let mut squares = F::new(0.0);
    #[unroll]
    for k in 0..xs.len() {
        if tensor == k as u32 {
            let x = xs.index(k);
            let mut i = (local * CUBE_DIM_X + unit) as usize;
            while i < x.len() {
                let v = x[i];
                squares += v * v;
                i += stride;
            }
        }
    }
    // Every unit of the cube takes part in the sum, whichever tensor it read.
    let mut shared = SharedMemory::<F>::new(units as usize);
    let total = cube_sum::<F>(squares, &mut shared);
    if unit == 0 && (tensor as usize) < xs.len() {
        partials[cube as usize] = total;
    }
}
