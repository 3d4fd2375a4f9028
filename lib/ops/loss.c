/* loss.c: the losses of grad.h and their backwards — mexd_cross_entropy, mexd_mse (reduction:
 * mean, as PyTorch's default) and mexd_cross_entropy_backward, mexd_mse_backward.
 *
 * cpu: in double (the reference), f16 tensors widened first.
 * vulkan, each loss in two dispatches chosen by pc.mode (no float atomics):
 * - cross-entropy: shaders/xent.comp, the row losses (one workgroup per row: max, log Σ exp) into
 *   a f32 scratch, then their mean in one workgroup — which on a CPU device refuses, with
 *   MEXD_ERROR_UNSUPPORTED, the row counts (~3.8 million) where lavapipe would cut its loops
 *   short (MEXD_OP_CPU_DEVICE_MAX_LOOP); the backward: shaders/xent_bwd.comp, one workgroup per
 *   row.  The labels: checked at once on cpu (nothing written); on vulkan the shader sets
 *   MEXD_VK_STATUS_INDEX_RANGE and the next sync fails with MEXD_ERROR_INDEX (gather.c).
 * - mse: shaders/mse.comp, partial sums of squared differences per workgroup, then their sum in
 *   one workgroup; the backward: shaders/mse_bwd.comp, one invocation per element. */
#include "backend/cpu.h"
#include "backend/vulkan.h"
#include "ops/ops-private.h"

#include <math.h>

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

MEXD_VK_PUSH_STRUCT(XentPush, MEXD_PUSH_XENT);

