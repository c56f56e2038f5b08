//! pest grammar → spanned AST. Syntax errors become diagnostics in plain words.

use super::ast::*;
use crate::diagnostic::Diagnostic;
use crate::source::Span;
use pest::error::{ErrorVariant, InputLocation};
use pest::iterators::Pair;
use pest::Parser;

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/lax.pest"]
struct LaxParser;

/// Deeper nesting than any spec needs; the recursive-descent parser must not exhaust the stack.
const MAX_NESTING: usize = 64;

/// Rejects brackets nested deeper than [`MAX_NESTING`] (outside strings and comments).
fn check_nesting(text: &str) -> Result<(), Diagnostic> {
    let (mut depth, mut in_str, mut in_comment) = (0usize, false, false);
    for (i, c) in text.char_indices() {
        match c {
            '\n' => in_comment = false,
            _ if in_comment => {}
            '"' => in_str = !in_str,
            '#' if !in_str => in_comment = true,
            '(' | '[' | '{' if !in_str => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(Diagnostic::error(
                        "E0001",
                        format!("brackets nested more than {MAX_NESTING} deep"),
                        Span::new(i, i + 1),
                    )
                    .with_label("too deep")
                    .with_hint("simplify the expression"));
                }
            }
            ')' | ']' | '}' if !in_str => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Parses a whole file. On a syntax error, returns one diagnostic pointing at it.
pub fn parse(text: &str) -> Result<File, Diagnostic> {
    check_nesting(text)?;
    let mut pairs = LaxParser::parse(Rule::file, text).map_err(|e| file_error(text, e))?;
    let file = pairs.next().expect("the file rule always yields one pair");
    let mut items = Vec::new();
    for pair in file.into_inner() {
        match pair.as_rule() {
            Rule::model_decl => items.push(Item::Model(model_decl(pair))),
            Rule::let_decl => items.push(Item::Let(let_decl(pair))),
            Rule::factorize_rule => items.push(Item::Factorize(factorize_rule(pair))),
            Rule::lax_rule => items.push(Item::Lax(lax_rule(pair))),
            Rule::train_block => items.push(Item::Train(train_block(pair))),
            Rule::EOI => {}
            r => unreachable!("grammar yields no {r:?} at the top level"),
        }
    }
    Ok(File { items })
}

/// Parses a lone value (`3e-3`, `cosine(warmup = 60)`, `"file.txt"`).
pub fn parse_value(text: &str) -> Result<Value, Diagnostic> {
    check_nesting(text)?;
    let mut pairs = LaxParser::parse(Rule::value_only, text).map_err(|e| syntax_error(text, e))?;
    let only = pairs.next().expect("value_only yields one pair");
    Ok(value(only.into_inner().next().expect("a value")))
}

/// A command line's `NAME=VALUE` (`--set`): the trimmed name, the value's text and the byte
/// offset it starts at. Without `=` it is E0607, with `example` as the hint; `what` names the
/// left side in the message (`key`, `name`).
pub fn split_assignment<'a>(
    text: &'a str,
    what: &str,
    example: &str,
) -> Result<(&'a str, &'a str, usize), Diagnostic> {
    let Some((name, value)) = text.split_once('=') else {
        return Err(Diagnostic::error(
            "E0607",
            format!("an override is `{what}=value`"),
            Span::new(0, text.len()),
        )
        .with_label("no `=`")
        .with_hint(example.to_string()));
    };
    Ok((name.trim(), value, name.len() + 1))
}

/// Parses the value of a `NAME=VALUE` that starts at byte `offset`, with spans into the whole
/// `NAME=VALUE` (the name's width is padding).
pub fn parse_value_at(value: &str, offset: usize) -> Result<Value, Diagnostic> {
    parse_value(&format!("{}{value}", " ".repeat(offset)))
}

fn ident(pair: Pair<Rule>) -> Ident {
    Ident {
        name: pair.as_str().to_string(),
        span: pair.as_span().into(),
    }
}

