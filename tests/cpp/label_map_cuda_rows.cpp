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
#include <type_traits>
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

// A random index [T, K] over S sources with the cases the kernels must skip or keep: padding (-1),
// sources outside [0, S) and, when S > 3, entries on the +inf / nan / -inf logits that
// special_logits() puts at sources 1, 2, 3.
static std::vector<int64_t> test_index(int64_t S, int T, int K, std::mt19937& gen) {
  const int TK = T * K;
  std::vector<int64_t> index(TK);
  std::uniform_int_distribution<int64_t> pick(0, S - 1);
  for (int e = 0; e < TK; ++e) index[e] = pick(gen);
  for (int t = 0; t < T; t += 3) index[t * K + K - 1] = -1;         // padding
  if (TK > 5) { index[5] = S; index[4] = -7; }                        // outside [0, S): padding too
  if (S > 3) for (int t = 1; t < T; t += 4) index[t * K] = 1 + (t % 3);  // +inf / nan / -inf sources
  return index;
}
static void special_logits(float* x, int64_t S) {
  if (S > 3) { x[1] = INFINITY; x[2] = NAN; x[3] = -INFINITY; }
}

// The mapped CE forward's staged rows (stage_row, local_source): every lane's entries staged once,
// the lanes' maxima merged = the direct max over valid finite mapped logits, and the group math on
// (staged values + t K, local sources) gives the same bits as on the row with the global index.
static void check_stage(int64_t S, int T, int K, int log_p, unsigned seed) {
  std::mt19937 gen(seed); std::normal_distribution<float> nd(0.f, 4.f);
  std::vector<float> x(S); for (auto& v : x) v = nd(gen);
  special_logits(x.data(), S);
  const int TK = T * K;
  const std::vector<int64_t> index = test_index(S, T, K, gen);
  const int P = 1 << log_p;
  std::vector<float> values(TK, -1.f);
  std::vector<int64_t> local(TK);
  for (int e = 0; e < TK; ++e) local[e] = local_source(index[e], S, e, K);
  float m = -INFINITY, direct = -INFINITY;
  for (int lane = 0; lane < P; ++lane) m = nan_skip_max(m, stage_row<float>(x.data(), index.data(), S, TK, lane, log_p, values.data()));
  for (int e = 0; e < TK; ++e) {
    const bool valid = index[e] >= 0 && index[e] < S;
    CHECK(local[e] == (valid ? e % K : -1));
    if (valid) {
      CHECK(std::memcmp(&values[e], &x[index[e]], 4) == 0);
      if (x[index[e]] < INFINITY && x[index[e]] > direct) direct = x[index[e]];
    } else {
      CHECK(values[e] == 0.f);
    }
  }
  CHECK(std::memcmp(&m, &direct, 4) == 0);
  CHECK(stage_fits<float>(TK, log_p) == (stage_bytes<float>(TK, log_p) <= kStageMaxBytes));
  const float shift = m == -INFINITY ? 0.f : m;
  for (int t = 0; t < T; ++t) {
    const Group<float> g{index.data() + t * K, nullptr, K, S, 0};
    const Group<float> gs{local.data() + t * K, nullptr, K, K, 0};
    const GroupLog<float> a = group_log_prob<Reduce::kMean, float>(x.data(), g, shift);
    const GroupLog<float> b = group_log_prob<Reduce::kMean, float>(values.data() + t * K, gs, shift);
    CHECK(std::memcmp(&a.L, &b.L, 4) == 0 || (a.L != a.L && b.L != b.L));
    for (int k = 0; k < K; ++k) {
      CHECK(g.valid(k) == gs.valid(k));
      if (!g.valid(k)) continue;
      const float ra = log_group_responsibility<Reduce::kMean, float>(x.data(), g, a, k);
      const float rb = log_group_responsibility<Reduce::kMean, float>(values.data() + t * K, gs, b, k);
      CHECK(std::memcmp(&ra, &rb, 4) == 0 || (ra != ra && rb != rb));
      const GroupValue<float> va = group_value<Reduce::kSum, float>(x.data(), g, Pre::kNone, RowNorm<float>{0, 0});
      const GroupValue<float> vb = group_value<Reduce::kSum, float>(values.data() + t * K, gs, Pre::kNone, RowNorm<float>{0, 0});
      CHECK(std::memcmp(&va.out, &vb.out, 4) == 0 || (va.out != va.out && vb.out != vb.out));
    }
  }
}

