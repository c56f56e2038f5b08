//! The optimizer laxc trains with: Burn's AdamW, with Burn's state, records and checkpoints,
//! whose step over a parameter runs as one pass on Flex (`flex_kernels::adamw`) instead of
//! Burn's fourteen element-wise ops. Same f32 operations in the same order: equal to Burn's bit
//! for bit (tested below), so a run's curve does not move and a checkpoint written by either
//! loads in the other. On the GPU back ends, the same operations as one kernel a parameter
//! (`fused::gpu_adamw_step`, one op for the host to register where Burn's step is fourteen;
//! the formula's value to f32 rounding, tests/wgpu.rs). Every other backend, and any state these kernels do not take,
//! runs Burn's own step.
//!
//! The global-norm clip's factor is applied inside the step ([`GradientScale`]): the kernel
//! multiplies each gradient element by it as it reads it, which is the product the clip's
//! own pass over every gradient wrote before (BENCHMARKS.md, attempt 58).

use crate::lower::flex_kernels::{self, AdamWStep};
use crate::lower::fused::{flex_mut, on_flex_over};
use burn::optim::{
    AdamW as BurnAdamW, AdamWConfig, AdamWState, AdaptiveMomentumState, LearningRate,
    SimpleOptimizer,
};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorPrimitive};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The factor every gradient is multiplied by before the next steps take it: the global-norm
/// clip's, 1 while the norm is within bounds. The training loop sets it once a step, and the
/// [`AdamW`] inside Burn's optimizer adaptor reads it (the adaptor hands a step only the
/// learning rate and the gradients). Clones share one value.
#[derive(Clone, Debug)]
pub struct GradientScale(Arc<AtomicU64>);

impl Default for GradientScale {
    fn default() -> Self {
        GradientScale(Arc::new(AtomicU64::new(1f64.to_bits())))
    }
}

impl GradientScale {
    /// Multiplies the gradients of the steps from now on by `factor`.
    pub fn set(&self, factor: f64) {
        self.0.store(factor.to_bits(), Ordering::Relaxed);
    }

    fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// AdamW (decoupled weight decay, bias-corrected moments; no AMSGrad, no cautious decay).
#[derive(Clone)]
pub struct AdamW {
    /// Burn's AdamW of the same configuration: the step wherever the kernel does not apply.
    reference: BurnAdamW,
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
    weight_decay: f32,
    gradient_scale: GradientScale,
}

impl AdamW {
    /// AdamW with the moments' decay rates `beta_1` and `beta_2`, `epsilon` added to the
    /// second moment's root, and decoupled weight decay `weight_decay`, its gradients
    /// multiplied by `gradient_scale` first.
    pub fn new(
        beta_1: f32,
        beta_2: f32,
        epsilon: f32,
        weight_decay: f32,
        gradient_scale: GradientScale,
    ) -> AdamW {
        let reference = AdamWConfig::new()
            .with_beta_1(beta_1)
            .with_beta_2(beta_2)
            .with_epsilon(epsilon)
            .with_weight_decay(weight_decay)
            .build();
        AdamW {
            reference,
            beta_1,
            beta_2,
            epsilon,
            weight_decay,
            gradient_scale,
        }
    }

    /// The step's constants as Burn's AdamW computes them (in f32, the decay rate in f64).
    fn constants(&self, lr: LearningRate, time: usize) -> AdamWStep {
        let t = time as i32;
        let decay_rate = lr * self.weight_decay as f64;
        AdamWStep {
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            rest_1: 1.0 - self.beta_1,
            rest_2: 1.0 - self.beta_2,
            correction_1: 1.0 - self.beta_1.powi(t),
            correction_2: 1.0 - self.beta_2.powi(t),
            epsilon: self.epsilon,
            lr: lr as f32,
            decay: (decay_rate != 0.0).then_some((1.0 - decay_rate) as f32),
            // As `mul_scalar` takes an f64 factor into an f32 tensor.
            grad_scale: self.gradient_scale.get() as f32,
        }
    }

