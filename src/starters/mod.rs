//! The starter specs `laxc new FAMILY` writes: one commented, small, trainable spec per family.
//! tests/cli.rs checks each clean (no errors, no warnings) and trains it for a few steps.

pub const LLAMA: &str = include_str!("llama.lax");
pub const GPT2: &str = include_str!("gpt2.lax");
pub const VIT: &str = include_str!("vit.lax");
