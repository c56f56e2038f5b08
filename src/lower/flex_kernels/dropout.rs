//! Dropout: a mask drawn and applied in one parallel pass.
//!
//! Why: Burn 0.21's dropout draws its mask on Flex one element at a time from one generator
//! behind a lock (building a Bernoulli sampler for each element), about 29 ns an element on
//! one thread: 17 ms a call on a ViT-B's 4 × 197 × 768 activations, half of that spec's step
//! (BENCHMARKS.md, attempt 51). Here each task of [`CHUNK`] elements draws from a generator of
//! its own (xoshiro256++, seeded from the call's seed and the task's index by SplitMix64), so
//! the mask depends on the seed alone, never on how many threads ran the tasks.

use super::{f32s, like, output, written, CHUNK};
use burn::backend::flex::FlexTensor;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// `x` with each element kept with probability `keep` and scaled by `1 / keep`, else 0, and the
/// mask as the factor applied to each element (`1 / keep` or 0), for the backward pass. Each
/// output element is `x · factor`, as Burn's `x · mask · (1 / keep)` computes a kept one (a
/// dropped NaN stays NaN, as there). The mask is a function of `seed` alone: element `i` of
/// task `i / CHUNK` takes the next 32 bits of that task's generator, kept when below
/// `keep · 2³²`. `None` unless contiguous f32, or `keep` is not in (0, 1].
pub fn dropout(x: &FlexTensor, keep: f64, seed: u64) -> Option<[FlexTensor; 2]> {
    let xs = f32s(x)?;
    if !(keep > 0.0 && keep <= 1.0) {
        return None;
    }
    let threshold = (keep * 4_294_967_296.0) as u64;
    let scale = (1.0 / keep) as f32;
    let (mut y, mut mask) = (output(xs.len()), output(xs.len()));
    y.par_chunks_mut(CHUNK)
        .zip(mask.par_chunks_mut(CHUNK))
        .zip(xs.par_chunks(CHUNK))
        .enumerate()
        .for_each(|(task, ((y, mask), x))| {
            let mut bits = Xoshiro::for_task(seed, task as u64);
            let draws = Draws {
                threshold,
                scale,
                bits: &mut bits,
            };
            draws.fill(x, y, mask);
        });
    // SAFETY: `fill` writes every element of its task's `y` and `mask`; the tasks cover both.
    let (y, mask) = unsafe { (written(y), written(mask)) };
    Some([like(x, y), like(x, mask)])
}

/// One task's draws.
struct Draws<'a> {
    threshold: u64,
    scale: f32,
    bits: &'a mut Xoshiro,
}

impl Draws<'_> {
    /// Two elements from each 64-bit draw: the low half for the first, the high for the second.
    fn fill(self, x: &[f32], y: &mut [MaybeUninit<f32>], mask: &mut [MaybeUninit<f32>]) {
        let factor = |half: u64| {
            if half < self.threshold {
                self.scale
            } else {
                0.0
            }
        };
        let pairs = x.chunks(2).zip(y.chunks_mut(2)).zip(mask.chunks_mut(2));
        for ((x, y), mask) in pairs {
            let draw = self.bits.next();
            let halves = [draw & 0xFFFF_FFFF, draw >> 32];
            for (((&x, y), mask), half) in x.iter().zip(y).zip(mask).zip(halves) {
                let f = factor(half);
                mask.write(f);
                y.write(x * f);
            }
        }
    }
}

/// xoshiro256++ (Blackman and Vigna): a small fast generator, plenty for a dropout mask.
struct Xoshiro([u64; 4]);

impl Xoshiro {
    /// The generator of task `task` of a call seeded `seed`: its state from SplitMix64, started
    /// at a point that depends on both.
    fn for_task(seed: u64, task: u64) -> Xoshiro {
        let mut at = seed ^ task.wrapping_mul(0xD1B5_4A32_D192_ED03);
        Xoshiro([(); 4].map(|()| split_mix(&mut at)))
    }

    fn next(&mut self) -> u64 {
        let s = &mut self.0;
        let out = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        out
    }
}

/// SplitMix64's next output (Steele, Lea and Flood), advancing `state`.
fn split_mix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn ramp(n: usize) -> FlexTensor {
        let values = (0..n).map(|i| i as f32 * 0.25 - 7.0).collect::<Vec<_>>();
        FlexTensor::from_data(TensorData::new(values, [n / 100, 100]))
    }

    fn on_threads(threads: usize, f: impl FnOnce() -> [FlexTensor; 2] + Send) -> [Vec<f32>; 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a pool");
        pool.install(f).map(|t| f32s(&t).expect("f32").to_vec())
    }

    /// Every element is `x / keep` or 0 as its mask says, about `keep` of them kept (within
    /// five standard deviations over 200,000); the same seed draws the same mask on one
    /// thread and on two; another seed another mask.
    #[test]
    fn keeps_the_share_asked_the_same_for_a_seed_on_any_number_of_threads() {
        let n = 200_000;
        let x = ramp(n);
        for keep in [0.9, 0.5, 0.1] {
            let [y, mask] = on_threads(1, || dropout(&x, keep, 17).expect("f32"));
            let scale = (1.0 / keep) as f32;
            let kept = mask.iter().filter(|&&m| m == scale).count();
            assert_eq!(mask.iter().filter(|&&m| m == 0.0).count(), n - kept);
            let sd = (n as f64 * keep * (1.0 - keep)).sqrt();
            assert!(
                (kept as f64 - n as f64 * keep).abs() < 5.0 * sd,
                "{kept} of {n} at {keep}"
            );
            let xs = f32s(&x).unwrap();
            for ((&y, &m), &x) in y.iter().zip(&mask).zip(xs) {
                assert_eq!(y.to_bits(), (x * m).to_bits());
            }
            assert_eq!(
                on_threads(2, || dropout(&x, keep, 17).unwrap()),
                [y, mask.clone()]
            );
            let [_, other] = on_threads(2, || dropout(&x, keep, 18).unwrap());
            assert_ne!(other, mask);
        }
        assert!(dropout(&x, 0.0, 1).is_none());
    }
}
