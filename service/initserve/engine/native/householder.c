/* Orthogonal, algorithm 2 (docs/determinism.md §7.1): panel factorization and block update.
 *
 * The order of every operation is the document's; see householder.h. Speed comes from working on
 * many independent sums at once: a register tile holds 4 x 8 (or 4 rows x 8 columns) partial sums,
 * each of which still adds its terms one at a time in ascending order. Vector lanes are independent
 * sums, so the SIMD width (SSE2, AVX2, AVX-512 or none) cannot change a bit. */
#include "householder.h"
#include "householder_simd.h"

#include <math.h>
#include <string.h>

/* --- the panel ------------------------------------------------------------------------------- */

/* Reflector of column t of the panel p (rows x b, row stride b): returns tau, writes R's diagonal. */
static double reflector(double *p, size_t rows, size_t b, size_t t, double *rdiag)
{
    double alpha = p[t * b + t];
    double sigma = 0.0;
    if (t + 1 < rows) {
        double x = p[(t + 1) * b + t];
        sigma = x * x;
        for (size_t r = t + 2; r < rows; r++) {
            x = p[r * b + t];
            sigma = sigma + x * x;
        }
    }
    if (sigma == 0.0) { /* H = I: no column below, or it is all zero */
        for (size_t r = t + 1; r < rows; r++)
            p[r * b + t] = 0.0;
        rdiag[t] = alpha;
        return 0.0;
    }
    double norm = sqrt(alpha * alpha + sigma);
    double beta = alpha >= 0.0 ? -norm : norm;
    double tau = (beta - alpha) / beta;
    double d = alpha - beta;
    for (size_t r = t + 1; r < rows; r++)
        p[r * b + t] = p[r * b + t] / d;
    p[t * b + t] = beta;
    rdiag[t] = beta;
    return tau;
}

IS_CLONES void is_qr_panel_t(const double *taus, double (*y)[IS_QR_PANEL], size_t b, double *t)
{
    /* tt[q][l] = T[l][q]: column c of T is then a sum of rows of tt, vectorised across l (each z_l
     * still adds its terms in ascending q). */
    double tt[IS_QR_PANEL][IS_QR_PANEL], z[IS_QR_PANEL];
    memset(tt, 0, sizeof tt);
    for (size_t c = 0; c < b; c++) {
        if (c > 0) {
            const double y0 = y[0][c];
            for (size_t l = 0; l < c; l++)
                z[l] = tt[0][l] * y0;
            for (size_t q = 1; q < c; q++) {
                const double yq = y[q][c];
                for (size_t l = 0; l < c; l++)
                    z[l] = z[l] + tt[q][l] * yq;
            }
            for (size_t l = 0; l < c; l++)
                tt[c][l] = -(taus[c] * z[l]);
        }
        tt[c][c] = taus[c];
    }
    for (size_t l = 0; l < b; l++)
        for (size_t c = 0; c < b; c++)
            t[l * b + c] = tt[c][l];
}

