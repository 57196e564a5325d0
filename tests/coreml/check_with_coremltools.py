#!/usr/bin/env python3
"""Load every package `strand export coreml` writes with Apple's coremltools and type-check it.

coremltools cannot compile or run a model on Linux, but it can (1) open the .mlpackage through
its own package reader and parse the Model protobuf, and (2) turn the ML Program back into a
PyMIL program (the milproto frontend): every operation is rebuilt through its op definition,
which runs type inference, reads const weights from the weight file with Core ML's own blob
reader, and fails if an op's declared output type differs from the inferred one. On top of
that this script asserts that the declared inputs and outputs (names, shapes, dtypes) are the
ones strand documents, computed here from each model's config.json.

Cases: the four fixture models (prefill and decode) and a random GPT-2 written here with a
vocabulary of 20000, which the exporter must cut into chunks of at most 16384 channels.
Prints one line per package and ends with "N passed, N failed"; exits 1 on any failure.
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import traceback

import numpy as np

import coremltools as ct
from coremltools.converters.mil.frontend.milproto.load import load as milproto_load
from coremltools.converters.mil.mil import types

ARRAY_DTYPE = {65552: "fp16", 65568: "fp32", 131104: "int32"}
CHUNK = 16384


def write_random_gpt2(path, vocab, n_layer=1, n_embd=32, n_head=2, n_positions=16, seed=7):
    """A GPT-2 directory in Hugging Face layout (config.json + F32 model.safetensors)."""
    os.makedirs(path, exist_ok=True)
    rng = np.random.default_rng(seed)
    C, F = n_embd, 4 * n_embd
    tensors = {"wte.weight": (vocab, C), "wpe.weight": (n_positions, C), "ln_f.weight": (C,), "ln_f.bias": (C,),
               "lm_head.weight": (vocab, C)}
    for l in range(n_layer):
        p = f"h.{l}."
        tensors.update({p + "ln_1.weight": (C,), p + "ln_1.bias": (C,), p + "attn.c_attn.weight": (C, 3 * C),
                        p + "attn.c_attn.bias": (3 * C,), p + "attn.c_proj.weight": (C, C), p + "attn.c_proj.bias": (C,),
                        p + "ln_2.weight": (C,), p + "ln_2.bias": (C,), p + "mlp.c_fc.weight": (C, F),
                        p + "mlp.c_fc.bias": (F,), p + "mlp.c_proj.weight": (F, C), p + "mlp.c_proj.bias": (C,)})
    header, blobs, offset = {}, [], 0
    for name, shape in tensors.items():
        a = (rng.standard_normal(shape) * 0.02).astype("<f4")
        if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name == "ln_f.weight":
            a += 1.0
        b = a.tobytes()
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(os.path.join(path, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    config = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_layer": n_layer, "n_embd": n_embd,
              "n_head": n_head, "n_positions": n_positions, "n_ctx": n_positions, "vocab_size": vocab,
              "n_inner": None, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
              "tie_word_embeddings": False}
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)


def expected_io(config, mode, seq):
    """The inputs and outputs strand documents (docs/ane.md), as [(name, shape, dtype)]."""
    C, L, V, P = config["n_embd"], config["n_layer"], config["vocab_size"], config["n_positions"]
    N = seq or P
    T = 1 if mode == "decode" else N
    K = N + 1 if mode == "decode" else N
    inputs = [("input_ids", [1, T], "int32"), ("position_ids", [1, T], "int32"), ("attn_mask", [1, 1, T, K], "fp16")]
    if mode == "decode":
        for l in range(L):
            inputs += [(f"k_cache_{l}", [1, C, 1, N], "fp16"), (f"v_cache_{l}", [1, C, 1, N], "fp16")]
    outputs = []
    for i, r0 in enumerate(range(0, V, CHUNK)):
        outputs.append((f"logits_{i}", [1, min(CHUNK, V - r0), 1, T], "fp16"))
    for l in range(L):
        outputs += [(f"new_k_{l}", [1, C, 1, T], "fp16"), (f"new_v_{l}", [1, C, 1, T], "fp16")]
    return inputs, outputs


def check_package(pkg, config, mode, seq):
    want_in, want_out = expected_io(config, mode, seq)
    model = ct.models.MLModel(pkg, skip_model_load=True)  # coremltools' package reader
    spec = model.get_spec()
    assert spec.WhichOneof("Type") == "mlProgram", "not an ML Program"

    def described(features):
        got = []
        for f in features:
            assert f.type.WhichOneof("Type") == "multiArrayType", f"{f.name} is not a multi-array"
            arr = f.type.multiArrayType
            got.append((f.name, list(arr.shape), ARRAY_DTYPE.get(arr.dataType, str(arr.dataType))))
        return got

    assert described(spec.description.input) == want_in, f"inputs {described(spec.description.input)} != {want_in}"
    assert described(spec.description.output) == want_out, f"outputs {described(spec.description.output)} != {want_out}"
    meta = dict(spec.description.metadata.userDefined)
    for key in ("strand.version", "strand.source_model", "strand.mode", "strand.n_layer", "strand.vocab_size"):
        assert key in meta, f"metadata lacks {key}"
    assert meta["strand.mode"] == mode

    # Rebuild the program through coremltools' op definitions: type inference on every op, the
    # weight file read with Core ML's blob reader, declared types compared with inferred ones.
    prog = milproto_load(spec, spec.specificationVersion, model.weights_dir)
    fn = prog.functions["main"]
    ops = list(fn.operations)
    op_types = sorted({op.op_type for op in ops})

    def vars_of(vs):
        return [(v.name, [int(d) for d in v.shape], types.builtin_to_string(v.dtype)) for v in vs]

    got_in = vars_of(fn.inputs.values())
    assert got_in == want_in, f"program inputs {got_in} != {want_in}"
    got_out = vars_of(fn.outputs)
    assert got_out == want_out, f"program outputs {got_out} != {want_out}"
    consts = [op for op in ops if op.op_type == "const"]
    for op in consts:  # every weight readable and finite
        val = op.outputs[0].val
        assert val is not None, f"const {op.name} has no value"
        if isinstance(val, np.ndarray) and val.dtype.kind == "f":
            assert np.isfinite(val).all(), f"const {op.name} is not finite"
    return f"{len(ops)} ops type-checked ({len(consts)} consts; op types: {', '.join(op_types)}); " \
           f"inputs {', '.join(n + str(s) for n, s, _ in want_in)}; outputs {', '.join(n + str(s) for n, s, _ in want_out)}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strand", required=True, help="the strand binary")
    ap.add_argument("--fixtures", required=True, help="tests/fixtures/gpt2")
    ap.add_argument("--report", help="also write the report to this file")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="strand-coremltools-")
    lines = [f"coremltools {ct.__version__}: loading every package strand exports"]
    passed = failed = 0
    try:
        big = os.path.join(work, "random-vocab20000")
        write_random_gpt2(big, vocab=20000)
        cases = [("tiny-f32", "prefill", 8), ("tiny-f32", "decode", 12), ("tiny-f16", "prefill", 0),
                 ("tiny-bf16", "decode", 0), ("tiny-gelu", "prefill", 0), ("tiny-gelu", "decode", 5),
                 (big, "prefill", 6), (big, "decode", 10)]
        for model, mode, seq in cases:
            mdir = model if os.path.isabs(model) else os.path.join(args.fixtures, model)
            name = f"{os.path.basename(mdir)}-{mode}{seq or ''}"
            pkg = os.path.join(work, name + ".mlpackage")
            cmd = [args.strand, "export", "coreml", "-m", mdir, "-o", pkg, "--mode", mode]
            if seq:
                cmd += ["--seq", str(seq)]
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
                if r.returncode != 0:
                    raise AssertionError(f"strand export failed ({r.returncode}): {r.stderr.strip()}")
                with open(os.path.join(mdir, "config.json")) as f:
                    config = json.load(f)
                if config.get("n_inner") is None:
                    config["n_inner"] = 4 * config["n_embd"]
                lines.append(f"ok   {name}: {check_package(pkg, config, mode, seq)}")
                passed += 1
            except Exception as e:  # report every case, then fail
                lines.append(f"FAIL {name}: {type(e).__name__}: {e}")
                lines.append(traceback.format_exc())
                failed += 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines.append(f"{passed} passed, {failed} failed")
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if args.report:
        with open(args.report, "w") as f:
            f.write(text)
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())
