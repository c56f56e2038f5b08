//! The `.lax` surface syntax: grammar, AST, parser.

pub mod ast;
mod parser;

pub use parser::{parse, parse_value, parse_value_at, split_assignment};

/// The words the grammar reserves (`keyword` in grammar/lax.pest): never a name.
pub const KEYWORDS: &[&str] = &["model", "let", "factorize", "lax", "train", "as", "from"];
