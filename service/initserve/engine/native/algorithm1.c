/* Algorithm 1 (docs/determinism.md): the element transform, tile by tile.
 *
 * Every element is computed with the scalar operation sequence the document writes, in binary64,
 * in that order. The build turns floating-point contraction off (no fused multiply-add) and never
 * uses -ffast-math, so the compiler may vectorise the loops below (lanes are independent elements)
 * but may not reassociate, fuse or approximate anything: the bytes are those of the numpy engine.
 *
 * A tile of TILE elements goes: Philox words -> p -> central AS 241 branch for every lane (a
 * branch-free loop the compiler can vectorise) -> the tail branch for the lanes with |q| > 0.425
 * (scalar, ~15% of lanes) -> affine step and clamps -> cast into the caller's buffer. */
#include "algorithm1.h"

#include <math.h>
#include <string.h>

#include "casts.h"
#include "philox.h"

#define TILE 512
/* Runs shorter than this are gathered several to a tile (fill_short_runs); longer ones are filled run by
 * run as ranges. Measured (thread CPU, kaiming_uniform float32, block-aligned column slices): 64- to
 * 500-element runs at 0.93-0.99x a range's rate run by run, against 0.83-0.88x gathered into tiles. */
#define SHORT_RUN 64

/* The tile loops are compiled once per instruction-set level and the best one the CPU has is picked
 * at load time (GCC function multiversioning on x86-64 Linux): wider vectors, same per-lane
 * operations. The flags that keep results exact (no contraction, no fast-math) apply to every
 * version; tests/engine/test_kernels.py builds the extension with -march=native as well and
 * compares the bytes. Elsewhere (other compilers, musl without ifunc, GCC < 12): one portable version. */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && defined(__x86_64__) && defined(__linux__) && \
    defined(__GLIBC__) && !defined(INITSERVE_NO_MULTIVERSION)
#define IS_VERSIONS __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4")))
#else
#define IS_VERSIONS
#endif
#if defined(__GNUC__)
#define IS_INLINE static inline __attribute__((always_inline))
#else
#define IS_INLINE static inline
#endif

/* ---- section 5: words -> uniforms (exact) ---------------------------------------------------- */
/* uniform_01(w) = (w >> 11) * 2^-53, without an integer -> double conversion (none in SSE2, so the
 * loop vectorises): with k = w >> 12 and b = bit 11 of w, (w >> 11) * 2^-53 = k*2^-52 + b*2^-53, where
 * k*2^-52 = (1 + k*2^-52) - 1 is built from the bits and b*2^-53 is 0 or 2^-53 (bits 0x3CA0...).
 * Each step is exact (the sum has at most 53 significant bits), so the value is exactly the formula's. */
static inline double uniform_01(uint64_t w)
{
    const double high = is_from_bits64(UINT64_C(0x3FF0000000000000) | (w >> 12)) - 1.0;
    const double low_bit = is_from_bits64(((w >> 11) & 1u) * UINT64_C(0x3CA0000000000000));
    return high + low_bit;
}


/* ---- section 6.1: ln x for 0 < x <= 1 from exact operations ---------------------------------- */
static const double SQRT_HALF = 0.70710678118654752440;
static const double LN2_HI = 6.93147180369123816490e-01;
static const double LN2_LO = 1.90821492927058770002e-10;

/* ln(m * 2^e) for the reduced m in [sqrt(1/2), sqrt(2)) and e already a double: the series of
 * section 6.1 in its written order (shared by the scalar and the vectorised logarithm). */
IS_INLINE double log_reduced(double m, double e)
{
    const double s = (m - 1.0) / (m + 1.0);
    const double z = s * s;
    /* c_k = 1/(2k+1) for k = 11 .. 1, each a correctly rounded quotient */
    double p = z * (1.0 / 23.0) + 1.0 / 21.0;
    p = p * z + 1.0 / 19.0;
    p = p * z + 1.0 / 17.0;
    p = p * z + 1.0 / 15.0;
    p = p * z + 1.0 / 13.0;
    p = p * z + 1.0 / 11.0;
    p = p * z + 1.0 / 9.0;
    p = p * z + 1.0 / 7.0;
    p = p * z + 1.0 / 5.0;
    p = p * z + 1.0 / 3.0;
    p = p * z + 1.0;
    const double two_s_p = (s * p) * 2.0;
    const double low_part = e * LN2_LO + two_s_p;
    return e * LN2_HI + low_part;
}

