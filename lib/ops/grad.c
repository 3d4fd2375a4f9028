/* grad.c: the backward ops of grad.h — the primitives of the training tape (lib/train/).
 *
 * Every op has a cpu kernel (the reference: f16 tensors widened to f32 on the way in, arithmetic
 * and every sum in double, one rounding on the way out) and a vulkan dispatch of its shader
 * (f32 arithmetic and sums, no float atomics, so the same bits run to run).  The shaders:
 *   unary_bwd, softmax_bwd, layernorm_bwd (dx), layernorm_bwd_param (dgamma, dbeta: row
 *   statistics, chunk partial sums, chunks in order), sum_rows, scatter_add, slice, xent /
 *   xent_bwd, mse / mse_bwd, dropout, conv2d_dw_bwd (depthwise conv: dx; dw/db as partial sums
 *   over chunks of output positions, then the chunks in order), abs_sum_max_bwd.
 *
 * Decisions, beyond grad.h:
 * - `accumulate` FALSE never reads the output (old NaN contents do not leak); TRUE reads it once
 *   and adds (cpu: in double, then one rounding).
 * - Reductions whose length is data-dependent are cut so that no shader invocation loops more than
 *   a few thousand times: lavapipe silently ends every loop of an invocation after 65,535
 *   iterations in all (LP_MAX_TGSI_LOOP_ITERATIONS; lib/ops/gemm.c).  Row reductions over one row
 *   per workgroup (softmax, layernorm, cross-entropy) loop D/256 times, fine for any row the
 *   models have; sums over many rows go through chunks and a second pass (sum_rows, dgamma/dbeta,
 *   conv dw/db, mse); scatter_add's index scan is split into dispatches of 16,384 indices on CPU
 *   devices (a f32 scratch carries the running sums between them).  Two passes are one
 *   workgroup over a data-dependent count — cross-entropy's mean over rows, abs_sum_max_bwd's
 *   maximum over lines — and refuse on CPU devices, with MEXD_ERROR_UNSUPPORTED, the sizes
 *   (~3.8 million rows or lines) where lavapipe would cut their loops short and give a wrong
 *   result (CPU_DEVICE_MAX_LOOP).
 * - Scratch tensors (partial sums, statistics) are f32 on the op's backend, dropped at once: the
 *   vulkan backend keeps bound tensors alive until the recorded work has run.
 * - A bad index or label: cpu fails at once and writes nothing; vulkan records, the shader sets
 *   MEXD_VK_STATUS_INDEX_RANGE and the next sync fails with MEXD_ERROR_INDEX (gather.c). */
#include "ops/grad.h"

#include "backend/cpu.h"
#include "backend/vulkan.h"
#include "nn/philox.h"
#include "ops/ops-private.h"

#include <math.h>
#include <string.h>

#define ELEM_GROUP 256 /* local_size_x of the one-invocation-per-element shaders */
/* sum_rows / layernorm_bwd_param: rows per chunk at least, chunks at most (as reduce.c) */
#define ROW_MIN_CHUNK  64
#define ROW_MAX_CHUNKS 512
/* scatter_add on a CPU device: indices per dispatch (each invocation loops about that often) */
#define SCATTER_CPU_DEVICE_INDICES 16384
/* conv2d_dw_bwd weight sums: positions per chunk at least (a multiple of 256), chunks at most */
#define CONV_MIN_CHUNK  4096
#define CONV_MAX_CHUNKS 1024
/* conv2d_dw_bwd input gradient: taps per invocation at most on a CPU device (as conv2d.c) */
#define CONV_CPU_DEVICE_MAX_TAPS 16384
/* abs_sum_max_bwd: elements per line segment (one invocation each) */
#define ABS_SEG 4096
/* The single-workgroup passes (cross-entropy's mean over rows, abs_sum_max_bwd's maximum and
 * count over lines) walk a data-dependent number of elements per invocation: on a CPU device
 * they refuse (MEXD_ERROR_UNSUPPORTED) what would take an invocation past this many loop
 * iterations, inside lavapipe's 65,535 with room for the shader's other loops. */
#define CPU_DEVICE_MAX_LOOP 60000

/* ---- shared helpers ---- */

/* t (not NULL) is on ref's backend with ref's dtype and shape. */
static gboolean check_like(const char *op, const char *arg, const MexdTensor *t,
                           const MexdTensor *ref, GError **error)
{
  return mexd_op_check_dtype(op, arg, t, ref->backend, ref->dtype, error) &&
         mexd_op_check_shape(op, arg, t, ref->ndim, ref->shape, error);
}

/* Output o (already checked to be a float tensor) and input i: i on o's backend with o's dtype,
 * and o of i's shape, so that a wrong output is the argument an error names. */
static gboolean check_out_like(const char *op, const char *on, const MexdTensor *o, const char *in,
                               const MexdTensor *i, GError **error)
{
  return mexd_op_check_dtype(op, in, i, o->backend, o->dtype, error) &&
         mexd_op_check_shape(op, on, o, i->ndim, i->shape, error);
}

/* A one-element tensor of ref's dtype on ref's backend (a loss, or its upstream gradient). */
static gboolean check_scalar(const char *op, const char *arg, const MexdTensor *t,
                             const MexdTensor *ref, GError **error)
{
  return mexd_op_check_dtype(op, arg, t, ref->backend, ref->dtype, error) &&
         mexd_op_check_shape(op, arg, t, 1, (int64_t[]){1}, error);
}

/* Output `o` must not overlap input `i`, except that it may be exactly `i` when may_be_same. */
static gboolean check_out(const char *op, const char *out, const MexdTensor *o, const char *in,
                          const MexdTensor *i, gboolean may_be_same, GError **error)
{
  if (may_be_same && o && i && mexd_tensor_same_data(o, i))
    return TRUE;
  return mexd_op_check_no_overlap(op, out, o, in, i, error);
}

static gboolean elem_grid(MexdBackend *be, int64_t n, uint32_t groups[3], GError **error)
{
  return mexd_vk_grid(be, ((uint64_t)n + ELEM_GROUP - 1) / ELEM_GROUP, groups, error);
}

/* The value to store: v, or v added to the old contents. */
static inline float acc_store(float old, double v, gboolean acc)
{
  return (float)(acc ? (double)old + v : v);
}

static inline void free_in(const float *p, gboolean owned)
{
  if (owned)
    g_free((float *)p);
}

static float cpu_scalar(MexdTensor *t, float dflt)
{
  if (!t)
    return dflt;
  gboolean o;
  const float *v = mexd_cpu_f32_in(t, &o);
  float r = v[0];
  free_in(v, o);
  return r;
}

/* A new f32 scratch tensor of n elements on be. */
static MexdTensor *scratch_new(const char *op, MexdBackend *be, int64_t n, GError **error)
{
  if (!mexd_op_check_u32(op, "scratch elements", n, error))
    return NULL;
  return mexd_tensor_new_1d(be, MEXD_DTYPE_F32, n, error);
}

/* ---- unary ---- */

static double sigmoid_d(double v)
{
  double e = exp(-fabs(v));
  double r = 1.0 / (1.0 + e);
  return v >= 0.0 ? r : e * r; /* NaN takes the second branch and stays NaN */
}

/* f'(v) for the non-linear unary ops other than relu */
static double unary_deriv(MexdUnaryOp op, double v)
{
  switch (op) {
  case MEXD_UNARY_GELU: {
    /* x·φ(x) is 0 where φ underflows, so f'(±inf) = 1, 0 and not inf·0 (unary_bwd.comp too) */
    double pdf = exp(-0.5 * v * v) * 0.39894228040143268;
    return 0.5 * (1.0 + erf(v * M_SQRT1_2)) + (pdf == 0.0 ? 0.0 : v * pdf);
  }
  case MEXD_UNARY_SOFTPLUS:
    return v > 20.0 ? 1.0 : sigmoid_d(v);
  case MEXD_UNARY_TANH: {
    double t = tanh(v);
    return 1.0 - t * t;
  }
  default: { /* MEXD_UNARY_SIGMOID */
    double s = sigmoid_d(v);
    return s * (1.0 - s);
  }
  }
}

static void unary_bwd_cpu(MexdTensor *dx, MexdTensor *dy, MexdTensor *x, MexdUnaryOp op,
                          gboolean acc)
{
  gboolean ody, ox, odx;
  int64_t n = mexd_tensor_numel(dx);
  /* dx may be dy: in f32 they are the same memory, and each element is read before it is
   * written */
  const float *DY = mexd_cpu_f32_in(dy, &ody);
  const float *X = mexd_cpu_f32_in(x, &ox);
  float *DX = mexd_cpu_f32_out(dx, acc, &odx);
  for (int64_t i = 0; i < n; i++) {
    double v;
    if (op == MEXD_UNARY_RELU)
      v = X[i] > 0.0f ? (double)DY[i] : 0.0; /* exactly 0, not 0·dy (NaN for an infinite dy) */
    else
      v = (double)DY[i] * unary_deriv(op, X[i]);
    DX[i] = acc_store(DX[i], v, acc);
  }
  mexd_cpu_f32_done(dx, DX, odx, TRUE);
  free_in(DY, ody);
  free_in(X, ox);
}

