// Fused element-wise kernels for the chain autoencoders on CPU (see cae/kernels.py).
//
// Each replaces several PyTorch passes over an activation by one, on channels_last tensors
// (float32 or bfloat16; arithmetic in float32, as PyTorch does for bfloat16):
//   pool2_forward / pool2_backward       2x2 max-pooling, optionally followed by ReLU; the
//                                        backward routes each gradient to the window's first
//                                        maximum (max_pool2d's rule), found again from the
//                                        input, instead of max_pool2d's int64 indices, a
//                                        separate ReLU and their backward passes;
//   shuffle_forward / shuffle_backward   the phase interleave of an upsampling conv
//                                        (cae.arch.phase_shuffle), optionally with the ReLU
//                                        that follows it applied while copying. (A sigmoid
//                                        here measured slower than PyTorch's: its exp does
//                                        not vectorize without -ffast-math.)
//   standardize_u8                       the network input from uint8 images as stored:
//                                        x / 255 * scale[c] + shift[c], rounded once to the
//                                        output type (the division, the standardization and
//                                        autocast's bfloat16 cast were three passes);
//   squared_error_u8 (+ _backward)       sum((p - t / 255)^2) against the uint8 images, so
//                                        the float target is never built (optionally with
//                                        the metrics' clamp of p to [0, 1]);
//   conv_pool2_forward                   inference only: a 'same' conv with 1 or 3 input
//                                        channels (a first layer), its bias, the 2x2 max-pool
//                                        and ReLU after it, in one pass from registers. oneDNN
//                                        runs such convs far below its speed on wider ones
//                                        (3->8 channels at 32x32: 5.3 vs 10 ms per 1,000
//                                        images in float32 with the pool; 1->8: 1.8 vs 33 ms).
// Work is split over images and rows with at::parallel_for (PyTorch's own thread pool).
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <cstdint>
#include <vector>

namespace {

enum Act : int64_t { kNone = 0, kRelu = 1 };

void check_cl(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
  TORCH_CHECK(t.dim() == 4, name, " must be 4-D (N, C, H, W)");
  TORCH_CHECK(t.is_contiguous(at::MemoryFormat::ChannelsLast), name, " must be channels_last contiguous");
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16, name,
              " must be float32 or bfloat16");
}

// Values are stored as float or as the raw bits of a bfloat16 (uint16_t). The conversions are
// written out as shifts so that GCC vectorizes the loops (c10::BFloat16's operators stop it).
inline float to_f32(float v) { return v; }
inline float to_f32(uint16_t v) {
  uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
// exact for a float that came from a stored value (or zero): pooling and ReLU only select
template <typename S> inline S from_f32_exact(float f);
template <> inline float from_f32_exact<float>(float f) { return f; }
template <> inline uint16_t from_f32_exact<uint16_t>(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return static_cast<uint16_t>(bits >> 16);
}
// round to nearest even, as PyTorch converts float to bfloat16 (the values here are finite)
template <typename S> inline S round_to(float f);
template <> inline float round_to<float>(float f) { return f; }
template <> inline uint16_t round_to<uint16_t>(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

// ----------------------------------------------------------------------------- pooling
// One output row. Separate restrict pointers per window position let GCC see that they do not
// overlap, so the channel loop vectorizes.
template <typename S, bool RELU>
void pool2_row(const S* __restrict__ row0, const S* __restrict__ row1, S* __restrict__ out, int64_t wo, int64_t c) {
  for (int64_t j = 0; j < wo; ++j) {
    const S* __restrict__ a0 = row0 + 2 * j * c;
    const S* __restrict__ a1 = a0 + c;
    const S* __restrict__ b0 = row1 + 2 * j * c;
    const S* __restrict__ b1 = b0 + c;
    S* __restrict__ o = out + j * c;
    for (int64_t k = 0; k < c; ++k) {
      const float m = std::max(std::max(to_f32(a0[k]), to_f32(a1[k])), std::max(to_f32(b0[k]), to_f32(b1[k])));
      o[k] = from_f32_exact<S>(RELU ? std::max(m, 0.f) : m);
    }
  }
}

template <typename S, bool RELU>
void pool2_forward_impl(const S* x, S* y, int64_t n, int64_t h, int64_t w, int64_t c) {
  const int64_t ho = h / 2, wo = w / 2;
  at::parallel_for(0, n * ho, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t img = r / ho, i = r % ho;
      const S* row0 = x + ((img * h + 2 * i) * w) * c;
      pool2_row<S, RELU>(row0, row0 + w * c, y + r * wo * c, wo, c);
    }
  });
}

