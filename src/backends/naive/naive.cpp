#include "backends/naive/naive.h"

#include "reference/execute.h"

namespace strand {

namespace {

template <class T>
class LoopBackend final : public Backend {
 public:
  LoopBackend(std::string name, std::string description) : name_(std::move(name)), desc_(std::move(description)) {}
  std::string name() const override { return name_; }
  std::string description() const override { return desc_; }
  Verdict probe() const override { return Verdict::yes("always available"); }
  Verdict supports(const Graph&, const Node&) const override { return Verdict::yes("runs every op"); }
  DType activation_dtype() const override { return std::is_same_v<T, double> ? DType::F64 : DType::F32; }
  void run(const Graph& g, std::span<const NodeId> nodes, std::vector<Tensor>& values) override {
    for (NodeId n : nodes) execute_node<T>(g, g.node(n), values);
  }

 private:
  std::string name_, desc_;
};

}  // namespace

std::unique_ptr<Backend> make_naive_backend() {
  return std::make_unique<LoopBackend<float>>("naive", "plain single-threaded f32 loops (the bottom rung)");
}

std::unique_ptr<Backend> make_reference_backend() {
  return std::make_unique<LoopBackend<double>>("reference", "plain float64 loops: the definition of correct");
}

}  // namespace strand
