//! The lowered Burn model against the report and against each layer's defining formula, in f64.
#![cfg(feature = "train")]

mod common;

use burn::backend::{Autodiff, NdArray};
use burn::module::{Module, Param};
use burn::tensor::{Tensor, TensorData};
use laxc::ir::Gate;
use laxc::lower::layers::{
    DenseLayer, GateModule, LowRankLayer, Norm, Pathway, SiteLayer, TtLayer,
};
use laxc::lower::lower;
use laxc::spec::NormKind;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

type B = NdArray<f64>;
type AD = Autodiff<NdArray<f64>>;

fn dev() -> burn::tensor::Device<B> {
    Default::default()
}

fn random(rng: &mut StdRng, n: usize) -> Vec<f64> {
    (0..n).map(|_| rng.random::<f64>() * 2.0 - 1.0).collect()
}

fn tensor<const D: usize>(v: Vec<f64>, shape: [usize; D]) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(v, shape), &dev())
}

fn to_vec<const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    t.into_data().to_vec::<f64>().unwrap()
}

fn assert_close(a: &[f64], b: &[f64], tol: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * (1.0 + y.abs()),
            "{what}: element {i}: {x} vs {y}"
        );
    }
}

/// Host matrix product of row-major (n×k)(k×m).
fn matmul(a: &[f64], b: &[f64], n: usize, k: usize, m: usize) -> Vec<f64> {
    let mut out = vec![0.0; n * m];
    for i in 0..n {
        for p in 0..k {
            for j in 0..m {
                out[i * m + j] += a[i * k + p] * b[p * m + j];
            }
        }
    }
    out
}