// The backward finds each window's maximum again from the saved input (storing an index per
// value kept the forward from vectorizing) and routes the gradient to its first position.
template <typename S, bool RELU>
void pool2_backward_row(const S* __restrict__ g, const S* __restrict__ x0, const S* __restrict__ x1,
                        S* __restrict__ row0, S* __restrict__ row1, int64_t wo, int64_t c) {
  for (int64_t j = 0; j < wo; ++j) {
    const S* __restrict__ a0 = x0 + 2 * j * c;
    const S* __restrict__ a1 = a0 + c;
    const S* __restrict__ b0 = x1 + 2 * j * c;
    const S* __restrict__ b1 = b0 + c;
    S* __restrict__ ga0 = row0 + 2 * j * c;
    S* __restrict__ ga1 = ga0 + c;
    S* __restrict__ gb0 = row1 + 2 * j * c;
    S* __restrict__ gb1 = gb0 + c;
    const S* __restrict__ gj = g + j * c;
    for (int64_t k = 0; k < c; ++k) {
      const float v0 = to_f32(a0[k]), v1 = to_f32(a1[k]), v2 = to_f32(b0[k]), v3 = to_f32(b1[k]);
      const float m = std::max(std::max(v0, v1), std::max(v2, v3));
      // max_pool2d's rule: the first position holding the maximum takes the gradient (selects
      // only, so the loop vectorizes)
      const bool live = !RELU || m > 0.f;
      if constexpr (std::is_same_v<S, float>) {
        float v = live ? gj[k] : 0.f;  // passed along the window until taken
        ga0[k] = v0 == m ? v : 0.f;
        v = v0 == m ? 0.f : v;
        ga1[k] = v1 == m ? v : 0.f;
        v = v1 == m ? 0.f : v;
        gb0[k] = v2 == m ? v : 0.f;
        v = v2 == m ? 0.f : v;
        gb1[k] = v;
      } else {
        // bfloat16: 0/1 integer masks times the gradient's bits (float selects with 16-bit
        // stores did not vectorize: 7x slower)
        const uint32_t gb = gj[k], e0 = v0 == m, e1 = v1 == m, e2 = v2 == m, on = live;
        ga0[k] = static_cast<S>(gb * (on & e0));
        ga1[k] = static_cast<S>(gb * (on & ~e0 & e1));
        gb0[k] = static_cast<S>(gb * (on & ~e0 & ~e1 & e2));
        gb1[k] = static_cast<S>(gb * (on & ~e0 & ~e1 & ~e2 & 1u));
      }
    }
  }
}

template <typename S, bool RELU>
void pool2_backward_impl(const S* g, const S* x, S* gx, int64_t n, int64_t h, int64_t w, int64_t c) {
  const int64_t ho = h / 2, wo = w / 2;
  at::parallel_for(0, n * ho, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t img = r / ho, i = r % ho;
      const int64_t off = ((img * h + 2 * i) * w) * c;
      pool2_backward_row<S, RELU>(g + r * wo * c, x + off, x + off + w * c, gx + off, gx + off + w * c, wo, c);
    }
  });
}

// ----------------------------------------------------------------------------- phase interleave
template <int64_t ACT, typename S>
inline S activate(S v) {
  if (ACT == kRelu) return to_f32(v) > 0.f ? v : from_f32_exact<S>(0.f);
  return v;
}

