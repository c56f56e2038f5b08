//! What each IR op computes, as Burn tensor code: one arm per op kind. A value is `(N, width)`
//! with N = batch × the tokens the node runs on (all tokens, the patches, or the cls token).

use super::attention::{causal_bias, causal_bias_after, rope, rope_tables_at, sdpa};
use super::fused;
use super::layers::apply_activation;
use super::params::{add_bias, Linear, NodeParams, TensorGate};
use super::precision::{cast_like, native, widen};
use super::product::rows_times;
use super::program::Step;
use crate::ir::{DropRate, Gate, Op};
use burn::tensor::{backend::Backend, DType, FloatDType, Int, Tensor};

/// A value flowing on an IR edge.
#[derive(Debug, Clone)]
pub enum Value<B: Backend> {
    /// Token ids, `(batch, seq)`.
    Ids(Tensor<B, 2, Int>),
    /// Images, `(batch, channels, height, width)`.
    Images(Tensor<B, 4>),
    /// Activations, `(N, width)`.
    Float(Tensor<B, 2>),
    /// Activations split by attention's heads, `(batch, heads, seq, head)`: RoPE's output
    /// where a GPU back end writes it so for attention (`fused::rope_by_heads`).
    Heads(Tensor<B, 4>),
    /// A linear gate's `h · α`, `(N, width)` and one element, not yet multiplied: a pathway's
    /// norm of the sum takes the two as they are (`lax_add_scaled_norm`, one node each way where the
    /// product would be a node of its own and a tensor written and read back); anything else
    /// multiplies them first.
    Scaled(Tensor<B, 2>, Tensor<B, 1>),
}

impl<B: Backend> Value<B> {
    /// The activations as `(N, width)` rows (those split by head merged back).
    pub fn float(self) -> Tensor<B, 2> {
        match self {
            Value::Float(t) => t,
            Value::Heads(t) => {
                let [batch, heads, seq, head] = t.dims();
                fused::merge_heads(t).reshape([batch * seq, heads * head])
            }
            Value::Scaled(h, alpha) => fused::scale(h, alpha),
            _ => unreachable!("the checked IR feeds activations here"),
        }
    }

    fn device(&self) -> B::Device {
        match self {
            Value::Ids(t) => t.device(),
            Value::Images(t) => t.device(),
            Value::Float(t) => t.device(),
            Value::Heads(t) => t.device(),
            Value::Scaled(h, _) => h.device(),
        }
    }
}

/// RoPE's cos and sin tables of a pass's positions, `(seq, width)`.
type RopeTables<B> = (Tensor<B, 2>, Tensor<B, 2>);

/// What one forward pass shares between nodes: its batch and sequence, and tables built once.
pub struct Frame<B: Backend> {
    pub batch: usize,
    /// Tokens per sample in this pass.
    pub seq: usize,
    /// The run's `dropout` option, for the model's own dropout nodes.
    pub dropout: f64,
    /// Whether the rates the spec fixes (LoRA's) apply.
    pub fixed_dropout: bool,
    /// RoPE tables by the width they rotate (q and k differ under grouped-query attention).
    rope: Vec<(usize, RopeTables<B>)>,
    causal: Option<Tensor<B, 4>>,
    /// Generation: the keys and values of the positions before this pass, which it extends.
    pub cache: Option<KvCache<B>>,
    /// The dtype of activations and matrix products (`lower::precision`).
    pub dtype: FloatDType,
}

/// The keys and values every attention node has seen, for generating one token at a time
/// without recomputing the prefix: per attention node, `(batch, kv_heads, positions, d)`.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    /// Positions already cached: where this pass's tokens start.
    pub offset: usize,
    entries: Vec<(usize, Tensor<B, 4>, Tensor<B, 4>)>,
}

impl<B: Backend> KvCache<B> {
    pub fn new() -> Self {
        KvCache {
            offset: 0,
            entries: Vec::new(),
        }
    }

    /// The node's keys and values with this pass's appended; stores them.
    fn extend(
        &mut self,
        node: usize,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
    ) -> (Tensor<B, 4>, Tensor<B, 4>) {
        match self.entries.iter_mut().find(|(n, _, _)| *n == node) {
            Some((_, ck, cv)) => {
                *ck = Tensor::cat(vec![ck.clone(), k], 2);
                *cv = Tensor::cat(vec![cv.clone(), v], 2);
                (ck.clone(), cv.clone())
            }
            None => {
                self.entries.push((node, k.clone(), v.clone()));
                (k, v)
            }
        }
    }
}

