//! One generic lowering from the checked IR to a Burn module, for both families and every
//! factorization. The IR decides everything: which sites exist, their form and shapes, which
//! pathways run where; this file only turns that into parameters and a forward pass.

use super::init::Init;
use super::layers::{
    add_bias, dropout, gelu, silu, DenseLayer, GateModule, LoraLayer, LowRankLayer, Norm, Pathway,
    SiteLayer, TtLayer,
};
use crate::family::Family;
use crate::ir::Ir;
use crate::spec::{Factorization, NormKind};
use burn::module::{Module, Param};
use burn::tensor::{activation, backend::Backend, Int, Tensor, TensorData};

/// What the forward pass needs to know that is not a parameter.
#[derive(Debug, Clone)]
pub struct Plan {
    pub family: Family,
    pub hidden: usize,
    pub heads: usize,
    pub sites_per_block: usize,
    pub tokens: usize,
    pub vocab: usize,
    pub classes: usize,
    pub image: usize,
    pub patch: usize,
    pub channels: usize,
    /// For each site (global index): the pathway arriving there and the site it comes from.
    pub arriving: Vec<Option<(usize, usize)>>,
}

/// LLaMA's token embedding, or the ViT's patch embedding, cls token and positions.
#[derive(Module, Debug)]
pub struct Stem<B: Backend> {
    pub embed: Option<Param<Tensor<B, 2>>>,
    pub patch_weight: Option<Param<Tensor<B, 2>>>,
    pub patch_bias: Option<Param<Tensor<B, 1>>>,
    pub cls: Option<Param<Tensor<B, 1>>>,
    pub pos: Option<Param<Tensor<B, 2>>>,
}

#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    pub norm1: Norm<B>,
    pub norm2: Norm<B>,
    /// The authors' low-rank ViTs: LayerNorm(mlp) between fc1's GELU and fc2.
    pub mlp_norm: Option<Norm<B>>,
    pub sites: Vec<SiteLayer<B>>,
}

#[derive(Module, Debug)]
pub struct LaxModel<B: Backend> {
    pub stem: Stem<B>,
    pub blocks: Vec<Block<B>>,
    pub pathways: Vec<Pathway<B>>,
    pub final_norm: Norm<B>,
    pub head: Param<Tensor<B, 2>>,
    pub head_bias: Option<Param<Tensor<B, 1>>>,
    #[module(skip)]
    pub plan: Plan,
}