static double log_exact_ops(double x)
{
    int e;
    double m = frexp(x, &e); /* exact: x = m * 2^e, m in [0.5, 1) */
    if (m < SQRT_HALF) {
        m = m * 2.0;
        e = e - 1;
    }
    return log_reduced(m, (double)e);
}

/* ---- section 6.2: AS 241 ----------------------------------------------------------------------- */
static const double A[8] = {3.3871328727963666080e0, 1.3314166789178437745e2, 1.9715909503065514427e3,
                            1.3731693765509461125e4, 4.5921953931549871457e4, 6.7265770927008700853e4,
                            3.3430575583588128105e4, 2.5090809287301226727e3};
static const double B[8] = {1.0,
                            4.2313330701600911252e1,
                            6.8718700749205790830e2,
                            5.3941960214247511077e3,
                            2.1213794301586595867e4,
                            3.9307895800092710610e4,
                            2.8729085735721942674e4,
                            5.2264952788528545610e3};
static const double C[8] = {1.42343711074968357734e0, 4.63033784615654529590e0, 5.76949722146069140550e0,
                            3.64784832476320460504e0, 1.27045825245236838258e0, 2.41780725177450611770e-1,
                            2.27238449892691845833e-2, 7.74545014278341407640e-4};
static const double D[8] = {1.0,
                            2.05319162663775882187e0,
                            1.67638483018380384940e0,
                            6.89767334985100004550e-1,
                            1.48103976427480074590e-1,
                            1.51986665636164571966e-2,
                            5.47593808499534494600e-4,
                            1.05075007164441684324e-9};
static const double E[8] = {6.65790464350110377720e0, 5.46378491116411436990e0, 1.78482653991729133580e0,
                            2.96560571828504891230e-1, 2.65321895265761230930e-2, 1.24266094738807843860e-3,
                            2.71155556874348757815e-5, 2.01033439929228813265e-7};
static const double F[8] = {1.0,
                            5.99832206555887937690e-1,
                            1.36929880922735805310e-1,
                            1.48753612908506148525e-2,
                            7.86869131145613259100e-4,
                            1.84631831751005468180e-5,
                            1.42151175831644588870e-7,
                            2.04426310338993978564e-15};

/* H(c, r): acc = c7*r; for k = 6..1: acc = (acc + c_k)*r; result = acc + c0 */
static inline double horner(const double c[8], double r)
{
    double acc = c[7] * r;
    acc = (acc + c[6]) * r;
    acc = (acc + c[5]) * r;
    acc = (acc + c[4]) * r;
    acc = (acc + c[3]) * r;
    acc = (acc + c[2]) * r;
    acc = (acc + c[1]) * r;
    return acc + c[0];
}

/* clamp with numpy's np.clip semantics (an equal bound keeps x, so signed zeros pass through) */
static inline double clamp(double x, double lo, double hi)
{
    x = x < lo ? lo : x;
    return x > hi ? hi : x;
}

/* ---- words ------------------------------------------------------------------------------------- */
/* words of elements first .. first+count-1 of the program's stream; out holds count + 3 words */
IS_INLINE void element_words(const is_program *program, uint64_t first, size_t count, uint64_t *out)
{
    uint64_t block = first >> 2;
    const size_t skip = (size_t)(first & 3u);
    uint64_t words[4];
    size_t produced = 0;
    if (skip) {
        philox4x64_10(block++, program->stream, program->k0, program->k1, words);
        for (size_t j = skip; j < 4 && produced < count; j++)
            out[produced++] = words[j];
    }
    while (produced < count) {
        philox4x64_10(block++, program->stream, program->k0, program->k1, out + produced);
        produced += 4; /* may write up to 3 words past count: out has room */
    }
}

/* ---- section 7: values of one tile ------------------------------------------------------------- */
/* uniform_open without an integer -> double conversion (none in SSE2, so this vectorises):
 * 1 + k*2^-52 is built from the bits (k = w >> 12 < 2^52), then (that - 1) + 2^-53 = (2k + 1)*2^-53.
 * Both steps are exact, so the value is exactly uniform_open's. */
