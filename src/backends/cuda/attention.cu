// strand/backends/cuda/attention.cu — fused causal multi-head attention.
//
// q [T, C], k and v [past + T, C] (the KV cache's first rows), out [T, C]; head h uses columns
// [h*D, (h+1)*D); query i sees keys 0 .. past + i.
//
// attention_f32 (exact, any T; the decode kernel): one block per (head, query, sequence). Its 8 warps
// take the keys in turn (warp w: keys w, w+8, ...); a warp holds the query across its lanes
// (lane l: dims l, l+32, ...), forms each score with a warp-wide sum, and keeps an online
// softmax of its own keys: the running max m, the running sum l of exp(s - m), and the
// running sum of exp(s - m)·v. The warps' partial results are merged at the end, each scaled
// by exp(m_w - max_w m_w). Everything is f32.
//
// attention_flash (prefill on tensor cores): one block of 4 warps per (64 queries, head).
// The block keeps its queries in shared memory and sweeps the keys in tiles of 64 up to the
// causal limit of its last query: per tile, each warp computes the 16 x 64 scores of its 16
// queries with WMMA (S = Q·Kᵀ, f32 accumulation), applies scale and mask, updates its rows'
// online softmax in f32, writes the probabilities P in f16/bf16, rescales its rows of the f32
// output accumulator O (in shared memory) and adds P·V with WMMA. At the end O / l is written
// out. Inputs and P are rounded to f16/bf16; everything else is f32.
#include <mma.h>

#include "backends/cuda/device_util.cuh"

namespace strand::cuda {

namespace {

// ---- exact f32 -------------------------------------------------------------------------------

constexpr int kF32Warps = 8;

template <int R>  // R = ceil(D / 32) dims per lane
__global__ void __launch_bounds__(kF32Warps * 32) attention_f32_kernel(AttnArgs a) {
  __shared__ float part_m[kF32Warps], part_l[kF32Warps];
  __shared__ float part_acc[kF32Warps][R * 32];
  const int h = blockIdx.x;
  const int64_t i = blockIdx.y;  // query
  const int64_t seq = blockIdx.z;
  a.q += seq * a.T * a.C;
  a.out += seq * a.T * a.C;
  a.k += seq * (a.past + a.T) * a.C;
  a.v += seq * (a.past + a.T) * a.C;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t D = a.D, C = a.C;
  const int64_t col = int64_t(h) * D;
  const int64_t n_keys = a.past + i + 1;

  float q[R], acc[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int64_t d = lane + 32 * r;
    q[r] = d < D ? a.q[i * C + col + d] : 0.0f;
    acc[r] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  for (int64_t j = warp; j < n_keys; j += kF32Warps) {
    const float* kj = a.k + j * C + col;
    float dot = 0.0f;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int64_t d = lane + 32 * r;
      if (d < D) dot += q[r] * kj[d];
    }
    const float s = warp_sum(dot) * a.scale;
    const float m_new = fmaxf(m, s);
    const float c = expf(m - m_new);  // 0 on the first key (m = -inf)
    const float p = expf(s - m_new);
    l = l * c + p;
    const float* vj = a.v + j * C + col;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int64_t d = lane + 32 * r;
      acc[r] = acc[r] * c + (d < D ? p * vj[d] : 0.0f);
    }
    m = m_new;
  }
  if (lane == 0) {
    part_m[warp] = m;
    part_l[warp] = l;
  }
#pragma unroll
  for (int r = 0; r < R; ++r) part_acc[warp][lane + 32 * r] = acc[r];
  __syncthreads();
  if (warp != 0) return;
  float mx = -INFINITY;
  for (int w = 0; w < kF32Warps; ++w) mx = fmaxf(mx, part_m[w]);
  float sum = 0.0f;
  float w_of[kF32Warps];
  for (int w = 0; w < kF32Warps; ++w) {
    w_of[w] = part_m[w] == -INFINITY ? 0.0f : expf(part_m[w] - mx);  // a warp with no keys adds nothing
    sum += part_l[w] * w_of[w];
  }
  const float inv = 1.0f / sum;
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int64_t d = lane + 32 * r;
    if (d >= D) continue;
    float o = 0.0f;
    for (int w = 0; w < kF32Warps; ++w) o += part_acc[w][d] * w_of[w];
    a.out[i * C + col + d] = o * inv;
  }
}

