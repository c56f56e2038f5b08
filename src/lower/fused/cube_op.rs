//! laxc's own kernels on the GPU back ends as custom operations in Burn's fusion stream, where
//! they run in order with the ops around them: what `cube_norm`, `cube_adamw`, `cube_rope`,
//! `cube_softmax`, `cube_kron` and `cube_squares` share (and their cubes' sum over shared
//! memory). [`on_gpu`] finds the GPU runtime of a backend's tensors and runs a [`GpuOp`]
//! there; an op registers its inputs and its outputs' shapes (f32); when the stream reaches it,
//! its [`Kernels`] launch on the inputs made contiguous (but those a kernel reads through their
//! strides).

use super::same_type;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Shape};
use burn_cubecl::fusion::FusionCubeRuntime;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime};
use burn_fusion::stream::{Operation, OperationStreams};
use burn_fusion::{Fusion, FusionTensor};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, TensorIr};
use cubecl::prelude::*;
use std::any::TypeId;
use std::cell::Cell;
use std::marker::PhantomData;

/// The GPU back ends' inner backend: Burn's fusion over its cubecl backend (what
/// `burn::backend::Wgpu` and `Cuda` are with Burn's `fusion` feature; a build without it falls
/// back to the composed ops instead of reaching a kernel here).
type Fused<R, BT> = Fusion<CubeBackend<R, f32, i32, BT>>;
/// A tensor of [`Fused`].
pub(super) type FusedTensor<R> = FusionTensor<FusionCubeRuntime<R>>;
type Cube<R, BT> = CubeBackend<R, f32, i32, BT>;

/// An op with kernels of laxc's own on the GPU back ends, given its inputs as the runtime's
/// tensors: what [`on_gpu`] runs.
pub(super) trait GpuOp {
    /// What the op gives back, with `T` the tensor type: the same whichever backend ran it.
    type Output<T: 'static>: 'static;
    fn run<R: CubeRuntime, BT: BoolElement>(
        self,
        inputs: Vec<FusedTensor<R>>,
    ) -> Self::Output<FusedTensor<R>>;
}

/// `op` on `inputs` where `I` is a GPU back end's inner backend ([`Fused`], whose tensors are
/// then the runtime's own), its output as `I`'s; else the inputs back. The one place that
/// finds the runtime of a tensor type.
pub(super) fn on_gpu<I: Backend, Op: GpuOp>(
    op: Op,
    inputs: Vec<FloatTensor<I>>,
) -> Result<Op::Output<FloatTensor<I>>, Vec<FloatTensor<I>>> {
    macro_rules! try_runtime {
        ($_inner:ty, $runtime:ty, $bool:ty) => {
            if TypeId::of::<I>() == TypeId::of::<Fused<$runtime, $bool>>() {
                let own = same_type(inputs).unwrap_or_else(|_| unreachable!("I was checked"));
                let out = op.run::<$runtime, $bool>(own);
                return Ok(same_type(out).unwrap_or_else(|_| unreachable!("I was checked")));
            }
        };
    }
    for_each_gpu_inner_backend!(try_runtime);
    Err(inputs)
}

/// What an op launches when the stream reaches it.
pub(super) trait Kernels<R: CubeRuntime>: Send + Sync + std::fmt::Debug + 'static {
    /// The outputs, in the order their shapes were registered, from the inputs (contiguous,
    /// but those [`Kernels::reads_strided`] names).
    fn launch(&self, inputs: Vec<CubeTensor<R>>) -> Vec<CubeTensor<R>>;

    /// Whether the kernels read input `index` through its strides, as it comes: it is then not
    /// copied first where it is a view (a product's transposed gradient).
    fn reads_strided(&self, _index: usize) -> bool {
        false
    }
}

/// Registers `kernels` (`launches` of them, for [`launches`]) in the inputs' fusion stream
/// under `name`, with f32 outputs of `shapes`; returns the outputs.
pub(super) fn register<R: CubeRuntime, BT: BoolElement, K: Kernels<R>>(
    name: &'static str,
    inputs: Vec<FusedTensor<R>>,
    shapes: Vec<Shape>,
    launches: usize,
    kernels: K,
) -> Vec<FusedTensor<R>> {
    let client = inputs[0].client.clone();
    let streams = OperationStreams::with_inputs(&inputs);
    let outputs: Vec<TensorIr> = (shapes.into_iter())
        .map(|shape| TensorIr::uninit(client.create_empty_handle(), shape, DType::F32))
        .collect();
    let inputs: Vec<TensorIr> = inputs.into_iter().map(|t| t.into_ir()).collect();
    let desc = CustomOpIr::new(name, &inputs, &outputs);
    let op = Custom::<R, BT, K> {
        desc: desc.clone(),
        kernels,
        backend: PhantomData,
    };
    LAUNCHES.with(|n| n.set(n.get() + launches));
    client.register(streams, OperationIr::Custom(desc), op)
}

