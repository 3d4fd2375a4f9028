/* transmil.c: TransMIL with its Nyström attention and PPEG, defined once for inference and
 * training (module.h; MEXD.md §1).
 *
 * Nyström attention, as ops (n tokens, W = width, H heads of dh = W/H, m landmarks):
 *   qkv = x·W_qkvᵀ (no bias) below m − n%m zero rows (the projections of zero rows of x) → n_p
 *   rows, as [3,H,n_p,dh] (mexd_ag_qkv_heads: one part at a time);
 *   landmarks q̃, k̃ = segment means of l = n_p/m rows (= ceil(n/m) with the unpadded n);
 *   A1 = softmax(s·q·k̃ᵀ), A2 = softmax(s·q̃·k̃ᵀ), A3 = softmax(s·q̃·kᵀ) with s = dh^−½ applied as the
 *   GEMM's alpha (the reference scales q first: the same up to rounding);
 *   Z0 = A2ᵀ / (max row abs-sum · max column abs-sum) over all heads; Newton–Schulz
 *   Z ← ¼·Z·(13I − XZ(15I − XZ(7I − XZ))), XZ = A2·Z;
 *   out = A1·(Z·(A3·v)) + depthwise conv of v along the rows (taps × 1 kernel, zero padded);
 *   heads merged, the last n rows through the output Linear, then dropout (training).
 * A1·(…) and A3·v are mexd_ag_attend: without a tape on the cpu backend A1 and A3 are made in
 * pieces and are never whole (autograd.c).  Without a tape the residual sums and fc1's ReLU are
 * made in place (mexd_ag_add_consume, mexd_ag_unary_consume: measured at N = 100,000, a new
 * tensor for the ReLU alone raised adapter #1's peak memory from 2,462 to 2,658 MiB), and each
 * large intermediate is dropped as soon as it has been used, so inference's peak memory is that
 * of the pieces, not of the tape. */
#include "nn/module.h"

#include "core/error.h"

#include <math.h>
#include <string.h>

#define V MexdVar

static const int ppeg_k[3] = {7, 5, 3};

static V *param(const MexdParamSource *src, const char *prefix, const char *suffix, int ndim,
                const int64_t *shape, MexdInit init, double a, GError **error)
{
  g_autofree char *nm = g_strdup_printf("%s.%s", prefix, suffix);
  return mexd_param(src, nm, ndim, shape, init, a, error);
}

static gboolean linear(const MexdParamSource *src, const char *prefix, const char *suffix,
                       int64_t out, int64_t in, gboolean bias, V **w, V **b, GError **error)
{
  g_autofree char *nm = g_strdup_printf("%s.%s", prefix, suffix);
  return mexd_param_linear(src, nm, out, in, bias, w, b, error);
}

