//! Spec → IR: runs the family's template (src/family) block by block, expands each linear site
//! into the nodes of its factorization, then wires the LaX pathways between latents.

use super::node::*;
use super::{Ir, PathwayInfo, PathwaySpans, SiteInfo, SiteSpans, Spans};
use crate::family::ModelConfig;
use crate::ir::{Activation, Factorization, NormKind, SiteRef};
use crate::spec::{GateSpec, Spec};
use petgraph::graph::{DiGraph, NodeIndex};

/// What a family's template builds with: nodes, edges and sites, added in the order they run.
pub struct Builder<'a> {
    spec: &'a Spec,
    g: DiGraph<Node, Edge>,
    /// By `ModelConfig::site_index`; a family's block fills every one.
    sites: Vec<Option<SiteInfo>>,
    spans: Spans,
    fine_tuning: bool,
}

/// Builds the IR: the family's stem, its block once per layer, the LaX pathways, its head.
/// Shapes that do not line up (a wrong TT mode, a mismatched gate) are built as written; the
/// check pass finds and reports them.
pub fn build(spec: &Spec) -> Ir {
    let fine_tuning = spec
        .sites
        .iter()
        .any(|s| matches!(s.fact, Factorization::Lora { .. }));
    let mut b = Builder {
        spec,
        g: DiGraph::new(),
        sites: vec![None; spec.sites.len()],
        spans: Spans {
            sites: vec![SiteSpans::default(); spec.sites.len()],
            ..Spans::default()
        },
        fine_tuning,
    };
    let family = spec.model.def();
    let mut x = (family.stem)(&mut b);
    for block in 0..spec.model.layers {
        x = (family.block)(&mut b, x, block);
    }
    // Pathways are wired before the head: node order is then stem, blocks, gates, head, the
    // order in which the lowering draws initial values.
    let pathways = b.pathways();
    (family.head)(&mut b, x);
    Ir {
        model: spec.model.clone(),
        graph: b.g,
        sites: b
            .sites
            .into_iter()
            .map(|s| s.expect("a family's block builds every one of its sites"))
            .collect(),
        spans: b.spans,
        pathways,
        fine_tuning,
    }
}

