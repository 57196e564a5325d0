#!/usr/bin/env python3
"""tools/gpu_summary.py — the one table scripts/gpu-check.sh ends with.

Reads what the check wrote into OUT (env.txt, tests.log, validate.txt, devices.json,
peers.json, bench.md) and the step results, and prints markdown: each step's result, the test
and sanitizer totals, validate's summary line, the GPU and its measured ceilings, and the
issue's targets as ratios from the same run (strand bench model vs transformers).

  tools/gpu_summary.py OUT STEPS_FILE SECONDS
"""
import json
import os
import re
import sys


def main():
    out, steps_file, total = sys.argv[1], sys.argv[2], sys.argv[3]

    def text(name):
        try:
            with open(os.path.join(out, name)) as f:
                return f.read()
        except OSError:
            return ""

    def load(name):
        try:
            with open(os.path.join(out, name)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    print(f"# strand cuda tier: GPU check ({total} s)\n")
    env = [l.strip() for l in text("env.txt").splitlines() if l.strip()]
    if env:
        print("machine: " + " | ".join(env[1:5]) + "\n")
    print("| step | result |\n|---|---|")
    with open(steps_file) as f:
        for line in f:
            name, _, res = line.rstrip("\n").partition("\t")
            print(f"| {name} | {res} |")

    tests = text("tests.log")
    passed = re.findall(r"\[  PASSED  \] (\d+) test", tests)
    failed = re.findall(r"\[  FAILED  \] (\d+) test", tests)
    skipped = re.findall(r"\[  SKIPPED \] (\d+) test", tests)
    print(f"\ncuda tests (STRAND_REQUIRE_GPU=1), per run (tests, memcheck, racecheck): passed {passed}, "
          f"failed {failed or ['0']}, skipped {skipped or ['0']}")
    for s in re.findall(r"(?:ERROR SUMMARY|RACECHECK SUMMARY): .*", tests):
        print("- sanitizer: " + s)
    for s in re.findall(r"^\[  FAILED  \] \S+.*$", tests, re.M)[:20]:
        print("- " + s)
    v = re.findall(r"^summary: .*", text("validate.txt"), re.M)
    print("\nvalidate --backend cuda: " + (v[0] if v else "no summary (see validate.txt)"))

    dev = load("devices.json")
    if dev:
        for t in dev["tiers"]:
            if t["tier"] == "cuda":
                print(f"\nGPU: {t.get('device') or t['why']}")

    peers = load("peers.json") or {"results": [], "errors": []}
    if peers.get("transformers"):
        print(f"\npeers: torch {peers.get('torch')}, transformers {peers.get('transformers')}, CUDA {peers.get('cuda')}")
    for e in peers.get("errors", []):
        print(f"- peers error: {e['part']}: {e['error'][:300]}")

    rows, trains = [], []
    for line in text("bench.md").splitlines():
        if line.startswith("{") and '"results"' in line:
            try:
                j = json.loads(line)
                if isinstance(j.get("model"), str):  # strand bench train --json
                    trains.append(j)
                    continue
                for r in j["results"]:
                    r["_model"] = j["model"]["description"]
                    rows.append(r)
            except (ValueError, KeyError, TypeError):
                pass

    def strand(test, layers_hint):
        for r in rows:
            if r["test"] == test and r["weights"] == "bf16" and layers_hint in r["_model"]:
                return r
        return None

    def hf(model, test, mode):
        for r in peers["results"]:
            if r["model"] == model and r["test"] == test and r["mode"] == mode:
                return r["tokens_per_s_median"]
        return None

    def num(x, unit=""):
        return "-" if x is None else f"{x:.1f}{unit}"

    print("\n## The targets (same run, same GPU, same random weights)\n")
    print("| target | strand | transformers | ratio | goal | bound |\n|---|---:|---:|---:|---:|---|")
    tg = strand("tg128", "12 layers")
    if tg:
        s = tg["tokens_per_s"]["median"]
        for mode, goal in (("eager", 2.0), ("compiled", 1.0)):
            h = hf("gpt2-124m", "tg128", mode)
            ratio = f"{s / h:.2f}x" if h else "-"
            print(f"| GPT-2 124M bf16 tg128 vs {mode} | {num(s)} t/s | {num(h)} t/s | {ratio} | >= {goal}x | "
                  f"{num(tg.get('pct_bandwidth'), '%')} of the HBM bound ({num(tg.get('bandwidth_gbs'))} GB/s) |")
    else:
        print("| GPT-2 124M bf16 tg128 | not measured | | | >= 2x eager, >= 1x compiled | |")
    pp = strand("pp2048", "48 layers")
    if pp:
        s = pp["tokens_per_s"]["median"]
        h = hf("gpt2-xl", "pp2048", "eager")
        ratio = f"{s / h:.2f}x" if h else "-"
        print(f"| GPT-2 XL bf16 pp2048 vs sdpa | {num(s)} t/s | {num(h)} t/s | {ratio} | >= 1.5x | "
              f"{num(pp.get('pct_peak'), '%')} of the measured bf16 peak (goal >= 50%) |")
    else:
        print("| GPT-2 XL bf16 pp2048 | not measured | | | >= 1.5x sdpa, >= 50% of peak | |")
    torch_bf16 = None
    for line in text("bench.md").splitlines():
        if line.startswith("{") and '"dtype": "bf16"' in line and '"tokens_per_s"' in line:
            try:
                torch_bf16 = json.loads(line)
            except ValueError:
                pass
    for train in trains:
        if not train.get("results"):
            continue
        r = train["results"][0]
        s = r["tokens_per_s"]
        h = torch_bf16["tokens_per_s"] if torch_bf16 else None
        ratio = f"{s / h:.2f}x" if h else "-"
        print(f"| GPT-2 124M training (b4 x 256) vs PyTorch eager bf16 | {num(s)} t/s ({r['precision']}, "
              f"optimizer on {r.get('optimizer_on', '?')}) | {num(h)} t/s | {ratio} | >= 1.0x | "
              f"MFU {100 * r['mfu']:.0f}% of {r['peak_gflops'] / 1e3:.1f} TFLOP/s ({r.get('peak_source', '')}) |")
    if not trains:
        print("| GPT-2 124M training vs PyTorch eager bf16 | not measured | | | >= 1.0x | |")
    print("\nEvery strand row: bench.md (markdown tables, then JSON); every transformers row: peers.json.")


if __name__ == "__main__":
    main()
