/* models.c: the training stages over the models' one definitions (models.h). */
#include "train/models.h"

#include "core/error.h"
#include "nn/philox.h"

#include <math.h>
#include <string.h>

#define TAG_T   0x64696674u /* "dift": stage-2 time indices */
#define TAG_EPS 0x64696665u /* "dife": stage-2 noise */

#define V MexdVar

/* ---- Dyn-MoE ---- */

gboolean mexd_moe_t_init(MexdMoeT *moe, MexdParams *ps, const MexdModelConfig *cfg,
                         gboolean no_routing, GError **error)
{
  memset(moe, 0, sizeof *moe);
  moe->experts = cfg->experts;
  moe->classes = cfg->n_classes;
  moe->no_routing = no_routing;
  memcpy(moe->alpha, cfg->alpha, sizeof moe->alpha);
  memcpy(moe->expert_of_class, cfg->expert_of_class, sizeof moe->expert_of_class);
  MexdAttnShape s = {cfg->width, cfg->heads, cfg->landmarks, cfg->pinv_iterations,
                     cfg->res_conv_taps};
  if (mexd_moe_init(&moe->moe, MEXD_PARAMS_SOURCE(ps), cfg->experts, cfg->width, error) &&
      mexd_transmil_init(&moe->a2, MEXD_PARAMS_SOURCE(ps), "adapter2", cfg->width,
                         cfg->n_classes, &s, error))
    return TRUE;
  mexd_moe_t_clear(moe);
  return FALSE;
}

void mexd_moe_t_clear(MexdMoeT *moe)
{
  mexd_moe_clear(&moe->moe);
  mexd_transmil_clear(&moe->a2);
}

void mexd_moe_out_clear(MexdMoeOut *out)
{
  g_clear_pointer(&out->loss, mexd_var_unref);
  g_clear_pointer(&out->logits2, mexd_var_unref);
  g_clear_pointer(&out->z, mexd_var_unref);
  for (int r = 0; r < MEXD_MAX_EXPERTS; r++)
    g_clear_pointer(&out->sel[r], g_free);
}

/* CE(u [1,E], target) as a Var */
static V *xent_to(MexdTape *t, V *logits, int target, GError **error)
{
  g_autoptr(MexdTensor) lab = mexd_tensor_new_1d(mexd_var_value(logits)->backend, MEXD_DTYPE_I32,
                                                 1, error);
  int32_t v = target;
  if (!lab || !mexd_tensor_write(lab, &v, sizeof v, error))
    return NULL;
  return mexd_ag_cross_entropy(t, logits, lab, error);
}

static V *acc_loss(MexdTape *t, V *sum, V *term, GError **error)
{
  if (!term) {
    mexd_var_unref(sum);
    return NULL;
  }
  if (!sum)
    return term;
  V *r = mexd_ag_add(t, sum, term, error);
  mexd_var_unref(sum);
  mexd_var_unref(term);
  return r;
}

gboolean mexd_moe_t_forward(MexdMoeT *moe, MexdTape *t, MexdTensor *P, int label, MexdMoeOut *out,
                            GError **error)
{
  memset(out, 0, sizeof *out);
  const int E = moe->experts;
  g_autoptr(V) pv = mexd_var_new(P, FALSE);
  g_autoptr(V) probs = mexd_moe_gates(&moe->moe, t, pv, error);
  if (!probs)
    return FALSE;
  MexdTensor *ti[MEXD_MAX_EXPERTS] = {NULL};
  MexdMoeBlock blk[MEXD_MAX_EXPERTS];
  MexdMoeHead h = {0};
  gboolean ok = mexd_moe_route_paper(mexd_var_value(probs), E, moe->alpha, out->n_sel, out->sel,
                                     ti, error);
  for (int r = 0; ok && r < E; r++)
    blk[r] = (MexdMoeBlock){ti[r], out->n_sel[r], FALSE};
  ok = ok && mexd_moe_head(&moe->moe, t, pv, probs, blk, TRUE, !moe->no_routing, &h, error);
  for (int r = 0; r < E; r++)
    g_clear_pointer(&ti[r], mexd_tensor_unref);
  if (ok) {
    g_autofree float *c = mexd_tensor_dup_f32(mexd_var_value(h.c), error);
    if (c)
      memcpy(out->c, c, sizeof(float) * E);
    out->z = mexd_var_ref(h.z);
    ok = c != NULL &&
         mexd_transmil_forward(&moe->a2, t, moe->no_routing ? pv : h.rows, &out->logits2, NULL,
                               NULL, NULL, "adapter2", error);
  }
  if (ok && label >= 0) {
    V *loss = xent_to(t, out->logits2, label, error);
    loss = loss ? acc_loss(t, loss, xent_to(t, h.u[0], 0, error), error) : NULL;
    int own = moe->expert_of_class[label];
    if (loss && own >= 1)
      loss = acc_loss(t, loss, xent_to(t, h.u[own], own, error), error);
    out->loss = loss;
    ok = loss != NULL;
  }
  mexd_moe_head_clear(&h);
  if (!ok)
    mexd_moe_out_clear(out);
  return ok;
}

/* ---- Diff-C ---- */

