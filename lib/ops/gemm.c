/* gemm.c: C = alpha·op(A)·op(B) + beta·C + bias, batched (ops.h).
 *
 * cpu: cblas_sgemm when the build found it (MEXD_CPU_NO_BLAS=1 forces the plain-C kernel, which
 * the tests compare against it); f16 operands are widened to f32 first.  With OpenBLAS, C is cut
 * into tiles (mexd_cpu_sgemm) that the thread pool runs, each one single-threaded sgemm, and
 * OpenBLAS itself runs on one thread (parallel.c): its own idle workers spin in sched_yield for
 * a while after every GEMM, and on 2 cores they took a third of the cpu from the pool's kernels
 * between GEMMs (measured: 30% of a 10,000-instance forward's samples in sched_yield).  The
 * tiles follow the shape alone, so a result does not depend on MEXD_THREADS.
 * vulkan: shaders/gemm.comp, tile sizes chosen per device class by specialization constants. */
#include "backend/cpu.h"
#include "backend/vulkan.h"
#include "ops/ops-private.h"

#include <stdio.h>
#include <string.h>
#ifdef MEXD_HAVE_CBLAS
#include <cblas.h>
#endif

typedef struct {
  int64_t batch, M, N, K;
  int64_t sab, sam, sak; /* element strides of A: batch, m, k */
  int64_t sbb, sbk, sbn; /* of B: batch, k, n */
} GemmGeom;

static gboolean use_blas(void)
{
#ifdef MEXD_HAVE_CBLAS
  const char *v = g_getenv("MEXD_CPU_NO_BLAS");
  return !(v && *v && strcmp(v, "0") != 0);
#else
  return FALSE;
#endif
}

#ifdef MEXD_HAVE_CBLAS
typedef struct {
  gboolean ta, tb;
  int64_t M, N, K, rm, cn, mt, nt;
  float alpha, beta;
  const float *A, *B;
  float *C;
  int64_t lda, sab, ldb, sbb, ldc, scb;
} SgemmJob;

#define SGEMM_TILE_ROWS 256

static void sgemm_tiles(int64_t t0, int64_t t1, void *ctx)
{
  const SgemmJob *j = ctx;
  for (int64_t t = t0; t < t1; t++) {
    int64_t bt = t / (j->mt * j->nt), i = t / j->nt % j->mt, k = t % j->nt;
    int64_t r0 = i * j->rm, c0 = k * j->cn;
    int64_t m = MIN(j->rm, j->M - r0), n = MIN(j->cn, j->N - c0);
    const float *a = j->A + bt * j->sab + (j->ta ? r0 : r0 * j->lda);
    const float *b = j->B + bt * j->sbb + (j->tb ? c0 * j->ldb : c0);
    float *c = j->C + bt * j->scb + r0 * j->ldc + c0;
    cblas_sgemm(CblasRowMajor, j->ta ? CblasTrans : CblasNoTrans,
                j->tb ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)j->K, j->alpha, a,
                (int)j->lda, b, (int)j->ldb, j->beta, c, (int)j->ldc);
  }
}