template <int64_t ACT, typename S>
inline S activation_grad(S g, S y) {
  if (ACT == kRelu) return to_f32(y) > 0.f ? g : from_f32_exact<S>(0.f);
  return g;
}

// x: (n, h, w, [s, s, c]) phase-major; y: (n, h*s, w*s, c). Row (i*s + a) of y takes, for each
// j, the s*c contiguous values of phase row a at low-resolution pixel (i, j).
template <typename S, int64_t ACT>
void shuffle_forward_impl(const S* x, S* y, int64_t n, int64_t h, int64_t w, int64_t c, int64_t s) {
  const int64_t run = s * c;
  at::parallel_for(0, n * h * s, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t a = r % s, i = (r / s) % h, img = r / (s * h);
      const S* __restrict__ src = x + ((img * h + i) * w) * s * run + a * run;
      S* __restrict__ dst = y + r * w * run;
      for (int64_t j = 0; j < w; ++j)
        for (int64_t q = 0; q < run; ++q) dst[j * run + q] = activate<ACT>(src[j * s * run + q]);
    }
  });
}

template <typename S, int64_t ACT>
void shuffle_backward_impl(const S* g, const S* y, S* gx, int64_t n, int64_t h, int64_t w, int64_t c, int64_t s) {
  const int64_t run = s * c;
  at::parallel_for(0, n * h * s, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t a = r % s, i = (r / s) % h, img = r / (s * h);
      S* __restrict__ dst = gx + ((img * h + i) * w) * s * run + a * run;
      const S* __restrict__ gr = g + r * w * run;
      const S* __restrict__ yr = ACT == kNone ? gr : y + r * w * run;
      for (int64_t j = 0; j < w; ++j)
        for (int64_t q = 0; q < run; ++q) dst[j * s * run + q] = activation_grad<ACT>(gr[j * run + q], yr[j * run + q]);
    }
  });
}

// ----------------------------------------------------------------------------- uint8 images
// In channels_last memory the channel of value i is i % c; blocks of 16 pixels repeat the
// per-channel constants exactly, so each block is one loop over lane tables that vectorizes.
template <typename S>
void standardize_u8_impl(const uint8_t* x, S* y, int64_t total, int64_t c, const float* scale, const float* shift) {
  const int64_t block = 16 * c, blocks = total / block;
  std::vector<float> sc(block), sh(block);
  for (int64_t k = 0; k < block; ++k) sc[k] = scale[k % c], sh[k] = shift[k % c];
  const float* __restrict__ scp = sc.data();
  const float* __restrict__ shp = sh.data();
  at::parallel_for(0, blocks, 64, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const uint8_t* __restrict__ src = x + b * block;
      S* __restrict__ dst = y + b * block;
      // the division, not a multiplication by 1/255: the same values as torch.div(x, 255)
      for (int64_t k = 0; k < block; ++k) dst[k] = round_to<S>(shp[k] + (static_cast<float>(src[k]) / 255.f) * scp[k]);
    }
  });
  for (int64_t i = blocks * block; i < total; ++i)
    y[i] = round_to<S>(shift[i % c] + (static_cast<float>(x[i]) / 255.f) * scale[i % c]);
}

// Fixed chunks summed in float, then in double in chunk order: the result does not depend on
// the number of threads.
template <typename S, bool CLAMP>
double squared_error_u8_impl(const S* p, const uint8_t* t, int64_t total) {
  const int64_t chunk = 4096, chunks = (total + chunk - 1) / chunk;
  std::vector<double> part(chunks);
  at::parallel_for(0, chunks, 4, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const S* __restrict__ pk = p;
      const uint8_t* __restrict__ tk = t;
      const int64_t lo = k * chunk, hi = std::min(total, lo + chunk);
      float acc = 0.f;
#pragma omp simd reduction(+ : acc)
      for (int64_t i = lo; i < hi; ++i) {
        float v = to_f32(pk[i]);
        if (CLAMP) v = std::min(std::max(v, 0.f), 1.f);
        const float d = v - static_cast<float>(tk[i]) / 255.f;
        acc += d * d;
      }
      part[k] = acc;
    }
  });
  double sum = 0;
  for (double v : part) sum += v;
  return sum;
}

