//! laxc's `gpt2` family against HuggingFace transformers' `GPT2LMHeadModel`: the committed
//! fixture `tests/data/gpt2-reference.json` (written by `tests/independent/gpt2_reference.py`)
//! holds a tiny GPT-2's every tensor, under HF's names, a batch of token ids and the logits HF
//! computes in f64. Loaded into the lowered laxc model, the same weights must give the same
//! logits: learned positions, pre-LayerNorm (ε 1e-5), causal attention, tanh GELU and the head
//! tied to the token embedding, all as HF computes them.
#![cfg(feature = "train")]

mod common;
mod formulas;

use formulas::set;

use burn::backend::NdArray;
use burn::module::Param;
use burn::tensor::{Int, Tensor, TensorData};
use laxc::lower::params::{Linear, NodeParams};
use laxc::lower::{lower, LaxModel};
use serde_json::Value;

type B = NdArray<f64>;

struct Fixture(Value);

impl Fixture {
    fn load() -> Fixture {
        let path = common::root().join("tests/data/gpt2-reference.json");
        Fixture(serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap())
    }

    fn size(&self, key: &str) -> usize {
        self.0["config"][key].as_u64().unwrap() as usize
    }

    /// An HF tensor, row-major, and its shape.
    fn tensor(&self, name: &str) -> (Vec<f64>, Vec<usize>) {
        let t = &self.0["tensors"][format!("transformer.{name}")];
        assert!(!t.is_null(), "the fixture has no {name}");
        let values = t["values"].as_array().unwrap();
        let shape = t["shape"].as_array().unwrap();
        (
            values.iter().map(|v| v.as_f64().unwrap()).collect(),
            shape.iter().map(|d| d.as_u64().unwrap() as usize).collect(),
        )
    }

    fn vector(&self, name: &str) -> Param<Tensor<B, 1>> {
        let (v, shape) = self.tensor(name);
        Param::from_tensor(Tensor::from_data(TensorData::new(v, shape), &dev()))
    }

    /// Columns `[from, from + width)` of an HF Conv1D weight (stored in × out) and its bias.
    fn linear_columns(&self, name: &str, from: usize, width: usize) -> NodeParams<B> {
        let (w, shape) = self.tensor(&format!("{name}.weight"));
        let (b, _) = self.tensor(&format!("{name}.bias"));
        let (rows, cols) = (shape[0], shape[1]);
        let w: Vec<f64> = (0..rows)
            .flat_map(|r| w[r * cols + from..r * cols + from + width].to_vec())
            .collect();
        NodeParams::Linear(Linear {
            weight: Param::from_tensor(Tensor::from_data(
                TensorData::new(w, [rows, width]),
                &dev(),
            )),
            bias: Some(Param::from_tensor(Tensor::from_data(
                TensorData::new(b[from..from + width].to_vec(), [width]),
                &dev(),
            ))),
        })
    }

    fn linear(&self, name: &str) -> NodeParams<B> {
        let (_, shape) = self.tensor(&format!("{name}.weight"));
        self.linear_columns(name, 0, shape[1])
    }

    fn table(&self, name: &str) -> NodeParams<B> {
        let (v, shape) = self.tensor(name);
        NodeParams::Table(Param::from_tensor(Tensor::from_data(
            TensorData::new(v, [shape[0], shape[1]]),
            &dev(),
        )))
    }
}

fn dev() -> burn::tensor::Device<B> {
    Default::default()
}

/// HF's LayerNorm weights into laxc's LayerNorm node, which keeps its own epsilon.
fn set_norm(m: &mut LaxModel<B>, name: &str, f: &Fixture, hf: &str) {
    let Some(NodeParams::LayerNorm(n)) = m.params_of(name) else {
        panic!("{name} is not a LayerNorm")
    };
    let mut n = n.clone();
    n.gamma = f.vector(&format!("{hf}.weight"));
    n.beta = f.vector(&format!("{hf}.bias"));
    set(m, name, NodeParams::LayerNorm(n));
}

/// HF's weights in laxc's nodes: `c_attn` is q, k and v side by side, `c_proj` of the
/// attention is the o site, the MLP's `c_fc` and `c_proj` are `mlp.fc` and `mlp.proj`.
fn load_hf_weights(m: &mut LaxModel<B>, f: &Fixture) {
    let h = f.size("hidden");
    set(m, "embed", f.table("wte.weight"));
    set(m, "pos_embed", f.table("wpe.weight"));
    for i in 0..f.size("layers") {
        let (hf, ours) = (format!("h.{i}"), format!("blocks[{i}]"));
        set_norm(m, &format!("{ours}.ln_1"), f, &format!("{hf}.ln_1"));
        for (j, site) in ["q", "k", "v"].into_iter().enumerate() {
            let p = f.linear_columns(&format!("{hf}.attn.c_attn"), j * h, h);
            set(m, &format!("{ours}.attn.{site}.W"), p);
        }
        set(
            m,
            &format!("{ours}.attn.o.W"),
            f.linear(&format!("{hf}.attn.c_proj")),
        );
        set_norm(m, &format!("{ours}.ln_2"), f, &format!("{hf}.ln_2"));
        set(
            m,
            &format!("{ours}.mlp.fc.W"),
            f.linear(&format!("{hf}.mlp.c_fc")),
        );
        set(
            m,
            &format!("{ours}.mlp.proj.W"),
            f.linear(&format!("{hf}.mlp.c_proj")),
        );
    }
    set_norm(m, "final_norm", f, "ln_f");
}

#[test]
fn gpt2_matches_huggingface_gpt2lmheadmodel() {
    let f = Fixture::load();
    let spec = format!(
        "model reference: gpt2 {{ vocab = {}, seq = {}, hidden = {}, heads = {}, layers = {}, ffn = {} }}\n",
        f.size("vocab"),
        f.size("seq"),
        f.size("hidden"),
        f.size("heads"),
        f.size("layers"),
        f.size("ffn"),
    );
    let c = laxc::compile(&laxc::source::Source::new("reference.lax", spec)).unwrap();
    let mut model: LaxModel<B> = lower(&c.ir, 0, &dev());
    // Every tensor of HF's model has a place, and nothing else is left: the counts agree.
    let hf_params: usize = f.0["tensors"]
        .as_object()
        .unwrap()
        .values()
        .map(|t| t["values"].as_array().unwrap().len())
        .sum();
    assert_eq!(c.report().params.total, hf_params as u128);
    load_hf_weights(&mut model, &f);
    let ids: Vec<Vec<i64>> = serde_json::from_value(f.0["input_ids"].clone()).unwrap();
    let (batch, seq) = (ids.len(), ids[0].len());
    let flat: Vec<i64> = ids.concat();
    let tokens = Tensor::<B, 2, Int>::from_data(TensorData::new(flat, [batch, seq]), &dev());
    let got = model
        .forward_tokens(tokens)
        .into_data()
        .to_vec::<f64>()
        .unwrap();
    let want: Vec<f64> = f.0["logits"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s.as_array().unwrap())
        .flat_map(|t| t.as_array().unwrap())
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(got.len(), want.len());
    let worst = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(
        worst < 1e-10,
        "largest difference from HF's logits: {worst}"
    );
}