// ---- flash, tensor cores ---------------------------------------------------------------------

namespace wmma = nvcuda::wmma;

constexpr int kBr = 64;  // queries per block (4 warps x 16)
constexpr int kBc = 64;  // keys per tile
constexpr int kFlashWarps = kBr / 16;

template <class TC>
__device__ __forceinline__ TC to_tc(float x);
template <>
__device__ __forceinline__ __half to_tc<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 to_tc<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// Shared memory, padded rows (a fragment's 16 rows then start in different banks): the
// leading dimensions keep every fragment pointer 32-byte aligned, as WMMA needs.
template <int D>
struct FlashSmem {
  static constexpr int ldh = D + 8;    // Q, K, V rows (16-bit elements)
  static constexpr int lds = kBc + 4;  // S rows (f32)
  static constexpr int ldp = kBc + 8;  // P rows (16-bit)
  static constexpr int ldo = D + 4;    // O rows (f32)
  static constexpr size_t q = 0;
  static constexpr size_t k = q + size_t(kBr) * ldh * 2;
  static constexpr size_t v = k + size_t(kBc) * ldh * 2;
  static constexpr size_t s = v + size_t(kBc) * ldh * 2;
  static constexpr size_t p = s + size_t(kBr) * lds * 4;
  static constexpr size_t o = p + size_t(kBr) * ldp * 2;
  static constexpr size_t m = o + size_t(kBr) * ldo * 4;
  static constexpr size_t l = m + size_t(kBr) * 4;
  static constexpr size_t bytes = l + size_t(kBr) * 4;
};

