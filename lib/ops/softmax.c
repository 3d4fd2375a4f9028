/* softmax.c: softmax over the last dimension, y = exp(x − max)/Σexp(x − max) per row (ops.h).
 *
 * Entries of −inf give 0.  A row whose entries are all −inf has no defined softmax (PyTorch
 * gives NaN); here it comes out as all zeros, on every backend, so that fully masked rows stay
 * harmless downstream.
 * cpu: per row: the max, then exp(x − max) (mexd_exp_neg: in double, within 1 ulp, vectorized)
 * written to y and summed in double, then a scale by the reciprocal; f16 tensors are widened to
 * f32 first.
 * vulkan: shaders/softmax.comp, one workgroup per row reducing through shared memory in f32.
 * y may be x exactly (in place).
 *
 * mexd_softmax_rows_backward (grad.h), dx = y ⊙ (dy − Σ_row dy ⊙ y) from the forward output: cpu
 * in double; vulkan: shaders/softmax_bwd.comp, one workgroup per row (the row's dot product
 * through shared memory). */
#include "backend/cpu.h"
#include "backend/vulkan.h"
#include "ops/ops-private.h"

#include <math.h>

typedef struct {
  const float *X;
  float *Y;
  int64_t D;
} SoftmaxJob;

/* Rows [r0, r1): each row by one thread, in the same order as ever. */
static void softmax_range(int64_t r0, int64_t r1, void *ctx)
{
  const SoftmaxJob *j = ctx;
  int64_t D = j->D;
  for (int64_t r = r0; r < r1; r++)
    mexd_cpu_softmax_row(j->Y + r * D, j->X + r * D, D);
}

static void softmax_cpu(int64_t rows, int64_t D, MexdTensor *y, MexdTensor *x)
{
  gboolean ox, oy;
  /* in place in f32, X and Y are the same memory: every element is read before it is written */
  SoftmaxJob j = {.D = D};
  j.X = mexd_cpu_f32_in(x, &ox);
  j.Y = mexd_cpu_f32_out(y, FALSE, &oy);
  mexd_parallel_for(rows, MAX(1, MEXD_PARALLEL_GRAIN_ELEMENTS / 4 / MAX(D, 1)), softmax_range, &j);
  mexd_cpu_f32_done(y, j.Y, oy, TRUE);
  if (ox)
    g_free((float *)j.X);
}

MEXD_VK_PUSH_STRUCT(SoftmaxPush, MEXD_PUSH_SOFTMAX);

static gboolean softmax_vulkan(int64_t rows, int64_t D, MexdTensor *y, MexdTensor *x,
                               GError **error)
{
  MexdBackend *be = y->backend;
  SoftmaxPush pc = {.rows = (uint32_t)rows, .D = (uint32_t)D};
  MexdVkDispatch d = {
      .shader = MEXD_SHADER_SOFTMAX,
      .variant = y->dtype,
      .spec = {mexd_vk_row_workgroup(be, D)},
      .n_spec = 1,
      .bind = {x, y},
      .n_bind = 2,
      .push = &pc,
      .push_size = sizeof pc,
  };
  if (!mexd_vk_grid(be, (uint64_t)rows, d.groups, error))
    return FALSE;
  return mexd_vk_dispatch(be, &d, error);
}

gboolean mexd_softmax_rows(MexdTensor *y, MexdTensor *x, GError **error)
{
  const char *op = "softmax_rows";
  if (!mexd_op_check_float(op, "y", y, error))
    return FALSE;
  MexdBackend *be = y->backend;
  if (!mexd_op_check_dtype(op, "x", x, be, y->dtype, error))
    return FALSE;
  if (!mexd_op_check_shape(op, "x", x, y->ndim, y->shape, error))
    return FALSE;
  /* y may be x itself, but not part of it */
  if (!mexd_tensor_same_data(y, x) && !mexd_op_check_no_overlap(op, "y", y, "x", x, error))
    return FALSE;
  int64_t rows = mexd_tensor_rows_count(y), D = mexd_tensor_row_len(y);

  if (be->kind == MEXD_BACKEND_CPU) {
    softmax_cpu(rows, D, y, x);
    return TRUE;
  }
  if (!mexd_op_check_u32(op, "elements of y", mexd_tensor_numel(y), error))
    return FALSE;
  return softmax_vulkan(rows, D, y, x, error);
}

/* ---- backward (grad.h) ---- */

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
      out[i] = mexd_op_acc_store(out[i], (double)yr[i] * ((double)gr[i] - dot), acc);
  }
  mexd_cpu_f32_done(dx, DX, odx, TRUE);
  mexd_op_free_in(Y, oy);
  mexd_op_free_in(DY, ody);
}

MEXD_VK_PUSH_STRUCT(SoftmaxBwdPush, MEXD_PUSH_SOFTMAX_BWD);

gboolean mexd_softmax_rows_backward(MexdTensor *dx, MexdTensor *y, MexdTensor *dy,
                                    gboolean accumulate, GError **error)
{
  const char *name = "softmax_rows_backward";
  if (!mexd_op_check_float(name, "dx", dx, error) ||
      !mexd_op_check_out_like(name, "dx", dx, "y", y, error) ||
      !mexd_op_check_like(name, "dy", dy, y, error))
    return FALSE;
  if ((!mexd_tensor_same_data(dx, dy) &&
       !mexd_op_check_no_overlap(name, "dx", dx, "dy", dy, error)) ||
      !mexd_op_check_no_overlap(name, "dx", dx, "y", y, error))
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
      .shader = MEXD_SHADER_SOFTMAX_BWD,
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
