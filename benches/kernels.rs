//! The Flex kernels on a LaX pathway's latent, alone: nanoseconds per element of each and µs
//! per whole pathway in an autodiff step, on one thread and two, and GFLOP/s of its products,
//! for a profile-free comparison of two builds (`cargo bench --bench kernels`; the step-level
//! comparison is `bench/ab.py`). Shapes: tokens × width, the tiny bench specs' 1024 tokens at
//! a ViT's and a LLaMA's pathway rank (32, 64) and at the hidden width (256). And the machine's
//! GEMM peak: GFLOP/s of one large square product, the rate `bench/compare.py --peak` gives
//! each spec's GFLOP/s as a share of.

use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use burn::tensor::ops::FloatTensorOps;
use burn::tensor::TensorData;
use laxc::lower::{flex_gemm, flex_kernels};
use std::hint::black_box;
use std::time::Instant;

fn tensor(rows: usize, width: usize, seed: u32) -> FlexTensor {
    let values = (0..rows * width)
        .map(|i| {
            ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32 / 16_777_216.0
                - 0.5
        })
        .collect::<Vec<f32>>();
    FlexTensor::from_data(TensorData::new(values, [rows, width]))
}

/// A pool of `threads` threads for the kernels to run on.
fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a pool")
}

/// Median of `rounds` timings of `calls` calls of `f`, in ns per element.
fn time(elements: usize, mut f: impl FnMut()) -> f64 {
    let (rounds, calls) = (15, 40);
    let mut per_element: Vec<f64> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..calls {
                f();
            }
            start.elapsed().as_nanos() as f64 / (calls * elements) as f64
        })
        .collect();
    per_element.sort_by(f64::total_cmp);
    per_element[rounds / 2]
}

fn main() {
    // laxc's allocator settings: without them every output of these sizes is a fresh `mmap`,
    // and the page faults of its first touch outweigh the kernel.
    laxc::train::allocator::keep_freed_memory();
    // The kernels run on a thread of the pool, as in training (`session::dispatch`): called
    // from outside it, each call would pay a hand-off to the pool's thread and back, which
    // outweighed the kernels themselves at these sizes.
    for threads in [1, 2] {
        let pool = pool(threads);
        println!("{threads} thread(s):");
        pool.install(|| {
            laxc::train::pool::run_awake(|| {
                norms();
                tensor_gates();
                dropouts();
                pathways(threads);
            })
        });
    }
    products();
    peak();
}

/// GFLOP/s of a large square product (`flex_gemm`, gemm's kernels, as training runs them) on
/// one thread and on two: the most this machine's cores do in f32, which a training step's
/// GFLOP/s is a share of. The median of nine calls after one untimed.
fn peak() {
    let n = 1536;
    let (a, b) = (tensor(n, n, 9), tensor(n, n, 10));
    let flops = 2.0 * (n * n * n) as f64;
    for threads in [1, 2] {
        let pool = pool(threads);
        let mut seconds: Vec<f64> = pool.install(|| {
            black_box(flex_gemm::matmul(&a, &b, 1.0));
            (0..9)
                .map(|_| {
                    let start = Instant::now();
                    black_box(flex_gemm::matmul(&a, &b, 1.0));
                    start.elapsed().as_secs_f64()
                })
                .collect()
        });
        seconds.sort_by(f64::total_cmp);
        let gflops = flops / seconds[4] / 1e9;
        println!("peak: {n} x {n} by {n} x {n}, {threads} thread(s): {gflops:.1} GFLOP/s");
    }
}

