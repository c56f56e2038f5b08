//! `laxc graph`: the spec's IR as Graphviz DOT.

use crate::common::{self, OutFile, IO_ERROR};
use laxc::dot::DotOptions;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct GraphArgs {
    /// The .lax spec, or `-` to read it from standard input (default: the embedded
    /// specs/tiny-llama-svd-lax.lax).
    spec: Option<PathBuf>,
    /// The blocks to draw, `A..B` (B excluded) or `A..=B` (default: the first two, enough to
    /// show the pathways between consecutive blocks; `..` for all).
    #[arg(long, value_name = "A..B")]
    blocks: Option<String>,
    /// Draw every IR node (factors, latents, gates, norms, adds), not one node per linear site.
    #[arg(long)]
    full: bool,
    /// Draw the IR the lowering runs: after the passes that fuse nodes (a LaX pathway's add
    /// and norm as one node, SwiGLU's SiLU and product as one), every node as with `--full`.
    /// Parameters and FLOPs are those of the spec as written.
    #[arg(long)]
    optimized: bool,
    #[command(flatten)]
    out: OutFile,
}

pub fn run(a: GraphArgs) -> ExitCode {
    if let Err(c) = a.out.refuse_existing() {
        return c;
    }
    let (_, compiled) = match common::read_and_compile(a.spec.as_deref(), common::Format::Text) {
        Ok(sc) => sc,
        Err(c) => return c,
    };
    let optimized;
    let ir = if a.optimized {
        optimized = laxc::passes::optimize(&compiled.ir);
        &optimized
    } else {
        &compiled.ir
    };
    let mut options = DotOptions::readable(ir);
    options.full = a.full || a.optimized;
    if let Some(text) = &a.blocks {
        match block_range(text, ir.model.layers) {
            Ok(r) => options.blocks = r,
            Err(e) => {
                eprintln!("error: --blocks {text}: {e}");
                return ExitCode::from(IO_ERROR);
            }
        }
    }
    a.out.emit(&laxc::dot::render_dot(ir, &options))
}

/// `A..B`, `A..=B`, `A..`, `..B`, `..` or `A`, within `0..layers`.
fn block_range(text: &str, layers: usize) -> Result<std::ops::Range<usize>, String> {
    let number = |s: &str, default: usize| -> Result<usize, String> {
        match s.trim() {
            "" => Ok(default),
            t => t.parse().map_err(|_| format!("`{t}` is not a block index")),
        }
    };
    let range = match text.split_once("..") {
        None => {
            let b = number(text, 0)?;
            b..b + 1
        }
        Some((a, b)) => match b.strip_prefix('=') {
            Some(b) => number(a, 0)?..number(b, layers.saturating_sub(1))? + 1,
            None => number(a, 0)?..number(b, layers)?,
        },
    };
    if range.is_empty() || range.end > layers {
        return Err(format!(
            "the model has blocks 0..{layers}; give a non-empty range within them"
        ));
    }
    Ok(range)
}

#[cfg(test)]
mod tests {
    use super::block_range;

    #[test]
    fn block_ranges_read_like_the_spec_language() {
        assert_eq!(block_range("2..5", 12), Ok(2..5));
        assert_eq!(block_range("2..=5", 12), Ok(2..6));
        assert_eq!(block_range("..", 12), Ok(0..12));
        assert_eq!(block_range("10..", 12), Ok(10..12));
        assert_eq!(block_range("3", 12), Ok(3..4));
        assert!(block_range("5..2", 12).is_err());
        assert!(block_range("0..13", 12).is_err());
        assert!(block_range("a..2", 12).is_err());
    }
}
