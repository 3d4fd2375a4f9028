/* params.c: trainable parameters (params.h). */
#include "train/params.h"

#include "core/error.h"
#include "nn/philox.h"

#include <math.h>
#include <string.h>

struct _MexdParams {
  MexdBackend *be;
  uint64_t seed;
  GPtrArray *list;      /* MexdParam*, in the order added */
  GHashTable *by_name;  /* name → MexdParam* */
};

static void param_free(MexdParam *p)
{
  if (!p)
    return;
  g_free(p->name);
  g_free(p->host);
  g_free(p->grad);
  mexd_var_unref(p->var);
  g_free(p);
}

MexdParams *mexd_params_new(MexdBackend *be, uint64_t seed)
{
  MexdParams *ps = g_new0(MexdParams, 1);
  ps->be = mexd_backend_ref(be);
  ps->seed = seed;
  ps->list = g_ptr_array_new_with_free_func((GDestroyNotify)param_free);
  ps->by_name = g_hash_table_new(g_str_hash, g_str_equal);
  return ps;
}

void mexd_params_free(MexdParams *ps)
{
  if (!ps)
    return;
  g_hash_table_unref(ps->by_name);
  g_ptr_array_unref(ps->list);
  mexd_backend_unref(ps->be);
  g_free(ps);
}

static uint64_t fnv1a(const char *s)
{
  uint64_t h = 0xcbf29ce484222325ull;
  for (; *s; s++) {
    h ^= (unsigned char)*s;
    h *= 0x100000001b3ull;
  }
  return h;
}

static void init_values(float *v, int64_t n, MexdInit init, double a, uint64_t seed,
                        const char *name)
{
  uint64_t h = fnv1a(name);
  uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
  for (int64_t i = 0; i < n; i++) {
    uint32_t out[4];
    if (init == MEXD_INIT_CONST) {
      v[i] = (float)a;
    } else if (init == MEXD_INIT_NORMAL) {
      uint32_t ctr[4] = {(uint32_t)(i / 2), (uint32_t)h, (uint32_t)(h >> 32), MEXD_INIT_TAG};
      mexd_philox4x32_10(ctr, key, out);
      double u0 = ((out[0] >> 8) + 0.5) / 16777216.0, u1 = ((out[1] >> 8) + 0.5) / 16777216.0;
      double r = sqrt(-2.0 * log(u0));
      v[i] = (float)(a * r * (i % 2 ? sin(2 * G_PI * u1) : cos(2 * G_PI * u1)));
    } else {
      uint32_t ctr[4] = {(uint32_t)(i / 4), (uint32_t)h, (uint32_t)(h >> 32), MEXD_INIT_TAG};
      mexd_philox4x32_10(ctr, key, out);
      double u = ((out[i % 4] >> 8) + 0.5) / 16777216.0;
      v[i] = init == MEXD_INIT_UNIFORM01 ? (float)u : (float)(-a + 2.0 * a * u);
    }
  }
}

MexdVar *mexd_params_add(MexdParams *ps, const char *name, int ndim, const int64_t *shape,
                         MexdInit init, double a, GError **error)
{
  if (!name || !*name || g_hash_table_contains(ps->by_name, name))
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT,
                          "parameter '%s' is empty or added twice", name ? name : "(null)");
  MexdParam *p = g_new0(MexdParam, 1);
  p->name = g_strdup(name);
  p->ndim = ndim;
  p->n = 1;
  for (int k = 0; k < ndim; k++) {
    p->shape[k] = shape[k];
    p->n *= shape[k];
  }
  p->host = g_new(float, p->n);
  p->grad = g_new0(float, p->n);
  init_values(p->host, p->n, init, a, ps->seed, name);
  MexdTensor *t = mexd_tensor_new_from_f32(ps->be, MEXD_DTYPE_F32, ndim, shape, p->host, error);
  if (!t) {
    param_free(p);
    return NULL;
  }
  p->var = mexd_var_take(t, TRUE);
  g_ptr_array_add(ps->list, p);
  g_hash_table_insert(ps->by_name, p->name, p);
  return p->var;
}

MexdVar *mexd_params_source_get(gpointer ctx, const char *name, int ndim, const int64_t *shape,
                                MexdInit init, double a, GError **error)
{
  MexdVar *v = mexd_params_add(ctx, name, ndim, shape, init, a, error);
  return v ? mexd_var_ref(v) : NULL;
}

gboolean mexd_params_add_linear(MexdParams *ps, const char *prefix, int64_t out, int64_t in,
                                gboolean bias, MexdVar **w, MexdVar **b, GError **error)
{
  /* the definitions' helper (nn/module.h), whose references the set already holds */
  g_autoptr(MexdVar) vw = NULL, vb = NULL;
  if (!mexd_param_linear(MEXD_PARAMS_SOURCE(ps), prefix, out, in, bias, &vw, &vb, error))
    return FALSE;
  if (w)
    *w = vw;
  if (b)
    *b = vb;
  return TRUE;
}

MexdParam *mexd_params_find(MexdParams *ps, const char *name)
{
  return g_hash_table_lookup(ps->by_name, name);
}

MexdVar *mexd_params_get(MexdParams *ps, const char *name)
{
  MexdParam *p = mexd_params_find(ps, name);
  return p ? p->var : NULL;
}

guint mexd_params_count(const MexdParams *ps)
{
  return ps->list->len;
}

