// strand/validate/precision.h — judging a tier at the precision it declares.
//
// A tier that rounds its inputs (Backend::precision: bf16 tiles, int8 tiles, ...) computes a
// different function than f32, and is judged on that function:
//   ops    the float64 reference runs on the inputs rounded as the tier declares
//          (rounded_inputs); the bar is twice the error of the naive tier computing at the same
//          precision (naive_at_precision: the naive f32 loops on inputs rounded the same way,
//          attention's weights rounded before P·V when the tier rounds them).
//   model  the whole GPT-2 against the float64 reference with f32 inputs, the bar twice the
//          error of the naive tier computing every node at the precision the tier declares for
//          it (make_precision_naive).
// Both are the rule for every tier: for a tier that declares nothing they are the plain naive
// tier and the plain reference.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "planner/planner.h"

namespace strand {

// The precision a node is computed at.
using PrecisionOf = std::function<Precision(const Graph& g, const Node& n)>;

// The naive tier computing each node at precision_of(g, node): inputs rounded as declared, then
// the naive f32 loops (attention with its weights rounded when declared). Name "naive".
std::unique_ptr<Backend> make_precision_naive(PrecisionOf precision_of);

// The naive tier at the precision `tier` declares for each node it supports (the others as
// given): the bar for `tier` running a model in a chain.
std::unique_ptr<Backend> make_precision_naive(const std::shared_ptr<Backend>& tier);

// `inputs` as a tier at precision `p` computes with them (core/rounding.h: round_to_f64, f64
// tensors); inputs it does not round are returned as they are.
std::vector<Tensor> rounded_inputs(const std::vector<Tensor>& inputs, const Precision& p);

// What `tier` rounds where `plan` places nodes on it (its first tier), by op: "matmul: a bf16,
// b bf16; attention: q bf16, k bf16, v bf16; P bf16" ("" when nothing).
std::string plan_precision(const Graph& g, const Plan& plan, const Backend& tier);

// Names of an op's inputs for precision summaries: matmul a, b; linear x, w, bias; attention
// q, k, v; others x or in0, in1, ...
std::vector<std::string> input_names(OpKind op, size_t n);

}  // namespace strand
