// The element types the kernels take and the arithmetic they do on them, shared by
// bias_grad.cu, act_bias_grad.cu and bias_act.cu.
//
// float64 accumulates in float64, float32 in float32, float16 and bfloat16 in
// float32 (their values are raw 16-bit patterns: float16 converted with cvt,
// bfloat16 by shifting into the top half of a float32 and rounding to nearest
// even on the way back, so no header is needed: nvcc or NVRTC compile the files
// as they are, given the -D options below). A 16-byte load carries 8 of them.
// Every float32 and float64 add, subtract and multiply is rounded on its own
// (add.rn/mul.rn: no fused multiply-add, no flush to zero under CuPy's -ftz=true).
//
// The constants shared with the launch plan come from the compiler's command
// line, as gpudense.backends.cuda.loader.kernel_defines() gives them (e.g.
// -DGPUDENSE_BLOCK=256 -DGPUDENSE_UNROLL=4 -DGPUDENSE_VECTOR_BYTES=16); they
// are defined in gpudense/backends/cuda/plan.py and nowhere else:
//
//   GPUDENSE_BLOCK         threads per block
//   GPUDENSE_UNROLL        rows loaded before the first add, per thread
//   GPUDENSE_VECTOR_BYTES  bytes per vector load (the size of V below: 16)

#pragma once

#ifndef GPUDENSE_BLOCK
#error "GPUDENSE_BLOCK is not defined: compile with the options of gpudense.backends.cuda.loader.kernel_defines()"
#endif
#ifndef GPUDENSE_UNROLL
#error "GPUDENSE_UNROLL is not defined: compile with the options of gpudense.backends.cuda.loader.kernel_defines()"
#endif
#ifndef GPUDENSE_VECTOR_BYTES
#error "GPUDENSE_VECTOR_BYTES is not defined: compile with the options of gpudense.backends.cuda.loader.kernel_defines()"
#endif

typedef long long i64;