template <class TC, int D>
__global__ void __launch_bounds__(kFlashWarps * 32) attention_flash_kernel(AttnArgs a) {
  using L = FlashSmem<D>;
  extern __shared__ __align__(128) unsigned char smem[];
  TC* Qs = reinterpret_cast<TC*>(smem + L::q);
  TC* Ks = reinterpret_cast<TC*>(smem + L::k);
  TC* Vs = reinterpret_cast<TC*>(smem + L::v);
  float* S = reinterpret_cast<float*>(smem + L::s);
  TC* P = reinterpret_cast<TC*>(smem + L::p);
  float* O = reinterpret_cast<float*>(smem + L::o);
  float* Mrow = reinterpret_cast<float*>(smem + L::m);
  float* Lrow = reinterpret_cast<float*>(smem + L::l);

  const int h = blockIdx.y;
  const int64_t q0 = int64_t(blockIdx.x) * kBr;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t C = a.C, T = a.T, Tk = a.past + a.T;
  const int64_t col = int64_t(h) * D;

  // Queries (rows past T are zero; they are never written out), O = 0, m = -inf, l = 0.
  for (int idx = threadIdx.x; idx < kBr * D; idx += blockDim.x) {
    const int r = idx / D, d = idx % D;
    const int64_t qi = q0 + r;
    Qs[r * L::ldh + d] = to_tc<TC>(qi < T ? a.q[qi * C + col + d] : 0.0f);
    O[r * L::ldo + d] = 0.0f;
  }
  for (int r = threadIdx.x; r < kBr; r += blockDim.x) {
    Mrow[r] = -INFINITY;
    Lrow[r] = 0.0f;
  }
  // Keys this block needs: up to the causal limit of its last (real) query.
  const int64_t last_q = (q0 + kBr < T ? q0 + kBr : T) - 1;
  const int64_t n_keys = a.past + last_q + 1;

  for (int64_t k0 = 0; k0 < n_keys; k0 += kBc) {
    __syncthreads();  // the previous tile's K, V are no longer read; Q, O, m, l are initialised
    for (int idx = threadIdx.x; idx < kBc * D; idx += blockDim.x) {
      const int r = idx / D, d = idx % D;
      const int64_t kj = k0 + r;
      const bool in = kj < Tk;
      Ks[r * L::ldh + d] = to_tc<TC>(in ? a.k[kj * C + col + d] : 0.0f);
      Vs[r * L::ldh + d] = to_tc<TC>(in ? a.v[kj * C + col + d] : 0.0f);
    }
    __syncthreads();

    // S (16 x 64 per warp) = Q (16 x D) · Kᵀ (D x 64).
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> sf[kBc / 16];
#pragma unroll
    for (int n = 0; n < kBc / 16; ++n) wmma::fill_fragment(sf[n], 0.0f);
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, TC, wmma::row_major> qf;
      wmma::load_matrix_sync(qf, Qs + (warp * 16) * L::ldh + kk * 16, L::ldh);
#pragma unroll
      for (int n = 0; n < kBc / 16; ++n) {
        // Kᵀ's element (d, j) is K[j][d]: K's rows read as a column-major matrix.
        wmma::fragment<wmma::matrix_b, 16, 16, 16, TC, wmma::col_major> kf;
        wmma::load_matrix_sync(kf, Ks + (n * 16) * L::ldh + kk * 16, L::ldh);
        wmma::mma_sync(sf[n], qf, kf, sf[n]);
      }
    }
#pragma unroll
    for (int n = 0; n < kBc / 16; ++n)
      wmma::store_matrix_sync(S + (warp * 16) * L::lds + n * 16, sf[n], L::lds, wmma::mem_row_major);
    __syncwarp();

    // Online softmax of the warp's 16 rows; lane l takes columns l and l + 32.
    for (int rr = 0; rr < 16; ++rr) {
      const int r = warp * 16 + rr;
      const int64_t limit = a.past + q0 + r;  // the last key query q0 + r may see
      float s[2];
#pragma unroll
      for (int c2 = 0; c2 < 2; ++c2) {
        const int c = lane + 32 * c2;
        const int64_t j = k0 + c;
        s[c2] = (j <= limit && j < Tk) ? S[r * L::lds + c] * a.scale : -INFINITY;
      }
      const float m_old = Mrow[r];
      const float m_new = fmaxf(m_old, warp_max(fmaxf(s[0], s[1])));
      float psum = 0.0f;
#pragma unroll
      for (int c2 = 0; c2 < 2; ++c2) {
        const float p = m_new == -INFINITY ? 0.0f : expf(s[c2] - m_new);
        P[r * L::ldp + lane + 32 * c2] = to_tc<TC>(p);
        psum += p;
      }
      psum = warp_sum(psum);
      const float alpha = m_old == -INFINITY ? 0.0f : expf(m_old - m_new);
      for (int d = lane; d < D; d += 32) O[r * L::ldo + d] *= alpha;
      __syncwarp();  // every lane has read Mrow[r] before lane 0 replaces it
      if (lane == 0) {
        Mrow[r] = m_new;
        Lrow[r] = Lrow[r] * alpha + psum;
      }
    }
    __syncwarp();

    // O (16 x D per warp) += P (16 x 64) · V (64 x D).
#pragma unroll
    for (int n = 0; n < D / 16; ++n) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> of;
      wmma::load_matrix_sync(of, O + (warp * 16) * L::ldo + n * 16, L::ldo, wmma::mem_row_major);
#pragma unroll
      for (int kk = 0; kk < kBc / 16; ++kk) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, TC, wmma::row_major> pf;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, TC, wmma::row_major> vf;
        wmma::load_matrix_sync(pf, P + (warp * 16) * L::ldp + kk * 16, L::ldp);
        wmma::load_matrix_sync(vf, Vs + (kk * 16) * L::ldh + n * 16, L::ldh);
        wmma::mma_sync(of, pf, vf, of);
      }
      wmma::store_matrix_sync(O + (warp * 16) * L::ldo + n * 16, of, L::ldo, wmma::mem_row_major);
    }
    __syncwarp();
  }

  // out = O / l for the warp's real rows.
  for (int rr = 0; rr < 16; ++rr) {
    const int r = warp * 16 + rr;
    const int64_t qi = q0 + r;
    if (qi >= T) break;
    const float inv = 1.0f / Lrow[r];
    for (int d = lane; d < D; d += 32) a.out[qi * C + col + d] = O[r * L::ldo + d] * inv;
  }
}

