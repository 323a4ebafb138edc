// Deterministic column sums of dY: the bias gradient db of a dense layer.
//
//   db[j] = sum over k of dY[k, j],  dY of shape (batch, m), row pitch `ld` elements
//
// Two passes, no floating-point atomics; the summation order of every column
// depends only on (batch, m, dtype, number of SMs), through the launch plan that
// gpudense.backends.cuda.plan.bias_grad_plan computes on the host:
//
//   pass 1: grid (column tiles, batch chunks), block (TX, TY) = 256 threads.
//           Thread (tx, ty) of chunk c sums, for its columns, the rows
//           c*chunk_rows + ty, + TY, + 2 TY, ... (in that order) in the
//           accumulator type; the TY partial sums of a column are then added
//           in a fixed tree (ty += ty + s for s = TY/2, ..., 1) in shared
//           memory. The block's sum goes to workspace[c, j] or, when there is
//           one chunk only, straight to db (final_pass = 1).
//   pass 2: grid (column tiles of TX2), block (TX2, TY2) = 256 threads.
//           Thread (tx, ty) sums workspace[ty, j], [ty + TY2, j], ... in
//           order, then a fixed tree over ty as in pass 1, and writes
//           db[j] = s (or db[j] = db[j] + s with accumulate = 1), rounded once.
//
// Each thread owns VEC = GPUDENSE_VECTOR_BYTES / sizeof(T) columns of a tile TX * VEC wide.
// Vector path (vec_path = 1: row pitch a multiple of 16 bytes): the tile's
// columns start `head` elements before the tile edge, so that every row's
// VEC-column group begins on a 16-byte boundary, and a thread whose VEC
// columns all lie in [0, m) loads them as one 16-byte vector. A thread whose
// group straddles column 0 or m (head, tail) loads its in-range columns one by
// one. Scalar path (vec_path = 0, any pitch): thread tx owns columns
// tile + tx, + TX, + 2 TX, ..., so each warp-wide load is still coalesced.
// GPUDENSE_UNROLL rows' loads are issued before the first add (several loads in flight).
// All indexing is 64-bit: batch * m may exceed 2^31.
//
// Entry points (extern "C"), for each dtype suffix S in {f64, f32, f16, bf16}:
// bias_grad_pass1_S and bias_grad_pass2_S (pass 2 also finishes the fused
// gradient of act_bias_grad.cu). The element types, the -D options they need and
// the arithmetic are element_types.cuh's; the reduction tree column_sums.cuh's.

#include "element_types.cuh"
#include "column_sums.cuh"

template <class Tr>
__device__ __forceinline__ void bias_grad_pass1(const typename Tr::T* __restrict__ dy, i64 batch, i64 m, i64 ld,
                                                i64 chunk_rows, int head, int vec_path, typename Tr::Acc* ws,
                                                typename Tr::T* out, int final_pass, int accumulate)
{
    typedef typename Tr::T T;
    typedef typename Tr::Acc Acc;
    typedef typename Tr::V V;
    enum { VEC = Tr::VEC };
    __shared__ Acc sm[GPUDENSE_BLOCK * VEC];

    const int tx = threadIdx.x, ty = threadIdx.y;
    const int TX = blockDim.x, TY = blockDim.y;

    // This thread's columns: c_first + i * c_step, i < VEC (some may lie outside [0, m)).
    const i64 tile0 = (i64)blockIdx.x * TX * VEC - (vec_path ? head : 0);
    const i64 c_first = vec_path ? tile0 + (i64)tx * VEC : tile0 + tx;
    const i64 c_step = vec_path ? 1 : TX;

    const i64 row_begin = (i64)blockIdx.y * chunk_rows;
    const i64 row_end = min(batch, row_begin + chunk_rows);
    const i64 stride = (i64)TY * ld;  // elements between this thread's successive rows
    i64 r = row_begin + ty;

    Acc acc[VEC];
#pragma unroll
    for (int i = 0; i < VEC; ++i) acc[i] = Acc(0);

    if (vec_path && c_first >= 0 && c_first + VEC <= m) {
        // 16-byte loads: dy + r * ld + c_first is 16-byte aligned by the plan's choice of head.
        const T* p = dy + r * ld + c_first;
        for (; r + (GPUDENSE_UNROLL - 1) * (i64)TY < row_end; r += GPUDENSE_UNROLL * (i64)TY) {
            V v[GPUDENSE_UNROLL];
#pragma unroll
            for (int u = 0; u < GPUDENSE_UNROLL; ++u) v[u] = __ldcs(reinterpret_cast<const V*>(p + u * stride));
#pragma unroll
            for (int u = 0; u < GPUDENSE_UNROLL; ++u) {
                Acc a[VEC];
                Tr::unpack(v[u], a);
#pragma unroll
                for (int i = 0; i < VEC; ++i) acc[i] = gpudense_add(acc[i], a[i]);
            }
            p += GPUDENSE_UNROLL * stride;
        }
        for (; r < row_end; r += TY) {
            Acc a[VEC];
            Tr::unpack(__ldcs(reinterpret_cast<const V*>(p)), a);
#pragma unroll
            for (int i = 0; i < VEC; ++i) acc[i] = gpudense_add(acc[i], a[i]);
            p += stride;
        }
    } else {
        // Element loads, each column guarded; used for the scalar path and for
        // the head and tail groups of the vector path.
        bool ok[VEC];
        int any = 0;
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
            const i64 c = c_first + i * c_step;
            ok[i] = c >= 0 && c < m;
            any |= ok[i];
        }
        if (any) {
            const T* p = dy + r * ld + c_first;
            for (; r + (GPUDENSE_UNROLL - 1) * (i64)TY < row_end; r += GPUDENSE_UNROLL * (i64)TY) {
                T v[GPUDENSE_UNROLL][VEC];
#pragma unroll
                for (int u = 0; u < GPUDENSE_UNROLL; ++u) {
#pragma unroll
                    for (int i = 0; i < VEC; ++i) {
                        v[u][i] = ok[i] ? __ldcs(p + u * stride + i * c_step) : T(0);
                    }
                }
#pragma unroll
                for (int u = 0; u < GPUDENSE_UNROLL; ++u) {
#pragma unroll
                    for (int i = 0; i < VEC; ++i) {
                        if (ok[i]) acc[i] = gpudense_add(acc[i], Tr::to_acc(v[u][i]));
                    }
                }
                p += GPUDENSE_UNROLL * stride;
            }
            for (; r < row_end; r += TY) {
#pragma unroll
                for (int i = 0; i < VEC; ++i) {
                    if (ok[i]) acc[i] = gpudense_add(acc[i], Tr::to_acc(__ldcs(p + i * c_step)));
                }
                p += stride;
            }
        }
    }

    // Fixed-order reduction of the TY partial sums of each column.
