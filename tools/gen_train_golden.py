#!/usr/bin/python3
"""Generate strand's training golden fixture: GPT-2 gradients and AdamW steps from PyTorch.

Interpreter: /usr/bin/python3 (Debian's python3-torch; numpy). No other third-party package:
the safetensors files are written byte by byte.

An independent framework computes what strand's training must reproduce: PyTorch's autograd
differentiates a float64 GPT-2 written here from the math (Hugging Face GPT2LMHeadModel
semantics: Conv1D [in, out] weights, gelu_new, biased layer norm, causal softmax attention,
mean cross-entropy over every position), and torch.optim.AdamW takes two steps.

What it writes, under tests/fixtures/train/ (relative to the repo root):

  tied/, untied/      Hugging Face GPT-2 directories (config.json, model.safetensors in F32):
                      2 layers, 16 channels, 2 heads, context 16, vocabulary 40; untied has a
                      separate lm_head.weight
  golden.safetensors  float64, for each model TAG in (tied, untied):
      TAG.ids1, TAG.targets1     I32 [B*T]   the first batch: B = 3 sequences of T = 9 tokens
      TAG.loss1                  F64 [1]     mean cross-entropy of the first batch
      TAG.grad1.NAME             F64         d loss1 / d NAME for every parameter
      TAG.ids2, TAG.targets2     I32 [B*T]   the second batch
      TAG.loss2                  F64 [1]     its loss after one AdamW step
      TAG.grad2.NAME             F64         d loss2 / d NAME (at the parameters after step 1)
      TAG.after2.NAME            F64         every parameter after the second AdamW step
  AdamW: lr 1e-2, betas (0.9, 0.95), eps 1e-8, weight decay 0.1 on the matrices and the
  embeddings (every parameter of rank 2), none on biases and layer-norm gains; no clipping.

Seeds are fixed and printed; torch runs single-threaded, so two runs write identical files.
Usage:  /usr/bin/python3 tools/gen_train_golden.py [--out DIR]
"""

import argparse
import json
import math
import os
import struct

import numpy as np
import torch

SEED_WEIGHTS = 20261130
SEED_BATCHES = 20261131

N_LAYER, N_EMBD, N_HEAD, N_POS, VOCAB = 2, 16, 2, 16, 40
B, T = 3, 9
LR, BETAS, EPS, WD = 1e-2, (0.9, 0.95), 1e-8, 0.1

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "tests", "fixtures", "train")


def write_safetensors(path, tensors):
    """tensors: list of (name, numpy array) in F32, F64 or I32."""
    kinds = {np.dtype("<f4"): "F32", np.dtype("<f8"): "F64", np.dtype("<i4"): "I32"}
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, arr in tensors:
        arr = np.ascontiguousarray(arr)
        raw = arr.tobytes()
        header[name] = {"dtype": kinds[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    hdr = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hdr += b" " * ((-len(hdr)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hdr)))
        f.write(hdr)
        for raw in blobs:
            f.write(raw)


def make_weights(rng, tied):
    C = N_EMBD

    def normal(std, *shape):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    def gain(n):
        return (1.0 + 0.2 * rng.standard_normal(n)).astype(np.float32)

    w = [("wte.weight", normal(0.3, VOCAB, C)), ("wpe.weight", normal(0.1, N_POS, C))]
    for l in range(N_LAYER):
        p = "h.%d." % l
        w += [(p + "ln_1.weight", gain(C)), (p + "ln_1.bias", normal(0.1, C)),
              (p + "attn.c_attn.weight", normal(0.3, C, 3 * C)), (p + "attn.c_attn.bias", normal(0.1, 3 * C)),
              (p + "attn.c_proj.weight", normal(0.2, C, C)), (p + "attn.c_proj.bias", normal(0.1, C)),
              (p + "ln_2.weight", gain(C)), (p + "ln_2.bias", normal(0.1, C)),
              (p + "mlp.c_fc.weight", normal(0.3, C, 4 * C)), (p + "mlp.c_fc.bias", normal(0.1, 4 * C)),
              (p + "mlp.c_proj.weight", normal(0.15, 4 * C, C)), (p + "mlp.c_proj.bias", normal(0.1, C))]
    w += [("ln_f.weight", gain(C)), ("ln_f.bias", normal(0.1, C))]
    if not tied:
        w.append(("lm_head.weight", normal(0.3, VOCAB, C)))
    return w


def config(tied):
    return {"activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"],
            "bos_token_id": VOCAB - 1, "eos_token_id": VOCAB - 1, "layer_norm_epsilon": 1e-05,
            "model_type": "gpt2", "n_ctx": N_POS, "n_embd": N_EMBD, "n_head": N_HEAD, "n_inner": None,
            "n_layer": N_LAYER, "n_positions": N_POS, "tie_word_embeddings": tied,
            "torch_dtype": "float32", "vocab_size": VOCAB}