impl<B: Backend> Default for KvCache<B> {
    fn default() -> Self {
        Self::new()
    }
}

impl<B: Backend> Frame<B> {
    pub fn new(
        batch: usize,
        seq: usize,
        dropout: f64,
        fixed_dropout: bool,
        dtype: FloatDType,
    ) -> Self {
        Frame {
            batch,
            seq,
            dropout,
            fixed_dropout,
            rope: Vec::new(),
            causal: None,
            cache: None,
            dtype,
        }
    }

    /// Where this pass's first token is in its sequence.
    fn offset(&self) -> usize {
        self.cache.as_ref().map_or(0, |c| c.offset)
    }

    /// RoPE tables of the pass's positions, `(seq, width)`: the rope node reads a row's
    /// position's row of them, the composed formula repeats them over the batch.
    fn rope(
        &mut self,
        [width, heads]: [usize; 2],
        theta: f64,
        device: &B::Device,
    ) -> &RopeTables<B> {
        let (seq, offset) = (self.seq, self.offset());
        let at = match self.rope.iter().position(|(w, _)| *w == width) {
            Some(at) => at,
            None => {
                let (cos, sin) = rope_tables_at::<B>(offset, [seq, heads, width], theta, device);
                let dtype = self.dtype;
                let tables = (cos.cast(dtype), sin.cast(dtype));
                self.rope.push((width, tables));
                self.rope.len() - 1
            }
        };
        &self.rope[at].1
    }

    fn causal(&mut self, heads: usize, device: &B::Device) -> Tensor<B, 4> {
        let (batch, seq) = (self.batch, self.seq);
        self.causal
            .get_or_insert_with(|| causal_bias::<B>([batch, heads, seq], device))
            .clone()
    }
}

fn params<B: Backend>(p: Option<&NodeParams<B>>) -> &NodeParams<B> {
    p.expect("the lowering gives this op its parameters")
}

fn linear<B: Backend>(p: Option<&NodeParams<B>>) -> &Linear<B> {
    match params(p) {
        NodeParams::Linear(l) => l,
        _ => unreachable!("a linear op has linear parameters"),
    }
}

/// Runs one step on its inputs (in the order the IR wired them).
pub fn eval<B: Backend>(
    step: &Step,
    p: Option<&NodeParams<B>>,
    mut args: Vec<Value<B>>,
    frame: &mut Frame<B>,
) -> Value<B> {
    let out = match &step.op {
        Op::TokenInput { .. } | Op::ImageInput { .. } => {
            unreachable!("the model's input is given, not computed")
        }
        Op::Embedding { .. } => {
            let (Value::Ids(ids), NodeParams::Table(table)) = (args.swap_remove(0), params(p))
            else {
                unreachable!("an embedding reads token ids")
            };
            let [b, n] = ids.dims();
            table
                .val()
                .select(0, ids.reshape([b * n]))
                .cast(frame.dtype)
        }
        Op::PatchEmbed { patch, .. } => {
            let Value::Images(images) = args.swap_remove(0) else {
                unreachable!("a patch embedding reads images")
            };
            linear(p).forward(patchify(images, *patch).cast(frame.dtype))
        }
        Op::PosEmbed { dim, .. } => {
            let NodeParams::Table(table) = params(p) else {
                unreachable!("positions are a table")
            };
            let table = table.val().cast(frame.dtype);
            positions(args, table, *dim, [frame.batch, frame.offset()])
        }
        Op::Attention {
            heads, kv_heads, ..
        } if frame.cache.is_some() => {
            let mut qkv = args.into_iter().map(Value::float);
            let mut next = || qkv.next().expect("attention reads q, k and v");
            let qkv = [next(), next(), next()];
            return attention_cached(step.node, qkv, [*heads, *kv_heads], frame);
        }
        Op::Attention {
            heads,
            kv_heads,
            causal,
            ..
        } => {
            let qkv: [Value<B>; 3] = args.try_into().expect("attention reads q, k and v");
            let mask = causal.then(|| frame.causal(*heads, &qkv[0].device()));
            attention(qkv, [*heads, *kv_heads], frame, mask.as_ref())
        }
        Op::Gate { gate, .. } => return self::gate(gate, p, args.swap_remove(0).float()),
        Op::LaxAddNorm { .. } if matches!(args[1], Value::Scaled(..)) => {
            let Value::Scaled(h, alpha) = args.swap_remove(1) else {
                unreachable!("matched above")
            };
            let z = args.swap_remove(0).float();
            lax_add_scaled_norm(p, z, (h, alpha), frame.dtype)
        }
        Op::Rope {
            width,
            heads,
            theta,
        } => {
            let x = args.swap_remove(0).float();
            let (cos, sin) = frame.rope([*width, *heads], *theta, &x.device());
            return match fused::rope_by_heads(x, *heads, [cos, sin]) {
                Ok(split) => Value::Heads(split),
                Err(x) => Value::Float(rope(x, *heads, cos, sin)),
            };
        }
        op => {
            let floats = args.into_iter().map(Value::float).collect();
            eval_float(op, step.first_token_only, p, floats, frame)
        }
    };
    Value::Float(out)
}

