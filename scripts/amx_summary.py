#!/usr/bin/env python3
# scripts/amx_summary.py — the summary of scripts/amx-check.sh against the targets of the amx
# tier (docs/performance.md, "Intel AMX"), from the JSON its commands wrote:
#   amx_summary.py OUT_DIR THREADS [MODEL_DIR]
# reads OUT_DIR/{devices,gemm,model,validate}.json and prints markdown. Verification only:
# strand never needs Python.
import json
import sys


def num(x, fmt="{:.0f}"):
    return fmt.format(x) if isinstance(x, (int, float)) else "-"


def main():
    out, threads = sys.argv[1], sys.argv[2]
    model = sys.argv[3] if len(sys.argv) > 3 else ""
    dev = json.load(open(f"{out}/devices.json"))
    gemm = json.load(open(f"{out}/gemm.json"))
    mb = json.load(open(f"{out}/model.json"))
    val = json.load(open(f"{out}/validate.json"))

    units = dev.get("units", [])
    bf16 = next((u for u in units if u["name"].startswith("AMX tiles, bf16")), None)
    int8 = next((u for u in units if u["name"].startswith("AMX tiles, int8")), None)
    print(f"Measured with `scripts/amx-check.sh --threads {threads}{' --model ' + model if model else ''}` on "
          f"{val.get('machine', dev['machine']['cpu_model'])}.\n")
    if bf16 and int8:
        print(f"- tile peak ({threads} threads): bf16 {num(bf16['peak'])} GFLOP/s, int8 {num(int8['peak'])} GOP/s; "
              f"the amx tier reaches {num(bf16['best'])} GFLOP/s ({num(100 * bf16['best'] / bf16['peak'])}%) and "
              f"{num(int8['best'])} GOP/s ({num(100 * int8['best'] / int8['peak'])}%)")
    else:
        print("- no AMX unit in `strand devices`: " + "; ".join(dev.get("units_absent", [])))
    for x in dev.get("row_crossovers", []):
        print(f"- {x['tier']} crossover ({x['path']}) against {x['vs']}: M >= {x['rows']}")

    print("\n| GEMM, M = 512 | amx-bf16 GFLOP/s | % tile peak | onednn-bf16 GFLOP/s | amx / onednn (target >= 1.0) "
          "| amx-int8 GOP/s |")
    print("|---|---:|---:|---:|---:|---:|")
    cells = {(c["shape"], c["rung"]): c for c in gemm["results"]}
    shapes = sorted({s for (s, _) in cells})
    for K, N in [(768, 2304), (768, 3072), (3072, 768)]:
        shape = next((s for s in shapes if f"M=512 K={K} N={N}" in s), None)
        if not shape:
            continue
        a, d, i = (cells.get((shape, r), {}) for r in ("amx-bf16", "onednn-bf16", "amx-int8"))
        ga, gd, gi = a.get("gflops"), d.get("gflops"), i.get("gflops")
        ratio = num(ga / gd, "{:.2f}") if ga and gd else "-"
        print(f"| {shape} | {num(ga, '{:.1f}')} | {num(a.get('pct_peak'), '{:.0f}%')} | {num(gd, '{:.1f}')} | {ratio} | "
              f"{num(gi, '{:.1f}')} |")

    def tps(chain, w, test):
        for r in mb["results"]:
            if r["backend"].split(",")[0] == chain and r["weights"] == w and r["test"] == test:
                return r["tokens_per_s"]["median"]
        return None

    def cost(w):
        cs = [c for c in val.get("precision_costs", [])
              if c["tier"] == "amx" and c["weights"] == w and not c.get("error") and (not model or c["model"] == model)]
        if not cs:
            return "-"
        c = cs[-1]
        return (f"Δppl {c['ppl'] - c['ppl_f32']:+.4f} ({100 * (c['ppl'] / c['ppl_f32'] - 1):+.2f}%), "
                f"top-1 {100 * c['top1_agree']:.1f}%")

    print("\n| GPT-2 124M | weights | amx,cpu tokens/s | cpu tokens/s | target | cost against f32 (validate) |")
    print("|---|---|---:|---:|---|---|")
    for w, target in [("f32", "-"), ("bf16", ">= 8000"), ("q8", ">= 12000")]:
        print(f"| pp512 | {w} | {num(tps('amx', w, 'pp512'))} | {num(tps('cpu', w, 'pp512'))} | {target} | {cost(w)} |")
    for w in ["f32", "bf16", "q8"]:
        a, c = tps("amx", w, "tg128"), tps("cpu", w, "tg128")
        verdict = "-" if not (a and c) else ("ok" if a >= 0.97 * c else "SLOWER")
        print(f"| tg128 | {w} | {num(a, '{:.1f}')} | {num(c, '{:.1f}')} | not slower than cpu: {verdict} | |")
    print(f"\nvalidate: {'PASS' if val.get('pass') else 'FAIL'} ({val.get('failures')} failure(s)); "
          f"outputs in {out}/")


if __name__ == "__main__":
    main()
