/* Orthogonal, algorithm 2: the blocked Householder QR of docs/determinism.md §7.1, in C.
 *
 * Two primitives; the caller (householder.py) runs the panels in order and splits each block
 * update over threads by columns, so the GIL is released for every call and threads never share a
 * sum. Every sum is sequential (s = p0; s = s + p_i in ascending order, over the full index range),
 * every operation is one IEEE rounding, never fused (-ffp-contract=off): the bytes equal the numpy
 * kernel's and the scalar reference's. Vectorisation runs across independent sums only (columns k of
 * the trailing matrix, rows r of the update), never inside one. */
#ifndef INITSERVE_HOUSEHOLDER_H
#define INITSERVE_HOUSEHOLDER_H

#include <stddef.h>

#define IS_QR_PANEL 32 /* columns per panel: part of the algorithm (it fixes which sums exist) */

/* Factorize one panel: ``a`` points at A[j0][j0] of a row-major matrix with row stride ``lda``;
 * the panel is its ``rows`` x ``b`` corner (rows = m - j0, b <= 32, b <= rows). Writes
 * v (rows x b, row-major): the unit lower-trapezoidal V, zeros above its diagonal;
 * t (b x b, row-major): the upper-triangular T of I - V T V^T = H_j0 ... H_j0+b-1;
 * rdiag (b): R's diagonal. ``a`` is read, not written. */
void is_qr_panel(const double *a, size_t lda, size_t rows, size_t b, double *v, double *t, double *rdiag);

/* C <- C - V T' V^T C for the rows x cols block C (row-major, row stride ldc), T' = T^T when
 * ``transpose`` (factorization), T otherwise (forming Q). Columns are independent: any split of the
 * columns over calls/threads gives the same bytes. ``work``: (2 b x cols) doubles of scratch. */
void is_qr_apply(const double *v, const double *t, size_t rows, size_t b, double *c, size_t ldc, size_t cols,
                 int transpose, double *work);

/* The whole of §7.1 with the sign fix: a (m x n, row-major, m >= n) is factorized, then overwritten by
 * Q·diag(s); rdiag (n) receives R's diagonal. ``threads`` threads split every block update by
 * columns (any count gives the same bytes). Returns 0, or -1 when memory runs out (nothing written). */
int is_qr_haar(double *a, size_t m, size_t n, double *rdiag, int threads);

/* Internal to the kernel's files. The vectorised panel (householder_panel.c): the same bytes as the
 * scalar one; returns 0 (and does nothing) where it does not apply (b not a multiple of 8, no vector
 * extensions), and is_qr_panel then runs the scalar code. */
int is_qr_panel_vector(const double *a, size_t lda, size_t rows, size_t b, double *v, double *t, double *rdiag);

/* T of a panel from its taus and y[l][c] = sum_r V[r][l] V[r][c] (l < c), as §7.1 step 3 writes it. */
void is_qr_panel_t(const double *taus, double (*y)[IS_QR_PANEL], size_t b, double *t);

#endif