void is_qr_panel(const double *a, size_t lda, size_t rows, size_t b, double *v, double *t, double *rdiag)
{
    if (is_qr_panel_vector(a, lda, rows, b, v, t, rdiag))
        return;
    double w[IS_QR_PANEL], u[IS_QR_PANEL], taus[IS_QR_PANEL];
    for (size_t r = 0; r < rows; r++)
        memcpy(v + r * b, a + r * lda, b * sizeof(double));
    for (size_t c = 0; c < b; c++) {
        double tau = reflector(v, rows, b, c, rdiag);
        taus[c] = tau;
        if (c + 1 >= b)
            continue;
        /* w_k = sum_{r >= c} v_r * P[r][k] (v_c = 1), k = c+1 .. b-1: one sequential sum per k */
        for (size_t k = c + 1; k < b; k++)
            w[k] = 1.0 * v[c * b + k];
        for (size_t r = c + 1; r < rows; r++) {
            const double vr = v[r * b + c];
            const double *row = v + r * b;
            for (size_t k = c + 1; k < b; k++)
                w[k] = w[k] + vr * row[k];
        }
        for (size_t k = c + 1; k < b; k++)
            u[k] = tau * w[k];
        for (size_t k = c + 1; k < b; k++)
            v[c * b + k] = v[c * b + k] - 1.0 * u[k];
        for (size_t r = c + 1; r < rows; r++) {
            const double vr = v[r * b + c];
            double *row = v + r * b;
            for (size_t k = c + 1; k < b; k++)
                row[k] = row[k] - vr * u[k];
        }
    }
    /* V: zeros above the unit diagonal */
    for (size_t r = 0; r < b; r++) {
        for (size_t l = r; l < b; l++)
            v[r * b + l] = l == r ? 1.0 : 0.0;
    }
    /* y[l][c] = sum_r V[r][l] * V[r][c] for l < c (all rows, sequential); then T column by column */
    double y[IS_QR_PANEL][IS_QR_PANEL];
    for (size_t c = 1; c < b; c++)
        for (size_t l = 0; l < c; l++)
            y[l][c] = v[l] * v[c];
    for (size_t r = 1; r < rows; r++) {
        const double *row = v + r * b;
        for (size_t c = 1; c < b; c++) {
            const double vc = row[c];
            for (size_t l = 0; l < c; l++)
                y[l][c] = y[l][c] + row[l] * vc;
        }
    }
    is_qr_panel_t(taus, y, b, t);
}

/* --- the block update ------------------------------------------------------------------------ */

/* W[l][k] = sum_r V[r][l] * C[r][k], for l in [l0, l0+nl), all k < cols (W row stride cols). */
static void gather_scalar(const double *v, size_t b, size_t rows, const double *c, size_t ldc, size_t k, double *w,
                          size_t cols, size_t l)
{
    double s = v[l] * c[k];
    for (size_t r = 1; r < rows; r++)
        s = s + v[r * b + l] * c[r * ldc + k];
    w[l * cols + k] = s;
}

/* Rows per pass of the column tile: the tile's rows (ROWS x 64 bytes) stay in L1 while every group
 * of 4 reflectors passes over them; each partial sum is stored and picked up again by the next pass,
 * so it still adds its terms in ascending row order. */
#define GATHER_ROWS 128

