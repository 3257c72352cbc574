// Host unit test of csrc/label_map/cuda_rows.cuh and cuda_grad_row.cuh (the row mechanics of the CUDA
// kernels), run by tests/test_label_map_cuda_rows.py.
#include "label_map/cuda_grad_row.cuh"
#include "label_map/cuda_rows.cuh"
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <vector>
#include <random>
#include <algorithm>
using namespace reprogram_ext::label_map;
static int fails = 0;
#define CHECK(c) do { if (!(c)) { ++fails; std::printf("FAIL %s:%d %s\n", __FILE__, __LINE__, #c); } } while (0)

// Simulates the kernel's lane partition + butterfly merge (P lanes, xor offsets, then fixed-order warps).
template <typename T>
OnlineLse<float> simulate(const T* xr, int64_t S, int log_p) {
  const int P = 1 << log_p; constexpr int V = 16 / sizeof(T);
  std::vector<OnlineLse<float>> r(P);
  const int64_t h = aligned_head<T>(xr, S), nv = (S - h) / V;
  std::vector<int> seen(S, 0);
  for (int lane = 0; lane < P; ++lane) {
    lane_row_lse(xr, S, lane, log_p, r[lane]);
    for (int64_t j = lane; j < h; j += P) seen[j]++;
    for (int64_t c = lane; c < nv; c += P) for (int i = 0; i < V; ++i) seen[h + c * V + i]++;
    for (int64_t j = h + nv * V + lane; j < S; j += P) seen[j]++;
    for (int64_t i = 0, n = lane_count(0, nv, lane, log_p); i < n; ++i) CHECK(lane + (i << log_p) == lane + i * P);
    CHECK(lane_count(0, nv, lane, log_p) == (nv > lane ? (nv - lane + P - 1) / P : 0));
  }
  for (int64_t j = 0; j < S; ++j) CHECK(seen[j] == 1);
  const int width = log_p < 5 ? P : 32;
  for (int o = width >> 1; o > 0; o >>= 1) {
    std::vector<OnlineLse<float>> nr = r;
    for (int lane = 0; lane < P; ++lane) { nr[lane].merge(r[lane ^ o].m, r[lane ^ o].s); }
    r = nr;
  }
  for (int lane = 1; lane < width; ++lane) { CHECK(r[lane].m == r[0].m || (r[lane].m != r[lane].m)); 
    CHECK(std::memcmp(&r[lane].s, &r[0].s, 4) == 0); }
  OnlineLse<float> out = r[0];
  if (log_p > 5) { out = r[0]; for (int w = 1; w < P / 32; ++w) out.merge(r[32 * w].m, r[32 * w].s); }
  return out;
}

