/* models.c: the trainable models over the tape (models.h; docs/TRAINING.md).
 *
 * The forward passes follow lib/nn/layers.c and lib/nn/model.c op for op where they can, so that
 * the trained weights behave the same in the inference code; the differences are written where
 * they are (the centroid as gᵀP/Σg instead of mean(g⊙P)/mean(g): the same value up to rounding;
 * no in-place ops, since backward reads the forward inputs). */
#include "train/models.h"

#include "core/error.h"
#include "nn/philox.h"

#include <math.h>
#include <string.h>

#define TAG_T   0x64696674u /* "dift": stage-2 time indices */
#define TAG_EPS 0x64696665u /* "dife": stage-2 noise */

#define V MexdVar

/* ---- TransMIL ---- */

static V *add_p(MexdParams *ps, const char *prefix, const char *suffix, int ndim,
                const int64_t *shape, MexdInit init, double a, GError **error)
{
  g_autofree char *nm = g_strdup_printf("%s.%s", prefix, suffix);
  return mexd_params_add(ps, nm, ndim, shape, init, a, error);
}

static gboolean add_lin(MexdParams *ps, const char *prefix, const char *suffix, int64_t out,
                        int64_t in, gboolean bias, V **w, V **b, GError **error)
{
  g_autofree char *nm = g_strdup_printf("%s.%s", prefix, suffix);
  return mexd_params_add_linear(ps, nm, out, in, bias, w, b, error);
}

gboolean mexd_transmil_t_init(MexdTransMilT *tm, MexdParams *ps, const char *prefix, int in_dim,
                              int classes, const MexdAttnShape *s, GError **error)
{
  memset(tm, 0, sizeof *tm);
  tm->in_dim = in_dim;
  tm->classes = classes;
  tm->s = *s;
  tm->dropout = 0.1f;
  int64_t W = s->width;
  if (W % s->heads || s->taps % 2 == 0)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "TransMIL: width %d must be a multiple of heads %d, taps odd (%d)", s->width,
                     s->heads, s->taps);
  if (!add_lin(ps, prefix, "fc1", W, in_dim, TRUE, &tm->fc1_w, &tm->fc1_b, error) ||
      !(tm->cls = add_p(ps, prefix, "cls_token", 3, (int64_t[]){1, 1, W}, MEXD_INIT_NORMAL, 1.0,
                        error)))
    return FALSE;
  static const char *norms[3] = {"layer1.norm", "layer2.norm", "norm"};
  for (int i = 0; i < 3; i++) {
    g_autofree char *nw = g_strdup_printf("%s.weight", norms[i]);
    g_autofree char *nb = g_strdup_printf("%s.bias", norms[i]);
    if (!(tm->ln_w[i] = add_p(ps, prefix, nw, 1, &W, MEXD_INIT_CONST, 1.0, error)) ||
        !(tm->ln_b[i] = add_p(ps, prefix, nb, 1, &W, MEXD_INIT_CONST, 0.0, error)))
      return FALSE;
    if (i == 2)
      break;
    g_autofree char *qkv = g_strdup_printf("layer%d.attn.qkv", i + 1);
    g_autofree char *out = g_strdup_printf("layer%d.attn.out", i + 1);
    g_autofree char *res = g_strdup_printf("layer%d.attn.res_conv.weight", i + 1);
    if (!add_lin(ps, prefix, qkv, 3 * W, W, FALSE, &tm->qkv_w[i], NULL, error) ||
        !add_lin(ps, prefix, out, W, W, TRUE, &tm->out_w[i], &tm->out_b[i], error) ||
        !(tm->res_w[i] = add_p(ps, prefix, res, 4, (int64_t[]){s->heads, 1, s->taps, 1},
                               MEXD_INIT_UNIFORM, 1.0 / sqrt((double)s->taps), error)))
      return FALSE;
  }
  static const int ks[3] = {7, 5, 3};
  for (int i = 0; i < 3; i++) {
    g_autofree char *nw = g_strdup_printf("ppeg.conv%d.weight", ks[i]);
    g_autofree char *nb = g_strdup_printf("ppeg.conv%d.bias", ks[i]);
    double bound = 1.0 / ks[i]; /* fan_in = k·k */
    if (!(tm->conv_w[i] = add_p(ps, prefix, nw, 4, (int64_t[]){W, 1, ks[i], ks[i]},
                                MEXD_INIT_UNIFORM, bound, error)) ||
        !(tm->conv_b[i] = add_p(ps, prefix, nb, 1, &W, MEXD_INIT_UNIFORM, bound, error)))
      return FALSE;
  }
  return add_lin(ps, prefix, "head", classes, W, TRUE, &tm->head_w, &tm->head_b, error);
}