    /// The step as one kernel where `B` is a GPU back end's and the tensors are f32, or where
    /// `B` is Flex and the tensors are contiguous f32, written there over the parameter and the
    /// moments, which the step reads last (buffers in cache, where new ones are not;
    /// BENCHMARKS.md, attempt 48); else the tensors back, unchanged, for Burn's step.
    fn fused<B: Backend, const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<AdamWState<B, D>>,
    ) -> Result<(Tensor<B, D>, AdamWState<B, D>), Unfused<B, D>> {
        let before = state.as_ref().map_or(0, |s| s.momentum.time);
        if state
            .as_ref()
            .is_some_and(|s| s.momentum.max_moment_2.is_some())
        {
            return Err((tensor, grad, state));
        }
        let step = self.constants(lr, before + 1);
        let primitive = |t: Tensor<B, D>| t.into_primitive().tensor();
        let float = |t| Tensor::<B, D>::from_primitive(TensorPrimitive::Float(t));
        let state_of = |[m, v]: [FloatTensor<B>; 2], time| AdamWState {
            momentum: AdaptiveMomentumState {
                time,
                moment_1: float(m),
                moment_2: float(v),
                max_moment_2: None,
            },
        };
        let (param, g) = (primitive(tensor), primitive(grad));
        let kept = state.map(|s| [s.momentum.moment_1, s.momentum.moment_2].map(primitive));
        #[cfg(any(feature = "wgpu", feature = "cuda"))]
        let (param, g, kept) =
            match crate::lower::fused::gpu_adamw_step::<B>((param, g, kept), &step) {
                Ok([param, m, v]) => return Ok((float(param), state_of([m, v], before + 1))),
                Err(inputs) => inputs,
            };
        let mut param = param;
        let moments = match kept {
            // The first step: the kernel makes the moments.
            None => match on_flex_over::<B, 1, 2>(&mut param, [&g], |p, [g]| {
                flex_kernels::adamw_first(p, g, &step)
            }) {
                Some(made) => made,
                None => return Err((float(param), float(g), None)),
            },
            Some([mut m, mut v]) => {
                let updated = match (flex_mut::<B>(&mut m), flex_mut::<B>(&mut v)) {
                    (Some(m), Some(v)) => on_flex_over::<B, 1, 0>(&mut param, [&g], |p, [g]| {
                        flex_kernels::adamw(p, g, [m, v], &step).map(|()| [])
                    })
                    .is_some(),
                    _ => false,
                };
                if !updated {
                    return Err((float(param), float(g), Some(state_of([m, v], before))));
                }
                [m, v]
            }
        };
        Ok((float(param), state_of(moments, before + 1)))
    }
}

/// What [`AdamW::fused`] gives back, unchanged, for Burn's step: the parameter, its gradient
/// and its state.
type Unfused<B, const D: usize> = (Tensor<B, D>, Tensor<B, D>, Option<AdamWState<B, D>>);

impl<B: Backend> SimpleOptimizer<B> for AdamW {
    type State<const D: usize> = AdamWState<B, D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        match self.fused(lr, tensor, grad, state) {
            Ok((tensor, state)) => (tensor, Some(state)),
            Err((tensor, grad, state)) => {
                let scale = self.gradient_scale.get();
                let grad = if scale == 1.0 {
                    grad
                } else {
                    grad.mul_scalar(scale)
                };
                self.reference.step(lr, tensor, grad, state)
            }
        }
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        <BurnAdamW as SimpleOptimizer<B>>::to_device(state, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex, NdArray};
    use burn::module::{Module, Param};
    use burn::optim::adaptor::OptimizerAdaptor;
    use burn::optim::{GradientsParams, Optimizer};
    use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
    use burn::tensor::{Distribution, TensorData};

    fn config(weight_decay: f32) -> AdamWConfig {
        AdamWConfig::new()
            .with_beta_1(0.9)
            .with_beta_2(0.95)
            .with_epsilon(1e-8)
            .with_weight_decay(weight_decay)
    }

    fn ours(weight_decay: f32) -> AdamW {
        AdamW::new(0.9, 0.95, 1e-8, weight_decay, GradientScale::default())
    }

    fn values<B: Backend, const D: usize>(t: &Tensor<B, D>) -> Vec<f32> {
        t.to_data().convert::<f32>().to_vec::<f32>().expect("f32")
    }

    /// Twelve steps of both optimizers from the same parameter and gradients (a new gradient
    /// each step, some of them zero, tiny or large), on a tensor larger than one kernel task
    /// and one smaller: parameters and both moments equal bit for bit at every step. Every
    /// third step clips: ours takes the factor through its [`GradientScale`], Burn's the
    /// gradient multiplied by it (the clip's own pass before).
    fn same_as_burn<B: Backend>(weight_decay: f32) {
        let device = Default::default();
        let clip = GradientScale::default();
        let fused = AdamW::new(0.9, 0.95, 1e-8, weight_decay, clip.clone());
        let burns = config(weight_decay).build();
        for shape in [[3, 5], [181, 97]] {
            let start = Tensor::<B, 2>::random(shape, Distribution::Normal(0.0, 1.0), &device);
            let (mut a, mut b) = (start.clone(), start);
            let (mut sa, mut sb) = (None, None);
            for step in 0..12 {
                let scale = [1.0, 1e-6, 30.0, 0.0][step % 4];
                let grad = Tensor::<B, 2>::random(shape, Distribution::Normal(0.0, 1.0), &device)
                    .mul_scalar(scale);
                let lr = 3e-3 * (1.0 + step as f64) / 7.0;
                let factor = [1.0, 1.0, 0.3719_f64][step % 3];
                clip.set(factor);
                (a, sa) = fused.step(lr, a, grad.clone(), sa);
                let clipped = match factor {
                    1.0 => grad,
                    f => grad.mul_scalar(f),
                };
                (b, sb) = burns.step(lr, b, clipped, sb);
                let (ma, mb) = (sa.as_ref().unwrap(), sb.as_ref().unwrap());
                assert_eq!(values(&a), values(&b), "parameter, step {step}, {shape:?}");
                assert_eq!(ma.momentum.time, mb.momentum.time);
                assert_eq!(values(&ma.momentum.moment_1), values(&mb.momentum.moment_1));
                assert_eq!(values(&ma.momentum.moment_2), values(&mb.momentum.moment_2));
            }
        }
    }

