/* layernorm.c: y = (x − mean)/sqrt(var + eps)·gamma + beta over the last dimension (ops.h).
 *
 * cpu: two passes per row accumulating in double (mean, then the squared deviations), so rows with
 * a large mean lose nothing; f16 tensors are widened to f32 first.
 * vulkan: shaders/layernorm.comp, one workgroup per row reducing through shared memory.
 * y may be x exactly (in place): each row is read completely before it is written. */
#include "backend/cpu.h"
#include "backend/vulkan.h"
#include "ops/ops-private.h"

#include <math.h>

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

typedef struct {
  uint32_t off[4];
  uint32_t rows, D;
  float eps;
  uint32_t has_gamma, has_beta;
} LayernormPush;

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
      .shader = "layernorm",
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