#[test]
fn lowered_parameter_count_equals_the_report_for_every_spec() {
    let mut checked = 0;
    for dir in ["specs", "specs/paper", "specs/bench", "specs/claims"] {
        for path in common::lax_files(dir) {
            let src = common::source(&path);
            let c = laxc::compile(&src).expect("specs compile");
            let report = c.report();
            if report.params.total > 200_000_000 {
                continue;
            }
            let model = lower::<B>(&c.ir, 0, &dev());
            assert_eq!(
                model.num_params() as u128,
                report.params.total,
                "{}",
                src.name
            );
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} specs checked");
}

#[test]
fn svd_with_b_times_a_equal_w_is_the_dense_layer() {
    let mut rng = StdRng::seed_from_u64(1);
    let (n, inp, r, out) = (5, 12, 4, 9);
    let a = random(&mut rng, inp * r);
    let b = random(&mut rng, r * out);
    let bias = random(&mut rng, out);
    let x = random(&mut rng, n * inp);
    let w = matmul(&a, &b, inp, r, out);
    let svd = SiteLayer::<B>::LowRank(LowRankLayer {
        a: Param::from_tensor(tensor(a, [inp, r])),
        b: Param::from_tensor(tensor(b, [r, out])),
        bias: Some(Param::from_tensor(tensor(bias.clone(), [out]))),
        act: None,
    });
    let dense = SiteLayer::<B>::Dense(DenseLayer {
        weight: Param::from_tensor(tensor(w, [inp, out])),
        bias: Some(Param::from_tensor(tensor(bias, [out]))),
    });
    let (y_svd, latent) = svd.forward(tensor(x.clone(), [n, inp]), None);
    let (y_dense, none) = dense.forward(tensor(x, [n, inp]), None);
    assert!(latent.is_some() && none.is_none());
    assert_close(&to_vec(y_svd), &to_vec(y_dense), 1e-12, "svd vs dense");
}

#[test]
fn cola_applies_the_activation_between_the_factors() {
    let mut rng = StdRng::seed_from_u64(2);
    let (n, inp, r, out) = (3, 6, 3, 5);
    let a = random(&mut rng, inp * r);
    let b = random(&mut rng, r * out);
    let x = random(&mut rng, n * inp);
    let cola = SiteLayer::<B>::LowRank(LowRankLayer {
        a: Param::from_tensor(tensor(a.clone(), [inp, r])),
        b: Param::from_tensor(tensor(b.clone(), [r, out])),
        bias: None,
        act: Some(laxc::spec::Activation::Silu),
    });
    let z: Vec<f64> = matmul(&x, &a, n, inp, r)
        .into_iter()
        .map(|v| v / (1.0 + (-v).exp()))
        .collect();
    let expected = matmul(&z, &b, n, r, out);
    let (y, latent) = cola.forward(tensor(x, [n, inp]), None);
    assert_close(&to_vec(y), &expected, 1e-7, "cola");
    assert_close(
        &to_vec(latent.unwrap()),
        &z,
        1e-7,
        "the latent is post-activation",
    );
}

/// W[(i0,i1),(j2,j3)] = Σ C0[i0,a] C1[a,i1,b] C2[b,j2,c] C3[c,j3]
#[test]
fn tt_layer_equals_the_matrix_its_cores_reconstruct() {
    for intra in [false, true] {
        let mut rng = StdRng::seed_from_u64(3);
        let (m0, m1, m2, m3) = (3, 4, 4, 2);
        let (r1, rr, r3) = (2, 5, 2);
        let (inp, out, n) = (m0 * m1, m2 * m3, 4);
        let c0 = random(&mut rng, m0 * r1);
        let c1 = random(&mut rng, r1 * m1 * rr);
        let c2 = random(&mut rng, rr * m2 * r3);
        let c3 = random(&mut rng, r3 * m3);
        let x = random(&mut rng, n * inp);
        let mut w = vec![0.0; inp * out];
        for i0 in 0..m0 {
            for i1 in 0..m1 {
                for j2 in 0..m2 {
                    for j3 in 0..m3 {
                        let mut s = 0.0;
                        for a in 0..r1 {
                            for b in 0..rr {
                                for c in 0..r3 {
                                    s += c0[i0 * r1 + a]
                                        * c1[(a * m1 + i1) * rr + b]
                                        * c2[(b * m2 + j2) * r3 + c]
                                        * c3[c * m3 + j3];
                                }
                            }
                        }
                        w[(i0 * m1 + i1) * out + j2 * m3 + j3] = s;
                    }
                }
            }
        }
        let mut expected = matmul(&x, &w, n, inp, out);
        if intra {
            // + t1 routed through C3: y += Σ_c t1[n, j2, c] C3[c, j3], t1 = x contracted with C0.
            for s in 0..n {
                for j2 in 0..m2 {
                    for j3 in 0..m3 {
                        let mut acc = 0.0;
                        for c in 0..r3 {
                            let mut t1 = 0.0;
                            for i0 in 0..m0 {
                                t1 += x[s * inp + i0 * m1 + j2] * c0[i0 * r1 + c];
                            }
                            acc += t1 * c3[c * m3 + j3];
                        }
                        expected[s * out + j2 * m3 + j3] += acc;
                    }
                }
            }
        }
        let tt = SiteLayer::<B>::Tt(TtLayer {
            c0: Param::from_tensor(tensor(c0, [m0, r1])),
            c1: Param::from_tensor(tensor(c1, [r1, m1, rr])),
            c2: Param::from_tensor(tensor(c2, [rr, m2, r3])),
            c3: Param::from_tensor(tensor(c3, [r3, m3])),
            bias: None,
            modes: [m0, m1, m2, m3],
            ranks: [r1, rr, r3],
            intra,
        });
        let (y, latent) = tt.forward(tensor(x, [n, inp]), None);
        assert_eq!(latent.unwrap().dims(), [n, rr]);
        assert_close(&to_vec(y), &expected, 1e-10, &format!("tt (intra {intra})"));
    }
}

fn kron(a: &[f64], ar: usize, ac: usize, b: &[f64], br: usize, bc: usize) -> Vec<f64> {
    let (rows, cols) = (ar * br, ac * bc);
    let mut out = vec![0.0; rows * cols];
    for i in 0..ar {
        for j in 0..ac {
            for k in 0..br {
                for l in 0..bc {
                    out[(i * br + k) * cols + j * bc + l] = a[i * ac + j] * b[k * bc + l];
                }
            }
        }
    }
    out
}

#[test]
fn tensor_gate_is_h_times_kron_g1_g0() {
    let mut rng = StdRng::seed_from_u64(4);
    // Source folded 2×3, target 4×5: G0 is 3×5, G1 is 2×4.
    let (s0, s1, t0, t1, n) = (2, 3, 4, 5, 3);
    let g0 = random(&mut rng, s1 * t1);
    let g1 = random(&mut rng, s0 * t0);
    let h = random(&mut rng, n * s0 * s1);
    let k = kron(&g1, s0, t0, &g0, s1, t1);
    let expected = matmul(&h, &k, n, s0 * s1, t0 * t1);
    let mut gate = GateModule::<B>::identity();
    gate.g0 = Some(Param::from_tensor(tensor(g0, [s1, t1])));
    gate.g1 = Some(Param::from_tensor(tensor(g1, [s0, t0])));
    gate.folds = [s0, s1, t0, t1];
    let y = gate.forward(tensor(h, [n, s0 * s1]));
    assert_close(&to_vec(y), &expected, 1e-12, "tensor gate");
}

#[test]
fn linear_and_dense_gates_follow_their_formulas() {
    let mut rng = StdRng::seed_from_u64(5);
    let (n, r, q) = (3, 4, 6);
    let h = random(&mut rng, n * r);
    let mut lin = GateModule::<B>::identity();
    lin.alpha = Some(Param::from_tensor(tensor(vec![0.5], [1])));
    let y = to_vec(lin.forward(tensor(h.clone(), [n, r])));
    assert_close(
        &y,
        &h.iter().map(|v| 0.5 * v).collect::<Vec<_>>(),
        1e-15,
        "linear",
    );
    let w = random(&mut rng, r * q);
    let b = random(&mut rng, q);
    let mut dense = GateModule::<B>::identity();
    dense.weight = Some(Param::from_tensor(tensor(w.clone(), [r, q])));
    dense.bias = Some(Param::from_tensor(tensor(b.clone(), [q])));
    let mut expected = matmul(&h, &w, n, r, q);
    for i in 0..n {
        for j in 0..q {
            expected[i * q + j] += b[j];
        }
    }
    assert_close(
        &to_vec(dense.forward(tensor(h, [n, r]))),
        &expected,
        1e-12,
        "dense",
    );
    let id = GateModule::<B>::new(
        &Gate::Identity,
        r,
        r,
        &mut laxc::lower::init::Init::new(0),
        &dev(),
    );
    assert_eq!(id.num_params(), 0);
}

#[test]
fn lax_with_no_norm_identity_gate_and_zero_source_is_the_plain_layer() {
    let mut rng = StdRng::seed_from_u64(6);
    let (n, inp, r, out) = (4, 8, 3, 7);
    let layer = SiteLayer::<B>::LowRank(LowRankLayer {
        a: Param::from_tensor(tensor(random(&mut rng, inp * r), [inp, r])),
        b: Param::from_tensor(tensor(random(&mut rng, r * out), [r, out])),
        bias: None,
        act: None,
    });
    let x = random(&mut rng, n * inp);
    let pathway = Pathway::<B> {
        gate: GateModule::identity(),
        norm: Norm::new(NormKind::None, r, &dev()),
    };
    let zero = Tensor::<B, 2>::zeros([n, r], &dev());
    let (plain, _) = layer.forward(tensor(x.clone(), [n, inp]), None);
    let (crossed, _) = layer.forward(tensor(x.clone(), [n, inp]), Some((zero, &pathway)));
    assert_close(&to_vec(crossed), &to_vec(plain), 0.0, "zero source");
    // And a non-zero source changes the output: the pathway is really wired.
    let one = Tensor::<B, 2>::ones([n, r], &dev());
    let (moved, _) = layer.forward(tensor(x, [n, inp]), Some((one, &pathway)));
    let moved = to_vec(moved);
    assert!(moved
        .iter()
        .zip(to_vec(plain_again(&layer, n, inp)))
        .any(|(a, b)| (a - b).abs() > 1e-9));
}

fn plain_again(layer: &SiteLayer<B>, n: usize, inp: usize) -> Tensor<B, 2> {
    let mut rng = StdRng::seed_from_u64(6);
    let _ = random(&mut rng, inp * 3 + 3 * 7);
    layer
        .forward(tensor(random(&mut rng, n * inp), [n, inp]), None)
        .0
}

const TINY_LAX: &str = "
model t: llama { vocab = 11, hidden = 8, ffn = 12, heads = 2, layers = 3, seq = 5 }
factorize * as svd(rank = 4)
lax inter attn.q, mlp.down { gate = linear, norm = layernorm }
";

fn tiny_model(seed: u64) -> (laxc::Compiled, laxc::lower::LaxModel<AD>) {
    let c = laxc::compile(&laxc::source::Source::new("tiny.lax", TINY_LAX)).unwrap();
    let m = lower::<AD>(&c.ir, seed, &Default::default());
    (c, m)
}

fn loss(m: &laxc::lower::LaxModel<AD>) -> Tensor<AD, 1> {
    let tokens = Tensor::<AD, 2, burn::tensor::Int>::from_data(
        TensorData::new(vec![1i64, 4, 7, 2, 9, 3, 3, 0, 10, 5], [2, 5]),
        &Default::default(),
    );
    let logits = m.forward_tokens(tokens);
    (logits.clone() * logits).mean()
        + m.forward_tokens(Tensor::from_data(
            TensorData::new(vec![0i64, 1, 2, 3, 4], [1, 5]),
            &Default::default(),
        ))
        .sum()
        .mul_scalar(0.01)
}

fn scalar(t: Tensor<AD, 1>) -> f64 {
    t.into_data().to_vec::<f64>().unwrap()[0]
}

#[test]
fn gradients_through_a_pathway_match_finite_differences() {
    let (_, model) = tiny_model(7);
    let l = loss(&model);
    let grads = l.backward();
    // The linear gate's α of the first pathway (blocks[0].attn.q → blocks[1].attn.q).
    let alpha = model.pathways[0]
        .gate
        .alpha
        .as_ref()
        .expect("a linear gate");
    let g_alpha = to_vec_inner(alpha.grad(&grads).unwrap())[0];
    let eps = 1e-6;
    let with_alpha = |v: f64| {
        let mut m = model.clone();
        m.pathways[0].gate.alpha = Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(vec![v], [1]),
            &Default::default(),
        )));
        scalar(loss(&m))
    };
    let a0 = to_vec_inner(alpha.val().inner())[0];
    let fd = (with_alpha(a0 + eps) - with_alpha(a0 - eps)) / (2.0 * eps);
    assert!(
        (fd - g_alpha).abs() <= 1e-6 * (1.0 + fd.abs()),
        "α: fd {fd} vs autodiff {g_alpha}"
    );
    assert!(g_alpha.abs() > 1e-9, "the gate receives gradient");

    // An entry of the source layer's down factor: its gradient flows through the pathway too.
    let SiteLayer::LowRank(LowRankLayer { a, .. }) = &model.blocks[0].sites[0] else {
        panic!("expected an SVD site")
    };
    let g_a = to_vec_inner(a.grad(&grads).unwrap());
    let a_vals = to_vec_inner(a.val().inner());
    let dims = a.val().dims();
    for idx in [0usize, 5, 17] {
        let with_a = |delta: f64| {
            let mut m = model.clone();
            let mut v = a_vals.clone();
            v[idx] += delta;
            if let SiteLayer::LowRank(LowRankLayer { a, .. }) = &mut m.blocks[0].sites[0] {
                *a = Param::from_tensor(Tensor::from_data(
                    TensorData::new(v, dims),
                    &Default::default(),
                ));
            }
            scalar(loss(&m))
        };
        let fd = (with_a(eps) - with_a(-eps)) / (2.0 * eps);
        assert!(
            (fd - g_a[idx]).abs() <= 1e-5 * (1.0 + fd.abs()),
            "A[{idx}]: fd {fd} vs autodiff {}",
            g_a[idx]
        );
    }
}