def layer_norm(x, g, b, eps=1e-5):
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * g + b


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def loss_of(P, ids, targets):
    """Mean cross-entropy of B sequences of T tokens (ids, targets: [B, T] long)."""
    C, H = N_EMBD, N_HEAD
    D = C // H
    x = P["wte.weight"][ids] + P["wpe.weight"][:T]            # [B, T, C]
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    for l in range(N_LAYER):
        p = "h.%d." % l
        a = layer_norm(x, P[p + "ln_1.weight"], P[p + "ln_1.bias"])
        qkv = a @ P[p + "attn.c_attn.weight"] + P[p + "attn.c_attn.bias"]
        q, k, v = qkv[..., :C], qkv[..., C:2 * C], qkv[..., 2 * C:]
        q = q.reshape(B, T, H, D).transpose(1, 2)
        k = k.reshape(B, T, H, D).transpose(1, 2)
        v = v.reshape(B, T, H, D).transpose(1, 2)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(D)
        s = s.masked_fill(mask, float("-inf"))
        att = (torch.softmax(s, dim=-1) @ v).transpose(1, 2).reshape(B, T, C)
        x = x + att @ P[p + "attn.c_proj.weight"] + P[p + "attn.c_proj.bias"]
        m = layer_norm(x, P[p + "ln_2.weight"], P[p + "ln_2.bias"])
        x = x + gelu_new(m @ P[p + "mlp.c_fc.weight"] + P[p + "mlp.c_fc.bias"]) @ P[p + "mlp.c_proj.weight"] \
            + P[p + "mlp.c_proj.bias"]
    x = layer_norm(x, P["ln_f.weight"], P["ln_f.bias"])
    logits = x @ P.get("lm_head.weight", P["wte.weight"]).T   # [B, T, V]
    return torch.nn.functional.cross_entropy(logits.reshape(B * T, VOCAB), targets.reshape(B * T))


def batch(rng):
    ids = rng.integers(0, VOCAB, size=(B, T))
    targets = rng.integers(0, VOCAB, size=(B, T))
    return torch.tensor(ids, dtype=torch.long), torch.tensor(targets, dtype=torch.long)


def i32(t):
    return t.reshape(-1).numpy().astype("<i4")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print("seeds: weights %d, batches %d" % (SEED_WEIGHTS, SEED_BATCHES))
    golden = []
    for tag, tied in (("tied", True), ("untied", False)):
        rng = np.random.default_rng(SEED_WEIGHTS + (0 if tied else 1))
        weights = make_weights(rng, tied)
        d = os.path.join(args.out, tag)
        os.makedirs(d, exist_ok=True)
        write_safetensors(os.path.join(d, "model.safetensors"), weights)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(config(tied), f, indent=2)
            f.write("\n")
        names = [n for n, _ in weights]
        P = {n: torch.tensor(w.astype(np.float64), requires_grad=True) for n, w in weights}
        params = [P[n] for n in names]
        decay = [p for p in params if p.dim() == 2]
        no_decay = [p for p in params if p.dim() != 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD}, {"params": no_decay, "weight_decay": 0.0}],
                                lr=LR, betas=BETAS, eps=EPS)
        brng = np.random.default_rng(SEED_BATCHES + (0 if tied else 1))
        for step in (1, 2):
            ids, targets = batch(brng)
            opt.zero_grad()
            loss = loss_of(P, ids, targets)
            loss.backward()
            golden += [("%s.ids%d" % (tag, step), i32(ids)), ("%s.targets%d" % (tag, step), i32(targets)),
                       ("%s.loss%d" % (tag, step), np.array([loss.item()], dtype="<f8"))]
            golden += [("%s.grad%d.%s" % (tag, step, n), P[n].grad.detach().numpy().astype("<f8")) for n in names]
            opt.step()
            print("%s step %d: loss %.12f" % (tag, step, loss.item()))
        golden += [("%s.after2.%s" % (tag, n), P[n].detach().numpy().astype("<f8")) for n in names]
    write_safetensors(os.path.join(args.out, "golden.safetensors"), golden)
    print("wrote", os.path.join(args.out, "golden.safetensors"))


if __name__ == "__main__":
    main()