MexdParam *mexd_params_index(MexdParams *ps, guint i)
{
  return i < ps->list->len ? g_ptr_array_index(ps->list, i) : NULL;
}

int64_t mexd_params_numel(const MexdParams *ps, gboolean trainable_only)
{
  int64_t n = 0;
  for (guint i = 0; i < ps->list->len; i++) {
    MexdParam *p = g_ptr_array_index(ps->list, i);
    if (!trainable_only || !p->frozen)
      n += p->n;
  }
  return n;
}

void mexd_params_freeze(MexdParams *ps, const char *prefix, gboolean frozen)
{
  for (guint i = 0; i < ps->list->len; i++) {
    MexdParam *p = g_ptr_array_index(ps->list, i);
    if (!prefix || g_str_has_prefix(p->name, prefix)) {
      p->frozen = frozen;
      mexd_var_set_requires_grad(p->var, !frozen);
    }
  }
}

gboolean mexd_params_upload(MexdParams *ps, GError **error)
{
  for (guint i = 0; i < ps->list->len; i++) {
    MexdParam *p = g_ptr_array_index(ps->list, i);
    if (!mexd_tensor_write_f32(mexd_var_value(p->var), p->host, p->n, error))
      return FALSE;
  }
  return TRUE;
}

void mexd_params_zero_grad(MexdParams *ps)
{
  for (guint i = 0; i < ps->list->len; i++)
    mexd_var_zero_grad(((MexdParam *)g_ptr_array_index(ps->list, i))->var);
}

gboolean mexd_params_read_grads(MexdParams *ps, GError **error)
{
  for (guint i = 0; i < ps->list->len; i++) {
    MexdParam *p = g_ptr_array_index(ps->list, i);
    if (p->frozen)
      continue;
    MexdTensor *g = mexd_var_grad(p->var);
    if (!g)
      memset(p->grad, 0, sizeof(float) * p->n);
    else if (!mexd_tensor_read_f32(g, p->grad, p->n, error))
      return FALSE;
  }
  return TRUE;
}

gboolean mexd_params_register(MexdParams *ps, MexdOptim *opt, GError **error)
{
  for (guint i = 0; i < ps->list->len; i++) {
    MexdParam *p = g_ptr_array_index(ps->list, i);
    if (!p->frozen && !mexd_optim_add_param(opt, p->name, p->host, p->grad, p->n, error))
      return FALSE;
  }
  return TRUE;
}

double mexd_params_clip(MexdParams *ps, double max_norm)
{
  g_autofree float **g = g_new(float *, ps->list->len);
  g_autofree int64_t *n = g_new(int64_t, ps->list->len);
  int k = 0;
  for (guint i = 0; i < ps->list->len; i++) {
    MexdParam *p = g_ptr_array_index(ps->list, i);
    if (p->frozen)
      continue;
    g[k] = p->grad;
    n[k] = p->n;
    k++;
  }
  return mexd_clip_grad_norm(g, n, k, max_norm);
}

gboolean mexd_params_save(MexdParams *ps, MexdSafetensorsWriter *w, const char *prefix,
                          GError **error)
{
  for (guint i = 0; i < ps->list->len; i++) {
    MexdParam *p = g_ptr_array_index(ps->list, i);
    if (prefix && *prefix && !g_str_has_prefix(p->name, prefix))
      continue;
    if (!mexd_safetensors_writer_add(w, p->name, MEXD_ST_F32, p->ndim, p->shape, p->host,
                                     sizeof(float) * p->n, error))
      return FALSE;
  }
  return TRUE;
}

gboolean mexd_params_load(MexdParams *ps, MexdSafetensors *st, const char *prefix,
                          GError **error)
{
  g_autoptr(MexdBackend) cpu = mexd_backend_new("cpu", error);
  if (!cpu)
    return FALSE;
  for (guint i = 0; i < ps->list->len; i++) {
    MexdParam *p = g_ptr_array_index(ps->list, i);
    if (prefix && *prefix && !g_str_has_prefix(p->name, prefix))
      continue;
    const MexdStTensor *t = mexd_safetensors_find(st, p->name);
    if (!t)
      return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: tensor %s is missing",
                       mexd_safetensors_name(st), p->name);
    int64_t n = 1;
    for (int k = 0; k < t->ndim; k++)
      n *= t->shape[k];
    if (n != p->n)
      return mexd_fail(error, MEXD_ERROR_SHAPE,
                       "%s: tensor %s has %" G_GINT64_FORMAT " elements, expected %" G_GINT64_FORMAT,
                       mexd_safetensors_name(st), p->name, n, p->n);
    if (!mexd_safetensors_check_finite(st, t, error))
      return FALSE;
    g_autoptr(MexdTensor) h = mexd_safetensors_load(st, p->name, cpu, MEXD_DTYPE_F32, error);
    if (!h || !mexd_tensor_read_f32(h, p->host, p->n, error) ||
        !mexd_tensor_write_f32(mexd_var_value(p->var), p->host, p->n, error))
      return FALSE;
  }
  return TRUE;
}

gboolean mexd_params_check_finite(MexdParams *ps, GError **error)
{
  for (guint i = 0; i < ps->list->len; i++) {
    MexdParam *p = g_ptr_array_index(ps->list, i);
    for (int64_t k = 0; k < p->n; k++)
      if (!isfinite(p->host[k]))
        return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                         "parameter %s[%" G_GINT64_FORMAT "] is %g (training diverged)", p->name,
                         k, (double)p->host[k]);
  }
  return TRUE;
}
