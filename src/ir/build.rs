//! Spec → IR: runs the family's template (src/family) block by block, expands each linear site
//! into the nodes of its factorization, then wires the LaX pathways between latents.

use super::node::*;
use super::{Ir, PathwayInfo, PathwaySpans, SiteInfo, SiteSpans, Spans};
use crate::family::ModelConfig;
use crate::ir::{Factorization, NormKind, SiteRef};
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
        let bias = self.model().linear_bias();
        let name = self.spec.site_name(site);
        let sc = Scope::Site { site };
        let arriving = self.spec.inter.iter().position(|p| p.target == site);
        let intra = self.spec.intra.iter().any(|p| p.site == site);
        let mut latent = None;
        let mut lax_add = None;
        let n = |s: &str| format!("{name}.{s}");
        // Where a pathway arrives: z = Norm(z + g(h_prev)). The add and the pathway's norm are
        // placed here, in the order they run; the gate that feeds the add is wired with the
        // pathway, once every latent exists.
        let mut arrive = |b: &mut Self, z: NodeIndex, width: usize| -> NodeIndex {
            let Some(pathway) = arriving else { return z };
            let spec = b.spec;
            let p = &spec.inter[pathway];
            let norm_name = pathway_name(spec, p, "norm");
            let norm_op = Op::Norm {
                kind: p.norm,
                width,
                eps: NORM_EPS,
            };
            let add = b.then(z, n("lax_add"), Op::LaxAdd { width }, sc);
            lax_add = Some(add);
            b.then(add, norm_name, norm_op, Scope::Pathway { pathway })
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
            Factorization::Lora {
                rank,
                alpha,
                dropout,
                ..
            } => {
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
                let dropped = self.then(
                    input,
                    n("dropout"),
                    Op::Dropout {
                        width: inp,
                        rate: DropRate::Fixed { p: *dropout },
                    },
                    sc,
                );
                let la = self.then(
                    dropped,
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
        for span in &mut self.spans.nodes[first_node..] {
            *span = Some(a.span);
        }
        let index = self.model().site_index(site);
        self.sites[index] = Some(SiteInfo {
            site,
            name,
            fact: a.fact.clone(),
            inp,
            out,
            latent,
            lax_add,
            intra,
        });
        self.spans.sites[index] = SiteSpans {
            rule: a.span,
            rank: a.rank_span,
            modes: a.modes_span,
        };
        output
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

/// `lax[SOURCE -> TARGET].PART`: the name of a pathway's gate or norm node.
fn pathway_name(spec: &Spec, p: &crate::spec::InterPathway, part: &str) -> String {
    format!(
        "lax[{} -> {}].{part}",
        spec.site_name(p.source),
        spec.site_name(p.target)
    )
}

/// RMSNorm(width), epsilon 1e-6.
pub fn rms(width: usize) -> Op {
    Op::Norm {
        kind: NormKind::Rmsnorm,
        width,
        eps: NORM_EPS,
    }
}

/// LayerNorm(width), epsilon 1e-6.
pub fn ln(width: usize) -> Op {
    Op::Norm {
        kind: NormKind::Layernorm,
        width,
        eps: NORM_EPS,
    }
}
