//! Each layer kind against its defining formula, written out on the host in f64, on any
//! back end: tests/lowering.rs runs them on NdArray in f64 (tolerances near f64 rounding),
//! tests/wgpu.rs on wgpu in f32 (the same formulas, tolerances at f32 rounding).
#![allow(dead_code)]

use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use laxc::ir::Gate;
use laxc::lower::ops::gate;
use laxc::lower::params::{Linear, NodeParams, TensorGate, TtCore};
use laxc::lower::{lower, LaxModel};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// A back end's device, and whether it computes in f32 (tolerances widen to f32 rounding).
pub struct On<B: Backend> {
    pub dev: B::Device,
    pub single: bool,
}

impl<B: Backend> On<B> {
    /// A tolerance stated for f64, widened to f32 rounding on a single-precision back end.
    pub fn tol(&self, f64_tolerance: f64) -> f64 {
        if self.single {
            f64_tolerance.max(2e-5)
        } else {
            f64_tolerance
        }
    }

    pub fn tensor<const D: usize>(&self, v: Vec<f64>, shape: [usize; D]) -> Tensor<B, D> {
        Tensor::from_data(
            TensorData::new(v, shape).convert::<B::FloatElem>(),
            &self.dev,
        )
    }

    pub fn assert_close(&self, a: &[f64], b: &[f64], tol: f64, what: &str) {
        assert_close(a, b, self.tol(tol), what)
    }

    /// A spec's model, its parameters drawn from seed 0.
    pub fn model(&self, text: &str) -> LaxModel<B> {
        let c = laxc::compile(&laxc::source::Source::new("t.lax", text)).unwrap();
        lower::<B>(&c.ir, 0, &self.dev)
    }

    pub fn linear(
        &self,
        w: Vec<f64>,
        [inp, out]: [usize; 2],
        bias: Option<Vec<f64>>,
    ) -> NodeParams<B> {
        NodeParams::Linear(Linear {
            weight: Param::from_tensor(self.tensor(w, [inp, out])),
            bias: bias.map(|b| Param::from_tensor(self.tensor(b, [out]))),
        })
    }
}

pub fn random(rng: &mut StdRng, n: usize) -> Vec<f64> {
    (0..n).map(|_| rng.random::<f64>() * 2.0 - 1.0).collect()
}

pub fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    t.into_data().convert::<f64>().to_vec::<f64>().unwrap()
}

pub fn assert_close(a: &[f64], b: &[f64], tol: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * (1.0 + y.abs()),
            "{what}: element {i}: {x} vs {y}"
        );
    }
}