/* The Newton–Schulz pseudo-inverse of a2 [H,m,m] (lib/nn/layers.c nystrom_pinv). */
static V *pinv_t(MexdTape *t, V *a2, int iterations, GError **error)
{
  g_autoptr(V) rmax = mexd_ag_abs_sum_max(t, a2, -1, error);
  g_autoptr(V) cmax = rmax ? mexd_ag_abs_sum_max(t, a2, -2, error) : NULL;
  g_autoptr(V) d = cmax ? mexd_ag_mul(t, rmax, cmax, error) : NULL;
  g_autoptr(V) zt = d ? mexd_ag_transpose(t, a2, error) : NULL;
  V *z = zt ? mexd_ag_binary(t, zt, d, MEXD_BINARY_DIV, error) : NULL;
  for (int it = 0; z && it < iterations; it++) {
    g_autoptr(V) xz = mexd_ag_matmul(t, a2, z, FALSE, FALSE, 1.0f, error);
    g_autoptr(V) t1 = xz ? mexd_ag_scale(t, xz, -1.0f, 7.0f, TRUE, error) : NULL;
    g_autoptr(V) t2 = t1 ? mexd_ag_matmul(t, xz, t1, FALSE, FALSE, 1.0f, error) : NULL;
    g_autoptr(V) t2s = t2 ? mexd_ag_scale(t, t2, -1.0f, 15.0f, TRUE, error) : NULL;
    g_autoptr(V) t3 = t2s ? mexd_ag_matmul(t, xz, t2s, FALSE, FALSE, 1.0f, error) : NULL;
    g_autoptr(V) t3s = t3 ? mexd_ag_scale(t, t3, -1.0f, 13.0f, TRUE, error) : NULL;
    V *zn = t3s ? mexd_ag_matmul(t, z, t3s, FALSE, FALSE, 0.25f, error) : NULL;
    mexd_var_unref(z);
    z = zn;
  }
  return z;
}

