//! The `.lax` surface syntax: grammar, AST, parser.

pub mod ast;
mod parser;

pub use parser::{parse, parse_value, parse_value_at, split_assignment};
