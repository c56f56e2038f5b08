//! Initial values, drawn on the host from a seeded generator so that the same seed gives the
//! same model on every backend. The distributions follow docs/conventions.md §Initialization
//! (the authors' code).

use burn::module::Param;
use burn::tensor::{backend::Backend, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal, Uniform};

pub struct Init {
    rng: StdRng,
}

impl Init {
    pub fn new(seed: u64) -> Self {
        Init {
            rng: StdRng::seed_from_u64(seed),
        }
    }

    fn values(&mut self, n: usize, d: impl Distribution<f64>) -> Vec<f32> {
        (0..n).map(|_| d.sample(&mut self.rng) as f32).collect()
    }

    pub fn normal<B: Backend, const D: usize>(
        &mut self,
        shape: [usize; D],
        std: f64,
        device: &B::Device,
    ) -> Param<Tensor<B, D>> {
        let n = shape.iter().product();
        let d = Normal::new(0.0, std).expect("std is finite and >= 0");
        param(self.values(n, d), shape, device)
    }

    /// Normal(0, std) truncated to ±2 in absolute value, as timm's `trunc_normal_(std = ...)`
    /// with its default bounds a = −2, b = 2 (not ±2·std): for the usual std 0.02 it never
    /// truncates.
    pub fn trunc_normal<B: Backend, const D: usize>(
        &mut self,
        shape: [usize; D],
        std: f64,
        device: &B::Device,
    ) -> Param<Tensor<B, D>> {
        const BOUND: f64 = 2.0;
        let n: usize = shape.iter().product();
        let d = Normal::new(0.0, std).expect("std is finite and >= 0");
        let mut v = Vec::with_capacity(n);
        while v.len() < n {
            let x: f64 = d.sample(&mut self.rng);
            if x.abs() <= BOUND {
                v.push(x as f32);
            }
        }
        param(v, shape, device)
    }

    pub fn uniform<B: Backend, const D: usize>(
        &mut self,
        shape: [usize; D],
        bound: f64,
        device: &B::Device,
    ) -> Param<Tensor<B, D>> {
        let n = shape.iter().product();
        let d = Uniform::new_inclusive(-bound, bound).expect("bound is finite");
        param(self.values(n, d), shape, device)
    }

    pub fn constant<B: Backend, const D: usize>(
        &mut self,
        shape: [usize; D],
        value: f32,
        device: &B::Device,
    ) -> Param<Tensor<B, D>> {
        let n = shape.iter().product();
        param(vec![value; n], shape, device)
    }
}

pub fn param<B: Backend, const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    device: &B::Device,
) -> Param<Tensor<B, D>> {
    Param::from_tensor(Tensor::from_data(TensorData::new(values, shape), device))
}
