/* lincomb.c: y = a0·x0 + a1·x1 + a2·x2 + beta·y, elementwise with suffix broadcasting (ops.h).
 *
 * The diffusion samplers' updates (f̂0 from f, ρ, ε̂; the posterior step from f̂0, f, ρ, z) are
 * linear combinations with per-step host scalars; one dispatch each instead of a chain of
 * scale/add ops.  Each x_k may be NULL (its term is absent) and its shape must be a suffix of y's
 * (ρ [C] against f [S,C]); x_k may be y itself (read before written, element by element).
 * cpu and vulkan form the sum left to right in f32: ((a0·x0 + a1·x1) + a2·x2) + beta·y. */
#include "backend/cpu.h"
#include "backend/vulkan.h"
#include "ops/ops-private.h"

#define LINCOMB_GROUP 256

MEXD_VK_PUSH_STRUCT(LincombPush, MEXD_PUSH_LINCOMB);

static gboolean is_suffix(const MexdTensor *x, const MexdTensor *y)
{
  if (x->ndim > y->ndim)
    return FALSE;
  for (int i = 1; i <= x->ndim; i++)
    if (x->shape[x->ndim - i] != y->shape[y->ndim - i])
      return FALSE;
  return TRUE;
}

gboolean mexd_lincomb(MexdTensor *y, float a0, MexdTensor *x0, float a1, MexdTensor *x1, float a2,
                      MexdTensor *x2, float beta, GError **error)
{
  const char *name = "lincomb";
  if (!mexd_op_check_float(name, "y", y, error))
    return FALSE;
  MexdBackend *be = y->backend;
  MexdTensor *xs[3] = {x0, x1, x2};
  const float as[3] = {a0, a1, a2};
  static const char *names[3] = {"x0", "x1", "x2"};
  for (int k = 0; k < 3; k++) {
    if (!xs[k])
      continue;
    if (!mexd_op_check_dtype(name, names[k], xs[k], be, y->dtype, error))
      return FALSE;
    if (!is_suffix(xs[k], y)) {
      g_autofree char *dx = mexd_tensor_describe(xs[k]);
      g_autofree char *dy = mexd_tensor_describe(y);
      return mexd_fail(error, MEXD_ERROR_SHAPE,
                       "lincomb: argument %s is %s, whose shape is not a suffix of y's %s",
                       names[k], dx, dy);
    }
    if (!mexd_tensor_same_data(y, xs[k]) &&
        !mexd_op_check_no_overlap(name, "y", y, names[k], xs[k], error))
      return FALSE;
  }
  int64_t n = mexd_tensor_numel(y);
  if (be->kind == MEXD_BACKEND_CPU) {
    /* into a separate buffer, so inputs aliased with y are read unchanged */
    gboolean owned[4] = {FALSE, FALSE, FALSE, FALSE};
    const float *X[4] = {NULL, NULL, NULL, NULL};
    int64_t nk[3] = {1, 1, 1};
    for (int k = 0; k < 3; k++)
      if (xs[k]) {
        X[k] = mexd_cpu_f32_in(xs[k], &owned[k]);
        nk[k] = mexd_tensor_numel(xs[k]);
      }
    if (beta != 0.0f)
      X[3] = mexd_cpu_f32_in(y, &owned[3]);
    float *out = g_new(float, n);
    for (int64_t i = 0; i < n; i++) {
      float acc = 0.0f;
      if (X[0])
        acc = as[0] * X[0][i % nk[0]];
      if (X[1])
        acc += as[1] * X[1][i % nk[1]];
      if (X[2])
        acc += as[2] * X[2][i % nk[2]];
      if (X[3])
        acc += beta * X[3][i];
      out[i] = acc;
    }
    for (int k = 0; k < 4; k++)
      if (owned[k])
        g_free((float *)X[k]);
    gboolean ok = mexd_tensor_write_f32(y, out, n, error);
    g_free(out);
    return ok;
  }
  if (!mexd_op_check_u32(name, "elements of y", n, error))
    return FALSE;
  LincombPush pc = {.n = (uint32_t)n, .beta = beta};
  MexdVkDispatch d = {
      .shader = MEXD_SHADER_LINCOMB,
      .variant = y->dtype,
      .bind = {x0, x1, x2, y},
      .n_bind = 4,
      .push = &pc,
      .push_size = sizeof pc,
  };
  for (int k = 0; k < 3; k++) {
    pc.a[k] = as[k];
    pc.nk[k] = xs[k] ? (uint32_t)mexd_tensor_numel(xs[k]) : 1u;
    if (xs[k])
      pc.mask |= 1u << k;
  }
  if (beta != 0.0f)
    pc.mask |= 8u;
  if (!mexd_vk_grid(be, ((uint64_t)n + LINCOMB_GROUP - 1) / LINCOMB_GROUP, d.groups, error))
    return FALSE;
  return mexd_vk_dispatch(be, &d, error);
}