template <typename S>
void squared_error_u8_backward_impl(const S* p, const uint8_t* t, S* g, int64_t total, float factor) {
  at::parallel_for(0, total, 16384, [&](int64_t begin, int64_t end) {
    const S* __restrict__ pk = p;
    const uint8_t* __restrict__ tk = t;
    S* __restrict__ gk = g;
    for (int64_t i = begin; i < end; ++i)
      gk[i] = round_to<S>(factor * (to_f32(pk[i]) - static_cast<float>(tk[i]) / 255.f));
  });
}

template <typename S>
S* ptr(const torch::Tensor& t);

// ----------------------------------------------------------------------------- first conv + pool
// Eight output channels per 256-bit vector (GCC/Clang vector extensions: AVX2 where built with
// it, narrower instructions otherwise). Each step computes two pooled outputs: a 2x4 block of
// conv outputs, eight independent accumulators, enough to hide the FMA latency.
typedef float v8 __attribute__((vector_size(32)));

typedef uint32_t v8u __attribute__((vector_size(32)));
typedef uint16_t v8h __attribute__((vector_size(16)));

template <typename S>
inline void store_lanes(S* out, v8 m, int64_t lanes) {
  if (lanes < 8) {
    for (int64_t l = 0; l < lanes; ++l) out[l] = round_to<S>(m[l]);
  } else if constexpr (std::is_same_v<S, float>) {
    std::memcpy(out, &m, sizeof m);
  } else {  // round_to<uint16_t> on all eight lanes at once
    v8u bits;
    std::memcpy(&bits, &m, sizeof bits);
    bits += 0x7fffu + ((bits >> 16) & 1u);
    const v8h half = __builtin_convertvector(bits >> 16, v8h);
    std::memcpy(out, &half, sizeof half);
  }
}

// x (n, h, w, CI) channels_last; wt[chunk][ky][kx][c] and bias[chunk]: eight output channels
// each (zero beyond co); y (n, h/2, w/2, co).
template <typename S, int K, int CI>
void conv_pool2_impl(const S* x, const v8* wt, const v8* bias, S* y, int64_t n, int64_t h, int64_t w, int64_t co,
                     bool relu) {
  constexpr int64_t pad = K / 2;
  const int64_t ho = h / 2, wo = w / 2, chunks = (co + 7) / 8;
  // the K + 1 input rows of one output row, zero-padded (2 spare columns for an odd wo)
  const int64_t bw = w + K - 1 + 2, rows = K + 1;
  at::parallel_for(0, n * ho, 8, [&](int64_t begin, int64_t end) {
    std::vector<float> buf(rows * bw * CI);
    const v8 zero = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int64_t r = begin; r < end; ++r) {
      const int64_t img = r / ho, i = r % ho;
      std::fill(buf.begin(), buf.end(), 0.f);
      for (int64_t q = 0; q < rows; ++q) {
        const int64_t yy = 2 * i + q - pad;
        if (yy < 0 || yy >= h) continue;
        const S* __restrict__ src = x + ((img * h + yy) * w) * CI;
        float* __restrict__ dst = buf.data() + (q * bw + pad) * CI;
        for (int64_t t = 0; t < w * CI; ++t) dst[t] = to_f32(src[t]);
      }
      S* out = y + r * wo * co;
      for (int64_t cb = 0; cb < chunks; ++cb) {
        const v8* wc = wt + cb * K * K * CI;
        const int64_t lanes = std::min<int64_t>(8, co - cb * 8);
        for (int64_t j = 0; j < wo; j += 2) {
          v8 acc[2][4];
          for (auto& row : acc)
            for (auto& a : row) a = bias[cb];
          // unroll 3: fully for the usual 3x3 kernel; unrolling 7x7 too doubled the build (88 vs 41 s)
#pragma GCC unroll 3
          for (int ky = 0; ky < K; ++ky)
#pragma GCC unroll 3
            for (int kx = 0; kx < K; ++kx) {
              const float* b0 = buf.data() + (ky * bw + 2 * j + kx) * CI;
              const float* b1 = b0 + bw * CI;
              const v8* wk = wc + (ky * K + kx) * CI;
#pragma GCC unroll 4
              for (int c = 0; c < CI; ++c) {
                const v8 wv = wk[c];
#pragma GCC unroll 4
                for (int d = 0; d < 4; ++d) {
                  acc[0][d] += b0[d * CI + c] * wv;
                  acc[1][d] += b1[d * CI + c] * wv;
                }
              }
            }
          for (int q = 0; q < 2 && j + q < wo; ++q) {
            const v8 a = acc[0][2 * q] > acc[0][2 * q + 1] ? acc[0][2 * q] : acc[0][2 * q + 1];
            const v8 b = acc[1][2 * q] > acc[1][2 * q + 1] ? acc[1][2 * q] : acc[1][2 * q + 1];
            v8 m = a > b ? a : b;
            if (relu) m = m > zero ? m : zero;
            store_lanes<S>(out + (j + q) * co + cb * 8, m, lanes);
          }
        }
      }
    }
  });
}