/// The ops that read and write activations.
fn eval_float<B: Backend>(
    op: &Op,
    first_token_only: bool,
    p: Option<&NodeParams<B>>,
    args: Vec<Tensor<B, 2>>,
    frame: &mut Frame<B>,
) -> Tensor<B, 2> {
    let mut args = args.into_iter();
    let mut arg = || args.next().expect("the IR wires every input");
    match op {
        Op::ClsToken { dim } => {
            let NodeParams::Vector(cls) = params(p) else {
                unreachable!("the cls token is a vector")
            };
            let cls = cls.val().cast(frame.dtype);
            cls.reshape([1, *dim]).repeat_dim(0, frame.batch)
        }
        Op::Norm { .. } => match p {
            None => arg(),
            // Norms in f32, their output back in the pass's dtype.
            Some(NodeParams::LayerNorm(n)) => n.forward(widen(arg())).cast(frame.dtype),
            Some(NodeParams::RmsNorm(n)) => n.forward(widen(arg())).cast(frame.dtype),
            Some(_) => unreachable!("a norm has norm parameters"),
        },
        Op::LaxAddNorm { .. } => lax_add_norm(p, [arg(), arg()], frame.dtype),
        Op::Linear { .. } => {
            let mut x = arg();
            if first_token_only {
                x = first_tokens(x, frame.batch);
            }
            linear(p).forward(x)
        }
        Op::TiedHead { .. } => {
            let NodeParams::Table(table) = params(p) else {
                unreachable!("a tied head reads the embedding table")
            };
            let x = arg();
            let table = cast_like(table.val(), &x);
            fused::matmul_transposed(x, table, 1.0)
        }
        Op::TtCore {
            index,
            left,
            mode,
            right,
            batch,
            ..
        } => {
            let NodeParams::TtCore(c) = params(p) else {
                unreachable!("a TT core has a core")
            };
            let x = arg();
            let core = cast_like(c.core.val(), &x);
            let y = tt_core(x, core, *index, [*left, *mode, *right, *batch]);
            add_bias(y, &c.bias)
        }
        Op::Latent { .. } | Op::Output { .. } => arg(),
        Op::LaxAdd { .. } => fused::lax_add(arg(), arg()),
        Op::Add { .. } => arg() + arg(),
        Op::Mul { .. } => arg() * arg(),
        Op::SwiGlu { .. } => fused::swiglu(arg(), arg()),
        Op::Gate { .. } => unreachable!("`eval` runs the gates"),
        Op::Activation { act, .. } => apply_activation(*act, arg()),
        Op::Dropout { rate, .. } => {
            let p = match rate {
                DropRate::Fixed { p } if frame.fixed_dropout => *p,
                DropRate::Fixed { .. } => 0.0,
                DropRate::Train => frame.dropout,
            };
            fused::dropout(arg(), p)
        }
        Op::LoraMerge { scale, .. } => {
            let (base, adapter) = (arg(), arg());
            base + adapter.mul_scalar(*scale)
        }
        Op::TokenInput { .. } | Op::ImageInput { .. } | Op::Embedding { .. } => {
            unreachable!("handled by eval")
        }
        Op::PatchEmbed { .. } | Op::PosEmbed { .. } => unreachable!("handled by eval"),
        Op::Rope { .. } | Op::Attention { .. } => unreachable!("handled by eval"),
    }
}

