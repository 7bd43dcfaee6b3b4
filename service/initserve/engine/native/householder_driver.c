/* Orthogonal, algorithm 2 (docs/determinism.md §7.1): the whole QR and Q·diag(s) in one call.
 *
 * The panels and block updates are householder.c's and householder_panel.c's; this file only decides
 * which thread runs which columns, so it changes no bit: in every block update a column k of C is
 * its own computation (its W, W' and update use column k alone), and a thread always carries its
 * columns through the panels in the document's order.
 *   Factorization: one barrier per panel. While the other threads update the trailing columns with
 *     panel p, thread 0 updates the next panel's columns first and factorizes panel p+1 (look-ahead),
 *     so the sequential panel work overlaps the update.
 *   Forming Q: every thread owns a fixed range of Q's columns and applies all panels to it in reverse
 *     order, with no synchronisation at all; the ranges are chosen so that the flops are even. */
#if !defined(_WIN32)
#define _POSIX_C_SOURCE 200809L
#endif
#include "householder.h"

#include <stdlib.h>
#include <string.h>

#if !defined(_WIN32)
#include <pthread.h>
#define IS_THREADS 1
#else
#define IS_THREADS 0 /* one thread: the same bytes, only slower */
#endif

#define NB IS_QR_PANEL
#define TILE 16 /* column ranges start on multiples of the widest column tile */
#define MAX_THREADS 64

typedef struct {
    double *a, *rdiag, *vs, *ts; /* a: the matrix, then Q */
    size_t m, n, panels;
    int threads;
    size_t *v_offset;
    double **work; /* per thread: 2 NB x n doubles */
#if IS_THREADS
    pthread_mutex_t lock;
    pthread_cond_t turn;
    unsigned arrived, generation;
    int gate; /* 0: wait, 1: run, 2: every thread could not be started, the caller does it all */
#endif
} job;

static size_t width_of(const job *jb, size_t p) { return jb->n - p * NB < NB ? jb->n - p * NB : NB; }

static void barrier(job *jb)
{
#if IS_THREADS
    if (jb->threads == 1)
        return;
    pthread_mutex_lock(&jb->lock);
    const unsigned generation = jb->generation;
    if (++jb->arrived == (unsigned)jb->threads) {
        jb->arrived = 0;
        jb->generation++;
        pthread_cond_broadcast(&jb->turn);
    } else {
        while (generation == jb->generation)
            pthread_cond_wait(&jb->turn, &jb->lock);
    }
    pthread_mutex_unlock(&jb->lock);
#else
    (void)jb;
#endif
}

static void panel(job *jb, size_t p)
{
    const size_t j0 = p * NB;
    is_qr_panel(jb->a + j0 * jb->n + j0, jb->n, jb->m - j0, width_of(jb, p), jb->vs + jb->v_offset[p],
                jb->ts + p * NB * NB, jb->rdiag + j0);
}

/* Block update of columns [k0, k1) of c (row stride n) by panel p; c points at row p·NB. */
static void apply(job *jb, int who, size_t p, double *c, size_t k0, size_t k1, int transpose)
{
    if (k1 <= k0)
        return;
    is_qr_apply(jb->vs + jb->v_offset[p], jb->ts + p * NB * NB, jb->m - p * NB, width_of(jb, p), c + k0, jb->n,
                k1 - k0, transpose, jb->work[who]);
}

static size_t round_tile(double x, size_t lo, size_t hi)
{
    size_t k = x <= (double)lo ? lo : (size_t)x;
    k = lo + (k - lo + TILE / 2) / TILE * TILE;
    return k > hi ? hi : k;
}

/* The panel, in columns of the block update at the same height: measured ≈ 3 x 32 (it runs at about a
 * quarter of the update's rate). Only balances the threads; the bytes do not depend on it. */
#define PANEL_COST_COLUMNS 96.0

