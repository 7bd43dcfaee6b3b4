/* Algorithm 1 of docs/determinism.md: element words -> binary64 values -> the output dtype.
 *
 * Everything here is plain C99 with no global state: a program (what to compute) and a layout
 * (which full-tensor elements make up the result) are passed in, the caller owns the memory. */
#ifndef INITSERVE_ALGORITHM1_H
#define INITSERVE_ALGORITHM1_H

#include <stddef.h>
#include <stdint.h>

enum is_kind { IS_CONSTANT = 0, IS_UNIFORM = 1, IS_NORMAL = 2, IS_WORDS = 3 };
enum is_dtype { IS_F64 = 0, IS_F32 = 1, IS_F16 = 2, IS_BF16 = 3, IS_U64 = 4 };

#define IS_MAX_RANK 8

typedef struct {
    uint64_t k0, k1;  /* Philox key (section 3) */
    uint64_t stream;  /* counter word c1 (section 4) */
    int kind;         /* enum is_kind */
    int dtype;        /* enum is_dtype; IS_U64 only with IS_WORDS */
    double value;     /* IS_CONSTANT */
    double low, width; /* IS_UNIFORM: x = low + width*u, width = high - low rounded once */
    /* IS_NORMAL (section 7, TruncatedNormal), every scalar computed by the caller */
    double mean, std, lo, hi, alpha, beta, p_low, p_width;
    int mirrored, truncated;
} is_program;

/* The result is a union of runs of consecutive full-tensor indices. Run r (0 <= r < prod extents)
 * starts at base + sum_d coord_d(r) * strides[d], where coord(r) is r in mixed radix of `extents`
 * (last dimension fastest), and holds run_length elements. rank = 0: one run from base. */
typedef struct {
    uint64_t base, run_length;
    int rank;
    uint64_t extents[IS_MAX_RANK], strides[IS_MAX_RANK];
} is_layout;

size_t is_itemsize(int dtype);

/* Elements first .. first+count-1 of the full flat tensor into out (count * itemsize bytes). */
void is_fill_range(const is_program *program, uint64_t first, size_t count, void *out);

/* Result elements start .. start+count-1 (after the layout's slicing) into out. */
void is_fill_result(const is_program *program, const is_layout *layout, uint64_t start, size_t count, void *out);

#endif