/// Image patches as rows, in (channel, row, column) order: the order of a flattened Conv2d
/// kernel.
fn patchify<B: Backend>(images: Tensor<B, 4>, p: usize) -> Tensor<B, 2> {
    let [batch, c, hgt, wid] = images.dims();
    let (gh, gw) = (hgt / p, wid / p);
    images
        .reshape([batch * c * gh, p, gw, p])
        .swap_dims(1, 2)
        .reshape([batch, c, gh * gw, p * p])
        .swap_dims(1, 2)
        .reshape([batch * gh * gw, c * p * p])
}

/// Joins the inputs' tokens per sample, in input order (the cls token, then the patches), and
/// adds the learned positions of the `seq` places from `offset` (0 but in a pass that continues
/// a cached sequence).
fn positions<B: Backend>(
    args: Vec<Value<B>>,
    table: Tensor<B, 2>,
    dim: usize,
    [batch, offset]: [usize; 2],
) -> Tensor<B, 2> {
    let mut parts: Vec<Tensor<B, 3>> = args
        .into_iter()
        .map(|a| {
            let t = a.float();
            let rows = t.dims()[0];
            t.reshape([batch, rows / batch, dim])
        })
        .collect();
    let x = if parts.len() == 1 {
        parts.pop().expect("one part")
    } else {
        Tensor::cat(parts, 1)
    };
    let seq = x.dims()[1];
    let table = if table.dims()[0] == seq && offset == 0 {
        table
    } else {
        table.narrow(0, offset, seq)
    };
    // The table repeated over the batch, not broadcast: Flex adds a broadcast operand element
    // by element along strides (870 µs of a tiny ViT's 19 ms step), equal shapes in one pass.
    (x + table.unsqueeze::<3>().repeat_dim(0, batch)).reshape([batch * seq, dim])
}

/// The first token of each sample: `(batch·seq, w)` → `(batch, w)`.
fn first_tokens<B: Backend>(x: Tensor<B, 2>, batch: usize) -> Tensor<B, 2> {
    let [n, w] = x.dims();
    x.reshape([batch, n / batch, w])
        .narrow(1, 0, 1)
        .reshape([batch, w])
}

/// One core of a 4-core tensor train (docs/conventions.md §Tensor-train layers), on values
/// kept 2-D:
/// C0: x (N, m0·m1) → t1 (N, m1·r1); C1: t1 → t2 (N, R); C2: t2 → t3 (N, m2·r3);
/// C3: t3 → y (N, m2·m3). `[left, mode, right, batch]` are the IR's.
fn tt_core<B: Backend>(
    x: Tensor<B, 2>,
    core: Tensor<B, 3>,
    index: usize,
    [left, mode, right, batch]: [usize; 4],
) -> Tensor<B, 2> {
    let n = x.dims()[0];
    match index {
        // t1[n, i1, a] = Σ_i0 x[n, i0, i1] C0[i0, a]: the first and last cores are small
        // (m × r) matrices applied to every (n, i) row.
        0 => {
            let rows = fused::swap_middle_axes(x.reshape([n, mode, batch]));
            rows_times(rows.reshape([n * batch, mode]), core.reshape([mode, right]))
                .reshape([n, batch * right])
        }
        // t2[n, b] = Σ_{i1, a} t1[n, i1, a] C1[a, i1, b]: t1's rows as they are, against the
        // core with its first two axes swapped, a copy of the small core where swapping t1's
        // axes copied every row of the activations, each way (BENCHMARKS.md, attempt 64).
        1 => {
            let core = fused::swap_middle_axes(core.reshape([1, left, mode, right]));
            rows_times(x, core.reshape([mode * left, right]))
        }
        // t3[n, j2, c] = Σ_b t2[n, b] C2[b, j2, c]
        2 => rows_times(x, core.reshape([left, mode * right])),
        // y[n, j2, j3] = Σ_c t3[n, j2, c] C3[c, j3]
        _ => rows_times(x.reshape([n * batch, left]), core.reshape([left, mode]))
            .reshape([n, batch * mode]),
    }
}