/// The norm kernels, and Flex's own add for scale, at pathways' widths and the hidden one.
fn norms() {
    for width in [32, 64, 256] {
        let rows = 1024;
        let (x, a, g) = (
            tensor(rows, width, 1),
            tensor(rows, width, 2),
            tensor(rows, width, 3),
        );
        let (gamma, beta) = (tensor(1, width, 4), tensor(1, width, 5));
        let n = rows * width;
        // The add-norm writes over its first input: the first call copies the buffer `x`
        // shares, the others write over that copy (the norm of the last norm plus `a`).
        let mut y = x.clone();
        let add_norm = time(n, || {
            black_box(flex_kernels::add_norm(
                &mut y,
                &a,
                &gamma,
                Some(&beta),
                1e-5,
            ));
        });
        let add_rms = time(n, || {
            black_box(flex_kernels::add_norm(&mut y, &a, &gamma, None, 1e-5));
        });
        let rms = time(n, || {
            black_box(flex_kernels::rms_norm(&x, &gamma, 1e-5));
        });
        // The backward pass writes dx over g: g is copied back in before each call, and the
        // copy's own time taken off.
        let (mut dx, gs) = (g.clone(), g.as_slice::<f32>().expect("f32").to_vec());
        let restore = move |dx: &mut FlexTensor| dx.storage_mut::<f32>().copy_from_slice(&gs);
        let copy = time(n, || restore(&mut dx));
        let backward = time(n, || {
            restore(&mut dx);
            black_box(flex_kernels::norm_backward(&x, &gamma, &mut dx, 1e-5, true));
        }) - copy;
        let flex_add = time(n, || {
            black_box(Flex::float_add(x.clone(), a.clone()));
        });
        println!("{rows} x {width}: Flex's add {flex_add:.3} ns/element");
        println!(
            "{rows} x {width}: add_norm {add_norm:.3} ns/element, add_rms {add_rms:.3}, rms_norm {rms:.3}, norm_backward {backward:.3}"
        );
    }
}

/// GFLOP/s of the products of a LaX gate (tokens × rank by rank × rank) and, for scale, of a
/// factor of the hidden width, forward and both gradients (read through transposed views, as
/// the backward pass reads them), on one thread and on two, with the pool held awake as in
/// training (a sleeping second thread would show one thread's rate). (256 × 128) and
/// (256 × 192) are q, k and v's or gate and up's A factors as one product (horizontal fusion,
/// BENCHMARKS.md); (128 × 32) and (128 × 96) the same for a ViT.
fn products() {
    let rows = 1024;
    for (k, n) in [
        (64, 64),
        (256, 64),
        (256, 128),
        (256, 192),
        (64, 256),
        (128, 32),
        (128, 96),
    ] {
        let (x, w, g) = (tensor(rows, k, 6), tensor(k, n, 7), tensor(rows, n, 8));
        let flops = 2 * rows * k * n;
        for threads in [1, 2] {
            let pool = pool(threads);
            let gflops = |f: &(dyn Fn() + Sync)| {
                pool.install(|| laxc::train::pool::run_awake(|| 1.0 / time(flops, f)))
            };
            let forward = gflops(&|| {
                black_box(flex_gemm::matmul(&x, &w, 1.0));
            });
            let input = gflops(&|| {
                black_box(flex_gemm::matmul(
                    &g,
                    &Flex::float_transpose(w.clone()),
                    1.0,
                ));
            });
            let weight = gflops(&|| {
                black_box(flex_gemm::matmul(
                    &Flex::float_transpose(x.clone()),
                    &g,
                    1.0,
                ));
            });
            println!(
                "{rows} x {k} by {k} x {n}, {threads} thread(s): forward {forward:.1} GFLOP/s, input gradient {input:.1}, weight gradient {weight:.1}"
            );
        }
    }
}

/// Dropout on a ViT-B block's activations at batch 4 (788 rows of 768 and of 3,072), in ns an
/// element, with Flex's own add of the same tensor for scale.
fn dropouts() {
    for width in [768, 3072] {
        let x = tensor(788, width, 12);
        let n = 788 * width;
        let dropout = time(n, || {
            black_box(flex_kernels::dropout(&x, 0.9, 5));
        });
        let flex_add = time(n, || {
            black_box(Flex::float_add(x.clone(), x.clone()));
        });
        println!("788 x {width}: dropout {dropout:.3} ns/element, Flex's add {flex_add:.3}");
    }
}