fn model_decl(pair: Pair<Rule>) -> ModelDecl {
    let span = pair.as_span().into();
    let mut inner = pair.into_inner();
    inner.next(); // `model`
    let name = ident(inner.next().unwrap());
    let family = ident(inner.next().unwrap());
    let entries = entries(inner.next().unwrap());
    ModelDecl {
        name,
        family,
        entries,
        span,
    }
}

fn let_decl(pair: Pair<Rule>) -> LetDecl {
    let span = pair.as_span().into();
    let mut inner = pair.into_inner();
    inner.next(); // `let`
    let name = ident(inner.next().unwrap());
    let value = value(inner.next().unwrap());
    LetDecl { name, value, span }
}

fn factorize_rule(pair: Pair<Rule>) -> FactorizeRule {
    let span = pair.as_span().into();
    let mut inner = pair.into_inner();
    inner.next(); // `factorize`
    let selectors = selectors(inner.next().unwrap());
    inner.next(); // `as`
    let kind = value(inner.next().unwrap());
    FactorizeRule {
        selectors,
        kind,
        span,
    }
}

fn lax_rule(pair: Pair<Rule>) -> LaxRule {
    let span = pair.as_span().into();
    let mut inner = pair.into_inner();
    inner.next(); // `lax`
    let kind = ident(inner.next().unwrap().into_inner().next().unwrap());
    let selectors = selectors(inner.next().unwrap());
    let mut from = None;
    let mut entries_ = Vec::new();
    for p in inner {
        match p.as_rule() {
            Rule::from_clause => {
                let sel = p.into_inner().nth(1).unwrap();
                from = Some(selector(sel));
            }
            Rule::entries => entries_ = entries(p),
            r => unreachable!("unexpected {r:?} in a lax rule"),
        }
    }
    LaxRule {
        kind,
        selectors,
        from,
        entries: entries_,
        span,
    }
}

fn train_block(pair: Pair<Rule>) -> TrainBlock {
    let span = pair.as_span().into();
    let mut inner = pair.into_inner();
    inner.next(); // `train`
    TrainBlock {
        entries: entries(inner.next().unwrap()),
        span,
    }
}

fn entries(pair: Pair<Rule>) -> Vec<Entry> {
    pair.into_inner().map(entry).collect()
}

fn entry(pair: Pair<Rule>) -> Entry {
    let span = pair.as_span().into();
    let mut inner = pair.into_inner();
    let key = ident(inner.next().unwrap());
    let value = value(inner.next().unwrap());
    Entry { key, value, span }
}

fn selectors(pair: Pair<Rule>) -> Vec<Selector> {
    pair.into_inner().map(selector).collect()
}

fn selector(pair: Pair<Rule>) -> Selector {
    let span = pair.as_span().into();
    let mut blocks = None;
    let mut segments = Vec::new();
    for p in pair.into_inner() {
        match p.as_rule() {
            Rule::block_selector => blocks = Some(block_range(p.into_inner().next().unwrap())),
            Rule::segment => segments.push(segment(p.into_inner().next().unwrap())),
            r => unreachable!("unexpected {r:?} in a selector"),
        }
    }
    Selector {
        blocks,
        segments,
        span,
    }
}

fn block_range(pair: Pair<Rule>) -> BlockRange {
    let span: Span = pair.as_span().into();
    let p = pair.into_inner().next().unwrap();
    match p.as_rule() {
        Rule::star => BlockRange::All(span),
        Rule::range_full => {
            let mut it = p.into_inner();
            let start = expr(it.next().unwrap());
            let op = it.next().unwrap().as_str() == "..=";
            let end = expr(it.next().unwrap());
            BlockRange::Range {
                start: Some(start),
                end: Some(end),
                inclusive: op,
                span,
            }
        }
        Rule::range_from => BlockRange::Range {
            start: Some(expr(p.into_inner().next().unwrap())),
            end: None,
            inclusive: false,
            span,
        },
        Rule::range_to => {
            let mut it = p.into_inner();
            let inclusive = it.next().unwrap().as_str() == "..=";
            BlockRange::Range {
                start: None,
                end: Some(expr(it.next().unwrap())),
                inclusive,
                span,
            }
        }
        Rule::index_set => BlockRange::Set(p.into_inner().map(expr).collect(), span),
        Rule::expr => BlockRange::One(expr(p)),
        r => unreachable!("unexpected {r:?} in a block range"),
    }
}