static inline double uniform_open_vector(uint64_t w)
{
    return (is_from_bits64(UINT64_C(0x3FF0000000000000) | (w >> 12)) - 1.0) + 0x1p-53;
}

/* ln t[j] for every j < m (0 < t <= 1) into out, as log_exact_ops computes it, in loops the compiler
 * can vectorise: frexp by bit operations for normal doubles (subnormal inputs, possible only in a far
 * truncated tail, are redone by log_exact_ops, which calls the C library's exact frexp). */
IS_INLINE void log_exact_ops_array(const double *t, size_t m, double *out)
{
    for (size_t j = 0; j < m; j++) {
        const uint64_t bits = is_bits64(t[j]);
        /* frexp by bit operations: x = m * 2^e, m in [0.5, 1), e = f - 1022 for the exponent field f.
         * m < SQRT_HALF is decided on the fraction bits (m and SQRT_HALF share the exponent) as an
         * all-ones mask, and both outcomes of (2m, e - 1) are computed and one is selected by the
         * mask: no branch and no integer -> double conversion (which SSE2 lacks), so the loop
         * vectorises, and every value is exactly the scalar sequence's (e becomes a double exactly
         * through 2^52 + (f - low)). */
        const uint64_t fraction = bits & UINT64_C(0x000FFFFFFFFFFFFF);
        const uint64_t low =
            (uint64_t)(((int64_t)fraction - (int64_t)(UINT64_C(0x3FE6A09E667F3BCD) & UINT64_C(0x000FFFFFFFFFFFFF))) >> 63);
        const double m = is_from_bits64(fraction | UINT64_C(0x3FE0000000000000));
        const double m_doubled = m * 2.0;
        const double mant = is_from_bits64((is_bits64(m_doubled) & low) | (is_bits64(m) & ~low));
        const double e = (is_from_bits64(UINT64_C(0x4330000000000000) | ((bits >> 52) - (low & 1u))) - 0x1p52) - 1022.0;
        out[j] = log_reduced(mant, e);
    }
    for (size_t j = 0; j < m; j++)
        if (t[j] < 0x1p-1022)
            out[j] = log_exact_ops(t[j]);
}

IS_INLINE void normal_values(const is_program *pr, const uint64_t *words, size_t n, double *x)
{
    double p[TILE], q[TILE], tail_t[TILE], tail_r[TILE];
    uint32_t tail[TILE];
    if (pr->truncated) {
        for (size_t i = 0; i < n; i++)
            p[i] = clamp(uniform_open_vector(words[i]) * pr->p_width + pr->p_low, 0x1p-1074, 1.0 - 0x1p-53);
    } else {
        for (size_t i = 0; i < n; i++)
            p[i] = uniform_open_vector(words[i]);
    }
    /* central branch for every lane: z = (q * H(A, r)) / H(B, r), r = 0.180625 - q*q */
    for (size_t i = 0; i < n; i++) {
        const double qi = p[i] - 0.5;
        const double r = 0.180625 - qi * qi;
        q[i] = qi;
        x[i] = (qi * horner(A, r)) / horner(B, r);
    }
    /* the tail lanes (|q| > 0.425, ~15%), gathered without a branch so nothing mispredicts */
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        tail[m] = (uint32_t)i;
        m += fabs(q[i]) > 0.425;
    }
    for (size_t j = 0; j < m; j++) {
        const size_t i = tail[j];
        tail_t[j] = q[i] < 0.0 ? p[i] : 1.0 - p[i];
    }
    log_exact_ops_array(tail_t, m, tail_r);
    for (size_t j = 0; j < m; j++) { /* r = sqrt(-ln t); the near rational C/D for every tail lane */
        const double r = sqrt(-tail_r[j]);
        const double s = r - 1.6;
        tail_r[j] = r;
        tail_t[j] = horner(C, s) / horner(D, s);
    }
    for (size_t j = 0; j < m; j++) {
        const size_t i = tail[j];
        double z = tail_t[j];
        if (tail_r[j] > 5.0) { /* p < 1.4e-11: rare */
            const double s = tail_r[j] - 5.0;
            z = horner(E, s) / horner(F, s);
        }
        x[i] = q[i] < 0.0 ? -z : z;
    }
    if (pr->truncated) {
        for (size_t i = 0; i < n; i++) {
            double z = clamp(x[i], pr->alpha, pr->beta);
            if (pr->mirrored)
                z = -z;
            x[i] = clamp(z * pr->std + pr->mean, pr->lo, pr->hi);
        }
    } else {
        for (size_t i = 0; i < n; i++)
            x[i] = x[i] * pr->std + pr->mean; /* untruncated: never mirrored (alpha = -inf) */
    }
}

