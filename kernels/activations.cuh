// The activations, as gpudense/activation_math.py computes them, operation by
// operation and in its order, each multiply and add rounded on its own, so the
// results equal NumPy's float32 formula bit for bit wherever tanh agrees; shared by
// the fused gradient (act_bias_grad.cu) and the forward pass (bias_act.cu).
//
// The GELU constants come from the compiler's command line (gpudense/activation_math.py,
// through gpudense.backends.cuda.loader.kernel_defines()):
//
//   GPUDENSE_GELU_C        sqrt(2/pi)
//   GPUDENSE_GELU_A        0.044715
//   GPUDENSE_GELU_CLIP     10: t = tanh(c (z + a z^3)) is computed on z clipped to [-10, 10]

#pragma once

#include "element_types.cuh"

#ifndef GPUDENSE_GELU_C
#error "GPUDENSE_GELU_C is not defined: compile with the options of gpudense.backends.cuda.loader.kernel_defines()"
#endif
#ifndef GPUDENSE_GELU_A
#error "GPUDENSE_GELU_A is not defined: compile with the options of gpudense.backends.cuda.loader.kernel_defines()"
#endif
#ifndef GPUDENSE_GELU_CLIP
#error "GPUDENSE_GELU_CLIP is not defined: compile with the options of gpudense.backends.cuda.loader.kernel_defines()"
#endif

enum { ACT_RELU = 0, ACT_GELU = 1, ACT_TANH = 2 };

// t = tanh(c * (zc + a zc^3)) for zc already clipped, as activation_math._gelu_t.
template <class A>
__device__ __forceinline__ A gpudense_gelu_t(A zc)
{
    A t = gpudense_mul(zc, zc);
    t = gpudense_mul(t, (A)GPUDENSE_GELU_A);
    t = gpudense_add(t, (A)1);
    t = gpudense_mul(t, zc);
    t = gpudense_mul(t, (A)GPUDENSE_GELU_C);
    return gpudense_tanh(t);
}

// v > 0, subnormals included: a float32 compare would flush them under -ftz=true, its bits do not.
__device__ __forceinline__ bool gpudense_positive(float v) { return (int)__float_as_uint(v) > 0 && v == v; }
__device__ __forceinline__ bool gpudense_positive(double v) { return v > 0.0; }

// z clipped to [-CLIP, CLIP]; NaN stays NaN, as numpy.clip.
template <class A>
__device__ __forceinline__ A gpudense_clip(A z)
{
    return z < (A)(-GPUDENSE_GELU_CLIP) ? (A)(-GPUDENSE_GELU_CLIP) : (z > (A)GPUDENSE_GELU_CLIP ? (A)GPUDENSE_GELU_CLIP : z);
}

// y = act(v).
template <int ACT, class A>
__device__ __forceinline__ A gpudense_act(A v)
{
    if (ACT == ACT_RELU) {
        return (gpudense_positive(v) || v != v) ? v : (A)0;  // as numpy.maximum(v, 0): NaN kept, -0.0 -> +0.0
    } else if (ACT == ACT_TANH) {
        return gpudense_tanh(v);
    } else {
        A y = gpudense_add(gpudense_gelu_t(gpudense_clip(v)), (A)1);
        y = gpudense_mul(y, (A)0.5);
        return gpudense_mul(y, v);
    }
}

// dz = g * act'(.) from the saved value s (y for relu and tanh, z for gelu).
template <int ACT, class A>
__device__ __forceinline__ A gpudense_act_grad(A s, A g)
{
    if (ACT == ACT_RELU) {
        return gpudense_mul(g, gpudense_positive(s) ? (A)1 : (A)0);
    } else if (ACT == ACT_TANH) {
        A d = gpudense_mul(s, s);
        d = gpudense_sub(d, (A)1);
        d = gpudense_mul(d, g);
        return gpudense_mul(d, (A)-1);  // exact, and no flush of a subnormal d
    } else {
        const A zc = gpudense_clip(s);
        const A t = gpudense_gelu_t(zc);
        A p = gpudense_mul(zc, zc);
        p = gpudense_mul(p, (A)(3.0 * GPUDENSE_GELU_A));
        p = gpudense_add(p, (A)1);
        p = gpudense_mul(p, (A)(0.5 * GPUDENSE_GELU_C));
        p = gpudense_mul(p, zc);
        A q = gpudense_mul(t, t);
        q = gpudense_sub(q, (A)1);
        p = gpudense_mul(p, q);
        A d = gpudense_add(t, (A)1);
        d = gpudense_mul(d, (A)0.5);
        d = gpudense_sub(d, p);
        return gpudense_mul(d, g);
    }
}