/// Builds the model from the IR, initialized from `seed` (DESIGN.md §3's distributions).
pub fn lower<B: Backend>(ir: &Ir, seed: u64, device: &B::Device) -> LaxModel<B> {
    let m = &ir.model;
    let mut init = Init::new(seed);
    let h = m.hidden;
    // Fine-tuning freezes everything but adapters and LaX.
    let freeze = |p: Param<Tensor<B, 2>>| {
        if ir.fine_tuning {
            p.set_require_grad(false)
        } else {
            p
        }
    };
    let freeze1 = |p: Param<Tensor<B, 1>>| {
        if ir.fine_tuning {
            p.set_require_grad(false)
        } else {
            p
        }
    };
    let stem = match m.family {
        Family::Llama => Stem {
            embed: Some(freeze(init.normal([m.vocab, h], 0.02, device))),
            patch_weight: None,
            patch_bias: None,
            cls: None,
            pos: None,
        },
        Family::Vit => Stem {
            embed: None,
            patch_weight: Some(freeze(init.trunc_normal(
                [m.channels * m.patch * m.patch, h],
                0.02,
                device,
            ))),
            patch_bias: Some(freeze1(init.constant([h], 0.0, device))),
            cls: Some(freeze1(init.normal([h], 1e-6, device))),
            pos: Some(freeze(init.trunc_normal([m.tokens, h], 0.02, device))),
        },
    };
    let block_norm = match m.family {
        Family::Llama => NormKind::Rmsnorm,
        Family::Vit => NormKind::Layernorm,
    };
    let norm = |width: usize| {
        let n = Norm::new(block_norm, width, device);
        if ir.fine_tuning {
            n.no_grad()
        } else {
            n
        }
    };
    let per_block = m.sites_per_block();
    let mut blocks = Vec::with_capacity(m.layers);
    for b in 0..m.layers {
        let sites = (0..per_block)
            .map(|l| site_layer(ir, &ir.sites[b * per_block + l], &mut init, device))
            .collect();
        blocks.push(Block {
            norm1: norm(h),
            norm2: norm(h),
            mlp_norm: m.mlp_norm.then(|| {
                let n = Norm::new(NormKind::Layernorm, m.ffn, device);
                if ir.fine_tuning {
                    n.no_grad()
                } else {
                    n
                }
            }),
            sites,
        });
    }
    let mut arriving = vec![None; ir.sites.len()];
    let pathways = ir
        .pathways
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let src = p.source.block * per_block + p.source.local;
            let dst = p.target.block * per_block + p.target.local;
            arriving[dst] = Some((i, src));
            Pathway {
                gate: GateModule::new(&p.gate, p.src_width, p.dst_width, &mut init, device),
                norm: Norm::new(p.norm, p.dst_width, device),
            }
        })
        .collect();
    let (head_out, head_bias) = match m.family {
        Family::Llama => (m.vocab, None),
        Family::Vit => (
            m.classes,
            Some(freeze1(init.constant([m.classes], 0.0, device))),
        ),
    };
    let model = LaxModel {
        stem,
        blocks,
        pathways,
        final_norm: norm(h),
        head: freeze(init.trunc_normal([h, head_out], 0.02, device)),
        head_bias,
        plan: Plan {
            family: m.family,
            hidden: h,
            heads: m.heads,
            sites_per_block: per_block,
            tokens: m.tokens,
            vocab: m.vocab,
            classes: m.classes,
            image: m.image,
            patch: m.patch,
            channels: m.channels,
            arriving,
        },
    };
    // Parameter ids by position, so the same spec always has the same ids: the optimizer state
    // of a checkpoint (keyed by id) then fits the model a resumed run lowers afresh.
    model.map(&mut SequentialIds { next: 0 })
}

struct SequentialIds {
    next: u64,
}

impl<B: Backend> burn::module::ModuleMapper<B> for SequentialIds {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (_, tensor, mapper) = param.consume();
        self.next += 1;
        Param::from_mapped_value(burn::module::ParamId::from(self.next), tensor, mapper)
    }
}