void mexd_cpu_sgemm(gboolean trans_a, gboolean trans_b, int64_t batch, int64_t M, int64_t N,
                    int64_t K, float alpha, const float *A, int64_t lda, int64_t sab,
                    const float *B, int64_t ldb, int64_t sbb, float beta, float *C, int64_t ldc,
                    int64_t scb)
{
  SgemmJob j = {.ta = trans_a, .tb = trans_b, .M = M, .N = N, .K = K, .alpha = alpha,
                .beta = beta, .A = A, .B = B, .C = C, .lda = lda, .sab = sab, .ldb = ldb,
                .sbb = sbb, .ldc = ldc, .scb = scb};
#ifdef MEXD_HAVE_OPENBLAS_THREADS
  /* row tiles of up to 256 rows; too few tiles in all (a few rows, one matrix): column tiles
   * too, multiples of 64 columns, about four of them */
  j.rm = MAX(1, MIN(M, SGEMM_TILE_ROWS));
  j.mt = (M + j.rm - 1) / j.rm;
  j.cn = MAX(1, N);
  if (batch * j.mt < 4 && N >= 256)
    j.cn = MAX(64, ((N + 3) / 4 + 63) / 64 * 64);
  j.nt = (N + j.cn - 1) / j.cn;
  int64_t tiles = batch * j.mt * j.nt;
  /* a tile is at least ~1 M multiply-adds of work, or the whole product runs here */
  int64_t work = j.rm * j.cn * MAX(K, 1);
  if (tiles > 1 && work * tiles >= ((int64_t)1 << 20)) {
    mexd_parallel_for(tiles, 1, sgemm_tiles, &j);
    return;
  }
#endif
  j.rm = MAX(1, M);
  j.cn = MAX(1, N);
  j.mt = j.nt = 1;
  sgemm_tiles(0, batch, &j);
}
#endif

/* Plain C: per batch, rows of C accumulated in f32 in (i, k, j) order so the inner loop runs
 * along contiguous rows of B when B is not transposed. */
static void gemm_plain(const GemmGeom *g, const float *A, const float *B, float *acc)
{
  for (int64_t bt = 0; bt < g->batch; bt++) {
    const float *a = A + bt * g->sab;
    const float *b = B + bt * g->sbb;
    float *c = acc + bt * g->M * g->N;
    for (int64_t i = 0; i < g->M; i++) {
      float *crow = c + i * g->N;
      memset(crow, 0, sizeof(float) * (size_t)g->N);
      if (g->sbn == 1) {
        for (int64_t k = 0; k < g->K; k++) {
          float av = a[i * g->sam + k * g->sak];
          const float *brow = b + k * g->sbk;
          for (int64_t j = 0; j < g->N; j++)
            crow[j] += av * brow[j];
        }
      } else {
        for (int64_t j = 0; j < g->N; j++) {
          const float *bcol = b + j * g->sbn;
          float s = 0.0f;
          for (int64_t k = 0; k < g->K; k++)
            s += a[i * g->sam + k * g->sak] * bcol[k * g->sbk];
          crow[j] = s;
        }
      }
    }
  }
}

typedef struct {
  float *C;
  const float *bias;
  int64_t N;
} GemmFill;

/* Rows [r0, r1) of C set to the bias (or 0). */
static void gemm_fill_rows(int64_t r0, int64_t r1, void *ctx)
{
  const GemmFill *f = ctx;
  for (int64_t r = r0; r < r1; r++) {
    float *row = f->C + r * f->N;
    if (f->bias)
      memcpy(row, f->bias, sizeof(float) * (size_t)f->N);
    else
      memset(row, 0, sizeof(float) * (size_t)f->N);
  }
}

/* Rows [r0, r1) of C plus the bias. */
static void gemm_add_bias_rows(int64_t r0, int64_t r1, void *ctx)
{
  const GemmFill *f = ctx;
  for (int64_t r = r0; r < r1; r++)
    for (int64_t j = 0; j < f->N; j++)
      f->C[r * f->N + j] += f->bias[j];
}