gboolean mexd_transmil_init(MexdTransMil *tm, const MexdParamSource *src, const char *prefix,
                            int in_dim, int classes, const MexdAttnShape *s, GError **error)
{
  memset(tm, 0, sizeof *tm);
  tm->in_dim = in_dim;
  tm->classes = classes;
  tm->s = *s;
  tm->dropout = 0.1f;
  int64_t W = s->width;
  if (W < 1 || s->heads < 1 || W % s->heads || s->taps % 2 == 0 || s->landmarks < 1)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "TransMIL: width %d must be a multiple of heads %d, taps odd (%d), landmarks "
                     "≥ 1 (%d)",
                     s->width, s->heads, s->taps, s->landmarks);
  if (!linear(src, prefix, "fc1", W, in_dim, TRUE, &tm->fc1_w, &tm->fc1_b, error) ||
      !(tm->cls = param(src, prefix, "cls_token", 3, (int64_t[]){1, 1, W}, MEXD_INIT_NORMAL, 1.0,
                        error)))
    goto fail;
  static const char *norms[3] = {"layer1.norm", "layer2.norm", "norm"};
  for (int i = 0; i < 3; i++) {
    g_autofree char *nw = g_strdup_printf("%s.weight", norms[i]);
    g_autofree char *nb = g_strdup_printf("%s.bias", norms[i]);
    if (!(tm->ln_w[i] = param(src, prefix, nw, 1, &W, MEXD_INIT_CONST, 1.0, error)) ||
        !(tm->ln_b[i] = param(src, prefix, nb, 1, &W, MEXD_INIT_CONST, 0.0, error)))
      goto fail;
    if (i == 2)
      break;
    g_autofree char *qkv = g_strdup_printf("layer%d.attn.qkv", i + 1);
    g_autofree char *out = g_strdup_printf("layer%d.attn.out", i + 1);
    g_autofree char *res = g_strdup_printf("layer%d.attn.res_conv.weight", i + 1);
    if (!linear(src, prefix, qkv, 3 * W, W, FALSE, &tm->qkv_w[i], NULL, error) ||
        !linear(src, prefix, out, W, W, TRUE, &tm->out_w[i], &tm->out_b[i], error) ||
        !(tm->res_w[i] = param(src, prefix, res, 4, (int64_t[]){s->heads, 1, s->taps, 1},
                               MEXD_INIT_UNIFORM, 1.0 / sqrt((double)s->taps), error)))
      goto fail;
  }
  for (int i = 0; i < 3; i++) {
    const int k = ppeg_k[i];
    g_autofree char *nw = g_strdup_printf("ppeg.conv%d.weight", k);
    g_autofree char *nb = g_strdup_printf("ppeg.conv%d.bias", k);
    double bound = 1.0 / k; /* fan_in = k·k */
    if (!(tm->conv_w[i] = param(src, prefix, nw, 4, (int64_t[]){W, 1, k, k}, MEXD_INIT_UNIFORM,
                                bound, error)) ||
        !(tm->conv_b[i] = param(src, prefix, nb, 1, &W, MEXD_INIT_UNIFORM, bound, error)))
      goto fail;
  }
  if (linear(src, prefix, "head", classes, W, TRUE, &tm->head_w, &tm->head_b, error))
    return TRUE;
fail:
  mexd_transmil_clear(tm);
  return FALSE;
}

void mexd_transmil_clear(MexdTransMil *tm)
{
  V **all[] = {&tm->fc1_w,  &tm->fc1_b,  &tm->cls,    &tm->head_w, &tm->head_b};
  for (size_t i = 0; i < G_N_ELEMENTS(all); i++)
    g_clear_pointer(all[i], mexd_var_unref);
  for (int i = 0; i < 3; i++) {
    g_clear_pointer(&tm->ln_w[i], mexd_var_unref);
    g_clear_pointer(&tm->ln_b[i], mexd_var_unref);
    g_clear_pointer(&tm->conv_w[i], mexd_var_unref);
    g_clear_pointer(&tm->conv_b[i], mexd_var_unref);
  }
  for (int i = 0; i < 2; i++) {
    g_clear_pointer(&tm->qkv_w[i], mexd_var_unref);
    g_clear_pointer(&tm->out_w[i], mexd_var_unref);
    g_clear_pointer(&tm->out_b[i], mexd_var_unref);
    g_clear_pointer(&tm->res_w[i], mexd_var_unref);
  }
}

/* Big bags: the vulkan backend keeps a dropped tensor's memory until the work recorded so far
 * has run, so a layer syncs after its large intermediates are dropped (peak memory then stays
 * near the largest few of them instead of their sum).  Small bags record the whole pass. */
#define SYNC_ELEMENTS (8 << 20)

static gboolean sync_if_large(V *like, int64_t elements, GError **error)
{
  MexdBackend *be = mexd_var_value(like)->backend;
  if (elements < SYNC_ELEMENTS || mexd_backend_kind(be) == MEXD_BACKEND_CPU)
    return TRUE;
  return mexd_backend_sync(be, error);
}

/* The Moore–Penrose pseudo-inverse of a2 [H,m,m] by Newton–Schulz iterations. */
static V *pinv(MexdTape *t, V *a2, int iterations, GError **error)
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

