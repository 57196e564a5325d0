#!/usr/bin/python3
"""Generate strand's GPT-2 golden end-to-end test fixtures.

Interpreter: /usr/bin/python3 (Debian's python with torch 1.13 and numpy).
No other third-party packages are used: the safetensors files are written
byte by byte, the byte-level BPE tokenizer and the GPT-2 forward pass are
implemented here from their definitions.

What it writes (all under tests/fixtures/gpt2/, relative to the repo root):

  tiny-f32/    config.json, model.safetensors (F32, names without prefix,
               tied lm_head), vocab.json, merges.txt, ppl.txt, ppl_long.txt
  tiny-f16/    same weights rounded to F16, names with the "transformer."
               prefix, plus an explicit, different, untied lm_head.weight
  tiny-bf16/   same weights rounded to BF16, "transformer." prefix, tied
  tiny-gelu/   a smaller one-layer model using exact erf GELU, F32, tied
  golden.json  float64 logits for every position of a few inputs per model,
               and two perplexity cases (short and sliding-window) for tiny-f32

The tokenizer (300 ids) is ids 0..255 = the 256 byte symbols of GPT-2's
byte-to-unicode mapping in GPT-2's order, ids 256..298 = the first 43 merges
of GPT-2's merges file (read from shared/data/gpt2-tokenizer/merges.txt),
id 299 = <|endoftext|>.

This is an independent float64 reference implementation of the GPT-2 forward
pass, written from the math, used only to produce test expectations for
strand's C++ engine. It is not part of strand and is never run at build time.

Everything derives from the fixed seeds printed at start-up; running the
script twice produces byte-identical files (torch runs single-threaded so the
float64 reductions are done in a fixed order). Usage:

    /usr/bin/python3 tools/gen_gpt2_golden.py [--out DIR] [--merges FILE]
"""

import argparse
import json
import math
import os
import re
import struct
import sys

import numpy as np
import torch

# ---------------------------------------------------------------------------
# Seeds (printed on every run)
# ---------------------------------------------------------------------------
SEED_TINY_WEIGHTS = 20240501   # tiny architecture weights (f32/f16/bf16)
SEED_F16_LM_HEAD = 20240502    # untied lm_head of tiny-f16
SEED_GELU_WEIGHTS = 20240503   # tiny-gelu weights
SEED_CASES_TINY = 20240504     # input ids for tiny-f32/f16/bf16 cases
SEED_CASES_GELU = 20240505     # input ids for tiny-gelu cases

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "tests", "fixtures", "gpt2")
MERGES_CANDIDATES = [
    os.path.join(REPO_ROOT, "shared", "data", "gpt2-tokenizer", "merges.txt"),
    os.path.join(os.path.dirname(REPO_ROOT), "shared", "data", "gpt2-tokenizer",
                 "merges.txt"),
]
DEFAULT_MERGES = next((p for p in MERGES_CANDIDATES if os.path.exists(p)),
                      MERGES_CANDIDATES[-1])

N_MERGES = 43
EOT = "<|endoftext|>"

PPL_TEXT = "The cat sat on the mat, and it's 1999 now.\nThen it ran!"

PPL_LONG_TEXT = (
    "In the beginning there was a small model. It had two layers, three heads "
    "and a tiny vocabulary of 300 tokens.\n\nIt could not write poems, but it "
    "could  be tested: every logit was checked against a reference."
)


# ---------------------------------------------------------------------------
# Tokenizer: byte-level BPE
# ---------------------------------------------------------------------------
def byte_symbols():
    """Return the list of 256 (byte, symbol) pairs in GPT-2's id order.

    Printable bytes map to themselves and come first, in byte order; the
    remaining bytes map to chr(256 + n) in byte order after them."""
    printable = (list(range(ord("!"), ord("~") + 1))
                 + list(range(ord("\u00a1"), ord("\u00ac") + 1))
                 + list(range(ord("\u00ae"), ord("\u00ff") + 1)))
    pairs = [(b, chr(b)) for b in printable]
    keep = set(printable)
    n = 0
    for b in range(256):
        if b not in keep:
            pairs.append((b, chr(256 + n)))
            n += 1
    assert len(pairs) == 256
    return pairs