static void gemm_cpu(const GemmGeom *g, MexdTensor *c, MexdTensor *a, MexdTensor *b,
                     MexdTensor *bias, const MexdGemmParams *p)
{
  gboolean oa, ob, oc, obias = FALSE;
  float *A = mexd_cpu_f32_in(a, &oa);
  float *B = mexd_cpu_f32_in(b, &ob);
  float *C = mexd_cpu_f32_out(c, p->beta != 0.0f, &oc);
  float *bv = bias ? mexd_cpu_f32_in(bias, &obias) : NULL, *bias_v = bv;
  int64_t mn = g->M * g->N;
  float *prod = NULL;
  if (use_blas()) {
#ifdef MEXD_HAVE_CBLAS
    /* beta = 0 with a bias: C starts as the bias rows and sgemm adds alpha·A·B into it (beta 1),
     * one pass over C instead of a clear before and a bias pass after.  beta = 0 without one:
     * BLAS itself sets C to 0 first (the reference BLAS and OpenBLAS store zeros, NaN in C
     * ignored, as the BLAS specification asks), so no clear here either */
    gboolean preload = bv && p->beta == 0.0f;
    if (preload) {
      GemmFill f = {.C = C, .bias = preload ? bv : NULL, .N = g->N};
      mexd_parallel_for(g->batch * g->M, MAX(1, MEXD_PARALLEL_GRAIN_ELEMENTS * 4 / MAX(g->N, 1)),
                        gemm_fill_rows, &f);
    }
    mexd_cpu_sgemm(p->trans_a, p->trans_b, g->batch, g->M, g->N, g->K, p->alpha, A,
                   p->trans_a ? g->M : g->K, g->sab, B, p->trans_b ? g->K : g->N, g->sbb,
                   preload ? 1.0f : p->beta, C, g->N, mn);
    if (preload)
      bv = NULL; /* added */
#endif
  } else {
    prod = g_new(float, g->batch *mn);
    gemm_plain(g, A, B, prod);
    for (int64_t i = 0; i < g->batch * mn; i++)
      C[i] = p->alpha * prod[i] + (p->beta != 0.0f ? p->beta * C[i] : 0.0f);
    g_free(prod);
  }
  if (bv) {
    GemmFill f = {.C = C, .bias = bv, .N = g->N};
    mexd_parallel_for(g->batch * g->M, MAX(1, MEXD_PARALLEL_GRAIN_ELEMENTS * 4 / MAX(g->N, 1)),
                      gemm_add_bias_rows, &f);
  }
  mexd_cpu_f32_done(c, C, oc, TRUE);
  if (oa)
    g_free(A);
  if (ob)
    g_free(B);
  if (obias)
    g_free(bias_v);
}

/* lavapipe (llvmpipe) ends every loop of a shader invocation silently once the invocation has run
 * 65,535 loop iterations in all (LP_MAX_TGSI_LOOP_ITERATIONS, shared by every loop), so a GEMM
 * with a long K (the Nyström A3·v of a 20,000-instance bag: K = 20,224) came out wrong there.  On
 * devices that are not GPUs the K range is therefore summed in dispatches of at most
 * CPU_DEVICE_K_STEPS tiles of BK (each ≤ ~100 loop iterations), accumulating into C. */
#define CPU_DEVICE_K_STEPS 256

MEXD_VK_PUSH_STRUCT(GemmPush, MEXD_PUSH_GEMM);

