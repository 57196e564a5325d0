#include "model/weight_cast.h"

#include <set>

#include "core/error.h"
#include "core/progress.h"

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
  const bool q8 = to == DType::Q8;

  // Tensor by tensor: once a tensor of a mapped file is converted, its pages are given back
  // (SafeTensors::release), so the conversion holds the converted weights plus one source
  // tensor, not the whole file as well.
  uint64_t total = 0;
  for_each_gpt2_tensor(w, [&](const Tensor& t) { total += t.nbytes(); });
  Progress progress(w.file ? "loading " + w.file->path() : std::string("converting weights"), double(total), "MB",
                    1e6);
  auto done = [&](const Tensor& src, Tensor converted) {
    progress.add(double(src.nbytes()));
    if (w.file) w.file->release(src);
    return converted;
  };
  auto f32 = [&](const Tensor& t) { return done(t, t.to(DType::F32)); };
  // wte is also the lm_head of a tied model, the largest matrix a decode step reads: on huge
  // pages like the other weights (Tensor::empty). For q8, wte and wpe keep their loaded dtype
  // (views of the mapped file, which is then kept).
  if (q8) {
    o.wte = w.wte;
    o.wpe = w.wpe;
    o.file = w.file;
    progress.add(double(w.wte.nbytes() + w.wpe.nbytes()));
  } else {
    o.wte = done(w.wte, w.wte.to(to, /*huge_pages=*/true));
    o.wpe = done(w.wpe, w.wpe.to(to, /*huge_pages=*/true));
  }
  for (const Gpt2Layer& L : w.layers) {
    Gpt2Layer n;
    n.ln_1_w = f32(L.ln_1_w);
    n.ln_1_b = f32(L.ln_1_b);
    n.attn_w = done(L.attn_w, convert_matrix(L.attn_w, to, layout));
    n.attn_b = f32(L.attn_b);
    n.attn_proj_w = done(L.attn_proj_w, convert_matrix(L.attn_proj_w, to, layout));
    n.attn_proj_b = f32(L.attn_proj_b);
    n.ln_2_w = f32(L.ln_2_w);
    n.ln_2_b = f32(L.ln_2_b);
    n.fc_w = done(L.fc_w, convert_matrix(L.fc_w, to, layout));
    n.fc_b = f32(L.fc_b);
    n.fc_proj_w = done(L.fc_proj_w, convert_matrix(L.fc_proj_w, to, layout));
    n.fc_proj_b = f32(L.fc_proj_b);
    o.layers.push_back(std::move(n));
  }
  o.ln_f_w = f32(w.ln_f_w);
  o.ln_f_b = f32(w.ln_f_b);
  if (w.tied && !q8)
    o.lm_head = o.wte;  // same values, same dtype: share the memory
  else if (w.tied)
    o.lm_head = convert(w.lm_head, to, 1);  // wte's pages: o.wte still reads them
  else
    o.lm_head = done(w.lm_head, convert(w.lm_head, to, 1));
  return o;
}

void for_each_gpt2_tensor(const Gpt2Weights& w, const std::function<void(const Tensor&)>& f) {
  std::set<const void*> seen;
  auto visit = [&](const Tensor& t) {
    if (t.defined() && seen.insert(t.data).second) f(t);
  };
  visit(w.wte);
  visit(w.wpe);
  for (const Gpt2Layer& L : w.layers)
    for (const Tensor* t : {&L.ln_1_w, &L.ln_1_b, &L.attn_w, &L.attn_b, &L.attn_proj_w, &L.attn_proj_b, &L.ln_2_w,
                            &L.ln_2_b, &L.fc_w, &L.fc_b, &L.fc_proj_w, &L.fc_proj_b})
      visit(*t);
  visit(w.ln_f_w);
  visit(w.ln_f_b);
  visit(w.lm_head);
}

uint64_t gpt2_weight_bytes(const Gpt2Weights& w) {
  uint64_t n = 0;
  for_each_gpt2_tensor(w, [&](const Tensor& t) { n += t.nbytes(); });
  return n;
}

}  // namespace strand