template <class TC, int D>
void launch_flash(const AttnArgs& a, cudaStream_t stream) {
  using L = FlashSmem<D>;
  static const bool configured = [] {
    STRAND_CUDA(cudaFuncSetAttribute(attention_flash_kernel<TC, D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     int(L::bytes)));
    return true;
  }();
  (void)configured;
  const dim3 grid(unsigned((a.T + kBr - 1) / kBr), unsigned(a.H));
  attention_flash_kernel<TC, D><<<grid, kFlashWarps * 32, L::bytes, stream>>>(a);
  STRAND_CUDA_LAUNCHED("attention_flash");
}

template <class TC>
void flash_for(const AttnArgs& a, cudaStream_t stream) {
  switch (a.D) {
    case 16: launch_flash<TC, 16>(a, stream); break;
    case 32: launch_flash<TC, 32>(a, stream); break;
    case 48: launch_flash<TC, 48>(a, stream); break;
    case 64: launch_flash<TC, 64>(a, stream); break;
    case 80: launch_flash<TC, 80>(a, stream); break;
    case 96: launch_flash<TC, 96>(a, stream); break;
    case 112: launch_flash<TC, 112>(a, stream); break;
    case 128: launch_flash<TC, 128>(a, stream); break;
    default: cuda_fail("attention_flash", 0, "head size not a multiple of 16 up to 128", __FILE__, __LINE__);
  }
}

}  // namespace

void attention_f32(const AttnArgs& a, cudaStream_t stream) {
  if (a.T == 0 || a.H == 0 || a.D == 0 || a.seqs == 0) return;
  if (a.T > 65535 || a.seqs > 65535) cuda_fail("attention_f32", 0, "more than 65535 queries or sequences", __FILE__, __LINE__);
  const dim3 grid(unsigned(a.H), unsigned(a.T), unsigned(a.seqs));
  const int threads = kF32Warps * 32;
  if (a.D <= 32) attention_f32_kernel<1><<<grid, threads, 0, stream>>>(a);
  else if (a.D <= 64) attention_f32_kernel<2><<<grid, threads, 0, stream>>>(a);
  else if (a.D <= 128) attention_f32_kernel<4><<<grid, threads, 0, stream>>>(a);
  else if (a.D <= kAttnMaxD) attention_f32_kernel<8><<<grid, threads, 0, stream>>>(a);
  else cuda_fail("attention_f32", 0, "head size above 256", __FILE__, __LINE__);
  STRAND_CUDA_LAUNCHED("attention_f32");
}

bool attention_flash_fits(int64_t D) { return D > 0 && D % 16 == 0 && D <= kFlashMaxD; }

void attention_flash(const AttnArgs& a, Elem tc, cudaStream_t stream) {
  if (a.T == 0 || a.H == 0) return;
  if (a.seqs != 1) cuda_fail("attention_flash", 0, "one sequence at a time", __FILE__, __LINE__);
  if (tc == Elem::BF16)
    flash_for<__nv_bfloat16>(a, stream);
  else
    flash_for<__half>(a, stream);
}

}  // namespace strand::cuda