static MexdTensor *bmm(MexdTensor *a, MexdTensor *b, gboolean trans_b, float alpha,
                       GError **error)
{
  int64_t N = trans_b ? b->shape[1] : b->shape[2];
  g_autoptr(MexdTensor) c =
      mexd_tensor_new(a->backend, MEXD_DTYPE_F32, 3, (int64_t[]){a->shape[0], a->shape[1], N},
                      error);
  if (!c || !mexd_gemm(c, a, b, NULL, &(MexdGemmParams){FALSE, trans_b, alpha, 0.0f}, error))
    return NULL;
  return g_steal_pointer(&c);
}

/* The class token's weights on the landmarks, A1[row]·Z per head: [H, 1, m] (no gradient). */
static MexdTensor *cls_weights(MexdTensor *q2, MexdTensor *kl, MexdTensor *z, int64_t H,
                               int64_t np, int64_t row, float scale, GError **error)
{
  const int64_t dh = q2->shape[1];
  g_autoptr(MexdTensor) qr = mexd_tensor_new(q2->backend, MEXD_DTYPE_F32, 3,
                                             (int64_t[]){H, 1, dh}, error);
  g_autoptr(MexdTensor) qr2 = qr ? mexd_tensor_reshape(qr, 2, (int64_t[]){H, dh}, error) : NULL;
  if (!qr2)
    return NULL;
  for (int64_t h = 0; h < H; h++) {
    g_autoptr(MexdTensor) qh = mexd_tensor_rows(q2, h * np + row, 1, error);
    g_autoptr(MexdTensor) dst = qh ? mexd_tensor_rows(qr2, h, 1, error) : NULL;
    if (!dst || !mexd_copy(dst, qh, error))
      return NULL;
  }
  g_autoptr(MexdTensor) ar = bmm(qr, kl, TRUE, scale, error);
  if (!ar || !mexd_softmax_rows(ar, ar, error))
    return NULL;
  return bmm(ar, z, FALSE, 1.0f, error);
}

/* Nyström attention of layer li over x [n, W] (layer-normed), the output dropout included; with
 * cls_att, a new [n_p] tensor: row cls_row's attention over the n_p padded rows (the n rows of x
 * are the last n), mean over the heads (it sums to ~1: Z is A2's pseudo-inverse). */