template <typename S, int K>
bool conv_pool2_dispatch_ci(const torch::Tensor& x, const v8* wt, const v8* bias, torch::Tensor& y, bool relu) {
  const int64_t n = x.size(0), ci = x.size(1), h = x.size(2), w = x.size(3), co = y.size(1);
  auto X = ptr<S>(x);
  auto Y = ptr<S>(y);
  if (ci == 1) conv_pool2_impl<S, K, 1>(X, wt, bias, Y, n, h, w, co, relu);
  else if (ci == 3) conv_pool2_impl<S, K, 3>(X, wt, bias, Y, n, h, w, co, relu);
  else return false;
  return true;
}

void check_u8_target(const torch::Tensor& p, const torch::Tensor& t) {
  check_cl(p, "squared_error_u8 prediction");
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kByte && t.is_contiguous(at::MemoryFormat::ChannelsLast),
              "squared_error_u8: the target must be a channels_last uint8 CPU tensor");
  TORCH_CHECK(t.sizes() == p.sizes(), "squared_error_u8: the prediction and the target differ in shape");
}

// Run `fn` with the storage type of `t`: float, or uint16_t for bfloat16.
template <typename F>
void with_storage(const torch::Tensor& t, F fn) {
  if (t.scalar_type() == at::kFloat) fn(float{});
  else fn(uint16_t{});
}

template <typename S>
S* ptr(const torch::Tensor& t) {
  return reinterpret_cast<S*>(t.data_ptr());
}

}  // namespace

