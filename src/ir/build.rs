//! Spec → IR: expands the family template block by block, each linear site into the nodes of
//! its factorization, then wires the LaX pathways between latents.

use super::node::*;
use super::{Ir, PathwayInfo, SiteInfo};
use crate::family::{Family, ModelConfig};
use crate::spec::{Activation, Factorization, GateSpec, NormKind, SiteRef, Spec};
use petgraph::graph::{DiGraph, NodeIndex};

struct Builder<'a> {
    spec: &'a Spec,
    g: DiGraph<Node, Edge>,
    sites: Vec<SiteInfo>,
    fine_tuning: bool,
}

/// Builds the IR. Shapes that do not line up (a wrong TT mode, a mismatched gate) are built as
/// written; the check pass finds and reports them.
pub fn build(spec: &Spec) -> Ir {
    let fine_tuning = spec
        .sites
        .iter()
        .any(|s| matches!(s.fact, Factorization::Lora { .. }));
    let mut b = Builder {
        spec,
        g: DiGraph::new(),
        sites: Vec::new(),
        fine_tuning,
    };
    match spec.model.family {
        Family::Llama => b.llama(),
        Family::Vit => b.vit(),
    }
    let pathways = b.pathways();
    Ir {
        model: spec.model.clone(),
        graph: b.g,
        sites: b.sites,
        pathways,
        rules: spec.rules.clone(),
        train: spec.train.clone(),
        fine_tuning,
    }
}