static V *nystrom(MexdTransMil *tm, int li, MexdTape *t, V *x, int64_t cls_row,
                  MexdTensor **cls_att, GError **error)
{
  const MexdAttnShape *s = &tm->s;
  int64_t n = mexd_var_value(x)->shape[0], W = s->width, H = s->heads, dh = W / H,
          m = s->landmarks;
  int64_t l = (n + m - 1) / m, np = m * l;
  float scale = (float)(1.0 / sqrt((double)dh));
  int64_t hs[3] = {H, np, dh}, ls[3] = {H, m, dh};

  g_autoptr(V) heads = mexd_ag_qkv_heads(t, x, tm->qkv_w[li], np, H, error);
  if (!heads || !sync_if_large(x, np * 3 * W, error))
    return NULL;
  g_autoptr(V) flat = mexd_ag_reshape(t, heads, 2, (int64_t[]){3 * H * np, dh}, error);
  g_clear_pointer(&heads, mexd_var_unref);
  if (!flat)
    return NULL;
  g_autoptr(V) q2 = mexd_ag_rows(t, flat, 0, H * np, error);
  g_autoptr(V) k2 = mexd_ag_rows(t, flat, H * np, H * np, error);
  g_autoptr(V) v2 = mexd_ag_rows(t, flat, 2 * H * np, H * np, error);
  g_clear_pointer(&flat, mexd_var_unref);
  if (!q2 || !k2 || !v2)
    return NULL;
  g_autoptr(V) q = mexd_ag_reshape(t, q2, 3, hs, error);
  g_autoptr(V) k = mexd_ag_reshape(t, k2, 3, hs, error);
  g_autoptr(V) v = mexd_ag_reshape(t, v2, 3, hs, error);
  g_autoptr(V) ql2 = q && k && v ? mexd_ag_segment_mean(t, q2, l, error) : NULL;
  g_autoptr(V) kl2 = ql2 ? mexd_ag_segment_mean(t, k2, l, error) : NULL;
  g_autoptr(V) ql = kl2 ? mexd_ag_reshape(t, ql2, 3, ls, error) : NULL;
  g_autoptr(V) kl = ql ? mexd_ag_reshape(t, kl2, 3, ls, error) : NULL;
  if (!kl)
    return NULL;

  /* Z = pinv(A2); then Z·(A3·v), dropping A3's product before A1's is made */
  g_autoptr(V) zav = NULL;
  {
    g_autoptr(V) a2l = mexd_ag_matmul(t, ql, kl, FALSE, TRUE, scale, error);
    g_autoptr(V) a2 = a2l ? mexd_ag_softmax(t, a2l, error) : NULL;
    g_autoptr(V) z = a2 ? pinv(t, a2, s->iterations, error) : NULL;
    if (!z)
      return NULL;
    g_autoptr(MexdTensor) az = NULL, aa = NULL;
    if (cls_att && !(az = cls_weights(mexd_var_value(q2), mexd_var_value(kl), mexd_var_value(z),
                                      H, np, np - n + cls_row, scale, error)))
      return NULL;
    g_autoptr(V) av = mexd_ag_attend(t, ql, k, v, scale, az, cls_att ? &aa : NULL, error);
    if (!av)
      return NULL;
    if (cls_att) {
      g_autoptr(MexdTensor) aa2 = mexd_tensor_reshape(aa, 2, (int64_t[]){H, np}, error);
      g_autoptr(MexdTensor) mean =
          aa2 ? mexd_tensor_new(aa->backend, MEXD_DTYPE_F32, 1, (int64_t[]){np}, error) : NULL;
      if (!mean || !mexd_mean_rows(mean, aa2, error))
        return NULL;
      *cls_att = g_steal_pointer(&mean);
    }
    zav = mexd_ag_matmul(t, z, av, FALSE, FALSE, 1.0f, error);
    if (!zav)
      return NULL;
  }
  if (!sync_if_large(x, H * np * m, error))
    return NULL;
  g_autoptr(V) att = mexd_ag_attend(t, q, kl, zav, scale, NULL, NULL, error);
  if (!att || !sync_if_large(x, H * np * m, error))
    return NULL;

  /* residual: depthwise conv of v along the rows, one taps×1 kernel per head */
  {
    g_autoptr(V) v4 = mexd_ag_reshape(t, v, 4, (int64_t[]){1, H, np, dh}, error);
    g_autoptr(V) res = v4 ? mexd_ag_conv2d_depthwise(t, v4, tm->res_w[li], NULL, s->taps / 2, 0,
                                                     error)
                          : NULL;
    g_autoptr(V) res3 = res ? mexd_ag_reshape(t, res, 3, hs, error) : NULL;
    if (!res3 || !(att = mexd_ag_add_consume(t, g_steal_pointer(&att), res3, error)))
      return NULL;
  }
  V **qkv[] = {&q, &k, &v, &q2, &k2, &v2, &ql, &kl, &ql2, &kl2, &zav};
  for (size_t i = 0; i < G_N_ELEMENTS(qkv); i++)
    g_clear_pointer(qkv[i], mexd_var_unref);

  /* merge the heads of the last n rows, then the output projection */
  g_autoptr(V) merged = mexd_ag_permute(t, att, (int[]){1, 0, 2}, error);
  g_clear_pointer(&att, mexd_var_unref);
  g_autoptr(V) merged2 = merged ? mexd_ag_reshape(t, merged, 2, (int64_t[]){np, W}, error) : NULL;
  g_autoptr(V) last = merged2 ? mexd_ag_rows(t, merged2, np - n, n, error) : NULL;
  g_clear_pointer(&merged, mexd_var_unref);
  g_clear_pointer(&merged2, mexd_var_unref);
  g_autoptr(V) o = last ? mexd_ag_linear(t, last, tm->out_w[li], tm->out_b[li], error) : NULL;
  g_clear_pointer(&last, mexd_var_unref);
  if (!o || !sync_if_large(x, np * W, error))
    return NULL;
  return mexd_ag_dropout(t, o, tm->dropout, error);
}

