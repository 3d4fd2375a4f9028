/* tensor.c: MexdTensor bookkeeping, views, host copies and half-precision conversion. */
#include "core/tensor.h"

#include "backend/backend-private.h"
#include "core/error.h"

#include <math.h>
#include <string.h>

size_t mexd_dtype_size(MexdDType dtype)
{
  switch (dtype) {
  case MEXD_DTYPE_F32:
  case MEXD_DTYPE_I32: return 4;
  case MEXD_DTYPE_F16: return 2;
  }
  return 0;
}

const char *mexd_dtype_name(MexdDType dtype)
{
  switch (dtype) {
  case MEXD_DTYPE_F32: return "f32";
  case MEXD_DTYPE_F16: return "f16";
  case MEXD_DTYPE_I32: return "i32";
  }
  return "invalid";
}

gboolean mexd_dtype_is_float(MexdDType dtype)
{
  return dtype == MEXD_DTYPE_F32 || dtype == MEXD_DTYPE_F16;
}

/* Checks a shape and returns its element count, or -1 with the error set. */
static int64_t check_shape(int ndim, const int64_t *shape, GError **error)
{
  if (ndim < 1 || ndim > MEXD_MAX_DIMS) {
    g_set_error(error, MEXD_ERROR, MEXD_ERROR_SHAPE, "a tensor has 1 to %d dimensions, not %d",
                MEXD_MAX_DIMS, ndim);
    return -1;
  }
  if (!shape) {
    g_set_error(error, MEXD_ERROR, MEXD_ERROR_INVALID_ARGUMENT, "tensor shape is NULL");
    return -1;
  }
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] <= 0) {
      g_set_error(error, MEXD_ERROR, MEXD_ERROR_SHAPE,
                  "tensor dimension %d is %" G_GINT64_FORMAT "; dimensions must be positive", i,
                  shape[i]);
      return -1;
    }
    if (n > INT64_MAX / 8 / shape[i]) {
      g_set_error(error, MEXD_ERROR, MEXD_ERROR_NO_MEMORY, "tensor shape overflows 64 bits");
      return -1;
    }
    n *= shape[i];
  }
  return n;
}

static MexdTensor *tensor_wrap(MexdBackend *be, MexdStorage *s, size_t offset, MexdDType dtype,
                               int ndim, const int64_t *shape)
{
  MexdTensor *t = g_new0(MexdTensor, 1);
  t->backend = mexd_backend_ref(be);
  t->storage = mexd_storage_ref(s);
  t->offset = offset;
  t->dtype = dtype;
  t->ndim = ndim;
  for (int i = 0; i < MEXD_MAX_DIMS; i++)
    t->shape[i] = i < ndim ? shape[i] : 1;
  t->ref_count = 1;
  return t;
}

static MexdTensor *tensor_new(MexdBackend *be, MexdDType dtype, int ndim, const int64_t *shape,
                              gboolean host, GError **error)
{
  if (!be)
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT, "mexd_tensor_new: backend is NULL");
  if (mexd_dtype_size(dtype) == 0)
    return mexd_fail_null(error, MEXD_ERROR_DTYPE, "mexd_tensor_new: unknown dtype %d", dtype);
  if (dtype == MEXD_DTYPE_F16 && !be->has_f16)
    return mexd_fail_null(error, MEXD_ERROR_UNSUPPORTED,
                          "device %s has no 16-bit storage buffers; use f32", be->name);
  int64_t n = check_shape(ndim, shape, error);
  if (n < 0)
    return NULL;
  size_t bytes = (size_t)n * mexd_dtype_size(dtype);
  if (bytes > be->max_tensor_bytes)
    return mexd_fail_null(error, MEXD_ERROR_NO_MEMORY,
                          "a tensor of %zu bytes exceeds the largest one %s can hold (%zu bytes)",
                          bytes, be->name, be->max_tensor_bytes);
  MexdStorage *s = host && be->vt->storage_new_host ? be->vt->storage_new_host(be, bytes, error)
                                                     : be->vt->storage_new(be, bytes, error);
  if (!s)
    return NULL;
  MexdTensor *t = tensor_wrap(be, s, 0, dtype, ndim, shape);
  mexd_storage_unref(s);
  return t;
}

MexdTensor *mexd_tensor_new(MexdBackend *be, MexdDType dtype, int ndim, const int64_t *shape,
                            GError **error)
{
  return tensor_new(be, dtype, ndim, shape, FALSE, error);
}

