// The non-template row helpers of csrc/label_map/cpu_rows.h: the compact source list of an index,
// and the float32 row loops compiled for SSE2, AVX2 and AVX-512 (RX_CPU_CLONES).
#include "label_map/cpu_rows.h"

namespace reprogram_ext {
namespace label_map {
namespace cpu {

CompactSources compact_sources(const int64_t* index, int64_t TK) {
  CompactSources c;
  for (int64_t e = 0; e < TK; ++e) {
    if (index[e] >= 0) c.sources.push_back(index[e]);
  }
  std::sort(c.sources.begin(), c.sources.end());
  c.sources.erase(std::unique(c.sources.begin(), c.sources.end()), c.sources.end());
  c.pos.resize(TK);
  for (int64_t e = 0; e < TK; ++e) {
    c.pos[e] = index[e] < 0 ? -1
                            : std::lower_bound(c.sources.begin(), c.sources.end(), index[e]) - c.sources.begin();
  }
  return c;
}

RX_CPU_CLONES RowNorm<float> row_normaliser_f32(const float* x, int64_t S) {
  return row_normaliser_generic<float>(x, S);
}
RX_CPU_CLONES void softmax_scaled_f32(float* g, const float* x, int64_t S, float c, RowNorm<float> norm) {
  softmax_scaled_generic<float>(g, x, S, c, norm);
}

}  // namespace cpu
}  // namespace label_map
}  // namespace reprogram_ext