static gboolean gemm_vulkan(const GemmGeom *g, MexdTensor *c, MexdTensor *a, MexdTensor *b,
                            MexdTensor *bias, const MexdGemmParams *p, GError **error)
{
  MexdBackend *be = c->backend;
  const MexdVkLimits *lim = mexd_vk_limits(be);
  /* tiles (measured: docs/PERFORMANCE.md): 128×128 with 8×8 accumulators per thread on any
   * device for matrices that fill them; below that 64×64 tiles, 8×8 per thread on a CPU device
   * (lavapipe runs a workgroup as one SIMD loop, so fewer, fatter invocations win there) and
   * 4×4 per thread on a GPU (more threads in flight). */
  uint32_t bm = 64, bn = 64, bk = 16, tm = 4, tn = 4;
  if (!lim->is_gpu)
    tm = tn = 8;
  if (g->M >= 128 && g->N >= 128 && lim->max_shared_memory >= 2 * 32 * 128 * 4) {
    bm = bn = 128;
    tm = tn = 8;
    bk = lim->is_gpu ? 16 : 32;
  }
  const char *tiles = g_getenv("MEXD_GEMM_TILES"); /* tuning aid: "BM,BN,BK,TM,TN" */
  if (tiles) {
    unsigned v[5];
    if (sscanf(tiles, "%u,%u,%u,%u,%u", &v[0], &v[1], &v[2], &v[3], &v[4]) == 5 && v[3] && v[4] &&
        v[0] % v[3] == 0 && v[1] % v[4] == 0 && (v[0] / v[3]) * (v[1] / v[4]) <= 1024 &&
        (v[0] + v[1]) * v[2] * 4 <= lim->max_shared_memory) {
      bm = v[0], bn = v[1], bk = v[2], tm = v[3], tn = v[4];
    } else {
      return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                       "MEXD_GEMM_TILES=\"%s\" is not BM,BN,BK,TM,TN with BM%%TM = BN%%TN = 0, "
                       "at most 1024 threads and (BM+BN)*BK*4 bytes of shared memory within the "
                       "device limit",
                       tiles);
    }
  }
  uint32_t threads = (bm / tm) * (bn / tn);
  if (threads > lim->max_group_invocations) { /* Vulkan guarantees 128 */
    bm = bn = 32;
    tm = tn = 4;
    threads = 64;
  }
  GemmPush pc = {
      .M = (uint32_t)g->M,
      .N = (uint32_t)g->N,
      .kb = 0,
      .ke = (uint32_t)g->K,
      .sab = (uint32_t)g->sab,
      .sam = (uint32_t)g->sam,
      .sak = (uint32_t)g->sak,
      .sbb = (uint32_t)g->sbb,
      .sbk = (uint32_t)g->sbk,
      .sbn = (uint32_t)g->sbn,
      .scb = (uint32_t)(g->M * g->N),
      .alpha = p->alpha,
      .beta = p->beta,
      .has_bias = bias != NULL,
  };
  MexdVkDispatch d = {
      .shader = MEXD_SHADER_GEMM,
      .variant = c->dtype,
      .spec = {bm, bn, bk, tm, tn, threads},
      .n_spec = 6,
      .bind = {a, b, bias, c},
      .n_bind = 4,
      .push = &pc,
      .push_size = sizeof pc,
      .groups = {(uint32_t)((g->N + bn - 1) / bn), (uint32_t)((g->M + bm - 1) / bm),
                 (uint32_t)g->batch},
  };
  const int64_t kstep = lim->is_gpu ? g->K : (int64_t)CPU_DEVICE_K_STEPS * bk;
  if (g->K <= kstep)
    return mexd_vk_dispatch(be, &d, error);
  /* chunks of K: the first with the caller's beta, the next adding to C (beta 1), the bias with
   * the last */
  for (int64_t kb = 0; kb < g->K; kb += kstep) {
    pc.kb = (uint32_t)kb;
    pc.ke = (uint32_t)MIN(g->K, kb + kstep);
    pc.beta = kb == 0 ? p->beta : 1.0f;
    pc.has_bias = bias != NULL && pc.ke == g->K;
    if (!mexd_vk_dispatch(be, &d, error))
      return FALSE;
  }
  return TRUE;
}