/// A LaX gate on the source latent `(N, src)` → `(N, dst)`; a linear gate's product deferred
/// ([`Value::Scaled`]) for the norm of the sum to take in its own pass.
pub fn gate<B: Backend>(gate: &Gate, p: Option<&NodeParams<B>>, h: Tensor<B, 2>) -> Value<B> {
    Value::Float(match (gate, p) {
        (Gate::Identity, _) => h,
        (Gate::Linear, Some(NodeParams::Vector(alpha))) => {
            let alpha = cast_like(alpha.val(), &h);
            return Value::Scaled(h, alpha);
        }
        (Gate::Tensor { input, output }, Some(NodeParams::TensorGate(g))) => {
            tensor_gate(h, g, *input, *output)
        }
        (Gate::Dense, Some(NodeParams::Linear(l))) => l.forward(h),
        _ => unreachable!("a gate has the parameters of its kind"),
    })
}

/// A pathway's `Norm(z + g(h))` (`passes::fuse_lax_norms`): one node that adds inside the
/// norm. In a half-precision pass the add stays in that precision, as the IR as written has
/// it, and the norm runs on its widened sum as a `Norm` node does.
fn lax_add_norm<B: Backend>(
    p: Option<&NodeParams<B>>,
    [z, gated]: [Tensor<B, 2>; 2],
    dtype: FloatDType,
) -> Tensor<B, 2> {
    let half = dtype != native::<B>();
    match (params(p), half) {
        (NodeParams::LayerNorm(n), false) => n.forward_sum(z, gated),
        (NodeParams::RmsNorm(n), false) => n.forward_sum(z, gated),
        (NodeParams::LayerNorm(n), true) => n.forward(widen(z + gated)).cast(dtype),
        (NodeParams::RmsNorm(n), true) => n.forward(widen(z + gated)).cast(dtype),
        _ => unreachable!("the pass fuses only norms with parameters"),
    }
}

/// [`lax_add_norm`] of `z` and a linear gate's `h · α` ([`Value::Scaled`]): in the pass's own
/// precision one node that multiplies as it adds (`fused::add_scaled_layer_norm`), the same
/// values as the product and the norm of the sum; in a half-precision pass the product first.
fn lax_add_scaled_norm<B: Backend>(
    p: Option<&NodeParams<B>>,
    z: Tensor<B, 2>,
    (h, alpha): (Tensor<B, 2>, Tensor<B, 1>),
    dtype: FloatDType,
) -> Tensor<B, 2> {
    if dtype != native::<B>() {
        return lax_add_norm(p, [z, fused::scale(h, alpha)], dtype);
    }
    match params(p) {
        NodeParams::LayerNorm(n) => n.forward_scaled_sum(z, (h, alpha)),
        NodeParams::RmsNorm(n) => n.forward_scaled_sum(z, (h, alpha)),
        _ => unreachable!("the pass fuses only norms with parameters"),
    }
}

/// `G1ᵀ R G0` with R the row-major `s0 × s1` fold of h: equal to `h · kron(G1, G0)`.
///
/// As one node (`fused::tensor_gate`) when the dense `kron(G1, G0)` costs at most
/// `KRON_FACTOR` times the factored form's multiply-adds (rank 64's 8 × 8 cores: four times),
/// or when the node factors the rows in registers (Flex in f32 with AVX-512 or AVX2, ranks 16 to
/// 1,024: `fused::factors_tensor_gate`); elsewhere one GEMM by the dense product. Either
/// instead of two small GEMMs and two axis swaps each way (BENCHMARKS.md, attempts 16, 50 and
/// 52), which larger gates keep on other backends.
fn tensor_gate<B: Backend>(
    h: Tensor<B, 2>,
    g: &TensorGate<B>,
    [s0, s1]: [usize; 2],
    [t0, t1]: [usize; 2],
) -> Tensor<B, 2> {
    let n = h.dims()[0];
    let (g0, g1) = (cast_like(g.g0.val(), &h), cast_like(g.g1.val(), &h));
    let dense_is_cheap = s0 * s1 * t0 * t1 <= KRON_FACTOR * (s0 * s1 * t1 + s0 * t1 * t0);
    let factored = h.dtype() == DType::F32 && fused::factors_tensor_gate::<B>([s0, t0], [s1, t1]);
    if dense_is_cheap || factored {
        return fused::tensor_gate(h, g1, g0);
    }
    // R G0: (N·s0, s1)(s1, t1) → (N, s0, t1)
    let r = rows_times(h.reshape([n * s0, s1]), g0);
    // G1ᵀ (R G0): contract s0 with G1 (s0, t0) → (N, t1, t0) → (N, t0, t1)
    let r = fused::swap_middle_axes(r.reshape([n, s0, t1])).reshape([n * t1, s0]);
    let r = rows_times(r, g1);
    fused::swap_middle_axes(r.reshape([n, t1, t0])).reshape([n, t0 * t1])
}

