/* Orthogonal, algorithm 2 (docs/determinism.md §7.1): the panel factorization, vectorised across a row.
 *
 * The same operations as the scalar panel in householder.c, in the same order per sum; only the
 * passes are merged. Per column c of the panel, two passes over the rows instead of five:
 *   pass A (rows r > c): v_r = P[r][c] / d, then one multiply-add per lane of the row: lanes k > c
 *     continue w_k (the reflector's dot products), lanes l < c continue y[l][c] (T's dot products,
 *     whose terms for rows r <= c are structural zeros and ones, added first exactly as written);
 *   pass B (rows r >= c): P[r][k] - v_r * u_k for the lanes k > c, and, as each row is done, the
 *     next column's sigma = sum of squares below its diagonal.
 * Every lane is its own sequential sum over ascending rows, so the vector width changes no bit; the
 * lanes of other columns compute values that are never stored. */
#include "householder.h"
#include "householder_simd.h"

#include <math.h>
#include <string.h>

#if IS_VECTOR

enum { LANES = 8 }; /* a row of a full panel is 4 vectors of 8 */

typedef long long vl8 __attribute__((vector_size(64)));

/* x where lane index > c, else keep (bitwise select: no arithmetic on the kept lanes). */
static inline __attribute__((always_inline)) vd8 select_after(vd8 x, vd8 keep, size_t first, size_t c)
{
    vl8 index = {0, 1, 2, 3, 4, 5, 6, 7};
    vl8 mask = (index + (long long)first) > (long long)c;
    return (vd8)(((vl8)x & mask) | ((vl8)keep & ~mask));
}

/* Pass B of column c: rows r >= c of the lanes k > c get P[r][k] - v_r·u_k (v_c = 1), vectors first .. 3
 * of each row; returns the next column's sigma = sum_{r >= c+2} P[r][c+1]^2 (updated values, in order). */
static inline __attribute__((always_inline)) double pass_b(double *p, size_t rows, size_t c, const double *u,
                                                           const size_t first)
{
    const size_t b = IS_QR_PANEL, next = c + 1, jn = next / LANES, ln = next % LANES;
    vd8 uv[4];
    for (size_t j = first; j < 4; j++)
        uv[j] = vload8(u + j * LANES);
    double sigma = 0.0;
    for (size_t r = c; r < rows; r++) {
        double *row = p + r * b;
        const double s = r == c ? 1.0 : row[c];
        vd8 o[4];
        for (size_t j = first; j < 4; j++) {
            const vd8 x = vload8(row + j * LANES);
            o[j] = x - s * uv[j];
            if (j == first) /* lanes up to c keep their value (V, R): a select, no arithmetic on them */
                o[j] = select_after(o[j], x, first * LANES, c);
            vstore8(row + j * LANES, o[j]);
        }
        if (r > next) {
            const double x = o[jn][ln];
            sigma = r == next + 1 ? x * x : sigma + x * x;
        }
    }
    return sigma;
}