MexdTensor *mexd_tensor_new_host(MexdBackend *be, MexdDType dtype, int ndim, const int64_t *shape,
                                 GError **error)
{
  return tensor_new(be, dtype, ndim, shape, TRUE, error);
}

MexdTensor *mexd_tensor_new_1d(MexdBackend *be, MexdDType dtype, int64_t n0, GError **error)
{
  int64_t shape[1] = {n0};
  return mexd_tensor_new(be, dtype, 1, shape, error);
}

MexdTensor *mexd_tensor_new_2d(MexdBackend *be, MexdDType dtype, int64_t n0, int64_t n1,
                               GError **error)
{
  int64_t shape[2] = {n0, n1};
  return mexd_tensor_new(be, dtype, 2, shape, error);
}

MexdTensor *mexd_tensor_new_zeros(MexdBackend *be, MexdDType dtype, int ndim, const int64_t *shape,
                                  GError **error)
{
  MexdTensor *t = mexd_tensor_new(be, dtype, ndim, shape, error);
  if (!t)
    return NULL;
  if (!mexd_tensor_fill_zero(t, error)) {
    mexd_tensor_unref(t);
    return NULL;
  }
  return t;
}

gboolean mexd_tensor_fill_zero(MexdTensor *t, GError **error)
{
  if (!t)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "mexd_tensor_fill_zero: tensor is NULL");
  MexdBackend *be = t->backend;
  return be->vt->fill_zero(be, t->storage, t->offset, mexd_tensor_nbytes(t), error);
}

MexdTensor *mexd_tensor_new_from_f32(MexdBackend *be, MexdDType dtype, int ndim,
                                     const int64_t *shape, const float *data, GError **error)
{
  if (!data)
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT,
                          "mexd_tensor_new_from_f32: data is NULL");
  if (!mexd_dtype_is_float(dtype))
    return mexd_fail_null(error, MEXD_ERROR_DTYPE,
                          "mexd_tensor_new_from_f32: dtype must be f32 or f16, not %s",
                          mexd_dtype_name(dtype));
  MexdTensor *t = mexd_tensor_new(be, dtype, ndim, shape, error);
  if (!t)
    return NULL;
  if (!mexd_tensor_write_f32(t, data, mexd_tensor_numel(t), error)) {
    mexd_tensor_unref(t);
    return NULL;
  }
  return t;
}

MexdTensor *mexd_tensor_ref(MexdTensor *t)
{
  g_return_val_if_fail(t != NULL, NULL);
  g_atomic_int_inc(&t->ref_count);
  return t;
}

void mexd_tensor_unref(MexdTensor *t)
{
  if (!t || !g_atomic_int_dec_and_test(&t->ref_count))
    return;
  MexdBackend *be = t->backend;
  mexd_storage_unref(t->storage);
  mexd_backend_unref(be);
  g_free(t);
}

MexdTensor *mexd_tensor_rows(MexdTensor *t, int64_t row0, int64_t n, GError **error)
{
  if (!t)
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT, "mexd_tensor_rows: tensor is NULL");
  if (row0 < 0 || n <= 0 || row0 > t->shape[0] - n)
    return mexd_fail_null(error, MEXD_ERROR_INDEX,
                          "rows [%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT
                          ") are outside a tensor of %" G_GINT64_FORMAT " rows",
                          row0, row0 + n, t->shape[0]);
  int64_t shape[MEXD_MAX_DIMS];
  memcpy(shape, t->shape, sizeof shape);
  shape[0] = n;
  size_t row_bytes = (size_t)(mexd_tensor_numel(t) / t->shape[0]) * mexd_dtype_size(t->dtype);
  return tensor_wrap(t->backend, t->storage, t->offset + (size_t)row0 * row_bytes, t->dtype,
                     t->ndim, shape);
}

MexdTensor *mexd_tensor_reshape(MexdTensor *t, int ndim, const int64_t *shape, GError **error)
{
  if (!t)
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT,
                          "mexd_tensor_reshape: tensor is NULL");
  int64_t n = check_shape(ndim, shape, error);
  if (n < 0)
    return NULL;
  if (n != mexd_tensor_numel(t)) {
    g_autofree char *d = mexd_tensor_describe(t);
    return mexd_fail_null(error, MEXD_ERROR_SHAPE,
                          "cannot reshape %s to %" G_GINT64_FORMAT " elements", d, n);
  }
  return tensor_wrap(t->backend, t->storage, t->offset, t->dtype, ndim, shape);
}

