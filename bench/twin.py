#!/usr/bin/env python3
"""The PyTorch twin of a laxc spec: the same model, written in PyTorch eager, timed the same way.

It reads the structure from `laxc check --format json SPEC` (sizes, every site's factorization,
every pathway) and builds the model with its own PyTorch code (the equations of
docs/conventions.md §LaX equations, §Gates, §Norms, §Tensor-train layers and §LoRA with LaX,
written again here), then checks that its parameter count equals the report's before timing
anything.
Dropout (`--dropout`, the rate `laxc bench` reports for the spec) acts where laxc's model
drops out: LLaMA after each block's attention and MLP, GPT-2 there and after the embeddings,
ViT after the MLP's GELU and after fc2.
A training step is what `laxc bench` times: forward, cross-entropy, backward, global-norm
clipping, AdamW; batches are synthetic (uniform random tokens, or Gaussian images with random
labels), drawn before timing. It prints one JSON line with the same fields as `laxc bench`.

    python3 bench/twin.py specs/bench/llama-svd.lax --steps 20 --warmup 3 --threads 2
    python3 bench/twin.py specs/paper/llama-60m-full.lax --device cuda   # bench/gpu.py's reference

On CUDA, f32 products run in TF32 (`allow_tf32`), as Burn's CUDA matmul computes them, and each
step's time ends when the GPU has finished it.

Needs torch (bench/setup.sh installs it into a virtual environment from PyPI).
"""
import argparse
import json
import math
import re
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

NORM_EPS = 1e-6


def make_norm(kind, width, eps=NORM_EPS):
    if kind == "layernorm":
        return nn.LayerNorm(width, eps=eps)
    if kind == "rmsnorm":
        return nn.RMSNorm(width, eps=eps)
    return nn.Identity()


ACTS = {"silu": F.silu, "gelu": F.gelu, "relu": F.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}


class Gate(nn.Module):
    """g(h): identity, α·h, the tensor gate h·kron(G1, G0) computed as G1ᵀ R G0, or Linear."""

    def __init__(self, text, src, dst):
        super().__init__()
        self.kind = text.split()[0]
        if self.kind == "linear":
            self.alpha = nn.Parameter(torch.ones(1))
        elif self.kind == "tensor":
            s0, s1, t0, t1 = map(int, re.findall(r"\d+", text))
            self.folds = (s0, s1, t0, t1)
            self.g0 = nn.Parameter(torch.empty(s1, t1).uniform_(-1 / math.sqrt(t1), 1 / math.sqrt(t1)))
            self.g1 = nn.Parameter(torch.empty(s0, t0).uniform_(-1 / math.sqrt(t0), 1 / math.sqrt(t0)))
        elif self.kind == "dense":
            self.linear = nn.Linear(src, dst)
            nn.init.trunc_normal_(self.linear.weight, std=0.02)
            nn.init.zeros_(self.linear.bias)

    def forward(self, h):
        if self.kind == "linear":
            return self.alpha * h
        if self.kind == "tensor":
            s0, s1, t0, t1 = self.folds
            r = h.reshape(-1, s0, s1)
            return torch.einsum("nab,ac,bd->ncd", r, self.g1, self.g0).reshape(-1, t0 * t1)
        if self.kind == "dense":
            return self.linear(h)
        return h


class Pathway(nn.Module):
    def __init__(self, row):
        super().__init__()
        self.gate = Gate(row["gate"], row["src_width"], row["dst_width"])
        self.norm = make_norm(row["norm"], row["dst_width"])

    def forward(self, z, h):
        return self.norm(z + self.gate(h))


class Site(nn.Module):
    """One linear layer; forward returns (output, the latent it emits or None)."""

    def __init__(self, row, bias, language):
        super().__init__()
        f = row["factorization"]
        self.kind = f["kind"]
        i, o = row["in"], row["out"]
        self.bias = nn.Parameter(torch.zeros(o)) if bias else None
        if self.kind == "dense":
            self.weight = nn.Parameter(torch.randn(i, o) * 0.02)
        elif self.kind in ("svd", "cola"):
            r = f["rank"]
            std = (r ** -0.25) * ((i + o) ** -0.25) if language else math.sqrt(2 / r)
            self.a = nn.Parameter(torch.randn(i, r) * std)
            self.b = nn.Parameter(torch.randn(r, o) * (std if language else math.sqrt(2 / o)))
            self.act = ACTS[f["act"]] if self.kind == "cola" else None
            if bias:
                nn.init.normal_(self.bias)
        elif self.kind == "tt":
            self.modes, self.ranks = f["modes"], f["ranks"]
            m0, m1, m2, m3 = self.modes
            r1, rr, r3 = self.ranks
            self.c0 = nn.Parameter(torch.randn(m0, r1) * math.sqrt(2 / r1))
            self.c1 = nn.Parameter(torch.randn(r1, m1, rr) * math.sqrt(2 / (m1 * rr)))
            self.c2 = nn.Parameter(torch.randn(rr, m2, r3) * math.sqrt(2 / (m2 * r3)))
            self.c3 = nn.Parameter(torch.randn(r3, m3) * math.sqrt(2 / m3))
            self.intra = False  # set from the report's intra pathways
            if bias:
                nn.init.normal_(self.bias)
        else:
            raise SystemExit(f"twin.py: {self.kind} sites are not implemented in the twin")

    def _bias(self, y):
        return y if self.bias is None else y + self.bias

    def forward(self, x, arriving):
        def receive(z):
            return z if arriving is None else arriving[1](z, arriving[0])

        if self.kind == "dense":
            return self._bias(x @ self.weight), None
        if self.kind in ("svd", "cola"):
            z = receive(x @ self.a)
            if self.act is not None:
                z = self.act(z)
            return self._bias(z @ self.b), z
        m0, m1, m2, m3 = self.modes
        r1, rr, r3 = self.ranks
        n = x.shape[0]
        t1 = torch.einsum("nij,ia->nja", x.reshape(n, m0, m1), self.c0)  # (n, m1, r1)
        t2 = receive(torch.einsum("nja,ajb->nb", t1, self.c1))  # (n, R)
        t3 = torch.einsum("nb,bkc->nkc", t2, self.c2)  # (n, m2, r3)
        if self.intra:
            t3 = t3 + t1
        y = torch.einsum("nkc,cl->nkl", t3, self.c3).reshape(n, m2 * m3)
        return self._bias(y), t2


