/* abmil.c: ABMIL, defined once for training and inference (module.h). */
#include "nn/module.h"

#include "core/error.h"

#include <string.h>

gboolean mexd_abmil_init(MexdAbmil *ab, const MexdParamSource *src, int in_dim, int width,
                         int attn_dim, int classes, GError **error)
{
  memset(ab, 0, sizeof *ab);
  ab->in_dim = in_dim;
  ab->width = width;
  ab->attn_dim = attn_dim;
  ab->classes = classes;
  ab->dropout = 0.25f;
  if (mexd_param_linear(src, "abmil.fc", width, in_dim, TRUE, &ab->fc_w, &ab->fc_b, error) &&
      mexd_param_linear(src, "abmil.attn_a", attn_dim, width, TRUE, &ab->a_w, &ab->a_b, error) &&
      mexd_param_linear(src, "abmil.attn_b", attn_dim, width, TRUE, &ab->b_w, &ab->b_b, error) &&
      mexd_param_linear(src, "abmil.attn_c", 1, attn_dim, TRUE, &ab->c_w, &ab->c_b, error) &&
      mexd_param_linear(src, "abmil.classifier", classes, width, TRUE, &ab->cls_w, &ab->cls_b,
                        error))
    return TRUE;
  mexd_abmil_clear(ab);
  return FALSE;
}

void mexd_abmil_clear(MexdAbmil *ab)
{
  MexdVar **all[] = {&ab->fc_w, &ab->fc_b, &ab->a_w, &ab->a_b,   &ab->b_w,
                     &ab->b_b,  &ab->c_w,  &ab->c_b, &ab->cls_w, &ab->cls_b};
  for (size_t i = 0; i < G_N_ELEMENTS(all); i++)
    g_clear_pointer(all[i], mexd_var_unref);
}

gboolean mexd_abmil_forward(MexdAbmil *ab, MexdTape *t, MexdVar *x, MexdVar **logits,
                            MexdVar **attention, GError **error)
{
  MexdTensor *X = mexd_var_value(x);
  if (X->ndim != 2 || X->shape[1] != ab->in_dim || X->shape[0] < 1)
    return mexd_fail(error, MEXD_ERROR_SHAPE, "ABMIL: the input must be [N ≥ 1, %d]",
                     ab->in_dim);
  int64_t N = X->shape[0];
  g_autoptr(MexdVar) h0 = mexd_ag_linear(t, x, ab->fc_w, ab->fc_b, error);
  g_autoptr(MexdVar) h1 = h0 ? mexd_ag_unary(t, h0, MEXD_UNARY_RELU, error) : NULL;
  g_autoptr(MexdVar) h = h1 ? mexd_ag_dropout(t, h1, ab->dropout, error) : NULL;
  g_autoptr(MexdVar) a0 = h ? mexd_ag_linear(t, h, ab->a_w, ab->a_b, error) : NULL;
  g_autoptr(MexdVar) a = a0 ? mexd_ag_unary(t, a0, MEXD_UNARY_TANH, error) : NULL;
  g_autoptr(MexdVar) b0 = a ? mexd_ag_linear(t, h, ab->b_w, ab->b_b, error) : NULL;
  g_autoptr(MexdVar) b = b0 ? mexd_ag_unary(t, b0, MEXD_UNARY_SIGMOID, error) : NULL;
  g_autoptr(MexdVar) ab2 = b ? mexd_ag_mul(t, a, b, error) : NULL;
  g_autoptr(MexdVar) s = ab2 ? mexd_ag_linear(t, ab2, ab->c_w, ab->c_b, error) : NULL;
  g_autoptr(MexdVar) s2 = s ? mexd_ag_reshape(t, s, 2, (int64_t[]){1, N}, error) : NULL;
  g_autoptr(MexdVar) A = s2 ? mexd_ag_softmax(t, s2, error) : NULL;
  g_autoptr(MexdVar) M = A ? mexd_ag_matmul(t, A, h, FALSE, FALSE, 1.0f, error) : NULL;
  g_autoptr(MexdVar) lg = M ? mexd_ag_linear(t, M, ab->cls_w, ab->cls_b, error) : NULL;
  if (!lg)
    return FALSE;
  *logits = g_steal_pointer(&lg);
  if (attention)
    *attention = g_steal_pointer(&A);
  return TRUE;
}
