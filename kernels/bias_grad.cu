// Deterministic column sums of dY (the bias gradient db of a dense layer), alone
// or fused with the activation's derivative, and the forward pass's bias and
// activation.
//
//   db[j] = sum over k of dY[k, j],  dY of shape (batch, m), row pitch `ld` elements
//
// Fused with an activation (act_bias_grad_*: pass 1 of the same two passes):
//
//   dZ[k, j] = dY[k, j] * act'(Z[k, j]),   db[j] = sum over k of dZ[k, j]
//
// reading dY and the saved array S (y for relu and tanh, z for gelu) once and
// writing dZ once; db sums dZ as stored (rounded to its type), in the order below.
// Forward (bias_act_*): Y = act(Z + b) in one pass after the product Z = X W
// (gelu also writes Z + b back into Z, the array its backward reads).
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
// float64 accumulates in float64, float32 in float32, float16 and bfloat16 in
// float32 (their values are raw 16-bit patterns: float16 converted with cvt,
// bfloat16 by shifting into the top half of a float32 and rounding to nearest
// even on the way back, so no header is needed: nvcc or NVRTC compile the file
// as it is, given the -D options below). A 16-byte load carries 8 of them.
//
// The activation math is activation_math.py's, operation by operation and in
// its order, each multiply and add rounded on its own (mul.rn/add.rn: no fused
// multiply-add, no flush to zero under CuPy's -ftz=true), so dZ equals NumPy's
// float32 formula bit for bit wherever tanh agrees.
//
// Entry points (extern "C"), for each dtype suffix S in {f64, f32, f16, bf16} and
// activation A in {relu, gelu, tanh}: bias_grad_pass1_S, bias_grad_pass2_S,
// act_bias_grad_A_S (pass 1 of the fused kernel; its pass 2 is bias_grad_pass2_S)
// and bias_act_A_S (the forward pass).
//
// The constants shared with the launch plan come from the compiler's command
// line, as gpudense.backends.cuda.loader.kernel_defines() gives them (e.g.
// -DGPUDENSE_BLOCK=256 -DGPUDENSE_UNROLL=4 -DGPUDENSE_VECTOR_BYTES=16); they
// are defined in gpudense/backends/cuda/plan.py and nowhere else:
//
//   GPUDENSE_BLOCK         threads per block, both passes
//   GPUDENSE_UNROLL        rows loaded before the first add, per thread
//   GPUDENSE_VECTOR_BYTES  bytes per vector load (the size of V below: 16)
//
// and the GELU constants from gpudense/activation_math.py:
//
//   GPUDENSE_GELU_C        sqrt(2/pi)
//   GPUDENSE_GELU_A        0.044715
//   GPUDENSE_GELU_CLIP     10: t = tanh(c (z + a z^3)) is computed on z clipped to [-10, 10]

#ifndef GPUDENSE_BLOCK
#error "GPUDENSE_BLOCK is not defined: compile with the options of gpudense.backends.cuda.loader.kernel_defines()"
#endif
#ifndef GPUDENSE_UNROLL
#error "GPUDENSE_UNROLL is not defined: compile with the options of gpudense.backends.cuda.loader.kernel_defines()"
#endif
#ifndef GPUDENSE_VECTOR_BYTES
#error "GPUDENSE_VECTOR_BYTES is not defined: compile with the options of gpudense.backends.cuda.loader.kernel_defines()"
#endif
#ifndef GPUDENSE_GELU_C
#error "GPUDENSE_GELU_C is not defined: compile with the options of gpudense.backends.cuda.loader.kernel_defines()"
#endif
#ifndef GPUDENSE_GELU_A
#error "GPUDENSE_GELU_A is not defined: compile with the options of gpudense.backends.cuda.loader.kernel_defines()"
#endif
#ifndef GPUDENSE_GELU_CLIP
#error "GPUDENSE_GELU_CLIP is not defined: compile with the options of gpudense.backends.cuda.loader.kernel_defines()"
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
#endif  // the host emulation (tests/cuda/test_kernels_compile.py) supplies gpudense_h2f/f2h, gpudense_tanh,
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

// Store the final value of column c: out[c] = s, or out[c] = out[c] + s, rounded once.
template <class Tr>
__device__ __forceinline__ void gpudense_store(typename Tr::T* out, i64 c, typename Tr::Acc s, int accumulate)
{
    if (accumulate) {
        s = gpudense_add(Tr::to_acc(out[c]), s);
    }
    out[c] = Tr::from_acc(s);
}

// Fixed-order tree over ty of sm[(ty * n + i) * TX + tx], i < n; the result lands in ty == 0.
// Level s: rows [0, s) += rows [s, 2s); each level reads only what the level before wrote.
template <class Acc, int N>
__device__ __forceinline__ void gpudense_tree(Acc* sm, int tx, int ty, int TX, int TY)
{
    for (int s = TY >> 1; s > 0; s >>= 1) {
        if (ty < s) {
#pragma unroll
            for (int i = 0; i < N; ++i) {
                sm[(ty * N + i) * TX + tx] = gpudense_add(sm[(ty * N + i) * TX + tx], sm[((ty + s) * N + i) * TX + tx]);
            }
        }
        __syncthreads();
    }
}

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

