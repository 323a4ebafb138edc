// The fused activation gradient: pass 1 of bias_grad.cu's two passes with the
// activation's derivative applied on the way.
//
//   dZ[k, j] = dY[k, j] * act'(S[k, j]),   db[j] = sum over k of dZ[k, j]
//
// reading dY and the saved array S (y for relu and tanh, z for gelu) once and
// writing dZ once; db sums dZ as stored (rounded to its type), in the order of
// bias_grad_pass1 (see bias_grad.cu); when the batch is split, bias_grad_pass2_S
// finishes db.
//
// Entry points (extern "C"), for each activation A in {relu, gelu, tanh} and dtype
// suffix S in {f64, f32, f16, bf16}: act_bias_grad_A_S.

#include "element_types.cuh"
#include "column_sums.cuh"
#include "activations.cuh"

// Fused pass 1: dz = dy * act'(s), stored, and its column sums as bias_grad_pass1 forms them.
// dy, s and dz share one layout: row pitch ld, the same address modulo 16 bytes (the launch
// code makes sure), so the plan's head and vector path hold for all three. The UNROLL rows'
// loads of both inputs are issued before the first add, as in bias_grad_pass1; the sums run
// over the rounded dz (what is stored), row by row in the same order.
template <class Tr, int ACT>
__device__ __forceinline__ void act_bias_grad_pass1(const typename Tr::T* __restrict__ dy,
                                                    const typename Tr::T* __restrict__ sv,
                                                    typename Tr::T* __restrict__ dz, i64 batch, i64 m, i64 ld,
                                                    i64 chunk_rows, int head, int vec_path, typename Tr::Acc* ws,
                                                    typename Tr::T* out, int final_pass, int accumulate)
{
    typedef typename Tr::T T;
    typedef typename Tr::Acc Acc;
    typedef typename Tr::V V;
    enum { VEC = Tr::VEC, UNROLL = GPUDENSE_UNROLL / 2 > 0 ? GPUDENSE_UNROLL / 2 : 1 };
    __shared__ Acc sm[GPUDENSE_BLOCK * VEC];

    const int tx = threadIdx.x, ty = threadIdx.y;
    const int TX = blockDim.x, TY = blockDim.y;
    const i64 tile0 = (i64)blockIdx.x * TX * VEC - (vec_path ? head : 0);
    const i64 c_first = vec_path ? tile0 + (i64)tx * VEC : tile0 + tx;
    const i64 c_step = vec_path ? 1 : TX;
    const i64 row_begin = (i64)blockIdx.y * chunk_rows;
    const i64 row_end = min(batch, row_begin + chunk_rows);
    const i64 stride = (i64)TY * ld;
    i64 r = row_begin + ty;

    Acc acc[VEC];
#pragma unroll
    for (int i = 0; i < VEC; ++i) acc[i] = Acc(0);

    if (vec_path && c_first >= 0 && c_first + VEC <= m) {
        i64 off = r * ld + c_first;
        for (; r + (UNROLL - 1) * (i64)TY < row_end; r += UNROLL * (i64)TY) {
            V g[UNROLL], h[UNROLL];
#pragma unroll
            for (int u = 0; u < UNROLL; ++u) {
                g[u] = __ldcs(reinterpret_cast<const V*>(dy + off + u * stride));
                h[u] = __ldcs(reinterpret_cast<const V*>(sv + off + u * stride));
            }
#pragma unroll
            for (int u = 0; u < UNROLL; ++u) {
                Acc a[VEC], b[VEC];
                Tr::unpack(g[u], a);
                Tr::unpack(h[u], b);
#pragma unroll
                for (int i = 0; i < VEC; ++i) a[i] = Tr::to_acc(Tr::from_acc(gpudense_act_grad<ACT>(b[i], a[i])));
                *reinterpret_cast<V*>(dz + off + u * stride) = Tr::pack(a);
#pragma unroll
                for (int i = 0; i < VEC; ++i) acc[i] = gpudense_add(acc[i], a[i]);
            }
            off += UNROLL * stride;
        }
        for (; r < row_end; r += TY) {
            Acc a[VEC], b[VEC];
            Tr::unpack(__ldcs(reinterpret_cast<const V*>(dy + off)), a);
            Tr::unpack(__ldcs(reinterpret_cast<const V*>(sv + off)), b);
#pragma unroll
            for (int i = 0; i < VEC; ++i) a[i] = Tr::to_acc(Tr::from_acc(gpudense_act_grad<ACT>(b[i], a[i])));
            *reinterpret_cast<V*>(dz + off) = Tr::pack(a);
#pragma unroll
            for (int i = 0; i < VEC; ++i) acc[i] = gpudense_add(acc[i], a[i]);
            off += stride;
        }
    } else {
        bool ok[VEC];
        int any = 0;
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
            const i64 c = c_first + i * c_step;
            ok[i] = c >= 0 && c < m;
            any |= ok[i];
        }
        if (any) {
            i64 off = r * ld + c_first;
            for (; r < row_end; r += TY) {
#pragma unroll
                for (int i = 0; i < VEC; ++i) {
                    if (ok[i]) {
                        const i64 e = off + i * c_step;
                        const T d = Tr::from_acc(gpudense_act_grad<ACT>(Tr::to_acc(__ldcs(sv + e)),
                                                                        Tr::to_acc(__ldcs(dy + e))));
                        dz[e] = d;
                        acc[i] = gpudense_add(acc[i], Tr::to_acc(d));
                    }
                }
                off += stride;
            }
        }
    }

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

