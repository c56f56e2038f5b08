//! No input makes the parser or checker panic: random bytes, random token soup, truncated and
//! mutated specs. More than 10,000 cases on every run. Every result must be either a compiled
//! spec or diagnostics whose spans lie inside the text, never an internal shape error.

mod common;
use proptest::prelude::*;

fn assert_well_behaved(text: &str) {
    let src = laxc::source::Source::new("fuzz.lax", text);
    match laxc::compile(&src) {
        Ok(c) => {
            // A spec that compiles also reports and draws.
            let r = c.report();
            assert!(r.params.total >= r.params.trainable);
            let _ = laxc::dot::render_dot(&c.ir, &laxc::dot::DotOptions::everything(&c.ir));
        }
        Err(diags) => {
            assert!(!diags.is_empty());
            assert!(diags.iter().any(|d| d.is_error()));
            for d in &diags {
                assert_ne!(d.code, "E0900", "internal shape error on:\n{text}");
                assert!(d.span.start <= d.span.end && d.span.end <= text.len());
            }
            let _ = laxc::diagnostic::render_to_string(&src, &diags);
        }
    }
}

fn corpus() -> Vec<String> {
    let mut v = Vec::new();
    for dir in common::SPEC_DIRS.into_iter().chain(["tests/invalid"]) {
        if common::root().join(dir).exists() {
            for p in common::lax_files(dir) {
                v.push(std::fs::read_to_string(p).unwrap());
            }
        }
    }
    assert!(!v.is_empty());
    v
}

const TOKENS: &[&str] = &[
    "model",
    "m",
    ":",
    "llama",
    "vit",
    "{",
    "}",
    "vocab",
    "=",
    "256",
    "hidden",
    "ffn",
    "heads",
    "layers",
    "seq",
    ",",
    "let",
    "r",
    "/",
    "*",
    "-",
    "+",
    "%",
    "(",
    ")",
    "factorize",
    "attn",
    ".",
    "q",
    "mlp",
    "down",
    "as",
    "svd",
    "rank",
    "cola",
    "tt",
    "modes",
    "ranks",
    "[",
    "]",
    "lora",
    "alpha",
    "lax",
    "inter",
    "intra",
    "from",
    "blocks",
    "..",
    "..=",
    "gate",
    "tensor",
    "dense",
    "identity",
    "linear",
    "norm",
    "layernorm",
    "none",
    "train",
    "steps",
    "lr",
    "2e-2",
    "0.25",
    "0",
    "99999999999999999999",
    "\"x\"",
    "\n",
    " ",
    "#c\n",
    "16",
    "4",
    "3",
    "1",
    "image",
    "patch",
    "classes",
    "mlp_norm",
    "true",
    "fc1",
    "shape",
    "input",
    "output",
    "act",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        assert_well_behaved(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn token_soup(idx in proptest::collection::vec(0..TOKENS.len(), 0..120)) {
        let text: Vec<&str> = idx.iter().map(|&i| TOKENS[i]).collect();
        assert_well_behaved(&text.join(" "));
    }

    #[test]
    fn truncated_specs(which in any::<prop::sample::Index>(), at in any::<prop::sample::Index>()) {
        let specs = corpus();
        let text = which.get(&specs);
        let mut cut = at.index(text.len() + 1);
        while !text.is_char_boundary(cut) { cut -= 1; }
        assert_well_behaved(&text[..cut]);
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    for open in ["(", "[", "{"] {
        let text = format!("let x = {}1", open.repeat(100_000));
        let src = laxc::source::Source::new("deep.lax", text);
        let d = laxc::compile(&src).unwrap_err();
        assert_eq!(d[0].code, "E0001");
    }
    // 60 levels are still fine.
    let text = format!(
        "model m: llama {{ vocab = 8, hidden = 8, ffn = 8, heads = 2, layers = 1, seq = {}4{} }}",
        "(".repeat(60),
        ")".repeat(60)
    );
    assert!(laxc::compile(&laxc::source::Source::new("ok.lax", text)).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, failure_persistence: None, ..ProptestConfig::default() })]

    /// Specs with a few edits: a token inserted, a span deleted, a number changed.
    #[test]
    fn mutated_specs(
        which in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((0u8..4, any::<prop::sample::Index>(), 0..TOKENS.len(), 0usize..12), 1..4),
    ) {
        let specs = corpus();
        let mut text = which.get(&specs).clone();
        for (kind, at, tok, len) in edits {
            let mut pos = at.index(text.len() + 1);
            while !text.is_char_boundary(pos) { pos -= 1; }
            match kind {
                0 => text.insert_str(pos, TOKENS[tok]),
                1 => {
                    let mut end = (pos + len).min(text.len());
                    while !text.is_char_boundary(end) { end += 1; }
                    text.replace_range(pos..end, "");
                }
                2 => {
                    // Change a digit run into something else numeric.
                    if let Some(off) = text[pos..].find(|c: char| c.is_ascii_digit()) {
                        let start = pos + off;
                        let end = start + text[start..].find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len() - start);
                        let repl = ["0", "1", "3", "7", "4096", "65536", "17", "999999999"][len % 8];
                        text.replace_range(start..end, repl);
                    }
                }
                _ => {
                    let mut end = (pos + 1).min(text.len());
                    while !text.is_char_boundary(end) { end += 1; }
                    text.replace_range(pos..end, TOKENS[tok]);
                }
            }
        }
        assert_well_behaved(&text);
    }
}
