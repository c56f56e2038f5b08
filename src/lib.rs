//! laxc: a declarative architecture compiler for low-rank training with Latent Crossing (LaX).
//!
//! The pipeline, one module a stage:
//! ```text
//! .lax text ─syntax─▶ AST ─resolve─▶ Spec ─ir::build─▶ IR ─check─▶ checked IR ─▶ report / dot
//!                                                        └─passes─▶ optimized IR ─lower─▶ Burn
//! ```
//! [`compile`] runs it up to the checked IR and is the only entry point the command line uses;
//! `lower::lower` runs the passes (`passes::optimize`) on the way to a model.

// Diagnostics are returned by value on the error path only, which runs once per mistake in a
// spec; boxing them would buy nothing measurable.
#![allow(clippy::result_large_err)]

pub mod check;
pub mod diagnostic;
pub mod dot;
#[cfg(feature = "train")]
pub mod export;
pub mod family;
pub mod files;
#[cfg(feature = "train")]
pub mod generate;
pub mod import;
pub mod ir;
#[cfg(feature = "train")]
pub mod lower;
pub mod options;
pub mod overrides;
pub mod passes;
pub mod plot;
pub mod report;
pub mod resolve;
pub mod source;
pub mod spec;
pub mod starters;
pub mod syntax;
#[cfg(feature = "train")]
pub mod train;

use diagnostic::Diagnostic;
use source::Source;

/// The default spec laxc uses when none is given: shipped in `specs/`, embedded in the binary.
pub const DEFAULT_SPEC_NAME: &str = "specs/tiny-llama-svd-lax.lax";
pub const DEFAULT_SPEC: &str = include_str!("../specs/tiny-llama-svd-lax.lax");

/// A spec that passed every check.
#[derive(Debug)]
pub struct Compiled {
    pub spec: spec::Spec,
    pub ir: ir::Ir,
    /// Lints: the spec is valid but something looks wrong.
    pub warnings: Vec<Diagnostic>,
    /// Parameters of the dense model of the same sizes, the report's reference.
    pub dense_reference: u128,
}

impl Compiled {
    pub fn report(&self) -> report::Report {
        let ctx = report::ReportContext {
            dense_reference: self.dense_reference,
            rules: &self.spec.rules,
            samples_per_step: self.spec.samples_per_step(),
            batch: self.spec.batch(),
        };
        report::report(&self.ir, &ctx)
    }
}

/// Parses, resolves, builds and checks a spec. On failure returns every diagnostic found
/// (errors and any warnings), in source order.
pub fn compile(source: &Source) -> Result<Compiled, Vec<Diagnostic>> {
    let ast = syntax::parse(&source.text).map_err(|d| vec![d])?;
    let resolved = resolve::resolve(&ast, source);
    let mut diagnostics = resolved.diagnostics;
    let Some(spec) = resolved.spec else {
        return Err(sorted(diagnostics));
    };
    let resolve_failed = diagnostics.iter().any(Diagnostic::is_error);
    let ir = ir::build(&spec);
    for d in check::check(&ir) {
        // After resolution errors, keep only the per-layer shape findings: they stand on
        // their own, while pathway findings could echo an error already reported.
        if !resolve_failed || check::is_site_finding(&d) {
            diagnostics.push(d);
        }
    }
    if diagnostics.iter().any(Diagnostic::is_error) {
        return Err(sorted(diagnostics));
    }
    Ok(Compiled {
        dense_reference: dense_reference_params(&spec),
        spec,
        ir,
        warnings: sorted(diagnostics),
    })
}

/// In source order, each finding once (a rule applied to many blocks reports a mistake once).
fn sorted(mut d: Vec<Diagnostic>) -> Vec<Diagnostic> {
    let mut seen = std::collections::HashSet::new();
    d.retain(|x| seen.insert((x.code, x.span, x.message.clone())));
    d.sort_by_key(|d| (d.span.start, d.span.end));
    d
}

/// The same model with every site dense and no LaX: the report's reference, and the shape of
/// the weights a LoRA base file holds.
pub fn dense_twin(spec: &spec::Spec) -> ir::Ir {
    let mut dense = spec.clone();
    for s in &mut dense.sites {
        s.fact = ir::Factorization::Dense;
    }
    dense.inter.clear();
    dense.intra.clear();
    ir::build(&dense)
}

fn dense_reference_params(spec: &spec::Spec) -> u128 {
    dense_twin(spec)
        .graph
        .node_weights()
        .map(|n| n.op.params())
        .sum()
}
