/* ops-common.c: what the ops share (ops-private.h): argument checks, and the helpers of the
 * backward ops' cpu kernels and dispatches. */
#include "ops/ops-private.h"

#include "backend/cpu.h"
#include "backend/vulkan.h"

gboolean mexd_op_check_tensor(const char *op, const char *arg, const MexdTensor *t,
                              const MexdBackend *be, GError **error)
{
  if (!t)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "%s: argument %s is NULL", op, arg);
  if (be && t->backend != be)
    return mexd_fail(error, MEXD_ERROR_BACKEND, "%s: argument %s lives on %s but the op runs on %s",
                     op, arg, t->backend->name, be->name);
  return TRUE;
}

gboolean mexd_op_check_dtype(const char *op, const char *arg, const MexdTensor *t,
                             const MexdBackend *be, MexdDType dtype, GError **error)
{
  if (!mexd_op_check_tensor(op, arg, t, be, error))
    return FALSE;
  if (t->dtype != dtype) {
    g_autofree char *d = mexd_tensor_describe(t);
    return mexd_fail(error, MEXD_ERROR_DTYPE, "%s: argument %s is %s, expected %s", op, arg, d,
                     mexd_dtype_name(dtype));
  }
  return TRUE;
}

gboolean mexd_op_check_float(const char *op, const char *arg, const MexdTensor *t, GError **error)
{
  if (!mexd_op_check_tensor(op, arg, t, NULL, error))
    return FALSE;
  if (!mexd_dtype_is_float(t->dtype)) {
    g_autofree char *d = mexd_tensor_describe(t);
    return mexd_fail(error, MEXD_ERROR_DTYPE, "%s: argument %s is %s, expected f32 or f16", op, arg,
                     d);
  }
  return TRUE;
}

gboolean mexd_op_check_shape(const char *op, const char *arg, const MexdTensor *t, int ndim,
                             const int64_t *shape, GError **error)
{
  gboolean ok = t->ndim == ndim;
  for (int i = 0; ok && i < ndim; i++)
    if (shape[i] >= 0 && t->shape[i] != shape[i])
      ok = FALSE;
  if (ok)
    return TRUE;
  g_autofree char *d = mexd_tensor_describe(t);
  GString *want = g_string_new("[");
  for (int i = 0; i < ndim; i++) {
    if (shape[i] >= 0)
      g_string_append_printf(want, "%s%" G_GINT64_FORMAT, i ? "," : "", shape[i]);
    else
      g_string_append_printf(want, "%s*", i ? "," : "");
  }
  g_string_append_c(want, ']');
  g_set_error(error, MEXD_ERROR, MEXD_ERROR_SHAPE, "%s: argument %s is %s, expected shape %s", op,
              arg, d, want->str);
  g_string_free(want, TRUE);
  return FALSE;
}

gboolean mexd_tensor_same_data(const MexdTensor *a, const MexdTensor *b)
{
  return a->storage == b->storage && a->offset == b->offset && a->dtype == b->dtype &&
         mexd_tensor_nbytes(a) == mexd_tensor_nbytes(b);
}

gboolean mexd_op_check_no_overlap(const char *op, const char *out, const MexdTensor *a,
                                  const char *in, const MexdTensor *b, GError **error)
{
  if (!a || !b || a->storage != b->storage)
    return TRUE;
  size_t a0 = a->offset, a1 = a->offset + mexd_tensor_nbytes(a);
  size_t b0 = b->offset, b1 = b->offset + mexd_tensor_nbytes(b);
  if (a0 < b1 && b0 < a1)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "%s: output %s overlaps input %s; use a separate output tensor", op, out, in);
  return TRUE;
}

gboolean mexd_op_check_u32(const char *op, const char *what, int64_t v, GError **error)
{
  if (v < 0 || v > (int64_t)UINT32_MAX)
    return mexd_fail(error, MEXD_ERROR_NO_MEMORY, "%s: %s = %" G_GINT64_FORMAT " is too large", op,
                     what, v);
  return TRUE;
}

uint32_t mexd_vk_row_workgroup(MexdBackend *be, int64_t D)
{
  uint32_t wg = D > 1024 ? 256 : 64;
  while (wg > mexd_vk_limits(be)->max_group_invocations)
    wg /= 2;
  return wg;
}

gboolean mexd_op_check_like(const char *op, const char *arg, const MexdTensor *t,
                            const MexdTensor *ref, GError **error)
{
  return mexd_op_check_dtype(op, arg, t, ref->backend, ref->dtype, error) &&
         mexd_op_check_shape(op, arg, t, ref->ndim, ref->shape, error);
}

gboolean mexd_op_check_out_like(const char *op, const char *on, const MexdTensor *o,
                                const char *in, const MexdTensor *i, GError **error)
{
  return mexd_op_check_dtype(op, in, i, o->backend, o->dtype, error) &&
         mexd_op_check_shape(op, on, o, i->ndim, i->shape, error);
}

gboolean mexd_op_check_scalar(const char *op, const char *arg, const MexdTensor *t,
                              const MexdTensor *ref, GError **error)
{
  return mexd_op_check_dtype(op, arg, t, ref->backend, ref->dtype, error) &&
         mexd_op_check_shape(op, arg, t, 1, (int64_t[]){1}, error);
}

float mexd_op_cpu_scalar(MexdTensor *t, float dflt)
{
  if (!t)
    return dflt;
  gboolean o;
  const float *v = mexd_cpu_f32_in(t, &o);
  float r = v[0];
  mexd_op_free_in(v, o);
  return r;
}

gboolean mexd_op_elem_grid(MexdBackend *be, int64_t n, uint32_t groups[3], GError **error)
{
  return mexd_vk_grid(be, ((uint64_t)n + MEXD_OP_ELEM_GROUP - 1) / MEXD_OP_ELEM_GROUP, groups,
                      error);
}

MexdTensor *mexd_op_scratch_new(const char *op, MexdBackend *be, int64_t n, GError **error)
{
  if (!mexd_op_check_u32(op, "scratch elements", n, error))
    return NULL;
  return mexd_tensor_new_1d(be, MEXD_DTYPE_F32, n, error);
}