/* x + attn(LN(x)), given up x; with cls_att the class token's (row 0) attention. */
static V *layer(MexdTransMil *tm, int li, MexdTape *t, V *x, MexdTensor **cls_att,
                GError **error)
{
  g_autoptr(V) hn = mexd_ag_layernorm(t, x, tm->ln_w[li], tm->ln_b[li], 1e-5f, error);
  g_autoptr(V) att = hn ? nystrom(tm, li, t, hn, 0, cls_att, error) : NULL;
  g_clear_pointer(&hn, mexd_var_unref);
  if (!att) {
    mexd_var_unref(x);
    return NULL;
  }
  return mexd_ag_add_consume(t, x, att, error);
}

/* PPEG over the tokens h [Np+1, W] (row 0 the class token): [cls, (conv7(g) + g + conv5(g) +
 * conv3(g)) as tokens] with g the Np tokens as a [W, S, S] image. */
static V *ppeg(MexdTransMil *tm, MexdTape *t, V *h, int64_t S, GError **error)
{
  int64_t W = tm->s.width, Np = S * S;
  g_autoptr(V) feat = mexd_ag_rows(t, h, 1, Np, error);
  g_autoptr(V) gt = feat ? mexd_ag_transpose(t, feat, error) : NULL;
  g_autoptr(V) g = gt ? mexd_ag_reshape(t, gt, 4, (int64_t[]){1, W, S, S}, error) : NULL;
  if (!g)
    return NULL;
  g_clear_pointer(&feat, mexd_var_unref);
  /* the authors' order: ((conv7(g) + g) + conv5(g)) + conv3(g) */
  V *y = NULL;
  for (int i = 0; i < 3; i++) {
    g_autoptr(V) c = mexd_ag_conv2d_depthwise(t, g, tm->conv_w[i], tm->conv_b[i], ppeg_k[i] / 2,
                                              ppeg_k[i] / 2, error);
    if (!c) {
      if (y)
        mexd_var_unref(y);
      return NULL;
    }
    y = i == 0 ? mexd_ag_add_consume(t, g_steal_pointer(&c), g, error)
               : mexd_ag_add_consume(t, y, c, error);
    if (!y)
      return NULL;
  }
  g_autoptr(V) yv = y;
  g_clear_pointer(&g, mexd_var_unref);
  g_clear_pointer(&gt, mexd_var_unref);
  g_autoptr(V) y2 = mexd_ag_reshape(t, yv, 2, (int64_t[]){W, Np}, error);
  g_autoptr(V) yt = y2 ? mexd_ag_transpose(t, y2, error) : NULL;
  g_autoptr(V) cls = yt ? mexd_ag_rows(t, h, 0, 1, error) : NULL;
  if (!cls)
    return NULL;
  V *parts[2] = {cls, yt};
  return mexd_ag_concat(t, parts, 2, 0, error);
}

static gboolean put(MexdTrace *trace, const char *prefix, const char *name, V *v, GError **error)
{
  return mexd_trace_put(trace, prefix, name, mexd_var_value(v), error);
}