#pragma unroll
    for (int i = 0; i < VEC; ++i) sm[(ty * VEC + i) * TX + tx] = acc[i];
    __syncthreads();
    gpudense_tree<Acc, VEC>(sm, tx, ty, TX, TY);

    if (ty == 0) {
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
            const i64 c = c_first + i * c_step;
            if (c >= 0 && c < m) {
                const Acc s = sm[i * TX + tx];
                if (final_pass) {
                    gpudense_store<Tr>(out, c, s, accumulate);
                } else {
                    ws[(i64)blockIdx.y * m + c] = s;
                }
            }
        }
    }
}

template <class Tr>
__device__ __forceinline__ void bias_grad_pass2(const typename Tr::Acc* ws, i64 n_chunks, i64 m, typename Tr::T* out,
                                                int accumulate)
{
    typedef typename Tr::Acc Acc;
    __shared__ Acc sm[GPUDENSE_BLOCK];

    const int tx = threadIdx.x, ty = threadIdx.y;
    const int TX = blockDim.x, TY = blockDim.y;
    const i64 c = (i64)blockIdx.x * TX + tx;

    Acc acc = Acc(0);
    if (c < m) {
        const i64 step = (i64)TY * m;
        const Acc* p = ws + (i64)ty * m + c;
        i64 k = ty;
        for (; k + (GPUDENSE_UNROLL - 1) * (i64)TY < n_chunks; k += GPUDENSE_UNROLL * (i64)TY) {
            Acc v[GPUDENSE_UNROLL];
#pragma unroll
            for (int u = 0; u < GPUDENSE_UNROLL; ++u) v[u] = p[u * step];
#pragma unroll
            for (int u = 0; u < GPUDENSE_UNROLL; ++u) acc = gpudense_add(acc, v[u]);
            p += GPUDENSE_UNROLL * step;
        }
        for (; k < n_chunks; k += TY) {
            acc = gpudense_add(acc, *p);
            p += step;
        }
    }
    sm[ty * TX + tx] = acc;
    __syncthreads();
    gpudense_tree<Acc, 1>(sm, tx, ty, TX, TY);
    if (ty == 0 && c < m) {
        gpudense_store<Tr>(out, c, sm[tx], accumulate);
    }
}

// --- entry points: one per dtype and pass ---

#define GPUDENSE_PASS1(NAME, TR)                                                                              \
    extern "C" __global__ void __launch_bounds__(GPUDENSE_BLOCK)                                              \
        NAME(const TR::T* __restrict__ dy, i64 batch, i64 m, i64 ld, i64 chunk_rows, int head, int vec_path, \
             TR::Acc* ws, TR::T* out, int final_pass, int accumulate)                                        \
    {                                                                                                         \
        bias_grad_pass1<TR>(dy, batch, m, ld, chunk_rows, head, vec_path, ws, out, final_pass, accumulate); \
    }

#define GPUDENSE_PASS2(NAME, TR)                                                                  \
    extern "C" __global__ void __launch_bounds__(GPUDENSE_BLOCK)                                  \
        NAME(const TR::Acc* ws, i64 n_chunks, i64 m, TR::T* out, int accumulate)                  \
    {                                                                                             \
        bias_grad_pass2<TR>(ws, n_chunks, m, out, accumulate);                                    \
    }

GPUDENSE_PASS1(bias_grad_pass1_f64, TraitsF64)
GPUDENSE_PASS2(bias_grad_pass2_f64, TraitsF64)

GPUDENSE_PASS1(bias_grad_pass1_f32, TraitsF32)
GPUDENSE_PASS2(bias_grad_pass2_f32, TraitsF32)

GPUDENSE_PASS1(bias_grad_pass1_f16, TraitsF16)
GPUDENSE_PASS2(bias_grad_pass2_f16, TraitsF16)

GPUDENSE_PASS1(bias_grad_pass1_bf16, TraitsBF16)
GPUDENSE_PASS2(bias_grad_pass2_bf16, TraitsBF16)
