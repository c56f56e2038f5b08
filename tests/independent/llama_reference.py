#!/usr/bin/env python3
"""Reference checkpoints and logits for laxc's LLaMA import (tests/import.rs).

Two tiny LLaMA models are built with HuggingFace transformers' `LlamaForCausalLM` from a config
(nothing is downloaded), both with grouped-query attention (4 query heads, 2 key-value heads),
RoPE base 50000 and RMSNorm epsilon 1e-5: `tied` (the head is the token embedding) and `untied`.
Every parameter is drawn from a fixed torch generator. For each:

  tests/data/llama-reference/<case>/          what `save_pretrained` writes (config.json and
                                              model.safetensors, float32)
  tests/data/llama-reference/<case>.gguf      the same weights as a GGUF file written with the
                                              `gguf` package the way llama.cpp's converter lays
                                              out a LLaMA: llama.* metadata, blk.N.* names, q and
                                              k rows interleaved per head for pairwise RoPE.
                                              `tied` is all F32; `untied` mixes the types laxc
                                              reads: token_embd Q8_0, attn_q/attn_k Q4_0,
                                              attn_v/attn_output Q4_1, ffn_* F16, output BF16,
                                              norms F32.
  tests/data/llama-reference/untied-peft/     a LoRA adapter on `untied` written by HF PEFT itself
                                              (rank 4, alpha 8, on q, k, v, up and down, both
                                              factors drawn at random: init_lora_weights=False)
  tests/data/llama-reference/logits.json      the input ids (2 x 12) and, per file, the logits
                                              (2 x 12 x vocab) HF computes in float64: for the
                                              safetensors directories and the F32 GGUF the
                                              model's own weights; for the mixed GGUF the
                                              weights as gguf-py dequantizes them, rows put back
                                              in HF's order.

Run:  ~/.cache/laxc-bench-venv/bin/python tests/independent/llama_reference.py
(the venv: python3 -m venv ~/.cache/laxc-bench-venv &&
 ~/.cache/laxc-bench-venv/bin/pip install torch transformers gguf peft)
"""
import json
import os
import shutil

import gguf
import numpy as np
import peft
import torch
import transformers
from gguf import GGMLQuantizationType as Q
from transformers import LlamaConfig, LlamaForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.normpath(os.path.join(HERE, "..", "data", "llama-reference"))

SIZES = dict(vocab_size=80, hidden_size=64, intermediate_size=96, num_attention_heads=4,
             num_key_value_heads=2, num_hidden_layers=2, max_position_embeddings=32,
             rope_theta=50000.0, rms_norm_eps=1e-5, hidden_act="silu", attention_bias=False,
             mlp_bias=False, bos_token_id=1, eos_token_id=2)


def build(tied, seed):
    config = LlamaConfig(**SIZES, tie_word_embeddings=tied)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=g))
    return model