def read_merges(path, count):
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    assert lines[0].startswith("#version"), "unexpected merges header"
    merges = []
    for line in lines[1:]:
        if not line:
            continue
        a, b = line.split(" ")
        merges.append((a, b))
        if len(merges) == count:
            break
    assert len(merges) == count
    return merges


class Tokenizer:
    # GPT-2's pre-tokenizer pattern restricted to ASCII input: letters are
    # [A-Za-z] and numbers [0-9], which is exactly what \p{L} and \p{N} match
    # on ASCII text. Only ASCII text is ever tokenized here (asserted).
    PAT = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+"
                     r"| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+")

    def __init__(self, merges):
        self.byte_to_sym = {}
        self.vocab = {}
        for i, (b, s) in enumerate(byte_symbols()):
            self.byte_to_sym[b] = s
            self.vocab[s] = i
        self.merges = merges
        self.ranks = {}
        for r, (a, b) in enumerate(merges):
            assert a in self.vocab and b in self.vocab, \
                "merge %r %r has a part missing from the vocab" % (a, b)
            merged = a + b
            assert merged not in self.vocab, "duplicate token %r" % merged
            self.vocab[merged] = len(self.vocab)
            self.ranks[(a, b)] = r
        self.vocab[EOT] = len(self.vocab)
        self.id_to_tok = {i: t for t, i in self.vocab.items()}
        self.sym_to_byte = {s: b for b, s in self.byte_to_sym.items()}

    def bpe(self, word):
        parts = list(word)
        while len(parts) > 1:
            best = None
            for i in range(len(parts) - 1):
                r = self.ranks.get((parts[i], parts[i + 1]))
                if r is not None and (best is None or r < best[0]):
                    best = (r, parts[i], parts[i + 1])
            if best is None:
                break
            _, a, b = best
            out = []
            i = 0
            while i < len(parts):
                if i + 1 < len(parts) and parts[i] == a and parts[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(parts[i])
                    i += 1
            parts = out
        return parts

    def bpe_by_rank_order(self, word):
        """Cross-check for bpe(): apply every merge in rank order, each over
        the whole word left to right. Equivalent because a merge's parts
        always have lower ranks than the merge itself."""
        parts = list(word)
        for a, b in self.merges:
            out = []
            i = 0
            while i < len(parts):
                if i + 1 < len(parts) and parts[i] == a and parts[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(parts[i])
                    i += 1
            parts = out
        return parts

    def encode(self, text):
        assert all(ord(c) < 128 for c in text), "ASCII-only splitter"
        ids = []
        pieces = self.PAT.findall(text)
        assert "".join(pieces) == text
        for piece in pieces:
            word = "".join(self.byte_to_sym[b] for b in piece.encode("utf-8"))
            toks = self.bpe(word)
            assert toks == self.bpe_by_rank_order(word)
            ids.extend(self.vocab[t] for t in toks)
        return ids

    def decode(self, ids):
        data = bytearray()
        for i in ids:
            data.extend(self.sym_to_byte[c] for c in self.id_to_tok[i])
        return data.decode("utf-8")


# ---------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------
def make_weights(seed, n_layer, n_embd, n_positions, vocab):
    """Random GPT-2 weights as an ordered list of (name, float32 array)."""
    rng = np.random.default_rng(seed)
    C = n_embd

    def normal(std, *shape):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    def gain(n):
        return (1.0 + 0.2 * rng.standard_normal(n)).astype(np.float32)

    w = [("wte.weight", normal(0.2, vocab, C)),
         ("wpe.weight", normal(0.1, n_positions, C))]
    for l in range(n_layer):
        p = "h.%d." % l
        w += [(p + "ln_1.weight", gain(C)),
              (p + "ln_1.bias", normal(0.1, C)),
              (p + "attn.c_attn.weight", normal(0.2, C, 3 * C)),
              (p + "attn.c_attn.bias", normal(0.1, 3 * C)),
              (p + "attn.c_proj.weight", normal(0.15, C, C)),
              (p + "attn.c_proj.bias", normal(0.1, C)),
              (p + "ln_2.weight", gain(C)),
              (p + "ln_2.bias", normal(0.1, C)),
              (p + "mlp.c_fc.weight", normal(0.2, C, 4 * C)),
              (p + "mlp.c_fc.bias", normal(0.1, 4 * C)),
              (p + "mlp.c_proj.weight", normal(0.1, 4 * C, C)),
              (p + "mlp.c_proj.bias", normal(0.1, C))]
    w += [("ln_f.weight", gain(C)), ("ln_f.bias", normal(0.1, C))]
    return w


def f32_to_bf16_bits(a):
    """Round float32 to bfloat16 (nearest, ties to even); return uint16 bits."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    assert np.all(np.isfinite(a))
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def bf16_bits_to_f64(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


# ---------------------------------------------------------------------------
# safetensors writer / reader
# ---------------------------------------------------------------------------
DTYPE_INFO = {"F32": (4, "<f4"), "F16": (2, "<f2"), "BF16": (2, "<u2")}


def write_safetensors(path, tensors, metadata):
    """tensors: list of (name, dtype string, shape, raw little-endian bytes)."""
    header = {"__metadata__": metadata}
    blobs = []
    offset = 0
    for name, dtype, shape, raw in tensors:
        size = DTYPE_INFO[dtype][0]
        assert len(raw) == size * int(np.prod(shape))
        header[name] = {"dtype": dtype, "shape": list(shape),
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


def read_safetensors_f64(path):
    """Read back a file written above; returns {name: float64 array}."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n].decode("utf-8"))
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        raw = np.frombuffer(data[base + b:base + e], dtype=DTYPE_INFO[info["dtype"]][1])
        if info["dtype"] == "BF16":
            arr = bf16_bits_to_f64(raw)
        else:
            arr = raw.astype(np.float64)
        out[name] = arr.reshape(info["shape"])
    return out


# ---------------------------------------------------------------------------
# float64 forward pass
# ---------------------------------------------------------------------------
def act_fn(name, x):
    if name == "gelu_new":
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi)
                                           * (x + 0.044715 * x * x * x)))
    if name == "gelu":
        return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))
    if name == "relu":
        return torch.clamp(x, min=0.0)
    raise ValueError(name)