gboolean mexd_cross_entropy(MexdTensor *loss, MexdTensor *logits, MexdTensor *labels,
                            GError **error)
{
  const char *name = "cross_entropy";
  if (!mexd_op_check_float(name, "loss", loss, error) ||
      !mexd_op_check_shape(name, "loss", loss, 1, (int64_t[]){1}, error) ||
      !xent_check(name, loss, logits, labels, error) ||
      !mexd_op_check_no_overlap(name, "loss", loss, "logits", logits, error) ||
      !mexd_op_check_no_overlap(name, "loss", loss, "labels", labels, error))
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
    mexd_op_free_in(L, ol);
    float v = (float)(total / (double)R);
    return mexd_tensor_write_f32(loss, &v, 1, error);
  }
  /* the mean (mode 1) is one workgroup: each invocation adds R/wg row losses */
  const uint32_t wg = mexd_vk_row_workgroup(be, C);
  if (!mexd_vk_limits(be)->is_gpu && (R + wg - 1) / wg > MEXD_OP_CPU_DEVICE_MAX_LOOP)
    return mexd_fail(error, MEXD_ERROR_UNSUPPORTED,
                     "%s: %" G_GINT64_FORMAT
                     " rows are more than %s can average correctly (%" G_GINT64_FORMAT
                     " at most on a CPU Vulkan device)",
                     name, R, mexd_backend_name(be), (int64_t)MEXD_OP_CPU_DEVICE_MAX_LOOP * wg);
  g_autoptr(MexdTensor) rowloss = mexd_op_scratch_new(name, be, R, error);
  if (!rowloss)
    return FALSE;
  XentPush pc = {.R = (uint32_t)R, .C = (uint32_t)C};
  MexdVkDispatch d = {
      .shader = MEXD_SHADER_XENT,
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

MEXD_VK_PUSH_STRUCT(XentBwdPush, MEXD_PUSH_XENT_BWD);

gboolean mexd_cross_entropy_backward(MexdTensor *dlogits, MexdTensor *logits, MexdTensor *labels,
                                     MexdTensor *dloss, gboolean accumulate, GError **error)
{
  const char *name = "cross_entropy_backward";
  if (!mexd_op_check_float(name, "dlogits", dlogits, error) ||
      !xent_check(name, dlogits, logits, labels, error) ||
      !mexd_op_check_shape(name, "dlogits", dlogits, 2, logits->shape, error) ||
      (dloss && !mexd_op_check_scalar(name, "dloss", dloss, dlogits, error)))
    return FALSE;
  if (!mexd_op_check_no_overlap(name, "dlogits", dlogits, "logits", logits, error) ||
      !mexd_op_check_no_overlap(name, "dlogits", dlogits, "labels", labels, error) ||
      !mexd_op_check_no_overlap(name, "dlogits", dlogits, "dloss", dloss, error))
    return FALSE;
  const int64_t R = logits->shape[0], C = logits->shape[1];
  MexdBackend *be = dlogits->backend;
  if (be->kind == MEXD_BACKEND_CPU) {
    gboolean ol, od;
    const float *L = mexd_cpu_f32_in(logits, &ol);
    const int32_t *lab = mexd_tensor_host_data(labels);
    float *D = mexd_cpu_f32_out(dlogits, accumulate, &od);
    double scale = (double)mexd_op_cpu_scalar(dloss, 1.0f) / (double)R;
    for (int64_t r = 0; r < R; r++) {
      double m, lse;
      const float *row = L + r * C;
      xent_row(row, C, &m, &lse);
      for (int64_t i = 0; i < C; i++) {
        double p = exp((double)row[i] - lse);
        D[r * C + i] =
            mexd_op_acc_store(D[r * C + i], scale * (i == lab[r] ? p - 1.0 : p), accumulate);
      }
    }
    mexd_cpu_f32_done(dlogits, D, od, TRUE);
    mexd_op_free_in(L, ol);
    return TRUE;
  }
  XentBwdPush pc = {
      .R = (uint32_t)R, .C = (uint32_t)C, .has_dloss = dloss != NULL, .acc = accumulate != 0};
  MexdVkDispatch d = {
      .shader = MEXD_SHADER_XENT_BWD,
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

MEXD_VK_PUSH_STRUCT(MsePush, MEXD_PUSH_MSE);

gboolean mexd_mse(MexdTensor *loss, MexdTensor *y, MexdTensor *target, GError **error)
{
  const char *name = "mse";
  if (!mexd_op_check_float(name, "loss", loss, error) ||
      !mexd_op_check_shape(name, "loss", loss, 1, (int64_t[]){1}, error) ||
      !mexd_op_check_dtype(name, "y", y, loss->backend, loss->dtype, error) ||
      !mexd_op_check_like(name, "target", target, y, error) ||
      !mexd_op_check_no_overlap(name, "loss", loss, "y", y, error) ||
      !mexd_op_check_no_overlap(name, "loss", loss, "target", target, error))
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
    mexd_op_free_in(Y, oy);
    mexd_op_free_in(T, ot);
    float v = (float)(s / (double)n);
    return mexd_tensor_write_f32(loss, &v, 1, error);
  }
  if (!mexd_op_check_u32(name, "elements of y", n, error))
    return FALSE;
  /* at least 16 elements per thread, at most 65,536 groups for the one-workgroup second pass
   * (so each invocation of either pass loops at most a few hundred times) */
  int64_t per_group = MAX(16 * MEXD_OP_ELEM_GROUP, (n + 65535) / 65536);
  per_group = (per_group + MEXD_OP_ELEM_GROUP - 1) / MEXD_OP_ELEM_GROUP * MEXD_OP_ELEM_GROUP;
  int64_t n_groups = (n + per_group - 1) / per_group;
  g_autoptr(MexdTensor) part = mexd_op_scratch_new(name, be, n_groups, error);
  if (!part)
    return FALSE;
  MsePush pc = {
      .n = (uint32_t)n, .per_group = (uint32_t)per_group, .n_groups = (uint32_t)n_groups};
  MexdVkDispatch d = {
      .shader = MEXD_SHADER_MSE,
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

MEXD_VK_PUSH_STRUCT(MseBwdPush, MEXD_PUSH_MSE_BWD);

gboolean mexd_mse_backward(MexdTensor *dy, MexdTensor *y, MexdTensor *target, MexdTensor *dloss,
                           gboolean accumulate, GError **error)
{
  const char *name = "mse_backward";
  if (!mexd_op_check_float(name, "dy", dy, error) ||
      !mexd_op_check_out_like(name, "dy", dy, "y", y, error) ||
      !mexd_op_check_like(name, "target", target, y, error) ||
      (dloss && !mexd_op_check_scalar(name, "dloss", dloss, dy, error)))
    return FALSE;
  if (!mexd_op_check_no_overlap(name, "dy", dy, "y", y, error) ||
      !mexd_op_check_no_overlap(name, "dy", dy, "target", target, error) ||
      !mexd_op_check_no_overlap(name, "dy", dy, "dloss", dloss, error))
    return FALSE;
  const int64_t n = mexd_tensor_numel(dy);
  MexdBackend *be = dy->backend;
  if (be->kind == MEXD_BACKEND_CPU) {
    gboolean oy, ot, od;
    const float *Y = mexd_cpu_f32_in(y, &oy), *T = mexd_cpu_f32_in(target, &ot);
    float *D = mexd_cpu_f32_out(dy, accumulate, &od);
    double scale = 2.0 * (double)mexd_op_cpu_scalar(dloss, 1.0f) / (double)n;
    for (int64_t i = 0; i < n; i++)
      D[i] = mexd_op_acc_store(D[i], scale * ((double)Y[i] - T[i]), accumulate);
    mexd_cpu_f32_done(dy, D, od, TRUE);
    mexd_op_free_in(Y, oy);
    mexd_op_free_in(T, ot);
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
      .shader = MEXD_SHADER_MSE_BWD,
      .variant = dy->dtype,
      .bind = {y, target, dloss, dy},
      .n_bind = 4,
      .push = &pc,
      .push_size = sizeof pc,
  };
  return mexd_op_elem_grid(be, n, d.groups, error) && mexd_vk_dispatch(be, &d, error);
}