IS_CLONES int is_qr_panel_vector(const double *a, size_t lda, size_t rows, size_t b, double *v, double *t, double *rdiag)
{
    if (b != IS_QR_PANEL || rows < b) /* full panels; a narrower last one runs the scalar code */
        return 0;
    double taus[IS_QR_PANEL], y[IS_QR_PANEL][IS_QR_PANEL], zeros[IS_QR_PANEL];
    double *p = v;
    for (size_t r = 0; r < rows; r++)
        memcpy(p + r * b, a + r * lda, b * sizeof(double));
    /* sigma of column 0 */
    double sigma = 0.0;
    if (1 < rows) {
        double x = p[b];
        sigma = x * x;
        for (size_t r = 2; r < rows; r++) {
            x = p[r * b];
            sigma = sigma + x * x;
        }
    }
    for (size_t c = 0; c < b; c++) {
        /* the reflector (householder.c: reflector) */
        const double alpha = p[c * b + c];
        double tau = 0.0, d = 0.0;
        const int identity = sigma == 0.0;
        if (identity) {
            rdiag[c] = alpha;
        } else {
            const double norm = sqrt(alpha * alpha + sigma);
            const double beta = alpha >= 0.0 ? -norm : norm;
            tau = (beta - alpha) / beta;
            d = alpha - beta;
            p[c * b + c] = beta;
            rdiag[c] = beta;
        }
        taus[c] = tau;
        /* pass A: first terms (row c), then rows c+1 .. rows-1. y[l][c]'s terms for rows 0 .. c, l < c: V[r][l]·V[r][c] with V[r][c] = 0 for r < c and 1 for
         * r = c (p holds R and alpha there during the factorization, so the structure is written out).
         * zeros[l] carries the sum over rows 0 .. c-1 from the previous column: it gains one term. */
        if (c >= 1) {
            const size_t l = c - 1; /* a new sum: rows 0 .. c-1, V[r][l] = 0 above its diagonal, 1 on it */
            double s = (l == 0 ? 1.0 : 0.0) * 0.0;
            for (size_t q = 1; q <= l; q++)
                s = s + (q == l ? 1.0 : 0.0) * 0.0;
            zeros[l] = s;
            for (size_t k = 0; k < l; k++) /* earlier sums: row c-1, below their diagonal */
                zeros[k] = zeros[k] + p[(c - 1) * b + k] * 0.0;
        }
        double head[IS_QR_PANEL];
        for (size_t l = 0; l < c; l++)
            head[l] = zeros[l] + p[c * b + l] * 1.0;
        head[c] = 0.0;
        for (size_t k = c + 1; k < b; k++)
            head[k] = 1.0 * p[c * b + k];
        vd8 a0 = vload8(head), a1 = vload8(head + 8), a2 = vload8(head + 16), a3 = vload8(head + 24);
        size_t r = c + 1;
        for (; r < rows; r++) { /* v_r = A[r][c] / d (scalar: divisions pipeline; a gathered vector was slower) */
            double *row = p + r * b;
            const double s = identity ? 0.0 : row[c] / d;
            const vd8 x0 = vload8(row), x1 = vload8(row + 8), x2 = vload8(row + 16), x3 = vload8(row + 24);
            row[c] = s;
            a0 = a0 + s * x0;
            a1 = a1 + s * x1;
            a2 = a2 + s * x2;
            a3 = a3 + s * x3;
        }
        double sums[IS_QR_PANEL];
        vstore8(sums, a0);
        vstore8(sums + 8, a1);
        vstore8(sums + 16, a2);
        vstore8(sums + 24, a3);
        for (size_t l = 0; l < c; l++)
            y[l][c] = sums[l];
        if (c + 1 >= b)
            break;
        double u[IS_QR_PANEL]; /* u_k = tau·w_k */
        for (size_t k = 0; k < b; k++)
            u[k] = k > c ? tau * sums[k] : 0.0;
        switch ((c + 1) / LANES) { /* the vectors that hold lanes > c; the others are not touched */
        case 0: sigma = pass_b(p, rows, c, u, 0); break;
        case 1: sigma = pass_b(p, rows, c, u, 1); break;
        case 2: sigma = pass_b(p, rows, c, u, 2); break;
        default: sigma = pass_b(p, rows, c, u, 3); break;
        }
    }
    /* V: zeros above the unit diagonal */
    for (size_t r = 0; r < b; r++)
        for (size_t l = r; l < b; l++)
            p[r * b + l] = l == r ? 1.0 : 0.0;
    is_qr_panel_t(taus, y, b, t);
    return 1;
}

#else

int is_qr_panel_vector(const double *a, size_t lda, size_t rows, size_t b, double *v, double *t, double *rdiag)
{
    (void)a, (void)lda, (void)rows, (void)b, (void)v, (void)t, (void)rdiag;
    return 0;
}

#endif
