/* The one rounding rule of docs/determinism.md section 9: binary64 -> output type, to nearest,
 * ties to even, in a single rounding. float32 uses the C conversion (IEEE round-to-nearest-even in
 * the default rounding mode); float16 and bfloat16 are rounded here with integer operations on the
 * binary64 bits, so there is no double rounding through float32 and no dependence on F16C/AVX-512
 * conversion instructions. */
#ifndef INITSERVE_CASTS_H
#define INITSERVE_CASTS_H

#include <stdint.h>
#include <string.h>

static inline uint64_t is_bits64(double x)
{
    uint64_t bits;
    memcpy(&bits, &x, sizeof bits);
    return bits;
}

static inline double is_from_bits64(uint64_t bits)
{
    double x;
    memcpy(&x, &bits, sizeof x);
    return x;
}

/* Round binary64 x to a binary format with `precision` significant bits (hidden bit included),
 * `exponent_bits` exponent bits and bias 2^(exponent_bits-1) - 1, with gradual underflow; returns
 * the bit pattern (sign in bit precision-1+exponent_bits). Overflow gives infinity, NaN a quiet NaN. */
static inline uint16_t is_round_small_float(double x, int precision, int exponent_bits)
{
    const uint64_t bits = is_bits64(x);
    const uint16_t sign = (uint16_t)((bits >> 63) << (precision - 1 + exponent_bits));
    const int field = (int)((bits >> 52) & 0x7FF);
    const int bias = (1 << (exponent_bits - 1)) - 1;
    const int e_min = 1 - bias;
    const uint16_t infinity = (uint16_t)(((1u << exponent_bits) - 1u) << (precision - 1));
    if (field == 0x7FF) /* inf or NaN */
        return (uint16_t)(sign | infinity | ((bits << 12) ? (1u << (precision - 2)) : 0u));
    if (field == 0) /* zero or binary64 subnormal: far below half the smallest target subnormal */
        return sign;
    const uint64_t significand = (bits & UINT64_C(0xFFFFFFFFFFFFF)) | UINT64_C(0x10000000000000);
    const int exponent = field - 1023; /* |x| in [2^exponent, 2^(exponent+1)) */
    const int subnormal = exponent < e_min;
    /* the target quantum is 2^(quantum_exponent); the significand's unit is 2^(exponent - 52) */
    const int quantum_exponent = (subnormal ? e_min : exponent) - (precision - 1);
    const int shift = quantum_exponent - (exponent - 52);
    uint64_t q;
    if (shift > 63) {
        q = 0; /* below a quarter of the quantum */
    } else {
        const uint64_t half = UINT64_C(1) << (shift - 1);
        const uint64_t remainder = significand & ((UINT64_C(1) << shift) - 1);
        q = significand >> shift;
        if (remainder > half || (remainder == half && (q & 1)))
            q += 1;
    }
    uint64_t magnitude;
    if (subnormal)
        magnitude = q; /* q == 2^(precision-1) is exactly the smallest normal's pattern */
    else /* q in [2^(precision-1), 2^precision]: the carry into the exponent field is the right one */
        magnitude = ((uint64_t)(exponent + bias) << (precision - 1)) + q - (UINT64_C(1) << (precision - 1));
    if (magnitude >= infinity)
        magnitude = infinity;
    return (uint16_t)(sign | (uint16_t)magnitude);
}

static inline uint16_t is_to_float16(double x) { return is_round_small_float(x, 11, 5); }

static inline uint16_t is_to_bfloat16(double x) { return is_round_small_float(x, 8, 8); }

#endif