/// A tensor gate on the tiny LLaMA's and ViT's latents (rank 64: 8 × 8 cores; rank 32:
/// 4 × 8): its factored rows (`flex_kernels::tensor_gate`, forward and input gradient) against
/// the product by the dense `kron(G1, G0)`, in µs a call.
fn tensor_gates() {
    for (rows, [s0, s1]) in [(1024, [8, 8]), (1088, [4, 8])] {
        let r = s0 * s1;
        let (h, g1, g0) = (tensor(rows, r, 9), tensor(s0, s0, 10), tensor(s1, s1, 11));
        let k = flex_kernels::kron(&g1, &g0).expect("kron");
        let micros = |f: &dyn Fn()| time(1, f) / 1e3;
        let dense = micros(&|| {
            black_box(flex_gemm::matmul(&h, &k, 1.0));
        });
        let dense_input = micros(&|| {
            black_box(flex_gemm::matmul(
                &h,
                &Flex::float_transpose(k.clone()),
                1.0,
            ));
        });
        let factored = micros(&|| {
            black_box(flex_kernels::tensor_gate(&h, &g1, &g0));
        });
        let factored_input = micros(&|| {
            black_box(flex_kernels::tensor_gate_input_gradient(&h, &g1, &g0));
        });
        println!(
            "tensor gate {rows} x {r} ({s0} x {s1} cores): dense product {dense:.1} µs (input gradient {dense_input:.1}), factored rows {factored:.1} µs (input gradient {factored_input:.1})"
        );
    }
}

/// A LaX pathway's whole cost in an autodiff step, per pathway: `Norm(z + g(h)) · B` forward
/// and backward against `z · B`, in µs, for each kind of gate at the tiny LLaMA's
/// latent (1024 × 64) and the tiny ViT's (1088 × 32). What the step-level A/B
/// cannot resolve (a pathway is 1–3 % of a step) this times alone: every node, kernel,
/// allocation and gradient hand-off a pathway adds.
fn pathways(threads: usize) {
    use burn::backend::Autodiff;
    use burn::tensor::Tensor;
    use laxc::lower::fused;
    type A = Autodiff<Flex>;
    for (rows, width, out) in [(1024, 64, 256), (1088, 32, 128)] {
        let leaf = |t: FlexTensor| {
            Tensor::<A, 2>::from_primitive(burn::tensor::TensorPrimitive::Float(
                <A as burn::tensor::backend::AutodiffBackend>::from_inner(t),
            ))
            .require_grad()
        };
        let vector = |n: usize, seed: u32| {
            leaf(tensor(1, n, seed))
                .reshape([n])
                .detach()
                .require_grad()
        };
        let (z, h, up) = (
            leaf(tensor(rows, width, 1)),
            leaf(tensor(rows, width, 2)),
            leaf(tensor(width, out, 3)),
        );
        let (gamma, beta, alpha) = (vector(width, 4), vector(width, 5), vector(1, 6));
        // The tensor gate's cores (the IR's fold of the width) and a dense gate.
        let [s0, s1] = laxc::ir::fold(width);
        let (g1, g0) = (leaf(tensor(s0, s0, 7)), leaf(tensor(s1, s1, 8)));
        let (dense, bias) = (leaf(tensor(width, width, 9)), vector(width, 10));
        let step = |latent: &dyn Fn() -> Tensor<A, 2>| {
            let y = fused::matmul(latent(), up.clone(), 1.0);
            black_box(y.sum().backward());
        };
        let us = |f: &dyn Fn()| time(1, f) / 1000.0;
        let plain = us(&|| step(&|| z.clone()));
        let identity = us(&|| {
            step(&|| fused::add_layer_norm(z.clone(), h.clone(), gamma.clone(), beta.clone(), 1e-6))
        });
        // As training runs it: one node that scales `h` as it adds (attempt 103) and takes the
        // gate's gradients in the norm's backward kernel (attempt 114).
        let linear = us(&|| {
            step(&|| {
                let gated = (h.clone(), alpha.clone());
                fused::add_scaled_layer_norm(z.clone(), gated, gamma.clone(), beta.clone(), 1e-6)
            })
        });
        let tensor_gate = us(&|| {
            step(&|| {
                let gated = fused::tensor_gate(h.clone(), g1.clone(), g0.clone());
                fused::add_layer_norm(z.clone(), gated, gamma.clone(), beta.clone(), 1e-6)
            })
        });
        let dense_gate = us(&|| {
            step(&|| {
                let gated = fused::matmul(h.clone(), dense.clone(), 1.0) + bias.clone().unsqueeze();
                fused::add_layer_norm(z.clone(), gated, gamma.clone(), beta.clone(), 1e-6)
            })
        });
        println!(
            "{rows} x {width} pathway into {out}, {threads} thread(s): without {plain:.1} µs, identity +{:.1} µs, linear +{:.1} µs, tensor +{:.1} µs, dense +{:.1} µs",
            identity - plain,
            linear - plain,
            tensor_gate - plain,
            dense_gate - plain
        );
    }
}