gboolean mexd_gemm(MexdTensor *c, MexdTensor *a, MexdTensor *b, MexdTensor *bias,
                   const MexdGemmParams *params, GError **error)
{
  const char *op = "gemm";
  MexdGemmParams p = params ? *params : MEXD_GEMM_PARAMS_DEFAULT;
  if (!mexd_op_check_float(op, "c", c, error))
    return FALSE;
  MexdBackend *be = c->backend;
  if (!mexd_op_check_dtype(op, "a", a, be, c->dtype, error) ||
      !mexd_op_check_dtype(op, "b", b, be, c->dtype, error) ||
      (bias && !mexd_op_check_dtype(op, "bias", bias, be, c->dtype, error)))
    return FALSE;
  if (c->ndim != 2 && c->ndim != 3)
    return mexd_fail(error, MEXD_ERROR_SHAPE, "gemm: c must be [M,N] or [batch,M,N], not %d-D",
                     c->ndim);
  if ((a->ndim != 2 && a->ndim != 3) || (b->ndim != 2 && b->ndim != 3))
    return mexd_fail(error, MEXD_ERROR_SHAPE, "gemm: a and b must be 2-D or 3-D");
  GemmGeom g = {0};
  g.batch = c->ndim == 3 ? c->shape[0] : 1;
  const int64_t *as = a->ndim == 3 ? a->shape + 1 : a->shape;
  const int64_t *bs = b->ndim == 3 ? b->shape + 1 : b->shape;
  const int64_t *cs = c->ndim == 3 ? c->shape + 1 : c->shape;
  if ((a->ndim == 3 && a->shape[0] != g.batch) || (b->ndim == 3 && b->shape[0] != g.batch) ||
      ((a->ndim == 3 || b->ndim == 3) && c->ndim != 3)) {
    g_autofree char *da = mexd_tensor_describe(a), *db = mexd_tensor_describe(b),
                    *dc = mexd_tensor_describe(c);
    return mexd_fail(error, MEXD_ERROR_SHAPE, "gemm: batch sizes differ: a %s, b %s, c %s", da, db,
                     dc);
  }
  g.M = cs[0];
  g.N = cs[1];
  int64_t am = p.trans_a ? as[1] : as[0], ak = p.trans_a ? as[0] : as[1];
  int64_t bk = p.trans_b ? bs[1] : bs[0], bn = p.trans_b ? bs[0] : bs[1];
  if (am != g.M || bn != g.N || ak != bk) {
    g_autofree char *da = mexd_tensor_describe(a), *db = mexd_tensor_describe(b),
                    *dc = mexd_tensor_describe(c);
    return mexd_fail(error, MEXD_ERROR_SHAPE, "gemm: shapes do not fit: a %s%s * b %s%s -> c %s",
                     da, p.trans_a ? "^T" : "", db, p.trans_b ? "^T" : "", dc);
  }
  g.K = ak;
  if (bias && (bias->ndim != 1 || bias->shape[0] != g.N)) {
    g_autofree char *d = mexd_tensor_describe(bias);
    return mexd_fail(error, MEXD_ERROR_SHAPE, "gemm: bias is %s, expected [%" G_GINT64_FORMAT "]",
                     d, g.N);
  }
  if (!mexd_op_check_no_overlap(op, "c", c, "a", a, error) ||
      !mexd_op_check_no_overlap(op, "c", c, "b", b, error) ||
      !mexd_op_check_no_overlap(op, "c", c, "bias", bias, error))
    return FALSE;
  g.sab = a->ndim == 3 ? as[0] * as[1] : 0;
  g.sam = p.trans_a ? 1 : g.K;
  g.sak = p.trans_a ? g.M : 1;
  g.sbb = b->ndim == 3 ? bs[0] * bs[1] : 0;
  g.sbk = p.trans_b ? 1 : g.N;
  g.sbn = p.trans_b ? g.K : 1;

  if (be->kind == MEXD_BACKEND_CPU) {
    if (g.M > G_MAXINT || g.N > G_MAXINT || g.K > G_MAXINT)
      return mexd_fail(error, MEXD_ERROR_SHAPE, "gemm: a dimension exceeds 2^31");
    gemm_cpu(&g, c, a, b, bias, &p);
    return TRUE;
  }
  if (!mexd_op_check_u32(op, "elements of c", mexd_tensor_numel(c), error))
    return FALSE;
  if (g.batch > mexd_vk_limits(be)->max_group_count[2])
    return mexd_fail(error, MEXD_ERROR_SHAPE,
                     "gemm: batch %" G_GINT64_FORMAT " exceeds the device's workgroup count limit",
                     g.batch);
  return gemm_vulkan(&g, c, a, b, bias, &p, error);
}