/// How many times the factored tensor gate's multiply-adds the dense product may cost and
/// still be used (measured at rank 64, where the two are equal; BENCHMARKS.md, attempt 16).
const KRON_FACTOR: usize = 4;

/// Multi-head attention on `(batch·seq, heads·d)` rows: split the heads, attend, merge. The
/// split heads are views for the products to read in place (`fused::split_heads_for_products`),
/// but for key-value heads shared between query heads (GQA), copied for their repeat; q and k
/// may come split already (RoPE's output on a GPU back end, [`Value::Heads`]).
fn attention<B: Backend>(
    [q, k, v]: [Value<B>; 3],
    [heads, kv_heads]: [usize; 2],
    frame: &Frame<B>,
    mask: Option<&Tensor<B, 4>>,
) -> Tensor<B, 2> {
    let (batch, seq) = (frame.batch, frame.seq);
    let split = |value: Value<B>, n: usize| match value {
        Value::Heads(split) => split,
        value if n == heads => {
            let t = value.float();
            let d = t.dims()[1] / n;
            fused::split_heads_for_products(t.reshape([batch, seq, n, d]))
        }
        value => split_heads(value.float(), [batch, seq, n]),
    };
    attend(
        split(q, heads),
        split(k, kv_heads),
        split(v, kv_heads),
        mask,
    )
}

/// Attention of split queries `(batch, heads, seq, d)` over split keys and values
/// `(batch, kv_heads, keys, d)`, merged back to `(batch·seq, heads·d)` rows (on Flex without a
/// copy: `sdpa`'s last product writes the heads merged).
fn attend<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: Option<&Tensor<B, 4>>,
) -> Tensor<B, 2> {
    let [batch, heads, seq, d] = q.dims();
    let out = sdpa(q, shared_heads(k, heads), shared_heads(v, heads), mask);
    fused::merge_heads(out).reshape([batch * seq, heads * d])
}

/// `(batch·seq, n·d)` → `(batch, n, seq, d)`, contiguous.
fn split_heads<B: Backend>(t: Tensor<B, 2>, [batch, seq, n]: [usize; 3]) -> Tensor<B, 4> {
    let d = t.dims()[1] / n;
    fused::swap_middle_axes(t.reshape([batch, seq, n, d]))
}

/// Key-value heads repeated to every query head: query head h reads key-value head
/// h / (heads / kv_heads), as HF's `repeat_kv`.
fn shared_heads<B: Backend>(t: Tensor<B, 4>, heads: usize) -> Tensor<B, 4> {
    let [batch, kv_heads, seq, d] = t.dims();
    if kv_heads == heads {
        return t;
    }
    t.unsqueeze_dim::<5>(2)
        .repeat_dim(2, heads / kv_heads)
        .reshape([batch, heads, seq, d])
}

/// Causal attention of this pass's queries over the cached positions and its own: the pass's
/// keys and values join the node's cache (always causal: only decoders generate).
fn attention_cached<B: Backend>(
    node: usize,
    [q, k, v]: [Tensor<B, 2>; 3],
    [heads, kv_heads]: [usize; 2],
    frame: &mut Frame<B>,
) -> Value<B> {
    let (batch, seq) = (frame.batch, frame.seq);
    let device = q.device();
    let cache = frame.cache.as_mut().expect("called with a cache");
    let offset = cache.offset;
    let (k, v) = cache.extend(
        node,
        split_heads(k, [batch, seq, kv_heads]),
        split_heads(v, [batch, seq, kv_heads]),
    );
    // One new query sees every position: no mask.
    let mask = (seq > 1).then(|| causal_bias_after::<B>([batch, heads, seq], offset, &device));
    let q = split_heads(q, [batch, seq, heads]);
    Value::Float(attend(q, k, v, mask.as_ref()))
}