typedef struct {
  uint32_t off[4];
  uint32_t n, op, acc;
} UnaryBwdPush;

gboolean mexd_unary_backward(MexdTensor *dx, MexdTensor *dy, MexdTensor *x, MexdUnaryOp op,
                             gboolean accumulate, GError **error)
{
  const char *name = "unary_backward";
  if (!mexd_op_check_float(name, "dx", dx, error) ||
      !check_out_like(name, "dx", dx, "x", x, error) || !check_like(name, "dy", dy, x, error))
    return FALSE;
  if (op != MEXD_UNARY_RELU && op != MEXD_UNARY_GELU && op != MEXD_UNARY_SOFTPLUS &&
      op != MEXD_UNARY_TANH && op != MEXD_UNARY_SIGMOID)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "unary_backward: op %d has no backward here (relu, gelu, softplus, tanh and "
                     "sigmoid do; scale and scale_eye are linear: use mexd_lincomb)",
                     (int)op);
  if (!check_out(name, "dx", dx, "dy", dy, TRUE, error) ||
      !check_out(name, "dx", dx, "x", x, FALSE, error))
    return FALSE;
  MexdBackend *be = dx->backend;
  if (be->kind == MEXD_BACKEND_CPU) {
    unary_bwd_cpu(dx, dy, x, op, accumulate);
    return TRUE;
  }
  int64_t n = mexd_tensor_numel(dx);
  if (!mexd_op_check_u32(name, "elements of dx", n, error))
    return FALSE;
  UnaryBwdPush pc = {.n = (uint32_t)n, .op = (uint32_t)op, .acc = accumulate != 0};
  MexdVkDispatch d = {
      .shader = "unary_bwd",
      .variant = dx->dtype,
      .bind = {x, dy, dx},
      .n_bind = 3,
      .push = &pc,
      .push_size = sizeof pc,
  };
  return elem_grid(be, n, d.groups, error) && mexd_vk_dispatch(be, &d, error);
}

/* ---- softmax ---- */

static void softmax_bwd_cpu(int64_t rows, int64_t D, MexdTensor *dx, MexdTensor *y, MexdTensor *dy,
                            gboolean acc)
{
  gboolean oy, ody, odx;
  /* dx may be dy: each row's dot product is taken before the row is written */
  const float *Y = mexd_cpu_f32_in(y, &oy);
  const float *DY = mexd_cpu_f32_in(dy, &ody);
  float *DX = mexd_cpu_f32_out(dx, acc, &odx);
  for (int64_t r = 0; r < rows; r++) {
    const float *yr = Y + r * D, *gr = DY + r * D;
    float *out = DX + r * D;
    double dot = 0;
    for (int64_t i = 0; i < D; i++)
      dot += (double)yr[i] * gr[i];
    for (int64_t i = 0; i < D; i++)
      out[i] = acc_store(out[i], (double)yr[i] * ((double)gr[i] - dot), acc);
  }
  mexd_cpu_f32_done(dx, DX, odx, TRUE);
  free_in(Y, oy);
  free_in(DY, ody);
}

typedef struct {
  uint32_t off[4];
  uint32_t rows, D, acc;
} SoftmaxBwdPush;

gboolean mexd_softmax_rows_backward(MexdTensor *dx, MexdTensor *y, MexdTensor *dy,
                                    gboolean accumulate, GError **error)
{
  const char *name = "softmax_rows_backward";
  if (!mexd_op_check_float(name, "dx", dx, error) ||
      !check_out_like(name, "dx", dx, "y", y, error) || !check_like(name, "dy", dy, y, error))
    return FALSE;
  if (!check_out(name, "dx", dx, "dy", dy, TRUE, error) ||
      !check_out(name, "dx", dx, "y", y, FALSE, error))
    return FALSE;
  MexdBackend *be = dx->backend;
  int64_t rows = mexd_tensor_rows_count(dx), D = mexd_tensor_row_len(dx);
  if (be->kind == MEXD_BACKEND_CPU) {
    softmax_bwd_cpu(rows, D, dx, y, dy, accumulate);
    return TRUE;
  }
  if (!mexd_op_check_u32(name, "elements of dx", mexd_tensor_numel(dx), error))
    return FALSE;
  SoftmaxBwdPush pc = {.rows = (uint32_t)rows, .D = (uint32_t)D, .acc = accumulate != 0};
  MexdVkDispatch d = {
      .shader = "softmax_bwd",
      .variant = dx->dtype,
      .spec = {mexd_vk_row_workgroup(be, D)},
      .n_spec = 1,
      .bind = {y, dy, dx},
      .n_bind = 3,
      .push = &pc,
      .push_size = sizeof pc,
  };
  return mexd_vk_grid(be, (uint64_t)rows, d.groups, error) && mexd_vk_dispatch(be, &d, error);
}

/* ---- layernorm ---- */

static void layernorm_bwd_cpu(int64_t rows, int64_t D, MexdTensor *dx, MexdTensor *dgamma,
                              MexdTensor *dbeta, MexdTensor *dy, MexdTensor *x, MexdTensor *gamma,
                              float eps, gboolean acc)
{
  gboolean ox, ody, og = FALSE, odx = FALSE, odg = FALSE, odb = FALSE;
  const float *X = mexd_cpu_f32_in(x, &ox);
  const float *DY = mexd_cpu_f32_in(dy, &ody);
  const float *G = dx && gamma ? mexd_cpu_f32_in(gamma, &og) : NULL;
  float *DX = dx ? mexd_cpu_f32_out(dx, acc, &odx) : NULL;
  double *sg = dgamma ? g_new0(double, D) : NULL, *sb = dbeta ? g_new0(double, D) : NULL;
  double *xh = g_new(double, D);
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = X + r * D, *gr = DY + r * D;
    double mean = 0, var = 0;
    for (int64_t i = 0; i < D; i++)
      mean += xr[i];
    mean /= (double)D;
    for (int64_t i = 0; i < D; i++)
      var += ((double)xr[i] - mean) * ((double)xr[i] - mean);
    double rstd = 1.0 / sqrt(var / (double)D + (double)eps);
    for (int64_t i = 0; i < D; i++)
      xh[i] = ((double)xr[i] - mean) * rstd;
    for (int64_t i = 0; sg && i < D; i++)
      sg[i] += (double)gr[i] * xh[i];
    for (int64_t i = 0; sb && i < D; i++)
      sb[i] += gr[i];
    if (!DX)
      continue;
    double mg = 0, mgx = 0;
    for (int64_t i = 0; i < D; i++) {
      double g = G ? (double)gr[i] * G[i] : gr[i];
      mg += g;
      mgx += g * xh[i];
    }
    mg /= (double)D;
    mgx /= (double)D;
    float *out = DX + r * D;
    for (int64_t i = 0; i < D; i++) {
      double g = G ? (double)gr[i] * G[i] : gr[i];
      out[i] = acc_store(out[i], rstd * (g - mg - xh[i] * mgx), acc);
    }
  }
  if (DX)
    mexd_cpu_f32_done(dx, DX, odx, TRUE);
  if (sg) {
    float *o = mexd_cpu_f32_out(dgamma, TRUE, &odg);
    for (int64_t i = 0; i < D; i++)
      o[i] = acc_store(o[i], sg[i], TRUE);
    mexd_cpu_f32_done(dgamma, o, odg, TRUE);
  }
  if (sb) {
    float *o = mexd_cpu_f32_out(dbeta, TRUE, &odb);
    for (int64_t i = 0; i < D; i++)
      o[i] = acc_store(o[i], sb[i], TRUE);
    mexd_cpu_f32_done(dbeta, o, odb, TRUE);
  }
  g_free(xh);
  g_free(sg);
  g_free(sb);
  free_in(X, ox);
  free_in(DY, ody);
  free_in(G, og);
}

typedef struct {
  uint32_t off[4];
  uint32_t rows, D;
  float eps;
  uint32_t has_gamma, acc;
} LayernormBwdPush;

typedef struct {
  uint32_t off[4];
  uint32_t mode;
  uint32_t rows, D;
  float eps;
  uint32_t chunk, kpc;
  uint32_t n_colblk;
  uint32_t has_dgamma, has_dbeta;
} LayernormParamPush;