fn to_vec_inner<const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    t.into_data().to_vec::<f64>().unwrap()
}

/// Central finite differences against autodiff for a scalar function of one tensor.
fn max_gradient_error(f: &dyn Fn(Tensor<AD, 2>) -> Tensor<AD, 1>) -> f64 {
    let vals: Vec<f64> = (0..24)
        .map(|i| ((i * 37 % 11) as f64 - 5.0) / 3.0)
        .collect();
    let x = Tensor::<AD, 2>::from_data(TensorData::new(vals.clone(), [4, 6]), &Default::default())
        .require_grad();
    let grads = f(x.clone()).backward();
    let ad = to_vec_inner(x.grad(&grads).unwrap());
    let mut worst: f64 = 0.0;
    for i in 0..vals.len() {
        let at = |d: f64| {
            let mut v = vals.clone();
            v[i] += d;
            scalar(f(Tensor::from_data(
                TensorData::new(v, [4, 6]),
                &Default::default(),
            )))
        };
        let fd = (at(1e-6) - at(-1e-6)) / 2e-6;
        worst = worst.max((fd - ad[i]).abs() / (1.0 + fd.abs()));
    }
    worst
}

#[test]
fn activations_have_correct_gradients() {
    use laxc::lower::layers::apply_activation;
    use laxc::spec::Activation;
    for act in [
        Activation::Silu,
        Activation::Gelu,
        Activation::Sigmoid,
        Activation::Tanh,
    ] {
        let err = max_gradient_error(&|x| {
            let y = apply_activation(act, x);
            (y.clone() * y).sum()
        });
        assert!(err < 1e-7, "{act:?}: gradient error {err}");
    }
    // Norms: RMSNorm (laxc's own) and LayerNorm (Burn's).
    for kind in [NormKind::Rmsnorm, NormKind::Layernorm] {
        let norm = Norm::<AD>::new(kind, 6, &Default::default());
        let err = max_gradient_error(&|x| {
            let y = norm.forward(x);
            (y.clone() * y.clone() * y).sum()
        });
        assert!(err < 1e-6, "{kind:?}: gradient error {err}");
    }
}