fn site_layer<B: Backend>(
    ir: &Ir,
    s: &crate::ir::SiteInfo,
    init: &mut Init,
    device: &B::Device,
) -> SiteLayer<B> {
    let (inp, out) = (s.inp, s.out);
    let llama = ir.model.family == Family::Llama;
    let has_bias = ir.model.linear_bias();
    let frozen = ir.fine_tuning;
    let dense_weight = |init: &mut Init| {
        if llama {
            init.normal([inp, out], 0.02, device)
        } else {
            init.trunc_normal([inp, out], 0.02, device)
        }
    };
    // Factorized layers keep a bias drawn from N(0, 1), as the authors' code does.
    let factor_bias = |init: &mut Init| has_bias.then(|| init.normal([out], 1.0, device));
    match &s.fact {
        Factorization::Dense => {
            let weight = dense_weight(init);
            let bias = has_bias.then(|| init.constant([out], 0.0, device));
            SiteLayer::Dense(DenseLayer {
                weight: weight.set_require_grad(!frozen),
                bias: bias.map(|b| b.set_require_grad(!frozen)),
            })
        }
        Factorization::Svd { rank } | Factorization::Cola { rank, .. } => {
            let r = *rank;
            let (a, b) = if llama {
                // CoLA's LLaMA init: N(0, 1) · r^-1/4 · (in + out)^-1/4.
                let std = (r as f64).powf(-0.25) * ((inp + out) as f64).powf(-0.25);
                (
                    init.normal([inp, r], std, device),
                    init.normal([r, out], std, device),
                )
            } else {
                // kaiming-normal with PyTorch's fan-in (the second dimension).
                (
                    init.normal([inp, r], (2.0 / r as f64).sqrt(), device),
                    init.normal([r, out], (2.0 / out as f64).sqrt(), device),
                )
            };
            let act = match &s.fact {
                Factorization::Cola { act, .. } => Some(*act),
                _ => None,
            };
            SiteLayer::LowRank(LowRankLayer {
                a,
                b,
                bias: factor_bias(init),
                act,
            })
        }
        Factorization::Tt { modes, ranks } => {
            let [m0, m1, m2, m3] = *modes;
            let [r1, rr, r3] = *ranks;
            let std = |m: usize, b: usize| (2.0 / (m * b) as f64).sqrt();
            SiteLayer::Tt(TtLayer {
                c0: init.normal([m0, r1], std(m0, r1), device),
                c1: init.normal([r1, m1, rr], std(m1, rr), device),
                c2: init.normal([rr, m2, r3], std(m2, r3), device),
                c3: init.normal([r3, m3], std(m3, 1), device),
                bias: factor_bias(init),
                modes: *modes,
                ranks: *ranks,
                intra: s.intra,
            })
        }
        Factorization::Lora {
            rank,
            alpha,
            dropout: p,
            ..
        } => {
            let r = *rank;
            let base = dense_weight(init).set_require_grad(false);
            let base_bias =
                has_bias.then(|| init.constant([out], 0.0, device).set_require_grad(false));
            SiteLayer::Lora(LoraLayer {
                base,
                base_bias,
                // PyTorch's kaiming_uniform_(a = √5) on A: bound 1/√in; B starts at zero so the
                // adapted model starts equal to the base.
                a: init.uniform([inp, r], 1.0 / (inp as f64).sqrt(), device),
                b: init.constant([r, out], 0.0, device),
                scale: alpha / r as f64,
                dropout: dropout(*p),
            })
        }
    }
}

impl<B: Backend> LaxModel<B> {
    /// Runs one site, feeding it the pathway that arrives there, and records its latent.
    fn site(
        &self,
        block: usize,
        local: usize,
        x: Tensor<B, 2>,
        latents: &mut [Option<Tensor<B, 2>>],
    ) -> Tensor<B, 2> {
        let g = block * self.plan.sites_per_block + local;
        let arriving = self.plan.arriving[g]
            .and_then(|(p, src)| latents[src].clone().map(|h| (h, &self.pathways[p])));
        let (y, latent) = self.blocks[block].sites[local].forward(x, arriving);
        latents[g] = latent;
        y
    }

    /// The attention half of block `b`: pre-norm, q/k/v sites, optional RoPE, attention, the o
    /// site and the residual. `x` is (batch·seq, hidden).
    fn attention(
        &self,
        b: usize,
        x: Tensor<B, 2>,
        [batch, seq]: [usize; 2],
        rope_tables: Option<(&Tensor<B, 2>, &Tensor<B, 2>)>,
        causal_bias: Option<&Tensor<B, 4>>,
        latents: &mut [Option<Tensor<B, 2>>],
    ) -> Tensor<B, 2> {
        let plan = &self.plan;
        let hn = self.blocks[b].norm1.forward(x.clone());
        let mut q = self.site(b, 0, hn.clone(), latents);
        let mut k = self.site(b, 1, hn.clone(), latents);
        let v = self.site(b, 2, hn, latents);
        // RoPE before the head split, while q and k are contiguous: on the permuted
        // (batch, heads, seq, head_dim) view the CPU backends fall back to an element-by-element
        // strided walk, which cost ~10 % of a step (BENCHMARKS.md, attempt 3).
        if let Some((cos, sin)) = rope_tables {
            q = rope(q, batch, plan.heads, cos, sin);
            k = rope(k, batch, plan.heads, cos, sin);
        }
        let heads = |t: Tensor<B, 2>| {
            t.reshape([batch, seq, plan.heads, plan.hidden / plan.heads])
                .swap_dims(1, 2)
        };
        let att = sdpa(heads(q), heads(k), heads(v), causal_bias)
            .swap_dims(1, 2)
            .reshape([batch * seq, plan.hidden]);
        x + self.site(b, 3, att, latents)
    }