/// Host matrix product of row-major (n×k)(k×m).
pub fn matmul(a: &[f64], b: &[f64], n: usize, k: usize, m: usize) -> Vec<f64> {
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

/// Gives the IR node `name` these parameters.
pub fn set<B: Backend>(m: &mut LaxModel<B>, name: &str, p: NodeParams<B>) {
    let node = m
        .program
        .node(name)
        .unwrap_or_else(|| panic!("no node {name}"));
    let index = m.program.params[node].unwrap_or_else(|| panic!("{name} has no parameters"));
    m.nodes[index] = p;
}

/// Runs the part of `m` that `feeds` reach and returns node `read`'s value.
pub fn run<B: Backend>(m: &LaxModel<B>, feeds: &[(&str, Tensor<B, 2>)], read: &str) -> Vec<f64> {
    let n = feeds[0].1.dims()[0];
    to_vec(
        m.run_part(feeds, read, [n, 1])
            .unwrap()
            .unwrap_or_else(|| panic!("{read} was not reached")),
    )
}

/// Every formula of this module, in turn.
pub fn all<B: Backend>(on: &On<B>) {
    svd_with_b_times_a_equal_w_is_the_dense_layer(on);
    cola_applies_the_activation_between_the_factors(on);
    tt_layer_equals_the_matrix_its_cores_reconstruct(on);
    tensor_gate_is_h_times_kron_g1_g0(on);
    linear_dense_and_identity_gates_follow_their_formulas(on);
    lax_with_no_norm_identity_gate_and_zero_source_is_the_plain_layer(on);
    rope_rotates_each_head_by_its_position(on);
    grouped_query_attention_shares_each_kv_head_among_its_query_heads(on);
    gelu_tanh_follows_its_formula(on);
}

/// A one-block ViT whose fc1 (12 → 9) is as `rule` says: biases on, like the authors' ViTs.
fn vit(rule: &str) -> String {
    format!(
        "model t: vit {{ image = 4, patch = 2, channels = 1, classes = 3, hidden = 12, mlp = 9, \
         heads = 2, layers = 1 }}\n{rule}\n"
    )
}

const FC1_INPUT: &str = "blocks[0].norm2";

pub fn svd_with_b_times_a_equal_w_is_the_dense_layer<B: Backend>(on: &On<B>) {
    let mut rng = StdRng::seed_from_u64(1);
    let (n, inp, r, out) = (5, 12, 4, 9);
    let a = random(&mut rng, inp * r);
    let b = random(&mut rng, r * out);
    let bias = random(&mut rng, out);
    let x = random(&mut rng, n * inp);
    let w = matmul(&a, &b, inp, r, out);
    let mut svd = on.model(&vit("factorize mlp.fc1 as svd(rank = 4)"));
    set(
        &mut svd,
        "blocks[0].mlp.fc1.A",
        on.linear(a, [inp, r], None),
    );
    let up = on.linear(b, [r, out], Some(bias.clone()));
    set(&mut svd, "blocks[0].mlp.fc1.B", up);
    let mut dense = on.model(&vit(""));
    set(
        &mut dense,
        "blocks[0].mlp.fc1.W",
        on.linear(w, [inp, out], Some(bias)),
    );
    let feed = [(FC1_INPUT, on.tensor(x, [n, inp]))];
    let y_svd = run(&svd, &feed, "blocks[0].mlp.fc1.B");
    let y_dense = run(&dense, &feed, "blocks[0].mlp.fc1.W");
    on.assert_close(&y_svd, &y_dense, 1e-12, "svd vs dense");
    assert_eq!(run(&svd, &feed, "blocks[0].mlp.fc1.latent").len(), n * r);
}

pub fn cola_applies_the_activation_between_the_factors<B: Backend>(on: &On<B>) {
    let mut rng = StdRng::seed_from_u64(2);
    let (n, inp, r, out) = (3, 12, 3, 9);
    let a = random(&mut rng, inp * r);
    let b = random(&mut rng, r * out);
    let x = random(&mut rng, n * inp);
    let mut cola = on.model(&vit("factorize mlp.fc1 as cola(rank = 3, act = silu)"));
    set(
        &mut cola,
        "blocks[0].mlp.fc1.A",
        on.linear(a.clone(), [inp, r], None),
    );
    set(
        &mut cola,
        "blocks[0].mlp.fc1.B",
        on.linear(b.clone(), [r, out], None),
    );
    let z: Vec<f64> = matmul(&x, &a, n, inp, r)
        .into_iter()
        .map(|v| v / (1.0 + (-v).exp()))
        .collect();
    let expected = matmul(&z, &b, n, r, out);
    let feed = [(FC1_INPUT, on.tensor(x, [n, inp]))];
    on.assert_close(
        &run(&cola, &feed, "blocks[0].mlp.fc1.B"),
        &expected,
        1e-7,
        "cola",
    );
    let latent = run(&cola, &feed, "blocks[0].mlp.fc1.latent");
    on.assert_close(&latent, &z, 1e-7, "the latent is post-activation");
}

fn core<B: Backend>(on: &On<B>, values: Vec<f64>, shape: [usize; 3]) -> NodeParams<B> {
    NodeParams::TtCore(TtCore {
        core: Param::from_tensor(on.tensor(values, shape)),
        bias: None,
    })
}

/// W[(i0,i1),(j2,j3)] = Σ C0[i0,a] C1[a,i1,b] C2[b,j2,c] C3[c,j3]
pub fn tt_layer_equals_the_matrix_its_cores_reconstruct<B: Backend>(on: &On<B>) {
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
        let mut tt = on.model(&text);
        let site = "blocks[0].mlp.fc1";
        set(&mut tt, &format!("{site}.C0"), core(on, c0, [1, m0, r1]));
        set(&mut tt, &format!("{site}.C1"), core(on, c1, [r1, m1, rr]));
        set(&mut tt, &format!("{site}.C2"), core(on, c2, [rr, m2, r3]));
        set(&mut tt, &format!("{site}.C3"), core(on, c3, [r3, m3, 1]));
        let feed = [(FC1_INPUT, on.tensor(x, [n, inp]))];
        let y = run(&tt, &feed, &format!("{site}.C3"));
        assert_eq!(run(&tt, &feed, &format!("{site}.latent")).len(), n * rr);
        on.assert_close(&y, &expected, 1e-10, &format!("tt (intra {intra})"));
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

pub fn tensor_gate_is_h_times_kron_g1_g0<B: Backend>(on: &On<B>) {
    let mut rng = StdRng::seed_from_u64(4);
    // Source folded 2×3, target 4×5: G0 is 3×5, G1 is 2×4. Then rank 64's 8 × 8 cores on 300
    // rows (both computed as one product with kron(G1, G0)), and rank 256's 16 × 16 cores,
    // computed factored: 320 rows per core product, which lower::product::rows_times groups
    // on a GPU.
    for (s0, s1, t0, t1, n) in [(2, 3, 4, 5, 3), (8, 8, 8, 8, 300), (16, 16, 16, 16, 20)] {
        let g0 = random(&mut rng, s1 * t1);
        let g1 = random(&mut rng, s0 * t0);
        let h = random(&mut rng, n * s0 * s1);
        let k = kron(&g1, s0, t0, &g0, s1, t1);
        let expected = matmul(&h, &k, n, s0 * s1, t0 * t1);
        let params = NodeParams::TensorGate(TensorGate {
            g0: Param::from_tensor(on.tensor(g0, [s1, t1])),
            g1: Param::from_tensor(on.tensor(g1, [s0, t0])),
        });
        let g = Gate::Tensor {
            input: [s0, s1],
            output: [t0, t1],
        };
        let y = gate(&g, Some(&params), on.tensor(h, [n, s0 * s1])).float();
        on.assert_close(&to_vec(y), &expected, 1e-12, "tensor gate");
    }
}

pub fn linear_dense_and_identity_gates_follow_their_formulas<B: Backend>(on: &On<B>) {
    let mut rng = StdRng::seed_from_u64(5);
    let (n, r, q) = (3, 4, 6);
    let h = random(&mut rng, n * r);
    let alpha = NodeParams::Vector(Param::from_tensor(on.tensor(vec![0.5], [1])));
    let y = to_vec(gate(&Gate::Linear, Some(&alpha), on.tensor(h.clone(), [n, r])).float());
    let halved: Vec<f64> = h.iter().map(|v| 0.5 * v).collect();
    on.assert_close(&y, &halved, 1e-15, "linear");
    let w = random(&mut rng, r * q);
    let b = random(&mut rng, q);
    let mut expected = matmul(&h, &w, n, r, q);
    for i in 0..n {
        for j in 0..q {
            expected[i * q + j] += b[j];
        }
    }
    let dense = on.linear(w, [r, q], Some(b));
    let y = to_vec(gate(&Gate::Dense, Some(&dense), on.tensor(h.clone(), [n, r])).float());
    on.assert_close(&y, &expected, 1e-12, "dense");
    let y = to_vec(gate(&Gate::Identity, None, on.tensor(h.clone(), [n, r])).float());
    on.assert_close(&y, &h, 0.0, "identity");
    // An identity gate has no parameters in the lowered model.
    let m = on.model(
        "model t: llama { vocab = 11, hidden = 8, ffn = 12, heads = 2, layers = 2, seq = 5 }\n\
         factorize attn.q as svd(rank = 4)\nlax inter attn.q { gate = identity }\n",
    );
    let name = "lax[blocks[0].attn.q -> blocks[1].attn.q].gate";
    assert!(m.program.node(name).is_some() && m.params_of(name).is_none());
}

pub fn lax_with_no_norm_identity_gate_and_zero_source_is_the_plain_layer<B: Backend>(on: &On<B>) {
    let mut rng = StdRng::seed_from_u64(6);
    let (n, inp, r, out) = (4, 8, 3, 8);
    let sizes =
        "model t: llama { vocab = 11, hidden = 8, ffn = 12, heads = 2, layers = 2, seq = 5 }\n\
                 factorize attn.q as svd(rank = 3)\n";
    let mut plain = on.model(sizes);
    let mut crossed = on.model(&format!(
        "{sizes}lax inter attn.q {{ gate = identity, norm = none }}\n"
    ));
    let (a, b) = (random(&mut rng, inp * r), random(&mut rng, r * out));
    for m in [&mut plain, &mut crossed] {
        set(
            m,
            "blocks[1].attn.q.A",
            on.linear(a.clone(), [inp, r], None),
        );
        set(
            m,
            "blocks[1].attn.q.B",
            on.linear(b.clone(), [r, out], None),
        );
    }
    let x = on.tensor(random(&mut rng, n * inp), [n, inp]);
    let (input, source, read) = (
        "blocks[1].attn_norm",
        "blocks[0].attn.q.latent",
        "blocks[1].attn.q.B",
    );
    let want = run(&plain, &[(input, x.clone())], read);
    let zero = Tensor::<B, 2>::zeros([n, r], &on.dev);
    let got = run(&crossed, &[(input, x.clone()), (source, zero)], read);
    on.assert_close(&got, &want, 0.0, "zero source");
    // And a non-zero source changes the output: the pathway is really wired.
    let one = Tensor::<B, 2>::ones([n, r], &on.dev);
    let moved = run(&crossed, &[(input, x), (source, one)], read);
    assert!(moved.iter().zip(&want).any(|(a, b)| (a - b).abs() > 1e-9));
}

/// RoPE in the (batch·seq, hidden) layout equals rotate-half RoPE written per head, per position,
/// per pair: out[i] = x[i]·cos(t·θ_i) − x[i + d/2]·sin(t·θ_i) for i < d/2, and
/// out[i] = x[i]·cos(t·θ_(i−d/2)) + x[i − d/2]·sin(t·θ_(i−d/2)) above, θ_j = base^(−2j/d), for
/// LLaMA's base 10000 and SmolLM2's 100000.
pub fn rope_rotates_each_head_by_its_position<B: Backend>(on: &On<B>) {
    for base in [10000.0, 100000.0] {
        rope_with_base(on, base);
    }
}

fn rope_with_base<B: Backend>(on: &On<B>, base: f64) {
    use laxc::lower::attention::{rope, rope_tables};
    let (batch, seq, heads, hd) = (2, 5, 3, 4);
    let hidden = heads * hd;
    let mut rng = StdRng::seed_from_u64(7);
    let x = random(&mut rng, batch * seq * hidden);
    let (cos, sin) = rope_tables::<B>([seq, heads, hidden], base, &on.dev);
    let got = to_vec(rope(
        on.tensor(x.clone(), [batch * seq, hidden]),
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
                        (g - want).abs() < on.tol(1e-6),
                        "b{b} t{t} h{h} i{i}: {g} vs {want}"
                    );
                }
            }
        }
    }
}