/* dgamma, dbeta: row statistics (mode 0), chunk partial sums (1), chunks in order (2). */
static gboolean layernorm_param_vulkan(int64_t rows, int64_t D, MexdTensor *dgamma,
                                       MexdTensor *dbeta, MexdTensor *dy, MexdTensor *x, float eps,
                                       GError **error)
{
  const char *name = "layernorm_backward";
  MexdBackend *be = x->backend;
  int64_t chunk = MAX(ROW_MIN_CHUNK, (rows + ROW_MAX_CHUNKS - 1) / ROW_MAX_CHUNKS);
  int64_t kpc = (rows + chunk - 1) / chunk;
  int64_t n_colblk = (D + 63) / 64;
  g_autoptr(MexdTensor) stats = scratch_new(name, be, rows * 3, error);
  g_autoptr(MexdTensor) part = stats ? scratch_new(name, be, kpc * 2 * D, error) : NULL;
  if (!part)
    return FALSE;
  LayernormParamPush pc = {
      .rows = (uint32_t)rows,
      .D = (uint32_t)D,
      .eps = eps,
      .chunk = (uint32_t)chunk,
      .kpc = (uint32_t)kpc,
      .n_colblk = (uint32_t)n_colblk,
      .has_dgamma = dgamma != NULL,
      .has_dbeta = dbeta != NULL,
  };
  MexdVkDispatch d = {
      .shader = "layernorm_bwd_param",
      .variant = x->dtype,
      .bind = {x, dy, stats, part},
      .n_bind = 4,
      .push = &pc,
      .push_size = sizeof pc,
  };
  if (!mexd_vk_grid(be, (uint64_t)rows, d.groups, error) || !mexd_vk_dispatch(be, &d, error))
    return FALSE;
  pc.mode = 1;
  if (!mexd_op_check_u32(name, "workgroups", n_colblk * kpc, error) ||
      !mexd_vk_grid(be, (uint64_t)(n_colblk * kpc), d.groups, error) ||
      !mexd_vk_dispatch(be, &d, error))
    return FALSE;
  pc.mode = 2;
  d.bind[0] = dgamma; /* NULL binds a dummy, which has_dgamma keeps unwritten */
  d.bind[1] = dbeta;
  return elem_grid(be, D, d.groups, error) && mexd_vk_dispatch(be, &d, error);
}

gboolean mexd_layernorm_backward(MexdTensor *dx, MexdTensor *dgamma, MexdTensor *dbeta,
                                 MexdTensor *dy, MexdTensor *x, MexdTensor *gamma, float eps,
                                 gboolean accumulate, GError **error)
{
  const char *name = "layernorm_backward";
  if (!mexd_op_check_float(name, "dy", dy, error) || !check_like(name, "x", x, dy, error) ||
      (dx && !check_like(name, "dx", dx, dy, error)))
    return FALSE;
  int64_t rows = mexd_tensor_rows_count(dy), D = mexd_tensor_row_len(dy);
  const int64_t dshape[1] = {D};
  struct {
    const char *name;
    MexdTensor *t;
  } params[3] = {{"gamma", gamma}, {"dgamma", dgamma}, {"dbeta", dbeta}};
  for (int k = 0; k < 3; k++)
    if (params[k].t &&
        (!mexd_op_check_dtype(name, params[k].name, params[k].t, dy->backend, dy->dtype, error) ||
         !mexd_op_check_shape(name, params[k].name, params[k].t, 1, dshape, error)))
      return FALSE;
  if (!dx && !dgamma && !dbeta)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "layernorm_backward: dx, dgamma and dbeta are all NULL: nothing to compute");
  if (!(eps >= 0.0f) || isinf(eps))
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "layernorm_backward: eps is %g, expected a finite value >= 0", (double)eps);
  /* no output over an input or another output */
  MexdTensor *outs[3] = {dx, dgamma, dbeta};
  const char *out_names[3] = {"dx", "dgamma", "dbeta"};
  for (int k = 0; k < 3; k++) {
    if (!outs[k])
      continue;
    if (!check_out(name, out_names[k], outs[k], "dy", dy, FALSE, error) ||
        !check_out(name, out_names[k], outs[k], "x", x, FALSE, error) ||
        !check_out(name, out_names[k], outs[k], "gamma", gamma, FALSE, error))
      return FALSE;
    for (int l = k + 1; l < 3; l++)
      if (!check_out(name, out_names[k], outs[k], out_names[l], outs[l], FALSE, error))
        return FALSE;
  }
  MexdBackend *be = dy->backend;
  if (be->kind == MEXD_BACKEND_CPU) {
    layernorm_bwd_cpu(rows, D, dx, dgamma, dbeta, dy, x, gamma, eps, accumulate);
    return TRUE;
  }
  if (!mexd_op_check_u32(name, "elements of dy", mexd_tensor_numel(dy), error))
    return FALSE;
  if (dx) {
    LayernormBwdPush pc = {
        .rows = (uint32_t)rows,
        .D = (uint32_t)D,
        .eps = eps,
        .has_gamma = gamma != NULL,
        .acc = accumulate != 0,
    };
    MexdVkDispatch d = {
        .shader = "layernorm_bwd",
        .variant = dy->dtype,
        .spec = {mexd_vk_row_workgroup(be, D)},
        .n_spec = 1,
        .bind = {x, gamma, dy, dx},
        .n_bind = 4,
        .push = &pc,
        .push_size = sizeof pc,
    };
    if (!mexd_vk_grid(be, (uint64_t)rows, d.groups, error) || !mexd_vk_dispatch(be, &d, error))
      return FALSE;
  }
  if (dgamma || dbeta)
    return layernorm_param_vulkan(rows, D, dgamma, dbeta, dy, x, eps, error);
  return TRUE;
}

/* ---- sum_rows ---- */

typedef struct {
  uint32_t off[4];
  uint32_t mode;
  uint32_t M, N;
  uint32_t chunk, kpc;
  uint32_t n_colblk;
  uint32_t acc;
} SumRowsPush;

gboolean mexd_sum_rows(MexdTensor *y, MexdTensor *x, gboolean accumulate, GError **error)
{
  const char *name = "sum_rows";
  if (!mexd_op_check_float(name, "y", y, error) ||
      !mexd_op_check_dtype(name, "x", x, y->backend, y->dtype, error))
    return FALSE;
  int64_t M = mexd_tensor_rows_count(x), N = mexd_tensor_row_len(x);
  if (!mexd_op_check_shape(name, "y", y, 1, &N, error) ||
      !check_out(name, "y", y, "x", x, FALSE, error))
    return FALSE;
  MexdBackend *be = y->backend;
  if (be->kind == MEXD_BACKEND_CPU) {
    gboolean ox, oy;
    const float *X = mexd_cpu_f32_in(x, &ox);
    float *Y = mexd_cpu_f32_out(y, accumulate, &oy);
    double *s = g_new0(double, N);
    for (int64_t r = 0; r < M; r++)
      for (int64_t j = 0; j < N; j++)
        s[j] += X[r * N + j];
    for (int64_t j = 0; j < N; j++)
      Y[j] = acc_store(Y[j], s[j], accumulate);
    g_free(s);
    mexd_cpu_f32_done(y, Y, oy, TRUE);
    free_in(X, ox);
    return TRUE;
  }
  if (!mexd_op_check_u32(name, "elements of x", mexd_tensor_numel(x), error))
    return FALSE;
  int64_t chunk = MAX(ROW_MIN_CHUNK, (M + ROW_MAX_CHUNKS - 1) / ROW_MAX_CHUNKS);
  int64_t kpc = (M + chunk - 1) / chunk, n_colblk = (N + 63) / 64;
  g_autoptr(MexdTensor) part = NULL;
  if (kpc > 1 && !(part = scratch_new(name, be, kpc * N, error)))
    return FALSE;
  SumRowsPush pc = {
      .M = (uint32_t)M,
      .N = (uint32_t)N,
      .chunk = (uint32_t)chunk,
      .kpc = (uint32_t)kpc,
      .n_colblk = (uint32_t)n_colblk,
      .acc = accumulate != 0,
  };
  MexdVkDispatch d = {
      .shader = "sum_rows",
      .variant = y->dtype,
      .bind = {x, y, part},
      .n_bind = 3,
      .push = &pc,
      .push_size = sizeof pc,
  };
  if (!mexd_op_check_u32(name, "workgroups", n_colblk * kpc, error) ||
      !mexd_vk_grid(be, (uint64_t)(n_colblk * kpc), d.groups, error) ||
      !mexd_vk_dispatch(be, &d, error))
    return FALSE;
  if (kpc == 1) /* one chunk: the sums went to y directly */
    return TRUE;
  pc.mode = 1;
  return elem_grid(be, N, d.groups, error) && mexd_vk_dispatch(be, &d, error);
}

/* ---- scatter_add_rows ---- */

static gboolean scatter_add_cpu(MexdTensor *y, MexdTensor *x, MexdTensor *idx, gboolean acc,
                                GError **error)
{
  const int64_t M = y->shape[0], N = y->shape[1], K = idx->shape[0];
  const int32_t *ix = mexd_tensor_host_data(idx);
  for (int64_t i = 0; i < K; i++)
    if (ix[i] < 0 || ix[i] >= M)
      return mexd_fail(error, MEXD_ERROR_INDEX,
                       "scatter_add_rows: idx[%" G_GINT64_FORMAT
                       "] = %d is outside the %" G_GINT64_FORMAT " rows of y",
                       i, (int)ix[i], M);
  /* the sources of each destination row in index order (a stable counting sort), so that each
   * row is summed in one double accumulator without an M×N double buffer */
  int64_t *start = g_new0(int64_t, M + 1), *order = g_new(int64_t, MAX(K, 1));
  for (int64_t i = 0; i < K; i++)
    start[ix[i] + 1]++;
  for (int64_t m = 0; m < M; m++)
    start[m + 1] += start[m];
  int64_t *fill = g_memdup2(start, sizeof(int64_t) * (size_t)M);
  for (int64_t i = 0; i < K; i++)
    order[fill[ix[i]]++] = i;
  gboolean ox, oy;
  const float *X = mexd_cpu_f32_in(x, &ox);
  float *Y = mexd_cpu_f32_out(y, acc, &oy);
  double *s = g_new(double, N);
  for (int64_t m = 0; m < M; m++) {
    for (int64_t j = 0; j < N; j++)
      s[j] = 0;
    for (int64_t q = start[m]; q < start[m + 1]; q++) {
      const float *xr = X + order[q] * N;
      for (int64_t j = 0; j < N; j++)
        s[j] += xr[j];
    }
    for (int64_t j = 0; j < N; j++)
      Y[m * N + j] = acc_store(Y[m * N + j], s[j], acc);
  }
  mexd_cpu_f32_done(y, Y, oy, TRUE);
  free_in(X, ox);
  g_free(s);
  g_free(start);
  g_free(fill);
  g_free(order);
  return TRUE;
}