def layer_norm(x, g, b, eps):
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)   # biased
    return (x - mean) / torch.sqrt(var + eps) * g + b


def forward(P, cfg, ids):
    """P: {unprefixed name: float64 tensor}; returns float64 logits [T, V]."""
    C = cfg["n_embd"]
    H = cfg["n_head"]
    D = C // H
    eps = cfg["layer_norm_epsilon"]
    T = len(ids)
    assert 1 <= T <= cfg["n_positions"]
    idx = torch.tensor(ids, dtype=torch.long)
    x = P["wte.weight"][idx] + P["wpe.weight"][:T]
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    for l in range(cfg["n_layer"]):
        p = "h.%d." % l
        a = layer_norm(x, P[p + "ln_1.weight"], P[p + "ln_1.bias"], eps)
        qkv = a @ P[p + "attn.c_attn.weight"] + P[p + "attn.c_attn.bias"]
        q, k, v = qkv[:, :C], qkv[:, C:2 * C], qkv[:, 2 * C:]
        heads = []
        for h in range(H):
            sl = slice(h * D, (h + 1) * D)
            s = (q[:, sl] @ k[:, sl].T) / math.sqrt(D)
            s = s.masked_fill(mask, float("-inf"))
            heads.append(torch.softmax(s, dim=-1) @ v[:, sl])
        att = torch.cat(heads, dim=1)
        x = x + (att @ P[p + "attn.c_proj.weight"] + P[p + "attn.c_proj.bias"])
        m = layer_norm(x, P[p + "ln_2.weight"], P[p + "ln_2.bias"], eps)
        hdn = act_fn(cfg["activation_function"],
                     m @ P[p + "mlp.c_fc.weight"] + P[p + "mlp.c_fc.bias"])
        x = x + (hdn @ P[p + "mlp.c_proj.weight"] + P[p + "mlp.c_proj.bias"])
    x = layer_norm(x, P["ln_f.weight"], P["ln_f.bias"], eps)
    lm = P.get("lm_head.weight", P["wte.weight"])
    return x @ lm.T


