/* concat.c: y = the concatenation of xs[0..n) along one axis (ops.h).
 *
 * axis < 0 counts from the end (−1 is the last dimension).  Every input has y's dtype and
 * dimension count and y's sizes except along the axis, where the sizes add up to y's.
 * dtypes: f32, f16 and also i32 — the data is moved as raw words, never converted, so any dtype
 * of 32 or 16 bits is copied bit-exactly.
 * Each input is one "copy x into a slice of y" step, with x viewed as [outer, axis·inner] and y
 * as [outer, y_axis·inner]:
 * cpu: one memcpy per outer index; vulkan: one dispatch of shaders/concat.comp per input.
 * y must not overlap any input.
 *
 * Its backward, mexd_slice (grad.h): y = a slice of x along one axis, the same [outer, row] view;
 * cpu: a memcpy per outer index (or an add in double with accumulate); vulkan:
 * shaders/slice.comp, one invocation per element of y. */
#include "backend/cpu.h"
#include "backend/vulkan.h"
#include "ops/ops-private.h"

#include <string.h>

#define CONCAT_GROUP 256 /* local_size_x of concat.comp */

MEXD_VK_PUSH_STRUCT(ConcatPush, MEXD_PUSH_CONCAT);

static gboolean concat_vulkan(MexdTensor *y, MexdTensor *x, int64_t xrow, int64_t yrow,
                              int64_t yoff, GError **error)
{
  MexdBackend *be = y->backend;
  int64_t n = mexd_tensor_numel(x);
  ConcatPush pc = {
      .n = (uint32_t)n,
      .xrow = (uint32_t)xrow,
      .yrow = (uint32_t)yrow,
      .yoff = (uint32_t)yoff,
  };
  MexdVkDispatch d = {
      .shader = MEXD_SHADER_CONCAT,
      /* 32-bit words for f32 and i32, 16-bit ones for f16 */
      .variant = y->dtype == MEXD_DTYPE_F16 ? MEXD_DTYPE_F16 : MEXD_DTYPE_F32,
      .bind = {x, y},
      .n_bind = 2,
      .push = &pc,
      .push_size = sizeof pc,
  };
  if (!mexd_vk_grid(be, ((uint64_t)n + CONCAT_GROUP - 1) / CONCAT_GROUP, d.groups, error))
    return FALSE;
  return mexd_vk_dispatch(be, &d, error);
}

typedef struct {
  const char *X;
  char *Y;
  size_t es;
  int64_t yrow, yoff, xrow;
} ConcatJob;

static void concat_outer_range(int64_t o0, int64_t o1, void *ctx)
{
  const ConcatJob *j = ctx;
  for (int64_t o = o0; o < o1; o++)
    memcpy(j->Y + (size_t)(o * j->yrow + j->yoff) * j->es, j->X + (size_t)(o * j->xrow) * j->es,
           (size_t)j->xrow * j->es);
}

static void concat_flat_range(int64_t e0, int64_t e1, void *ctx)
{
  const ConcatJob *j = ctx;
  memcpy(j->Y + (size_t)(j->yoff + e0) * j->es, j->X + (size_t)e0 * j->es,
         (size_t)(e1 - e0) * j->es);
}

gboolean mexd_concat(MexdTensor *y, MexdTensor *const *xs, int n, int axis, GError **error)
{
  const char *op = "concat";
  if (!mexd_op_check_tensor(op, "y", y, NULL, error))
    return FALSE;
  MexdBackend *be = y->backend;
  if (n < 1 || !xs)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "concat: needs at least one input (n = %d%s)", n, xs ? "" : ", xs NULL");
  if (axis < -y->ndim || axis >= y->ndim)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "concat: axis %d is out of range for %d-D tensors (%d..%d)", axis, y->ndim,
                     -y->ndim, y->ndim - 1);
  int ax = axis < 0 ? axis + y->ndim : axis;

  int64_t want[MEXD_MAX_DIMS];
  memcpy(want, y->shape, sizeof want);
  want[ax] = -1; /* not checked per input */
  int64_t total = 0;
  for (int i = 0; i < n; i++) {
    g_autofree char *arg = g_strdup_printf("xs[%d]", i);
    if (!mexd_op_check_dtype(op, arg, xs[i], be, y->dtype, error) ||
        !mexd_op_check_shape(op, arg, xs[i], y->ndim, want, error) ||
        !mexd_op_check_no_overlap(op, "y", y, arg, xs[i], error))
      return FALSE;
    total += xs[i]->shape[ax];
  }
  if (total != y->shape[ax]) {
    g_autofree char *d = mexd_tensor_describe(y);
    return mexd_fail(error, MEXD_ERROR_SHAPE,
                     "concat: the inputs' sizes along axis %d add up to %" G_GINT64_FORMAT
                     ", but y is %s",
                     axis, total, d);
  }

  int64_t outer = 1, inner = 1;
  for (int k = 0; k < ax; k++)
    outer *= y->shape[k];
  for (int k = ax + 1; k < y->ndim; k++)
    inner *= y->shape[k];
  int64_t yrow = y->shape[ax] * inner;

  if (be->kind == MEXD_BACKEND_CPU) {
    size_t es = mexd_dtype_size(y->dtype);
    char *Y = mexd_tensor_host_data(y);
    int64_t yoff = 0;
    for (int i = 0; i < n; i++) {
      ConcatJob j = {.X = mexd_tensor_host_data(xs[i]), .Y = Y, .es = es, .yrow = yrow,
                     .yoff = yoff, .xrow = xs[i]->shape[ax] * inner};
      /* one input along the outer index, or (a single outer index) its bytes in pieces */
      if (outer > 1)
        mexd_parallel_for(outer, MAX(1, MEXD_PARALLEL_GRAIN_ELEMENTS * 4 / MAX(j.xrow, 1)),
                          concat_outer_range, &j);
      else
        mexd_parallel_for(j.xrow, MEXD_PARALLEL_GRAIN_ELEMENTS * 4, concat_flat_range, &j);
      yoff += j.xrow;
    }
    return TRUE;
  }
  if (!mexd_op_check_u32(op, "elements of y", mexd_tensor_numel(y), error))
    return FALSE;
  int64_t yoff = 0;
  for (int i = 0; i < n; i++) {
    int64_t xrow = xs[i]->shape[ax] * inner;
    if (!concat_vulkan(y, xs[i], xrow, yrow, yoff, error))
      return FALSE;
    yoff += xrow;
  }
  return TRUE;
}

/* ---- backward: slice (grad.h) ---- */

MEXD_VK_PUSH_STRUCT(SlicePush, MEXD_PUSH_SLICE);

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
  if (!mexd_op_check_no_overlap(name, "y", y, "x", x, error))
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
        Y[o * yrow + k] = mexd_op_acc_store(Y[o * yrow + k], X[o * xrow + xoff + k], TRUE);
    mexd_cpu_f32_done(y, Y, oy, TRUE);
    mexd_op_free_in(X, ox);
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
      .shader = MEXD_SHADER_SLICE,
      .variant = y->dtype,
      .bind = {x, y},
      .n_bind = 2,
      .push = &pc,
      .push_size = sizeof pc,
  };
  return mexd_op_elem_grid(be, n, d.groups, error) && mexd_vk_dispatch(be, &d, error);
}
