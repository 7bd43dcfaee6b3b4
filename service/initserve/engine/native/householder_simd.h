/* Vector helpers of the QR kernels (householder.c, householder_panel.c): GCC/clang vector extensions.
 *
 * Lanes are always independent sums; nothing here reorders a sum or fuses an operation
 * (-ffp-contract=off holds for every clone), so the instruction set picked changes no bit. A scalar
 * is broadcast by writing it as an operand (``s * x``): GCC turns that into one broadcast, where a
 * {s, s, ...} initializer became a chain of eight masked ones on AVX-512. */
#ifndef INITSERVE_HOUSEHOLDER_SIMD_H
#define INITSERVE_HOUSEHOLDER_SIMD_H

#include <string.h>

#if defined(__GNUC__) || defined(__clang__)
#define IS_VECTOR 1
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi" /* vectors never cross a non-inline call: no ABI question */
#endif
typedef double vd4 __attribute__((vector_size(32)));
typedef double vd8 __attribute__((vector_size(64)));

static inline __attribute__((always_inline)) vd4 load4(const double *p)
{
    vd4 x;
    memcpy(&x, p, sizeof x);
    return x;
}

static inline __attribute__((always_inline)) void store4(double *p, vd4 x) { memcpy(p, &x, sizeof x); }

static inline __attribute__((always_inline)) vd8 vload8(const double *p)
{
    vd8 x;
    memcpy(&x, p, sizeof x);
    return x;
}

static inline __attribute__((always_inline)) void vstore8(double *p, vd8 x) { memcpy(p, &x, sizeof x); }
#else
#define IS_VECTOR 0
#endif

/* Hot loops are compiled for several instruction sets and the best one the CPU has is picked at load
 * time (GCC function multiversioning, as in algorithm1.c; -DINITSERVE_NO_MULTIVERSION turns it off).
 * Every clone computes the same bytes; the tests compare builds. */
#if IS_VECTOR && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && defined(__x86_64__) && \
    defined(__linux__) && defined(__GLIBC__) && !defined(INITSERVE_NO_MULTIVERSION)
#define IS_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#define IS_WIDE 1 /* and 8 x 16 tiles of 8-lane vectors where the CPU has AVX-512 (32 registers) */
#else
#define IS_CLONES
#define IS_WIDE 0
#endif

#endif
