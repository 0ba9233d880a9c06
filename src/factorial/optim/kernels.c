/* The Adafactor step of one float32 tensor: factored, row-only and column-only modes in three loops
 * (factorial_broadcast_step), the full mode in two (factorial_full_step, at the end of this file).
 *
 * Built at first use by factorial/optim/native.py with the system C compiler (-O3 -march=native
 * -fopenmp) and called through ctypes; the optimizer falls back to its reference path when no
 * compiler is found. The arithmetic is the reference path's (adafactor.py, docs/PAPER.md §2):
 *
 *   α_t  = max(ε2, RMS(X_{t−1}))·ρ_t (relative) or lr           R, C ← β̂2t-EMAs of the row / column means of G² + ε1
 *   a_i  = rsqrt(R_i / mean R) (factored) or rsqrt(R_i) (row)     b_j = rsqrt(C_j) (factored, col)
 *   U    = D_ij·a_i·b_j                                           X  ← decay·X − α_t/max(1, RMS(U)/d)·U
 *
 * where D is the direction: G, or with momentum on the gradient (mom not NULL) m̂ ← lerp(m̂, G, mom_weight),
 * updated in loop 1. Loop 1 reads X and G once (Σ X², the row sums of G² and per-thread column sums),
 * loop 2 reads D once (RMS(U)), loop 3 reads X and D and writes X: six passes over tensors of X's
 * size (eight with momentum), where torch.optim.Adam(fused=True) makes seven.
 * Every loop splits the rows among threads the same way (static schedule), so a thread only
 * touches rows it has touched before. Sums across rows are taken in double.
 *
 * A tensor of shape (..., n, m) is B = prod(...) matrices of n×m, each with its own R (n) and C (m).
 * mode: 0 factored, 1 row-only, 2 column-only. threshold <= 0: no clipping. Returns 0, or -1 when
 * out of memory (nothing is written then).
 */
#include <math.h>
#include <omp.h>
#include <stdlib.h>

static inline float lerp(float start, float end, float weight)  /* as torch.lerp on CPU */
{
    return weight < 0.5f ? start + weight * (end - start) : end - (end - start) * (1.f - weight);
}

/* The step's scale from the loops' sums: α_t (relative: max(ε2, RMS(X))·lr) divided by max(1, RMS(U)/d);
 * stores RMS(U) in *update_rms. */
static float step_scale(double x_total, double u_total, double numel, int relative, float lr, float eps2,
                        float threshold, float *update_rms)
{
    float alpha = lr;
    if (relative) {
        const float rms_x = (float)sqrt(x_total / numel);
        alpha = (rms_x > eps2 ? rms_x : eps2) * lr;
    }
    const float rms_u = (float)sqrt(u_total / numel);
    *update_rms = rms_u;
    return threshold > 0.f && rms_u / threshold > 1.f ? alpha / (rms_u / threshold) : alpha;
}