// --- the activations (gpudense/activation_math.py, operation by operation) ---

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

#define GPUDENSE_ACT_GRAD(NAME, TR, ACT)                                                                      \
    extern "C" __global__ void __launch_bounds__(GPUDENSE_BLOCK)                                              \
        NAME(const TR::T* __restrict__ dy, const TR::T* __restrict__ sv, TR::T* __restrict__ dz, i64 batch,   \
             i64 m, i64 ld, i64 chunk_rows, int head, int vec_path, TR::Acc* ws, TR::T* out, int final_pass,  \
             int accumulate)                                                                                  \
    {                                                                                                         \
        act_bias_grad_pass1<TR, ACT>(dy, sv, dz, batch, m, ld, chunk_rows, head, vec_path, ws, out,          \
                                     final_pass, accumulate);                                                 \
    }

#define GPUDENSE_BIAS_ACT(NAME, TR, ACT)                                                                 \
    extern "C" __global__ void __launch_bounds__(GPUDENSE_BLOCK)                                         \
        NAME(TR::T* z, const TR::T* b, TR::T* y, i64 n, i64 m, int has_bias, int vec, int write_z)       \
    {                                                                                                    \
        bias_act<TR, ACT>(z, b, y, n, m, has_bias, vec, write_z);                                        \
    }

GPUDENSE_PASS1(bias_grad_pass1_f64, TraitsF64)
GPUDENSE_PASS2(bias_grad_pass2_f64, TraitsF64)
GPUDENSE_ACT_GRAD(act_bias_grad_relu_f64, TraitsF64, ACT_RELU)
GPUDENSE_ACT_GRAD(act_bias_grad_gelu_f64, TraitsF64, ACT_GELU)
GPUDENSE_ACT_GRAD(act_bias_grad_tanh_f64, TraitsF64, ACT_TANH)
GPUDENSE_BIAS_ACT(bias_act_relu_f64, TraitsF64, ACT_RELU)
GPUDENSE_BIAS_ACT(bias_act_gelu_f64, TraitsF64, ACT_GELU)
GPUDENSE_BIAS_ACT(bias_act_tanh_f64, TraitsF64, ACT_TANH)

GPUDENSE_PASS1(bias_grad_pass1_f32, TraitsF32)
GPUDENSE_PASS2(bias_grad_pass2_f32, TraitsF32)
GPUDENSE_ACT_GRAD(act_bias_grad_relu_f32, TraitsF32, ACT_RELU)
GPUDENSE_ACT_GRAD(act_bias_grad_gelu_f32, TraitsF32, ACT_GELU)
GPUDENSE_ACT_GRAD(act_bias_grad_tanh_f32, TraitsF32, ACT_TANH)
GPUDENSE_BIAS_ACT(bias_act_relu_f32, TraitsF32, ACT_RELU)
GPUDENSE_BIAS_ACT(bias_act_gelu_f32, TraitsF32, ACT_GELU)
GPUDENSE_BIAS_ACT(bias_act_tanh_f32, TraitsF32, ACT_TANH)

GPUDENSE_PASS1(bias_grad_pass1_f16, TraitsF16)
GPUDENSE_PASS2(bias_grad_pass2_f16, TraitsF16)
GPUDENSE_ACT_GRAD(act_bias_grad_relu_f16, TraitsF16, ACT_RELU)
GPUDENSE_ACT_GRAD(act_bias_grad_gelu_f16, TraitsF16, ACT_GELU)
GPUDENSE_ACT_GRAD(act_bias_grad_tanh_f16, TraitsF16, ACT_TANH)
GPUDENSE_BIAS_ACT(bias_act_relu_f16, TraitsF16, ACT_RELU)
GPUDENSE_BIAS_ACT(bias_act_gelu_f16, TraitsF16, ACT_GELU)
GPUDENSE_BIAS_ACT(bias_act_tanh_f16, TraitsF16, ACT_TANH)

GPUDENSE_PASS1(bias_grad_pass1_bf16, TraitsBF16)
GPUDENSE_PASS2(bias_grad_pass2_bf16, TraitsBF16)
GPUDENSE_ACT_GRAD(act_bias_grad_relu_bf16, TraitsBF16, ACT_RELU)
GPUDENSE_ACT_GRAD(act_bias_grad_gelu_bf16, TraitsBF16, ACT_GELU)
GPUDENSE_ACT_GRAD(act_bias_grad_tanh_bf16, TraitsBF16, ACT_TANH)
GPUDENSE_BIAS_ACT(bias_act_relu_bf16, TraitsBF16, ACT_RELU)
GPUDENSE_BIAS_ACT(bias_act_gelu_bf16, TraitsBF16, ACT_GELU)
GPUDENSE_BIAS_ACT(bias_act_tanh_bf16, TraitsBF16, ACT_TANH)