#[derive(Debug)]
struct Custom<R, BT, K> {
    desc: CustomOpIr,
    kernels: K,
    backend: PhantomData<(R, BT)>,
}

impl<R: CubeRuntime, BT: BoolElement, K: Kernels<R>> Operation<FusionCubeRuntime<R>>
    for Custom<R, BT, K>
{
    fn execute(
        &self,
        handles: &mut HandleContainer<
            <FusionCubeRuntime<R> as burn_fusion::FusionRuntime>::FusionHandle,
        >,
    ) {
        let inputs = (self.desc.inputs.iter().enumerate())
            .map(|(i, t)| {
                let tensor = handles.get_float_tensor::<Cube<R, BT>>(t);
                match self.kernels.reads_strided(i) {
                    true => tensor,
                    false => into_contiguous(tensor),
                }
            })
            .collect();
        let outputs = self.kernels.launch(inputs);
        for (ir, tensor) in self.desc.outputs.iter().zip(outputs) {
            handles.register_float_tensor::<Cube<R, BT>>(&ir.id, tensor);
        }
    }
}

/// How many of laxc's own GPU kernels (the norms', RoPE's, AdamW's, the sums of squares') this
/// thread has registered (tests/wgpu.rs: proof that an op on a GPU back end ran on them, not on
/// Burn's composed ops; per thread, so that tests beside it do not count).
pub fn launches() -> usize {
    LAUNCHES.with(Cell::get)
}

thread_local! {
    static LAUNCHES: Cell<usize> = const { Cell::new(0) };
}

/// The sum of every unit's `value`, for every unit: a tree over shared memory, then a barrier
/// so that the memory can take the next sum.
#[cube]
pub(super) fn cube_sum<F: Float>(value: F, partial: &mut SharedMemory<F>) -> F {
    cube_tree::<F>(value, partial, false)
}

/// The largest of every unit's `value`, for every unit: [`cube_sum`]'s tree with `max`.
#[cube]
pub(super) fn cube_max<F: Float>(value: F, partial: &mut SharedMemory<F>) -> F {
    cube_tree::<F>(value, partial, true)
}

/// Every unit's `value` combined (by `max` where `largest`, else added) in a tree over shared
/// memory, for every unit, then a barrier so that the memory can take the next.
#[cube]
fn cube_tree<F: Float>(value: F, partial: &mut SharedMemory<F>, #[comptime] largest: bool) -> F {
    let unit = UNIT_POS_X as usize;
    partial[unit] = value;
    sync_cube();
    let mut half = (CUBE_DIM_X / 2) as usize;
    while half > 0 {
        if unit < half {
            let other = partial[unit + half];
            if largest {
                partial[unit] = max(partial[unit], other);
            } else {
                partial[unit] = partial[unit] + other;
            }
        }
        sync_cube();
        half /= 2;
    }
    let combined = partial[0];
    sync_cube();
    combined
}

/// Units of a cube that takes a row of `width` (the norms', RoPE's): a power of two (the
/// shared-memory sum halves it), about the row's width, at least a warp and at most 256.
pub(super) fn units_for(width: usize) -> u32 {
    width.next_power_of_two().clamp(32, 256) as u32
}

/// A new f32 tensor of `shape` on `like`'s device, its memory not written: a kernel's output.
pub(super) fn empty_f32<R: CubeRuntime>(like: &CubeTensor<R>, shape: Shape) -> CubeTensor<R> {
    empty_device_dtype::<R>(like.client.clone(), like.device.clone(), shape, DType::F32)
}

/// `cubes` cubes on a grid of at most 65,535 a side (the least any API allows); a kernel finds
/// its cube's index with [`cube_index`].
pub(super) fn grid(cubes: usize) -> CubeCount {
    const SIDE: usize = 65_535;
    let across = cubes.clamp(1, SIDE);
    CubeCount::Static(across as u32, cubes.div_ceil(SIDE).max(1) as u32, 1)
}

/// This cube's index on a [`grid`] (the last side's cubes may run past the work: kernels check).
#[cube]
pub(super) fn cube_index() -> usize {
    (CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X) as usize
}

/// This unit's index over every cube of a [`grid`], for a kernel that takes an element a unit
/// (the last cube's units may run past the work: kernels check).
#[cube]
pub(super) fn unit_index() -> usize {
    cube_index() * CUBE_DIM_X as usize + UNIT_POS_X as usize
}