/* Columns k0 .. cols-1 of W (row stride cols). */
IS_CLONES static void gather(const double *v, size_t b, size_t rows, const double *c, size_t ldc, size_t cols, double *w,
                             size_t k0)
{
    size_t k = k0;
#if IS_VECTOR
    for (; k + 8 <= cols; k += 8) {
        for (size_t r0 = 0; r0 < rows; r0 += GATHER_ROWS) {
            const size_t r1 = rows - r0 < GATHER_ROWS ? rows : r0 + GATHER_ROWS;
            size_t l = 0;
            for (; l + 4 <= b; l += 4) {
                const double *cr = c + r0 * ldc + k, *vr = v + r0 * b + l;
                double *out = w + l * cols + k;
                vd4 c0 = load4(cr), c1 = load4(cr + 4);
                double s0 = vr[0], s1 = vr[1], s2 = vr[2], s3 = vr[3];
                vd4 a00, a01, a10, a11, a20, a21, a30, a31;
                if (r0 == 0) { /* the first term starts each sum */
                    a00 = s0 * c0, a01 = s0 * c1, a10 = s1 * c0, a11 = s1 * c1;
                    a20 = s2 * c0, a21 = s2 * c1, a30 = s3 * c0, a31 = s3 * c1;
                } else {
                    a00 = load4(out) + s0 * c0, a01 = load4(out + 4) + s0 * c1;
                    a10 = load4(out + cols) + s1 * c0, a11 = load4(out + cols + 4) + s1 * c1;
                    a20 = load4(out + 2 * cols) + s2 * c0, a21 = load4(out + 2 * cols + 4) + s2 * c1;
                    a30 = load4(out + 3 * cols) + s3 * c0, a31 = load4(out + 3 * cols + 4) + s3 * c1;
                }
                for (size_t r = r0 + 1; r < r1; r++) {
                    cr += ldc;
                    vr += b;
                    c0 = load4(cr);
                    c1 = load4(cr + 4);
                    s0 = vr[0];
                    s1 = vr[1];
                    s2 = vr[2];
                    s3 = vr[3];
                    a00 = a00 + s0 * c0;
                    a01 = a01 + s0 * c1;
                    a10 = a10 + s1 * c0;
                    a11 = a11 + s1 * c1;
                    a20 = a20 + s2 * c0;
                    a21 = a21 + s2 * c1;
                    a30 = a30 + s3 * c0;
                    a31 = a31 + s3 * c1;
                }
                store4(out, a00);
                store4(out + 4, a01);
                store4(out + cols, a10);
                store4(out + cols + 4, a11);
                store4(out + 2 * cols, a20);
                store4(out + 2 * cols + 4, a21);
                store4(out + 3 * cols, a30);
                store4(out + 3 * cols + 4, a31);
            }
            for (; l < b; l++) {
                const double *cr = c + r0 * ldc + k, *vr = v + r0 * b + l;
                double *out = w + l * cols + k;
                double s = vr[0];
                vd4 a0 = s * load4(cr), a1 = s * load4(cr + 4);
                if (r0 != 0) {
                    a0 = load4(out) + a0;
                    a1 = load4(out + 4) + a1;
                }
                for (size_t r = r0 + 1; r < r1; r++) {
                    cr += ldc;
                    vr += b;
                    s = vr[0];
                    a0 = a0 + s * load4(cr);
                    a1 = a1 + s * load4(cr + 4);
                }
                store4(out, a0);
                store4(out + 4, a1);
            }
        }
    }
#endif
    for (; k < cols; k++)
        for (size_t l = 0; l < b; l++)
            gather_scalar(v, b, rows, c, ldc, k, w, cols, l);
}

/* C[r][k] = C[r][k] - sum_l V[r][l] * W2[l][k] (subtract), or C[r][k] = the sum (W' = T' W). */
static void scatter_scalar(const double *v, size_t b, const double *w2, size_t cols, double *c, size_t ldc, size_t r,
                           size_t k, int subtract)
{
    double s = v[r * b] * w2[k];
    for (size_t l = 1; l < b; l++)
        s = s + v[r * b + l] * w2[l * cols + k];
    c[r * ldc + k] = subtract ? c[r * ldc + k] - s : s;
}