typedef struct {
  uint32_t off[4];
  uint32_t M, N;
  uint32_t k0, k1;
  uint32_t n_colblk;
  uint32_t flags; /* 1 first chunk, 2 last chunk, 4 accumulate into y */
} ScatterPush;

static gboolean scatter_add_vulkan(MexdTensor *y, MexdTensor *x, MexdTensor *idx, gboolean acc,
                                   GError **error)
{
  const char *name = "scatter_add_rows";
  MexdBackend *be = y->backend;
  const int64_t M = y->shape[0], N = y->shape[1], K = idx->shape[0];
  const int64_t n_colblk = (N + 255) / 256;
  const int64_t step = mexd_vk_limits(be)->is_gpu ? K : SCATTER_CPU_DEVICE_INDICES;
  if (!mexd_op_check_u32(name, "workgroups", M * n_colblk, error))
    return FALSE;
  g_autoptr(MexdTensor) run = NULL; /* running sums between dispatches */
  if (K > step && !(run = scratch_new(name, be, M * N, error)))
    return FALSE;
  ScatterPush pc = {.M = (uint32_t)M, .N = (uint32_t)N, .n_colblk = (uint32_t)n_colblk};
  MexdVkDispatch d = {
      .shader = "scatter_add",
      .variant = y->dtype,
      .bind = {x, idx, y, run},
      .n_bind = 4,
      .bind_status = TRUE,
      .push = &pc,
      .push_size = sizeof pc,
  };
  if (!mexd_vk_grid(be, (uint64_t)(M * n_colblk), d.groups, error))
    return FALSE;
  for (int64_t k0 = 0; k0 < K; k0 += step) {
    int64_t k1 = MIN(K, k0 + step);
    pc.k0 = (uint32_t)k0;
    pc.k1 = (uint32_t)k1;
    pc.flags = (k0 == 0 ? 1u : 0u) | (k1 == K ? 2u : 0u) | (acc ? 4u : 0u);
    if (!mexd_vk_dispatch(be, &d, error))
      return FALSE;
  }
  return TRUE;
}

gboolean mexd_scatter_add_rows(MexdTensor *y, MexdTensor *x, MexdTensor *idx, gboolean accumulate,
                               GError **error)
{
  const char *name = "scatter_add_rows";
  if (!mexd_op_check_float(name, "y", y, error))
    return FALSE;
  MexdBackend *be = y->backend;
  if (!mexd_op_check_dtype(name, "x", x, be, y->dtype, error) ||
      !mexd_op_check_dtype(name, "idx", idx, be, MEXD_DTYPE_I32, error))
    return FALSE;
  if (y->ndim != 2) {
    g_autofree char *dsc = mexd_tensor_describe(y);
    return mexd_fail(error, MEXD_ERROR_SHAPE, "scatter_add_rows: argument y is %s, expected [M,N]",
                     dsc);
  }
  const int64_t idx_shape[1] = {-1};
  if (!mexd_op_check_shape(name, "idx", idx, 1, idx_shape, error))
    return FALSE;
  const int64_t x_shape[2] = {idx->shape[0], y->shape[1]};
  if (!mexd_op_check_shape(name, "x", x, 2, x_shape, error) ||
      !check_out(name, "y", y, "x", x, FALSE, error) ||
      !check_out(name, "y", y, "idx", idx, FALSE, error))
    return FALSE;
  if (be->kind == MEXD_BACKEND_CPU)
    return scatter_add_cpu(y, x, idx, accumulate, error);
  if (!mexd_op_check_u32(name, "elements of x", mexd_tensor_numel(x), error) ||
      !mexd_op_check_u32(name, "elements of y", mexd_tensor_numel(y), error))
    return FALSE;
  return scatter_add_vulkan(y, x, idx, accumulate, error);
}

/* ---- slice ---- */

typedef struct {
  uint32_t off[4];
  uint32_t n, xrow, yrow, xoff, acc;
} SlicePush;

gboolean mexd_slice(MexdTensor *y, MexdTensor *x, int axis, int64_t start, gboolean accumulate,
                    GError **error)
{
  const char *name = "slice";
  if (!mexd_op_check_float(name, "y", y, error) ||
      !mexd_op_check_dtype(name, "x", x, y->backend, y->dtype, error))
    return FALSE;
  if (axis < -x->ndim || axis >= x->ndim)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "slice: axis %d is out of range for %d-D tensors (%d..%d)", axis, x->ndim,
                     -x->ndim, x->ndim - 1);
  int ax = axis < 0 ? axis + x->ndim : axis;
  int64_t want[MEXD_MAX_DIMS];
  memcpy(want, x->shape, sizeof want);
  want[ax] = -1;
  if (!mexd_op_check_shape(name, "y", y, x->ndim, want, error))
    return FALSE;
  int64_t len = y->shape[ax];
  if (start < 0 || start > x->shape[ax] - len) {
    g_autofree char *dx = mexd_tensor_describe(x);
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "slice: [%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT
                     ") along axis %d is not inside x %s",
                     start, start + len, axis, dx);
  }
  if (!check_out(name, "y", y, "x", x, FALSE, error))
    return FALSE;
  int64_t outer = 1, inner = 1;
  for (int k = 0; k < ax; k++)
    outer *= x->shape[k];
  for (int k = ax + 1; k < x->ndim; k++)
    inner *= x->shape[k];
  const int64_t xrow = x->shape[ax] * inner, yrow = len * inner, xoff = start * inner;
  MexdBackend *be = y->backend;
  if (be->kind == MEXD_BACKEND_CPU) {
    if (!accumulate) { /* a copy in the storage type: exact in f16 too */
      size_t es = mexd_dtype_size(y->dtype);
      const char *X = mexd_tensor_host_data(x);
      char *Y = mexd_tensor_host_data(y);
      for (int64_t o = 0; o < outer; o++)
        memcpy(Y + (size_t)(o * yrow) * es, X + (size_t)(o * xrow + xoff) * es,
               (size_t)yrow * es);
      return TRUE;
    }
    gboolean ox, oy;
    const float *X = mexd_cpu_f32_in(x, &ox);
    float *Y = mexd_cpu_f32_out(y, TRUE, &oy);
    for (int64_t o = 0; o < outer; o++)
      for (int64_t k = 0; k < yrow; k++)
        Y[o * yrow + k] = acc_store(Y[o * yrow + k], X[o * xrow + xoff + k], TRUE);
    mexd_cpu_f32_done(y, Y, oy, TRUE);
    free_in(X, ox);
    return TRUE;
  }
  if (!mexd_op_check_u32(name, "elements of x", mexd_tensor_numel(x), error))
    return FALSE;
  int64_t n = mexd_tensor_numel(y);
  SlicePush pc = {
      .n = (uint32_t)n,
      .xrow = (uint32_t)xrow,
      .yrow = (uint32_t)yrow,
      .xoff = (uint32_t)xoff,
      .acc = accumulate != 0,
  };
  MexdVkDispatch d = {
      .shader = "slice",
      .variant = y->dtype,
      .bind = {x, y},
      .n_bind = 2,
      .push = &pc,
      .push_size = sizeof pc,
  };
  return elem_grid(be, n, d.groups, error) && mexd_vk_dispatch(be, &d, error);
}

/* ---- cross-entropy ---- */

/* Checks shared by the loss and its backward; the labels are checked on cpu (there they are
 * host data). */
static gboolean xent_check(const char *name, const MexdTensor *ref, MexdTensor *logits,
                           MexdTensor *labels, GError **error)
{
  if (!mexd_op_check_dtype(name, "logits", logits, ref->backend, ref->dtype, error) ||
      !mexd_op_check_dtype(name, "labels", labels, ref->backend, MEXD_DTYPE_I32, error))
    return FALSE;
  if (logits->ndim != 2) {
    g_autofree char *dsc = mexd_tensor_describe(logits);
    return mexd_fail(error, MEXD_ERROR_SHAPE, "%s: argument logits is %s, expected [R,C]", name,
                     dsc);
  }
  if (!mexd_op_check_shape(name, "labels", labels, 1, logits->shape, error))
    return FALSE;
  if (logits->backend->kind == MEXD_BACKEND_CPU) {
    const int32_t *lab = mexd_tensor_host_data(labels);
    for (int64_t r = 0; r < logits->shape[0]; r++)
      if (lab[r] < 0 || lab[r] >= logits->shape[1])
        return mexd_fail(error, MEXD_ERROR_INDEX,
                         "%s: labels[%" G_GINT64_FORMAT "] = %d is outside the %" G_GINT64_FORMAT
                         " classes",
                         name, r, (int)lab[r], logits->shape[1]);
  } else if (!mexd_op_check_u32(name, "elements of logits", mexd_tensor_numel(logits), error)) {
    return FALSE;
  }
  return TRUE;
}

