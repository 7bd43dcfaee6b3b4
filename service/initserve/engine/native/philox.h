/* Philox4x64-10 (Salmon et al., SC 2011): the block function of docs/determinism.md section 4.
 *
 * Only integer operations: the result cannot depend on the compiler's floating-point settings.
 * The 64x64 -> 128-bit product uses the compiler's 128-bit integer where there is one, MSVC's
 * _umul128 on x64, and a portable 32-bit split otherwise (all three give the same exact product). */
#ifndef INITSERVE_PHILOX_H
#define INITSERVE_PHILOX_H

#include <stddef.h>
#include <stdint.h>

#if defined(_MSC_VER) && defined(_M_X64) && !defined(__clang__)
#include <intrin.h>
#endif

#define PHILOX_M0 UINT64_C(0xD2E7470EE14C6C93)
#define PHILOX_M1 UINT64_C(0xCA5A826395121157)
#define PHILOX_W0 UINT64_C(0x9E3779B97F4A7C15)
#define PHILOX_W1 UINT64_C(0xBB67AE8584CAA73B)

static inline uint64_t philox_mulhilo(uint64_t a, uint64_t b, uint64_t *hi)
{
#if defined(__SIZEOF_INT128__)
    unsigned __int128 product = (unsigned __int128)a * b;
    *hi = (uint64_t)(product >> 64);
    return (uint64_t)product;
#elif defined(_MSC_VER) && defined(_M_X64) && !defined(__clang__)
    return _umul128(a, b, hi);
#else
    uint64_t a_lo = a & 0xFFFFFFFFu, a_hi = a >> 32, b_lo = b & 0xFFFFFFFFu, b_hi = b >> 32;
    uint64_t lo_lo = a_lo * b_lo, hi_lo = a_hi * b_lo, lo_hi = a_lo * b_hi, hi_hi = a_hi * b_hi;
    uint64_t middle = (lo_lo >> 32) + (hi_lo & 0xFFFFFFFFu) + lo_hi;
    *hi = hi_hi + (hi_lo >> 32) + (middle >> 32);
    return (middle << 32) | (lo_lo & 0xFFFFFFFFu);
#endif
}

/* out = Philox4x64-10(counter (c0, c1, 0, 0), key (k0, k1)). */
static inline void philox4x64_10(uint64_t c0, uint64_t c1, uint64_t k0, uint64_t k1, uint64_t out[4])
{
    uint64_t c2 = 0, c3 = 0;
    for (int round = 0; round < 10; round++) {
        uint64_t hi0, hi1, lo0, lo1;
        if (round > 0) {
            k0 += PHILOX_W0;
            k1 += PHILOX_W1;
        }
        lo0 = philox_mulhilo(PHILOX_M0, c0, &hi0);
        lo1 = philox_mulhilo(PHILOX_M1, c2, &hi1);
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

/* The round keys of section 4 for key (k0, k1): round r uses (k0 + r*W0, k1 + r*W1) mod 2^64. */
static inline void philox4x64_10_keys(uint64_t k0, uint64_t k1, uint64_t keys0[10], uint64_t keys1[10])
{
    for (int round = 0; round < 10; round++) {
        keys0[round] = k0;
        keys1[round] = k1;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
}

/* Two blocks at once, counters (a, c1, 0, 0) and (b, c1, 0, 0): the rounds of philox4x64_10 written
 * side by side, so the two independent multiply chains overlap even where the compiler would not
 * interleave consecutive calls (a loop over a list of counters). Same integer operations, same words. */
static inline void philox4x64_10_pair(uint64_t a, uint64_t b, uint64_t c1, const uint64_t keys0[10],
                                      const uint64_t keys1[10], uint64_t out_a[4], uint64_t out_b[4])
{
    uint64_t a0 = a, a1 = c1, a2 = 0, a3 = 0, b0 = b, b1 = c1, b2 = 0, b3 = 0;
    for (int round = 0; round < 10; round++) {
        uint64_t a_hi0, a_hi1, b_hi0, b_hi1;
        const uint64_t a_lo0 = philox_mulhilo(PHILOX_M0, a0, &a_hi0);
        const uint64_t a_lo1 = philox_mulhilo(PHILOX_M1, a2, &a_hi1);
        const uint64_t b_lo0 = philox_mulhilo(PHILOX_M0, b0, &b_hi0);
        const uint64_t b_lo1 = philox_mulhilo(PHILOX_M1, b2, &b_hi1);
        a0 = a_hi1 ^ a1 ^ keys0[round];
        a2 = a_hi0 ^ a3 ^ keys1[round];
        a1 = a_lo1;
        a3 = a_lo0;
        b0 = b_hi1 ^ b1 ^ keys0[round];
        b2 = b_hi0 ^ b3 ^ keys1[round];
        b1 = b_lo1;
        b3 = b_lo0;
    }
    out_a[0] = a0;
    out_a[1] = a1;
    out_a[2] = a2;
    out_a[3] = a3;
    out_b[0] = b0;
    out_b[1] = b1;
    out_b[2] = b2;
    out_b[3] = b3;
}

/* out[4k .. 4k+3] = the block of counter (counters[k], c1, 0, 0), for k < count. */
static inline void philox4x64_10_list(const uint64_t *counters, size_t count, uint64_t c1, uint64_t k0, uint64_t k1,
                                      uint64_t *out)
{
    uint64_t keys0[10], keys1[10];
    philox4x64_10_keys(k0, k1, keys0, keys1);
    size_t k = 0;
    for (; k + 1 < count; k += 2)
        philox4x64_10_pair(counters[k], counters[k + 1], c1, keys0, keys1, out + 4 * k, out + 4 * k + 4);
    if (k < count)
        philox4x64_10(counters[k], c1, k0, k1, out + 4 * k);
}

#endif