/// A LoRA model whose base comes from a dense model's weights starts equal to that model: B is
/// zero at init, so neither the adapter nor the LaX pathways between adapters change the output.
#[test]
fn lora_base_loads_from_a_dense_checkpoint() {
    use burn_store::{ModuleSnapshot, SafetensorsStore};
    let sizes =
        "model t: llama { vocab = 13, hidden = 8, ffn = 12, heads = 2, layers = 2, seq = 4 }\n";
    let dense = laxc::compile(&laxc::source::Source::new("d.lax", sizes)).unwrap();
    let dense_model = lower::<B>(&dense.ir, 3, &dev());
    let dir = std::env::temp_dir().join(format!("laxc-lora-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("base.safetensors");
    dense_model
        .save_into(&mut SafetensorsStore::from_file(&file))
        .unwrap();
    let lora_text = format!(
        "{sizes}factorize attn.{{q,k,v}}, mlp.{{up,down}} as lora(rank = 2, alpha = 4, base = \"{}\")\n\
         lax inter attn.q {{ gate = identity, norm = none }}\n",
        file.display()
    );
    let lora = laxc::compile(&laxc::source::Source::new("l.lax", lora_text)).unwrap();
    let fresh = lower::<B>(&lora.ir, 9, &dev());
    let base = laxc::lower::base::base_file(&lora.spec).unwrap().unwrap();
    let loaded = laxc::lower::base::load_lora_base(fresh, &lora.spec, &base, &dev()).unwrap();
    let tokens = || {
        Tensor::<B, 2, burn::tensor::Int>::from_data(
            TensorData::new(vec![1i64, 5, 12, 0, 7, 7, 3, 2], [2, 4]),
            &dev(),
        )
    };
    let a = to_vec(dense_model.forward_tokens(tokens()));
    let b = to_vec(loaded.forward_tokens(tokens()));
    assert_close(&b, &a, 1e-12, "LoRA with a loaded base vs the dense model");
    // And the lowered parameter count is the report's.
    let report = lora.report();
    assert_eq!(loaded.num_params() as u128, report.params.total);
    let _ = std::fs::remove_dir_all(dir);
}

/// σ and SiLU at extreme inputs, in f32 on the training backend: values right, gradients finite
/// (the clamp keeps e^(−x) finite, so the backward pass never multiplies ∞ by 0).
#[test]
fn sigmoid_and_silu_stay_finite_at_extreme_inputs() {
    use burn::backend::Flex;
    use laxc::lower::layers::{sigmoid, silu};
    type F = Autodiff<Flex>;
    let xs = vec![-1e4f32, -100.0, -80.0, -1.0, 0.0, 1.0, 80.0, 100.0, 1e4];
    let expect = |x: f32| 1.0 / (1.0 + (-(x as f64)).exp());
    let x = Tensor::<F, 1>::from_data(TensorData::new(xs.clone(), [xs.len()]), &Default::default())
        .require_grad();
    let s = sigmoid(x.clone());
    let vals = s.clone().into_data().to_vec::<f32>().unwrap();
    for (x, v) in xs.iter().zip(&vals) {
        assert!((*v as f64 - expect(*x)).abs() < 1e-6, "σ({x}) = {v}");
    }
    let grads = (silu(x.clone()).sum() + s.sum()).backward();
    let g = x.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
    for (x, g) in xs.iter().zip(&g) {
        let sx = expect(*x);
        // d/dx [x σ(x) + σ(x)] = σ + x σ (1 − σ) + σ (1 − σ)
        let want = sx + (*x as f64 + 1.0) * sx * (1.0 - sx);
        assert!(g.is_finite(), "gradient at {x} is {g}");
        assert!(
            (*g as f64 - want).abs() < 1e-4,
            "gradient at {x}: {g}, want {want}"
        );
    }
}

/// RoPE in the (batch·seq, hidden) layout equals rotate-half RoPE written per head, per position,
/// per pair: out[i] = x[i]·cos(t·θ_i) − x[i + d/2]·sin(t·θ_i) for i < d/2, and
/// out[i] = x[i]·cos(t·θ_(i−d/2)) + x[i − d/2]·sin(t·θ_(i−d/2)) above, θ_j = 10000^(−2j/d).
#[test]
fn rope_rotates_each_head_by_its_position() {
    use laxc::lower::model::{rope, rope_tables};
    let (batch, seq, heads, hd) = (2, 5, 3, 4);
    let hidden = heads * hd;
    let mut rng = StdRng::seed_from_u64(7);
    let x = random(&mut rng, batch * seq * hidden);
    let (cos, sin) = rope_tables::<B>(seq, heads, hidden, &dev());
    let got = to_vec(rope(
        tensor(x.clone(), [batch * seq, hidden]),
        batch,
        heads,
        &cos,
        &sin,
    ));
    let half = hd / 2;
    for b in 0..batch {
        for t in 0..seq {
            for h in 0..heads {
                let at = |i: usize| x[(b * seq + t) * hidden + h * hd + i];
                for i in 0..hd {
                    let j = i % half;
                    let a = t as f64 * 10000f64.powf(-2.0 * j as f64 / hd as f64);
                    let want = if i < half {
                        at(i) * a.cos() - at(i + half) * a.sin()
                    } else {
                        at(i) * a.cos() + at(i - half) * a.sin()
                    };
                    let g = got[(b * seq + t) * hidden + h * hd + i];
                    // The tables are f32: agreement to f32 precision.
                    assert!(
                        (g - want).abs() < 1e-6,
                        "b{b} t{t} h{h} i{i}: {g} vs {want}"
                    );
                }
            }
        }
    }
}