/* cpu: the row's max and log Σ exp(x − max), in double */
static void xent_row(const float *row, int64_t C, double *m, double *lse)
{
  double mx = -INFINITY, s = 0;
  for (int64_t i = 0; i < C; i++)
    mx = fmax(mx, row[i]);
  for (int64_t i = 0; i < C; i++)
    s += exp((double)row[i] - mx);
  *m = mx;
  *lse = mx + log(s);
}

typedef struct {
  uint32_t off[4];
  uint32_t mode;
  uint32_t R, C;
} XentPush;

gboolean mexd_cross_entropy(MexdTensor *loss, MexdTensor *logits, MexdTensor *labels,
                            GError **error)
{
  const char *name = "cross_entropy";
  if (!mexd_op_check_float(name, "loss", loss, error) ||
      !mexd_op_check_shape(name, "loss", loss, 1, (int64_t[]){1}, error) ||
      !xent_check(name, loss, logits, labels, error) ||
      !check_out(name, "loss", loss, "logits", logits, FALSE, error) ||
      !check_out(name, "loss", loss, "labels", labels, FALSE, error))
    return FALSE;
  const int64_t R = logits->shape[0], C = logits->shape[1];
  MexdBackend *be = loss->backend;
  if (be->kind == MEXD_BACKEND_CPU) {
    gboolean ol;
    const float *L = mexd_cpu_f32_in(logits, &ol);
    const int32_t *lab = mexd_tensor_host_data(labels);
    double total = 0;
    for (int64_t r = 0; r < R; r++) {
      double m, lse;
      xent_row(L + r * C, C, &m, &lse);
      total += lse - L[r * C + lab[r]];
    }
    free_in(L, ol);
    float v = (float)(total / (double)R);
    return mexd_tensor_write_f32(loss, &v, 1, error);
  }
  /* the mean (mode 1) is one workgroup: each invocation adds R/wg row losses */
  const uint32_t wg = mexd_vk_row_workgroup(be, C);
  if (!mexd_vk_limits(be)->is_gpu && (R + wg - 1) / wg > CPU_DEVICE_MAX_LOOP)
    return mexd_fail(error, MEXD_ERROR_UNSUPPORTED,
                     "%s: %" G_GINT64_FORMAT
                     " rows are more than %s can average correctly (%" G_GINT64_FORMAT
                     " at most on a CPU Vulkan device)",
                     name, R, mexd_backend_name(be), (int64_t)CPU_DEVICE_MAX_LOOP * wg);
  g_autoptr(MexdTensor) rowloss = scratch_new(name, be, R, error);
  if (!rowloss)
    return FALSE;
  XentPush pc = {.R = (uint32_t)R, .C = (uint32_t)C};
  MexdVkDispatch d = {
      .shader = "xent",
      .variant = loss->dtype,
      .spec = {wg},
      .n_spec = 1,
      .bind = {logits, labels, rowloss, loss},
      .n_bind = 4,
      .bind_status = TRUE,
      .push = &pc,
      .push_size = sizeof pc,
  };
  if (!mexd_vk_grid(be, (uint64_t)R, d.groups, error) || !mexd_vk_dispatch(be, &d, error))
    return FALSE;
  pc.mode = 1;
  d.groups[0] = d.groups[1] = d.groups[2] = 1;
  return mexd_vk_dispatch(be, &d, error);
}

typedef struct {
  uint32_t off[4];
  uint32_t R, C;
  uint32_t has_dloss, acc;
} XentBwdPush;

gboolean mexd_cross_entropy_backward(MexdTensor *dlogits, MexdTensor *logits, MexdTensor *labels,
                                     MexdTensor *dloss, gboolean accumulate, GError **error)
{
  const char *name = "cross_entropy_backward";
  if (!mexd_op_check_float(name, "dlogits", dlogits, error) ||
      !xent_check(name, dlogits, logits, labels, error) ||
      !mexd_op_check_shape(name, "dlogits", dlogits, 2, logits->shape, error) ||
      (dloss && !check_scalar(name, "dloss", dloss, dlogits, error)))
    return FALSE;
  if (!check_out(name, "dlogits", dlogits, "logits", logits, FALSE, error) ||
      !check_out(name, "dlogits", dlogits, "labels", labels, FALSE, error) ||
      !check_out(name, "dlogits", dlogits, "dloss", dloss, FALSE, error))
    return FALSE;
  const int64_t R = logits->shape[0], C = logits->shape[1];
  MexdBackend *be = dlogits->backend;
  if (be->kind == MEXD_BACKEND_CPU) {
    gboolean ol, od;
    const float *L = mexd_cpu_f32_in(logits, &ol);
    const int32_t *lab = mexd_tensor_host_data(labels);
    float *D = mexd_cpu_f32_out(dlogits, accumulate, &od);
    double scale = (double)cpu_scalar(dloss, 1.0f) / (double)R;
    for (int64_t r = 0; r < R; r++) {
      double m, lse;
      const float *row = L + r * C;
      xent_row(row, C, &m, &lse);
      for (int64_t i = 0; i < C; i++) {
        double p = exp((double)row[i] - lse);
        D[r * C + i] = acc_store(D[r * C + i], scale * (i == lab[r] ? p - 1.0 : p), accumulate);
      }
    }
    mexd_cpu_f32_done(dlogits, D, od, TRUE);
    free_in(L, ol);
    return TRUE;
  }
  XentBwdPush pc = {
      .R = (uint32_t)R, .C = (uint32_t)C, .has_dloss = dloss != NULL, .acc = accumulate != 0};
  MexdVkDispatch d = {
      .shader = "xent_bwd",
      .variant = dlogits->dtype,
      .spec = {mexd_vk_row_workgroup(be, C)},
      .n_spec = 1,
      .bind = {logits, labels, dloss, dlogits},
      .n_bind = 4,
      .bind_status = TRUE,
      .push = &pc,
      .push_size = sizeof pc,
  };
  return mexd_vk_grid(be, (uint64_t)R, d.groups, error) && mexd_vk_dispatch(be, &d, error);
}

/* ---- mse ---- */

typedef struct {
  uint32_t off[4];
  uint32_t mode;
  uint32_t n, per_group, n_groups;
} MsePush;

gboolean mexd_mse(MexdTensor *loss, MexdTensor *y, MexdTensor *target, GError **error)
{
  const char *name = "mse";
  if (!mexd_op_check_float(name, "loss", loss, error) ||
      !mexd_op_check_shape(name, "loss", loss, 1, (int64_t[]){1}, error) ||
      !mexd_op_check_dtype(name, "y", y, loss->backend, loss->dtype, error) ||
      !check_like(name, "target", target, y, error) ||
      !check_out(name, "loss", loss, "y", y, FALSE, error) ||
      !check_out(name, "loss", loss, "target", target, FALSE, error))
    return FALSE;
  const int64_t n = mexd_tensor_numel(y);
  MexdBackend *be = loss->backend;
  if (be->kind == MEXD_BACKEND_CPU) {
    gboolean oy, ot;
    const float *Y = mexd_cpu_f32_in(y, &oy), *T = mexd_cpu_f32_in(target, &ot);
    double s = 0;
    for (int64_t i = 0; i < n; i++) {
      double dd = (double)Y[i] - T[i];
      s += dd * dd;
    }
    free_in(Y, oy);
    free_in(T, ot);
    float v = (float)(s / (double)n);
    return mexd_tensor_write_f32(loss, &v, 1, error);
  }
  if (!mexd_op_check_u32(name, "elements of y", n, error))
    return FALSE;
  /* at least 16 elements per thread, at most 65,536 groups for the one-workgroup second pass
   * (so each invocation of either pass loops at most a few hundred times) */
  int64_t per_group = MAX(16 * ELEM_GROUP, (n + 65535) / 65536);
  per_group = (per_group + ELEM_GROUP - 1) / ELEM_GROUP * ELEM_GROUP;
  int64_t n_groups = (n + per_group - 1) / per_group;
  g_autoptr(MexdTensor) part = scratch_new(name, be, n_groups, error);
  if (!part)
    return FALSE;
  MsePush pc = {
      .n = (uint32_t)n, .per_group = (uint32_t)per_group, .n_groups = (uint32_t)n_groups};
  MexdVkDispatch d = {
      .shader = "mse",
      .variant = loss->dtype,
      .bind = {y, target, part, loss},
      .n_bind = 4,
      .push = &pc,
      .push_size = sizeof pc,
  };
  if (!mexd_vk_grid(be, (uint64_t)n_groups, d.groups, error) || !mexd_vk_dispatch(be, &d, error))
    return FALSE;
  pc.mode = 1;
  d.groups[0] = d.groups[1] = d.groups[2] = 1;
  return mexd_vk_dispatch(be, &d, error);
}

typedef struct {
  uint32_t off[4];
  uint32_t n;
  float two_over_n;
  uint32_t has_dloss, acc;
} MseBwdPush;