fn segment(pair: Pair<Rule>) -> Segment {
    match pair.as_rule() {
        Rule::star => Segment::Any(pair.as_span().into()),
        Rule::name_set => {
            let span = pair.as_span().into();
            Segment::Set(pair.into_inner().map(ident).collect(), span)
        }
        Rule::ident => Segment::Name(ident(pair)),
        r => unreachable!("unexpected {r:?} in a segment"),
    }
}

fn value(pair: Pair<Rule>) -> Value {
    let p = pair.into_inner().next().unwrap();
    let span: Span = p.as_span().into();
    match p.as_rule() {
        Rule::string => Value::Str(unescape(p.as_str()), span),
        Rule::list => Value::List(p.into_inner().map(value).collect(), span),
        Rule::call => {
            let mut it = p.into_inner();
            let name = ident(it.next().unwrap());
            let args = it
                .next()
                .unwrap()
                .into_inner()
                .map(|a| {
                    let inner = a.into_inner().next().unwrap();
                    match inner.as_rule() {
                        Rule::entry => Arg::Named(entry(inner)),
                        Rule::value => Arg::Positional(value(inner)),
                        r => unreachable!("unexpected {r:?} in arguments"),
                    }
                })
                .collect();
            Value::Call(Call { name, args, span })
        }
        Rule::expr => Value::Expr(expr(p)),
        r => unreachable!("unexpected {r:?} in a value"),
    }
}

fn unescape(quoted: &str) -> String {
    let body = &quoted[1..quoted.len() - 1];
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn expr(pair: Pair<Rule>) -> Expr {
    // expr = term (add_op term)*; term = factor (mul_op factor)*: left-associative folds.
    let mut it = pair.into_inner();
    let mut acc = term(it.next().unwrap());
    while let Some(op) = it.next() {
        let rhs = term(it.next().unwrap());
        let op = match op.as_str() {
            "+" => BinOp::Add,
            _ => BinOp::Sub,
        };
        let span = acc.span().join(rhs.span());
        acc = Expr::Binary(Box::new(acc), op, Box::new(rhs), span);
    }
    acc
}

fn term(pair: Pair<Rule>) -> Expr {
    let mut it = pair.into_inner();
    let mut acc = factor(it.next().unwrap());
    while let Some(op) = it.next() {
        let rhs = factor(it.next().unwrap());
        let op = match op.as_str() {
            "*" => BinOp::Mul,
            "/" => BinOp::Div,
            _ => BinOp::Rem,
        };
        let span = acc.span().join(rhs.span());
        acc = Expr::Binary(Box::new(acc), op, Box::new(rhs), span);
    }
    acc
}

fn factor(pair: Pair<Rule>) -> Expr {
    let span: Span = pair.as_span().into();
    let mut it = pair.into_inner().peekable();
    let negated = it.peek().map(|p| p.as_rule()) == Some(Rule::neg);
    if negated {
        it.next();
    }
    let a = it.next().unwrap();
    let inner = match a.as_rule() {
        Rule::number => number(a),
        Rule::ident => Expr::Name(ident(a)),
        Rule::expr => expr(a),
        r => unreachable!("unexpected {r:?} in a factor"),
    };
    if negated {
        Expr::Neg(Box::new(inner), span)
    } else {
        inner
    }
}

fn number(pair: Pair<Rule>) -> Expr {
    let span: Span = pair.as_span().into();
    let text = pair.as_str();
    // `number` is atomic, so its alternatives leave no inner pairs: tell them apart by text.
    if text.contains(['.', 'e', 'E']) {
        Expr::Decimal(text.parse::<f64>().unwrap_or(f64::NAN), span)
    } else {
        match text.replace('_', "").parse::<i64>() {
            Ok(v) => Expr::Int(v, span),
            // Too large for i64: evaluation reports it as out of range.
            Err(_) => Expr::Decimal(f64::INFINITY, span),
        }
    }
}

/// Words for what the parser expected, instead of pest's rule names.
fn rule_words(rule: &Rule) -> Option<&'static str> {
    Some(match rule {
        Rule::EOI => "end of file",
        Rule::kw_model => "`model`",
        Rule::kw_let => "`let`",
        Rule::kw_factorize => "`factorize`",
        Rule::kw_lax => "`lax`",
        Rule::kw_train => "`train`",
        Rule::kw_as => "`as`",
        Rule::kw_from => "`from`",
        Rule::ident | Rule::lax_kind => "a name",
        Rule::entry | Rule::entries => "a `key = value` pair",
        Rule::value | Rule::arg | Rule::args => "a value",
        Rule::expr | Rule::term | Rule::factor | Rule::number | Rule::integer | Rule::decimal => {
            "a number or a name"
        }
        Rule::string => "a string",
        Rule::list => "a list `[...]`",
        Rule::call => "a call like `svd(rank = 64)`",
        Rule::selector | Rule::selectors | Rule::segment => "a site like `attn.q` or `mlp.*`",
        Rule::block_selector => "`blocks[...]`",
        Rule::block_range | Rule::range_full | Rule::range_from | Rule::range_to => {
            "a block index or range like `0..4`"
        }
        Rule::index_set | Rule::name_set => "a set like `{a, b}`",
        Rule::star => "`*`",
        Rule::add_op | Rule::mul_op => "an operator",
        Rule::range_op => "`..` or `..=`",
        Rule::from_clause => "`from`",
        Rule::exponent => "an exponent",
        Rule::neg => "`-`",
        _ => return None,
    })
}

