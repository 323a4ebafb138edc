// The fixed-order reduction of a block's partial column sums and the final store,
// shared by the bias gradient (bias_grad.cu) and the fused activation gradient
// (act_bias_grad.cu): the summation order of every column depends only on
// (batch, m, dtype, number of SMs), through the launch plan.

#pragma once

#include "element_types.cuh"

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
