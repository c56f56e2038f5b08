//! One autodiff graph for many tensors, with no work on the device.
//!
//! Burn's autodiff keeps each graph apart until an op first combines two, and then copies one
//! into the other (`lower::model`'s `join_parameter_graphs` says why laxc joins every parameter
//! before the forward pass). Joining them with an op of the backend's (a concatenation of a
//! one-element view of each) costs nothing on the CPU, where a view is free, but on the GPU back
//! ends each view and each place in the concatenation is a kernel of its own: two a parameter
//! tensor a step (BENCHMARKS.md, attempt 79). Here the join is a node whose value is its first
//! input's, unchanged: registering it merges its inputs' graphs, and it launches nothing.
//!
//! It must be one node over all of them, as the concatenation is. Burn 0.21's graph locator
//! remaps a merged graph's nodes to the graph it went into, but not the merged graph's first
//! node (its origin: here a parameter) once that graph is merged again; so after a tree of
//! joins, the parameters of the inner merges point at graphs that are no longer theirs, and
//! each one's first op in the forward pass merges the whole graph once more (a 256-block model
//! took 4.5 s a forward pass instead of 0.07: attempt 79).

use super::{as_node, give, record, Node};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;

/// Puts `tensors` into one autodiff graph through one [`Join`] node over all of them, dropped
/// at once. A node's inputs are a fixed number: the tensors fill the smallest of 64, 256 or
/// 1,024 (the last one repeated). `Err` with the tensors where they are more than that or `B`
/// has no such node (no laxc autodiff backend), for the caller to join them another way.
pub fn join_graphs<B: Backend>(tensors: Vec<FloatTensor<B>>) -> Result<(), Vec<FloatTensor<B>>> {
    match tensors.len() {
        0 | 1 => Ok(()),
        2..=64 => join_in::<B, 64>(tensors),
        65..=256 => join_in::<B, 256>(tensors),
        257..=1_024 => join_in::<B, 1_024>(tensors),
        _ => Err(tensors),
    }
}

/// [`join_graphs`] through a node of `N` inputs (`tensors` at most `N`, at least one).
fn join_in<B: Backend, const N: usize>(
    tensors: Vec<FloatTensor<B>>,
) -> Result<(), Vec<FloatTensor<B>>> {
    let n = tensors.len();
    let last = tensors[n - 1].clone();
    let padded: Vec<_> = (tensors.into_iter())
        .chain(std::iter::repeat(last))
        .take(N)
        .collect();
    let inputs: Box<[FloatTensor<B>; N]> = padded
        .into_boxed_slice()
        .try_into()
        .unwrap_or_else(|_| unreachable!("N inputs"));
    match as_node::<B, _, N>(Join, *inputs) {
        Ok(_) => Ok(()),
        Err(inputs) => Err(inputs.into_iter().take(n).collect()),
    }
}

/// The first input itself, as a node over all of them.
struct Join;

/// Backward: the gradient goes to the first input as it came; the others took no part in the
/// value.
#[derive(Debug)]
struct JoinBackward;

impl<I: Backend, const N: usize> Backward<I, N> for JoinBackward {
    type State = ();

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = grads.consume::<I>(&ops.node);
        let first = ops.parents[0].as_ref().map(|n| n.id);
        give::<I>(grads, first, || g);
    }
}

impl<const N: usize> Node<N> for Join {
    /// The point of it: on the GPU back ends it saves two kernels a tensor.
    const ON_GPU: bool = true;

    fn run<I: Backend>(self, inputs: [FloatTensor<Autodiff<I>>; N]) -> FloatTensor<Autodiff<I>> {
        let value = inputs[0].primitive.clone();
        record(JoinBackward, inputs.each_ref(), (), value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::{Tensor, TensorPrimitive};

    fn leaves<B: Backend>(n: usize, grad: bool) -> Vec<FloatTensor<B>> {
        (0..n)
            .map(|i| {
                let t = Tensor::<B, 1>::from_floats([i as f32, 1.0], &Default::default());
                let t = if grad { t.require_grad() } else { t };
                t.into_primitive().tensor()
            })
            .collect()
    }

    /// Up to 1,024 tensors are one node on an autodiff backend of laxc's; more, or a backend
    /// without the node, give every tensor back, in order, for the concatenation.
    #[test]
    fn joins_up_to_a_node_s_inputs_and_gives_the_rest_back() {
        type A = Autodiff<Flex>;
        for n in [0, 1, 2, 64, 65, 256, 1_024] {
            assert!(
                join_graphs::<A>(leaves::<A>(n, true)).is_ok(),
                "{n} tensors"
            );
        }
        let back = join_graphs::<A>(leaves::<A>(1_025, true)).expect_err("past 1,024");
        assert_eq!(back.len(), 1_025);
        let back = join_graphs::<Flex>(leaves::<Flex>(3, false)).expect_err("no autodiff");
        let second = Tensor::<Flex, 1>::from_primitive(TensorPrimitive::Float(back[1].clone()));
        assert_eq!(second.into_data().to_vec::<f32>().unwrap(), vec![1.0, 1.0]);
    }
}
