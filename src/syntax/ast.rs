//! The spanned syntax tree of a `.lax` file: what the user wrote, before any meaning is given.

use crate::source::Span;

#[derive(Debug, Clone)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

#[derive(Debug, Clone, Default)]
pub struct File {
    pub items: Vec<Item>,
}

#[derive(Debug, Clone)]
pub enum Item {
    Model(ModelDecl),
    Let(LetDecl),
    Factorize(FactorizeRule),
    Lax(LaxRule),
    Train(TrainBlock),
}

#[derive(Debug, Clone)]
pub struct ModelDecl {
    pub name: Ident,
    pub family: Ident,
    pub entries: Vec<Entry>,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub struct LetDecl {
    pub name: Ident,
    pub value: Value,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub struct FactorizeRule {
    pub selectors: Vec<Selector>,
    pub kind: Value,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub struct LaxRule {
    pub kind: Ident,
    pub selectors: Vec<Selector>,
    pub from: Option<Selector>,
    pub entries: Vec<Entry>,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub struct TrainBlock {
    pub entries: Vec<Entry>,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub key: Ident,
    pub value: Value,
    pub span: Span,
}

/// `blocks[0..4].attn.{q,k}`: an optional block part, then one pattern per path segment.
#[derive(Debug, Clone)]
pub struct Selector {
    pub blocks: Option<BlockRange>,
    pub segments: Vec<Segment>,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub enum BlockRange {
    All(Span),
    /// `a..b` (end exclusive) or `a..=b` (inclusive); either end may be absent.
    Range {
        start: Option<Expr>,
        end: Option<Expr>,
        inclusive: bool,
        span: Span,
    },
    Set(Vec<Expr>, Span),
    One(Expr),
}

#[derive(Debug, Clone)]
pub enum Segment {
    Name(Ident),
    Set(Vec<Ident>, Span),
    Any(Span),
}

impl Segment {
    pub fn span(&self) -> Span {
        match self {
            Segment::Name(i) => i.span,
            Segment::Set(_, s) | Segment::Any(s) => *s,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Value {
    Expr(Expr),
    Str(String, Span),
    List(Vec<Value>, Span),
    Call(Call),
}

impl Value {
    pub fn span(&self) -> Span {
        match self {
            Value::Expr(e) => e.span(),
            Value::Str(_, s) | Value::List(_, s) => *s,
            Value::Call(c) => c.span,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Call {
    pub name: Ident,
    pub args: Vec<Arg>,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub enum Arg {
    Named(Entry),
    Positional(Value),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

#[derive(Debug, Clone)]
pub enum Expr {
    Int(i64, Span),
    Decimal(f64, Span),
    Name(Ident),
    Neg(Box<Expr>, Span),
    Binary(Box<Expr>, BinOp, Box<Expr>, Span),
}

impl Expr {
    pub fn span(&self) -> Span {
        match self {
            Expr::Int(_, s) | Expr::Decimal(_, s) | Expr::Neg(_, s) | Expr::Binary(_, _, _, s) => {
                *s
            }
            Expr::Name(i) => i.span,
        }
    }
}