int factorial_broadcast_step(float *x, const float *g, float *mom, float mom_weight, float *row, float *col,
                             long batch, long n, long m, int mode, float rate, float eps1, float lr,
                             int relative, float eps2, float threshold, float decay, int nthreads,
                             float *update_rms)
{
    const long rows = batch * n;
    const int has_row = mode != 2, has_col = mode != 1;
    const float *d = mom ? mom : g;
    double *x_sq = calloc((size_t)nthreads, sizeof(double));
    double *u_sq = calloc((size_t)nthreads, sizeof(double));
    double *col_part = has_col ? calloc((size_t)nthreads * batch * m, sizeof(double)) : NULL;
    float *row_sum = malloc((size_t)rows * sizeof(float));
    float *a = malloc((size_t)rows * sizeof(float));
    float *b = has_col ? malloc((size_t)batch * m * sizeof(float)) : NULL;
    if (!x_sq || !u_sq || !row_sum || !a || (has_col && (!col_part || !b))) {
        free(x_sq); free(u_sq); free(col_part); free(row_sum); free(a); free(b);
        return -1;
    }

    /* Loop 1: Σ X² (relative step), row sums of G², per-thread column sums of G², momentum. */
    #pragma omp parallel num_threads(nthreads)
    {
        const int tid = omp_get_thread_num();
        double xs = 0.0;
        #pragma omp for schedule(static)
        for (long r = 0; r < rows; r++) {
            const float *xr = x + r * m, *gr = g + r * m;
            float sx = 0.f, sg = 0.f;
            if (relative) {
                #pragma omp simd reduction(+:sx)
                for (long j = 0; j < m; j++) sx += xr[j] * xr[j];
            }
            if (has_col) {
                double *c = col_part + ((size_t)tid * batch + r / n) * m;
                #pragma omp simd reduction(+:sg)
                for (long j = 0; j < m; j++) { const float q = gr[j] * gr[j]; sg += q; c[j] += q; }
            } else {
                #pragma omp simd reduction(+:sg)
                for (long j = 0; j < m; j++) sg += gr[j] * gr[j];
            }
            if (mom) {
                float *mr = mom + r * m;
                #pragma omp simd
                for (long j = 0; j < m; j++) mr[j] = lerp(mr[j], gr[j], mom_weight);
            }
            xs += sx;
            row_sum[r] = sg;
        }
        x_sq[tid] = xs;
    }

    /* The per-row and per-column vectors: EMAs (as functional.ema_), a and b. */
    const float keep = rate, take = 1.f - rate, eps_term = (1.f - rate) * eps1;
    for (long k = 0; k < batch; k++) {
        float *R = row + k * n;
        if (has_row) {
            double mean = 0.0;
            for (long i = 0; i < n; i++) {
                R[i] = R[i] * keep + (row_sum[k * n + i] / (float)m) * take + eps_term;
                mean += R[i];
            }
            mean /= (double)n;
            for (long i = 0; i < n; i++)
                a[k * n + i] = mode == 0 ? 1.f / sqrtf((float)(R[i] / mean)) : 1.f / sqrtf(R[i]);
        } else {
            for (long i = 0; i < n; i++) a[k * n + i] = 1.f;
        }
        if (has_col) {
            float *C = col + k * m;
            for (long j = 0; j < m; j++) {
                double s = 0.0;
                for (int t = 0; t < nthreads; t++) s += col_part[((size_t)t * batch + k) * m + j];
                C[j] = C[j] * keep + ((float)s / (float)n) * take + eps_term;
                b[k * m + j] = 1.f / sqrtf(C[j]);
            }
        }
    }

    /* Loop 2: RMS(U) = √(Σ_i a_i² Σ_j (D_ij b_j)² / numel). */
    #pragma omp parallel num_threads(nthreads)
    {
        const int tid = omp_get_thread_num();
        double us = 0.0;
        #pragma omp for schedule(static)
        for (long r = 0; r < rows; r++) {
            const float *dr = d + r * m;
            float s = 0.f;
            if (has_col) {
                const float *br = b + (r / n) * m;
                #pragma omp simd reduction(+:s)
                for (long j = 0; j < m; j++) { const float u = dr[j] * br[j]; s += u * u; }
            } else {
                #pragma omp simd reduction(+:s)
                for (long j = 0; j < m; j++) s += dr[j] * dr[j];
            }
            us += (double)s * (double)a[r] * (double)a[r];
        }
        u_sq[tid] = us;
    }
    double x_total = 0.0, u_total = 0.0;
    for (int t = 0; t < nthreads; t++) { x_total += x_sq[t]; u_total += u_sq[t]; }
    const float scale = step_scale(x_total, u_total, (double)(rows * m), relative, lr, eps2, threshold, update_rms);

    /* Loop 3: X ← decay·X − (scale·a_i)·b_j·D_ij. */
    #pragma omp parallel for schedule(static) num_threads(nthreads)
    for (long r = 0; r < rows; r++) {
        float *xr = x + r * m;
        const float *dr = d + r * m;
        const float coef = scale * a[r];
        if (has_col) {
            const float *br = b + (r / n) * m;
            #pragma omp simd
            for (long j = 0; j < m; j++) xr[j] = xr[j] * decay - coef * (br[j] * dr[j]);
        } else {
            #pragma omp simd
            for (long j = 0; j < m; j++) xr[j] = xr[j] * decay - coef * dr[j];
        }
    }

    free(x_sq); free(u_sq); free(col_part); free(row_sum); free(a); free(b);
    return 0;
}