/* Nyström attention of layer li over x [n, W] (layernormed), with the output dropout. */
static V *nystrom_t(MexdTransMilT *tm, int li, MexdTape *t, V *x, GError **error)
{
  const MexdAttnShape *s = &tm->s;
  MexdTensor *X = mexd_var_value(x);
  int64_t n = X->shape[0], W = s->width, H = s->heads, dh = W / H, m = s->landmarks;
  int64_t l = (n + m - 1) / m, np = m * l;
  float scale = (float)(1.0 / sqrt((double)dh));
  int64_t hs[3] = {H, np, dh}, ls[3] = {H, m, dh};

  g_autoptr(V) qkv_rows = mexd_ag_linear(t, x, tm->qkv_w[li], NULL, error);
  if (!qkv_rows)
    return NULL;
  g_autoptr(V) qkv = NULL;
  if (np > n) {
    g_autoptr(MexdTensor) z0 =
        mexd_tensor_new_zeros(X->backend, MEXD_DTYPE_F32, 2, (int64_t[]){np - n, 3 * W}, error);
    if (!z0)
      return NULL;
    g_autoptr(V) zv = mexd_var_take(g_steal_pointer(&z0), FALSE);
    V *parts[2] = {zv, qkv_rows};
    qkv = mexd_ag_concat(t, parts, 2, 0, error);
  } else {
    qkv = mexd_var_ref(qkv_rows);
  }
  g_autoptr(V) qkv4 = qkv ? mexd_ag_reshape(t, qkv, 4, (int64_t[]){np, 3, H, dh}, error) : NULL;
  g_autoptr(V) heads = qkv4 ? mexd_ag_permute(t, qkv4, (int[]){1, 2, 0, 3}, error) : NULL;
  g_autoptr(V) flat = heads ? mexd_ag_reshape(t, heads, 2, (int64_t[]){3 * H * np, dh}, error)
                            : NULL;
  if (!flat)
    return NULL;
  g_autoptr(V) q2 = mexd_ag_rows(t, flat, 0, H * np, error);
  g_autoptr(V) k2 = mexd_ag_rows(t, flat, H * np, H * np, error);
  g_autoptr(V) v2 = mexd_ag_rows(t, flat, 2 * H * np, H * np, error);
  if (!q2 || !k2 || !v2)
    return NULL;
  g_autoptr(V) q = mexd_ag_reshape(t, q2, 3, hs, error);
  g_autoptr(V) k = mexd_ag_reshape(t, k2, 3, hs, error);
  g_autoptr(V) v = mexd_ag_reshape(t, v2, 3, hs, error);
  g_autoptr(V) ql2 = mexd_ag_segment_mean(t, q2, l, error);
  g_autoptr(V) kl2 = ql2 ? mexd_ag_segment_mean(t, k2, l, error) : NULL;
  if (!q || !k || !v || !kl2)
    return NULL;
  g_autoptr(V) ql = mexd_ag_reshape(t, ql2, 3, ls, error);
  g_autoptr(V) kl = mexd_ag_reshape(t, kl2, 3, ls, error);
  if (!ql || !kl)
    return NULL;

  g_autoptr(V) a2l = mexd_ag_matmul(t, ql, kl, FALSE, TRUE, scale, error);
  g_autoptr(V) a2 = a2l ? mexd_ag_softmax(t, a2l, error) : NULL;
  g_autoptr(V) z = a2 ? pinv_t(t, a2, s->iterations, error) : NULL;
  g_autoptr(V) a3l = z ? mexd_ag_matmul(t, ql, k, FALSE, TRUE, scale, error) : NULL;
  g_autoptr(V) a3 = a3l ? mexd_ag_softmax(t, a3l, error) : NULL;
  g_autoptr(V) av = a3 ? mexd_ag_matmul(t, a3, v, FALSE, FALSE, 1.0f, error) : NULL;
  g_autoptr(V) zav = av ? mexd_ag_matmul(t, z, av, FALSE, FALSE, 1.0f, error) : NULL;
  g_autoptr(V) a1l = zav ? mexd_ag_matmul(t, q, kl, FALSE, TRUE, scale, error) : NULL;
  g_autoptr(V) a1 = a1l ? mexd_ag_softmax(t, a1l, error) : NULL;
  g_autoptr(V) att = a1 ? mexd_ag_matmul(t, a1, zav, FALSE, FALSE, 1.0f, error) : NULL;
  if (!att)
    return NULL;

  /* residual: depthwise conv of v along the rows, one taps×1 kernel per head */
  g_autoptr(V) v4 = mexd_ag_reshape(t, v, 4, (int64_t[]){1, H, np, dh}, error);
  g_autoptr(V) res = v4 ? mexd_ag_conv2d_depthwise(t, v4, tm->res_w[li], NULL, s->taps / 2, 0,
                                                   error)
                        : NULL;
  g_autoptr(V) res3 = res ? mexd_ag_reshape(t, res, 3, hs, error) : NULL;
  g_autoptr(V) sum = res3 ? mexd_ag_add(t, att, res3, error) : NULL;
  g_autoptr(V) merged = sum ? mexd_ag_permute(t, sum, (int[]){1, 0, 2}, error) : NULL;
  g_autoptr(V) merged2 = merged ? mexd_ag_reshape(t, merged, 2, (int64_t[]){np, W}, error) : NULL;
  g_autoptr(V) last = merged2 ? mexd_ag_rows(t, merged2, np - n, n, error) : NULL;
  g_autoptr(V) o = last ? mexd_ag_linear(t, last, tm->out_w[li], tm->out_b[li], error) : NULL;
  return o ? mexd_ag_dropout(t, o, tm->dropout, error) : NULL;
}