torch::Tensor pool2_forward(torch::Tensor x, bool relu) {
  check_cl(x, "pool2_forward input");
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  TORCH_CHECK(h % 2 == 0 && w % 2 == 0, "pool2_forward needs even height and width");
  auto y = torch::empty({n, c, h / 2, w / 2}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  with_storage(x, [&](auto tag) {
    using S = decltype(tag);
    if (relu) pool2_forward_impl<S, true>(ptr<S>(x), ptr<S>(y), n, h, w, c);
    else pool2_forward_impl<S, false>(ptr<S>(x), ptr<S>(y), n, h, w, c);
  });
  return y;
}

torch::Tensor pool2_backward(torch::Tensor g, torch::Tensor x, bool relu) {
  check_cl(g, "pool2_backward grad");
  check_cl(x, "pool2_backward input");
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  TORCH_CHECK(g.size(0) == n && g.size(1) == c && g.size(2) * 2 == h && g.size(3) * 2 == w &&
              g.scalar_type() == x.scalar_type(), "pool2_backward: the gradient does not match the input");
  auto gx = torch::empty_like(x, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  with_storage(x, [&](auto tag) {
    using S = decltype(tag);
    if (relu) pool2_backward_impl<S, true>(ptr<S>(g), ptr<S>(x), ptr<S>(gx), n, h, w, c);
    else pool2_backward_impl<S, false>(ptr<S>(g), ptr<S>(x), ptr<S>(gx), n, h, w, c);
  });
  return gx;
}

torch::Tensor shuffle_forward(torch::Tensor x, int64_t s, int64_t act) {
  check_cl(x, "shuffle_forward input");
  TORCH_CHECK(s >= 1 && x.size(1) % (s * s) == 0, "shuffle_forward: channels not divisible by scale^2");
  const int64_t n = x.size(0), h = x.size(2), w = x.size(3), c = x.size(1) / (s * s);
  auto y = torch::empty({n, c, h * s, w * s}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  with_storage(x, [&](auto tag) {
    using S = decltype(tag);
    if (act == kRelu) shuffle_forward_impl<S, kRelu>(ptr<S>(x), ptr<S>(y), n, h, w, c, s);
    else shuffle_forward_impl<S, kNone>(ptr<S>(x), ptr<S>(y), n, h, w, c, s);
  });
  return y;
}

torch::Tensor shuffle_backward(torch::Tensor g, torch::Tensor y, int64_t s, int64_t act) {
  check_cl(g, "shuffle_backward grad");
  check_cl(y, "shuffle_backward output");
  TORCH_CHECK(y.sizes() == g.sizes() && y.scalar_type() == g.scalar_type(),
              "shuffle_backward: the output and the gradient differ");
  const int64_t n = g.size(0), c = g.size(1), h = g.size(2) / s, w = g.size(3) / s;
  auto gx = torch::empty({n, c * s * s, h, w}, g.options().memory_format(at::MemoryFormat::ChannelsLast));
  with_storage(g, [&](auto tag) {
    using S = decltype(tag);
    if (act == kRelu) shuffle_backward_impl<S, kRelu>(ptr<S>(g), ptr<S>(y), ptr<S>(gx), n, h, w, c, s);
    else shuffle_backward_impl<S, kNone>(ptr<S>(g), ptr<S>(y), ptr<S>(gx), n, h, w, c, s);
  });
  return gx;
}

torch::Tensor standardize_u8(torch::Tensor x, torch::Tensor scale, torch::Tensor shift, bool bf16) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 4 && x.scalar_type() == at::kByte &&
              x.is_contiguous(at::MemoryFormat::ChannelsLast),
              "standardize_u8: x must be a channels_last uint8 CPU tensor");
  const int64_t c = x.size(1);
  TORCH_CHECK(scale.scalar_type() == at::kFloat && shift.scalar_type() == at::kFloat && scale.is_contiguous() &&
              shift.is_contiguous() && scale.numel() == c && shift.numel() == c,
              "standardize_u8: scale and shift must be contiguous float32 with one value per channel");
  auto y = torch::empty(x.sizes(), x.options().dtype(bf16 ? at::kBFloat16 : at::kFloat)
                                       .memory_format(at::MemoryFormat::ChannelsLast));
  with_storage(y, [&](auto tag) {
    using S = decltype(tag);
    standardize_u8_impl<S>(x.data_ptr<uint8_t>(), ptr<S>(y), x.numel(), c, scale.data_ptr<float>(),
                           shift.data_ptr<float>());
  });
  return y;
}

double squared_error_u8(torch::Tensor p, torch::Tensor t, bool clamp) {
  check_u8_target(p, t);
  double sum = 0;
  with_storage(p, [&](auto tag) {
    using S = decltype(tag);
    sum = clamp ? squared_error_u8_impl<S, true>(ptr<S>(p), t.data_ptr<uint8_t>(), p.numel())
                : squared_error_u8_impl<S, false>(ptr<S>(p), t.data_ptr<uint8_t>(), p.numel());
  });
  return sum;
}

// factor * (p - t / 255) in the prediction's type (factor = 2 x the incoming gradient: the sum's
// gradient; clamping is for metrics only and has no backward)
torch::Tensor squared_error_u8_backward(torch::Tensor p, torch::Tensor t, double factor) {
  check_u8_target(p, t);
  auto g = torch::empty_like(p, p.options().memory_format(at::MemoryFormat::ChannelsLast));
  with_storage(p, [&](auto tag) {
    using S = decltype(tag);
    squared_error_u8_backward_impl<S>(ptr<S>(p), t.data_ptr<uint8_t>(), ptr<S>(g), p.numel(),
                                      static_cast<float>(factor));
  });
  return g;
}

// Returns an undefined tensor for a shape it has no kernel for (the caller falls back).
torch::Tensor conv_pool2_forward(torch::Tensor x, torch::Tensor weight, torch::Tensor bias, bool relu) {
  check_cl(x, "conv_pool2_forward input");
  const int64_t n = x.size(0), ci = x.size(1), h = x.size(2), w = x.size(3), co = weight.size(0), k = weight.size(2);
  TORCH_CHECK(weight.dim() == 4 && weight.size(1) == ci && weight.size(3) == k && bias.numel() == co,
              "conv_pool2_forward: the weight or bias does not match the input");
  TORCH_CHECK(h % 2 == 0 && w % 2 == 0, "conv_pool2_forward needs even height and width");
  const int64_t chunks = (co + 7) / 8;
  auto wf = weight.to(at::kFloat).contiguous();
  auto bf = bias.to(at::kFloat).contiguous();
  const float* W = wf.data_ptr<float>();
  const float* B = bf.data_ptr<float>();
  std::vector<v8> wt(chunks * k * k * ci), bt(chunks);
  for (int64_t cb = 0; cb < chunks; ++cb)
    for (int l = 0; l < 8; ++l) {
      const int64_t o = cb * 8 + l;
      bt[cb][l] = o < co ? B[o] : 0.f;
      for (int64_t ky = 0; ky < k; ++ky)
        for (int64_t kx = 0; kx < k; ++kx)
          for (int64_t c = 0; c < ci; ++c)
            wt[((cb * k + ky) * k + kx) * ci + c][l] = o < co ? W[((o * ci + c) * k + ky) * k + kx] : 0.f;
    }
  auto y = torch::empty({n, co, h / 2, w / 2}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  bool done = false;
  with_storage(x, [&](auto tag) {
    using S = decltype(tag);
    if (k == 3) done = conv_pool2_dispatch_ci<S, 3>(x, wt.data(), bt.data(), y, relu);
    else if (k == 5) done = conv_pool2_dispatch_ci<S, 5>(x, wt.data(), bt.data(), y, relu);
    else if (k == 7) done = conv_pool2_dispatch_ci<S, 7>(x, wt.data(), bt.data(), y, relu);
  });
  return done ? y : torch::Tensor();
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("pool2_forward", &pool2_forward, "2x2 max-pool (+ReLU) of a channels_last tensor");
  m.def("pool2_backward", &pool2_backward, "gradient of pool2_forward");
  m.def("shuffle_forward", &shuffle_forward, "phase interleave with an activation");
  m.def("shuffle_backward", &shuffle_backward, "gradient of shuffle_forward");
  m.def("standardize_u8", &standardize_u8, "uint8 images to the standardized network input");
  m.def("squared_error_u8", &squared_error_u8, "sum of squared errors against uint8 images");
  m.def("conv_pool2_forward", &conv_pool2_forward, "first conv + bias + 2x2 max-pool (+ReLU), inference");
  m.def("squared_error_u8_backward", &squared_error_u8_backward, "factor * (p - t / 255)");
}