def interleave_halves(w, heads):
    """HF's rotate-half row order to llama.cpp's pairwise order, per head: rows (half j, i)
    become (i, j)."""
    rows = w.shape[0]
    d = rows // heads
    return w.reshape(heads, 2, d // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_layout(model):
    """(GGUF name, HF name, the array in llama.cpp's layout) for every tensor."""
    c = model.config
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    out = [("token_embd.weight", "model.embed_tokens.weight", sd["model.embed_tokens.weight"]),
           ("output_norm.weight", "model.norm.weight", sd["model.norm.weight"])]
    if not c.tie_word_embeddings:
        out.append(("output.weight", "lm_head.weight", sd["lm_head.weight"]))
    parts = [("attn_norm", "input_layernorm"), ("attn_q", "self_attn.q_proj"),
             ("attn_k", "self_attn.k_proj"), ("attn_v", "self_attn.v_proj"),
             ("attn_output", "self_attn.o_proj"), ("ffn_norm", "post_attention_layernorm"),
             ("ffn_gate", "mlp.gate_proj"), ("ffn_up", "mlp.up_proj"), ("ffn_down", "mlp.down_proj")]
    for i in range(c.num_hidden_layers):
        for g_name, hf_name in parts:
            hf = f"model.layers.{i}.{hf_name}.weight"
            w = sd[hf]
            if g_name == "attn_q":
                w = interleave_halves(w, c.num_attention_heads)
            if g_name == "attn_k":
                w = interleave_halves(w, c.num_key_value_heads)
            out.append((f"blk.{i}.{g_name}.weight", hf, w))
    return out


def mixed_type(name):
    if name.endswith("norm.weight"):
        return Q.F32
    for part, t in [("token_embd", Q.Q8_0), ("attn_q", Q.Q4_0), ("attn_k", Q.Q4_0),
                    ("attn_v", Q.Q4_1), ("attn_output", Q.Q4_1), ("ffn_", Q.F16),
                    ("output.", Q.BF16)]:
        if part in name:
            return t
    raise ValueError(name)


def write_gguf(model, path, types):
    """Writes the model as llama.cpp lays out a LLaMA; returns the HF state dict of the values
    the file holds (dequantized, rows back in HF order)."""
    c = model.config
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("laxc reference llama")
    w.add_block_count(c.num_hidden_layers)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_rope_freq_base(SIZES["rope_theta"])
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    w.add_vocab_size(c.vocab_size)
    held = {}
    for g_name, hf_name, arr in gguf_layout(model):
        t = types(g_name)
        arr = arr.astype(np.float32)
        if t == Q.F32:
            w.add_tensor(g_name, arr)
            back = arr
        else:
            data = gguf.quants.quantize(arr, t)
            w.add_tensor(g_name, data, raw_dtype=t)
            back = gguf.quants.dequantize(data, t).reshape(arr.shape)
        if g_name.endswith("attn_q.weight"):
            back = interleave_halves_inverse(back, c.num_attention_heads)
        if g_name.endswith("attn_k.weight"):
            back = interleave_halves_inverse(back, c.num_key_value_heads)
        held[hf_name] = back
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return held


def interleave_halves_inverse(w, heads):
    rows = w.shape[0]
    d = rows // heads
    return w.reshape(heads, d // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def logits_of(model, ids, weights=None):
    m = LlamaForCausalLM(model.config).eval()
    m.load_state_dict(model.state_dict())
    if weights is not None:
        sd = m.state_dict()
        for k, v in weights.items():
            sd[k] = torch.from_numpy(np.ascontiguousarray(v)).to(sd[k].dtype)
        if model.config.tie_word_embeddings:
            sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
        m.load_state_dict(sd)
    m = m.double()
    with torch.no_grad():
        return m(torch.tensor(ids)).logits.numpy().tolist()


def peft_logits(model, ids, path):
    """Writes a random LoRA adapter with PEFT and returns the adapted model's float64 logits."""
    m = LlamaForCausalLM(model.config).eval()
    m.load_state_dict(model.state_dict())
    config = peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, init_lora_weights=False,
                             target_modules=["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"])
    torch.manual_seed(7)
    adapted = peft.get_peft_model(m, config).eval()
    adapted.save_pretrained(path, safe_serialization=True)
    os.remove(os.path.join(path, "README.md"))  # a model card template, not the adapter
    adapted = adapted.double()
    with torch.no_grad():
        return adapted(torch.tensor(ids)).logits.numpy().tolist()


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    ids = [[(7 * t + 3 * b + 1) % SIZES["vocab_size"] for t in range(12)] for b in range(2)]
    logits = {}
    for case, tied, seed, types in [("tied", True, 1, lambda n: Q.F32),
                                    ("untied", False, 2, mixed_type)]:
        model = build(tied, seed)
        model.save_pretrained(os.path.join(OUT, case), safe_serialization=True)
        logits[case] = logits_of(model, ids)
        held = write_gguf(model, os.path.join(OUT, f"{case}.gguf"), types)
        logits[f"{case}.gguf"] = logits_of(model, ids, held)
        if case == "untied":
            logits["untied-peft"] = peft_logits(model, ids, os.path.join(OUT, "untied-peft"))
    with open(os.path.join(OUT, "logits.json"), "w") as fh:
        json.dump({"input_ids": ids, "logits": logits,
                   "transformers_version": transformers.__version__,
                   "torch_version": torch.__version__, "peft_version": peft.__version__,
                   "gguf_version": gguf.__version__
                   if hasattr(gguf, "__version__") else "0.19"}, fh)
    for name in sorted(os.listdir(OUT)):
        print(name)


if __name__ == "__main__":
    main()