static void factorize(job *jb, int who)
{
    const size_t n = jb->n;
    const int threads = jb->threads;
    if (who == 0)
        panel(jb, 0);
    barrier(jb);
    for (size_t p = 0; p < jb->panels; p++) {
        const size_t j0 = p * NB, start = j0 + width_of(jb, p); /* trailing columns [start, n) */
        if (start >= n)
            break;
        const int more = p + 1 < jb->panels;
        const size_t ahead = more ? start + width_of(jb, p + 1) : start; /* thread 0 first updates [start, ahead) */
        double *c = jb->a + j0 * n;
        /* thread 0: [start, split0) then panel p+1; threads 1..: [split0, n) in equal parts */
        const double total = (double)(n - start) + (more ? PANEL_COST_COLUMNS : 0.0);
        const double share = total / threads;
        size_t split0 = threads == 1 ? n : round_tile((double)start + share - (more ? PANEL_COST_COLUMNS : 0.0), ahead, n);
        if (who == 0) {
            apply(jb, 0, p, c, start, ahead, 1);
            if (more)
                panel(jb, p + 1);
            apply(jb, 0, p, c, ahead, split0, 1);
        } else {
            const size_t rest = n - split0, per = rest / (size_t)(threads - 1);
            const size_t k0 = split0 + round_tile((double)(per * (size_t)(who - 1)), 0, rest);
            const size_t k1 = who == threads - 1 ? n : split0 + round_tile((double)(per * (size_t)who), 0, rest);
            apply(jb, who, p, c, k0, k1, 1);
        }
        barrier(jb);
    }
}

/* Columns [lo, hi) of Q, written over the factorized matrix (its V and T are kept apart, and the last
 * barrier of the factorization has passed): the identity's, then every panel in reverse order, then
 * the signs of R. */
static void form_q(job *jb, int who, size_t lo, size_t hi)
{
    const size_t m = jb->m, n = jb->n;
    for (size_t i = 0; i < m; i++) {
        double *row = jb->a + i * n;
        for (size_t k = lo; k < hi; k++)
            row[k] = i == k ? 1.0 : 0.0;
    }
    for (size_t p = jb->panels; p-- > 0;) {
        const size_t j0 = p * NB, k0 = lo > j0 ? lo : j0;
        apply(jb, who, p, jb->a + j0 * n, k0, hi, 0);
    }
    for (size_t i = 0; i < m; i++) {
        double *row = jb->a + i * n;
        for (size_t k = lo; k < hi; k++)
            row[k] = row[k] * (jb->rdiag[k] < 0.0 ? -1.0 : 1.0);
    }
}

/* Work of column k of Q: every panel p with 32p <= k updates it, W and the update 2 x 2·32·(m - 32p)
 * flops, W' = T'W 2·32·32 — in units of 4·32 flops, (m - 32p) + 16 per panel. Only balances the threads. */
static double q_column_cost(const job *jb, size_t k)
{
    const double panels = (double)(k / NB + 1);
    return panels * ((double)jb->m + NB / 2.0) - (double)NB * panels * (panels - 1.0) / 2.0;
}

/* Q's column ranges: contiguous, of equal work, starting on multiples of TILE. */
static void q_ranges(const job *jb, size_t *bounds)
{
    const size_t n = jb->n;
    double total = 0.0;
    for (size_t k = 0; k < n; k++)
        total += q_column_cost(jb, k);
    bounds[0] = 0;
    double sum = 0.0;
    size_t k = 0;
    for (int t = 1; t < jb->threads; t++) {
        const double goal = total * t / jb->threads;
        while (k < n && sum < goal)
            sum += q_column_cost(jb, k++);
        bounds[t] = round_tile((double)k, bounds[t - 1], n);
    }
    bounds[jb->threads] = n;
}

typedef struct {
    job *jb;
    int who;
    size_t lo, hi;
} task;

static void run(task *tk)
{
    factorize(tk->jb, tk->who);
    form_q(tk->jb, tk->who, tk->lo, tk->hi);
}