// --- entry points: one per activation and dtype ---

#define GPUDENSE_ACT_GRAD(NAME, TR, ACT)                                                                      \
    extern "C" __global__ void __launch_bounds__(GPUDENSE_BLOCK)                                              \
        NAME(const TR::T* __restrict__ dy, const TR::T* __restrict__ sv, TR::T* __restrict__ dz, i64 batch,   \
             i64 m, i64 ld, i64 chunk_rows, int head, int vec_path, TR::Acc* ws, TR::T* out, int final_pass,  \
             int accumulate)                                                                                  \
    {                                                                                                         \
        act_bias_grad_pass1<TR, ACT>(dy, sv, dz, batch, m, ld, chunk_rows, head, vec_path, ws, out,          \
                                     final_pass, accumulate);                                                 \
    }

GPUDENSE_ACT_GRAD(act_bias_grad_relu_f64, TraitsF64, ACT_RELU)
GPUDENSE_ACT_GRAD(act_bias_grad_gelu_f64, TraitsF64, ACT_GELU)
GPUDENSE_ACT_GRAD(act_bias_grad_tanh_f64, TraitsF64, ACT_TANH)

GPUDENSE_ACT_GRAD(act_bias_grad_relu_f32, TraitsF32, ACT_RELU)
GPUDENSE_ACT_GRAD(act_bias_grad_gelu_f32, TraitsF32, ACT_GELU)
GPUDENSE_ACT_GRAD(act_bias_grad_tanh_f32, TraitsF32, ACT_TANH)

GPUDENSE_ACT_GRAD(act_bias_grad_relu_f16, TraitsF16, ACT_RELU)
GPUDENSE_ACT_GRAD(act_bias_grad_gelu_f16, TraitsF16, ACT_GELU)
GPUDENSE_ACT_GRAD(act_bias_grad_tanh_f16, TraitsF16, ACT_TANH)

GPUDENSE_ACT_GRAD(act_bias_grad_relu_bf16, TraitsBF16, ACT_RELU)
GPUDENSE_ACT_GRAD(act_bias_grad_gelu_bf16, TraitsBF16, ACT_GELU)
GPUDENSE_ACT_GRAD(act_bias_grad_tanh_bf16, TraitsBF16, ACT_TANH)
