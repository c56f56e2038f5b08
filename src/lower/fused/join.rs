//! One autodiff graph for many tensors, with no work on the device.
//!
//! Burn's autodiff keeps each graph apart until an op first combines two, and then copies one
//! into the other (`lower::model`'s `join_parameter_graphs` says why laxc joins every parameter
//! before the forward pass). Joining them with an op of the backend's (a concatenation of a
//! one-element view of each) cost nothing on the CPU, where a view is free, but on the GPU back
//! ends each view and each place in the concatenation was a kernel of its own: two a parameter
//! tensor a step (BENCHMARKS.md, attempt 79). Here the join is a node whose value is its first
//! input's, unchanged: registering it merges its inputs' graphs, and it launches nothing.

use super::{as_node, give, record, Node};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;

/// Puts `tensors` into one autodiff graph through a balanced tree of [`Join`] nodes (each
/// merge copies one graph into another, so a chain would copy the growing one up to once a
/// tensor), and drops the tree. `Err` with the tensors where `B` has no such node (no laxc
/// autodiff backend), for the caller to join them another way.
pub fn join_graphs<B: Backend>(tensors: Vec<FloatTensor<B>>) -> Result<(), Vec<FloatTensor<B>>> {
    let mut level = tensors;
    while level.len() > 1 {
        let mut next = Vec::with_capacity(level.len().div_ceil(2));
        let mut rest = level.into_iter();
        while let Some(a) = rest.next() {
            let Some(b) = rest.next() else {
                next.push(a);
                break;
            };
            match as_node::<B, _, 2>(Join, [a, b]) {
                Ok(joined) => next.push(joined),
                // Only the first pair can fail: whether `B` has nodes does not change.
                Err([a, b]) => return Err([a, b].into_iter().chain(rest).collect()),
            }
        }
        level = next;
    }
    Ok(())
}

/// `a` itself, as a node over `a` and `b`.
struct Join;

/// Backward: the gradient goes to `a` as it came; `b` took no part in the value.
#[derive(Debug)]
struct JoinBackward;

impl<I: Backend> Backward<I, 2> for JoinBackward {
    type State = ();

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = grads.consume::<I>(&ops.node);
        let [a, _] = ops.parents.each_ref().map(|p| p.as_ref().map(|n| n.id));
        give::<I>(grads, a, || g);
    }
}

impl Node<2> for Join {
    /// The point of it: on the GPU back ends it saves two kernels a tensor.
    const ON_GPU: bool = true;

    fn run<I: Backend>(self, [a, b]: [FloatTensor<Autodiff<I>>; 2]) -> FloatTensor<Autodiff<I>> {
        let value = a.primitive.clone();
        record(JoinBackward, [&a, &b], (), value)
    }
}