    /// LLaMA: token ids (batch, seq) → logits (batch, seq, vocab).
    pub fn forward_tokens(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let plan = &self.plan;
        let [batch, seq] = tokens.dims();
        let embed = self
            .stem
            .embed
            .as_ref()
            .expect("forward_tokens is for llama models");
        let n = batch * seq;
        let mut x = embed.val().select(0, tokens.reshape([n]));
        let (rope_cos, rope_sin) = rope_tables::<B>(seq, plan.heads, plan.hidden, &x.device());
        let (rope_cos, rope_sin) = (rope_cos.repeat_dim(0, batch), rope_sin.repeat_dim(0, batch));
        let causal = causal_bias::<B>([batch, plan.heads, seq], &x.device());
        let mut latents = vec![None; plan.arriving.len()];
        for (b, block) in self.blocks.iter().enumerate() {
            let rope = Some((&rope_cos, &rope_sin));
            x = self.attention(b, x, [batch, seq], rope, Some(&causal), &mut latents);
            let mn = block.norm2.forward(x.clone());
            let gate = silu(self.site(b, 4, mn.clone(), &mut latents));
            let up = self.site(b, 5, mn, &mut latents);
            x = x.clone() + self.site(b, 6, gate * up, &mut latents);
        }
        let logits = self.final_norm.forward(x).matmul(self.head.val());
        add_bias(logits, &self.head_bias).reshape([batch, seq, plan.vocab])
    }

    /// ViT: images (batch, channels, height, width) → logits (batch, classes).
    pub fn forward_images(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        let plan = &self.plan;
        let [batch, c, hgt, wid] = images.dims();
        let (Some(weight), Some(bias), Some(cls), Some(pos)) = (
            &self.stem.patch_weight,
            &self.stem.patch_bias,
            &self.stem.cls,
            &self.stem.pos,
        ) else {
            panic!("forward_images is for vit models")
        };
        let p = plan.patch;
        let (gh, gw) = (hgt / p, wid / p);
        // Patchify in (channel, row, column) order, the order of a flattened Conv2d kernel.
        let patches = images
            .reshape([batch * c * gh, p, gw, p])
            .swap_dims(1, 2)
            .reshape([batch, c, gh * gw, p * p])
            .swap_dims(1, 2)
            .reshape([batch * gh * gw, c * p * p]);
        let emb = add_bias(patches.matmul(weight.val()), &Some(bias.clone())).reshape([
            batch,
            gh * gw,
            plan.hidden,
        ]);
        let cls = cls.val().reshape([1, 1, plan.hidden]).repeat_dim(0, batch);
        let x3 = Tensor::cat(vec![cls, emb], 1) + pos.val().unsqueeze::<3>();
        let tokens = gh * gw + 1;
        let n = batch * tokens;
        let mut x = x3.reshape([n, plan.hidden]);
        let mut latents = vec![None; plan.arriving.len()];
        for (b, block) in self.blocks.iter().enumerate() {
            x = self.attention(b, x, [batch, tokens], None, None, &mut latents);
            let mn = block.norm2.forward(x.clone());
            let mut a = gelu(self.site(b, 4, mn, &mut latents));
            if let Some(norm) = &block.mlp_norm {
                a = norm.forward(a);
            }
            x = x.clone() + self.site(b, 5, a, &mut latents);
        }
        let x = self
            .final_norm
            .forward(x)
            .reshape([batch, tokens, plan.hidden]);
        let cls_out = x.narrow(1, 0, 1).reshape([batch, plan.hidden]);
        add_bias(cls_out.matmul(self.head.val()), &self.head_bias)
    }
}

