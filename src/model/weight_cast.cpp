#include "model/weight_cast.h"

#include "core/error.h"

namespace strand {

namespace {

// A copy of `t` in `to` that owns its bytes (a same-dtype copy too: the result never views
// the source's memory map).
Tensor convert(const Tensor& t, DType to, int q8_axis) {
  if (to == DType::Q8) return t.to_q8(q8_axis);
  return t.to(to, /*huge_pages=*/true);
}

// A per-layer matrix ([in, out]) in `to` and `layout`.
Tensor convert_matrix(const Tensor& t, DType to, MatrixLayout layout) {
  if (to == DType::Q8 || layout == MatrixLayout::AsLoaded) return convert(t, to, 0);
  return t.to_col_major(to);
}

}  // namespace

DType parse_weight_dtype(const std::string& s) {
  if (s == "f32") return DType::F32;
  if (s == "f16") return DType::F16;
  if (s == "bf16") return DType::BF16;
  if (s == "int8" || s == "q8") return DType::Q8;
  fail("--weights: '{}' is not one of f32, f16, bf16, int8", s);
}

Gpt2Weights cast_gpt2_weights(const Gpt2Weights& w, DType to, MatrixLayout layout) {
  if (to != DType::F32 && to != DType::F16 && to != DType::BF16 && to != DType::Q8)
    fail("cannot cast GPT-2 weights to {}: use f32, f16, bf16 or q8", dtype_name(to));
  Gpt2Weights o;
  o.tied = w.tied;
  o.dtype = to;
  auto f32 = [](const Tensor& t) { return t.to(DType::F32); };
  const bool q8 = to == DType::Q8;
  // wte is also the lm_head of a tied model, the largest matrix a decode step reads: on huge
  // pages like the other weights (Tensor::empty).
  o.wte = q8 ? w.wte : w.wte.to(to, /*huge_pages=*/true);
  o.wpe = q8 ? w.wpe : w.wpe.to(to, /*huge_pages=*/true);
  if (q8) o.file = w.file;  // wte/wpe may still be views of the mapped file
  for (const Gpt2Layer& L : w.layers) {
    Gpt2Layer n;
    n.ln_1_w = f32(L.ln_1_w);
    n.ln_1_b = f32(L.ln_1_b);
    n.attn_w = convert_matrix(L.attn_w, to, layout);
    n.attn_b = f32(L.attn_b);
    n.attn_proj_w = convert_matrix(L.attn_proj_w, to, layout);
    n.attn_proj_b = f32(L.attn_proj_b);
    n.ln_2_w = f32(L.ln_2_w);
    n.ln_2_b = f32(L.ln_2_b);
    n.fc_w = convert_matrix(L.fc_w, to, layout);
    n.fc_b = f32(L.fc_b);
    n.fc_proj_w = convert_matrix(L.fc_proj_w, to, layout);
    n.fc_proj_b = f32(L.fc_proj_b);
    o.layers.push_back(std::move(n));
  }
  o.ln_f_w = f32(w.ln_f_w);
  o.ln_f_b = f32(w.ln_f_b);
  if (w.tied && !q8)
    o.lm_head = o.wte;  // same values, same dtype: share the memory
  else
    o.lm_head = convert(w.lm_head, to, 1);
  return o;
}

}  // namespace strand
