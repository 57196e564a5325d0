#!/usr/bin/python3
"""The bar `strand bench train` is held to: a PyTorch training step of the same GPT-2 shape.

Interpreter: /usr/bin/python3 (Debian's python3-torch) or any Python with torch.
A GPT-2 written with torch.nn (the Hugging Face GPT2LMHeadModel computation: learned
positions, pre-norm blocks, gelu_new, tied lm_head, mean cross-entropy) trained on random
token ids with torch.optim.AdamW and gradient clipping, in float32 (or, with --dtype bf16, under
torch.autocast: bf16 products, f32 weights and optimizer), eager mode. Prints one
JSON object on stdout (the shape `strand bench train --peer FILE` reads), a table line on
stderr. A step is timed from the forward to the end of the optimizer step (on a GPU, to a
torch.cuda.synchronize() after it).

Usage: /usr/bin/python3 tools/bench_train_torch.py [--shape 124M|demo] [--batch 4] [--ctx 256]
                                                   [--threads 2] [--reps 3] [--warmup 1]
                                                   [--device cpu|cuda] [--dtype f32|bf16]
"""

import argparse
import json
import math
import platform
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, c, h):
        super().__init__()
        self.h = h
        self.ln_1 = nn.LayerNorm(c)
        self.c_attn = nn.Linear(c, 3 * c)
        self.c_proj = nn.Linear(c, c)
        self.ln_2 = nn.LayerNorm(c)
        self.c_fc = nn.Linear(c, 4 * c)
        self.mlp_proj = nn.Linear(4 * c, c)

    def forward(self, x, mask):
        b, t, c = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(c, dim=2)
        q = q.view(b, t, self.h, c // self.h).transpose(1, 2)
        k = k.view(b, t, self.h, c // self.h).transpose(1, 2)
        v = v.view(b, t, self.h, c // self.h).transpose(1, 2)
        s = (q @ k.transpose(-2, -1)) / math.sqrt(c // self.h)
        s = s.masked_fill(mask[:t, :t], float("-inf"))
        y = (F.softmax(s, dim=-1) @ v).transpose(1, 2).contiguous().view(b, t, c)
        x = x + self.c_proj(y)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, layers, c, h, vocab, ctx):
        super().__init__()
        self.wte = nn.Embedding(vocab, c)
        self.wpe = nn.Embedding(ctx, c)
        self.h = nn.ModuleList([Block(c, h) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(c)
        self.register_buffer("mask", torch.triu(torch.ones(ctx, ctx, dtype=torch.bool), diagonal=1))

    def forward(self, ids, targets):
        t = ids.shape[1]
        x = self.wte(ids) + self.wpe(torch.arange(t, device=ids.device))
        for blk in self.h:
            x = blk(x, self.mask)
        logits = self.ln_f(x) @ self.wte.weight.T
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="124M", choices=["124M", "demo"])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
    a = ap.parse_args()
    dev = torch.device(a.device)
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    layers, c, h, vocab = (12, 768, 12, 50257) if a.shape == "124M" else (4, 192, 6, 257)
    model = GPT(layers, c, h, vocab, a.ctx).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    ids = torch.randint(0, vocab, (a.batch, a.ctx), device=dev)
    targets = torch.randint(0, vocab, (a.batch, a.ctx), device=dev)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(a.device, dtype=torch.bfloat16, enabled=a.dtype == "bf16"):
            loss = model(ids, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if a.device == "cuda":
            torch.cuda.synchronize()

    for _ in range(a.warmup):
        step()
    secs = []
    for _ in range(a.reps):
        t0 = time.perf_counter()
        step()
        secs.append(time.perf_counter() - t0)
    med = statistics.median(secs)
    tokens = a.batch * a.ctx
    out = {
        "name": "PyTorch %s eager" % torch.__version__,
        "detail": "%s, %s, batch %d x ctx %d, %s, AdamW, median of %d steps" % (
            a.shape, torch.cuda.get_device_name() if a.device == "cuda" else "%d threads" % a.threads,
            a.batch, a.ctx, "f32" if a.dtype == "f32" else "bf16 autocast (f32 weights)", a.reps),
        "tokens_per_s": tokens / med,
        "tokens_per_s_min": tokens / max(secs),
        "tokens_per_s_max": tokens / min(secs),
        "seconds": secs,
        "threads": a.threads,
        "device": a.device,
        "dtype": a.dtype,
        "batch": a.batch,
        "ctx": a.ctx,
        "shape": a.shape,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    print(json.dumps(out))
    print("pytorch %s: %.1f tokens/s (%.1f-%.1f)" % (a.shape, out["tokens_per_s"], out["tokens_per_s_min"],
                                                    out["tokens_per_s_max"]), file=sys.stderr)


if __name__ == "__main__":
    main()