/// Tables for rotate-half RoPE (base 10000) over a whole (seq, hidden) row, every head alike:
/// `cos[t, i]` and `sin[t, i]`, with the sign of rotate-half folded into `sin` (negative on the
/// first half of each head), so that `rope(x) = x·cos + swap_halves(x)·sin`.
pub fn rope_tables<B: Backend>(
    seq: usize,
    heads: usize,
    hidden: usize,
    device: &B::Device,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let hd = hidden / heads;
    let half = hd / 2;
    let mut cos = Vec::with_capacity(seq * hidden);
    let mut sin = Vec::with_capacity(seq * hidden);
    for t in 0..seq {
        for _ in 0..heads {
            for i in 0..hd {
                let f = 1.0 / 10000f64.powf((2 * (i % half)) as f64 / hd as f64);
                let a = t as f64 * f;
                let sign = if i < half { -1.0 } else { 1.0 };
                cos.push(a.cos() as f32);
                sin.push((sign * a.sin()) as f32);
            }
        }
    }
    (
        Tensor::from_data(TensorData::new(cos, [seq, hidden]), device),
        Tensor::from_data(TensorData::new(sin, [seq, hidden]), device),
    )
}

/// Rotate-half RoPE of q or k in the (batch·seq, hidden) layout: per head, `x·cos +
/// rotate_half(x)·sin` with `rotate_half([x1, x2]) = [−x2, x1]` (the sign lives in `sin`).
pub fn rope<B: Backend>(
    x: Tensor<B, 2>,
    batch: usize,
    heads: usize,
    cos: &Tensor<B, 2>,
    sin: &Tensor<B, 2>,
) -> Tensor<B, 2> {
    let [n, hidden] = x.dims();
    let hd = hidden / heads;
    let half = hd / 2;
    let per_head = x.clone().reshape([n * heads, hd]);
    let swapped = Tensor::cat(
        vec![
            per_head.clone().narrow(1, half, half),
            per_head.narrow(1, 0, half),
        ],
        1,
    );
    // Tables of the full (batch·seq, hidden) shape: a broadcast operand would send the product
    // down the backends' strided path again.
    let (cos, sin) = if cos.dims()[0] == n {
        (cos.clone(), sin.clone())
    } else {
        (
            cos.clone().repeat_dim(0, batch),
            sin.clone().repeat_dim(0, batch),
        )
    };
    x * cos + swapped.reshape([n, hidden]) * sin
}

/// The causal mask as an additive bias, 0 on and below the diagonal and −10³⁰ above, in the
/// full (batch, heads, seq, seq) shape of the scores: adding a broadcast operand, or
/// `mask_fill` with a broadcast mask, sends the CPU backends down an element-by-element strided
/// path (BENCHMARKS.md, attempt 3).
fn causal_bias<B: Backend>([batch, heads, n]: [usize; 3], device: &B::Device) -> Tensor<B, 4> {
    let mut bias = vec![0f32; batch * heads * n * n];
    for (i, row) in bias.chunks_exact_mut(n).enumerate() {
        row[i % n + 1..].fill(-1e30);
    }
    Tensor::from_data(TensorData::new(bias, [batch, heads, n, n]), device)
}

/// Scaled dot-product attention, softmax(q kᵀ / √d + mask) v, over (batch, heads, seq, d).
/// Written out (the same matmul / mask / softmax graph Burn's CPU fallback runs under autodiff)
/// so that every op on the path is one the finite-difference tests cover.
fn sdpa<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    causal_bias: Option<&Tensor<B, 4>>,
) -> Tensor<B, 4> {
    let d = q.dims()[3];
    let scores = q
        .matmul(k.swap_dims(2, 3))
        .mul_scalar(1.0 / (d as f64).sqrt());
    let scores = match causal_bias {
        Some(bias) => scores + bias.clone(),
        None => scores,
    };
    activation::softmax(scores, 3).matmul(v)
}