def forward_incremental_np(P, cfg, ids):
    """Second, structurally different float64 forward in numpy: one token at a
    time with a key/value cache. Used only to cross-check forward()."""
    Pn = {k: v.numpy() for k, v in P.items()}
    C, H = cfg["n_embd"], cfg["n_head"]
    D = C // H
    eps = cfg["layer_norm_epsilon"]

    def ln(x, g, b):
        mu = sum(x) / len(x)
        var = sum((xi - mu) ** 2 for xi in x) / len(x)
        return (x - mu) / math.sqrt(var + eps) * g + b

    def act(z):
        name = cfg["activation_function"]
        if name == "gelu_new":
            return np.array([0.5 * t * (1 + math.tanh(math.sqrt(2 / math.pi)
                                                      * (t + 0.044715 * t ** 3)))
                             for t in z])
        if name == "gelu":
            return np.array([0.5 * t * (1 + math.erf(t / math.sqrt(2))) for t in z])
        return np.maximum(z, 0.0)

    cache = [([], []) for _ in range(cfg["n_layer"])]
    out = []
    for pos, tok in enumerate(ids):
        x = Pn["wte.weight"][tok] + Pn["wpe.weight"][pos]
        for l in range(cfg["n_layer"]):
            p = "h.%d." % l
            a = ln(x, Pn[p + "ln_1.weight"], Pn[p + "ln_1.bias"])
            qkv = a @ Pn[p + "attn.c_attn.weight"] + Pn[p + "attn.c_attn.bias"]
            q, k, v = qkv[:C], qkv[C:2 * C], qkv[2 * C:]
            cache[l][0].append(k)
            cache[l][1].append(v)
            att = np.zeros(C)
            for h in range(H):
                sl = slice(h * D, (h + 1) * D)
                sc = [float(q[sl] @ kk[sl]) / math.sqrt(D) for kk in cache[l][0]]
                mx = max(sc)
                e = [math.exp(s - mx) for s in sc]
                z = sum(e)
                for w, vv in zip(e, cache[l][1]):
                    att[sl] += (w / z) * vv[sl]
            x = x + att @ Pn[p + "attn.c_proj.weight"] + Pn[p + "attn.c_proj.bias"]
            m = ln(x, Pn[p + "ln_2.weight"], Pn[p + "ln_2.bias"])
            hdn = act(m @ Pn[p + "mlp.c_fc.weight"] + Pn[p + "mlp.c_fc.bias"])
            x = x + hdn @ Pn[p + "mlp.c_proj.weight"] + Pn[p + "mlp.c_proj.bias"]
        x = ln(x, Pn["ln_f.weight"], Pn["ln_f.bias"])
        lm = Pn.get("lm_head.weight", Pn["wte.weight"])
        out.append(lm @ x)
    return np.array(out)


# ---------------------------------------------------------------------------
# Perplexity
# ---------------------------------------------------------------------------
def token_nlls(logits, ids, positions):
    """NLL of ids[t] given logits row t-1 (rows indexed within the window)."""
    lsm = torch.log_softmax(logits, dim=-1)
    return [float(-lsm[r, ids[t]]) for r, t in positions]


def sliding_window_nll(P, cfg, ids):
    """Window W = n_positions, stride S = W // 2. The first window covers
    [0, W) and scores tokens 1..W-1; each next window starts S tokens later,
    covers [s, min(s + W, N)) and scores only tokens not scored before; the
    last window is the first one that reaches N."""
    N = len(ids)
    W = cfg["n_positions"]
    S = W // 2
    assert N >= 2
    nlls = []
    windows = []
    next_unscored = 1
    s = 0
    while True:
        e = min(s + W, N)
        first = max(next_unscored, s + 1)
        logits = forward(P, cfg, ids[s:e])
        nlls += token_nlls(logits, ids[s:e],
                           [(t - s - 1, t - s) for t in range(first, e)])
        windows.append({"begin": s, "end": e, "first_scored": first})
        next_unscored = e
        if e == N:
            break
        s += S
    assert len(nlls) == N - 1
    nll = math.fsum(nlls) / len(nlls)
    return nll, nlls, windows, W, S