/// A one-block LLaMA with grouped-query attention: 4 query heads of width 4 share 2 key-value
/// heads (k and v are 8 wide).
pub const GQA: &str =
    "model t: llama { vocab = 11, hidden = 16, ffn = 8, heads = 4, kv_heads = 2, \
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

pub const GQA_FEEDS: [&str; 3] = ["blocks[0].rope_q", "blocks[0].rope_k", "blocks[0].attn.v.W"];

pub fn grouped_query_attention_shares_each_kv_head_among_its_query_heads<B: Backend>(on: &On<B>) {
    let m = on.model(GQA);
    let (batch, seq, heads, kv_heads, hd) = (2, 5, 4, 2, 4);
    let mut rng = StdRng::seed_from_u64(11);
    let q = random(&mut rng, batch * seq * heads * hd);
    let k = random(&mut rng, batch * seq * kv_heads * hd);
    let v = random(&mut rng, batch * seq * kv_heads * hd);
    let feeds = [
        (
            GQA_FEEDS[0],
            on.tensor(q.clone(), [batch * seq, heads * hd]),
        ),
        (
            GQA_FEEDS[1],
            on.tensor(k.clone(), [batch * seq, kv_heads * hd]),
        ),
        (
            GQA_FEEDS[2],
            on.tensor(v.clone(), [batch * seq, kv_heads * hd]),
        ),
    ];
    let got = m
        .run_part(&feeds, "blocks[0].attention", [batch, seq])
        .unwrap()
        .expect("attention is reached");
    let want = gqa_attention([&q, &k, &v], [batch, seq, heads, kv_heads, hd]);
    on.assert_close(&to_vec(got), &want, 1e-12, "grouped-query attention");
}

/// GPT-2's tanh GELU against its formula, and against the exact GELU it approximates.
pub fn gelu_tanh_follows_its_formula<B: Backend>(on: &On<B>) {
    use laxc::lower::layers::{gelu, gelu_tanh};
    let xs = vec![-6.0, -2.5, -1.0, -0.1, 0.0, 0.3, 1.0, 2.0, 7.5];
    let got = to_vec(gelu_tanh(on.tensor(xs.clone(), [xs.len()])));
    let exact = to_vec(gelu(on.tensor(xs.clone(), [xs.len()])));
    for ((x, g), e) in xs.iter().zip(&got).zip(&exact) {
        let c = (2.0 / std::f64::consts::PI).sqrt();
        let want = 0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh());
        assert!(
            (g - want).abs() < on.tol(1e-12),
            "gelu_tanh({x}) = {g}, want {want}"
        );
        assert!(
            (g - e).abs() < 1e-3,
            "gelu_tanh({x}) = {g} is far from gelu {e}"
        );
    }
}