IS_INLINE void tile_values(const is_program *pr, const uint64_t *words, size_t n, double *x)
{
    switch (pr->kind) {
    case IS_CONSTANT:
        for (size_t i = 0; i < n; i++)
            x[i] = pr->value;
        break;
    case IS_UNIFORM:
        for (size_t i = 0; i < n; i++)
            x[i] = pr->low + pr->width * uniform_01(words[i]);
        break;
    default:
        normal_values(pr, words, n, x);
        break;
    }
}

/* ---- section 9: casts (little-endian storage; the caller checks the byte order) ----------------- */
IS_INLINE void store(int dtype, const double *x, size_t n, unsigned char *out)
{
    switch (dtype) {
    case IS_F64:
        memcpy(out, x, n * sizeof(double));
        break;
    case IS_F32: {
        float *o = (float *)(void *)out;
        for (size_t i = 0; i < n; i++)
            o[i] = (float)x[i];
        break;
    }
    case IS_F16: {
        uint16_t *o = (uint16_t *)(void *)out;
        for (size_t i = 0; i < n; i++)
            o[i] = is_to_float16(x[i]);
        break;
    }
    default: {
        uint16_t *o = (uint16_t *)(void *)out;
        for (size_t i = 0; i < n; i++)
            o[i] = is_to_bfloat16(x[i]);
        break;
    }
    }
}

size_t is_itemsize(int dtype)
{
    switch (dtype) {
    case IS_F64:
    case IS_U64:
        return 8;
    case IS_F32:
        return 4;
    default:
        return 2;
    }
}

IS_VERSIONS
void is_fill_range(const is_program *program, uint64_t first, size_t count, void *out)
{
    uint64_t words[TILE + 4];
    double values[TILE];
    unsigned char *cursor = (unsigned char *)out;
    const size_t itemsize = is_itemsize(program->dtype);
    const int needs_words = program->kind != IS_CONSTANT;
    while (count > 0) {
        const size_t n = count < TILE ? count : TILE;
        if (needs_words)
            element_words(program, first, n, words);
        if (program->kind == IS_WORDS) {
            memcpy(cursor, words, n * sizeof(uint64_t));
        } else {
            tile_values(program, words, n, values);
            store(program->dtype, values, n, cursor);
        }
        cursor += n * itemsize;
        first += n;
        count -= n;
    }
}

/* The flat index of the first element of the run at ``coord`` (one coordinate per outer dimension). */
IS_INLINE uint64_t run_start(const is_layout *layout, const uint64_t *coord)
{
    uint64_t first = layout->base;
    for (int d = 0; d < layout->rank; d++)
        first += coord[d] * layout->strides[d];
    return first;
}

/* Step to the run after a finished one. The common step is the next run along the last outer dimension
 * (``along``, kept apart from coord[last]); past its ``extent``, the outer coordinates carry like an
 * odometer and the run's index is computed anew. ``extent`` and ``stride`` are the caller's locals of
 * the last dimension's extent and stride (see fill_short_runs). */
IS_INLINE void next_run(const is_layout *layout, uint64_t *coord, uint64_t *along, uint64_t *run_first,
                        uint64_t extent, uint64_t stride)
{
    if (++*along < extent) {
        *run_first += stride;
        return;
    }
    const int last = layout->rank - 1;
    *along = 0;
    coord[last] = 0;
    for (int d = last - 1; d >= 0; d--) {
        if (++coord[d] < layout->extents[d])
            break;
        coord[d] = 0;
    }
    *run_first = run_start(layout, coord);
}