gboolean mexd_mse_backward(MexdTensor *dy, MexdTensor *y, MexdTensor *target, MexdTensor *dloss,
                           gboolean accumulate, GError **error)
{
  const char *name = "mse_backward";
  if (!mexd_op_check_float(name, "dy", dy, error) ||
      !check_out_like(name, "dy", dy, "y", y, error) ||
      !check_like(name, "target", target, y, error) ||
      (dloss && !check_scalar(name, "dloss", dloss, dy, error)))
    return FALSE;
  if (!check_out(name, "dy", dy, "y", y, FALSE, error) ||
      !check_out(name, "dy", dy, "target", target, FALSE, error) ||
      !check_out(name, "dy", dy, "dloss", dloss, FALSE, error))
    return FALSE;
  const int64_t n = mexd_tensor_numel(dy);
  MexdBackend *be = dy->backend;
  if (be->kind == MEXD_BACKEND_CPU) {
    gboolean oy, ot, od;
    const float *Y = mexd_cpu_f32_in(y, &oy), *T = mexd_cpu_f32_in(target, &ot);
    float *D = mexd_cpu_f32_out(dy, accumulate, &od);
    double scale = 2.0 * (double)cpu_scalar(dloss, 1.0f) / (double)n;
    for (int64_t i = 0; i < n; i++)
      D[i] = acc_store(D[i], scale * ((double)Y[i] - T[i]), accumulate);
    mexd_cpu_f32_done(dy, D, od, TRUE);
    free_in(Y, oy);
    free_in(T, ot);
    return TRUE;
  }
  if (!mexd_op_check_u32(name, "elements of dy", n, error))
    return FALSE;
  MseBwdPush pc = {
      .n = (uint32_t)n,
      .two_over_n = (float)(2.0 / (double)n),
      .has_dloss = dloss != NULL,
      .acc = accumulate != 0,
  };
  MexdVkDispatch d = {
      .shader = "mse_bwd",
      .variant = dy->dtype,
      .bind = {y, target, dloss, dy},
      .n_bind = 4,
      .push = &pc,
      .push_size = sizeof pc,
  };
  return elem_grid(be, n, d.groups, error) && mexd_vk_dispatch(be, &d, error);
}

/* ---- dropout ---- */

/* The drop threshold on the 24-bit draw, and the scale of kept elements, for p in [0,1]. */
static uint32_t dropout_thr(float p)
{
  return (uint32_t)lround((double)p * 16777216.0);
}

static float dropout_scale(float p)
{
  return p < 1.0f ? (float)(1.0 / (1.0 - (double)p)) : 0.0f;
}

static void dropout_words(uint64_t seed, uint64_t stream, uint64_t block, uint32_t w[4])
{
  const uint32_t counter[4] = {(uint32_t)block, (uint32_t)(stream & 0xffffffffu),
                               (uint32_t)(stream >> 32), MEXD_DROPOUT_TAG};
  const uint32_t key[2] = {(uint32_t)(seed & 0xffffffffu), (uint32_t)(seed >> 32)};
  mexd_philox4x32_10(counter, key, w);
}

gboolean mexd_dropout_keep(float p, uint64_t seed, uint64_t stream, uint64_t i)
{
  uint32_t w[4];
  dropout_words(seed, stream, i / 4, w);
  return (w[i % 4] >> 8) >= dropout_thr(p);
}

typedef struct {
  uint32_t off[4];
  uint32_t n;
  uint32_t key0, key1;
  uint32_t stream0, stream1;
  uint32_t thr;
  float scale;
  uint32_t acc;
} DropoutPush;

gboolean mexd_dropout(MexdTensor *y, MexdTensor *x, float p, uint64_t seed, uint64_t stream,
                      gboolean accumulate, GError **error)
{
  const char *name = "dropout";
  if (!mexd_op_check_float(name, "y", y, error) || !check_out_like(name, "y", y, "x", x, error))
    return FALSE;
  if (!(p >= 0.0f && p <= 1.0f))
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "dropout: p is %g, expected 0 <= p <= 1",
                     (double)p);
  if (!check_out(name, "y", y, "x", x, TRUE, error))
    return FALSE;
  const int64_t n = mexd_tensor_numel(y);
  const uint32_t thr = dropout_thr(p);
  const float scale = dropout_scale(p);
  MexdBackend *be = y->backend;
  if (be->kind == MEXD_BACKEND_CPU) {
    gboolean ox, oy;
    /* y may be x: elementwise, read before written */
    const float *X = mexd_cpu_f32_in(x, &ox);
    float *Y = mexd_cpu_f32_out(y, accumulate, &oy);
    uint32_t w[4];
    for (int64_t i = 0; i < n; i++) {
      if (i % 4 == 0)
        dropout_words(seed, stream, (uint64_t)i / 4, w);
      /* f32 as the shader: x·scale rounded once, a dropped element exactly 0 */
      float v = (w[i % 4] >> 8) >= thr ? X[i] * scale : 0.0f;
      Y[i] = accumulate ? Y[i] + v : v;
    }
    mexd_cpu_f32_done(y, Y, oy, TRUE);
    free_in(X, ox);
    return TRUE;
  }
  if (!mexd_op_check_u32(name, "elements of y", n, error))
    return FALSE;
  DropoutPush pc = {
      .n = (uint32_t)n,
      .key0 = (uint32_t)(seed & 0xffffffffu),
      .key1 = (uint32_t)(seed >> 32),
      .stream0 = (uint32_t)(stream & 0xffffffffu),
      .stream1 = (uint32_t)(stream >> 32),
      .thr = thr,
      .scale = scale,
      .acc = accumulate != 0,
  };
  MexdVkDispatch d = {
      .shader = "dropout",
      .variant = y->dtype,
      .bind = {x, y},
      .n_bind = 2,
      .push = &pc,
      .push_size = sizeof pc,
  };
  return elem_grid(be, n, d.groups, error) && mexd_vk_dispatch(be, &d, error);
}

/* ---- depthwise conv2d ---- */

typedef struct {
  int64_t N, C, H, W, KH, KW, OH, OW;
  int64_t ph, pw;
} DwGeom;

/* The parameters the backward supports: depthwise (groups = C), stride 1, dilation 1. */
static gboolean dw_params(const char *name, const MexdConv2dParams *params, int64_t C,
                          MexdConv2dParams *p, GError **error)
{
  *p = params ? *params : MEXD_CONV2D_PARAMS_DEFAULT;
  if (p->groups < 1)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "%s: groups is %d, expected >= 1", name,
                     p->groups);
  if (p->groups != C)
    return mexd_fail(error, MEXD_ERROR_UNSUPPORTED,
                     "%s: only depthwise convolutions are supported (groups = C_in = C_out = %"
                     G_GINT64_FORMAT "), not groups = %d",
                     name, C, p->groups);
  if (p->stride_h != 1 || p->stride_w != 1)
    return mexd_fail(error, MEXD_ERROR_UNSUPPORTED,
                     "%s: only stride 1 is supported, not %dx%d", name, p->stride_h, p->stride_w);
  if (p->dil_h != 1 || p->dil_w != 1)
    return mexd_fail(error, MEXD_ERROR_UNSUPPORTED,
                     "%s: only dilation 1 is supported, not %dx%d", name, p->dil_h, p->dil_w);
  if (p->pad_h < 0 || p->pad_w < 0)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "%s: padding %dx%d, expected >= 0", name,
                     p->pad_h, p->pad_w);
  return TRUE;
}

/* Fills g from x's shape [N,C,H,W] (xs), the kernel size and the padding, and checks dy. */
static gboolean dw_geom(const char *name, const int64_t *xs, int64_t KH, int64_t KW,
                        const MexdConv2dParams *p, MexdTensor *dy, DwGeom *g, GError **error)
{
  *g = (DwGeom){.N = xs[0], .C = xs[1], .H = xs[2], .W = xs[3], .KH = KH, .KW = KW,
                .ph = p->pad_h, .pw = p->pad_w};
  g->OH = g->H + 2 * g->ph - KH + 1;
  g->OW = g->W + 2 * g->pw - KW + 1;
  if (g->OH < 1 || g->OW < 1)
    return mexd_fail(error, MEXD_ERROR_SHAPE,
                     "%s: the kernel %" G_GINT64_FORMAT "x%" G_GINT64_FORMAT
                     " is larger than the input %" G_GINT64_FORMAT "x%" G_GINT64_FORMAT
                     " with padding %dx%d: the output would be empty",
                     name, KH, KW, g->H, g->W, p->pad_h, p->pad_w);
  if (!mexd_op_check_shape(name, "dy", dy, 4, (int64_t[]){g->N, g->C, g->OH, g->OW}, error))
    return FALSE;
  /* the shader forms rows and columns plus padding in int32 */
  if (g->H + 2 * g->ph + 1 > G_MAXINT32 || g->W + 2 * g->pw + 1 > G_MAXINT32)
    return mexd_fail(error, MEXD_ERROR_NO_MEMORY,
                     "%s: padded input %" G_GINT64_FORMAT "x%" G_GINT64_FORMAT " is too large",
                     name, g->H + 2 * g->ph, g->W + 2 * g->pw);
  return TRUE;
}

static gboolean dw_4d(const char *name, const char *arg, const MexdTensor *t, GError **error)
{
  if (t->ndim == 4)
    return TRUE;
  g_autofree char *dsc = mexd_tensor_describe(t);
  return mexd_fail(error, MEXD_ERROR_SHAPE, "%s: argument %s is %s, expected a 4-D tensor", name,
                   arg, dsc);
}