/* PPEG over h [Np+1, W] (lib/nn/layers.c transmil_ppeg). */
static V *ppeg_t(MexdTransMilT *tm, MexdTape *t, V *h, int64_t S, GError **error)
{
  int64_t W = tm->s.width, Np = S * S;
  g_autoptr(V) feat = mexd_ag_rows(t, h, 1, Np, error);
  g_autoptr(V) gt = feat ? mexd_ag_transpose(t, feat, error) : NULL;
  g_autoptr(V) g = gt ? mexd_ag_reshape(t, gt, 4, (int64_t[]){1, W, S, S}, error) : NULL;
  if (!g)
    return NULL;
  static const int ks[3] = {7, 5, 3};
  /* the authors' order: ((conv7(g) + g) + conv5(g)) + conv3(g) */
  g_autoptr(V) y = NULL;
  for (int i = 0; i < 3; i++) {
    g_autoptr(V) c =
        mexd_ag_conv2d_depthwise(t, g, tm->conv_w[i], tm->conv_b[i], ks[i] / 2, ks[i] / 2, error);
    if (!c)
      return NULL;
    V *yn = i == 0 ? mexd_ag_add(t, c, g, error) : mexd_ag_add(t, y, c, error);
    if (!yn)
      return NULL;
    if (y)
      mexd_var_unref(y);
    y = yn;
  }
  g_autoptr(V) y2 = mexd_ag_reshape(t, y, 2, (int64_t[]){W, Np}, error);
  g_autoptr(V) yt = y2 ? mexd_ag_transpose(t, y2, error) : NULL;
  g_autoptr(V) cls = yt ? mexd_ag_rows(t, h, 0, 1, error) : NULL;
  if (!cls)
    return NULL;
  V *parts[2] = {cls, yt};
  return mexd_ag_concat(t, parts, 2, 0, error);
}

/* x + dropout(attn(LN(x))) */
static V *layer_t(MexdTransMilT *tm, int li, MexdTape *t, V *x, GError **error)
{
  g_autoptr(V) hn = mexd_ag_layernorm(t, x, tm->ln_w[li], tm->ln_b[li], 1e-5f, error);
  g_autoptr(V) att = hn ? nystrom_t(tm, li, t, hn, error) : NULL;
  return att ? mexd_ag_add(t, x, att, error) : NULL;
}

gboolean mexd_transmil_t_forward(MexdTransMilT *tm, MexdTape *t, V *x, V **logits, V **out,
                                 GError **error)
{
  MexdTensor *X = mexd_var_value(x);
  if (X->ndim != 2 || X->shape[1] != tm->in_dim || X->shape[0] < 1)
    return mexd_fail(error, MEXD_ERROR_SHAPE, "TransMIL: the input must be [N ≥ 1, %d]",
                     tm->in_dim);
  int64_t N = X->shape[0], W = tm->s.width;
  g_autoptr(V) h0 = mexd_ag_linear(t, x, tm->fc1_w, tm->fc1_b, error);
  g_autoptr(V) h = h0 ? mexd_ag_unary(t, h0, MEXD_UNARY_RELU, error) : NULL;
  g_autoptr(V) cls = h ? mexd_ag_reshape(t, tm->cls, 2, (int64_t[]){1, W}, error) : NULL;
  if (!cls)
    return FALSE;
  int64_t S = mexd_square_side(N), Np = S * S, add = Np - N;
  g_autoptr(V) dup = add > 0 ? mexd_ag_rows(t, h, 0, add, error) : NULL;
  if (add > 0 && !dup)
    return FALSE;
  V *parts[3] = {cls, h, dup};
  g_autoptr(V) tok = mexd_ag_concat(t, parts, add > 0 ? 3 : 2, 0, error);
  g_autoptr(V) l1 = tok ? layer_t(tm, 0, t, tok, error) : NULL;
  g_autoptr(V) pp = l1 ? ppeg_t(tm, t, l1, S, error) : NULL;
  g_autoptr(V) l2 = pp ? layer_t(tm, 1, t, pp, error) : NULL;
  g_autoptr(V) o = l2 ? mexd_ag_layernorm(t, l2, tm->ln_w[2], tm->ln_b[2], 1e-5f, error) : NULL;
  g_autoptr(V) c0 = o ? mexd_ag_rows(t, o, 0, 1, error) : NULL;
  g_autoptr(V) lg = c0 ? mexd_ag_linear(t, c0, tm->head_w, tm->head_b, error) : NULL;
  if (!lg)
    return FALSE;
  *logits = g_steal_pointer(&lg);
  if (out)
    *out = g_steal_pointer(&o);
  return TRUE;
}

