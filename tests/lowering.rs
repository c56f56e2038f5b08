//! The lowered Burn model against the report and against each layer's defining formula, in f64.
#![cfg(feature = "train")]

mod common;

use burn::backend::{Autodiff, NdArray};
use burn::module::{Module, Param};
use burn::tensor::{Tensor, TensorData};
use laxc::ir::Gate;
use laxc::lower::ops::gate;
use laxc::lower::params::{Linear, NodeParams, TensorGate, TtCore};
use laxc::lower::{lower, LaxModel};
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
    for dir in common::SPEC_DIRS {
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

/// A spec's model in f64, its parameters drawn from seed 0.
fn model(text: &str) -> LaxModel<B> {
    let c = laxc::compile(&laxc::source::Source::new("t.lax", text)).unwrap();
    lower::<B>(&c.ir, 0, &dev())
}

/// Gives the IR node `name` these parameters.
fn set(m: &mut LaxModel<B>, name: &str, p: NodeParams<B>) {
    let node = m
        .program
        .node(name)
        .unwrap_or_else(|| panic!("no node {name}"));
    let index = m.program.params[node].unwrap_or_else(|| panic!("{name} has no parameters"));
    m.nodes[index] = p;
}

fn linear(w: Vec<f64>, [inp, out]: [usize; 2], bias: Option<Vec<f64>>) -> NodeParams<B> {
    NodeParams::Linear(Linear {
        weight: Param::from_tensor(tensor(w, [inp, out])),
        bias: bias.map(|b| Param::from_tensor(tensor(b, [out]))),
    })
}

/// Runs the part of `m` that `feeds` reach and returns node `read`'s value.
fn run(m: &LaxModel<B>, feeds: &[(&str, Tensor<B, 2>)], read: &str) -> Vec<f64> {
    let n = feeds[0].1.dims()[0];
    to_vec(
        m.run_part(feeds, read, [n, 1])
            .unwrap()
            .unwrap_or_else(|| panic!("{read} was not reached")),
    )
}

/// A one-block ViT whose fc1 (12 → 9) is as `rule` says: biases on, like the authors' ViTs.
fn vit(rule: &str) -> String {
    format!(
        "model t: vit {{ image = 4, patch = 2, channels = 1, classes = 3, hidden = 12, mlp = 9, \
         heads = 2, layers = 1 }}\n{rule}\n"
    )
}

const FC1_INPUT: &str = "blocks[0].norm2";

#[test]
fn svd_with_b_times_a_equal_w_is_the_dense_layer() {
    let mut rng = StdRng::seed_from_u64(1);
    let (n, inp, r, out) = (5, 12, 4, 9);
    let a = random(&mut rng, inp * r);
    let b = random(&mut rng, r * out);
    let bias = random(&mut rng, out);
    let x = random(&mut rng, n * inp);
    let w = matmul(&a, &b, inp, r, out);
    let mut svd = model(&vit("factorize mlp.fc1 as svd(rank = 4)"));
    set(&mut svd, "blocks[0].mlp.fc1.A", linear(a, [inp, r], None));
    let up = linear(b, [r, out], Some(bias.clone()));
    set(&mut svd, "blocks[0].mlp.fc1.B", up);
    let mut dense = model(&vit(""));
    set(
        &mut dense,
        "blocks[0].mlp.fc1.W",
        linear(w, [inp, out], Some(bias)),
    );
    let feed = [(FC1_INPUT, tensor(x, [n, inp]))];
    let y_svd = run(&svd, &feed, "blocks[0].mlp.fc1.B");
    let y_dense = run(&dense, &feed, "blocks[0].mlp.fc1.W");
    assert_close(&y_svd, &y_dense, 1e-12, "svd vs dense");
    assert_eq!(run(&svd, &feed, "blocks[0].mlp.fc1.latent").len(), n * r);
}

#[test]
fn cola_applies_the_activation_between_the_factors() {
    let mut rng = StdRng::seed_from_u64(2);
    let (n, inp, r, out) = (3, 12, 3, 9);
    let a = random(&mut rng, inp * r);
    let b = random(&mut rng, r * out);
    let x = random(&mut rng, n * inp);
    let mut cola = model(&vit("factorize mlp.fc1 as cola(rank = 3, act = silu)"));
    set(
        &mut cola,
        "blocks[0].mlp.fc1.A",
        linear(a.clone(), [inp, r], None),
    );
    set(
        &mut cola,
        "blocks[0].mlp.fc1.B",
        linear(b.clone(), [r, out], None),
    );
    let z: Vec<f64> = matmul(&x, &a, n, inp, r)
        .into_iter()
        .map(|v| v / (1.0 + (-v).exp()))
        .collect();
    let expected = matmul(&z, &b, n, r, out);
    let feed = [(FC1_INPUT, tensor(x, [n, inp]))];
    assert_close(
        &run(&cola, &feed, "blocks[0].mlp.fc1.B"),
        &expected,
        1e-7,
        "cola",
    );
    let latent = run(&cola, &feed, "blocks[0].mlp.fc1.latent");
    assert_close(&latent, &z, 1e-7, "the latent is post-activation");
}

fn core(values: Vec<f64>, shape: [usize; 3]) -> NodeParams<B> {
    NodeParams::TtCore(TtCore {
        core: Param::from_tensor(tensor(values, shape)),
        bias: None,
    })
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
        let rule = "factorize mlp.fc1 as tt(modes = [3, 4, 4, 2], ranks = [2, 5, 2])";
        let text = if intra {
            vit(&format!("{rule}\nlax intra mlp.fc1"))
        } else {
            vit(rule)
        };
        let text = text.replace("mlp = 9", "mlp = 8");
        let mut tt = model(&text);
        let site = "blocks[0].mlp.fc1";
        set(&mut tt, &format!("{site}.C0"), core(c0, [1, m0, r1]));
        set(&mut tt, &format!("{site}.C1"), core(c1, [r1, m1, rr]));
        set(&mut tt, &format!("{site}.C2"), core(c2, [rr, m2, r3]));
        set(&mut tt, &format!("{site}.C3"), core(c3, [r3, m3, 1]));
        let feed = [(FC1_INPUT, tensor(x, [n, inp]))];
        let y = run(&tt, &feed, &format!("{site}.C3"));
        assert_eq!(run(&tt, &feed, &format!("{site}.latent")).len(), n * rr);
        assert_close(&y, &expected, 1e-10, &format!("tt (intra {intra})"));
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
    let params = NodeParams::TensorGate(TensorGate {
        g0: Param::from_tensor(tensor(g0, [s1, t1])),
        g1: Param::from_tensor(tensor(g1, [s0, t0])),
    });
    let g = Gate::Tensor {
        input: [s0, s1],
        output: [t0, t1],
    };
    let y = gate(&g, Some(&params), tensor(h, [n, s0 * s1]));
    assert_close(&to_vec(y), &expected, 1e-12, "tensor gate");
}

#[test]
fn linear_dense_and_identity_gates_follow_their_formulas() {
    let mut rng = StdRng::seed_from_u64(5);
    let (n, r, q) = (3, 4, 6);
    let h = random(&mut rng, n * r);
    let alpha = NodeParams::Vector(Param::from_tensor(tensor(vec![0.5], [1])));
    let y = to_vec(gate(&Gate::Linear, Some(&alpha), tensor(h.clone(), [n, r])));
    let halved: Vec<f64> = h.iter().map(|v| 0.5 * v).collect();
    assert_close(&y, &halved, 1e-15, "linear");
    let w = random(&mut rng, r * q);
    let b = random(&mut rng, q);
    let mut expected = matmul(&h, &w, n, r, q);
    for i in 0..n {
        for j in 0..q {
            expected[i * q + j] += b[j];
        }
    }
    let dense = linear(w, [r, q], Some(b));
    let y = to_vec(gate(&Gate::Dense, Some(&dense), tensor(h.clone(), [n, r])));
    assert_close(&y, &expected, 1e-12, "dense");
    let y = to_vec(gate(&Gate::Identity, None, tensor(h.clone(), [n, r])));
    assert_close(&y, &h, 0.0, "identity");
    // An identity gate has no parameters in the lowered model.
    let m = model(
        "model t: llama { vocab = 11, hidden = 8, ffn = 12, heads = 2, layers = 2, seq = 5 }\n\
         factorize attn.q as svd(rank = 4)\nlax inter attn.q { gate = identity }\n",
    );
    let name = "lax[blocks[0].attn.q -> blocks[1].attn.q].gate";
    assert!(m.program.node(name).is_some() && m.params_of(name).is_none());
}

#[test]
fn lax_with_no_norm_identity_gate_and_zero_source_is_the_plain_layer() {
    let mut rng = StdRng::seed_from_u64(6);
    let (n, inp, r, out) = (4, 8, 3, 8);
    let sizes =
        "model t: llama { vocab = 11, hidden = 8, ffn = 12, heads = 2, layers = 2, seq = 5 }\n\
                 factorize attn.q as svd(rank = 3)\n";
    let mut plain = model(sizes);
    let mut crossed = model(&format!(
        "{sizes}lax inter attn.q {{ gate = identity, norm = none }}\n"
    ));
    let (a, b) = (random(&mut rng, inp * r), random(&mut rng, r * out));
    for m in [&mut plain, &mut crossed] {
        set(m, "blocks[1].attn.q.A", linear(a.clone(), [inp, r], None));
        set(m, "blocks[1].attn.q.B", linear(b.clone(), [r, out], None));
    }
    let x = tensor(random(&mut rng, n * inp), [n, inp]);
    let (input, source, read) = (
        "blocks[1].attn_norm",
        "blocks[0].attn.q.latent",
        "blocks[1].attn.q.B",
    );
    let want = run(&plain, &[(input, x.clone())], read);
    let zero = Tensor::<B, 2>::zeros([n, r], &dev());
    let got = run(&crossed, &[(input, x.clone()), (source, zero)], read);
    assert_close(&got, &want, 0.0, "zero source");
    // And a non-zero source changes the output: the pathway is really wired.
    let one = Tensor::<B, 2>::ones([n, r], &dev());
    let moved = run(&crossed, &[(input, x), (source, one)], read);
    assert!(moved.iter().zip(&want).any(|(a, b)| (a - b).abs() > 1e-9));
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

/// The linear gate of the first pathway, and the down factor of its source.
const PATHWAY_GATE: &str = "lax[blocks[0].attn.q -> blocks[1].attn.q].gate";
const SOURCE_DOWN: &str = "blocks[0].attn.q.A";

fn set_ad(m: &mut LaxModel<AD>, name: &str, p: NodeParams<AD>) {
    let node = m.program.node(name).unwrap();
    let index = m.program.params[node].unwrap();
    m.nodes[index] = p;
}

#[test]
fn gradients_through_a_pathway_match_finite_differences() {
    let (_, model) = tiny_model(7);
    let l = loss(&model);
    let grads = l.backward();
    // The linear gate's α of the first pathway (blocks[0].attn.q → blocks[1].attn.q).
    let NodeParams::Vector(alpha) = model.params_of(PATHWAY_GATE).expect("a linear gate") else {
        panic!("a linear gate has α")
    };
    let g_alpha = to_vec_inner(alpha.grad(&grads).unwrap())[0];
    let eps = 1e-6;
    let with_alpha = |v: f64| {
        let mut m = model.clone();
        let alpha = Param::from_tensor(Tensor::from_data(
            TensorData::new(vec![v], [1]),
            &Default::default(),
        ));
        set_ad(&mut m, PATHWAY_GATE, NodeParams::Vector(alpha));
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
    let Some(NodeParams::Linear(down)) = model.params_of(SOURCE_DOWN) else {
        panic!("expected an SVD site")
    };
    let a = &down.weight;
    let g_a = to_vec_inner(a.grad(&grads).unwrap());
    let a_vals = to_vec_inner(a.val().inner());
    let dims = a.val().dims();
    for idx in [0usize, 5, 17] {
        let with_a = |delta: f64| {
            let mut m = model.clone();
            let mut v = a_vals.clone();
            v[idx] += delta;
            let weight = Param::from_tensor(Tensor::from_data(
                TensorData::new(v, dims),
                &Default::default(),
            ));
            let down = laxc::lower::params::Linear { weight, bias: None };
            set_ad(&mut m, SOURCE_DOWN, NodeParams::Linear(down));
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
    use laxc::ir::Activation;
    use laxc::lower::layers::apply_activation;
    for act in [
        Activation::Silu,
        Activation::Gelu,
        Activation::GeluTanh,
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
    let rms = laxc::lower::layers::RmsNorm::<AD>::new(6, 1e-6, &Default::default());
    let layer = burn::nn::LayerNormConfig::new(6)
        .with_epsilon(1e-6)
        .init::<AD>(&Default::default());
    let cube = |y: Tensor<AD, 2>| (y.clone() * y.clone() * y).sum();
    let err = max_gradient_error(&|x| cube(rms.forward(x)));
    assert!(err < 1e-6, "RMSNorm: gradient error {err}");
    let err = max_gradient_error(&|x| cube(layer.forward(x)));
    assert!(err < 1e-6, "LayerNorm: gradient error {err}");
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
/// out[i] = x[i]·cos(t·θ_(i−d/2)) + x[i − d/2]·sin(t·θ_(i−d/2)) above, θ_j = base^(−2j/d), for
/// LLaMA's base 10000 and SmolLM2's 100000.
#[test]
fn rope_rotates_each_head_by_its_position() {
    for base in [10000.0, 100000.0] {
        rope_with_base(base);
    }
}

fn rope_with_base(base: f64) {
    use laxc::lower::attention::{rope, rope_tables};
    let (batch, seq, heads, hd) = (2, 5, 3, 4);
    let hidden = heads * hd;
    let mut rng = StdRng::seed_from_u64(7);
    let x = random(&mut rng, batch * seq * hidden);
    let (cos, sin) = rope_tables::<B>([seq, heads, hidden], base, &dev());
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
                    let a = t as f64 * base.powf(-2.0 * j as f64 / hd as f64);
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

/// A one-block LLaMA with grouped-query attention: 4 query heads of width 4 share 2 key-value
/// heads (k and v are 8 wide).
const GQA: &str = "model t: llama { vocab = 11, hidden = 16, ffn = 8, heads = 4, kv_heads = 2, \
                   layers = 1, seq = 5 }";

/// Causal attention written per query head, position and key, with query head h reading
/// key-value head h / (heads / kv_heads) (HF `repeat_kv`): softmax(q·k/√d) over t' ≤ t, times v.
fn gqa_attention(
    [q, k, v]: [&[f64]; 3],
    [batch, seq, heads, kv_heads, hd]: [usize; 5],
) -> Vec<f64> {
    let (qw, kw) = (heads * hd, kv_heads * hd);
    let mut out = vec![0.0; batch * seq * qw];
    for b in 0..batch {
        for h in 0..heads {
            let g = h / (heads / kv_heads);
            for t in 0..seq {
                let qi = |i: usize| q[(b * seq + t) * qw + h * hd + i];
                let key = |s: usize, i: usize| k[(b * seq + s) * kw + g * hd + i];
                let scores: Vec<f64> = (0..=t)
                    .map(|s| (0..hd).map(|i| qi(i) * key(s, i)).sum::<f64>() / (hd as f64).sqrt())
                    .collect();
                let top = scores.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = scores.iter().map(|x| (x - top).exp()).collect();
                let z: f64 = e.iter().sum();
                for i in 0..hd {
                    out[(b * seq + t) * qw + h * hd + i] = (0..=t)
                        .map(|s| e[s] / z * v[(b * seq + s) * kw + g * hd + i])
                        .sum();
                }
            }
        }
    }
    out
}

const GQA_FEEDS: [&str; 3] = ["blocks[0].rope_q", "blocks[0].rope_k", "blocks[0].attn.v.W"];

#[test]
fn grouped_query_attention_shares_each_kv_head_among_its_query_heads() {
    let m = model(GQA);
    let (batch, seq, heads, kv_heads, hd) = (2, 5, 4, 2, 4);
    let mut rng = StdRng::seed_from_u64(11);
    let q = random(&mut rng, batch * seq * heads * hd);
    let k = random(&mut rng, batch * seq * kv_heads * hd);
    let v = random(&mut rng, batch * seq * kv_heads * hd);
    let feeds = [
        (GQA_FEEDS[0], tensor(q.clone(), [batch * seq, heads * hd])),
        (
            GQA_FEEDS[1],
            tensor(k.clone(), [batch * seq, kv_heads * hd]),
        ),
        (
            GQA_FEEDS[2],
            tensor(v.clone(), [batch * seq, kv_heads * hd]),
        ),
    ];
    let got = m
        .run_part(&feeds, "blocks[0].attention", [batch, seq])
        .unwrap()
        .expect("attention is reached");
    let want = gqa_attention([&q, &k, &v], [batch, seq, heads, kv_heads, hd]);
    assert_close(&to_vec(got), &want, 1e-12, "grouped-query attention");
}

/// The gradient of grouped-query attention with respect to its keys and values sums over the
/// query heads that share them: autodiff against central finite differences.
#[test]
fn grouped_query_attention_gradients_match_finite_differences() {
    let c = laxc::compile(&laxc::source::Source::new("t.lax", GQA)).unwrap();
    let m = lower::<AD>(&c.ir, 0, &Default::default()).without_dropout();
    let (batch, seq, heads, kv_heads, hd) = (1, 4, 4, 2, 4);
    let mut rng = StdRng::seed_from_u64(12);
    let q = random(&mut rng, batch * seq * heads * hd);
    let kv = random(&mut rng, 2 * batch * seq * kv_heads * hd);
    let weights = random(&mut rng, batch * seq * heads * hd);
    let rows = batch * seq;
    let loss = |kv: &[f64]| {
        let t = |v: &[f64], w: usize| {
            Tensor::<AD, 2>::from_data(TensorData::new(v.to_vec(), [rows, w]), &Default::default())
        };
        let half = kv.len() / 2;
        let kv_t = t(kv, 2 * kv_heads * hd).require_grad();
        let k = kv_t.clone().narrow(1, 0, kv_heads * hd);
        let v = kv_t.clone().narrow(1, kv_heads * hd, kv_heads * hd);
        debug_assert_eq!(half, rows * kv_heads * hd);
        let feeds = [
            (GQA_FEEDS[0], t(&q, heads * hd)),
            (GQA_FEEDS[1], k),
            (GQA_FEEDS[2], v),
        ];
        let out = m
            .run_part(&feeds, "blocks[0].attention", [batch, seq])
            .unwrap()
            .expect("attention is reached");
        ((out * t(&weights, heads * hd)).sum(), kv_t)
    };
    // kv holds k and v side by side per row: (rows, 2 · kv width).
    let (l, x) = loss(&kv);
    let grads = l.backward();
    let ad = to_vec_inner(x.grad(&grads).unwrap());
    for i in 0..kv.len() {
        let at = |d: f64| {
            let mut p = kv.clone();
            p[i] += d;
            scalar(loss(&p).0)
        };
        let fd = (at(1e-6) - at(-1e-6)) / 2e-6;
        assert!(
            (fd - ad[i]).abs() < 1e-6 * (1.0 + fd.abs()),
            "element {i}: autodiff {} vs finite differences {fd}",
            ad[i]
        );
    }
}

/// GPT-2's tanh GELU against its formula, and against the exact GELU it approximates.
#[test]
fn gelu_tanh_follows_its_formula() {
    use laxc::lower::layers::{gelu, gelu_tanh};
    let xs = vec![-6.0, -2.5, -1.0, -0.1, 0.0, 0.3, 1.0, 2.0, 7.5];
    let got = to_vec(gelu_tanh(tensor(xs.clone(), [xs.len()])));
    let exact = to_vec(gelu(tensor(xs.clone(), [xs.len()])));
    for ((x, g), e) in xs.iter().zip(&got).zip(&exact) {
        let c = (2.0 / std::f64::consts::PI).sqrt();
        let want = 0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh());
        assert!(
            (g - want).abs() < 1e-12,
            "gelu_tanh({x}) = {g}, want {want}"
        );
        assert!(
            (g - e).abs() < 1e-3,
            "gelu_tanh({x}) = {g} is far from gelu {e}"
        );
    }
}

/// The `dropout` train key is applied: every family has dropout nodes on its attention and MLP
/// outputs; while training (autodiff) they drop at the run's rate, in evaluation they are off.
#[test]
fn dropout_acts_while_training_and_not_in_evaluation() {
    use burn::module::AutodiffModule;
    use laxc::ir::{DropRate, Op};
    for sizes in [
        "model t: llama { vocab = 11, hidden = 8, ffn = 12, heads = 2, layers = 2, seq = 5 }",
        "model t: gpt2 { vocab = 11, hidden = 8, ffn = 12, heads = 2, layers = 2, seq = 5 }",
        "model t: vit { image = 4, patch = 2, channels = 1, classes = 3, hidden = 8, mlp = 12, heads = 2, layers = 2 }",
    ] {
        let c = laxc::compile(&laxc::source::Source::new("t.lax", sizes)).unwrap();
        let train_dropouts = c
            .ir
            .graph
            .node_weights()
            .filter(|n| matches!(n.op, Op::Dropout { rate: DropRate::Train, .. }))
            .count();
        assert!(train_dropouts >= 2 * c.ir.model.layers, "{sizes}: {train_dropouts}");
    }
    let (_, plain) = tiny_model(3);
    let dropped = plain.clone().with_dropout(0.5);
    let logits = |m: &LaxModel<AD>| scalar(loss(m));
    assert_ne!(
        logits(&dropped),
        logits(&plain),
        "dropout changes a training pass"
    );
    assert_ne!(
        logits(&dropped),
        logits(&dropped),
        "each pass draws its own mask"
    );
    let tokens = || {
        Tensor::<B, 2, burn::tensor::Int>::from_data(
            TensorData::new(vec![1i64, 4, 7, 2, 9], [1, 5]),
            &dev(),
        )
    };
    let eval_plain = to_vec(plain.valid().forward_tokens(tokens()));
    let eval_dropped = to_vec(dropped.valid().forward_tokens(tokens()));
    assert_close(&eval_dropped, &eval_plain, 0.0, "evaluation has no dropout");
}

/// Every tensor of node `name`, with its role (`weight`, `bias`, `core`, `g0`, ...).
fn tensors_of(m: &LaxModel<B>, name: &str) -> Vec<(&'static str, Vec<f64>)> {
    let p = m
        .params_of(name)
        .unwrap_or_else(|| panic!("{name} has no parameters"));
    let v1 = |t: &Param<Tensor<B, 1>>| to_vec(t.val());
    let v2 = |t: &Param<Tensor<B, 2>>| to_vec(t.val());
    match p {
        NodeParams::Table(t) => vec![("table", v2(t))],
        NodeParams::Vector(t) => vec![("vector", v1(t))],
        NodeParams::Linear(l) => {
            let mut v = vec![("weight", v2(&l.weight))];
            v.extend(l.bias.as_ref().map(|b| ("bias", v1(b))));
            v
        }
        NodeParams::TtCore(c) => {
            let mut v = vec![("core", to_vec(c.core.val()))];
            v.extend(c.bias.as_ref().map(|b| ("bias", v1(b))));
            v
        }
        NodeParams::TensorGate(g) => vec![("g0", v2(&g.g0)), ("g1", v2(&g.g1))],
        NodeParams::LayerNorm(n) => vec![
            ("gamma", v1(&n.gamma)),
            ("beta", v1(n.beta.as_ref().unwrap())),
        ],
        NodeParams::RmsNorm(n) => vec![("gamma", v1(&n.gamma))],
    }
}

/// The values of role `role` of every node whose name ends with `suffix`.
fn pooled(m: &LaxModel<B>, suffix: &str, role: &str) -> Vec<f64> {
    let names: Vec<String> = m
        .program
        .names
        .iter()
        .filter(|n| n.ends_with(suffix) && m.params_of(n).is_some())
        .cloned()
        .collect();
    assert!(!names.is_empty(), "no node ends with {suffix}");
    names
        .iter()
        .flat_map(|n| tensors_of(m, n))
        .filter(|(r, _)| *r == role)
        .flat_map(|(_, v)| v)
        .collect()
}

/// Root mean square and largest magnitude.
fn spread(v: &[f64]) -> (f64, f64) {
    let rms = (v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64).sqrt();
    (rms, v.iter().fold(0.0f64, |m, x| m.max(x.abs())))
}

/// Four standard errors of a sample std over n normal draws (1/√(2n) relative), or 2 %.
fn std_tolerance(n: usize) -> f64 {
    (4.0 / (2.0 * n as f64).sqrt()).max(0.02)
}

fn normal_with_std(v: &[f64], std: f64, what: &str) {
    let (rms, _) = spread(v);
    let tol = std_tolerance(v.len());
    assert!(tol < 0.1, "{what}: only {} values", v.len());
    assert!(
        (rms / std - 1.0).abs() < tol,
        "{what}: std {rms}, rule {std} ± {tol}"
    );
}

fn uniform_with_bound(v: &[f64], bound: f64, what: &str) {
    let (rms, max) = spread(v);
    assert!(
        max <= bound * (1.0 + 1e-6),
        "{what}: |x| up to {max}, bound {bound}"
    );
    assert!(
        max > 0.97 * bound,
        "{what}: |x| only up to {max}, bound {bound}"
    );
    let std = bound / 3f64.sqrt();
    let tol = std_tolerance(v.len());
    assert!(
        (rms / std - 1.0).abs() < tol,
        "{what}: std {rms}, rule {std} ± {tol}"
    );
}

fn constant(v: &[f64], c: f64, what: &str) {
    assert!(v.iter().all(|&x| x == c), "{what}: not all {c}");
}

/// Each parameter kind's initial values over a large draw against its rule (docs/conventions.md,
/// "Initialization", from the authors' code): the std of normal draws, the bound of uniform ones.
#[test]
fn every_parameter_kind_starts_from_its_rule() {
    let vit = model(
        "model t: vit { image = 28, patch = 7, channels = 1, classes = 64, hidden = 256, \
         mlp = 512, heads = 4, layers = 4, mlp_norm = true }\n\
         factorize attn.{q,k} as svd(rank = 64)\n\
         factorize attn.v as tt(modes = [16, 16, 16, 16], ranks = [16, 64, 16])\n\
         lax inter attn.q { gate = tensor(shape = [8, 8]) }\n\
         lax inter attn.k { gate = dense }\n",
    );
    // timm's trunc_normal_(std = .02): bounds ±2, so a plain N(0, 0.02²).
    for kind in ["attn.o.W", "mlp.fc1.W", "mlp.fc2.W", "head", "k].gate"] {
        normal_with_std(&pooled(&vit, kind, "weight"), 0.02, kind);
    }
    normal_with_std(&pooled(&vit, "pos_embed", "table"), 0.02, "positions");
    // nn.Linear's bias zero where timm's init runs; factorized layers' biases N(0, 1).
    constant(&pooled(&vit, "mlp.fc1.W", "bias"), 0.0, "dense bias");
    normal_with_std(&pooled(&vit, ".B", "bias"), 1.0, "factorized bias");
    // kaiming_normal_ with PyTorch's fan-in: A (256 × 64) has std √(2/64), B (64 × 256) √(2/256).
    normal_with_std(&pooled(&vit, ".A", "weight"), (2.0f64 / 64.0).sqrt(), "A");
    normal_with_std(&pooled(&vit, ".B", "weight"), (2.0f64 / 256.0).sqrt(), "B");
    // TT cores (a, m, b): std √(2/(m·b)); C1 is 16 × 16 × 64.
    let c1 = tensors_of(&vit, "blocks[0].attn.v.C1");
    normal_with_std(&c1[0].1, (2.0f64 / (16.0 * 64.0)).sqrt(), "TT core");
    // Tensor gates: kaiming_uniform_ with a = 0, bound √(6/fan_in), fan-in 8.
    let gates: Vec<f64> = ["g0", "g1"]
        .iter()
        .flat_map(|g| pooled(&vit, "q].gate", g))
        .collect();
    uniform_with_bound(&gates, (6.0f64 / 8.0).sqrt(), "tensor gate");
    // The patch embedding keeps Conv2d's default: U(±1/√(C·p·p)) = U(±1/7), weight and bias.
    uniform_with_bound(&pooled(&vit, "patch_embed", "weight"), 1.0 / 7.0, "patch");
    let (_, max) = spread(&pooled(&vit, "patch_embed", "bias"));
    assert!(max <= 1.0 / 7.0 && max > 0.1, "patch bias up to {max}");
    // Norms start at weight 1, bias 0; the cls token near zero.
    constant(&pooled(&vit, "norm1", "gamma"), 1.0, "norm weight");
    constant(&pooled(&vit, "mlp_norm", "beta"), 0.0, "norm bias");
    assert!(spread(&pooled(&vit, "cls_token", "vector")).1 < 1e-4);

    let llama = model(
        "model t: llama { vocab = 256, hidden = 256, ffn = 512, heads = 4, layers = 4, seq = 8 }\n\
         factorize attn.* as cola(rank = 64)\n\
         factorize mlp.gate as lora(rank = 16)\n\
         lax inter attn.q { gate = linear }\n",
    );
    // The GPT-2/LLaMA scheme: N(0, 0.02²) for embeddings and dense sites.
    normal_with_std(&pooled(&llama, "embed", "table"), 0.02, "embedding");
    normal_with_std(&pooled(&llama, "mlp.up.W", "weight"), 0.02, "dense site");
    // CoLA's factors: N(0, 1) · r^(-1/4) · (in + out)^(-1/4).
    let cola = 64f64.powf(-0.25) * 512f64.powf(-0.25);
    normal_with_std(&pooled(&llama, ".A", "weight"), cola, "CoLA A");
    normal_with_std(&pooled(&llama, ".B", "weight"), cola, "CoLA B");
    // LoRA: A as nn.Linear (kaiming_uniform_, a = √5: bound 1/√in), B zero; the linear gate 1.
    uniform_with_bound(
        &pooled(&llama, "gate.lora_A", "weight"),
        1.0 / 16.0,
        "LoRA A",
    );
    constant(&pooled(&llama, "gate.lora_B", "weight"), 0.0, "LoRA B");
    constant(&pooled(&llama, "q].gate", "vector"), 1.0, "linear gate");
}