def rope_tables(seq, hd):
    half = hd // 2
    freqs = 1.0 / (10000 ** (torch.arange(half, dtype=torch.float64) * 2 / hd))
    ang = torch.arange(seq, dtype=torch.float64)[:, None] * freqs[None, :]
    ang = torch.cat([ang, ang], dim=1)
    return ang.cos().float(), ang.sin().float()


def rope(x, cos, sin):
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class Model(nn.Module):
    def __init__(self, report, dropout=0.0):
        super().__init__()
        cfg = report["model"]["config"]
        self.family = cfg["family"]
        self.cfg = cfg
        llama = self.family == "llama"
        language = self.family in ("llama", "gpt2")
        h = cfg["hidden"]
        self.per_block = 7 if llama else 6
        bias = not llama
        self.drop = nn.Dropout(dropout)
        self.sites = nn.ModuleList(Site(row, bias, language) for row in report["sites"])
        index = {row["site"]: i for i, row in enumerate(report["sites"])}
        self.arriving = {}
        pathways = []
        for row in report["pathways"]:
            if row["kind"] == "intra":
                self.sites[index[row["source"].rsplit(".", 1)[0]]].intra = True
                continue
            self.arriving[index[row["target"]]] = (len(pathways), index[row["source"]])
            pathways.append(Pathway(row))
        self.pathways = nn.ModuleList(pathways)
        norm = "rmsnorm" if llama else "layernorm"  # GPT-2's epsilon differs; its time does not
        eps = NORM_EPS
        layers = cfg["layers"]
        self.norm1 = nn.ModuleList(make_norm(norm, h, eps) for _ in range(layers))
        self.norm2 = nn.ModuleList(make_norm(norm, h, eps) for _ in range(layers))
        self.mlp_norm = nn.ModuleList(
            make_norm("layernorm", cfg["ffn"], eps) for _ in range(layers) if cfg.get("mlp_norm", False)
        )
        self.final_norm = make_norm(norm, h, eps)
        if llama:
            self.embed = nn.Embedding(cfg["vocab"], h)
            nn.init.normal_(self.embed.weight, std=0.02)
            self.head = nn.Linear(h, cfg["vocab"], bias=False)
            cos, sin = rope_tables(cfg["tokens"], h // cfg["heads"])
            self.register_buffer("cos", cos)
            self.register_buffer("sin", sin)
        elif self.family == "gpt2":
            # Learned positions; the head is the token embedding, tied (no parameters of its own).
            self.embed = nn.Embedding(cfg["vocab"], h)
            nn.init.normal_(self.embed.weight, std=0.02)
            self.pos = nn.Parameter(torch.randn(cfg["tokens"], h) * 0.02)
        else:
            p, c = cfg["patch"], cfg["channels"]
            self.patch = nn.Conv2d(c, h, kernel_size=p, stride=p)
            self.cls = nn.Parameter(torch.zeros(h))
            self.pos = nn.Parameter(torch.randn(cfg["tokens"], h) * 0.02)
            self.head = nn.Linear(h, cfg["classes"])

    def site(self, b, local, x, latents):
        g = b * self.per_block + local
        arr = self.arriving.get(g)
        arriving = None
        if arr is not None and latents[arr[1]] is not None:
            arriving = (latents[arr[1]], self.pathways[arr[0]])
        y, latent = self.sites[g](x, arriving)
        latents[g] = latent
        return y

    def attention(self, b, x, batch, seq, causal, latents):
        heads, h = self.cfg["heads"], self.cfg["hidden"]
        hn = self.norm1[b](x)
        q, k, v = (self.site(b, i, hn, latents) for i in range(3))

        def split(t):
            return t.reshape(batch, seq, heads, h // heads).transpose(1, 2)

        q, k, v = split(q), split(k), split(v)
        if self.family == "llama":
            q, k = rope(q, self.cos, self.sin), rope(k, self.cos, self.sin)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        att = att.transpose(1, 2).reshape(batch * seq, h)
        o = self.site(b, 3, att, latents)
        # The authors' ViT drops out only in its MLP.
        return x + (o if self.family == "vit" else self.drop(o))

    def forward(self, inputs):
        latents = [None] * len(self.sites)
        h = self.cfg["hidden"]
        if self.family == "llama":
            batch, seq = inputs.shape
            x = self.embed(inputs).reshape(batch * seq, h)
            for b in range(self.cfg["layers"]):
                x = self.attention(b, x, batch, seq, True, latents)
                mn = self.norm2[b](x)
                gate = F.silu(self.site(b, 4, mn, latents))
                up = self.site(b, 5, mn, latents)
                x = x + self.drop(self.site(b, 6, gate * up, latents))
            return self.head(self.final_norm(x))
        if self.family == "gpt2":
            batch, seq = inputs.shape
            x = self.drop((self.embed(inputs) + self.pos[:seq]).reshape(batch * seq, h))
            for b in range(self.cfg["layers"]):
                x = self.attention(b, x, batch, seq, True, latents)
                a = F.gelu(self.site(b, 4, self.norm2[b](x), latents), approximate="tanh")
                x = x + self.drop(self.site(b, 5, a, latents))
            return self.final_norm(x) @ self.embed.weight.t()
        batch = inputs.shape[0]
        emb = self.patch(inputs).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(batch, 1, h), emb], dim=1) + self.pos
        seq = x.shape[1]
        x = x.reshape(batch * seq, h)
        for b in range(self.cfg["layers"]):
            x = self.attention(b, x, batch, seq, False, latents)
            a = self.drop(F.gelu(self.site(b, 4, self.norm2[b](x), latents)))
            if self.cfg.get("mlp_norm", False):
                a = self.mlp_norm[b](a)
            x = x + self.drop(self.site(b, 5, a, latents))
        x = self.final_norm(x).reshape(batch, seq, h)
        return self.head(x[:, 0])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("spec")
    ap.add_argument("--laxc", default="target/release/laxc", help="the laxc binary (for the report)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=None, help="default: the spec's batch")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dropout", type=float, default=0.0, help="the rate `laxc bench` reports")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda[:N]")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    gpu = device.type == "cuda"
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(a.seed)
    report = json.loads(subprocess.run([a.laxc, "check", "--format", "json", a.spec],
                                       check=True, capture_output=True, text=True).stdout)
    model = Model(report, a.dropout).to(device)
    params = sum(p.numel() for p in model.parameters())
    if params != report["params"]["total"]:
        sys.exit(f"twin.py: the twin has {params} parameters, the report {report['params']['total']}")
    cfg = report["model"]["config"]
    batch = a.batch or report["flops"]["samples_per_step"] or 8
    gen = torch.Generator().manual_seed(a.seed)
    n = a.warmup + a.steps
    language = cfg["family"] in ("llama", "gpt2")
    if language:
        data = [torch.randint(0, cfg["vocab"], (batch, cfg["tokens"] + 1), generator=gen).to(device)
                for _ in range(n)]
    else:
        shape = (batch, cfg["channels"], cfg["image"], cfg["image"])
        data = [(torch.randn(shape, generator=gen).to(device),
                 torch.randint(0, cfg["classes"], (batch,), generator=gen).to(device)) for _ in range(n)]
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=a.weight_decay, eps=1e-8)
    times, loss = [], float("nan")
    for i, d in enumerate(data):
        t0 = time.perf_counter()
        if language:
            logits = model(d[:, :-1])
            l = F.cross_entropy(logits, d[:, 1:].reshape(-1))
        else:
            l = F.cross_entropy(model(d[0]), d[1])
        opt.zero_grad(set_to_none=True)
        l.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip)
        opt.step()
        if gpu:
            torch.cuda.synchronize(device)
        loss = l.item()
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    flops = report["flops"]["train_per_sample"] * batch
    items = batch * (cfg["tokens"] if language else 1)
    print(json.dumps({
        "implementation": (f"pytorch {torch.__version__} eager, {torch.cuda.get_device_name(device)} (TF32)" if gpu
                           else f"pytorch {torch.__version__} eager ({a.threads} threads)"),
        "spec": a.spec, "batch": batch, "tokens_per_sample": cfg["tokens"],
        "unit": "tokens" if language else "images",
        "steps": a.steps, "warmup": a.warmup, "params": params, "dropout": a.dropout,
        "step_seconds": times, "median_step_seconds": med,
        "items_per_second": items / med, "gflops_per_second": flops / med / 1e9,
        "train_flops_per_step": flops, "final_loss": loss,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "peak_gpu_bytes": torch.cuda.max_memory_allocated(device) if gpu else None,
        "report_train_bytes_fp32": report["memory"]["train_bytes_fp32"],
    }))


if __name__ == "__main__":
    main()