// The label_map forward's row pass (session 7): kRowUnroll loads per step give every lane the same
// (m, s) bits as one load per step (the adds keep their order), for float (V = 4) and double (V = 2).
template <typename T>
static void check_unroll(int64_t S, int off, int log_p, std::mt19937& gen) {
  std::normal_distribution<double> nd(0., 3.);
  std::vector<T> store(S + 8); T* x = store.data() + off;
  for (int64_t i = 0; i < S; ++i) x[i] = static_cast<T>(nd(gen));
  for (int lane = 0; lane < (1 << log_p); ++lane) {
    OnlineLse<T> a, b;
    lane_row_lse<T, T, 1>(x, S, lane, log_p, a);
    lane_row_lse<T, T, kRowUnroll>(x, S, lane, log_p, b);
    CHECK(std::memcmp(&a.m, &b.m, sizeof(T)) == 0 && std::memcmp(&a.s, &b.s, sizeof(T)) == 0);
  }
}

// The CSR source map the device builds (stable order by source, then ascending e) and its bits.
// rank[w] = sources with entries below 32 w, as build_source_map computes it (cumsum, then every 32nd).
struct HostMap {
  std::vector<int32_t> ptr, ent, rank; std::vector<uint32_t> bits;
  HostMap(const std::vector<int64_t>& index, int64_t S) : ptr(S + 1, 0), rank((S + 31) / 32 + 1, 0), bits((S + 31) / 32 + 1, 0) {
    const int TK = static_cast<int>(index.size());
    for (int64_t s = 0; s < S; ++s) { ptr[s] = (int32_t)ent.size(); for (int e = 0; e < TK; ++e) if (index[e] == s) ent.push_back(e); }
    ptr[S] = (int32_t)ent.size(); if (ent.empty()) ent.push_back(0);
    for (int64_t s = 0; s < S; ++s) if (ptr[s + 1] > ptr[s]) bits[s >> 5] |= 1u << (s & 31);
    std::vector<int32_t> below(S + 1, 0);
    for (int64_t s = 0; s < S; ++s) below[s + 1] = below[s] + (ptr[s + 1] > ptr[s]);
    for (size_t w = 0; w < rank.size(); ++w) rank[w] = below[std::min<int64_t>(32 * (int64_t)w, S)];
  }
  SourceMapView view() const { return SourceMapView{ptr.data(), ent.data(), bits.data(), rank.data()}; }
};

// The label_map forward's captured rows (RowCapture in the unrolled row pass): every lane of the row
// group streams its part once; afterwards every valid entry's slot (source_slot) holds x[index[e]]
// bit for bit (shared sources: one slot), the slots are 0 .. (sources with entries) - 1 in source
// order, invalid entries have slot -1, the lanes' (m, s) are those of the plain pass, and
// group_value on (values, slots + t K) gives the bits of group_value on the row, every reduce.
static void check_capture(int64_t S, int T, int K, int off, int log_p, unsigned seed) {
  std::mt19937 gen(seed); std::normal_distribution<float> nd(0.f, 4.f);
  std::vector<float> store(S + 8); float* x = store.data() + off;
  for (int64_t i = 0; i < S; ++i) x[i] = nd(gen);
  special_logits(x, S);
  const int TK = T * K;
  std::vector<int64_t> index = test_index(S, T, K, gen);
  if (TK > 9) index[9] = index[0];  // a source shared by two entries
  const HostMap map(index, S);
  std::vector<float> values(TK, NAN), w(TK);
  for (auto& v : w) v = 0.5f + std::abs(nd(gen));
  std::vector<int64_t> local(TK);
  for (int e = 0; e < TK; ++e) local[e] = source_slot(index[e], S, map.view());
  std::vector<int64_t> distinct;
  for (int e = 0; e < TK; ++e) if (index[e] >= 0 && index[e] < S) distinct.push_back(index[e]);
  std::sort(distinct.begin(), distinct.end());
  distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
  for (int lane = 0; lane < (1 << log_p); ++lane) {
    OnlineLse<float> a, b;
    lane_row_lse<float, float, 1>(x, S, lane, log_p, a);
    lane_row_lse<float, float, kRowUnroll>(x, S, lane, log_p, b, RowCapture<float>{map.view(), values.data()});
    CHECK(std::memcmp(&a.m, &b.m, 4) == 0 && std::memcmp(&a.s, &b.s, 4) == 0);
  }
  for (int e = 0; e < TK; ++e) {
    const bool valid = index[e] >= 0 && index[e] < S;
    if (!valid) { CHECK(local[e] == -1); continue; }
    const int64_t rank = std::lower_bound(distinct.begin(), distinct.end(), index[e]) - distinct.begin();
    CHECK(local[e] == rank);
    CHECK(std::memcmp(&values[local[e]], &x[index[e]], 4) == 0);
  }
  for (size_t i = distinct.size(); i < values.size(); ++i) CHECK(values[i] != values[i]);  // nothing past the slots
  const RowNorm<float> norm{1.5f, 7.25f};
  for (int t = 0; t < T; ++t) for (int weighted = 0; weighted < 2; ++weighted) {
    const float* wt = weighted ? w.data() + t * K : nullptr;
    const Group<float> g{index.data() + t * K, wt, K, S, 2};
    const Group<float> gs{local.data() + t * K, wt, K, TK, 2};
    for (Pre pre : {Pre::kSoftmax, Pre::kLogSoftmax}) {
      auto same = [&](auto R) {
        constexpr Reduce r = decltype(R)::value;
        const GroupValue<float> va = group_value<r, float>(x, g, pre, norm);
        const GroupValue<float> vb = group_value<r, float>(values.data(), gs, pre, norm);
        CHECK(std::memcmp(&va.out, &vb.out, 4) == 0 || (va.out != va.out && vb.out != vb.out));
        CHECK(va.arg == vb.arg);
      };
      same(std::integral_constant<Reduce, Reduce::kSum>{});
      same(std::integral_constant<Reduce, Reduce::kMean>{});
      same(std::integral_constant<Reduce, Reduce::kMax>{});
      if (!weighted) same(std::integral_constant<Reduce, Reduce::kTopkMean>{});
    }
  }
}