    #[test]
    fn flex_steps_equal_burns_adamw_bit_for_bit() {
        same_as_burn::<Flex>(0.01);
        same_as_burn::<Flex>(0.0);
    }

    /// In f64 on NdArray: the f32 NdArray would share its device, and so the default float
    /// type of a bool tensor's `.float()`, with the f64 one of other tests in this process.
    #[test]
    fn other_backends_take_burns_step() {
        same_as_burn::<NdArray<f64>>(0.01);
    }

    /// The kernel itself against AdamW's defining formula, in f64, over three steps.
    #[test]
    fn flex_steps_follow_the_formula() {
        let (b1, b2, eps, wd) = (0.9f64, 0.95f64, 1e-8f64, 0.1f64);
        let fused = ours(wd as f32);
        let device = Default::default();
        let x0 = [0.5f32, -1.25, 2.0, 0.0, -0.003];
        let grads = [
            [0.1f32, -0.2, 0.0, 4.0, 1e-4],
            [-0.3, 0.2, 0.5, -4.0, 2e-4],
            [0.0; 5],
        ];
        let (mut x, mut state) = (
            Tensor::<Flex, 1>::from_data(TensorData::from(x0), &device),
            None,
        );
        let (mut xr, mut m, mut v) = (x0.map(f64::from), [0.0f64; 5], [0.0f64; 5]);
        for (t, g) in grads.iter().enumerate() {
            let lr = 0.01 * (t + 1) as f64;
            let g_tensor = Tensor::<Flex, 1>::from_data(TensorData::from(*g), &device);
            (x, state) = fused.step(lr, x, g_tensor, state);
            let t = (t + 1) as i32;
            for i in 0..5 {
                let gi = f64::from(g[i]);
                m[i] = b1 * m[i] + (1.0 - b1) * gi;
                v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
                let (mh, vh) = (m[i] / (1.0 - b1.powi(t)), v[i] / (1.0 - b2.powi(t)));
                xr[i] = xr[i] * (1.0 - lr * wd) - lr * mh / (vh.sqrt() + eps);
            }
            for (got, want) in values(&x).iter().zip(xr) {
                assert!((f64::from(*got) - want).abs() <= 1e-6 * want.abs().max(1.0));
            }
        }
    }

    #[derive(Module, Debug)]
    struct TwoWeights<B: Backend> {
        matrix: Param<Tensor<B, 2>>,
        vector: Param<Tensor<B, 1>>,
    }

    type Trained = Autodiff<Flex>;

    /// One step of `optim` on a squared loss of both weights.
    fn step<O: Optimizer<TwoWeights<Trained>, Trained>>(
        model: TwoWeights<Trained>,
        optim: &mut O,
        x: &Tensor<Trained, 2>,
    ) -> TwoWeights<Trained> {
        let y = x.clone().matmul(model.matrix.val()) + model.vector.val().unsqueeze();
        let loss = y.powi_scalar(2).sum();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        optim.step(1e-2, model, grads)
    }

    /// A checkpoint's optimizer state written by Burn's AdamW (runs before this optimizer) loads
    /// into laxc's, and laxc's into Burn's: the record is the same type of record. After two
    /// steps each and an exchange of states, a third step gives the same weights either way.
    #[test]
    fn optimizer_states_load_across_burns_adamw_and_this_one() {
        let device = Default::default();
        let normal = Distribution::Normal(0.0, 1.0);
        let model = TwoWeights::<Trained> {
            matrix: Param::from_tensor(Tensor::random([6, 4], normal, &device)),
            vector: Param::from_tensor(Tensor::random([4], normal, &device)),
        };
        let x = Tensor::<Trained, 2>::random([5, 6], normal, &device);
        let mut fused = OptimizerAdaptor::<AdamW, TwoWeights<Trained>, Trained>::from(ours(0.01));
        let mut burns = config(0.01).init::<Trained, TwoWeights<Trained>>();
        let (mut a, mut b) = (model.clone(), model);
        for _ in 0..2 {
            a = step(a, &mut fused, &x);
            b = step(b, &mut burns, &x);
        }
        let recorder = BinBytesRecorder::<FullPrecisionSettings>::new();
        let from_fused = recorder.record(fused.to_record(), ()).expect("recorded");
        let from_burns = recorder.record(burns.to_record(), ()).expect("recorded");
        let mut burns = burns.load_record(recorder.load(from_fused, &device).expect("loads"));
        let mut fused = fused.load_record(recorder.load(from_burns, &device).expect("loads"));
        let (a, b) = (step(a, &mut fused, &x), step(b, &mut burns, &x));
        assert_eq!(values(&a.matrix.val()), values(&b.matrix.val()));
        assert_eq!(values(&a.vector.val()), values(&b.vector.val()));
    }
}
