// The forward pass's bias and activation: Y = act(Z + b) in one pass after the
// product Z = X W (gelu also writes Z + b back into Z, the array its backward reads).
//
// Entry points (extern "C"), for each activation A in {relu, gelu, tanh} and dtype
// suffix S in {f64, f32, f16, bf16}: bias_act_A_S.

#include "element_types.cuh"
#include "activations.cuh"

// Forward: y = act(z + b) over the n = rows * m elements of the C-contiguous z (row length m);
// with write_z, z = z + b as well (gelu's backward reads it). vec: m and all three addresses
// are multiples of 16 bytes, so each thread takes whole 16-byte groups of one row. z + b and the
// activation are computed in the accumulator type and rounded once. y may be z itself.
template <class Tr, int ACT>
__device__ __forceinline__ void bias_act(typename Tr::T* z, const typename Tr::T* b, typename Tr::T* y, i64 n, i64 m,
                                         int has_bias, int vec, int write_z)
{
    typedef typename Tr::Acc Acc;
    typedef typename Tr::V V;
    enum { VEC = Tr::VEC };
    const i64 step = (i64)gridDim.x * blockDim.x;
    if (vec) {
        for (i64 g = (i64)blockIdx.x * blockDim.x + threadIdx.x; g < n / VEC; g += step) {
            const i64 e = g * VEC;
            Acc v[VEC], w[VEC];
            Tr::unpack(*reinterpret_cast<const V*>(z + e), v);
            if (has_bias) {
                Tr::unpack(*reinterpret_cast<const V*>(b + e % m), w);
#pragma unroll
                for (int i = 0; i < VEC; ++i) v[i] = gpudense_add(v[i], w[i]);
            }
#pragma unroll
            for (int i = 0; i < VEC; ++i) w[i] = gpudense_act<ACT>(v[i]);
            if (write_z) *reinterpret_cast<V*>(z + e) = Tr::pack(v);
            *reinterpret_cast<V*>(y + e) = Tr::pack(w);
        }
    } else {
        for (i64 e = (i64)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += step) {
            Acc v = Tr::to_acc(z[e]);
            if (has_bias) v = gpudense_add(v, Tr::to_acc(b[e % m]));
            if (write_z) z[e] = Tr::from_acc(v);
            y[e] = Tr::from_acc(gpudense_act<ACT>(v));
        }
    }
}

// --- entry points: one per activation and dtype ---

#define GPUDENSE_BIAS_ACT(NAME, TR, ACT)                                                                 \
    extern "C" __global__ void __launch_bounds__(GPUDENSE_BLOCK)                                         \
        NAME(TR::T* z, const TR::T* b, TR::T* y, i64 n, i64 m, int has_bias, int vec, int write_z)       \
    {                                                                                                    \
        bias_act<TR, ACT>(z, b, y, n, m, has_bias, vec, write_z);                                        \
    }

GPUDENSE_BIAS_ACT(bias_act_relu_f64, TraitsF64, ACT_RELU)
GPUDENSE_BIAS_ACT(bias_act_gelu_f64, TraitsF64, ACT_GELU)
GPUDENSE_BIAS_ACT(bias_act_tanh_f64, TraitsF64, ACT_TANH)

GPUDENSE_BIAS_ACT(bias_act_relu_f32, TraitsF32, ACT_RELU)
GPUDENSE_BIAS_ACT(bias_act_gelu_f32, TraitsF32, ACT_GELU)
GPUDENSE_BIAS_ACT(bias_act_tanh_f32, TraitsF32, ACT_TANH)

GPUDENSE_BIAS_ACT(bias_act_relu_f16, TraitsF16, ACT_RELU)
GPUDENSE_BIAS_ACT(bias_act_gelu_f16, TraitsF16, ACT_GELU)
GPUDENSE_BIAS_ACT(bias_act_tanh_f16, TraitsF16, ACT_TANH)

GPUDENSE_BIAS_ACT(bias_act_relu_bf16, TraitsBF16, ACT_RELU)
GPUDENSE_BIAS_ACT(bias_act_gelu_bf16, TraitsBF16, ACT_GELU)
GPUDENSE_BIAS_ACT(bias_act_tanh_bf16, TraitsBF16, ACT_TANH)