gboolean mexd_diffc_t_init(MexdDiffcT *dc, MexdParams *ps, int classes, int z_dim, int width,
                           int T, double beta_start, double beta_end, gboolean prior_none,
                           GError **error)
{
  memset(dc, 0, sizeof *dc);
  dc->classes = classes;
  dc->width = width;
  dc->z_dim = z_dim;
  dc->T = T;
  dc->prior_none = prior_none;
  dc->abar = g_new(double, T);
  mexd_diffc_schedule(T, beta_start, beta_end, NULL, dc->abar);
  return mexd_diffc_net_init(&dc->net, MEXD_PARAMS_SOURCE(ps), classes, z_dim, width, T, error);
}

void mexd_diffc_t_clear(MexdDiffcT *dc)
{
  g_clear_pointer(&dc->abar, g_free);
  mexd_diffc_net_clear(&dc->net);
}

void mexd_diffc_t_noised(const MexdDiffcT *dc, int label, const float *rho, const int32_t *t,
                         const float *eps, int S, float *f_t)
{
  const int C = dc->classes;
  for (int s = 0; s < S; s++) {
    double A = dc->abar[t[s]], sa = sqrt(A), sn = sqrt(1.0 - A);
    for (int c = 0; c < C; c++) {
      double r = dc->prior_none ? 0.0 : rho[c];
      f_t[s * C + c] = (float)(sa * (c == label ? 1.0 : 0.0) + (1.0 - sa) * r +
                               sn * eps[s * C + c]);
    }
  }
}

static V *data_var(MexdBackend *be, int ndim, const int64_t *shape, const float *v,
                   GError **error)
{
  MexdTensor *t = mexd_tensor_new_from_f32(be, MEXD_DTYPE_F32, ndim, shape, v, error);
  return t ? mexd_var_take(t, FALSE) : NULL;
}

MexdVar *mexd_diffc_t_eps(MexdDiffcT *dc, MexdTape *t, const float *f_t, int S, const float *z,
                          const float *rho, const int32_t *ts, GError **error)
{
  const int C = dc->classes;
  MexdBackend *be = mexd_var_value(dc->net.wo)->backend;
  g_autofree float *x = g_new(float, (size_t)S * 2 * C);
  for (int s = 0; s < S; s++)
    for (int c = 0; c < C; c++) {
      x[s * 2 * C + c] = f_t[s * C + c];
      x[s * 2 * C + C + c] = rho[c];
    }
  g_autoptr(V) xv = data_var(be, 2, (int64_t[]){S, 2 * C}, x, error);
  g_autoptr(V) zv = xv ? data_var(be, 2, (int64_t[]){1, dc->z_dim}, z, error) : NULL;
  g_autoptr(MexdTensor) ti = zv ? mexd_tensor_new_1d(be, MEXD_DTYPE_I32, S, error) : NULL;
  if (!ti || !mexd_tensor_write(ti, ts, sizeof(int32_t) * S, error))
    return NULL;
  return mexd_diffc_net_eps(&dc->net, t, xv, zv, ti, 0, error);
}

MexdVar *mexd_diffc_t_loss(MexdDiffcT *dc, MexdTape *t, const float *z, const float *rho,
                           int label, const int32_t *ts, const float *eps, int S, GError **error)
{
  const int C = dc->classes;
  g_autofree float *f_t = g_new(float, (size_t)S * C);
  g_autofree float *zero = g_new0(float, C);
  mexd_diffc_t_noised(dc, label, rho, ts, eps, S, f_t);
  g_autoptr(V) e =
      mexd_diffc_t_eps(dc, t, f_t, S, z, dc->prior_none ? zero : rho, ts, error);
  if (!e)
    return NULL;
  g_autoptr(MexdTensor) target = mexd_tensor_new_from_f32(
      mexd_var_value(e)->backend, MEXD_DTYPE_F32, 2, (int64_t[]){S, C}, eps, error);
  return target ? mexd_ag_mse(t, e, target, error) : NULL;
}

void mexd_diffc_t_draw(const MexdDiffcT *dc, uint64_t seed, uint32_t epoch, uint32_t bag,
                       int32_t *ts, float *eps)
{
  const int C = dc->classes, T = dc->T;
  uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
  for (int j = 0; j < 32; j += 4) {
    uint32_t ctr[4] = {(uint32_t)(j / 4), epoch, bag, TAG_T}, w[4];
    mexd_philox4x32_10(ctr, key, w);
    for (int k = 0; k < 4; k++) {
      int32_t v = (int32_t)(((uint64_t)w[k] * (uint64_t)T) >> 32);
      ts[j + k] = v;
      ts[32 + j + k] = T - 1 - v;
    }
  }
  for (int i = 0; i < 64 * C; i += 2) {
    uint32_t ctr[4] = {(uint32_t)(i / 2), epoch, bag, TAG_EPS}, w[4];
    mexd_philox4x32_10(ctr, key, w);
    double u0 = ((w[0] >> 8) + 0.5) / 16777216.0, u1 = ((w[1] >> 8) + 0.5) / 16777216.0;
    double r = sqrt(-2.0 * log(u0));
    eps[i] = (float)(r * cos(2 * G_PI * u1));
    if (i + 1 < 64 * C)
      eps[i + 1] = (float)(r * sin(2 * G_PI * u1));
  }
}