/* The words of `runs` runs of `quads` whole Philox blocks each, the first starting at block `block` and
 * each the next `block_stride` blocks on, into out (4 words a block, in order). One block after the
 * other, as element_words does for a range: the blocks are independent, so the CPU overlaps consecutive
 * blocks' multiply chains, and the step to the next block (an add and two selects) runs beside the
 * multiplies. The key comes in as round 0 of the caller's key schedule (keys0[0], keys1[0]); the same
 * loop with the key passed by value, or read from the program, compiled (GCC 12, x86-64-v4) to code
 * that measured 0.86x and 0.91x a range's rate instead of 0.98x (python -m benchmarks.shard_cpu,
 * 4-element runs, thread CPU). Listing the blocks first and computing them in a second loop, as the
 * unaligned path below does, measured 0.83x. The bytes are the same whichever way. */
IS_INLINE void whole_block_runs_words(uint64_t block, uint64_t block_stride, uint64_t runs, uint64_t quads,
                                      uint64_t stream, const uint64_t keys0[10], const uint64_t keys1[10],
                                      uint64_t *out)
{
    const uint64_t total = runs * quads, jump = block_stride - quads + 1;
    uint64_t in_run = 0; /* blocks done of the current run */
    for (uint64_t t = 0; t < total; t++) {
        philox4x64_10(block, stream, keys0[0], keys1[0], out + 4 * t);
        in_run++;
        block += in_run == quads ? jump : 1;
        in_run = in_run == quads ? 0 : in_run;
    }
}

/* Runs shorter than SHORT_RUN (a Shard(d) of a trailing dimension: a few elements per run) are gathered
 * into one tile, which is then transformed and stored in one pass. The transform of an element depends
 * on its word only, so the bytes are the ones run by run gives. The words come in two ways:
 *   - while every run so far starts on a block boundary and covers whole blocks (4-element runs of a
 *     Shard(2) whose chunks are multiples of 4), the words are computed straight into their place in
 *     the tile;
 *   - once a run does not (it starts inside a block or ends inside one), the rest of the tile's runs are
 *     walked first (an odometer kept incrementally), listing the Philox blocks their elements lie in (a
 *     block two runs share, once) and where each run's words start among those blocks' words; every
 *     listed block is then computed in one tight loop (computing each run's block where the walk
 *     reaches it cost ~2x per word for short runs: half the multiplier sat idle behind the latency of
 *     one block's 10 dependent rounds), and each run's words are moved into the tile.
 * A run touches at most as many blocks as it has elements, so the tile's blocks fit TILE slots. */
