/* layers.c: weight loading, tracing, linear and the square side of TransMIL's tokens (nn.h).
 * TransMIL and its Nyström attention: transmil.c. */
#include "nn/nn.h"

#include "core/error.h"

#include <math.h>
#include <string.h>

/* ---- weights ---- */

void mexd_weights_init(MexdWeights *w, MexdSafetensors *st, MexdBackend *be)
{
  w->st = st;
  w->be = be;
  w->taken = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
}

void mexd_weights_clear(MexdWeights *w)
{
  g_clear_pointer(&w->taken, g_hash_table_unref);
}

static char *shape_str(int ndim, const int64_t *shape)
{
  GString *s = g_string_new("[");
  for (int i = 0; i < ndim; i++)
    g_string_append_printf(s, "%s%" G_GINT64_FORMAT, i ? "," : "", shape[i]);
  g_string_append_c(s, ']');
  return g_string_free(s, FALSE);
}

static const MexdStTensor *weights_find(MexdWeights *w, const char *name, int ndim,
                                        const int64_t *shape, GError **error)
{
  const char *file = mexd_safetensors_name(w->st);
  const MexdStTensor *t = mexd_safetensors_find(w->st, name);
  g_autofree char *want = shape_str(ndim, shape);
  if (!t)
    return mexd_fail_null(error, MEXD_ERROR_FORMAT, "%s: tensor %s %s is missing", file, name,
                          want);
  if (t->dtype != MEXD_ST_F32 && t->dtype != MEXD_ST_F16 && t->dtype != MEXD_ST_BF16)
    return mexd_fail_null(error, MEXD_ERROR_FORMAT, "%s: tensor %s is %s, expected a float dtype",
                          file, name, mexd_st_dtype_name(t->dtype));
  gboolean same = t->ndim == ndim;
  for (int i = 0; same && i < ndim; i++)
    same = t->shape[i] == shape[i];
  if (!same) {
    g_autofree char *got = shape_str(t->ndim, t->shape);
    return mexd_fail_null(error, MEXD_ERROR_FORMAT, "%s: tensor %s has shape %s, expected %s", file,
                          name, got, want);
  }
  if (!mexd_safetensors_check_finite(w->st, t, error))
    return NULL;
  g_hash_table_add(w->taken, g_strdup(name));
  return t;
}

MexdTensor *mexd_weights_get(MexdWeights *w, const char *name, int ndim, const int64_t *shape,
                             GError **error)
{
  if (!weights_find(w, name, ndim, shape, error))
    return NULL;
  g_autoptr(MexdTensor) t = mexd_safetensors_load(w->st, name, w->be, MEXD_DTYPE_F32, error);
  if (!t)
    return NULL;
  /* MexdTensor has at most 4 dims and no scalar: keep the checked shape (numel is the same) */
  if (t->ndim != ndim)
    return mexd_tensor_reshape(t, ndim, shape, error);
  return g_steal_pointer(&t);
}

float *mexd_weights_get_host(MexdWeights *w, const char *name, int ndim, const int64_t *shape,
                             GError **error)
{
  if (!weights_find(w, name, ndim, shape, error))
    return NULL;
  g_autoptr(MexdBackend) cpu = mexd_backend_new("cpu", error);
  if (!cpu)
    return NULL;
  g_autoptr(MexdTensor) t = mexd_safetensors_load(w->st, name, cpu, MEXD_DTYPE_F32, error);
  if (!t)
    return NULL;
  return mexd_tensor_dup_f32(t, error);
}

gboolean mexd_weights_check_all_taken(MexdWeights *w, GError **error)
{
  guint n = mexd_safetensors_n_tensors(w->st);
  for (guint i = 0; i < n; i++) {
    const MexdStTensor *t = mexd_safetensors_index(w->st, i);
    if (!g_hash_table_contains(w->taken, t->name))
      return mexd_fail(error, MEXD_ERROR_FORMAT,
                       "%s: tensor %s is not part of the model its configuration describes",
                       mexd_safetensors_name(w->st), t->name);
  }
  return TRUE;
}

/* ---- trace ---- */

MexdTrace *mexd_trace_new(void)
{
  MexdTrace *t = g_new0(MexdTrace, 1);
  t->tensors =
      g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify)mexd_tensor_unref);
  return t;
}

void mexd_trace_free(MexdTrace *t)
{
  if (!t)
    return;
  g_hash_table_unref(t->tensors);
  g_free(t);
}

gboolean mexd_trace_put(MexdTrace *trace, const char *prefix, const char *name, MexdTensor *x,
                        GError **error)
{
  if (!trace)
    return TRUE;
  g_autoptr(MexdTensor) c = mexd_tensor_new(x->backend, x->dtype, x->ndim, x->shape, error);
  if (!c || !mexd_copy(c, x, error))
    return FALSE;
  char *key = prefix ? g_strdup_printf("%s.%s", prefix, name) : g_strdup(name);
  g_hash_table_replace(trace->tensors, key, g_steal_pointer(&c));
  return TRUE;
}

MexdTensor *mexd_trace_get(MexdTrace *trace, const char *name)
{
  return trace ? g_hash_table_lookup(trace->tensors, name) : NULL;
}

/* ---- linear ---- */

gboolean mexd_linear(MexdTensor *y, MexdTensor *x, MexdTensor *w, MexdTensor *b, GError **error)
{
  MexdGemmParams p = MEXD_GEMM_PARAMS_DEFAULT;
  p.trans_b = TRUE;
  return mexd_gemm(y, x, w, b, &p, error);
}

MexdTensor *mexd_linear_new(MexdTensor *x, MexdTensor *w, MexdTensor *b, GError **error)
{
  g_autoptr(MexdTensor) y =
      mexd_tensor_new_2d(x->backend, x->dtype, mexd_tensor_rows_count(x), w->shape[0], error);
  if (!y || !mexd_linear(y, x, w, b, error))
    return NULL;
  return g_steal_pointer(&y);
}

/* ---- TransMIL ---- */

int64_t mexd_square_side(int64_t n)
{
  int64_t s = (int64_t)ceil(sqrt((double)n));
  while (s > 0 && (s - 1) * (s - 1) >= n)
    s--;
  while (s * s < n)
    s++;
  return s;
}

