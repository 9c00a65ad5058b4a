/* Fused recurrent generalized delta rule (RWKV-7 WKV) for CPU tensors, float32.
 *
 * Layout (the kernels' own, state stored transposed): r, log_w, k, a, b are [BH, T, K], v and out are
 * [BH, T, V], the state M is [BH, K, V]. One step, for every column j of M (columns evolve independently):
 *     u_j  = sum_k a_k M[k, j]                                (removal read-out, state before the step)
 *     M[k, j] <- exp(log_w_k) M[k, j] + b_k u_j + k_k v_j
 *     o_j  = sum_k r_k M[k, j]
 * A task is one (bh, column tile of TILE values): its [K, TILE] slice of the state stays in L1 for the whole
 * sequence, so each step reads only the step's vectors and writes TILE outputs. Full tiles keep u, o and v_t in
 * registers (GCC / Clang vector extensions, lowered to whatever SIMD the CPU has); a last, narrower tile takes a
 * plain loop. The decays e^{log_w} come from a branch-free exp the compiler vectorises (no libm call per
 * element). Tasks are spread over pthreads (no OpenMP runtime, so nothing clashes with PyTorch's own thread
 * pool). Workers flush denormals to zero: a state decaying towards zero would otherwise crawl.
 *
 * Built on first use by kernels/native/__init__.py with the system C compiler and loaded with ctypes.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE__)
#include <xmmintrin.h>
#endif

#define TILE 64
#define LANES 16

typedef float vec __attribute__((vector_size(LANES * sizeof(float)), aligned(4)));
#define LOADV(p) (*(const vec *)(p))
#define STOREV(p, x) (*(vec *)(p) = (x))

typedef struct {
    const float *r, *w, *k, *v, *a, *b, *s0;
    float *out, *state;
    int64_t bh, t, dk, dv, tiles;
    int64_t first, stride; /* this worker's tasks: first, first + stride, ... */
    int status;
} job_t;

/* e^x for x <= 0 (log-decays), relative error ~2e-7; 0 below -87 (where float32 turns subnormal). Cody-Waite
 * range reduction x = n ln 2 + r, |r| <= ln 2 / 2, and a degree-6 polynomial for e^r (Cephes' expf). */