IS_VERSIONS
static void fill_short_runs(const is_program *program, const is_layout *layout, uint64_t *coord, uint64_t inside,
                            size_t count, unsigned char *cursor)
{
    uint64_t words[TILE + 4]; /* element_words may write up to 3 words past what it was asked for */
    uint64_t block_words[4 * TILE];
    uint64_t blocks[TILE];
    uint32_t piece_source[TILE], piece_length[TILE]; /* per piece of a run: offset in block_words, elements */
    double values[TILE];
    const size_t itemsize = is_itemsize(program->dtype);
    const uint64_t stream = program->stream, k0 = program->k0, k1 = program->k1;
    const int last = layout->rank - 1;
    /* the layout's fields in locals: the stores into blocks[] (uint64_t, as they are) would otherwise
     * make the compiler reload them for every run */
    const uint64_t length = layout->run_length, extent = layout->extents[last], stride = layout->strides[last];
    uint64_t along = coord[last]; /* the run's coordinate along the last outer dimension */
    /* every run starts on a block boundary and covers whole blocks: base, strides and length multiples of 4 */
    uint64_t quads = (layout->base & 3u) == 0 && (length & 3u) == 0 ? length >> 2 : 0;
    for (int d = 0; d < layout->rank; d++)
        if (layout->strides[d] & 3u)
            quads = 0;
    uint64_t keys0[10], keys1[10];
    philox4x64_10_keys(k0, k1, keys0, keys1);
    uint64_t run_first = run_start(layout, coord); /* flat index of the current run's first element */
    while (count > 0) {
        size_t filled = 0, pieces = 0, listed = 0;
        size_t in_place = 0; /* the tile's first words, computed in place before the first unaligned piece */
        int aligned = 1;     /* every piece so far starts a block and covers whole blocks */
        while (filled < TILE && count > 0) {
            if (aligned && inside == 0 && quads) {
                /* whole runs of whole blocks along the last dimension, short of its end (whose step to the
                 * next run carries the odometer): the common case, computed in place */
                uint64_t runs = (uint64_t)count / length;
                if ((TILE - filled) / length < runs)
                    runs = (TILE - filled) / length;
                if (extent - 1 - along < runs)
                    runs = extent - 1 - along;
                if (runs > 0) {
                    whole_block_runs_words(run_first >> 2, stride >> 2, runs, quads, stream, keys0, keys1,
                                           words + filled);
                    filled += (size_t)(runs * length);
                    count -= (size_t)(runs * length);
                    along += runs;
                    run_first += runs * stride;
                }
                if (filled == TILE || count == 0)
                    break;
            }
            const uint64_t first = run_first + inside;
            size_t n = TILE - filled < count ? TILE - filled : count;
            if (length - inside < (uint64_t)n)
                n = (size_t)(length - inside);
            if (aligned && (first & 3u) == 0 && (n & 3u) == 0) {
                /* whole blocks, and so far every piece was: the words go in place */
                element_words(program, first, n, words + filled);
            } else {
                if (aligned) { /* the words so far stay where they are; the pieces from here are listed */
                    aligned = 0;
                    in_place = filled;
                }
                uint64_t block = first >> 2;
                const uint64_t last_block = (first + n - 1) >> 2;
                size_t slot = listed;
                if (listed > 0 && blocks[listed - 1] == block) { /* the previous run ended in this block */
                    slot = listed - 1;
                    block++;
                }
                for (; block <= last_block; block++)
                    blocks[listed++] = block;
                piece_source[pieces] = (uint32_t)(4 * slot + (first & 3u));
                piece_length[pieces++] = (uint32_t)n;
            }
            filled += n;
            count -= n;
            inside += n;
            if (inside == length) {
                inside = 0;
                next_run(layout, coord, &along, &run_first, extent, stride);
            }
        }
        if (!aligned) {
            philox4x64_10_list(blocks, listed, stream, k0, k1, block_words);
            size_t position = in_place;
            for (size_t k = 0; k < pieces; k++) {
                const uint64_t *source = block_words + piece_source[k];
                for (uint32_t j = 0; j < piece_length[k]; j++)
                    words[position + j] = source[j];
                position += piece_length[k];
            }
        }
        if (program->kind == IS_WORDS) {
            memcpy(cursor, words, filled * sizeof(uint64_t));
        } else {
            tile_values(program, words, filled, values);
            store(program->dtype, values, filled, cursor);
        }
        cursor += filled * itemsize;
    }
}

void is_fill_result(const is_program *program, const is_layout *layout, uint64_t start, size_t count, void *out)
{
    unsigned char *cursor = (unsigned char *)out;
    const size_t itemsize = is_itemsize(program->dtype);
    if (layout->rank == 0 || program->kind == IS_CONSTANT) { /* a constant's value does not depend on the index */
        is_fill_range(program, layout->base + start, count, out);
        return;
    }
    /* the run that holds result element `start`, and the offset inside it */
    uint64_t run = start / layout->run_length;
    uint64_t inside = start % layout->run_length;
    uint64_t coord[IS_MAX_RANK];
    for (int d = layout->rank - 1; d >= 0; d--) {
        coord[d] = run % layout->extents[d];
        run /= layout->extents[d];
    }
    if (layout->run_length < SHORT_RUN) {
        fill_short_runs(program, layout, coord, inside, count, cursor);
        return;
    }
    while (count > 0) {
        const uint64_t first = run_start(layout, coord) + inside;
        const uint64_t left = layout->run_length - inside;
        const size_t n = left < (uint64_t)count ? (size_t)left : count;
        is_fill_range(program, first, n, cursor);
        cursor += n * itemsize;
        count -= n;
        inside = 0;
        for (int d = layout->rank - 1; d >= 0; d--) { /* next run: odometer, last dimension fastest */
            if (++coord[d] < layout->extents[d])
                break;
            coord[d] = 0;
        }
    }
}