// The label_map backward without staged logits (session 9: label_map_backward_from_out_kernel, reduce
// sum / mean, pre softmax): target_coefficients gives b[e] = g_t c_k and g_t out_t, and
// GradRow<..., true, true> on b writes, for every element, the bits that GradRow<...> writes on the
// staged kernel's a[e] = (g_t c_k) * softmax(x)_{s_k} (computed here as that kernel computes it, from
// group_value on the row) with the same D; the D of the new kernel (sum_t g_t out_t) is that of the
// staged one (sum_e a[e]) up to rounding. Several alignments of x and grad, lane counts, shared
// sources, padding, a -inf logit, weighted and not.
template <Reduce R>
static void check_from_out(int64_t S, int T, int K, int xoff, int goff, int log_p, bool weighted, unsigned seed) {
  std::mt19937 gen(seed); std::normal_distribution<float> nd(0.f, 3.f);
  const int TK = T * K;
  std::vector<float> xs(S + 8), w(TK), go(T);
  float* x = xs.data() + xoff;
  for (int64_t j = 0; j < S; ++j) x[j] = nd(gen);
  if (S > 3) x[3] = -INFINITY;
  for (auto& v : w) v = 0.25f + std::abs(nd(gen));
  for (auto& v : go) v = nd(gen);
  std::vector<int64_t> index(TK);
  std::uniform_int_distribution<int64_t> pick(0, S - 1);
  for (auto& v : index) v = pick(gen);
  for (int t = 0; t < T; t += 3) if (K > 1) index[t * K + K - 1] = -1;  // padding (each group keeps a source)
  if (TK > 9) index[9] = index[0];                                      // a source shared by two entries
  if (S > 3 && TK > 2) index[2] = 3;                                   // the -inf logit
  const HostMap map(index, S);
  double m = -INFINITY; for (int64_t j = 0; j < S; ++j) m = std::max(m, double(x[j]));
  double se = 0; for (int64_t j = 0; j < S; ++j) se += std::exp(double(x[j]) - m);
  const RowNorm<float> norm{float(m), float(std::log(se))};
  std::vector<float> a(TK), b(TK, NAN);
  float D_staged = 0, D_out = 0, D_abs = 0;
  for (int t = 0; t < T; ++t) {
    const Group<float> g{index.data() + t * K, weighted ? w.data() + t * K : nullptr, K, S, 0};
    const GroupValue<float> gv = group_value<R, float>(x, g, Pre::kSoftmax, norm);  // the forward's out_t
    for (int k = 0; k < K; ++k) {  // the staged kernel's coefficient loop
      a[t * K + k] = 0;
      if (!g.valid(k)) continue;
      const float key = x[g.src[k]];
      const float v = pre_value(key, Pre::kSoftmax, norm);
      a[t * K + k] = go[t] * value_coefficient<R>(g, gv, k, key) * v;
      D_staged += a[t * K + k];
      D_abs += std::abs(a[t * K + k]);
    }
    D_out += target_coefficients<R, float>(g, go[t], gv.out, b.data() + t * K);
    for (int k = 0; k < K; ++k) if (!g.valid(k)) CHECK(b[t * K + k] == 0.f);
  }
  CHECK(std::abs(D_out - D_staged) <= 1e-5f * (D_abs + 1e-30f));
  std::vector<float> g1s(S + 8, NAN), g2s(S + 8, NAN);
  float* g1 = g1s.data() + goff; float* g2 = g2s.data() + goff;
  const GradRow<float, float> staged{x, g1, a.data(), map.view(), norm, D_staged, 1.f, true};
  const GradRow<float, float, true, true> from_out{x, g2, b.data(), map.view(), norm, D_staged, 1.f, true};
  for (int lane = 0; lane < (1 << log_p); ++lane) { staged.write(S, lane, log_p); from_out.write(S, lane, log_p); }
  if (std::memcmp(g1s.data(), g2s.data(), (S + 8) * sizeof(float)) != 0) {
    ++fails; std::printf("from_out S=%lld xoff=%d goff=%d lp=%d weighted=%d: bits differ from the staged writer\n",
                         (long long)S, xoff, goff, log_p, int(weighted));
  }
  for (int64_t j = 0; j < S; ++j) {  // and both are the direct formula, element by element
    const float p = reprogram_ext::exp_f(minus_lse(x[j], norm));
    float ref = -D_staged * p;
    for (int e = 0; e < TK; ++e) if (index[e] == j) ref += 1.f * (p * b[e]);
    if (std::memcmp(&ref, &g2[j], 4) != 0) { ++fails; std::printf("from_out direct S=%lld j=%lld %g vs %g\n", (long long)S, (long long)j, g2[j], ref); break; }
  }
  CHECK(g2s[goff + S] != g2s[goff + S]);
  for (int j = 0; j < goff; ++j) CHECK(g2s[j] != g2s[j]);
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
    if (!dense) {  // the store-only writer (one chunk per step): the same bits
      std::vector<float> g2s(S + 8, NAN); float* g2 = g2s.data() + goff;
      GradRow<float, float, false> row2{x, g2, a.data(), SourceMapView{ptr.data(), ent.data(), bits.data()}, norm, D, c, false};
      for (int lane = 0; lane < (1 << lp); ++lane) row2.write(S, lane, lp);
      CHECK(std::memcmp(g2s.data(), gs.data(), (S + 8) * sizeof(float)) == 0);
    }
    CHECK(gs[goff + S] != gs[goff + S]);  // nothing written past the row
    for (int j = 0; j < goff; ++j) CHECK(gs[j] != gs[j]);  // nor before
  }
  // staged rows of the mapped CE forward: the benchmark's shapes, odd ones, every lane count
  const int stage_shapes[][3] = {{1000, 10, 10}, {1000, 100, 10}, {32000, 100, 8}, {53, 5, 3}, {7, 3, 1}};
  for (const auto& sh : stage_shapes)
    for (int lp : {0, 3, 4, 5, 7}) check_stage(sh[0], sh[1], sh[2], lp, static_cast<unsigned>(sh[0] + lp));
  CHECK(stage_fits<float>(800, 7) && stage_bytes<float>(800, 7) == 800 * 4 + 800 * 8);
  CHECK(stage_bytes<float>(100, 4) == 8 * 100 * 4 + 100 * 8);
  CHECK(!stage_fits<double>(1 << 14, 7) && !stage_fits<float>(0, 7));
  // the label_map forward's unrolled row pass and captured rows: the benchmark's shapes, odd ones,
  // four alignments, every lane count the kernels use
  for (int S : {1, 3, 7, 53, 1000, 1003, 32000}) for (int off = 0; off < 4; ++off) for (int lp : {0, 3, 5, 7}) {
    check_unroll<float>(S, off, lp, gen);
    check_unroll<double>(S, off % 2, lp, gen);
  }
  const int capture_shapes[][3] = {{1000, 10, 10}, {1000, 100, 10}, {32000, 100, 8}, {53, 5, 3}, {7, 3, 1}, {1003, 7, 4}};
  for (const auto& sh : capture_shapes) for (int off = 0; off < 4; ++off)
    for (int lp : {0, 3, 5, 7}) check_capture(sh[0], sh[1], sh[2], off, lp, static_cast<unsigned>(sh[0] + 7 * lp + off));
  // the label_map backward without staged logits (reduce sum / mean, pre softmax): the benchmark's
  // shapes, odd ones, four alignments of x and grad, every lane count the kernels use
  const int from_out_shapes[][3] = {{1000, 10, 10}, {1000, 100, 10}, {32000, 100, 8}, {53, 5, 3}, {5, 3, 2}, {1003, 7, 4}};
  for (const auto& sh : from_out_shapes) for (int xoff = 0; xoff < 4; ++xoff) for (int goff = 0; goff < 4; goff += 3)
    for (int lp : {0, 3, 5, 7}) for (int weighted = 0; weighted < 2; ++weighted) {
      const unsigned seed = static_cast<unsigned>(sh[0] + 5 * lp + 17 * xoff + goff + 101 * weighted);
      check_from_out<Reduce::kMean>(sh[0], sh[1], sh[2], xoff, goff, lp, weighted != 0, seed);
      check_from_out<Reduce::kSum>(sh[0], sh[1], sh[2], xoff, goff, lp, weighted != 0, seed + 1);
    }
  std::printf(fails ? "FAILED %d\n" : "all passed\n", fails);
  return fails != 0;
}
