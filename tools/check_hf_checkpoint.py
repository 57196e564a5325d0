#!/usr/bin/env python3
"""Check that a checkpoint strand wrote loads in Hugging Face transformers and computes what
strand computes.

Needs: transformers and torch (e.g. a venv made with --system-site-packages over Debian's
python3-torch, then `pip install transformers`). Not part of strand's build or CI.

For a model directory written by `strand train` (or any GPT-2 directory) and a text file:
  1. transformers loads it (GPT2LMHeadModel.from_pretrained, GPT2Tokenizer.from_pretrained);
  2. the tokenizers agree: strand tokenize ids == transformers' ids;
  3. the logits agree: the mean negative log-likelihood of the text (every token after the
     first, as `strand perplexity` scores it) from transformers' float64 logits against
     `strand perplexity --json`, and strand's greedy continuation (strand generate --temp 0)
     against transformers' greedy generate, token for token.
Prints one line per check and exits non-zero on any difference beyond float32 rounding.

Usage: tools/check_hf_checkpoint.py MODEL_DIR TEXT_FILE [--strand build/strand] [--n 32]
"""

import argparse
import json
import math
import subprocess
import sys

import torch
from transformers import GPT2LMHeadModel, GPT2Tokenizer


def strand_json(binary, args):
    out = subprocess.run([binary] + args + ["--json"], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("text")
    ap.add_argument("--strand", default="build/strand")
    ap.add_argument("--n", type=int, default=32)
    a = ap.parse_args()
    ok = True

    model = GPT2LMHeadModel.from_pretrained(a.model, torch_dtype=torch.float64).eval()
    tok = GPT2Tokenizer.from_pretrained(a.model)
    print("transformers loaded %s: %d layers, %d channels, vocabulary %d, %.2fM parameters" % (
        a.model, model.config.n_layer, model.config.n_embd, model.config.vocab_size,
        sum(p.numel() for p in model.parameters()) / 1e6))

    text = open(a.text, encoding="utf-8").read()
    hf_ids = tok(text)["input_ids"]
    st_ids = strand_json(a.strand, ["tokenize", "-m", a.model, "-f", a.text])
    same = hf_ids == st_ids
    ok &= same
    print("tokenize: %d tokens, %s" % (len(st_ids), "identical ids" if same else "DIFFERENT ids"))

    ctx = model.config.n_positions
    ids = torch.tensor([hf_ids[:ctx]])
    with torch.no_grad():
        logits = model(ids).logits[0]
    logp = torch.log_softmax(logits, dim=-1)
    nll = -sum(logp[i, hf_ids[i + 1]].item() for i in range(ids.shape[1] - 1)) / (ids.shape[1] - 1)
    ppl = strand_json(a.strand, ["perplexity", "-m", a.model, "-f", a.text])
    rel = abs(ppl["nll"] - nll) / nll
    good = rel < 1e-5 and len(hf_ids) <= ctx
    ok &= good
    print("mean NLL of the text: strand %.9f, transformers (float64) %.9f: relative difference %.2e %s" % (
        ppl["nll"], nll, rel, "(ok)" if good else "(TOO LARGE)" if len(hf_ids) <= ctx else "(text longer than the context)"))

    prompt = text[: max(1, len(text) // 4)]
    pids = tok(prompt)["input_ids"]
    with torch.no_grad():
        hf_gen = model.generate(torch.tensor([pids]), max_new_tokens=a.n, do_sample=False,
                                pad_token_id=tok.eos_token_id)[0][len(pids):].tolist()
    # transformers stops at end-of-text too; strand does not print it.
    if tok.eos_token_id in hf_gen:
        hf_gen = hf_gen[: hf_gen.index(tok.eos_token_id)]
    st_gen = strand_json(a.strand, ["generate", "-m", a.model, "-p", prompt, "-n", str(a.n), "--temp", "0"])["ids"]
    same = st_gen == hf_gen[: len(st_gen)] and len(st_gen) == len(hf_gen)
    ok &= same
    print("greedy continuation of %d tokens: %s" % (len(st_gen), "identical" if same else "DIFFERENT: %s vs %s" % (st_gen, hf_gen)))
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