/* The dy rows a (and likewise columns) whose tap u lands inside the input: 0 ≤ a + u − pad < H. */
static void dw_tap_range(int64_t n_out, int64_t n_in, int64_t pad, int64_t u, int64_t *lo,
                         int64_t *hi)
{
  *lo = MAX(0, pad - u);
  *hi = MAX(*lo, MIN(n_out, n_in + pad - u));
}

static void dw_input_cpu(const DwGeom *g, MexdTensor *dx, MexdTensor *dy, MexdTensor *w,
                         gboolean acc)
{
  gboolean ody, ow, odx;
  const float *DY = mexd_cpu_f32_in(dy, &ody);
  const float *Wt = mexd_cpu_f32_in(w, &ow);
  float *DX = mexd_cpu_f32_out(dx, acc, &odx);
  const int64_t plane = g->H * g->W, oplane = g->OH * g->OW;
  double *s = g_new(double, plane);
  for (int64_t nc = 0; nc < g->N * g->C; nc++) {
    const int64_t c = nc % g->C;
    const float *dyp = DY + nc * oplane;
    for (int64_t k = 0; k < plane; k++)
      s[k] = 0;
    /* each tap (u,v) scatters the dy plane into dx shifted by (u − pad_h, v − pad_w) */
    for (int64_t u = 0; u < g->KH; u++) {
      int64_t a0, a1;
      dw_tap_range(g->OH, g->H, g->ph, u, &a0, &a1);
      for (int64_t v = 0; v < g->KW; v++) {
        int64_t b0, b1;
        dw_tap_range(g->OW, g->W, g->pw, v, &b0, &b1);
        const double wv = Wt[(c * g->KH + u) * g->KW + v];
        for (int64_t a = a0; a < a1; a++) {
          const float *drow = dyp + a * g->OW;
          double *srow = s + (a + u - g->ph) * g->W;
          for (int64_t b = b0; b < b1; b++)
            srow[b + v - g->pw] += wv * drow[b];
        }
      }
    }
    float *out = DX + nc * plane;
    for (int64_t k = 0; k < plane; k++)
      out[k] = acc_store(out[k], s[k], acc);
  }
  g_free(s);
  mexd_cpu_f32_done(dx, DX, odx, TRUE);
  free_in(DY, ody);
  free_in(Wt, ow);
}

typedef struct {
  uint32_t off[4];
  uint32_t mode;
  uint32_t N, C, H, W;
  uint32_t OH, OW, KH, KW;
  int32_t pad_h, pad_w;
  uint32_t total, taps, acc;
  uint32_t chunk, nchunks;
} DwPush;

static DwPush dw_push(const DwGeom *g)
{
  return (DwPush){
      .N = (uint32_t)g->N,
      .C = (uint32_t)g->C,
      .H = (uint32_t)g->H,
      .W = (uint32_t)g->W,
      .OH = (uint32_t)g->OH,
      .OW = (uint32_t)g->OW,
      .KH = (uint32_t)g->KH,
      .KW = (uint32_t)g->KW,
      .pad_h = (int32_t)g->ph,
      .pad_w = (int32_t)g->pw,
  };
}

gboolean mexd_conv2d_backward_input(MexdTensor *dx, MexdTensor *dy, MexdTensor *w,
                                    const MexdConv2dParams *params, gboolean accumulate,
                                    GError **error)
{
  const char *name = "conv2d_backward_input";
  if (!mexd_op_check_float(name, "dx", dx, error))
    return FALSE;
  MexdBackend *be = dx->backend;
  if (!mexd_op_check_dtype(name, "dy", dy, be, dx->dtype, error) ||
      !mexd_op_check_dtype(name, "w", w, be, dx->dtype, error) ||
      !dw_4d(name, "dx", dx, error) || !dw_4d(name, "dy", dy, error) ||
      !dw_4d(name, "w", w, error))
    return FALSE;
  MexdConv2dParams p;
  DwGeom g;
  if (!dw_params(name, params, dx->shape[1], &p, error) ||
      !mexd_op_check_shape(name, "w", w, 4, (int64_t[]){dx->shape[1], 1, -1, -1}, error) ||
      !dw_geom(name, dx->shape, w->shape[2], w->shape[3], &p, dy, &g, error))
    return FALSE;
  if (!check_out(name, "dx", dx, "dy", dy, FALSE, error) ||
      !check_out(name, "dx", dx, "w", w, FALSE, error))
    return FALSE;
  if (be->kind == MEXD_BACKEND_CPU) {
    dw_input_cpu(&g, dx, dy, w, accumulate);
    return TRUE;
  }
  if (!mexd_op_check_u32(name, "elements of dx", mexd_tensor_numel(dx), error) ||
      !mexd_op_check_u32(name, "elements of dy", mexd_tensor_numel(dy), error) ||
      !mexd_op_check_u32(name, "elements of w", mexd_tensor_numel(w), error))
    return FALSE;
  /* each invocation loops over the taps: keep that inside lavapipe's loop limit (conv2d.c) */
  if (!mexd_vk_limits(be)->is_gpu && g.KH * g.KW > CONV_CPU_DEVICE_MAX_TAPS)
    return mexd_fail(error, MEXD_ERROR_UNSUPPORTED,
                     "%s: a %" G_GINT64_FORMAT "x%" G_GINT64_FORMAT " kernel is more than %s can "
                     "run correctly (%d taps at most on a CPU Vulkan device)",
                     name, g.KH, g.KW, mexd_backend_name(be), CONV_CPU_DEVICE_MAX_TAPS);
  DwPush pc = dw_push(&g);
  pc.mode = 0;
  pc.total = (uint32_t)mexd_tensor_numel(dx);
  pc.acc = accumulate != 0;
  MexdVkDispatch d = {
      .shader = "conv2d_dw_bwd",
      .variant = dx->dtype,
      .bind = {dy, w, dx},
      .n_bind = 4,
      .push = &pc,
      .push_size = sizeof pc,
  };
  return elem_grid(be, pc.total, d.groups, error) && mexd_vk_dispatch(be, &d, error);
}

static void dw_weight_cpu(const DwGeom *g, MexdTensor *dw, MexdTensor *db, MexdTensor *dy,
                          MexdTensor *x)
{
  gboolean ody, ox, odw, odb = FALSE;
  const float *DY = mexd_cpu_f32_in(dy, &ody);
  const float *X = mexd_cpu_f32_in(x, &ox);
  float *DW = mexd_cpu_f32_out(dw, TRUE, &odw);
  float *DB = db ? mexd_cpu_f32_out(db, TRUE, &odb) : NULL;
  const int64_t plane = g->H * g->W, oplane = g->OH * g->OW;
  for (int64_t c = 0; c < g->C; c++) {
    for (int64_t u = 0; u < g->KH; u++) {
      int64_t a0, a1;
      dw_tap_range(g->OH, g->H, g->ph, u, &a0, &a1);
      for (int64_t v = 0; v < g->KW; v++) {
        int64_t b0, b1;
        dw_tap_range(g->OW, g->W, g->pw, v, &b0, &b1);
        double s = 0;
        for (int64_t n = 0; n < g->N; n++) {
          const float *dyp = DY + (n * g->C + c) * oplane, *xp = X + (n * g->C + c) * plane;
          for (int64_t a = a0; a < a1; a++) {
            const float *drow = dyp + a * g->OW, *xrow = xp + (a + u - g->ph) * g->W;
            for (int64_t b = b0; b < b1; b++)
              s += (double)drow[b] * xrow[b + v - g->pw];
          }
        }
        float *o = DW + (c * g->KH + u) * g->KW + v;
        *o = acc_store(*o, s, TRUE);
      }
    }
    if (DB) {
      double s = 0;
      for (int64_t n = 0; n < g->N; n++) {
        const float *dyp = DY + (n * g->C + c) * oplane;
        for (int64_t k = 0; k < oplane; k++)
          s += dyp[k];
      }
      DB[c] = acc_store(DB[c], s, TRUE);
    }
  }
  mexd_cpu_f32_done(dw, DW, odw, TRUE);
  if (DB)
    mexd_cpu_f32_done(db, DB, odb, TRUE);
  free_in(DY, ody);
  free_in(X, ox);
}