impl Builder<'_> {
    pub fn model(&self) -> &ModelConfig {
        &self.spec.model
    }

    /// Adds a node. Parameters outside adapters and LaX are frozen when fine-tuning.
    pub fn add(&mut self, name: String, op: Op, scope: Scope) -> NodeIndex {
        let frozen = self.fine_tuning && !matches!(scope, Scope::Pathway { .. });
        self.spans.nodes.push(None);
        self.g.add_node(Node {
            name,
            op,
            scope,
            tokens: Tokens::All,
            frozen,
        })
    }

    pub fn edge(&mut self, from: NodeIndex, to: NodeIndex) {
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

    /// Adds a node that reads `from`.
    pub fn then(&mut self, from: NodeIndex, name: String, op: Op, scope: Scope) -> NodeIndex {
        self.join(&[from], name, op, scope)
    }

    /// Adds a node that reads `inputs`, in that order (the order its op takes them).
    pub fn join(&mut self, inputs: &[NodeIndex], name: String, op: Op, scope: Scope) -> NodeIndex {
        let n = self.add(name, op, scope);
        for &i in inputs {
            self.edge(i, n);
        }
        n
    }

    /// A node of block `block` outside its sites (a norm, RoPE, an activation), named
    /// `blocks[block].NAME`.
    pub fn block_op(&mut self, from: NodeIndex, block: usize, name: &str, op: Op) -> NodeIndex {
        self.block_join(&[from], block, name, op)
    }

    pub fn block_join(
        &mut self,
        inputs: &[NodeIndex],
        block: usize,
        name: &str,
        op: Op,
    ) -> NodeIndex {
        let name = format!("blocks[{block}].{name}");
        self.join(inputs, name, op, Scope::Block { block })
    }

    /// The model's own dropout on `from` (the run's `dropout` option), named
    /// `blocks[block].NAME`.
    pub fn block_dropout(&mut self, from: NodeIndex, block: usize, name: &str) -> NodeIndex {
        let width = self.g[from].op.output_shape().iter().product();
        let op = Op::Dropout {
            width,
            rate: DropRate::Train,
        };
        self.block_op(from, block, name, op)
    }

    /// Which tokens of a sample a node runs on (all, by default).
    pub fn set_tokens(&mut self, node: NodeIndex, tokens: Tokens) {
        self.g[node].tokens = tokens;
    }

    /// The linear site `group.name` of block `block`, reading `input`, in the form the spec
    /// chose; returns its output node.
    pub fn site(&mut self, input: NodeIndex, block: usize, site: &str) -> NodeIndex {
        let local = self.model().local_site(site);
        self.site_nodes(input, SiteRef { block, local })
    }

    /// Expands one linear site into the nodes of its factorization; returns its output node.
    fn site_nodes(&mut self, input: NodeIndex, site: SiteRef) -> NodeIndex {
        let first_node = self.g.node_count();
        let a = self.spec.site(site).clone();
        let (inp, out) = self.model().site_dims(site.local);
        let mut s = SiteBuild {
            name: self.spec.site_name(site),
            scope: Scope::Site { site },
            inp,
            out,
            bias: self.model().linear_bias(),
            arriving: self.spec.inter.iter().position(|p| p.target == site),
            intra: self.spec.intra.iter().any(|p| p.site == site),
            latent: None,
            lax_add: None,
        };
        let output = match &a.fact {
            Factorization::Dense => self.dense_site(&s, input),
            Factorization::Svd { rank } => self.low_rank_site(&mut s, input, *rank, None),
            Factorization::Cola { rank, act } => {
                self.low_rank_site(&mut s, input, *rank, Some(*act))
            }
            Factorization::Tt { modes, ranks } => self.tt_site(&mut s, input, *modes, *ranks),
            Factorization::Lora {
                rank,
                alpha,
                dropout,
                ..
            } => self.lora_site(&mut s, input, *rank, *alpha, *dropout),
        };
        // Node indices are dense and increasing: this site's nodes are the ones just added.
        for span in &mut self.spans.nodes[first_node..] {
            *span = Some(a.span);
        }
        let index = self.model().site_index(site);
        self.sites[index] = Some(SiteInfo {
            site,
            name: s.name,
            fact: a.fact.clone(),
            inp,
            out,
            latent: s.latent,
            lax_add: s.lax_add,
            intra: s.intra,
        });
        self.spans.sites[index] = SiteSpans {
            rule: a.span,
            rank: a.rank_span,
            modes: a.modes_span,
            intra: self
                .spec
                .intra
                .iter()
                .rev()
                .find(|p| p.site == site)
                .map(|p| p.span),
        };
        output
    }

    /// A node of the site being built, named `SITE.part`.
    fn site_op(&mut self, s: &SiteBuild, from: NodeIndex, part: &str, op: Op) -> NodeIndex {
        self.then(from, format!("{}.{part}", s.name), op, s.scope)
    }

    /// Where a pathway arrives: z = Norm(z + g(h_prev)). The add and the pathway's norm are
    /// placed here, in the order they run; the gate that feeds the add is wired with the
    /// pathway, once every latent exists.
    fn arrive(&mut self, s: &mut SiteBuild, z: NodeIndex, width: usize) -> NodeIndex {
        let Some(pathway) = s.arriving else { return z };
        let spec = self.spec;
        let p = &spec.inter[pathway];
        let norm_op = Op::Norm {
            kind: p.norm,
            width,
            eps: NORM_EPS,
        };
        let add = self.site_op(s, z, "lax_add", Op::LaxAdd { width });
        s.lax_add = Some(add);
        self.then(
            add,
            pathway_name(spec, p, "norm"),
            norm_op,
            Scope::Pathway { pathway },
        )
    }

    /// The latent a pathway leaves from: the tensor fed to the layer's up factor.
    fn latent(&mut self, s: &mut SiteBuild, z: NodeIndex, width: usize) -> NodeIndex {
        let lat = self.site_op(s, z, "latent", Op::Latent { width });
        s.latent = Some(lat);
        lat
    }

    fn dense_site(&mut self, s: &SiteBuild, input: NodeIndex) -> NodeIndex {
        let (inp, out, bias) = (s.inp, s.out, s.bias);
        let role = Role::Dense;
        self.site_op(
            s,
            input,
            "W",
            Op::Linear {
                inp,
                out,
                bias,
                role,
            },
        )
    }

    /// SVD (`act` None) or CoLA: `y = σ(Norm(x A + g(h))) B + b`.
    fn low_rank_site(
        &mut self,
        s: &mut SiteBuild,
        input: NodeIndex,
        r: usize,
        act: Option<Activation>,
    ) -> NodeIndex {
        let (inp, out, bias) = (s.inp, s.out, s.bias);
        let down = Op::Linear {
            inp,
            out: r,
            bias: false,
            role: Role::Down,
        };
        let a = self.site_op(s, input, "A", down);
        let mut z = self.arrive(s, a, r);
        if let Some(act) = act {
            z = self.site_op(s, z, "act", Op::Activation { act, width: r });
        }
        let lat = self.latent(s, z, r);
        let up = Op::Linear {
            inp: r,
            out,
            bias,
            role: Role::Up,
        };
        self.site_op(s, lat, "B", up)
    }

    /// A 4-core tensor train (docs/conventions.md §Tensor-train layers), with intra-layer LaX
    /// where the spec asks.
    fn tt_site(
        &mut self,
        s: &mut SiteBuild,
        input: NodeIndex,
        [m0, m1, m2, m3]: [usize; 4],
        [r1, rr, r3]: [usize; 3],
    ) -> NodeIndex {
        let core = |index, left, mode, right, batch, bias| Op::TtCore {
            index,
            left,
            mode,
            right,
            batch,
            bias,
        };
        let c0 = self.site_op(s, input, "C0", core(0, 1, m0, r1, m1, 0));
        let c1 = self.site_op(s, c0, "C1", core(1, r1, m1, rr, 1, 0));
        let z = self.arrive(s, c1, rr);
        let lat = self.latent(s, z, rr);
        let c2 = self.site_op(s, lat, "C2", core(2, rr, m2, r3, 1, 0));
        let t3 = if s.intra {
            // t3 + t1: a plain add, shapes (m2, r3) and (m1, r1) must agree.
            let add = self.site_op(s, c2, "intra_add", Op::LaxAdd { width: m2 * r3 });
            let edge = Edge {
                shape: vec![m1, r1],
                kind: EdgeKind::Lax,
            };
            self.g.add_edge(c0, add, edge);
            add
        } else {
            c2
        };
        let out_bias = if s.bias { s.out } else { 0 };
        self.site_op(s, t3, "C3", core(3, r3, m3, 1, m2, out_bias))
    }

    /// `y = x W₀ + (α / r)·(dropout(x) A) B` with W₀ frozen; only the adapter trains.
    fn lora_site(
        &mut self,
        s: &mut SiteBuild,
        input: NodeIndex,
        r: usize,
        alpha: f64,
        dropout: f64,
    ) -> NodeIndex {
        let (inp, out, bias) = (s.inp, s.out, s.bias);
        let role = Role::LoraBase;
        let base = self.site_op(
            s,
            input,
            "W0",
            Op::Linear {
                inp,
                out,
                bias,
                role,
            },
        );
        let rate = DropRate::Fixed { p: dropout };
        let dropped = self.site_op(s, input, "dropout", Op::Dropout { width: inp, rate });
        let lora_a = Op::Linear {
            inp,
            out: r,
            bias: false,
            role: Role::LoraA,
        };
        let la = self.site_op(s, dropped, "lora_A", lora_a);
        let z = self.arrive(s, la, r);
        let lat = self.latent(s, z, r);
        let lora_b = Op::Linear {
            inp: r,
            out,
            bias: false,
            role: Role::LoraB,
        };
        let lb = self.site_op(s, lat, "lora_B", lora_b);
        let merge = Op::LoraMerge {
            width: out,
            scale: alpha / r as f64,
        };
        let merge = self.join(&[base, lb], format!("{}.merge", s.name), merge, s.scope);
        for node in [la, lb] {
            self.g[node].frozen = false;
        }
        merge
    }

    /// Wires every inter-layer pathway: source latent → gate → norm after the target's add.
    fn pathways(&mut self) -> Vec<PathwayInfo> {
        let mut out = Vec::new();
        for p in &self.spec.inter {
            let idx = out.len();
            let site = |s| self.sites[self.model().site_index(s)].as_ref();
            let (Some(src), Some(dst)) = (site(p.source), site(p.target)) else {
                unreachable!("every site is built before the pathways")
            };
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
            let sc = Scope::Pathway { pathway: idx };
            let gate_node = self.add(
                pathway_name(self.spec, p, "gate"),
                Op::Gate {
                    gate: gate.clone(),
                    src: src_width,
                    dst: dst_width,
                },
                sc,
            );
            self.spans.nodes[gate_node.index()] = Some(p.gate_span);
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
            // The norm was placed after the add when the target site was built.
            let norm = self
                .g
                .neighbors_directed(add, petgraph::Direction::Outgoing)
                .next()
                .expect("a pathway's add feeds its norm");
            self.spans.nodes[norm.index()] = Some(p.span);
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
            });
            self.spans.pathways.push(PathwaySpans {
                rule: p.span,
                gate: p.gate_span,
            });
        }
        out
    }
}

/// A site while its nodes are added: what every part needs, and what the parts report back.
struct SiteBuild {
    name: String,
    scope: Scope,
    inp: usize,
    out: usize,
    bias: bool,
    /// The pathway arriving here, by index into the spec's inter-layer pathways.
    arriving: Option<usize>,
    intra: bool,
    latent: Option<NodeIndex>,
    lax_add: Option<NodeIndex>,
}

/// `lax[SOURCE -> TARGET].PART`: the name of a pathway's gate or norm node.
fn pathway_name(spec: &Spec, p: &crate::spec::InterPathway, part: &str) -> String {
    format!(
        "lax[{} -> {}].{part}",
        spec.site_name(p.source),
        spec.site_name(p.target)
    )
}

/// RMSNorm(width) with the given epsilon.
pub fn rms(width: usize, eps: f64) -> Op {
    Op::Norm {
        kind: NormKind::Rmsnorm,
        width,
        eps,
    }
}

/// LayerNorm(width) with the given epsilon.
pub fn ln(width: usize, eps: f64) -> Op {
    Op::Norm {
        kind: NormKind::Layernorm,
        width,
        eps,
    }
}
