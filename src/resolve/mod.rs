//! Resolution: AST → [`Spec`]. Evaluates constants, reads the model's sizes, expands selectors
//! to sites (later rules win), and reads every factorization, pathway and training key.
//! All errors are collected; each points at the text that caused it.

mod args;
pub mod eval;
mod factorize;
mod lax;
mod model;
mod selector;
mod train;

use crate::diagnostic::Diagnostic;
use crate::family::ModelConfig;
use crate::ir::SiteRef;
use crate::source::{Source, Span};
use crate::spec::*;
use crate::syntax::ast;
use eval::Scope;

/// What resolution gives: the spec whenever the model itself resolved (even if some rules had
/// errors, so that later checks can still report on the rules that were fine), and every
/// diagnostic found.
pub struct Resolved {
    pub spec: Option<Spec>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Resolves a parsed file, collecting every error: the model, then the factorize rules, the
/// LaX rules and the train section, each pass in its own module.
pub fn resolve(file: &ast::File, source: &Source) -> Resolved {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut scope = Scope::default();
    let Some((model, model_span)) = model::read(file, &mut scope, &mut errors) else {
        return Resolved {
            spec: None,
            diagnostics: errors,
        };
    };
    let mut rules = Rules::new(source);
    let before = errors.len();
    let sites = factorize::resolve_rules(
        file,
        &model,
        model_span,
        &scope,
        &mut rules,
        &mut errors,
        &mut warnings,
    );
    let factorize_failed = errors.len() > before;
    let known = lax::Known {
        model: &model,
        sites: &sites,
        factorize_failed,
        scope: &scope,
    };
    let (inter, intra) = lax::resolve_rules(file, known, &mut rules, &mut errors);
    let rules = rules.finish(&model, &sites, &inter, &intra);
    let train = train::resolve_section(file, &scope, &mut errors);
    errors.extend(warnings);
    Resolved {
        spec: Some(Spec {
            model,
            model_span,
            sites,
            inter,
            intra,
            rules,
            train,
        }),
        diagnostics: errors,
    }
}

/// The factorize and LaX rules in file order, and the sites each matched, for the report.
pub(crate) struct Rules<'a> {
    source: &'a Source,
    matches: Vec<RuleMatch>,
    sites: Vec<Vec<usize>>,
}

impl<'a> Rules<'a> {
    fn new(source: &'a Source) -> Self {
        Rules {
            source,
            matches: Vec::new(),
            sites: Vec::new(),
        }
    }

    /// A new rule written at `span`; returns its index.
    fn add(&mut self, span: Span) -> usize {
        let text = self.source.text.get(span.start..span.end).unwrap_or("");
        let first_line = text.lines().next().unwrap_or("").trim();
        self.matches.push(RuleMatch {
            line: self.source.line_col(span.start).0,
            text: first_line.to_string(),
            sites: 0,
            effective: 0,
        });
        self.sites.push(Vec::new());
        self.matches.len() - 1
    }

    /// Rule `rule` matched the site at `site_index`.
    fn matched(&mut self, rule: usize, site_index: usize) {
        self.sites[rule].push(site_index);
    }

    /// How many sites each rule matched, and on how many it is the last word.
    fn finish(
        self,
        model: &ModelConfig,
        sites: &[SiteAssignment],
        inter: &[InterPathway],
        intra: &[IntraPathway],
    ) -> Vec<RuleMatch> {
        let rule_sites = self.sites;
        let mut rules = self.matches;
        for (i, r) in rules.iter_mut().enumerate() {
            r.sites = rule_sites[i].len();
            r.effective = rule_sites[i]
                .iter()
                .filter(|&&idx| {
                    sites[idx].rule == Some(i)
                        || inter
                            .iter()
                            .any(|p| p.rule == i && model.site_index(p.target) == idx)
                        || intra
                            .iter()
                            .any(|p| p.rule == i && model.site_index(p.site) == idx)
                })
                .count();
        }
        rules
    }
}

pub(crate) fn expand_all(
    selectors: &[ast::Selector],
    model: &ModelConfig,
    scope: &Scope,
    errors: &mut Vec<Diagnostic>,
) -> Vec<SiteRef> {
    let mut out: Vec<SiteRef> = Vec::new();
    for sel in selectors {
        match selector::expand(sel, model, scope) {
            Ok(v) => {
                for s in v {
                    if !out.contains(&s) {
                        out.push(s);
                    }
                }
            }
            Err(d) => errors.push(d),
        }
    }
    out.sort();
    out
}
