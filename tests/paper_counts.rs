//! Every number `laxc check` reports for every shipped spec, against tests/data/expected.json:
//! figures computed apart from laxc by tests/independent/expected.py. And the paper's printed
//! parameter counts, memory and trainable shares, reproduced from laxc's exact counts with the
//! paper's rounding.

mod common;
use serde_json::Value;

fn expected() -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(common::root().join("tests/data/expected.json"))
        .expect("run python3 tests/independent/expected.py");
    serde_json::from_str::<Value>(&text)
        .unwrap()
        .as_object()
        .unwrap()
        .clone()
}

fn int(v: &Value, key: &str) -> u128 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} missing")) as u128
}

fn trunc2(x: f64) -> f64 {
    (x * 100.0 + 1e-9).floor() / 100.0
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[test]
fn every_figure_matches_the_independent_computation() {
    let exp = expected();
    let mut seen = 0;
    for dir in common::SPEC_DIRS {
        for path in common::lax_files(dir) {
            let name = match dir {
                "specs/bench" | "specs/claims" | "specs/gpt2" | "specs/pretrained" => {
                    format!("{}/{}", &dir[6..], common::stem(&path))
                }
                _ => common::stem(&path),
            };
            let e = exp
                .get(&name)
                .unwrap_or_else(|| panic!("{name}: no independent figures in expected.json"));
            let src = common::source(&path);
            let r = laxc::compile(&src).expect("compiles").report();
            let ring8 = &r.data_parallel.replicas[2];
            assert_eq!(ring8.replicas, 8, "{name}");
            let checks: [(&str, u128); 12] = [
                (
                    "gradient_bytes_per_step",
                    r.data_parallel.gradient_bytes_per_step,
                ),
                (
                    "ring_bytes_sent_per_replica_8",
                    ring8.ring_bytes_sent_per_replica,
                ),
                ("params_total", r.params.total),
                ("params_trainable", r.params.trainable),
                ("params_frozen", r.params.frozen),
                ("train_bytes_bf16", r.memory.train_bytes_bf16),
                ("train_bytes_fp32", r.memory.train_bytes_fp32),
                ("flops_forward_per_sample", r.flops.forward_per_sample),
                ("flops_train_per_sample", r.flops.train_per_sample),
                ("flops_other_per_sample", r.flops.other_forward_per_sample),
                ("flops_lax_gemm_per_sample", r.flops.lax_gemm_per_sample),
                ("flops_lax_other_per_sample", r.flops.lax_other_per_sample),
            ];
            for (key, got) in checks {
                assert_eq!(got, int(e, key), "{name}: {key}");
            }
            // Each replica: the whole training state and its rows of the batch (rounded up).
            let batch = r
                .memory
                .activation_bytes_per_batch_fp32
                .map(|b| b / r.memory.activation_bytes_per_sample_fp32.max(1));
            for c in &r.data_parallel.replicas {
                let rows = batch
                    .filter(|&b| b >= c.replicas)
                    .map(|b| b.div_ceil(c.replicas));
                assert_eq!(c.batch_per_replica, rows, "{name}");
                let each = rows.map(|n| {
                    int(e, "train_bytes_fp32") + n * r.memory.activation_bytes_per_sample_fp32
                });
                assert_eq!(c.train_bytes_fp32_per_replica, each, "{name}");
            }
            assert_eq!(
                r.flops.tokens_per_sample as u128,
                int(e, "tokens_per_sample"),
                "{name}"
            );
            let share = int(e, "params_trainable") as f64 / int(e, "params_total") as f64;
            assert_eq!(r.params.trainable_share, share, "{name}: trainable share");
            // Rounded to the nearest FLOP, computed here in f64 apart from laxc's integers.
            let per_token = r.flops.forward_per_sample as f64 / r.flops.tokens_per_sample as f64;
            assert_eq!(
                r.flops.forward_per_token,
                per_token.round() as u128,
                "{name}"
            );
            if e.get("flops_train_per_step").is_some() {
                assert_eq!(
                    r.flops.train_per_step,
                    Some(int(e, "flops_train_per_step")),
                    "{name}"
                );
            }
            seen += 1;
        }
    }
    assert_eq!(
        seen,
        exp.len(),
        "expected.json lists specs that are not shipped"
    );
}

#[test]
fn the_papers_printed_figures_follow_from_laxcs_counts() {
    let exp = expected();
    let mut checked = 0;
    for (name, e) in &exp {
        let Some(paper) = e.get("paper") else {
            continue;
        };
        let dir = if name.starts_with("tiny") {
            "specs"
        } else {
            "specs/paper"
        };
        let path = common::root().join(dir).join(format!("{name}.lax"));
        let r = laxc::compile(&common::source(&path)).unwrap().report();
        let printed = paper["printed"].as_f64().unwrap();
        let millions = r.params.total as f64 / 1e6;
        match paper["rounding"].as_str().unwrap() {
            "truncate2" => assert_eq!(trunc2(millions), printed, "{name}: {millions}"),
            "round2" => {
                if paper["unit"] == "%trainable" {
                    let share = 100.0 * r.params.trainable as f64 / r.params.total as f64;
                    assert_eq!(round2(share), printed, "{name}: {share}%");
                } else {
                    assert_eq!(round2(millions), printed, "{name}: {millions}");
                }
            }
            "round0" => {
                assert_eq!(millions.round(), printed, "{name}: {millions}");
                // Mem = the rounded count × 8 bytes, in GiB, to two decimals.
                let mem = paper["mem_gib_printed"].as_f64().unwrap();
                let gib = millions.round() * 1e6 * 8.0 / (1u64 << 30) as f64;
                assert_eq!(round2(gib), mem, "{name}: memory {gib}");
            }
            "typo" => {
                // Documented mismatch: laxc's count must differ, and the note must say why.
                assert_ne!(trunc2(millions), printed, "{name}");
                assert!(paper["note"].as_str().is_some_and(|n| n.contains("typo")));
                let text = std::fs::read_to_string(&path).unwrap();
                assert!(
                    text.contains("typo"),
                    "{name}: the spec must explain the mismatch"
                );
            }
            other => panic!("{name}: unknown rounding {other}"),
        }
        checked += 1;
    }
    assert!(checked >= 50, "only {checked} paper figures checked");
}

/// A hand calculation, written out, for the smallest paper model (LLaMA-60M, SVD rank 128):
/// embeddings 2 · 32000 · 512; per block 4 · 128 · (512 + 512) + 3 · 128 · (512 + 1376) + 2 · 512;
/// 8 blocks; a final RMSNorm of 512.
#[test]
fn llama_60m_svd_by_hand() {
    let per_block = 4 * 128 * (512 + 512) + 3 * 128 * (512 + 1376) + 2 * 512;
    let total: u128 = 2 * 32000 * 512 + 8 * per_block + 512;
    assert_eq!(total, 42_770_944);
    let path = common::root().join("specs/paper/llama-60m-svd-r128.lax");
    let r = laxc::compile(&common::source(&path)).unwrap().report();
    assert_eq!(r.params.total, total);
    assert_eq!(r.memory.train_bytes_bf16, 8 * total);
}

/// Activations one sample keeps for the backward pass, counted by hand from the LLaMA block's
/// definition (docs/language.md): every op's output per token, and the attention scores and
/// probabilities (heads × n each per query token).
#[test]
fn activations_per_sample_by_hand() {
    let (vocab, hidden, ffn, heads, seq) = (10u128, 8u128, 16u128, 2u128, 4u128);
    let attention = hidden + 2 * heads * seq;
    let block = hidden             // RMSNorm
        + 3 * hidden               // q, k, v
        + 2 * hidden               // RoPE on q and k
        + attention                // softmax(q kᵀ) v, with its scores and probabilities
        + hidden + hidden          // o, residual add
        + hidden                   // RMSNorm
        + 2 * ffn + ffn + ffn      // gate, up, SiLU, product
        + hidden + hidden; // down, residual add
    let per_token = hidden + block + hidden + vocab; // embedding, block, final norm, head
    let spec = |factorize: &str| {
        format!(
            "model t: llama {{ vocab = {vocab}, hidden = {hidden}, ffn = {ffn}, heads = {heads}, \
             layers = 1, seq = {seq} }}\n{factorize}\n"
        )
    };
    let kept = |text: String| {
        let source = laxc::source::Source::new("t.lax", text);
        laxc::compile(&source)
            .unwrap()
            .report()
            .memory
            .activation_bytes_per_sample_fp32
    };
    assert_eq!(kept(spec("")), 4 * seq * per_token);
    // SVD of rank 2 on the seven sites adds each site's rank-2 latent.
    let svd = spec("factorize attn.*, mlp.* as svd(rank = 2)");
    assert_eq!(kept(svd), 4 * seq * (per_token + 7 * 2));
}
