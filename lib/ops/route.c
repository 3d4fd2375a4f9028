/* route.c: mexd_abs_sum_max (the Nyström pseudo-inverse's initial scale) and mexd_route_keep (the
 * Dyn-MoE routers' keep sets); ops.h has the contracts.
 *
 * abs_sum_max: cpu sums each line in double (the reference the shader is tested against); vulkan
 * (shaders/abs_sum_max.comp) sums in f32 in one workgroup — the inputs are [heads, m, m] with
 * m = 256, i.e. ~0.5 M elements, read once.
 * route_keep: one workgroup per expert (shaders/route_keep.comp); the comparison p1 > p0 is made on
 * the stored values, so cpu and vulkan agree exactly. */
#include "backend/cpu.h"
#include "backend/vulkan.h"
#include "ops/ops-private.h"

#include <math.h>

typedef struct {
  uint32_t off[4];
  uint32_t B, R, C;
  uint32_t axis;
} AbsSumMaxPush;

gboolean mexd_abs_sum_max(MexdTensor *y, MexdTensor *x, int axis, GError **error)
{
  const char *name = "abs_sum_max";
  if (!mexd_op_check_float(name, "y", y, error))
    return FALSE;
  MexdBackend *be = y->backend;
  if (!mexd_op_check_dtype(name, "x", x, be, y->dtype, error))
    return FALSE;
  if (!mexd_op_check_shape(name, "y", y, 1, (int64_t[]){1}, error))
    return FALSE;
  if (x->ndim < 2)
    return mexd_fail(error, MEXD_ERROR_SHAPE, "abs_sum_max: argument x must have 2 or more dims");
  if (axis != -1 && axis != -2)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "abs_sum_max: axis must be -1 (row sums) or -2 (column sums), not %d", axis);
  if (!mexd_op_check_no_overlap(name, "y", y, "x", x, error))
    return FALSE;
  int64_t R = x->shape[x->ndim - 2], C = x->shape[x->ndim - 1];
  int64_t B = mexd_tensor_numel(x) / (R * C);
  if (be->kind == MEXD_BACKEND_CPU) {
    gboolean ox;
    const float *X = mexd_cpu_f32_in(x, &ox);
    int64_t lines = axis == -1 ? R : C, len = axis == -1 ? C : R;
    int64_t stride = axis == -1 ? 1 : C;
    double best = 0.0;
    gboolean nan_seen = FALSE;
    for (int64_t b = 0; b < B; b++)
      for (int64_t l = 0; l < lines; l++) {
        const float *base = X + b * R * C + (axis == -1 ? l * C : l);
        double s = 0.0;
        for (int64_t j = 0; j < len; j++)
          s += fabs((double)base[j * stride]);
        if (isnan(s))
          nan_seen = TRUE;
        else if (s > best)
          best = s;
      }
    if (ox)
      g_free((float *)X);
    float v = nan_seen ? NAN : (float)best;
    return mexd_tensor_write_f32(y, &v, 1, error);
  }
  if (!mexd_op_check_u32(name, "elements of x", mexd_tensor_numel(x), error))
    return FALSE;
  AbsSumMaxPush pc = {
      .B = (uint32_t)B, .R = (uint32_t)R, .C = (uint32_t)C, .axis = axis == -1 ? 0u : 1u};
  MexdVkDispatch d = {
      .shader = "abs_sum_max",
      .variant = y->dtype,
      .bind = {x, y},
      .n_bind = 2,
      .push = &pc,
      .push_size = sizeof pc,
      .groups = {1, 1, 1},
  };
  return mexd_vk_dispatch(be, &d, error);
}

typedef struct {
  uint32_t off[4];
  uint32_t R, E;
} RouteKeepPush;

gboolean mexd_route_keep(MexdTensor *gate, MexdTensor *masked, MexdTensor *counts,
                         MexdTensor *probs, GError **error)
{
  const char *name = "route_keep";
  if (!mexd_op_check_float(name, "probs", probs, error))
    return FALSE;
  MexdBackend *be = probs->backend;
  if (probs->ndim != 3 || probs->shape[2] != 2)
    return mexd_fail(error, MEXD_ERROR_SHAPE, "route_keep: argument probs must be [R,E,2]");
  int64_t R = probs->shape[0], E = probs->shape[1];
  if (!mexd_op_check_dtype(name, "gate", gate, be, probs->dtype, error) ||
      !mexd_op_check_dtype(name, "masked", masked, be, probs->dtype, error) ||
      !mexd_op_check_dtype(name, "counts", counts, be, MEXD_DTYPE_I32, error))
    return FALSE;
  if (!mexd_op_check_shape(name, "gate", gate, 2, (int64_t[]){E, R}, error) ||
      !mexd_op_check_shape(name, "masked", masked, 2, (int64_t[]){E, R}, error) ||
      !mexd_op_check_shape(name, "counts", counts, 1, (int64_t[]){E}, error))
    return FALSE;
  if (!mexd_op_check_no_overlap(name, "gate", gate, "probs", probs, error) ||
      !mexd_op_check_no_overlap(name, "masked", masked, "probs", probs, error) ||
      !mexd_op_check_no_overlap(name, "masked", masked, "gate", gate, error))
    return FALSE;
  if (be->kind == MEXD_BACKEND_CPU) {
    gboolean op, og, om;
    const float *P = mexd_cpu_f32_in(probs, &op);
    float *G = mexd_cpu_f32_out(gate, FALSE, &og);
    float *M = mexd_cpu_f32_out(masked, FALSE, &om);
    int32_t *N = mexd_tensor_host_data(counts);
    for (int64_t r = 0; r < E; r++) {
      int32_t kept = 0;
      for (int64_t i = 0; i < R; i++) {
        float p0 = P[(i * E + r) * 2], p1 = P[(i * E + r) * 2 + 1];
        G[r * R + i] = p1;
        M[r * R + i] = p1 > p0 ? p1 : -INFINITY;
        kept += p1 > p0;
      }
      N[r] = kept;
    }
    mexd_cpu_f32_done(gate, G, og, TRUE);
    mexd_cpu_f32_done(masked, M, om, TRUE);
    if (op)
      g_free((float *)P);
    return TRUE;
  }
  if (!mexd_op_check_u32(name, "elements of probs", mexd_tensor_numel(probs), error))
    return FALSE;
  RouteKeepPush pc = {.R = (uint32_t)R, .E = (uint32_t)E};
  MexdVkDispatch d = {
      .shader = "route_keep",
      .variant = probs->dtype,
      .bind = {probs, gate, masked, counts},
      .n_bind = 4,
      .push = &pc,
      .push_size = sizeof pc,
      .groups = {(uint32_t)E, 1, 1},
  };
  return mexd_vk_dispatch(be, &d, error);
}