/* vulkan: partial sums per (tap, chunk of output positions), then the chunks in order. */
static gboolean dw_weight_vulkan(const DwGeom *g, MexdTensor *dw, MexdTensor *db, MexdTensor *dy,
                                 MexdTensor *x, GError **error)
{
  const char *name = "conv2d_backward_weight";
  MexdBackend *be = dw->backend;
  const int64_t P = g->N * g->OH * g->OW;
  const int64_t taps = g->C * g->KH * g->KW + (db ? g->C : 0);
  int64_t chunk = MAX(CONV_MIN_CHUNK, (P + CONV_MAX_CHUNKS - 1) / CONV_MAX_CHUNKS);
  chunk = (chunk + 255) / 256 * 256;
  const int64_t nchunks = (P + chunk - 1) / chunk;
  if (!mexd_op_check_u32(name, "workgroups", taps * nchunks, error))
    return FALSE;
  g_autoptr(MexdTensor) part = scratch_new(name, be, taps * nchunks, error);
  if (!part)
    return FALSE;
  DwPush pc = dw_push(g);
  pc.mode = 1;
  pc.total = (uint32_t)(taps * nchunks);
  pc.taps = (uint32_t)taps;
  pc.chunk = (uint32_t)chunk;
  pc.nchunks = (uint32_t)nchunks;
  MexdVkDispatch d = {
      .shader = "conv2d_dw_bwd",
      .variant = dw->dtype,
      .bind = {dy, x, NULL, part},
      .n_bind = 4,
      .push = &pc,
      .push_size = sizeof pc,
  };
  if (!mexd_vk_grid(be, (uint64_t)pc.total, d.groups, error) || !mexd_vk_dispatch(be, &d, error))
    return FALSE;
  pc.mode = 2;
  pc.total = (uint32_t)taps;
  d.bind[0] = db; /* NULL binds a dummy: without db there are no bias taps to write */
  d.bind[1] = NULL;
  d.bind[2] = dw;
  return elem_grid(be, taps, d.groups, error) && mexd_vk_dispatch(be, &d, error);
}

gboolean mexd_conv2d_backward_weight(MexdTensor *dw, MexdTensor *db, MexdTensor *dy,
                                     MexdTensor *x, const MexdConv2dParams *params,
                                     GError **error)
{
  const char *name = "conv2d_backward_weight";
  if (!mexd_op_check_float(name, "dw", dw, error))
    return FALSE;
  MexdBackend *be = dw->backend;
  if (!mexd_op_check_dtype(name, "dy", dy, be, dw->dtype, error) ||
      !mexd_op_check_dtype(name, "x", x, be, dw->dtype, error) ||
      (db && !mexd_op_check_dtype(name, "db", db, be, dw->dtype, error)) ||
      !dw_4d(name, "dw", dw, error) || !dw_4d(name, "dy", dy, error) ||
      !dw_4d(name, "x", x, error))
    return FALSE;
  MexdConv2dParams p;
  DwGeom g;
  if (!dw_params(name, params, x->shape[1], &p, error) ||
      !mexd_op_check_shape(name, "dw", dw, 4, (int64_t[]){x->shape[1], 1, -1, -1}, error) ||
      (db && !mexd_op_check_shape(name, "db", db, 1, &x->shape[1], error)) ||
      !dw_geom(name, x->shape, dw->shape[2], dw->shape[3], &p, dy, &g, error))
    return FALSE;
  if (!check_out(name, "dw", dw, "dy", dy, FALSE, error) ||
      !check_out(name, "dw", dw, "x", x, FALSE, error) ||
      !check_out(name, "db", db, "dy", dy, FALSE, error) ||
      !check_out(name, "db", db, "x", x, FALSE, error) ||
      !check_out(name, "dw", dw, "db", db, FALSE, error))
    return FALSE;
  if (be->kind == MEXD_BACKEND_CPU) {
    dw_weight_cpu(&g, dw, db, dy, x);
    return TRUE;
  }
  if (!mexd_op_check_u32(name, "elements of x", mexd_tensor_numel(x), error) ||
      !mexd_op_check_u32(name, "elements of dy", mexd_tensor_numel(dy), error))
    return FALSE;
  return dw_weight_vulkan(&g, dw, db, dy, x, error);
}

/* ---- abs_sum_max ---- */

static void abs_sum_max_bwd_cpu(MexdTensor *dx, MexdTensor *x, MexdTensor *dy, int64_t B,
                                int64_t R, int64_t C, gboolean rows, gboolean acc)
{
  gboolean ox, odx;
  const float *X = mexd_cpu_f32_in(x, &ox);
  float *DX = mexd_cpu_f32_out(dx, acc, &odx);
  const double g = cpu_scalar(dy, 0.0f);
  const int64_t lines = rows ? R : C, len = rows ? C : R, stride = rows ? 1 : C;
  double *sums = g_new(double, B * lines);
  /* the line sums as mexd_abs_sum_max takes them (double), and the maximum (NaN noted apart) */
  double best = 0;
  gboolean nan_seen = FALSE;
  for (int64_t b = 0; b < B; b++)
    for (int64_t l = 0; l < lines; l++) {
      const float *base = X + b * R * C + (rows ? l * C : l);
      double s = 0;
      for (int64_t j = 0; j < len; j++)
        s += fabs((double)base[j * stride]);
      sums[b * lines + l] = s;
      if (isnan(s))
        nan_seen = TRUE;
      else if (s > best)
        best = s;
    }
  int64_t count = 0;
  for (int64_t k = 0; k < B * lines; k++)
    count += nan_seen ? isnan(sums[k]) != 0 : sums[k] == best;
  for (int64_t e = 0; e < B * R * C; e++) {
    const int64_t b = e / (R * C), r = (e / C) % R, c = e % C;
    const double s = sums[b * lines + (rows ? r : c)];
    double v = 0;
    if (nan_seen ? isnan(s) : s == best) {
      const double xv = X[e];
      const double sg = xv > 0 ? 1.0 : xv < 0 ? -1.0 : isnan(xv) ? xv : 0.0;
      v = g * sg / (double)count;
    }
    DX[e] = acc_store(DX[e], v, acc);
  }
  g_free(sums);
  mexd_cpu_f32_done(dx, DX, odx, TRUE);
  free_in(X, ox);
}

typedef struct {
  uint32_t off[4];
  uint32_t mode;
  uint32_t B, R, C;
  uint32_t axis;
  uint32_t nseg, seg;
  uint32_t n, acc;
} AbsSumMaxBwdPush;

gboolean mexd_abs_sum_max_backward(MexdTensor *dx, MexdTensor *x, MexdTensor *dy, int axis,
                                   gboolean accumulate, GError **error)
{
  const char *name = "abs_sum_max_backward";
  if (!mexd_op_check_float(name, "dx", dx, error) ||
      !check_out_like(name, "dx", dx, "x", x, error) || !check_scalar(name, "dy", dy, dx, error))
    return FALSE;
  if (x->ndim < 2)
    return mexd_fail(error, MEXD_ERROR_SHAPE,
                     "abs_sum_max_backward: argument x must have 2 or more dims");
  if (axis != -1 && axis != -2)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "abs_sum_max_backward: axis must be -1 (row sums) or -2 (column sums), not %d",
                     axis);
  if (!check_out(name, "dx", dx, "x", x, FALSE, error) ||
      !check_out(name, "dx", dx, "dy", dy, FALSE, error))
    return FALSE;
  const int64_t R = x->shape[x->ndim - 2], C = x->shape[x->ndim - 1];
  const int64_t n = mexd_tensor_numel(x), B = n / (R * C);
  MexdBackend *be = dx->backend;
  if (be->kind == MEXD_BACKEND_CPU) {
    abs_sum_max_bwd_cpu(dx, x, dy, B, R, C, axis == -1, accumulate);
    return TRUE;
  }
  if (!mexd_op_check_u32(name, "elements of x", n, error))
    return FALSE;
  const int64_t L = B * (axis == -1 ? R : C), len = axis == -1 ? C : R;
  const int64_t nseg = (len + ABS_SEG - 1) / ABS_SEG;
  /* mode 1 is one workgroup: each invocation walks L/256 lines, adding a line's nseg segment
   * sums and then testing it once more (lavapipe counts about nseg + 3 iterations a line) */
  if (!mexd_vk_limits(be)->is_gpu && (L + 255) / 256 * (nseg + 3) > CPU_DEVICE_MAX_LOOP)
    return mexd_fail(error, MEXD_ERROR_UNSUPPORTED,
                     "%s: %" G_GINT64_FORMAT " lines of %" G_GINT64_FORMAT
                     " are more than %s can reduce correctly (about %" G_GINT64_FORMAT
                     " at most on a CPU Vulkan device)",
                     name, L, len, mexd_backend_name(be),
                     (int64_t)CPU_DEVICE_MAX_LOOP / (nseg + 3) * 256);
  /* scratch: the segment sums [L·nseg], the line sums [L], (maximum, count) */
  g_autoptr(MexdTensor) scratch = scratch_new(name, be, L * nseg + L + 2, error);
  if (!scratch)
    return FALSE;
  AbsSumMaxBwdPush pc = {
      .B = (uint32_t)B,
      .R = (uint32_t)R,
      .C = (uint32_t)C,
      .axis = axis == -1 ? 0u : 1u,
      .nseg = (uint32_t)nseg,
      .seg = ABS_SEG,
      .n = (uint32_t)n,
      .acc = accumulate != 0,
  };
  MexdVkDispatch d = {
      .shader = "abs_sum_max_bwd",
      .variant = dx->dtype,
      .bind = {x, dy, dx, scratch},
      .n_bind = 4,
      .push = &pc,
      .push_size = sizeof pc,
  };
  if (!elem_grid(be, L * nseg, d.groups, error) || !mexd_vk_dispatch(be, &d, error))
    return FALSE;
  pc.mode = 1;
  d.groups[0] = d.groups[1] = d.groups[2] = 1;
  if (!mexd_vk_dispatch(be, &d, error))
    return FALSE;
  pc.mode = 2;
  return elem_grid(be, n, d.groups, error) && mexd_vk_dispatch(be, &d, error);
}