static inline float exp_nonpos(float x) {
    const float xc = x < -87.0f ? -87.0f : x;
    const float n = rintf(xc * 1.44269504088896341f);
    const float r = (xc - n * 0.693359375f) + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const uint32_t bits = (uint32_t)((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return x < -87.0f ? 0.0f : p * scale;
}

static inline void decays(const float *restrict log_w, float *restrict ew, int64_t dk) {
    for (int64_t i = 0; i < dk; i++) ew[i] = exp_nonpos(log_w[i]);
}

/* A full tile: TILE = 4 vectors of LANES columns, u / o / v_t in registers. */
static void steps_full(const job_t *jb, int64_t bh, int64_t j0, float *restrict m, float *restrict ew) {
    const int64_t dk = jb->dk, dv = jb->dv, t = jb->t;
    const float *r = jb->r + bh * t * dk, *w = jb->w + bh * t * dk, *kk = jb->k + bh * t * dk;
    const float *a = jb->a + bh * t * dk, *b = jb->b + bh * t * dk;
    const float *v = jb->v + bh * t * dv + j0;
    float *out = jb->out + bh * t * dv + j0;
    for (int64_t s = 0; s < t; s++) {
        const float *rs = r + s * dk, *ks = kk + s * dk, *as = a + s * dk, *bs = b + s * dk, *vs = v + s * dv;
        decays(w + s * dk, ew, dk);
        vec u0 = {0}, u1 = {0}, u2 = {0}, u3 = {0};
        for (int64_t i = 0; i < dk; i++) {
            const float *mi = m + i * TILE;
            const float ai = as[i];
            u0 += ai * LOADV(mi);
            u1 += ai * LOADV(mi + LANES);
            u2 += ai * LOADV(mi + 2 * LANES);
            u3 += ai * LOADV(mi + 3 * LANES);
        }
        const vec v0 = LOADV(vs), v1 = LOADV(vs + LANES), v2 = LOADV(vs + 2 * LANES), v3 = LOADV(vs + 3 * LANES);
        vec o0 = {0}, o1 = {0}, o2 = {0}, o3 = {0};
        for (int64_t i = 0; i < dk; i++) {
            float *mi = m + i * TILE;
            const float wi = ew[i], bi = bs[i], ki = ks[i], ri = rs[i];
            const vec x0 = wi * LOADV(mi) + bi * u0 + ki * v0;
            const vec x1 = wi * LOADV(mi + LANES) + bi * u1 + ki * v1;
            const vec x2 = wi * LOADV(mi + 2 * LANES) + bi * u2 + ki * v2;
            const vec x3 = wi * LOADV(mi + 3 * LANES) + bi * u3 + ki * v3;
            STOREV(mi, x0);
            STOREV(mi + LANES, x1);
            STOREV(mi + 2 * LANES, x2);
            STOREV(mi + 3 * LANES, x3);
            o0 += ri * x0;
            o1 += ri * x1;
            o2 += ri * x2;
            o3 += ri * x3;
        }
        float *os = out + s * dv;
        STOREV(os, o0);
        STOREV(os + LANES, o1);
        STOREV(os + 2 * LANES, o2);
        STOREV(os + 3 * LANES, o3);
    }
}

/* A narrower last tile of `width` < TILE columns: the same step as plain loops. */
static void steps_partial(const job_t *jb, int64_t bh, int64_t j0, int64_t width, float *restrict m,
                          float *restrict ew) {
    const int64_t dk = jb->dk, dv = jb->dv, t = jb->t;
    const float *r = jb->r + bh * t * dk, *w = jb->w + bh * t * dk, *kk = jb->k + bh * t * dk;
    const float *a = jb->a + bh * t * dk, *b = jb->b + bh * t * dk;
    const float *v = jb->v + bh * t * dv + j0;
    float *out = jb->out + bh * t * dv + j0;
    float u[TILE], o[TILE];
    for (int64_t s = 0; s < t; s++) {
        const float *rs = r + s * dk, *ks = kk + s * dk, *as = a + s * dk, *bs = b + s * dk, *vs = v + s * dv;
        decays(w + s * dk, ew, dk);
        for (int64_t j = 0; j < width; j++) u[j] = o[j] = 0.0f;
        for (int64_t i = 0; i < dk; i++) {
            const float ai = as[i], *mi = m + i * TILE;
            for (int64_t j = 0; j < width; j++) u[j] += ai * mi[j];
        }
        for (int64_t i = 0; i < dk; i++) {
            const float wi = ew[i], bi = bs[i], ki = ks[i], ri = rs[i];
            float *mi = m + i * TILE;
            for (int64_t j = 0; j < width; j++) {
                const float x = wi * mi[j] + bi * u[j] + ki * vs[j];
                mi[j] = x;
                o[j] += ri * x;
            }
        }
        memcpy(out + s * dv, o, (size_t)width * sizeof(float));
    }
}

/* One task: load the tile's initial state (or zeros), run the sequence, store the final state. */
static void run_task(const job_t *jb, int64_t task, float *m, float *ew) {
    const int64_t bh = task / jb->tiles, j0 = (task % jb->tiles) * TILE, dk = jb->dk, dv = jb->dv;
    const int64_t width = dv - j0 < TILE ? dv - j0 : TILE;
    for (int64_t i = 0; i < dk; i++) {
        if (jb->s0)
            memcpy(m + i * TILE, jb->s0 + (bh * dk + i) * dv + j0, (size_t)width * sizeof(float));
        else
            memset(m + i * TILE, 0, (size_t)width * sizeof(float));
    }
    if (width == TILE)
        steps_full(jb, bh, j0, m, ew);
    else
        steps_partial(jb, bh, j0, width, m, ew);
    for (int64_t i = 0; i < dk; i++)
        memcpy(jb->state + (bh * dk + i) * dv + j0, m + i * TILE, (size_t)width * sizeof(float));
}

static void *worker(void *arg) {
    job_t *jb = (job_t *)arg;
#if defined(__SSE__)
    const unsigned int csr = _mm_getcsr();
    _mm_setcsr(csr | 0x8040); /* flush-to-zero and denormals-are-zero, this thread only */
#endif
    float *m = (float *)malloc((size_t)(jb->dk * TILE) * sizeof(float));
    float *ew = (float *)malloc((size_t)jb->dk * sizeof(float));
    if (!m || !ew) {
        jb->status = 1;
    } else {
        for (int64_t task = jb->first; task < jb->bh * jb->tiles; task += jb->stride) run_task(jb, task, m, ew);
    }
    free(m);
    free(ew);
#if defined(__SSE__)
    _mm_setcsr(csr);
#endif
    return NULL;
}

/* Returns 0 on success, 1 when memory or threads could not be had (out / state are then incomplete). Every
 * worker runs on a new thread, so the caller's floating-point control word is never touched. */
int lingen_delta_rule_fwd(const float *r, const float *w, const float *k, const float *v, const float *a,
                          const float *b, const float *s0, float *out, float *state, int64_t bh, int64_t t,
                          int64_t dk, int64_t dv, int64_t threads) {
    const int64_t tiles = (dv + TILE - 1) / TILE, total = bh * tiles;
    if (threads > total) threads = total;
    if (threads < 1) threads = 1;
    job_t *jobs = (job_t *)calloc((size_t)threads, sizeof(job_t));
    pthread_t *ids = (pthread_t *)calloc((size_t)threads, sizeof(pthread_t));
    int status = 0;
    int64_t started = 0;
    if (!jobs || !ids) status = 1;
    for (int64_t i = 0; i < threads && !status; i++) {
        jobs[i] = (job_t){r, w, k, v, a, b, s0, out, state, bh, t, dk, dv, tiles, i, threads, 0};
        if (pthread_create(&ids[i], NULL, worker, &jobs[i]) != 0)
            status = 1;
        else
            started++;
    }
    for (int64_t i = 0; i < started; i++) pthread_join(ids[i], NULL);
    for (int64_t i = 0; i < started; i++) status |= jobs[i].status;
    free(jobs);
    free(ids);
    return status;
}