/* The full-mode step (Adam's V̂, Alg. 1/5) of one float32 tensor of `numel` entries in two loops.
 *
 *   V ← β̂2t·V + (1 − β̂2t)·(G² + ε1)      U = D/√V      X ← decay·X − α_t/max(1, RMS(U)/d)·U
 *
 * D is G, or m̂ ← lerp(m̂, G, mom_weight) updated in loop 1 (mom not NULL). Loop 1 reads X (for
 * RMS(X)) and G and updates V (and m̂), summing U² without storing U; loop 2 reads X, D and V and
 * writes X. Sums go over blocks of 1024 entries in float, then in double.
 */
#define FACTORIAL_BLOCK 1024L

int factorial_full_step(float *x, const float *g, float *mom, float mom_weight, float *v, long numel, float rate,
                        float eps1, float lr, int relative, float eps2, float threshold, float decay,
                        int nthreads, float *update_rms)
{
    const long blocks = (numel + FACTORIAL_BLOCK - 1) / FACTORIAL_BLOCK;
    const float *d = mom ? mom : g;
    double *x_sq = calloc((size_t)nthreads, sizeof(double));
    double *u_sq = calloc((size_t)nthreads, sizeof(double));
    if (!x_sq || !u_sq) {
        free(x_sq); free(u_sq);
        return -1;
    }
    const float keep = rate, take = 1.f - rate, eps_term = (1.f - rate) * eps1;

    /* Loop 1: V's EMA, Σ U², Σ X² (relative step). */
    #pragma omp parallel num_threads(nthreads)
    {
        const int tid = omp_get_thread_num();
        double xs = 0.0, us = 0.0;
        #pragma omp for schedule(static)
        for (long k = 0; k < blocks; k++) {
            const long lo = k * FACTORIAL_BLOCK, hi = lo + FACTORIAL_BLOCK < numel ? lo + FACTORIAL_BLOCK : numel;
            float sx = 0.f, su = 0.f;
            if (relative) {
                #pragma omp simd reduction(+:sx)
                for (long i = lo; i < hi; i++) sx += x[i] * x[i];
            }
            if (mom) {
                #pragma omp simd reduction(+:su)
                for (long i = lo; i < hi; i++) {
                    const float vi = v[i] * keep + g[i] * g[i] * take + eps_term;
                    v[i] = vi;
                    const float di = lerp(mom[i], g[i], mom_weight);
                    mom[i] = di;
                    const float u = di / sqrtf(vi);
                    su += u * u;
                }
            } else {
                #pragma omp simd reduction(+:su)
                for (long i = lo; i < hi; i++) {
                    const float vi = v[i] * keep + g[i] * g[i] * take + eps_term;
                    v[i] = vi;
                    const float u = g[i] / sqrtf(vi);
                    su += u * u;
                }
            }
            xs += sx;
            us += su;
        }
        x_sq[tid] = xs;
        u_sq[tid] = us;
    }
    double x_total = 0.0, u_total = 0.0;
    for (int t = 0; t < nthreads; t++) { x_total += x_sq[t]; u_total += u_sq[t]; }
    const float scale = step_scale(x_total, u_total, (double)numel, relative, lr, eps2, threshold, update_rms);

    /* Loop 2: X ← decay·X − scale·D/√V. */
    #pragma omp parallel for schedule(static) num_threads(nthreads)
    for (long k = 0; k < blocks; k++) {
        const long lo = k * FACTORIAL_BLOCK, hi = lo + FACTORIAL_BLOCK < numel ? lo + FACTORIAL_BLOCK : numel;
        #pragma omp simd
        for (long i = lo; i < hi; i++) x[i] = x[i] * decay - scale * (d[i] / sqrtf(v[i]));
    }
    free(x_sq); free(u_sq);
    return 0;
}