/* Columns k0 .. cols-1 of C. */
IS_CLONES static void scatter(const double *v, size_t b, size_t rows, const double *w2, size_t cols, double *c,
                              size_t ldc, size_t k0, int subtract)
{
    size_t k = k0;
#if IS_VECTOR
    for (; k + 8 <= cols; k += 8) {
        size_t r = 0;
        for (; r + 4 <= rows; r += 4) {
            const double *v0 = v + r * b, *v1 = v0 + b, *v2 = v1 + b, *v3 = v2 + b;
            const double *wl = w2 + k;
            vd4 w0 = load4(wl), w1 = load4(wl + 4);
            double s = v0[0];
            vd4 a00 = s * w0, a01 = s * w1;
            s = v1[0];
            vd4 a10 = s * w0, a11 = s * w1;
            s = v2[0];
            vd4 a20 = s * w0, a21 = s * w1;
            s = v3[0];
            vd4 a30 = s * w0, a31 = s * w1;
            for (size_t l = 1; l < b; l++) {
                wl += cols;
                w0 = load4(wl);
                w1 = load4(wl + 4);
                s = v0[l];
                a00 = a00 + s * w0;
                a01 = a01 + s * w1;
                s = v1[l];
                a10 = a10 + s * w0;
                a11 = a11 + s * w1;
                s = v2[l];
                a20 = a20 + s * w0;
                a21 = a21 + s * w1;
                s = v3[l];
                a30 = a30 + s * w0;
                a31 = a31 + s * w1;
            }
            double *cr = c + r * ldc + k;
            store4(cr, subtract ? load4(cr) - a00 : a00);
            store4(cr + 4, subtract ? load4(cr + 4) - a01 : a01);
            cr += ldc;
            store4(cr, subtract ? load4(cr) - a10 : a10);
            store4(cr + 4, subtract ? load4(cr + 4) - a11 : a11);
            cr += ldc;
            store4(cr, subtract ? load4(cr) - a20 : a20);
            store4(cr + 4, subtract ? load4(cr + 4) - a21 : a21);
            cr += ldc;
            store4(cr, subtract ? load4(cr) - a30 : a30);
            store4(cr + 4, subtract ? load4(cr + 4) - a31 : a31);
        }
        for (; r < rows; r++) {
            const double *vr = v + r * b, *wl = w2 + k;
            double s = vr[0];
            vd4 a0 = s * load4(wl), a1 = s * load4(wl + 4);
            for (size_t l = 1; l < b; l++) {
                wl += cols;
                s = vr[l];
                a0 = a0 + s * load4(wl);
                a1 = a1 + s * load4(wl + 4);
            }
            double *cr = c + r * ldc + k;
            store4(cr, subtract ? load4(cr) - a0 : a0);
            store4(cr + 4, subtract ? load4(cr + 4) - a1 : a1);
        }
    }
#endif
    for (; k < cols; k++)
        for (size_t r = 0; r < rows; r++)
            scatter_scalar(v, b, w2, cols, c, ldc, r, k, subtract);
}


#if IS_WIDE
/* With AVX-512's 32 vector registers a tile holds 8 x 16 sums: 8 reflectors x 16 columns for W,
 * 8 rows x 16 columns for the update. Each is still one sequential sum per lane. */
#define IS_AVX512 __attribute__((target("avx512f")))

IS_AVX512 static inline vd8 load8(const double *p)
{
    vd8 x;
    memcpy(&x, p, sizeof x);
    return x;
}

IS_AVX512 static inline void store8(double *p, vd8 x) { memcpy(p, &x, sizeof x); }

/* W for the 16-column tiles from column 0; returns the first column not done (b must be a multiple of 8). */
IS_AVX512 static size_t gather_wide(const double *v, size_t b, size_t rows, const double *c, size_t ldc, size_t cols,
                                    double *w)
{
    size_t k = 0;
    for (; k + 16 <= cols; k += 16) {
        for (size_t r0 = 0; r0 < rows; r0 += GATHER_ROWS) {
            const size_t r1 = rows - r0 < GATHER_ROWS ? rows : r0 + GATHER_ROWS;
            for (size_t l = 0; l < b; l += 8) {
                const double *cr = c + r0 * ldc + k, *vr = v + r0 * b + l;
                double *out = w + l * cols + k;
                vd8 acc[8][2];
                vd8 c0 = load8(cr), c1 = load8(cr + 8);
                for (int i = 0; i < 8; i++) {
                    const double s = vr[i];
                    if (r0 == 0) { /* the first term starts each sum */
                        acc[i][0] = s * c0;
                        acc[i][1] = s * c1;
                    } else {
                        acc[i][0] = load8(out + i * cols) + s * c0;
                        acc[i][1] = load8(out + i * cols + 8) + s * c1;
                    }
                }
                for (size_t r = r0 + 1; r < r1; r++) {
                    cr += ldc;
                    vr += b;
                    c0 = load8(cr);
                    c1 = load8(cr + 8);
                    for (int i = 0; i < 8; i++) {
                        const double s = vr[i];
                        acc[i][0] = acc[i][0] + s * c0;
                        acc[i][1] = acc[i][1] + s * c1;
                    }
                }
                for (int i = 0; i < 8; i++) {
                    store8(out + i * cols, acc[i][0]);
                    store8(out + i * cols + 8, acc[i][1]);
                }
            }
        }
    }
    return k;
}

