#!/usr/bin/env python3
"""tools/gpu_peers.py — the peers strand's cuda tier is measured against, on the same GPU.

Verification only (strand never needs Python). Run by scripts/gpu-check.sh on the GPU machine,
with the PyTorch and Hugging Face transformers that machine has:

  1. makes random GPT-2 models on the GPU with transformers (the 124M shape, and the XL shape
     with a 2,048-token context) and saves them as Hugging Face directories in bf16, which
     `strand bench model -m DIR` then loads: both sides time the very same weights;
  2. times transformers on them, batch 1:
       tg128 eager     generate(), greedy, an 8-token prompt, 128 new tokens, dynamic cache
       tg128 compiled  the same with a static cache and forward compiled by torch.compile
                       (mode "reduce-overhead", CUDA graphs)
       pp              one forward over P tokens (sdpa attention), logits for the last token only
     Each the median of --reps timed runs after warm-ups; GPU time by CUDA events (pp) or wall
     time with the device synchronized (generate). tg tokens/s = 128 / the time of the whole
     generate() call (its 8-token prefill included: under 1% of it).
Writes one JSON object to --out and prints a table. A part that fails is recorded with its
error and the rest still runs.
"""
import argparse
import json
import os
import statistics
import sys
import time
import traceback


def log(msg):
    print(f"[peers] {msg}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default="/tmp/strand-peers", help="where the model directories are written")
    ap.add_argument("--out", default="peers.json")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--small", action="store_true", help="tiny shapes (a rehearsal on any machine, CPU included)")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile run")
    args = ap.parse_args()

    import torch
    import transformers
    from transformers import GPT2Config, GPT2LMHeadModel

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    res = {
        "device": torch.cuda.get_device_name(0) if dev == "cuda" else "cpu",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.version.cuda,
        "models": {},
        "results": [],
        "errors": [],
    }

    def sync():
        if dev == "cuda":
            torch.cuda.synchronize()

    if args.small:
        shapes = {
            "gpt2-124m": dict(n_embd=64, n_layer=2, n_head=2, n_positions=256, vocab_size=1000, bos_token_id=0,
                              eos_token_id=0),
            "gpt2-xl": dict(n_embd=96, n_layer=2, n_head=3, n_positions=512, vocab_size=1000, bos_token_id=0,
                            eos_token_id=0),
        }
        pp = {"gpt2-124m": 64, "gpt2-xl": 256}
    else:
        shapes = {
            "gpt2-124m": dict(),  # GPT2Config's defaults are GPT-2 124M's shape
            "gpt2-xl": dict(n_embd=1600, n_layer=48, n_head=25, n_positions=2048),
        }
        pp = {"gpt2-124m": 512, "gpt2-xl": 2048}

    def make(name):
        cfg = GPT2Config(**shapes[name])
        torch.manual_seed(1)
        with torch.device(dev):
            model = GPT2LMHeadModel(cfg)
        model = model.to(torch.bfloat16).eval()
        try:
            model.set_attn_implementation("sdpa")
        except Exception:  # older or newer API: keep what the model chose
            pass
        path = os.path.join(args.dir, name + "-bf16")
        t0 = time.time()
        # One safetensors file (strand's loader takes no shards); the keyword set differs between
        # transformers versions: fall back to fewer keywords when one is refused.
        for kw in (dict(safe_serialization=True, max_shard_size="100GB"), dict(max_shard_size="100GB"), {}):
            try:
                model.save_pretrained(path, **kw)
                break
            except TypeError:
                continue
        params = sum(p.numel() for p in model.parameters())
        res["models"][name] = {
            "path": path,
            "parameters": params,
            "config": shapes[name] or "GPT2Config() defaults",
            "attn_implementation": getattr(model.config, "_attn_implementation", "?"),
            "save_seconds": time.time() - t0,
        }
        log(f"{name}: {params / 1e6:.1f} M parameters, saved to {path}")
        return model

    def record(name, test, mode, seconds, tokens, note=""):
        tps = tokens / statistics.median(seconds)
        row = {
            "model": name,
            "test": test,
            "mode": mode,
            "dtype": "bf16",
            "tokens": tokens,
            "seconds": seconds,
            "tokens_per_s_median": tps,
            "tokens_per_s_min": tokens / max(seconds),
            "tokens_per_s_max": tokens / min(seconds),
            "note": note,
        }
        res["results"].append(row)
        log(f"{name} {test} {mode}: {tps:.1f} tokens/s {note}")

    def time_generate(model, ids, n, reps, warm):
        gen = dict(max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
        for _ in range(warm):
            model.generate(ids, **gen)
        sync()
        out = []
        for _ in range(reps):
            t0 = time.perf_counter()
            model.generate(ids, **gen)
            sync()
            out.append(time.perf_counter() - t0)
        return out

    def time_prefill(model, ids, reps):
        kw = dict(use_cache=False)
        note = "logits of the last token only (logits_to_keep=1)"
        try:
            with torch.inference_mode():
                model(ids, logits_to_keep=1, **kw)
            kw["logits_to_keep"] = 1
        except TypeError:
            note = "logits of every token (this transformers has no logits_to_keep)"
        with torch.inference_mode():
            for _ in range(3):
                model(ids, **kw)
            sync()
            out = []
            for _ in range(reps):
                if dev == "cuda":
                    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    a.record()
                    model(ids, **kw)
                    b.record()
                    b.synchronize()
                    out.append(a.elapsed_time(b) / 1e3)
                else:
                    t0 = time.perf_counter()
                    model(ids, **kw)
                    out.append(time.perf_counter() - t0)
        return out, note

    # ---- GPT-2 124M: tg128 eager and compiled, pp ----
    try:
        m = make("gpt2-124m")
        vocab = m.config.vocab_size
        g = torch.Generator().manual_seed(2)
        prompt = torch.randint(0, vocab, (1, 8), generator=g).to(dev)
        record("gpt2-124m", "tg128", "eager", time_generate(m, prompt, 128, args.reps, 1), 128, "dynamic cache")
        ids = torch.randint(0, vocab, (1, pp["gpt2-124m"]), generator=g).to(dev)
        s, note = time_prefill(m, ids, args.reps)
        record("gpt2-124m", f"pp{ids.shape[1]}", "eager", s, ids.shape[1], note)
        if not args.no_compile:
            # The documented recipe: a static cache and forward compiled with mode="reduce-overhead".
            # Where this transformers refuses the explicit compile, its own automatic compilation
            # of a static-cache generate() is tried instead (and named in the note).
            m.generation_config.cache_implementation = "static"
            plain_forward = m.forward
            failed = []
            for how in ("torch.compile(forward, mode=reduce-overhead, fullgraph=True)",
                        "transformers' own compile of a static-cache generate()"):
                try:
                    if how.startswith("torch.compile"):
                        m.forward = torch.compile(plain_forward, mode="reduce-overhead", fullgraph=True)
                    else:
                        m.forward = plain_forward
                        torch._dynamo.reset()
                    t0 = time.time()
                    time_generate(m, prompt, 128, 1, 2)  # compiles (prefill and decode shapes)
                    log(f"compile warm-up ({how}): {time.time() - t0:.1f} s")
                    record("gpt2-124m", "tg128", "compiled", time_generate(m, prompt, 128, args.reps, 1), 128,
                           "static cache, " + how + "".join(f"; {f} failed first" for f, _ in failed))
                    failed = []
                    break
                except Exception as e:
                    failed.append((how, repr(e)[:2000]))
                    log(f"compiled run ({how}) failed: {e!r}"[:500])
            for how, err in failed:
                res["errors"].append({"part": f"gpt2-124m tg128 compiled ({how})", "error": err})
        del m
        if dev == "cuda":
            torch.cuda.empty_cache()
    except Exception as e:
        res["errors"].append({"part": "gpt2-124m", "error": repr(e)[:2000], "trace": traceback.format_exc()[-2000:]})
        log(f"gpt2-124m failed: {e!r}"[:500])

    # ---- GPT-2 XL shape: pp2048 (and the directory strand loads) ----
    try:
        m = make("gpt2-xl")
        g = torch.Generator().manual_seed(3)
        ids = torch.randint(0, m.config.vocab_size, (1, pp["gpt2-xl"]), generator=g).to(dev)
        s, note = time_prefill(m, ids, args.reps)
        record("gpt2-xl", f"pp{ids.shape[1]}", "eager", s, ids.shape[1], note + "; sdpa attention")
        del m
    except Exception as e:
        res["errors"].append({"part": "gpt2-xl", "error": repr(e)[:2000], "trace": traceback.format_exc()[-2000:]})
        log(f"gpt2-xl failed: {e!r}"[:500])

    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    print("| model | test | transformers | tokens/s (min-max) |")
    print("|---|---|---|---:|")
    for r in res["results"]:
        print(f"| {r['model']} | {r['test']} | {r['mode']} | {r['tokens_per_s_median']:.1f} "
              f"({r['tokens_per_s_min']:.1f}-{r['tokens_per_s_max']:.1f}) |")
    for e in res["errors"]:
        print(f"error: {e['part']}: {e['error'][:300]}")
    return 0 if not res["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
