//! Dropout: a mask drawn and applied in one parallel pass.
//!
//! Why: Burn 0.21's dropout draws its mask on Flex one element at a time from one generator
//! behind a lock (building a Bernoulli sampler for each element), about 29 ns an element on
//! one thread: 17 ms a call on a ViT-B's 4 × 197 × 768 activations, half of that spec's step
//! (BENCHMARKS.md, attempt 51). Here each task of [`CHUNK`] elements draws from generators of
//! its own (sixteen xoshiro256++ side by side, seeded from the call's seed and the task's index
//! by SplitMix64), so the mask depends on the seed alone, never on how many threads ran the
//! tasks.

use super::{f32s, like, output, vectorized, written, Kernel, CHUNK};
use burn::backend::flex::FlexTensor;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// `x` with each element kept with probability `keep` and scaled by `1 / keep`, else 0, and the
/// mask as the factor applied to each element (`1 / keep` or 0), for the backward pass. Each
/// output element is `x · factor`, as Burn's `x · mask · (1 / keep)` computes a kept one (a
/// dropped NaN stays NaN, as there). The mask is a function of `seed` alone: task `t` (elements
/// `t · CHUNK` on) runs [`LANES`] generators side by side, and each round of them decides the
/// next `2 · LANES` elements, the low 32 bits of lane `l` element `l` and the high bits element
/// `LANES + l`, kept when below `keep · 2³²`. `None` unless contiguous f32, or `keep` is not in
/// (0, 1].
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
            let bits = Lanes::for_task(seed, task as u64);
            vectorized(Draws {
                threshold,
                scale,
                bits,
                x,
                y,
                mask,
            })
        });
    // SAFETY: `Draws` writes every element of its task's `y` and `mask`; the tasks cover both.
    let (y, mask) = unsafe { (written(y), written(mask)) };
    Some([like(x, y), like(x, mask)])
}

/// Generators run side by side in a task: sixteen 64-bit lanes, two AVX-512 registers a word of
/// state, so that a round of all of them vectorizes.
const LANES: usize = 16;

/// One task's draws and elements.
struct Draws<'a> {
    threshold: u64,
    scale: f32,
    bits: Lanes,
    x: &'a [f32],
    y: &'a mut [MaybeUninit<f32>],
    mask: &'a mut [MaybeUninit<f32>],
}

impl Kernel for Draws<'_> {
    type Output = ();

    #[inline(always)]
    fn run(mut self) {
        let rounds = self.x.chunks(2 * LANES).zip(self.y.chunks_mut(2 * LANES));
        for ((x, y), mask) in rounds.zip(self.mask.chunks_mut(2 * LANES)) {
            let draws = self.bits.next();
            let mut factors = [0.0f32; 2 * LANES];
            for l in 0..LANES {
                let (low, high) = (draws[l] & 0xFFFF_FFFF, draws[l] >> 32);
                factors[l] = if low < self.threshold {
                    self.scale
                } else {
                    0.0
                };
                factors[LANES + l] = if high < self.threshold {
                    self.scale
                } else {
                    0.0
                };
            }
            for (((&x, y), mask), &f) in x.iter().zip(y).zip(mask).zip(&factors) {
                mask.write(f);
                y.write(x * f);
            }
        }
    }
}

/// [`LANES`] xoshiro256++ generators (Blackman and Vigna), a round of all of them at once:
/// small and fast, plenty for a dropout mask.
struct Lanes([[u64; LANES]; 4]);

impl Lanes {
    /// The generators of task `task` of a call seeded `seed`: their states from one SplitMix64
    /// sequence, started at a point that depends on both.
    fn for_task(seed: u64, task: u64) -> Lanes {
        let mut at = seed ^ task.wrapping_mul(0xD1B5_4A32_D192_ED03);
        let mut state = [[0u64; LANES]; 4];
        for lane in 0..LANES {
            for word in &mut state {
                word[lane] = split_mix(&mut at);
            }
        }
        Lanes(state)
    }

    /// The next output of every lane.
    #[inline(always)]
    fn next(&mut self) -> [u64; LANES] {
        let [s0, s1, s2, s3] = &mut self.0;
        let mut out = [0u64; LANES];
        for l in 0..LANES {
            out[l] = s0[l]
                .wrapping_add(s3[l])
                .rotate_left(23)
                .wrapping_add(s0[l]);
            let t = s1[l] << 17;
            s2[l] ^= s0[l];
            s3[l] ^= s1[l];
            s1[l] ^= s2[l];
            s0[l] ^= s3[l];
            s2[l] ^= t;
            s3[l] = s3[l].rotate_left(45);
        }
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