/// Where pest stopped.
fn error_pos(err: &pest::error::Error<Rule>) -> usize {
    match err.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    }
}

/// The items a file is made of, each with its rule and its form for hints.
const ITEMS: &[(&str, Rule, &str)] = &[
    (
        "model",
        Rule::model_decl,
        "model NAME: FAMILY { key = value, ... }",
    ),
    ("let", Rule::let_decl, "let NAME = VALUE"),
    (
        "factorize",
        Rule::factorize_rule,
        "factorize SITES as KIND(args)",
    ),
    (
        "lax",
        Rule::lax_rule,
        "lax inter SITES [from SITE] { gate = ..., norm = ... }, or lax intra SITES",
    ),
    ("train", Rule::train_block, "train { key = value, ... }"),
];

/// A syntax error in a whole file. pest gives up on an item at its first word (`model`, `lax`,
/// ...) when anything inside it is wrong, so the item is parsed again on its own to find the
/// real place; an item left unclosed is reported at its open bracket.
fn file_error(text: &str, err: pest::error::Error<Rule>) -> Diagnostic {
    let pos = error_pos(&err);
    if let Some(d) = unclosed_bracket(text, pos) {
        return d;
    }
    let item = item_start(text, pos);
    let early = match item {
        Some((start, "lax")) => lax_without_kind(text, start),
        Some((start, "model")) => model_header(text, start),
        _ => None,
    };
    if let Some(d) = early {
        return d;
    }
    let Some((start, keyword)) = item.filter(|(start, _)| *start == pos) else {
        return syntax_error(text, err);
    };
    let &(_, rule, form) = ITEMS
        .iter()
        .find(|(k, _, _)| *k == keyword)
        .expect("an item");
    match LaxParser::parse(rule, &text[start..]) {
        Ok(_) => syntax_error(text, err),
        Err(inner) => {
            let mut d = syntax_error_at(text, start + error_pos(&inner), &inner.variant);
            if d.hint.is_none() {
                d.hint = Some(format!("{keyword} is written `{form}`"));
            }
            d
        }
    }
}

