/* layernorm.c: y = (x − mean)/sqrt(var + eps)·gamma + beta over the last dimension (ops.h).
 *
 * cpu: two passes per row accumulating in double (mean, then the squared deviations), so rows with
 * a large mean lose nothing; f16 tensors are widened to f32 first.
 * vulkan: shaders/layernorm.comp, one workgroup per row reducing through shared memory.
 * y may be x exactly (in place): each row is read completely before it is written.
 *
 * mexd_layernorm_backward (grad.h), recomputing each row's mean and variance from x: cpu in
 * double; vulkan: shaders/layernorm_bwd.comp for dx (one workgroup per row), and
 * shaders/layernorm_bwd_param.comp for dgamma and dbeta in three dispatches: row statistics,
 * partial sums over chunks of rows, then the chunks in order (no float atomics). */
#include "backend/cpu.h"
#include "backend/vulkan.h"
#include "ops/ops-private.h"

#include <math.h>

/* layernorm_bwd_param: rows per chunk at least, chunks at most (as reduce.c) */
#define ROW_MIN_CHUNK  64
#define ROW_MAX_CHUNKS 512

typedef struct {
  const float *X, *G, *B;
  float *Y;
  int64_t D;
  float eps;
} LayernormJob;

/* Rows [r0, r1): each row by one thread, in the same order as ever. */
static void layernorm_range(int64_t r0, int64_t r1, void *ctx)
{
  const LayernormJob *j = ctx;
  int64_t D = j->D;
  const float *G = j->G, *B = j->B;
  for (int64_t r = r0; r < r1; r++) {
    const float *xr = j->X + r * D;
    float *yr = j->Y + r * D;
    double s = 0;
    for (int64_t i = 0; i < D; i++)
      s += xr[i];
    double mean = s / (double)D;
    double ss = 0;
    for (int64_t i = 0; i < D; i++) {
      double d = xr[i] - mean;
      ss += d * d;
    }
    double rstd = 1.0 / sqrt(ss / (double)D + (double)j->eps);
    for (int64_t i = 0; i < D; i++) {
      double v = (xr[i] - mean) * rstd;
      if (G)
        v *= G[i];
      if (B)
        v += B[i];
      yr[i] = (float)v;
    }
  }
}

static void layernorm_cpu(int64_t rows, int64_t D, MexdTensor *y, MexdTensor *x, MexdTensor *gamma,
                          MexdTensor *beta, float eps)
{
  gboolean ox, oy, og = FALSE, ob = FALSE;
  /* in place in f32, X and Y are the same memory: harmless, as each row's statistics are taken
   * before the row is written and each element is read before it is overwritten */
  LayernormJob j = {.D = D, .eps = eps};
  j.X = mexd_cpu_f32_in(x, &ox);
  j.Y = mexd_cpu_f32_out(y, FALSE, &oy);
  j.G = gamma ? mexd_cpu_f32_in(gamma, &og) : NULL;
  j.B = beta ? mexd_cpu_f32_in(beta, &ob) : NULL;
  mexd_parallel_for(rows, MAX(1, MEXD_PARALLEL_GRAIN_ELEMENTS / 2 / MAX(D, 1)), layernorm_range,
                    &j);
  mexd_cpu_f32_done(y, j.Y, oy, TRUE);
  if (ox)
    g_free((float *)j.X);
  if (og)
    g_free((float *)j.G);
  if (ob)
    g_free((float *)j.B);
}

MEXD_VK_PUSH_STRUCT(LayernormPush, MEXD_PUSH_LAYERNORM);

static gboolean layernorm_vulkan(int64_t rows, int64_t D, MexdTensor *y, MexdTensor *x,
                                 MexdTensor *gamma, MexdTensor *beta, float eps, GError **error)
{
  MexdBackend *be = y->backend;
  LayernormPush pc = {
      .rows = (uint32_t)rows,
      .D = (uint32_t)D,
      .eps = eps,
      .has_gamma = gamma != NULL,
      .has_beta = beta != NULL,
  };
  MexdVkDispatch d = {
      .shader = MEXD_SHADER_LAYERNORM,
      .variant = y->dtype,
      .spec = {mexd_vk_row_workgroup(be, D)},
      .n_spec = 1,
      .bind = {x, gamma, beta, y},
      .n_bind = 4,
      .push = &pc,
      .push_size = sizeof pc,
  };
  if (!mexd_vk_grid(be, (uint64_t)rows, d.groups, error))
    return FALSE;
  return mexd_vk_dispatch(be, &d, error);
}