int main() {
  // row_threads_log2
  CHECK(row_threads_log2(1000, 10, false) == 4);   // 16 lanes for 10 targets
  CHECK(row_threads_log2(1000, 100, false) == 7);  // 128
  CHECK(row_threads_log2(1000, 10, true) == 5);    // 32 lanes, ~31 elements each
  CHECK(row_threads_log2(32000, 100, true) == 7);  // the block
  CHECK(row_threads_log2(53, 5, true) == 3);       // 53/16 -> 2 (log 1), T=5 -> 8 (log 3)
  CHECK(row_threads_log2(1, 1, true) == 0);
  CHECK(row_threads_log2(5, 100000, false) == 7);
  // aligned_head
  alignas(16) float buf[64];
  CHECK(aligned_head<float>(buf, 64) == 0); CHECK(aligned_head<float>(buf + 1, 64) == 3);
  CHECK(aligned_head<float>(buf + 3, 2) == 1); CHECK(aligned_head<float>(buf + 1, 2) == 2);
  alignas(16) uint16_t hb[64];
  CHECK(aligned_head<uint16_t>(hb + 5, 100) == 3); CHECK(aligned_head<double>(reinterpret_cast<double*>(buf) + 1, 9) == 1);
  // online lse vs two-pass, many shapes / offsets / group sizes
  std::mt19937 gen(0); std::normal_distribution<float> nd(0.f, 3.f);
  for (int S : {1, 3, 7, 53, 1000, 1003, 32000}) for (int off = 0; off < 4; ++off) for (int lp : {0, 3, 5, 7}) {
    std::vector<float> store(S + 8); float* x = store.data() + off;
    for (int i = 0; i < S; ++i) x[i] = nd(gen) + (i == S / 2 ? 20.f : 0.f);
    double m = -INFINITY; for (int i = 0; i < S; ++i) m = std::max(m, double(x[i]));
    double s = 0; for (int i = 0; i < S; ++i) s += std::exp(double(x[i]) - m);
    OnlineLse<float> r = simulate(x, S, lp);
    CHECK(r.m == float(m));
    const double rel = std::abs(double(r.s) - s) / s;
    if (rel > (lp == row_threads_log2(S, 1, true) ? 2e-6 * std::sqrt(double(S) / (1 << lp) + 1) : 1e-4)) { ++fails; std::printf("S=%d off=%d lp=%d s=%g ref=%g rel=%g\n", S, off, lp, r.s, s, rel); }
    OnlineLse<float> again = simulate(x, S, lp); CHECK(std::memcmp(&again.s, &r.s, 4) == 0);
  }
  // -inf handling: leading -inf block then finite; all -inf; +inf
  { std::vector<float> x = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, 1.f, 2.f, -INFINITY, 0.f};
    OnlineLse<float> r = simulate(x.data(), 8, 1); CHECK(r.m == 2.f);
    CHECK(std::abs(r.s - (std::exp(-1.f) + 1.f + std::exp(-2.f))) < 1e-6); }
  { std::vector<float> x(9, -INFINITY); OnlineLse<float> r = simulate(x.data(), 9, 2); CHECK(r.m == -INFINITY && r.s == 0.f); }
  { std::vector<float> x = {1.f, INFINITY, 0.f}; OnlineLse<float> r = simulate(x.data(), 3, 1); CHECK(r.m == INFINITY && r.s != r.s); }
  { std::vector<float> x = {1.f, NAN, 0.f}; OnlineLse<float> r = simulate(x.data(), 3, 1); CHECK(r.s != r.s); }
  // chunk_mask: bits straddling words
  std::vector<uint32_t> bits(4, 0); auto set = [&](int s) { bits[s >> 5] |= 1u << (s & 31); };
  set(0); set(30); set(31); set(32); set(35); set(95);
  CHECK(chunk_mask(bits.data(), 0, 4) == 1u); CHECK(chunk_mask(bits.data(), 28, 8) == 0b10011100u);
  CHECK(chunk_mask(bits.data(), 30, 4) == 0b0111u); CHECK(chunk_mask(bits.data(), 92, 4) == 0b1000u);
  CHECK(chunk_mask(bits.data(), 4, 8) == 0u); CHECK(chunk_mask(bits.data(), 29, 2) == 0b10u);

  // GradRow::write over a simulated row group vs a direct scatter in (t, k) order: every element once,
  // exact bits (same order of additions), for several alignments of x and grad and group sizes.
  for (int S : {1, 5, 53, 1000, 1003}) for (int xoff = 0; xoff < 4; ++xoff) for (int goff = 0; goff < 4; ++goff)
  for (int lp : {0, 2, 5, 7}) for (int dense : {0, 1}) {
    const int T = 7, K = 3, TK = T * K;
    std::uniform_int_distribution<int> src(-1, S - 1);
    std::vector<int64_t> index(TK); for (auto& v : index) v = src(gen);
    // the CSR the device builds: stable order by source, then ascending e
    std::vector<int32_t> ptr(S + 1, 0), ent;
    for (int s = 0; s < S; ++s) { ptr[s] = (int32_t)ent.size(); for (int e = 0; e < TK; ++e) if (index[e] == s) ent.push_back(e); }
    ptr[S] = (int32_t)ent.size(); if (ent.empty()) ent.push_back(0);
    std::vector<uint32_t> bits((S + 31) / 32 + 1, 0);
    for (int s = 0; s < S; ++s) if (ptr[s + 1] > ptr[s]) bits[s >> 5] |= 1u << (s & 31);
    std::vector<float> xs(S + 8), gs(S + 8, NAN), a(TK);
    float* x = xs.data() + xoff; float* g = gs.data() + goff;
    for (int j = 0; j < S; ++j) x[j] = nd(gen);
    for (auto& v : a) v = nd(gen);
    const RowNorm<float> norm{2.f, 1.5f};
    const float D = 0.75f, c = 1.25f;
    GradRow<float, float> row{x, g, a.data(), SourceMapView{ptr.data(), ent.data(), bits.data()}, norm, D, c, dense != 0};
    for (int lane = 0; lane < (1 << lp); ++lane) row.write(S, lane, lp);
    for (int j = 0; j < S; ++j) {
      float ref = dense ? -D * reprogram_ext::exp_f(minus_lse(x[j], norm)) : 0.f;
      for (int e = 0; e < TK; ++e) if (index[e] == j) ref += c * a[e];
      if (std::memcmp(&ref, &g[j], 4) != 0) { ++fails; std::printf("grad S=%d xoff=%d goff=%d lp=%d dense=%d j=%d %g vs %g\n", S, xoff, goff, lp, dense, j, g[j], ref); break; }
    }
    CHECK(gs[goff + S] != gs[goff + S]);  // nothing written past the row
    for (int j = 0; j < goff; ++j) CHECK(gs[j] != gs[j]);  // nor before
  }
  std::printf(fails ? "FAILED %d\n" : "all passed\n", fails);
  return fails != 0;
}