int64_t mexd_tensor_numel(const MexdTensor *t)
{
  int64_t n = 1;
  for (int i = 0; i < t->ndim; i++)
    n *= t->shape[i];
  return n;
}

size_t mexd_tensor_nbytes(const MexdTensor *t)
{
  return (size_t)mexd_tensor_numel(t) * mexd_dtype_size(t->dtype);
}

int64_t mexd_tensor_rows_count(const MexdTensor *t)
{
  return mexd_tensor_numel(t) / t->shape[t->ndim - 1];
}

int64_t mexd_tensor_row_len(const MexdTensor *t)
{
  return t->shape[t->ndim - 1];
}

gboolean mexd_tensor_same_shape(const MexdTensor *a, const MexdTensor *b)
{
  if (a->ndim != b->ndim)
    return FALSE;
  for (int i = 0; i < a->ndim; i++)
    if (a->shape[i] != b->shape[i])
      return FALSE;
  return TRUE;
}

char *mexd_tensor_describe(const MexdTensor *t)
{
  if (!t)
    return g_strdup("(null)");
  GString *s = g_string_new(mexd_dtype_name(t->dtype));
  g_string_append_c(s, '[');
  for (int i = 0; i < t->ndim; i++)
    g_string_append_printf(s, "%s%" G_GINT64_FORMAT, i ? "," : "", t->shape[i]);
  g_string_append_c(s, ']');
  return g_string_free(s, FALSE);
}

gboolean mexd_tensor_write(MexdTensor *t, const void *src, size_t nbytes, GError **error)
{
  if (!t || !src)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "mexd_tensor_write: %s is NULL",
                     t ? "source" : "tensor");
  if (nbytes != mexd_tensor_nbytes(t))
    return mexd_fail(error, MEXD_ERROR_SHAPE,
                     "mexd_tensor_write: %zu bytes given for a tensor of %zu bytes", nbytes,
                     mexd_tensor_nbytes(t));
  return t->backend->vt->write(t->backend, t->storage, t->offset, src, nbytes, error);
}

gboolean mexd_tensor_read(const MexdTensor *t, void *dst, size_t nbytes, GError **error)
{
  if (!t || !dst)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "mexd_tensor_read: %s is NULL",
                     t ? "destination" : "tensor");
  if (nbytes != mexd_tensor_nbytes(t))
    return mexd_fail(error, MEXD_ERROR_SHAPE,
                     "mexd_tensor_read: %zu bytes asked of a tensor of %zu bytes", nbytes,
                     mexd_tensor_nbytes(t));
  return t->backend->vt->read(t->backend, t->storage, t->offset, dst, nbytes, error);
}

gboolean mexd_tensor_write_f32(MexdTensor *t, const float *src, int64_t n, GError **error)
{
  if (!t || !src)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "mexd_tensor_write_f32: %s is NULL",
                     t ? "source" : "tensor");
  if (!mexd_dtype_is_float(t->dtype))
    return mexd_fail(error, MEXD_ERROR_DTYPE, "mexd_tensor_write_f32: the tensor is %s",
                     mexd_dtype_name(t->dtype));
  if (n != mexd_tensor_numel(t))
    return mexd_fail(error, MEXD_ERROR_SHAPE,
                     "mexd_tensor_write_f32: %" G_GINT64_FORMAT
                     " values given for a tensor of %" G_GINT64_FORMAT,
                     n, mexd_tensor_numel(t));
  if (t->dtype == MEXD_DTYPE_F32)
    return mexd_tensor_write(t, src, (size_t)n * 4, error);
  g_autofree uint16_t *h = g_try_new(uint16_t, n);
  if (!h)
    return mexd_fail(error, MEXD_ERROR_NO_MEMORY, "out of host memory converting to f16");
  mexd_f32_to_f16_n(src, h, (size_t)n);
  return mexd_tensor_write(t, h, (size_t)n * 2, error);
}

