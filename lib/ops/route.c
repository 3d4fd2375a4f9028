/* route.c: mexd_abs_sum_max (the Nyström pseudo-inverse's initial scale) and mexd_route_keep (the
 * Dyn-MoE routers' keep sets); ops.h has the contracts.
 *
 * abs_sum_max: cpu sums each line in double (the reference the shader is tested against); vulkan
 * (shaders/abs_sum_max.comp) sums in f32 in one workgroup — the inputs are [heads, m, m] with
 * m = 256, i.e. ~0.5 M elements, read once.
 * route_keep: one workgroup per expert (shaders/route_keep.comp); the comparison p1 > p0 is made on
 * the stored values, so cpu and vulkan agree exactly.
 * abs_sum_max's backward, mexd_abs_sum_max_backward (grad.h): the line sums recomputed as the
 * forward takes them on the same backend, the gradient shared evenly by the lines that attain the
 * maximum; vulkan: shaders/abs_sum_max_bwd.comp in three dispatches (segment sums of ABS_SEG
 * elements, then the maximum and count in one workgroup, then dx). */
#include "backend/cpu.h"
#include "backend/vulkan.h"
#include "ops/ops-private.h"

/* abs_sum_max_bwd: elements per line segment (one invocation each) */
#define ABS_SEG 4096

#include <math.h>

MEXD_VK_PUSH_STRUCT(AbsSumMaxPush, MEXD_PUSH_ABS_SUM_MAX);

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
      .shader = MEXD_SHADER_ABS_SUM_MAX,
      .variant = y->dtype,
      .bind = {x, y},
      .n_bind = 2,
      .push = &pc,
      .push_size = sizeof pc,
      .groups = {1, 1, 1},
  };
  return mexd_vk_dispatch(be, &d, error);
}

MEXD_VK_PUSH_STRUCT(RouteKeepPush, MEXD_PUSH_ROUTE_KEEP);

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
      .shader = MEXD_SHADER_ROUTE_KEEP,
      .variant = probs->dtype,
      .bind = {probs, gate, masked, counts},
      .n_bind = 4,
      .push = &pc,
      .push_size = sizeof pc,
      .groups = {(uint32_t)E, 1, 1},
  };
  return mexd_vk_dispatch(be, &d, error);
}

/* ---- abs_sum_max backward (grad.h) ---- */

static void abs_sum_max_bwd_cpu(MexdTensor *dx, MexdTensor *x, MexdTensor *dy, int64_t B,
                                int64_t R, int64_t C, gboolean rows, gboolean acc)
{
  gboolean ox, odx;
  const float *X = mexd_cpu_f32_in(x, &ox);
  float *DX = mexd_cpu_f32_out(dx, acc, &odx);
  const double g = mexd_op_cpu_scalar(dy, 0.0f);
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
    DX[e] = mexd_op_acc_store(DX[e], v, acc);
  }
  g_free(sums);
  mexd_cpu_f32_done(dx, DX, odx, TRUE);
  mexd_op_free_in(X, ox);
}

MEXD_VK_PUSH_STRUCT(AbsSumMaxBwdPush, MEXD_PUSH_ABS_SUM_MAX_BWD);

gboolean mexd_abs_sum_max_backward(MexdTensor *dx, MexdTensor *x, MexdTensor *dy, int axis,
                                   gboolean accumulate, GError **error)
{
  const char *name = "abs_sum_max_backward";
  if (!mexd_op_check_float(name, "dx", dx, error) ||
      !mexd_op_check_out_like(name, "dx", dx, "x", x, error) ||
      !mexd_op_check_scalar(name, "dy", dy, dx, error))
    return FALSE;
  if (x->ndim < 2)
    return mexd_fail(error, MEXD_ERROR_SHAPE,
                     "abs_sum_max_backward: argument x must have 2 or more dims");
  if (axis != -1 && axis != -2)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "abs_sum_max_backward: axis must be -1 (row sums) or -2 (column sums), not %d",
                     axis);
  if (!mexd_op_check_no_overlap(name, "dx", dx, "x", x, error) ||
      !mexd_op_check_no_overlap(name, "dx", dx, "dy", dy, error))
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
  if (!mexd_vk_limits(be)->is_gpu && (L + 255) / 256 * (nseg + 3) > MEXD_OP_CPU_DEVICE_MAX_LOOP)
    return mexd_fail(error, MEXD_ERROR_UNSUPPORTED,
                     "%s: %" G_GINT64_FORMAT " lines of %" G_GINT64_FORMAT
                     " are more than %s can reduce correctly (about %" G_GINT64_FORMAT
                     " at most on a CPU Vulkan device)",
                     name, L, len, mexd_backend_name(be),
                     (int64_t)MEXD_OP_CPU_DEVICE_MAX_LOOP / (nseg + 3) * 256);
  /* scratch: the segment sums [L·nseg], the line sums [L], (maximum, count) */
  g_autoptr(MexdTensor) scratch = mexd_op_scratch_new(name, be, L * nseg + L + 2, error);
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
      .shader = MEXD_SHADER_ABS_SUM_MAX_BWD,
      .variant = dx->dtype,
      .bind = {x, dy, dx, scratch},
      .n_bind = 4,
      .push = &pc,
      .push_size = sizeof pc,
  };
  if (!mexd_op_elem_grid(be, L * nseg, d.groups, error) || !mexd_vk_dispatch(be, &d, error))
    return FALSE;
  pc.mode = 1;
  d.groups[0] = d.groups[1] = d.groups[2] = 1;
  if (!mexd_vk_dispatch(be, &d, error))
    return FALSE;
  pc.mode = 2;
  return mexd_op_elem_grid(be, n, d.groups, error) && mexd_vk_dispatch(be, &d, error);
}