# ---------------------------------------------------------------------------
# Model directories
# ---------------------------------------------------------------------------
def hf_config(n_layer, n_embd, n_head, n_positions, vocab, act, tied, dtype):
    return {
        "activation_function": act,
        "architectures": ["GPT2LMHeadModel"],
        "attn_pdrop": 0.1,
        "bos_token_id": vocab - 1,
        "embd_pdrop": 0.1,
        "eos_token_id": vocab - 1,
        "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05,
        "model_type": "gpt2",
        "n_ctx": n_positions,
        "n_embd": n_embd,
        "n_head": n_head,
        "n_inner": None,
        "n_layer": n_layer,
        "n_positions": n_positions,
        "resid_pdrop": 0.1,
        "scale_attn_weights": True,
        "tie_word_embeddings": tied,
        "torch_dtype": dtype,
        "vocab_size": vocab,
    }


def write_text(path, text):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def write_json(path, obj, indent=2):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        json.dump(obj, f, indent=indent)
        f.write("\n")


def write_tokenizer(d, tok):
    vocab = dict(sorted(tok.vocab.items(), key=lambda kv: kv[1]))
    # One line with \uXXXX escapes for non-ASCII, like GPT-2's own vocab.json.
    write_json(os.path.join(d, "vocab.json"), vocab, indent=None)
    lines = ["#version: 0.2"] + ["%s %s" % m for m in tok.merges]
    write_text(os.path.join(d, "merges.txt"), "\n".join(lines) + "\n")


def encode_weights(weights, dtype, prefix):
    """weights: list of (name, f32 array). Returns (tensors for the writer,
    {unprefixed name: float64 torch tensor of the stored values})."""
    tensors = []
    params = {}
    for name, a in weights:
        if dtype == "F32":
            raw = a.astype("<f4").tobytes()
            f64 = a.astype(np.float64)
        elif dtype == "F16":
            h = a.astype(np.float16)
            assert np.all(np.isfinite(h))
            raw = h.astype("<f2").tobytes()
            f64 = h.astype(np.float64)
        elif dtype == "BF16":
            bits = f32_to_bf16_bits(a)
            raw = bits.astype("<u2").tobytes()
            f64 = bf16_bits_to_f64(bits)
        else:
            raise ValueError(dtype)
        full = name if name == "lm_head.weight" else prefix + name
        tensors.append((full, dtype, a.shape, raw))
        params[name] = torch.from_numpy(np.ascontiguousarray(f64))
    return tensors, params


def check_readback(path, params, prefix):
    back = read_safetensors_f64(path)
    assert len(back) == len(params)
    for name, t in params.items():
        full = name if name == "lm_head.weight" else prefix + name
        assert np.array_equal(back[full], t.numpy()), full


def make_cases(P, cfg, seed):
    rng = np.random.default_rng(seed)
    V, T = cfg["vocab_size"], cfg["n_positions"]
    cases = []
    for length in (1, 7, T):
        ids = [int(i) for i in rng.integers(0, V, size=length)]
        logits = forward(P, cfg, ids)
        cases.append({"ids": ids, "logits": logits.tolist()})
    return cases


# ---------------------------------------------------------------------------
# Sanity checks
# ---------------------------------------------------------------------------
def check_causality(P, cfg, case):
    ids = case["ids"]
    full = torch.tensor(case["logits"], dtype=torch.float64)
    worst = 0.0
    for t in range(1, len(ids) + 1):
        last = forward(P, cfg, ids[:t])[-1]
        worst = max(worst, float((last - full[t - 1]).abs().max()))
    assert worst < 1e-11, worst
    return worst


def check_incremental(P, cfg, case):
    ids = case["ids"]
    ref = forward_incremental_np(P, cfg, ids)
    diff = float(np.abs(ref - np.array(case["logits"])).max())
    assert diff < 1e-10, diff
    return diff