gboolean mexd_tensor_read_f32(const MexdTensor *t, float *dst, int64_t n, GError **error)
{
  if (!t || !dst)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "mexd_tensor_read_f32: %s is NULL",
                     t ? "destination" : "tensor");
  if (!mexd_dtype_is_float(t->dtype))
    return mexd_fail(error, MEXD_ERROR_DTYPE, "mexd_tensor_read_f32: the tensor is %s",
                     mexd_dtype_name(t->dtype));
  if (n != mexd_tensor_numel(t))
    return mexd_fail(error, MEXD_ERROR_SHAPE,
                     "mexd_tensor_read_f32: %" G_GINT64_FORMAT
                     " values asked of a tensor of %" G_GINT64_FORMAT,
                     n, mexd_tensor_numel(t));
  if (t->dtype == MEXD_DTYPE_F32)
    return mexd_tensor_read(t, dst, (size_t)n * 4, error);
  g_autofree uint16_t *h = g_try_new(uint16_t, n);
  if (!h)
    return mexd_fail(error, MEXD_ERROR_NO_MEMORY, "out of host memory converting from f16");
  if (!mexd_tensor_read(t, h, (size_t)n * 2, error))
    return FALSE;
  mexd_f16_to_f32_n(h, dst, (size_t)n);
  return TRUE;
}

float *mexd_tensor_dup_f32(const MexdTensor *t, GError **error)
{
  if (!t)
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT,
                          "mexd_tensor_dup_f32: tensor is NULL");
  float *out = g_try_new(float, mexd_tensor_numel(t));
  if (!out)
    return mexd_fail_null(error, MEXD_ERROR_NO_MEMORY, "out of host memory");
  if (!mexd_tensor_read_f32(t, out, mexd_tensor_numel(t), error)) {
    g_free(out);
    return NULL;
  }
  return out;
}

void *mexd_tensor_host_data(const MexdTensor *t)
{
  if (!t || t->backend->kind != MEXD_BACKEND_CPU)
    return NULL;
  return (char *)t->storage->host + t->offset;
}

/* ---- half precision ---- */

uint16_t mexd_f32_to_f16(float f)
{
  uint32_t x;
  memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t absx = x & 0x7fffffffu;
  if (absx >= 0x7f800000u) /* inf or NaN */
    return (uint16_t)(sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u | ((absx >> 13) & 0x3ffu) : 0));
  if (absx >= 0x477ff000u) /* rounds to >= 65520: overflow to inf */
    return (uint16_t)(sign | 0x7c00u);
  if (absx < 0x38800000u) { /* subnormal half or zero */
    if (absx < 0x33000000u) /* below half of the smallest subnormal: ±0 */
      return (uint16_t)sign;
    uint32_t mant = (absx & 0x7fffffu) | 0x800000u;
    int shift = 126 - (int)(absx >> 23); /* 14..24 */
    uint32_t q = mant >> shift;          /* in units of 2^-24, the subnormal step */
    uint32_t rem = mant & ((1u << shift) - 1u);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u)))
      q++;
    return (uint16_t)(sign | q);
  }
  uint32_t e = (absx >> 23) - 112; /* rebias 127 -> 15 */
  uint32_t mant = absx & 0x7fffffu;
  uint32_t h = (e << 10) | (mant >> 13);
  uint32_t rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
    h++;
  return (uint16_t)(sign | h);
}

float mexd_f16_to_f32(uint16_t h)
{
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t e = (h >> 10) & 0x1fu;
  uint32_t m = h & 0x3ffu;
  uint32_t x;
  if (e == 0) {
    if (m == 0) {
      x = sign;
    } else { /* subnormal: normalise */
      int shift = 0;
      while (!(m & 0x400u)) {
        m <<= 1;
        shift++;
      }
      m &= 0x3ffu;
      x = sign | ((uint32_t)(113 - shift) << 23) | (m << 13);
    }
  } else if (e == 31) {
    x = sign | 0x7f800000u | (m << 13);
  } else {
    x = sign | ((e + 112) << 23) | (m << 13);
  }
  float f;
  memcpy(&f, &x, 4);
  return f;
}

void mexd_f32_to_f16_n(const float *src, uint16_t *dst, size_t n)
{
  for (size_t i = 0; i < n; i++)
    dst[i] = mexd_f32_to_f16(src[i]);
}

void mexd_f16_to_f32_n(const uint16_t *src, float *dst, size_t n)
{
  for (size_t i = 0; i < n; i++)
    dst[i] = mexd_f16_to_f32(src[i]);
}
