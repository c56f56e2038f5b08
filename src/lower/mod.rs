//! Lowering: the checked IR, after the passes (`crate::passes`), becomes a Burn module
//! (`LaxModel<B>`) for any backend. Each IR node with weights gets its parameters (`params`),
//! and the forward pass runs the graph's nodes in a topological order (`program`), each op kind
//! computed by one arm of `ops::eval`.

pub mod attention;
pub mod base;
pub mod flex_gemm;
pub mod flex_kernels;
pub mod fused;
pub mod init;
pub mod layers;
pub mod model;
pub mod ops;
pub mod params;
pub mod precision;
pub mod product;
pub mod program;
pub mod weights;

pub use model::{lower, lower_as_written, LaxModel};
