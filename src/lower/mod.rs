//! Lowering: the checked IR becomes a Burn module (`LaxModel<B>`) for any backend.

pub mod base;
pub mod init;
pub mod layers;
pub mod model;

pub use model::{lower, LaxModel};