gboolean mexd_layernorm(MexdTensor *y, MexdTensor *x, MexdTensor *gamma, MexdTensor *beta,
                        float eps, GError **error)
{
  const char *op = "layernorm";
  if (!mexd_op_check_float(op, "y", y, error))
    return FALSE;
  MexdBackend *be = y->backend;
  if (!mexd_op_check_dtype(op, "x", x, be, y->dtype, error) ||
      (gamma && !mexd_op_check_dtype(op, "gamma", gamma, be, y->dtype, error)) ||
      (beta && !mexd_op_check_dtype(op, "beta", beta, be, y->dtype, error)))
    return FALSE;
  if (!mexd_op_check_shape(op, "x", x, y->ndim, y->shape, error))
    return FALSE;
  int64_t rows = mexd_tensor_rows_count(y), D = mexd_tensor_row_len(y);
  if ((gamma && !mexd_op_check_shape(op, "gamma", gamma, 1, &D, error)) ||
      (beta && !mexd_op_check_shape(op, "beta", beta, 1, &D, error)))
    return FALSE;
  if (!(eps >= 0.0f) || isinf(eps))
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "layernorm: eps is %g, expected a finite value >= 0", (double)eps);
  /* y may be x itself, but not part of it or of the parameters */
  if ((!mexd_tensor_same_data(y, x) && !mexd_op_check_no_overlap(op, "y", y, "x", x, error)) ||
      !mexd_op_check_no_overlap(op, "y", y, "gamma", gamma, error) ||
      !mexd_op_check_no_overlap(op, "y", y, "beta", beta, error))
    return FALSE;

  if (be->kind == MEXD_BACKEND_CPU) {
    layernorm_cpu(rows, D, y, x, gamma, beta, eps);
    return TRUE;
  }
  if (!mexd_op_check_u32(op, "elements of y", mexd_tensor_numel(y), error))
    return FALSE;
  return layernorm_vulkan(rows, D, y, x, gamma, beta, eps, error);
}

/* ---- backward (grad.h) ---- */

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
      out[i] = mexd_op_acc_store(out[i], rstd * (g - mg - xh[i] * mgx), acc);
    }
  }
  if (DX)
    mexd_cpu_f32_done(dx, DX, odx, TRUE);
  if (sg) {
    float *o = mexd_cpu_f32_out(dgamma, TRUE, &odg);
    for (int64_t i = 0; i < D; i++)
      o[i] = mexd_op_acc_store(o[i], sg[i], TRUE);
    mexd_cpu_f32_done(dgamma, o, odg, TRUE);
  }
  if (sb) {
    float *o = mexd_cpu_f32_out(dbeta, TRUE, &odb);
    for (int64_t i = 0; i < D; i++)
      o[i] = mexd_op_acc_store(o[i], sb[i], TRUE);
    mexd_cpu_f32_done(dbeta, o, odb, TRUE);
  }
  g_free(xh);
  g_free(sg);
  g_free(sb);
  mexd_op_free_in(X, ox);
  mexd_op_free_in(DY, ody);
  mexd_op_free_in(G, og);
}

MEXD_VK_PUSH_STRUCT(LayernormBwdPush, MEXD_PUSH_LAYERNORM_BWD);

MEXD_VK_PUSH_STRUCT(LayernormParamPush, MEXD_PUSH_LAYERNORM_BWD_PARAM);

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
  g_autoptr(MexdTensor) stats = mexd_op_scratch_new(name, be, rows * 3, error);
  g_autoptr(MexdTensor) part = stats ? mexd_op_scratch_new(name, be, kpc * 2 * D, error) : NULL;
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
      .shader = MEXD_SHADER_LAYERNORM_BWD_PARAM,
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
  return mexd_op_elem_grid(be, D, d.groups, error) && mexd_vk_dispatch(be, &d, error);
}

gboolean mexd_layernorm_backward(MexdTensor *dx, MexdTensor *dgamma, MexdTensor *dbeta,
                                 MexdTensor *dy, MexdTensor *x, MexdTensor *gamma, float eps,
                                 gboolean accumulate, GError **error)
{
  const char *name = "layernorm_backward";
  if (!mexd_op_check_float(name, "dy", dy, error) || !mexd_op_check_like(name, "x", x, dy, error) ||
      (dx && !mexd_op_check_like(name, "dx", dx, dy, error)))
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
    if (!mexd_op_check_no_overlap(name, out_names[k], outs[k], "dy", dy, error) ||
        !mexd_op_check_no_overlap(name, out_names[k], outs[k], "x", x, error) ||
        !mexd_op_check_no_overlap(name, out_names[k], outs[k], "gamma", gamma, error))
      return FALSE;
    for (int l = k + 1; l < 3; l++)
      if (!mexd_op_check_no_overlap(name, out_names[k], outs[k], out_names[l], outs[l], error))
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
        .shader = MEXD_SHADER_LAYERNORM_BWD,
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