def check_torch_builtins(P, cfg, ids):
    """Same forward again, batched over heads, with torch.nn.functional's
    layer_norm / gelu / softmax as the building blocks."""
    F = torch.nn.functional
    C, H = cfg["n_embd"], cfg["n_head"]
    eps = cfg["layer_norm_epsilon"]
    x = P["wte.weight"][torch.tensor(ids)] + P["wpe.weight"][:len(ids)]
    for l in range(cfg["n_layer"]):
        p = "h.%d." % l
        a = F.layer_norm(x, (C,), P[p + "ln_1.weight"], P[p + "ln_1.bias"], eps)
        q, k, v = (a @ P[p + "attn.c_attn.weight"] + P[p + "attn.c_attn.bias"]).split(C, dim=1)
        q, k, v = (t.reshape(len(ids), H, C // H).transpose(0, 1) for t in (q, k, v))
        s = q @ k.transpose(1, 2) / math.sqrt(C // H)
        s = s + torch.triu(torch.full((len(ids), len(ids)), float("-inf"),
                                      dtype=torch.float64), 1)
        att = F.softmax(s, -1) @ v
        att = att.transpose(0, 1).reshape(len(ids), C)
        x = x + att @ P[p + "attn.c_proj.weight"] + P[p + "attn.c_proj.bias"]
        m = F.layer_norm(x, (C,), P[p + "ln_2.weight"], P[p + "ln_2.bias"], eps)
        z = m @ P[p + "mlp.c_fc.weight"] + P[p + "mlp.c_fc.bias"]
        act = cfg["activation_function"]
        z = F.gelu(z, approximate="tanh") if act == "gelu_new" else \
            F.gelu(z) if act == "gelu" else F.relu(z)
        x = x + z @ P[p + "mlp.c_proj.weight"] + P[p + "mlp.c_proj.bias"]
    x = F.layer_norm(x, (C,), P["ln_f.weight"], P["ln_f.bias"], eps)
    lm = P.get("lm_head.weight", P["wte.weight"])
    return x @ lm.T


# ---------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--merges", default=DEFAULT_MERGES)
    args = ap.parse_args()

    torch.set_num_threads(1)
    print("seeds: tiny_weights=%d f16_lm_head=%d gelu_weights=%d "
          "cases_tiny=%d cases_gelu=%d" % (SEED_TINY_WEIGHTS, SEED_F16_LM_HEAD,
                                           SEED_GELU_WEIGHTS, SEED_CASES_TINY,
                                           SEED_CASES_GELU))

    tok = Tokenizer(read_merges(args.merges, N_MERGES))
    assert len(tok.vocab) == 300
    out = args.out
    golden = {
        "format": "strand-gpt2-golden",
        "version": 1,
        "generator": "tools/gen_gpt2_golden.py",
        "seeds": {"tiny_weights": SEED_TINY_WEIGHTS,
                  "f16_lm_head": SEED_F16_LM_HEAD,
                  "gelu_weights": SEED_GELU_WEIGHTS,
                  "cases_tiny": SEED_CASES_TINY,
                  "cases_gelu": SEED_CASES_GELU},
        "models": {},
    }

    # --- tiny architecture -------------------------------------------------
    L, C, H, T, V = 2, 48, 3, 64, 300
    tiny_w = make_weights(SEED_TINY_WEIGHTS, L, C, T, V)
    lm_rng = np.random.default_rng(SEED_F16_LM_HEAD)
    lm_head = (lm_rng.standard_normal((V, C)) * 0.2).astype(np.float32)

    specs = [
        # dir, dtype, prefix, tied, torch_dtype
        ("tiny-f32", "F32", "", True, "float32"),
        ("tiny-f16", "F16", "transformer.", False, "float16"),
        ("tiny-bf16", "BF16", "transformer.", True, "bfloat16"),
    ]
    params_by_dir = {}
    for dname, dtype, prefix, tied, tdt in specs:
        d = os.path.join(out, dname)
        os.makedirs(d, exist_ok=True)
        cfg = hf_config(L, C, H, T, V, "gelu_new", tied, tdt)
        write_json(os.path.join(d, "config.json"), cfg)
        write_tokenizer(d, tok)
        w = list(tiny_w) + ([] if tied else [("lm_head.weight", lm_head)])
        tensors, P = encode_weights(w, dtype, prefix)
        st = os.path.join(d, "model.safetensors")
        write_safetensors(st, tensors, {"format": "pt"})
        check_readback(st, P, prefix)
        params_by_dir[dname] = (P, cfg)
        cases = make_cases(P, cfg, SEED_CASES_TINY)
        golden["models"][dname] = {"dir": dname, "dtype": dtype,
                                   "tied": tied, "cases": cases}

    # --- tiny-gelu -------------------------------------------------------------
    gL, gC, gH, gT = 1, 32, 4, 32
    d = os.path.join(out, "tiny-gelu")
    os.makedirs(d, exist_ok=True)
    gcfg = hf_config(gL, gC, gH, gT, V, "gelu", True, "float32")
    write_json(os.path.join(d, "config.json"), gcfg)
    write_tokenizer(d, tok)
    tensors, gP = encode_weights(make_weights(SEED_GELU_WEIGHTS, gL, gC, gT, V),
                                 "F32", "")
    st = os.path.join(d, "model.safetensors")
    write_safetensors(st, tensors, {"format": "pt"})
    check_readback(st, gP, "")
    params_by_dir["tiny-gelu"] = (gP, gcfg)
    golden["models"]["tiny-gelu"] = {"dir": "tiny-gelu", "dtype": "F32", "tied": True,
                                     "cases": make_cases(gP, gcfg, SEED_CASES_GELU)}

    # --- perplexity (tiny-f32) ---------------------------------------------
    P, cfg = params_by_dir["tiny-f32"]
    ppl_cases = []
    for fname, text in (("ppl.txt", PPL_TEXT), ("ppl_long.txt", PPL_LONG_TEXT)):
        write_text(os.path.join(out, "tiny-f32", fname), text)
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        nll, nlls, windows, W, S = sliding_window_nll(P, cfg, ids)
        ppl_cases.append({"text_file": "tiny-f32/" + fname, "ids": ids,
                          "tokens": len(ids), "window": W, "stride": S,
                          "windows": windows, "token_nll": nlls,
                          "nll": nll, "ppl": math.exp(nll)})
        print("%s: %d tokens, %d windows, nll %.6f ppl %.4f"
              % (fname, len(ids), len(windows), nll, math.exp(nll)))
    assert ppl_cases[0]["tokens"] < cfg["n_positions"] < ppl_cases[1]["tokens"]
    # A single-window text: the short case must equal a plain full forward.
    short = ppl_cases[0]
    lg = forward(P, cfg, short["ids"])
    direct = token_nlls(lg, short["ids"], [(t - 1, t) for t in range(1, short["tokens"])])
    assert max(abs(a - b) for a, b in zip(direct, short["token_nll"])) < 1e-12
    golden["models"]["tiny-f32"]["perplexity"] = ppl_cases

    # --- sanity checks -------------------------------------------------------
    for dname, (P, cfg) in params_by_dir.items():
        cases = golden["models"][dname]["cases"]
        c = check_causality(P, cfg, cases[2])
        i = check_incremental(P, cfg, cases[1])
        b = float((check_torch_builtins(P, cfg, cases[2]["ids"])
                   - torch.tensor(cases[2]["logits"], dtype=torch.float64)).abs().max())
        assert b < 1e-10, b
        full = np.array(cases[2]["logits"])
        print("%-10s causality %.1e incremental %.1e torch-builtins %.1e "
              "logit std %.3f range [%.2f, %.2f]"
              % (dname, c, i, b, full.std(), full.min(), full.max()))
        assert full.std() > 0.5

    ref = np.array(golden["models"]["tiny-f32"]["cases"][2]["logits"])
    ids = golden["models"]["tiny-f32"]["cases"][2]["ids"]
    for dname in ("tiny-f16", "tiny-bf16"):
        P, cfg = params_by_dir[dname]
        tiedP = {k: v for k, v in P.items() if k != "lm_head.weight"}
        lg = forward(tiedP, cfg, ids).numpy()
        diff = np.abs(lg - ref).max()
        print("%-10s (tied) vs tiny-f32: max |diff| %.3e (logit range %.1f)"
              % (dname, diff, ref.max() - ref.min()))
        assert 0 < diff < 0.05 * (ref.max() - ref.min())
    f16 = np.array(golden["models"]["tiny-f16"]["cases"][2]["logits"])
    assert np.abs(f16 - ref).max() > 1.0, "untied lm_head should change logits"

    write_json(os.path.join(out, "golden.json"), golden, indent=None)
    total = 0
    for root, _, files in os.walk(out):
        for f in sorted(files):
            total += os.path.getsize(os.path.join(root, f))
    print("wrote %s (%d bytes in total)" % (out, total))


if __name__ == "__main__":
    sys.exit(main())