/* ---- Dyn-MoE ---- */

gboolean mexd_moe_t_init(MexdMoeT *moe, MexdParams *ps, const MexdModelConfig *cfg,
                         gboolean no_routing, GError **error)
{
  memset(moe, 0, sizeof *moe);
  moe->experts = cfg->experts;
  moe->classes = cfg->n_classes;
  moe->width = cfg->width;
  moe->no_routing = no_routing;
  memcpy(moe->alpha, cfg->alpha, sizeof moe->alpha);
  memcpy(moe->expert_of_class, cfg->expert_of_class, sizeof moe->expert_of_class);
  int64_t W = cfg->width, E = cfg->experts;
  for (int r = 0; r < E; r++) {
    g_autofree char *nr = g_strdup_printf("moe.router.%d", r);
    g_autofree char *nc = g_strdup_printf("moe.classifier.%d", r);
    if (!mexd_params_add_linear(ps, nr, 2, W, FALSE, &moe->router[r], NULL, error) ||
        !mexd_params_add_linear(ps, nc, E, W, TRUE, &moe->cls_w[r], &moe->cls_b[r], error))
      return FALSE;
  }
  MexdAttnShape s = {cfg->width, cfg->heads, cfg->landmarks, cfg->pinv_iterations,
                     cfg->res_conv_taps};
  return mexd_transmil_t_init(&moe->a2, ps, "adapter2", cfg->width, cfg->n_classes, &s, error);
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
  int E = moe->experts;
  int64_t W = moe->width;
  if (P->ndim != 2 || P->shape[1] != W || P->shape[0] < 1)
    return mexd_fail(error, MEXD_ERROR_SHAPE, "Dyn-MoE: the instance rows must be [N ≥ 1, %d]",
                     (int)W);
  int64_t N = P->shape[0];
  MexdBackend *be = P->backend;
  g_autoptr(V) pv = mexd_var_new(P, FALSE);
  g_autoptr(V) routers = mexd_ag_concat(t, moe->router, E, 0, error);
  g_autoptr(V) lg = routers ? mexd_ag_linear(t, pv, routers, NULL, error) : NULL;
  g_autoptr(V) lg3 = lg ? mexd_ag_reshape(t, lg, 3, (int64_t[]){N, E, 2}, error) : NULL;
  g_autoptr(V) probs = lg3 ? mexd_ag_softmax(t, lg3, error) : NULL;
  if (!probs)
    return FALSE;
  if (!mexd_moe_route_paper(mexd_var_value(probs), E, moe->alpha, out->n_sel, out->sel, NULL, NULL,
                            error)) {
    mexd_moe_out_clear(out);
    return FALSE;
  }
  g_autoptr(V) pg = mexd_ag_permute(t, probs, (int[]){1, 2, 0}, error);
  g_autoptr(V) pg2 = pg ? mexd_ag_reshape(t, pg, 2, (int64_t[]){2 * E, N}, error) : NULL;
  if (!pg2)
    return FALSE;
  V *blocks[MEXD_MAX_EXPERTS] = {NULL}, *cent[MEXD_MAX_EXPERTS] = {NULL},
    *cv[MEXD_MAX_EXPERTS] = {NULL}, *u[MEXD_MAX_EXPERTS] = {NULL};
  gboolean ok = TRUE;
  for (int r = 0; ok && r < E; r++) {
    int64_t k = out->n_sel[r];
    g_autoptr(MexdTensor) idx = mexd_tensor_new_1d(be, MEXD_DTYPE_I32, k, error);
    ok = idx && mexd_tensor_write(idx, out->sel[r], sizeof(int32_t) * k, error);
    g_autoptr(V) psel = ok ? mexd_ag_gather_rows(t, pv, idx, error) : NULL;
    g_autoptr(V) grow = psel ? mexd_ag_rows(t, pg2, 2 * r + 1, 1, error) : NULL;
    g_autoptr(V) gcol = grow ? mexd_ag_reshape(t, grow, 2, (int64_t[]){N, 1}, error) : NULL;
    g_autoptr(V) g = gcol ? mexd_ag_gather_rows(t, gcol, idx, error) : NULL;
    if (g && !moe->no_routing)
      blocks[r] = mexd_ag_mul(t, psel, g, error);
    g_autoptr(V) num = g ? mexd_ag_matmul(t, g, psel, TRUE, FALSE, 1.0f, error) : NULL;
    g_autoptr(V) den = num ? mexd_ag_sum_rows(t, g, error) : NULL;
    cent[r] = den ? mexd_ag_binary(t, num, den, MEXD_BINARY_DIV, error) : NULL;
    u[r] = cent[r] ? mexd_ag_linear(t, cent[r], moe->cls_w[r], moe->cls_b[r], error) : NULL;
    g_autoptr(V) su = u[r] ? mexd_ag_softmax(t, u[r], error) : NULL;
    g_autoptr(V) su2 = su ? mexd_ag_reshape(t, su, 2, (int64_t[]){E, 1}, error) : NULL;
    cv[r] = su2 ? mexd_ag_rows(t, su2, r, 1, error) : NULL;
    ok = cv[r] && (moe->no_routing || blocks[r]);
  }
  g_autoptr(V) centm = ok ? mexd_ag_concat(t, cent, E, 0, error) : NULL;
  g_autoptr(V) cvec = centm ? mexd_ag_concat(t, cv, E, 0, error) : NULL;
  out->z = cvec ? mexd_ag_matmul(t, cvec, centm, TRUE, FALSE, 1.0f, error) : NULL;
  if (out->z) {
    g_autofree float *c = mexd_tensor_dup_f32(mexd_var_value(cvec), error);
    if (c)
      memcpy(out->c, c, sizeof(float) * E);
    ok = c != NULL;
  } else {
    ok = FALSE;
  }
  g_autoptr(V) a2in = NULL;
  if (ok)
    a2in = moe->no_routing ? mexd_var_ref(pv) : mexd_ag_concat(t, blocks, E, 0, error);
  ok = a2in && mexd_transmil_t_forward(&moe->a2, t, a2in, &out->logits2, NULL, error);
  if (ok && label >= 0) {
    V *loss = xent_to(t, out->logits2, label, error);
    loss = loss ? acc_loss(t, loss, xent_to(t, u[0], 0, error), error) : NULL;
    int own = moe->expert_of_class[label];
    if (loss && own >= 1)
      loss = acc_loss(t, loss, xent_to(t, u[own], own, error), error);
    out->loss = loss;
    ok = loss != NULL;
  }
  for (int r = 0; r < E; r++) {
    if (blocks[r])
      mexd_var_unref(blocks[r]);
    if (cent[r])
      mexd_var_unref(cent[r]);
    if (cv[r])
      mexd_var_unref(cv[r]);
    if (u[r])
      mexd_var_unref(u[r]);
  }
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