impl Builder<'_> {
    fn m(&self) -> &ModelConfig {
        &self.spec.model
    }

    /// Adds a node. Parameters outside adapters and LaX are frozen when fine-tuning.
    fn add(&mut self, name: String, op: Op, scope: Scope) -> NodeIndex {
        let frozen = self.fine_tuning && !matches!(scope, Scope::Pathway { .. });
        self.g.add_node(Node {
            name,
            op,
            scope,
            tokens: Tokens::All,
            frozen,
            span: None,
        })
    }

    fn edge(&mut self, from: NodeIndex, to: NodeIndex) {
        let shape = self.g[from].op.output_shape();
        self.g.add_edge(
            from,
            to,
            Edge {
                shape,
                kind: EdgeKind::Data,
            },
        );
    }

    fn then(&mut self, from: NodeIndex, name: String, op: Op, scope: Scope) -> NodeIndex {
        let n = self.add(name, op, scope);
        self.edge(from, n);
        n
    }

    fn llama(&mut self) {
        let m = self.m().clone();
        let h = m.hidden;
        let tokens = self.add(
            "tokens".into(),
            Op::TokenInput { seq: m.tokens },
            Scope::Stem,
        );
        let mut x = self.then(
            tokens,
            "embed".into(),
            Op::Embedding {
                vocab: m.vocab,
                dim: h,
            },
            Scope::Stem,
        );
        for block in 0..m.layers {
            let sc = Scope::Block { block };
            let p = |s: &str| format!("blocks[{block}].{s}");
            let n1 = self.then(x, p("attn_norm"), rms(h), sc);
            let q = self.site(n1, block, 0);
            let k = self.site(n1, block, 1);
            let v = self.site(n1, block, 2);
            let qr = self.then(q, p("rope_q"), Op::Rope { width: h }, sc);
            let kr = self.then(k, p("rope_k"), Op::Rope { width: h }, sc);
            let att = self.add(p("attention"), attention(&m, true), sc);
            for src in [qr, kr, v] {
                self.edge(src, att);
            }
            let o = self.site(att, block, 3);
            let r1 = self.add(p("residual_attn"), Op::Add { width: h }, sc);
            self.edge(x, r1);
            self.edge(o, r1);
            let n2 = self.then(r1, p("mlp_norm"), rms(h), sc);
            let gate = self.site(n2, block, 4);
            let act = self.then(
                gate,
                p("silu"),
                Op::Activation {
                    act: Activation::Silu,
                    width: m.ffn,
                },
                sc,
            );
            let up = self.site(n2, block, 5);
            let mul = self.add(p("swiglu"), Op::Mul { width: m.ffn }, sc);
            self.edge(act, mul);
            self.edge(up, mul);
            let down = self.site(mul, block, 6);
            let r2 = self.add(p("residual_mlp"), Op::Add { width: h }, sc);
            self.edge(r1, r2);
            self.edge(down, r2);
            x = r2;
        }
        let fin = self.then(x, "final_norm".into(), rms(h), Scope::Stem);
        let head = self.then(
            fin,
            "head".into(),
            Op::Linear {
                inp: h,
                out: m.vocab,
                bias: false,
                role: Role::Head,
            },
            Scope::Stem,
        );
        self.then(
            head,
            "logits".into(),
            Op::Output { width: m.vocab },
            Scope::Stem,
        );
    }

    fn vit(&mut self) {
        let m = self.m().clone();
        let h = m.hidden;
        let img = self.add(
            "image".into(),
            Op::ImageInput {
                channels: m.channels,
                image: m.image,
                patch: m.patch,
            },
            Scope::Stem,
        );
        let pe = self.then(
            img,
            "patch_embed".into(),
            Op::PatchEmbed {
                channels: m.channels,
                patch: m.patch,
                dim: h,
            },
            Scope::Stem,
        );
        self.g[pe].tokens = Tokens::Patches;
        let cls = self.add("cls_token".into(), Op::ClsToken { dim: h }, Scope::Stem);
        self.g[cls].tokens = Tokens::Cls;
        let pos = self.add(
            "pos_embed".into(),
            Op::PosEmbed {
                tokens: m.tokens,
                dim: h,
            },
            Scope::Stem,
        );
        self.edge(pe, pos);
        self.edge(cls, pos);
        let mut x = pos;
        for block in 0..m.layers {
            let sc = Scope::Block { block };
            let p = |s: &str| format!("blocks[{block}].{s}");
            let n1 = self.then(x, p("norm1"), ln(h), sc);
            let q = self.site(n1, block, 0);
            let k = self.site(n1, block, 1);
            let v = self.site(n1, block, 2);
            let att = self.add(p("attention"), attention(&m, false), sc);
            for src in [q, k, v] {
                self.edge(src, att);
            }
            let o = self.site(att, block, 3);
            let r1 = self.add(p("residual_attn"), Op::Add { width: h }, sc);
            self.edge(x, r1);
            self.edge(o, r1);
            let n2 = self.then(r1, p("norm2"), ln(h), sc);
            let fc1 = self.site(n2, block, 4);
            let mut act = self.then(
                fc1,
                p("gelu"),
                Op::Activation {
                    act: Activation::Gelu,
                    width: m.ffn,
                },
                sc,
            );
            if m.mlp_norm {
                act = self.then(act, p("mlp_norm"), ln(m.ffn), sc);
            }
            let fc2 = self.site(act, block, 5);
            let r2 = self.add(p("residual_mlp"), Op::Add { width: h }, sc);
            self.edge(r1, r2);
            self.edge(fc2, r2);
            x = r2;
        }
        let fin = self.then(x, "final_norm".into(), ln(h), Scope::Stem);
        let head = self.then(
            fin,
            "head".into(),
            Op::Linear {
                inp: h,
                out: m.classes,
                bias: true,
                role: Role::Head,
            },
            Scope::Stem,
        );
        self.g[head].tokens = Tokens::Cls;
        let out = self.then(
            head,
            "logits".into(),
            Op::Output { width: m.classes },
            Scope::Stem,
        );
        self.g[out].tokens = Tokens::Cls;
    }

    /// Expands one linear site into the nodes of its factorization; returns its output node.
    fn site(&mut self, input: NodeIndex, block: usize, local: usize) -> NodeIndex {
        let site = SiteRef { block, local };
        let first_node = self.g.node_count();
        let a = self.spec.site(site).clone();
        let (inp, out) = self.m().site_dims(local);
        let bias = self.m().linear_bias();
        let name = self.spec.site_name(site);
        let sc = Scope::Site { site };
        let arriving = self.spec.inter.iter().any(|p| p.target == site);
        let intra = self.spec.intra.iter().any(|p| p.site == site);
        let mut latent = None;
        let mut lax_add = None;
        let n = |s: &str| format!("{name}.{s}");
        // Where a pathway arrives: z = Norm(z + g(h_prev)). The norm node is added when the
        // pathway is wired (its kind is the pathway's); here only the add.
        let mut arrive = |b: &mut Self, z: NodeIndex, width: usize| -> NodeIndex {
            if arriving {
                let add = b.then(z, n("lax_add"), Op::LaxAdd { width }, sc);
                lax_add = Some(add);
                add
            } else {
                z
            }
        };
        let output = match &a.fact {
            Factorization::Dense => self.then(
                input,
                n("W"),
                Op::Linear {
                    inp,
                    out,
                    bias,
                    role: Role::Dense,
                },
                sc,
            ),
            Factorization::Svd { rank } | Factorization::Cola { rank, .. } => {
                let r = *rank;
                let down = self.then(
                    input,
                    n("A"),
                    Op::Linear {
                        inp,
                        out: r,
                        bias: false,
                        role: Role::Down,
                    },
                    sc,
                );
                let mut z = arrive(self, down, r);
                if let Factorization::Cola { act, .. } = &a.fact {
                    z = self.then(
                        z,
                        n("act"),
                        Op::Activation {
                            act: *act,
                            width: r,
                        },
                        sc,
                    );
                }
                let lat = self.then(z, n("latent"), Op::Latent { width: r }, sc);
                latent = Some(lat);
                self.then(
                    lat,
                    n("B"),
                    Op::Linear {
                        inp: r,
                        out,
                        bias,
                        role: Role::Up,
                    },
                    sc,
                )
            }
            Factorization::Tt { modes, ranks } => {
                let [m0, m1, m2, m3] = *modes;
                let [r1, rr, r3] = *ranks;
                let core = |index, left, mode, right, batch, bias| Op::TtCore {
                    index,
                    left,
                    mode,
                    right,
                    batch,
                    bias,
                };
                let c0 = self.then(input, n("C0"), core(0, 1, m0, r1, m1, 0), sc);
                let c1 = self.then(c0, n("C1"), core(1, r1, m1, rr, 1, 0), sc);
                let z = arrive(self, c1, rr);
                let lat = self.then(z, n("latent"), Op::Latent { width: rr }, sc);
                latent = Some(lat);
                let c2 = self.then(lat, n("C2"), core(2, rr, m2, r3, 1, 0), sc);
                let t3 = if intra {
                    // t3 + t1: a plain add, shapes (m2, r3) and (m1, r1) must agree.
                    let add = self.then(c2, n("intra_add"), Op::LaxAdd { width: m2 * r3 }, sc);
                    self.g.add_edge(
                        c0,
                        add,
                        Edge {
                            shape: vec![m1, r1],
                            kind: EdgeKind::Lax,
                        },
                    );
                    add
                } else {
                    c2
                };
                let out_bias = if bias { out } else { 0 };
                self.then(t3, n("C3"), core(3, r3, m3, 1, m2, out_bias), sc)
            }
            Factorization::Lora { rank, alpha, .. } => {
                let r = *rank;
                let base = self.then(
                    input,
                    n("W0"),
                    Op::Linear {
                        inp,
                        out,
                        bias,
                        role: Role::LoraBase,
                    },
                    sc,
                );
                let la = self.then(
                    input,
                    n("lora_A"),
                    Op::Linear {
                        inp,
                        out: r,
                        bias: false,
                        role: Role::LoraA,
                    },
                    sc,
                );
                let z = arrive(self, la, r);
                let lat = self.then(z, n("latent"), Op::Latent { width: r }, sc);
                latent = Some(lat);
                let lb = self.then(
                    lat,
                    n("lora_B"),
                    Op::Linear {
                        inp: r,
                        out,
                        bias: false,
                        role: Role::LoraB,
                    },
                    sc,
                );
                let merge = self.add(
                    n("merge"),
                    Op::LoraMerge {
                        width: out,
                        scale: alpha / r as f64,
                    },
                    sc,
                );
                self.edge(base, merge);
                self.edge(lb, merge);
                // Only the adapter trains.
                for node in [la, lb] {
                    self.g[node].frozen = false;
                }
                merge
            }
        };
        // Node indices are dense and increasing: this site's nodes are the ones just added.
        for i in first_node..self.g.node_count() {
            self.g[NodeIndex::new(i)].span = Some(a.span);
        }
        self.sites.push(SiteInfo {
            site,
            name,
            fact: a.fact.clone(),
            inp,
            out,
            latent,
            lax_add,
            intra,
            span: a.span,
            rank_span: a.rank_span,
            modes_span: a.modes_span,
        });
        output
    }

    /// Wires every inter-layer pathway: source latent → gate → norm after the target's add.
    fn pathways(&mut self) -> Vec<PathwayInfo> {
        let per_block = self.m().sites_per_block();
        let mut out = Vec::new();
        for p in &self.spec.inter {
            let idx = out.len();
            let src = &self.sites[p.source.block * per_block + p.source.local];
            let dst = &self.sites[p.target.block * per_block + p.target.local];
            let (Some(src_latent), Some(add)) = (src.latent, dst.lax_add) else {
                unreachable!("resolution only makes pathways between factorized sites")
            };
            let src_width = src.fact.latent_width().unwrap_or(0);
            let dst_width = dst.fact.latent_width().unwrap_or(0);
            let (gate, written_input, written_output) = match &p.gate {
                GateSpec::Identity => (Gate::Identity, None, None),
                GateSpec::Linear => (Gate::Linear, None, None),
                GateSpec::Tensor { input, output } => (
                    Gate::Tensor {
                        input: input.unwrap_or_else(|| fold(src_width)),
                        output: output.unwrap_or_else(|| fold(dst_width)),
                    },
                    input.map(|s| s.to_vec()),
                    output.map(|s| s.to_vec()),
                ),
                GateSpec::Dense { input, output } => {
                    (Gate::Dense, input.map(|w| vec![w]), output.map(|w| vec![w]))
                }
            };
            let name = format!(
                "lax[{} -> {}]",
                self.spec.site_name(p.source),
                self.spec.site_name(p.target)
            );
            let sc = Scope::Pathway { pathway: idx };
            let gate_node = self.add(
                format!("{name}.gate"),
                Op::Gate {
                    gate: gate.clone(),
                    src: src_width,
                    dst: dst_width,
                },
                sc,
            );
            self.g[gate_node].span = Some(p.gate_span);
            let shape = self.g[src_latent].op.output_shape();
            self.g.add_edge(
                src_latent,
                gate_node,
                Edge {
                    shape,
                    kind: EdgeKind::Lax,
                },
            );
            let shape = self.g[gate_node].op.output_shape();
            self.g.add_edge(
                gate_node,
                add,
                Edge {
                    shape,
                    kind: EdgeKind::Lax,
                },
            );
            // Insert the norm between the add and whatever consumed the add.
            let consumers: Vec<NodeIndex> = self
                .g
                .neighbors_directed(add, petgraph::Direction::Outgoing)
                .collect();
            let norm = self.add(
                format!("{name}.norm"),
                Op::Norm {
                    kind: p.norm,
                    width: dst_width,
                },
                sc,
            );
            self.g[norm].span = Some(p.span);
            for c in consumers {
                if let Some(e) = self.g.find_edge(add, c) {
                    self.g.remove_edge(e);
                }
                self.edge(norm, c);
            }
            self.edge(add, norm);
            out.push(PathwayInfo {
                source: p.source,
                target: p.target,
                gate,
                norm: p.norm,
                gate_node,
                norm_node: norm,
                written_input,
                written_output,
                src_width,
                dst_width,
                span: p.span,
                gate_span: p.gate_span,
            });
        }
        out
    }
}

fn rms(width: usize) -> Op {
    Op::Norm {
        kind: NormKind::Rmsnorm,
        width,
    }
}

fn ln(width: usize) -> Op {
    Op::Norm {
        kind: NormKind::Layernorm,
        width,
    }
}

fn attention(m: &ModelConfig, causal: bool) -> Op {
    Op::Attention {
        heads: m.heads,
        head_dim: m.hidden / m.heads,
        tokens: m.tokens,
        causal,
    }
}
