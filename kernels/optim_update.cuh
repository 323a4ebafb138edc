// The arithmetic of the optimizer kernels (gpudense/backends/cuda/optim_kernels.py):
// the preamble of every optimizer cupy.ElementwiseKernel, which CuPy puts before the
// kernel it generates from the rule's body.
//
// Correctly rounded float and double arithmetic, never contracted into FMAs. CuPy
// compiles every kernel with -ftz=true, under which float32 operations flush subnormal
// inputs and results to zero; the float32 operations are therefore written in PTX
// without .ftz, so that they round as the CPU does and the explicit flush of the
// update decides alike. Each product, sum, quotient and square root is rounded on its
// own, as NumPy rounds it, so a GPU step gives the CPU step's bits.

__device__ inline float mul_rn(float a, float b) { float c; asm("mul.rn.f32 %0, %1, %2;" : "=f"(c) : "f"(a), "f"(b)); return c; }
__device__ inline float add_rn(float a, float b) { float c; asm("add.rn.f32 %0, %1, %2;" : "=f"(c) : "f"(a), "f"(b)); return c; }
__device__ inline float sub_rn(float a, float b) { float c; asm("sub.rn.f32 %0, %1, %2;" : "=f"(c) : "f"(a), "f"(b)); return c; }
__device__ inline float div_rn(float a, float b) { float c; asm("div.rn.f32 %0, %1, %2;" : "=f"(c) : "f"(a), "f"(b)); return c; }
__device__ inline float sqrt_rn(float a) { float c; asm("sqrt.rn.f32 %0, %1;" : "=f"(c) : "f"(a)); return c; }
__device__ inline float abs_of(float a) { return __int_as_float(__float_as_int(a) & 0x7fffffff); }
__device__ inline double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ inline double add_rn(double a, double b) { return __dadd_rn(a, b); }
__device__ inline double sub_rn(double a, double b) { return __dsub_rn(a, b); }
__device__ inline double div_rn(double a, double b) { return __ddiv_rn(a, b); }
__device__ inline double sqrt_rn(double a) { return __dsqrt_rn(a); }
__device__ inline double abs_of(double a) { return fabs(a); }
