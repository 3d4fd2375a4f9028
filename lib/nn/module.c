/* module.c: parameters of the models written once (module.h). */
#include "nn/module.h"

#include "core/error.h"

#include <math.h>

MexdVar *mexd_param(const MexdParamSource *src, const char *name, int ndim, const int64_t *shape,
                    MexdInit init, double a, GError **error)
{
  return src->get(src->ctx, name, ndim, shape, init, a, error);
}

gboolean mexd_param_linear(const MexdParamSource *src, const char *prefix, int64_t out, int64_t in,
                           gboolean bias, MexdVar **w, MexdVar **b, GError **error)
{
  double bound = 1.0 / sqrt((double)in);
  g_autofree char *nw = g_strdup_printf("%s.weight", prefix);
  g_autofree char *nb = g_strdup_printf("%s.bias", prefix);
  *w = mexd_param(src, nw, 2, (int64_t[]){out, in}, MEXD_INIT_UNIFORM, bound, error);
  if (b)
    *b = NULL;
  if (!*w)
    return FALSE;
  if (bias && !(*b = mexd_param(src, nb, 1, (int64_t[]){out}, MEXD_INIT_UNIFORM, bound, error)))
    return FALSE;
  return TRUE;
}

static MexdVar *weights_get(gpointer ctx, const char *name, int ndim, const int64_t *shape,
                            MexdInit init, double a, GError **error)
{
  (void)init;
  (void)a;
  MexdTensor *t = mexd_weights_get(ctx, name, ndim, shape, error);
  return t ? mexd_var_take(t, FALSE) : NULL;
}

MexdParamSource mexd_param_source_weights(MexdWeights *w)
{
  return (MexdParamSource){weights_get, w};
}