gboolean mexd_transmil_forward(MexdTransMil *tm, MexdTape *t, V *x, V **logits, V **out,
                               MexdTensor **attention, MexdTrace *trace, const char *prefix,
                               GError **error)
{
  MexdTensor *X = mexd_var_value(x);
  if (X->ndim != 2 || X->shape[1] != tm->in_dim || X->shape[0] < 1)
    return mexd_fail(error, MEXD_ERROR_SHAPE, "%s: the input must be [N ≥ 1, %d]",
                     prefix ? prefix : "TransMIL", tm->in_dim);
  int64_t N = X->shape[0], W = tm->s.width;
  g_autoptr(V) h0 = mexd_ag_linear(t, x, tm->fc1_w, tm->fc1_b, error);
  g_autoptr(V) h = h0 ? mexd_ag_unary_consume(t, g_steal_pointer(&h0), MEXD_UNARY_RELU, error)
                      : NULL;
  g_autoptr(V) cls = h ? mexd_ag_reshape(t, tm->cls, 2, (int64_t[]){1, W}, error) : NULL;
  if (!cls || !put(trace, prefix, "h", h, error))
    return FALSE;
  int64_t S = mexd_square_side(N), Np = S * S, add = Np - N;
  g_autoptr(V) dup = add > 0 ? mexd_ag_rows(t, h, 0, add, error) : NULL;
  if (add > 0 && !dup)
    return FALSE;
  V *parts[3] = {cls, h, dup};
  V *tok = mexd_ag_concat(t, parts, add > 0 ? 3 : 2, 0, error);
  g_clear_pointer(&h, mexd_var_unref);
  g_clear_pointer(&dup, mexd_var_unref);
  g_autoptr(MexdTensor) att_all = NULL;
  g_autoptr(V) l1 = tok ? layer(tm, 0, t, tok, attention ? &att_all : NULL, error) : NULL;
  if (!l1 || !put(trace, prefix, "layer1", l1, error))
    return FALSE;
  g_autoptr(MexdTensor) a = NULL;
  if (attention) {
    /* the N instances are tokens 1..N of the Np + 1, which sit at the end of the padded rows */
    int64_t np_rows = att_all->shape[0], first = np_rows - (Np + 1) + 1;
    g_autoptr(MexdTensor) a2 = mexd_tensor_reshape(att_all, 2, (int64_t[]){np_rows, 1}, error);
    g_autoptr(MexdTensor) inst = a2 ? mexd_tensor_rows(a2, first, N, error) : NULL;
    a = inst ? mexd_tensor_new(X->backend, MEXD_DTYPE_F32, 1, (int64_t[]){N}, error) : NULL;
    g_autoptr(MexdTensor) a1 = a ? mexd_tensor_reshape(a, 2, (int64_t[]){N, 1}, error) : NULL;
    if (!a1 || !mexd_copy(a1, inst, error) ||
        !mexd_trace_put(trace, prefix, "attention", a, error))
      return FALSE;
  }
  V *p = ppeg(tm, t, l1, S, error);
  g_clear_pointer(&l1, mexd_var_unref);
  if (!p || !put(trace, prefix, "ppeg", p, error)) {
    if (p)
      mexd_var_unref(p);
    return FALSE;
  }
  g_autoptr(V) l2 = layer(tm, 1, t, p, NULL, error);
  if (!l2 || !put(trace, prefix, "layer2", l2, error))
    return FALSE;
  g_autoptr(V) o = mexd_ag_layernorm(t, l2, tm->ln_w[2], tm->ln_b[2], 1e-5f, error);
  g_clear_pointer(&l2, mexd_var_unref);
  g_autoptr(V) c0 = o && put(trace, prefix, "out", o, error) ? mexd_ag_rows(t, o, 0, 1, error)
                                                             : NULL;
  g_autoptr(V) lg = c0 ? mexd_ag_linear(t, c0, tm->head_w, tm->head_b, error) : NULL;
  if (!lg || !put(trace, prefix, "logits", lg, error))
    return FALSE;
  *logits = g_steal_pointer(&lg);
  if (out)
    *out = g_steal_pointer(&o);
  if (attention)
    *attention = g_steal_pointer(&a);
  return TRUE;
}

gboolean mexd_transmil_run(MexdTransMil *tm, MexdTensor *x, MexdTensor **logits,
                           MexdTensor **out, MexdTensor **attention, MexdTrace *trace,
                           const char *prefix, GError **error)
{
  g_autoptr(V) xv = mexd_var_new(x, FALSE);
  g_autoptr(V) lg = NULL, o = NULL;
  if (!mexd_transmil_forward(tm, NULL, xv, &lg, out ? &o : NULL, attention, trace, prefix, error))
    return FALSE;
  *logits = mexd_tensor_ref(mexd_var_value(lg));
  if (out)
    *out = mexd_tensor_ref(mexd_var_value(o));
  return TRUE;
}