#if IS_THREADS
static void *run_thread(void *arg)
{
    task *tk = arg;
    job *jb = tk->jb;
    pthread_mutex_lock(&jb->lock);
    while (jb->gate == 0)
        pthread_cond_wait(&jb->turn, &jb->lock);
    const int go = jb->gate == 1;
    pthread_mutex_unlock(&jb->lock);
    if (go)
        run(tk);
    return NULL;
}
#endif

int is_qr_haar(double *a, size_t m, size_t n, double *rdiag, int threads)
{
    if (n == 0)
        return 0;
    if (threads < 1)
        threads = 1;
    if (threads > MAX_THREADS)
        threads = MAX_THREADS;
    /* at least 2 column tiles of work per thread */
    if ((size_t)threads > n / (2 * TILE))
        threads = n / (2 * TILE) > 0 ? (int)(n / (2 * TILE)) : 1;
#if !IS_THREADS
    threads = 1;
#endif
    job jb;
    memset(&jb, 0, sizeof jb);
    jb.a = a, jb.rdiag = rdiag, jb.m = m, jb.n = n, jb.threads = threads;
    jb.panels = (n + NB - 1) / NB;
    size_t v_total = 0;
    jb.v_offset = malloc(jb.panels * sizeof(size_t));
    jb.work = malloc((size_t)threads * sizeof(double *));
    if (jb.v_offset == NULL || jb.work == NULL)
        goto nomem;
    for (size_t p = 0; p < jb.panels; p++) {
        jb.v_offset[p] = v_total;
        v_total += (m - p * NB) * NB;
    }
    jb.vs = malloc(v_total * sizeof(double));
    jb.ts = malloc(jb.panels * NB * NB * sizeof(double));
    int ok = jb.vs != NULL && jb.ts != NULL;
    for (int t = 0; t < threads; t++) {
        jb.work[t] = ok ? malloc(2 * NB * n * sizeof(double)) : NULL;
        ok = ok && jb.work[t] != NULL;
    }
    if (!ok) {
        for (int t = 0; t < threads; t++)
            free(jb.work[t]);
        free(jb.vs);
        free(jb.ts);
        goto nomem;
    }
    size_t bounds[MAX_THREADS + 1];
    q_ranges(&jb, bounds);
    task tasks[MAX_THREADS];
    for (int t = 0; t < threads; t++)
        tasks[t] = (task){&jb, t, bounds[t], bounds[t + 1]};
#if IS_THREADS
    pthread_t ids[MAX_THREADS];
    int started = 1;
    if (threads > 1) {
        pthread_mutex_init(&jb.lock, NULL);
        pthread_cond_init(&jb.turn, NULL);
        for (int t = 1; t < threads && pthread_create(&ids[t], NULL, run_thread, &tasks[t]) == 0; t++)
            started++;
        pthread_mutex_lock(&jb.lock);
        jb.gate = started == threads ? 1 : 2;
        pthread_cond_broadcast(&jb.turn);
        pthread_mutex_unlock(&jb.lock);
        if (started < threads) { /* the others return at once; one thread does everything */
            for (int t = 1; t < started; t++)
                pthread_join(ids[t], NULL);
            started = 1;
            jb.threads = 1;
            tasks[0] = (task){&jb, 0, 0, n};
        }
    }
#endif
    run(&tasks[0]);
#if IS_THREADS
    if (threads > 1) {
        for (int t = 1; t < started; t++)
            pthread_join(ids[t], NULL);
        pthread_cond_destroy(&jb.turn);
        pthread_mutex_destroy(&jb.lock);
    }
#endif
    for (int t = 0; t < threads; t++)
        free(jb.work[t]);
    free(jb.vs);
    free(jb.ts);
    free(jb.v_offset);
    free(jb.work);
    return 0;
nomem:
    free(jb.v_offset);
    free(jb.work);
    return -1;
}