#ifndef GPUDENSE_HOST_EMULATION
__device__ __forceinline__ float gpudense_h2f(unsigned short h)
{
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ unsigned short gpudense_f2h(float f)
{
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

// CuPy builds every RawModule with -ftz=true, which turns float32 additions
// into add.ftz.f32 and flushes subnormal inputs and partial sums to zero.
// add.rn.f32 keeps them: float32 sums follow IEEE, as NumPy and
// emulate_bias_grad do, also for the tiniest gradients.
__device__ __forceinline__ float gpudense_add(float a, float b)
{
    float c;
    asm("add.rn.f32 %0, %1, %2;" : "=f"(c) : "f"(a), "f"(b));
    return c;
}

__device__ __forceinline__ float gpudense_sub(float a, float b)
{
    float c;
    asm("sub.rn.f32 %0, %1, %2;" : "=f"(c) : "f"(a), "f"(b));
    return c;
}

__device__ __forceinline__ float gpudense_mul(float a, float b)
{
    float c;
    asm("mul.rn.f32 %0, %1, %2;" : "=f"(c) : "f"(a), "f"(b));
    return c;
}

// double: no flush to zero; the _rn intrinsics keep each operation rounded on its own.
__device__ __forceinline__ double gpudense_add(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ double gpudense_sub(double a, double b) { return __dsub_rn(a, b); }
__device__ __forceinline__ double gpudense_mul(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float gpudense_tanh(float a) { return tanhf(a); }
__device__ __forceinline__ double gpudense_tanh(double a) { return tanh(a); }
#else
inline float gpudense_add(float a, float b) { return a + b; }
inline float gpudense_sub(float a, float b) { return a - b; }
inline float gpudense_mul(float a, float b) { return a * b; }
inline double gpudense_add(double a, double b) { return a + b; }
inline double gpudense_sub(double a, double b) { return a - b; }
inline double gpudense_mul(double a, double b) { return a * b; }
#endif  // the host emulation (tests/kernel_build.py) supplies gpudense_h2f/f2h, gpudense_tanh,
        // __float_as_uint and __uint_as_float

// bfloat16 <-> float32: the top half of the float32's bits; rounding to nearest even (NaN kept quiet).
__device__ __forceinline__ float gpudense_bf2f(unsigned short h) { return __uint_as_float((unsigned int)h << 16); }

__device__ __forceinline__ unsigned short gpudense_f2bf(float f)
{
    const unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        return (unsigned short)((u >> 16) | 0x0040u);
    }
    return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// --- per-dtype traits: storage type T, accumulator Acc, 16-byte vector V ---

struct TraitsF64 {
    typedef double T;
    typedef double Acc;
    typedef double2 V;
    enum { VEC = GPUDENSE_VECTOR_BYTES / sizeof(T) };
    static_assert(sizeof(V) == GPUDENSE_VECTOR_BYTES, "GPUDENSE_VECTOR_BYTES must be the size of double2");
    static __device__ __forceinline__ Acc to_acc(T v) { return v; }
    static __device__ __forceinline__ T from_acc(Acc v) { return v; }
    static __device__ __forceinline__ void unpack(const V& v, Acc (&a)[VEC])
    {
        a[0] = v.x;
        a[1] = v.y;
    }
    static __device__ __forceinline__ V pack(const Acc (&a)[VEC])
    {
        V v;
        v.x = a[0];
        v.y = a[1];
        return v;
    }
};

struct TraitsF32 {
    typedef float T;
    typedef float Acc;
    typedef float4 V;
    enum { VEC = GPUDENSE_VECTOR_BYTES / sizeof(T) };
    static_assert(sizeof(V) == GPUDENSE_VECTOR_BYTES, "GPUDENSE_VECTOR_BYTES must be the size of float4");
    static __device__ __forceinline__ Acc to_acc(T v) { return v; }
    static __device__ __forceinline__ T from_acc(Acc v) { return v; }
    static __device__ __forceinline__ void unpack(const V& v, Acc (&a)[VEC])
    {
        a[0] = v.x;
        a[1] = v.y;
        a[2] = v.z;
        a[3] = v.w;
    }
    static __device__ __forceinline__ V pack(const Acc (&a)[VEC])
    {
        V v;
        v.x = a[0];
        v.y = a[1];
        v.z = a[2];
        v.w = a[3];
        return v;
    }
};

// float16 and bfloat16: 8 raw 16-bit patterns per 16-byte vector, converted by TO / FROM.
template <float (*TO)(unsigned short), unsigned short (*FROM)(float)>
struct Traits16 {
    typedef unsigned short T;  // the raw bit pattern
    typedef float Acc;
    typedef uint4 V;
    enum { VEC = GPUDENSE_VECTOR_BYTES / sizeof(T) };
    static_assert(sizeof(V) == GPUDENSE_VECTOR_BYTES, "GPUDENSE_VECTOR_BYTES must be the size of uint4");
    static __device__ __forceinline__ Acc to_acc(T v) { return TO(v); }
    static __device__ __forceinline__ T from_acc(Acc v) { return FROM(v); }
    static __device__ __forceinline__ void unpack(const V& v, Acc (&a)[VEC])
    {
        const unsigned int w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            // little-endian: the lower half-word is the lower column
            a[2 * i] = TO((unsigned short)(w[i] & 0xffffu));
            a[2 * i + 1] = TO((unsigned short)(w[i] >> 16));
        }
    }
    static __device__ __forceinline__ V pack(const Acc (&a)[VEC])
    {
        unsigned int w[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            w[i] = (unsigned int)FROM(a[2 * i]) | ((unsigned int)FROM(a[2 * i + 1]) << 16);
        }
        V v;
        v.x = w[0];
        v.y = w[1];
        v.z = w[2];
        v.w = w[3];
        return v;
    }
};

typedef Traits16<gpudense_h2f, gpudense_f2h> TraitsF16;    // IEEE binary16
typedef Traits16<gpudense_bf2f, gpudense_f2bf> TraitsBF16;  // bfloat16

