// Runtime-dispatched builds of the CPU kernels' hot float32 loops.
//
// The extension's baseline is x86-64 (SSE2, 4 float lanes). A function marked RX_CPU_CLONES is
// also compiled for AVX2 and AVX-512, and the loader picks the best build for the CPU it runs on
// (GCC/Clang target_clones, an ifunc). `flatten` inlines every call inside it, so the generic
// template loops it wraps are compiled into each clone instead of being called in their SSE2 build.
// Elsewhere (other compilers or architectures) the functions are plain functions.
#pragma once

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(__CUDACC__)
#define RX_CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default"), flatten))
#else
#define RX_CPU_CLONES
#endif