/// The item a position is in: the last line that starts with an item's keyword, at or
/// before it.
fn item_start(text: &str, pos: usize) -> Option<(usize, &'static str)> {
    let pos = pos.min(text.len());
    let line_start = |i: usize| text[..i].rfind('\n').map_or(0, |n| n + 1);
    let mut end = pos;
    loop {
        let start = line_start(end);
        let line = &text[start..];
        let indent = line.len() - line.trim_start_matches([' ', '\t']).len();
        let word: String = line[indent..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if let Some((k, _, _)) = ITEMS.iter().find(|(k, _, _)| *k == word) {
            return Some((start + indent, k));
        }
        if start == 0 {
            return None;
        }
        end = start - 1;
    }
}

/// `model NAME: FAMILY {`: the first part of it that is missing or wrong.
fn model_header(text: &str, start: usize) -> Option<Diagnostic> {
    let mut at = start + "model".len();
    let skip_ws = |at: usize| at + (text[at..].len() - text[at..].trim_start().len());
    let word_end = |at: usize| {
        at + text[at..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .map(char::len_utf8)
            .sum::<usize>()
    };
    let expect = |at: usize, what: &str, label: &str| {
        let (found, span) = token_at(text, at);
        Some(
            Diagnostic::error("E0001", format!("syntax error: expected {what}, found {found}"), span)
                .with_label(label.to_string())
                .with_hint("a model is written `model NAME: FAMILY { key = value, ... }`, e.g. `model tiny: llama { ... }`"),
        )
    };
    at = skip_ws(at);
    if word_end(at) == at {
        return expect(at, "the model's name", "a name goes here");
    }
    at = skip_ws(word_end(at));
    if !text[at..].starts_with(':') {
        return expect(
            at,
            "`:` after the model's name",
            "expected `:` before the family",
        );
    }
    at = skip_ws(at + 1);
    if word_end(at) == at {
        return expect(
            at,
            "the model family (llama, gpt2 or vit)",
            "a family goes here",
        );
    }
    at = skip_ws(word_end(at));
    if !text[at..].starts_with('{') {
        return expect(at, "`{` to open the model's sizes", "expected `{`");
    }
    None
}

/// `lax attn.* {...}`: the word after `lax` must say which kind of pathway.
fn lax_without_kind(text: &str, item: usize) -> Option<Diagnostic> {
    let after = &text[item + "lax".len()..];
    let start = item + "lax".len() + (after.len() - after.trim_start().len());
    let word: String = text[start..]
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    let next = text[start + word.len()..].chars().next();
    if word == "inter" || word == "intra" || next != Some('.') && next != Some('[') {
        return None;
    }
    Some(
        Diagnostic::error(
            "E0001",
            "syntax error: `lax` is followed by `inter` or `intra`, then the sites",
            Span::new(start, start + word.len().max(1)),
        )
        .with_label("expected `inter` or `intra` before the sites")
        .with_hint(format!(
            "e.g. `lax inter {} {{ gate = identity }}`",
            text[start..]
                .split(|c: char| c.is_whitespace() || c == '{')
                .next()
                .unwrap_or("")
        )),
    )
}

/// A `(`, `[` or `{` still open where the parse failed at the end of the file or at the next
/// item: the bracket is the mistake, not the place pest stopped.
fn unclosed_bracket(text: &str, pos: usize) -> Option<Diagnostic> {
    let rest = text.get(pos..).unwrap_or("");
    let at_item = ITEMS.iter().any(|(k, _, _)| rest.starts_with(k));
    if !(rest.trim().is_empty() || at_item) {
        return None;
    }
    let mut open: Vec<(usize, char)> = Vec::new();
    let (mut in_str, mut in_comment) = (false, false);
    for (i, c) in text[..pos.min(text.len())].char_indices() {
        match c {
            '\n' => in_comment = false,
            _ if in_comment => {}
            '"' => in_str = !in_str,
            '#' if !in_str => in_comment = true,
            '(' | '[' | '{' if !in_str => open.push((i, c)),
            ')' | ']' | '}' if !in_str => {
                open.pop();
            }
            _ => {}
        }
    }
    let &(at, bracket) = open.last()?;
    let close = match bracket {
        '(' => ')',
        '[' => ']',
        _ => '}',
    };
    let (found, span) = token_at(text, pos);
    Some(
        Diagnostic::error(
            "E0001",
            format!("syntax error: this `{bracket}` is not closed"),
            Span::new(at, at + 1),
        )
        .with_label(format!("not closed with `{close}`"))
        .with_secondary(span, format!("expected `{close}` before {found}")),
    )
}

fn syntax_error(text: &str, err: pest::error::Error<Rule>) -> Diagnostic {
    syntax_error_at(text, error_pos(&err), &err.variant)
}

fn syntax_error_at(text: &str, pos: usize, variant: &ErrorVariant<Rule>) -> Diagnostic {
    let (found, span) = token_at(text, pos);
    let message = match variant {
        ErrorVariant::ParsingError { positives, .. } => {
            let mut words: Vec<&str> = positives.iter().filter_map(rule_words).collect();
            words.dedup();
            let mut seen = std::collections::HashSet::new();
            words.retain(|w| seen.insert(*w));
            if words.is_empty() {
                format!("unexpected {found}")
            } else {
                format!("expected {}, found {found}", join_or(&words))
            }
        }
        ErrorVariant::CustomError { message } => message.clone(),
    };
    let hint = hint_for(text, pos);
    Diagnostic::error("E0001", format!("syntax error: {message}"), span)
        .with_label(format!("unexpected {found}"))
        .with_hint_opt(hint)
}

/// The text at a position, described for a human, and the span to underline.
fn token_at(text: &str, pos: usize) -> (String, Span) {
    let pos = pos.min(text.len());
    let rest = &text[pos..];
    let Some(first) = rest.chars().next() else {
        return ("end of file".into(), Span::new(pos, pos));
    };
    if first == '\n' {
        return ("end of line".into(), Span::new(pos, pos + 1));
    }
    let len: usize = if first.is_alphanumeric() || first == '_' {
        rest.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '.')
            .map(char::len_utf8)
            .sum()
    } else {
        first.len_utf8()
    };
    let tok = &rest[..len];
    (format!("`{tok}`"), Span::new(pos, pos + len))
}

/// Hints for the mistakes people make most often.
fn hint_for(text: &str, pos: usize) -> Option<String> {
    let rest = text.get(pos..).unwrap_or("");
    // `key: value` is the commonest slip; pest reports it at the key, so look just past it.
    let after_word = rest.trim_start_matches(|c: char| c.is_alphanumeric() || c == '_');
    if rest.starts_with(';') {
        return Some(
            "`;` is not part of .lax: items end at a line break, and entries are separated by \
             commas or line breaks; remove it"
                .into(),
        );
    }
    if rest.starts_with(':') || after_word.trim_start().starts_with(':') {
        return Some("write `key = value`; separate entries with commas or line breaks".into());
    }
    if rest.starts_with('"') && !rest[1..].contains('"') {
        return Some("this string is not closed with `\"`".into());
    }
    // An unclosed `{` before the error: name its line.
    let before = text.get(..pos).unwrap_or("");
    let mut open: Vec<usize> = Vec::new();
    for (i, c) in before.char_indices() {
        match c {
            '{' => open.push(i),
            '}' => {
                open.pop();
            }
            _ => {}
        }
    }
    if let Some(&at) = open.last() {
        let line = text[..at].matches('\n').count() + 1;
        let next_is_keyword = ["model", "let", "factorize", "lax", "train"]
            .iter()
            .any(|k| rest.starts_with(k));
        if rest.trim().is_empty() || next_is_keyword {
            return Some(format!("the `{{` on line {line} is not closed with `}}`"));
        }
    }
    None
}

fn join_or(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}
