// Host-side checks of the label_map / mapped_cross_entropy op arguments (canonical form:
// logits [N, S] contiguous, index int64 [T, K] contiguous with -1 padding, weight [T, K] in the
// accumulation dtype or absent; reduce and pre as their names, parsed by options.h). The Python
// front end (reprogram_ext/ops/label_map/args.py) validates user input with friendlier messages;
// these checks guard direct torch.ops callers.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <vector>

#include "label_map/math.h"

namespace reprogram_ext {
namespace label_map {

struct LabelMapArgs {
  int64_t N, S, T, K;
  Reduce reduce;
  Pre pre;
  bool weighted;
  int64_t topk;  // the k of reduce topk_mean, else 0
};

inline at::ScalarType acc_scalar_type(at::ScalarType logits_type) {
  return logits_type == at::kDouble ? at::kDouble : at::kFloat;
}

// `op` names the calling public op in error messages ("label_map" / "mapped_cross_entropy").
inline LabelMapArgs make_label_map_args(const char* op, const at::Tensor& logits, const at::Tensor& index,
                                        const std::optional<at::Tensor>& weight, c10::string_view reduce,
                                        c10::string_view pre, int64_t topk) {
  TORCH_CHECK(logits.dim() == 2 && logits.is_contiguous(), op, ": logits must be a contiguous [N, S] tensor, got ",
              logits.sizes());
  TORCH_CHECK(at::isFloatingType(logits.scalar_type()), op, ": logits must be floating, got ",
              logits.scalar_type());
  TORCH_CHECK(index.dim() == 2 && index.scalar_type() == at::kLong && index.is_contiguous(),
              op, ": index must be a contiguous int64 [T, K] tensor, got ", index.scalar_type(), " ",
              index.sizes());
  TORCH_CHECK(index.device() == logits.device(), op, ": index and logits are on different devices");
  LabelMapArgs a;
  a.N = logits.size(0);
  a.S = logits.size(1);
  a.T = index.size(0);
  a.K = index.size(1);
  a.reduce = parse_Reduce(reduce);
  a.pre = parse_Pre(pre);
  a.weighted = weight.has_value();
  a.topk = topk;
  TORCH_CHECK(a.K >= 1, op, ": index must have K >= 1 sources per target, got ", index.sizes());
  if (a.reduce == Reduce::kTopkMean) {
    TORCH_CHECK_VALUE(topk >= 1 && topk <= a.K, op, ": reduce='topk_mean' needs topk in [1, K=", a.K,
                      "] (the index's entries per target group), got topk=", topk);
    TORCH_CHECK_VALUE(!a.weighted, op, ": reduce='topk_mean' takes no weight (it is the plain mean of the topk ",
                      "largest entries of each group); pass weight=None");
  } else {
    TORCH_CHECK_VALUE(topk == 0, op, ": topk is the k of reduce='topk_mean' and must be 0 (none) for reduce='",
                      reduce, "', got topk=", topk);
  }
  if (a.weighted) {
    const at::Tensor& w = *weight;
    TORCH_CHECK(w.sizes() == index.sizes() && w.is_contiguous() &&
                    w.scalar_type() == acc_scalar_type(logits.scalar_type()) && w.device() == logits.device(),
                op, ": weight must be a contiguous ", acc_scalar_type(logits.scalar_type()), " ", index.sizes(),
                " tensor on logits' device, got ", w.scalar_type(), " ", w.sizes());
  }
  // Values of CPU tensors are checked here (the Python front end leaves them to this check when the
  // CPU kernels run, and checks device tensors itself); the messages are the front end's.
  if (index.device().is_cpu()) {
    const int64_t* idx = index.const_data_ptr<int64_t>();
    for (int64_t t = 0; t < a.T; ++t) {
      int64_t count = 0;
      for (int64_t k = 0; k < a.K; ++k) {
        const int64_t s = idx[t * a.K + k];
        TORCH_CHECK_VALUE(s >= -1 && s < a.S, op, ": index must hold source classes in [0, S=", a.S,
                          ") or -1 (padding), got ", s, " at index[", t, ", ", k, "]");
        count += s >= 0;
      }
      TORCH_CHECK_VALUE(count > 0, op, ": index row ", t, " is an empty target group (every entry is -1); "
                        "each target needs at least one source");
      TORCH_CHECK_VALUE(count >= a.topk, op, ": reduce='topk_mean' averages the topk=", a.topk,
                        " largest entries of each target group: every index row needs at least ", a.topk,
                        " valid (non -1) entries; index row ", t, " has ", count);
    }
  }
  return a;
}

// Whether mapped_cross_entropy's gradient has the dense -D * softmax(x) term (its `dense` output).
inline bool ce_has_dense(const LabelMapArgs& p) { return ce_needs_lse(p.pre, p.reduce, p.weighted); }

inline void check_target(const at::Tensor& target, const LabelMapArgs& a, int64_t ignore_index) {
  TORCH_CHECK(target.dim() == 1 && target.size(0) == a.N && target.scalar_type() == at::kLong &&
                  target.is_contiguous(),
              "mapped_cross_entropy: target must be a contiguous int64 [", a.N, "] tensor, got ", target.scalar_type(),
              " ", target.sizes());
  if (target.device().is_cpu()) {
    const int64_t* y = target.const_data_ptr<int64_t>();
    for (int64_t n = 0; n < a.N; ++n) {
      TORCH_CHECK_VALUE(y[n] == ignore_index || (y[n] >= 0 && y[n] < a.T), "mapped_cross_entropy: target must hold ",
                        "classes in [0, T=", a.T, ") or ignore_index (", ignore_index, "), got ", y[n], " at target[",
                        n, "]");
    }
  }
}

// The saved forward results handed to label_map_backward: grad_out [N, T] of logits' dtype and,
// when map_needs_lse(pre), row_lse [N, 2].
inline void check_label_map_backward_args(const LabelMapArgs& p, const at::Tensor& logits, const at::Tensor& grad_out,
                                          const at::Tensor& row_lse) {
  TORCH_CHECK(grad_out.sizes() == at::IntArrayRef({p.N, p.T}) && grad_out.scalar_type() == logits.scalar_type(),
              "label_map_backward: grad_out must be [", p.N, ", ", p.T, "] of logits' dtype");
  TORCH_CHECK(!map_needs_lse(p.pre) || (row_lse.sizes() == at::IntArrayRef({p.N, 2}) && row_lse.is_contiguous()),
              "label_map_backward: row_lse must be a contiguous [", p.N, ", 2] tensor");
}

// The saved forward results handed to mapped_cross_entropy_backward: grad_loss [N] and unit_grad
// [N, T, K] in the accumulation dtype, dense [N, 3] when ce_has_dense(p).
inline void check_mapped_ce_backward_args(const LabelMapArgs& p, at::ScalarType logits_type,
                                          const at::Tensor& grad_loss, const at::Tensor& unit_grad,
                                          const at::Tensor& dense) {
  const auto acc = acc_scalar_type(logits_type);
  TORCH_CHECK(grad_loss.sizes() == at::IntArrayRef({p.N}) && grad_loss.scalar_type() == acc,
              "mapped_cross_entropy_backward: grad_loss must be [", p.N, "] of the accumulation dtype");
  TORCH_CHECK(unit_grad.sizes() == at::IntArrayRef({p.N, p.T, p.K}) && unit_grad.scalar_type() == acc,
              "mapped_cross_entropy_backward: unit_grad must be [", p.N, ", ", p.T, ", ", p.K, "]");
  TORCH_CHECK(!ce_has_dense(p) || (dense.sizes() == at::IntArrayRef({p.N, 3}) && dense.scalar_type() == acc),
              "mapped_cross_entropy_backward: dense must be [", p.N, ", 3]");
}

// label_map_backward's optional forward_out: the forward's output [N, T] (logits' dtype, contiguous,
// on logits' device), which the CUDA backward of reduce sum / mean with pre softmax uses in place
// of the mapped logits (cuda.cu, label_map_backward_from_out_kernel); the other kernels ignore it.
inline void check_forward_out(const LabelMapArgs& p, const at::Tensor& logits,
                              const std::optional<at::Tensor>& forward_out) {
  if (!forward_out.has_value() || !forward_out->defined()) return;
  const at::Tensor& o = *forward_out;
  TORCH_CHECK(o.sizes() == at::IntArrayRef({p.N, p.T}) && o.scalar_type() == logits.scalar_type() &&
                  o.is_contiguous() && o.device() == logits.device(),
              "label_map_backward: forward_out must be the forward's contiguous [", p.N, ", ", p.T, "] ",
              logits.scalar_type(), " output on logits' device, got ", o.scalar_type(), " ", o.sizes());
}

// The checked arguments of each op, shared by the CPU and CUDA entry points (`reduce` and `pre`
// are the schemas' strings; `op` of the backward ops is its public op's name).
inline LabelMapArgs make_label_map_backward_args(const at::Tensor& grad_out, const at::Tensor& logits,
                                                 const at::Tensor& index, const std::optional<at::Tensor>& weight,
                                                 const at::Tensor& row_lse, c10::string_view reduce,
                                                 c10::string_view pre, int64_t topk,
                                                 const std::optional<at::Tensor>& forward_out = std::nullopt) {
  const LabelMapArgs p = make_label_map_args("label_map", logits, index, weight, reduce, pre, topk);
  check_label_map_backward_args(p, logits, grad_out, row_lse);
  check_forward_out(p, logits, forward_out);
  return p;
}

inline LabelMapArgs make_mapped_ce_args(const at::Tensor& logits, const at::Tensor& target, const at::Tensor& index,
                                        const std::optional<at::Tensor>& weight, c10::string_view reduce,
                                        c10::string_view pre, int64_t ignore_index, int64_t topk) {
  const LabelMapArgs p = make_label_map_args("mapped_cross_entropy", logits, index, weight, reduce, pre, topk);
  check_target(target, p, ignore_index);
  return p;
}

inline LabelMapArgs make_mapped_ce_backward_args(const at::Tensor& grad_loss, const at::Tensor& logits,
                                                 const at::Tensor& target, const at::Tensor& index,
                                                 const std::optional<at::Tensor>& weight, const at::Tensor& unit_grad,
                                                 const at::Tensor& dense, c10::string_view reduce,
                                                 c10::string_view pre, int64_t ignore_index, int64_t topk) {
  const LabelMapArgs p = make_mapped_ce_args(logits, target, index, weight, reduce, pre, ignore_index, topk);
  check_mapped_ce_backward_args(p, logits.scalar_type(), grad_loss, unit_grad, dense);
  return p;
}

// Output shapes: label_map's row_lse ([N, 2] when the row's lse is needed, else [0]),
// mapped_cross_entropy's dense ([N, 3] when ce_needs_lse, else [0]), and the weight gradient's
// partials ([rows, T, K] when needed, else [0]).
inline std::vector<int64_t> row_lse_shape(const LabelMapArgs& p) {
  return map_needs_lse(p.pre) ? std::vector<int64_t>{p.N, 2} : std::vector<int64_t>{0};
}
inline std::vector<int64_t> dense_shape(const LabelMapArgs& p) {
  return ce_has_dense(p) ? std::vector<int64_t>{p.N, 3} : std::vector<int64_t>{0};
}
inline std::vector<int64_t> weight_grad_shape(const LabelMapArgs& p, bool need, int64_t rows) {
  return need ? std::vector<int64_t>{rows, p.T, p.K} : std::vector<int64_t>{0};
}

}  // namespace label_map
}  // namespace reprogram_ext
