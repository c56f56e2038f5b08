//! Many small tensors read from a GPU in one transfer, with no kernel: what the clip's global
//! norm needs of a step's gradients, the partial sums of squares of each (`cube_squares`).
//! Concatenating them first (one transfer, attempt 78) cost a kernel a tensor on the GPU back
//! ends, each copied into its place (BENCHMARKS.md, attempt 80); here each is resolved from
//! Burn's fusion stream to its own buffer on the device, and the buffers are read together.

use super::cube_op::FusedTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime};
use cubecl::server::CopyDescriptor;

/// The values of f32 tensors on a GPU back end (all on one device), each in its elements'
/// order, the tensors in theirs, read in one transfer.
pub(super) fn read<R: CubeRuntime, BT: BoolElement>(tensors: Vec<FusedTensor<R>>) -> Vec<Vec<f32>> {
    // Resolving the first runs the stream up to it (every sum was queued before it is asked
    // for); the rest are then already there.
    let on_device: Vec<_> = (tensors.into_iter())
        .map(|t| {
            t.client
                .clone()
                .resolve_tensor_float::<CubeBackend<R, f32, i32, BT>>(t)
        })
        .collect();
    let client = on_device[0].client.clone();
    let descriptors = (on_device.iter())
        .map(|t| {
            CopyDescriptor::new(
                t.handle.clone().binding(),
                t.meta.shape().clone(),
                t.meta.strides().clone(),
                t.elem_size(),
            )
        })
        .collect();
    let read = cubecl::future::block_on(client.read_tensor_async(descriptors));
    let bytes =
        read.unwrap_or_else(|e| panic!("reading the gradients' sums of squares from the GPU: {e}"));
    (bytes.iter())
        .map(|b| {
            (b.chunks_exact(4))
                .map(|v| f32::from_le_bytes(v.try_into().expect("four bytes")))
                .collect()
        })
        .collect()
}