/* The update for the 16-column tiles from column 0; returns the first column not done. */
IS_AVX512 static size_t scatter_wide(const double *v, size_t b, size_t rows, const double *w2, size_t cols, double *c,
                                     size_t ldc, int subtract)
{
    size_t k = 0;
    for (; k + 16 <= cols; k += 16) {
        size_t r = 0;
        for (; r + 8 <= rows; r += 8) {
            const double *vr = v + r * b, *wl = w2 + k;
            vd8 acc[8][2];
            vd8 w0 = load8(wl), w1 = load8(wl + 8);
            for (int i = 0; i < 8; i++) {
                const double s = vr[i * b];
                acc[i][0] = s * w0;
                acc[i][1] = s * w1;
            }
            for (size_t l = 1; l < b; l++) {
                wl += cols;
                w0 = load8(wl);
                w1 = load8(wl + 8);
                for (int i = 0; i < 8; i++) {
                    const double s = vr[i * b + l];
                    acc[i][0] = acc[i][0] + s * w0;
                    acc[i][1] = acc[i][1] + s * w1;
                }
            }
            for (int i = 0; i < 8; i++) {
                double *cr = c + (r + i) * ldc + k;
                store8(cr, subtract ? load8(cr) - acc[i][0] : acc[i][0]);
                store8(cr + 8, subtract ? load8(cr + 8) - acc[i][1] : acc[i][1]);
            }
        }
        for (; r < rows; r++) {
            const double *vr = v + r * b, *wl = w2 + k;
            double s = vr[0];
            vd8 a0 = s * load8(wl), a1 = s * load8(wl + 8);
            for (size_t l = 1; l < b; l++) {
                wl += cols;
                s = vr[l];
                a0 = a0 + s * load8(wl);
                a1 = a1 + s * load8(wl + 8);
            }
            double *cr = c + r * ldc + k;
            store8(cr, subtract ? load8(cr) - a0 : a0);
            store8(cr + 8, subtract ? load8(cr + 8) - a1 : a1);
        }
    }
    return k;
}
#endif

void is_qr_apply(const double *v, const double *t, size_t rows, size_t b, double *c, size_t ldc, size_t cols,
                 int transpose, double *work)
{
    if (cols == 0 || rows == 0 || b == 0)
        return;
    double *w = work, *w2 = work + b * cols;
    /* W' = T' W is the same kind of product as the update (rows of a small row-major matrix times W,
     * one sequential sum over q per element), stored instead of subtracted: T' is written out first. */
    double tt[IS_QR_PANEL * IS_QR_PANEL];
    const double *tp = t;
    if (transpose) {
        for (size_t l = 0; l < b; l++)
            for (size_t q = 0; q < b; q++)
                tt[l * b + q] = t[q * b + l];
        tp = tt;
    }
    size_t gathered = 0, mixed = 0, scattered = 0; /* columns done by the wide tiles */
#if IS_WIDE
    const int wide = __builtin_cpu_supports("avx512f");
    if (wide && b % 8 == 0)
        gathered = gather_wide(v, b, rows, c, ldc, cols, w);
#endif
    gather(v, b, rows, c, ldc, cols, w, gathered);
#if IS_WIDE
    if (wide)
        mixed = scatter_wide(tp, b, b, w, cols, w2, cols, 0);
#endif
    scatter(tp, b, b, w, cols, w2, cols, mixed, 0);
#if IS_WIDE
    if (wide)
        scattered = scatter_wide(v, b, rows, w2, cols, c, ldc, 1);
#endif
    scatter(v, b, rows, w2, cols, c, ldc, scattered, 1);
}
