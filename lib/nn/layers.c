/* layers.c: weight loading, tracing, linear, Nyström attention and TransMIL (nn.h; MEXD.md §1).
 *
 * Nyström attention, as ops (n tokens, W = width, H heads of dh = W/H, m landmarks):
 *   qkv = x·W_qkvᵀ [n,3W] (one part of W at a time); m − n%m zero rows in front (zero rows of qkv
 *   are the projections of zero rows of x: no bias) → n_p rows; permuted to [3,H,n_p,dh];
 *   landmarks q̃, k̃ = segment means of l = n_p/m rows (= ceil(n/m) with the unpadded n);
 *   A1 = softmax(s·q·k̃ᵀ), A2 = softmax(s·q̃·k̃ᵀ), A3 = softmax(s·q̃·kᵀ) with s = dh^−½ applied as the
 *   GEMM's alpha (the reference scales q first: the same up to rounding);
 *   Z0 = A2ᵀ / (max row abs-sum · max column abs-sum) over all heads; Newton–Schulz
 *   Z ← ¼·Z·(13I − XZ(15I − XZ(7I − XZ))), XZ = A2·Z;
 *   out = A1·(Z·(A3·v)) + depthwise conv of v along the rows (taps × 1 kernel, zero padded);
 *   heads merged, the last n rows through the output Linear.
 * On the cpu backend, large A1 and A3 are made in pieces and never whole (see "pieces" below). */
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

/* ---- helpers ---- */

static MexdTensor *new_like(MexdTensor *x, int ndim, const int64_t *shape, GError **error)
{
  return mexd_tensor_new(x->backend, x->dtype, ndim, shape, error);
}

static MexdTensor *reshape(MexdTensor *x, int ndim, const int64_t *shape, GError **error)
{
  return mexd_tensor_reshape(x, ndim, shape, error);
}

/* c = alpha·a·op(b), batched, new [B,M,N] */
static MexdTensor *bmm(MexdTensor *a, MexdTensor *b, gboolean trans_b, float alpha, GError **error)
{
  int64_t B = a->shape[0], M = a->shape[1], N = trans_b ? b->shape[1] : b->shape[2];
  g_autoptr(MexdTensor) c = new_like(a, 3, (int64_t[]){B, M, N}, error);
  if (!c)
    return NULL;
  MexdGemmParams p = MEXD_GEMM_PARAMS_DEFAULT;
  p.trans_b = trans_b;
  p.alpha = alpha;
  if (!mexd_gemm(c, a, b, NULL, &p, error))
    return NULL;
  return g_steal_pointer(&c);
}

/* ---- Nyström attention ---- */

gboolean mexd_nystrom_load(MexdNystrom *ny, MexdWeights *w, const char *prefix,
                           const MexdAttnShape *s, GError **error)
{
  memset(ny, 0, sizeof *ny);
  ny->s = *s;
  int64_t W = s->width;
  g_autofree char *n1 = g_strdup_printf("%s.qkv.weight", prefix);
  g_autofree char *n2 = g_strdup_printf("%s.out.weight", prefix);
  g_autofree char *n3 = g_strdup_printf("%s.out.bias", prefix);
  g_autofree char *n4 = g_strdup_printf("%s.res_conv.weight", prefix);
  if (!(ny->qkv_w = mexd_weights_get(w, n1, 2, (int64_t[]){3 * W, W}, error)) ||
      !(ny->out_w = mexd_weights_get(w, n2, 2, (int64_t[]){W, W}, error)) ||
      !(ny->out_b = mexd_weights_get(w, n3, 1, (int64_t[]){W}, error)) ||
      !(ny->conv_w = mexd_weights_get(w, n4, 4, (int64_t[]){s->heads, 1, s->taps, 1}, error))) {
    mexd_nystrom_clear(ny);
    return FALSE;
  }
  return TRUE;
}

void mexd_nystrom_clear(MexdNystrom *ny)
{
  g_clear_pointer(&ny->qkv_w, mexd_tensor_unref);
  g_clear_pointer(&ny->out_w, mexd_tensor_unref);
  g_clear_pointer(&ny->out_b, mexd_tensor_unref);
  g_clear_pointer(&ny->conv_w, mexd_tensor_unref);
}

/* The Moore–Penrose pseudo-inverse of A2 [H,m,m] by Newton–Schulz iterations. */
static MexdTensor *nystrom_pinv(MexdTensor *a2, int iterations, GError **error)
{
  int64_t H = a2->shape[0], m = a2->shape[1];
  int64_t sq[3] = {H, m, m};
  g_autoptr(MexdTensor) rmax = new_like(a2, 1, (int64_t[]){1}, error);
  g_autoptr(MexdTensor) cmax = new_like(a2, 1, (int64_t[]){1}, error);
  g_autoptr(MexdTensor) z = new_like(a2, 3, sq, error);
  if (!rmax || !cmax || !z || !mexd_abs_sum_max(rmax, a2, -1, error) ||
      !mexd_abs_sum_max(cmax, a2, -2, error) || !mexd_mul(rmax, rmax, cmax, error) ||
      !mexd_transpose(z, a2, error) || !mexd_binary(z, z, rmax, MEXD_BINARY_DIV, error))
    return NULL;
  for (int it = 0; it < iterations; it++) {
    g_autoptr(MexdTensor) xz = bmm(a2, z, FALSE, 1.0f, error);
    g_autoptr(MexdTensor) t = xz ? new_like(a2, 3, sq, error) : NULL;
    if (!t || !mexd_scale_eye(t, xz, -1.0f, 7.0f, error))
      return NULL;
    g_autoptr(MexdTensor) t2 = bmm(xz, t, FALSE, 1.0f, error);
    if (!t2 || !mexd_scale_eye(t2, t2, -1.0f, 15.0f, error))
      return NULL;
    g_autoptr(MexdTensor) t3 = bmm(xz, t2, FALSE, 1.0f, error);
    if (!t3 || !mexd_scale_eye(t3, t3, -1.0f, 13.0f, error))
      return NULL;
    MexdTensor *zn = bmm(z, t3, FALSE, 0.25f, error);
    if (!zn)
      return NULL;
    mexd_tensor_unref(z);
    z = zn;
  }
  return g_steal_pointer(&z);
}

/* Big bags: the vulkan backend keeps a dropped tensor's memory until the work recorded so far
 * has run, so a layer syncs after its large intermediates are dropped (peak memory then stays
 * near the largest few of them instead of their sum).  Small bags record the whole pass. */
#define SYNC_ELEMENTS (8 << 20)

static gboolean sync_if_large(MexdTensor *like, int64_t elements, GError **error)
{
  if (elements < SYNC_ELEMENTS || mexd_backend_kind(like->backend) == MEXD_BACKEND_CPU)
    return TRUE;
  return mexd_backend_sync(like->backend, error);
}

/* ---- A1 and A3 in pieces (cpu backend) ----
 * Decision (issue 17): on the cpu backend, when the scores A1 [H,np,m] and A3 [H,m,np] are
 * larger than a piece, they are never whole: per head, a piece of rows of scores is made,
 * soft-maxed and multiplied on while it is in the cache (A1: softmax(s·q·k̃ᵀ)·(Z·A3·v) by rows of
 * q; A3: A3·v by rows of landmarks, and the class token's A1[row]·Z·A3 accumulated piece by
 * piece).  Each score is the same sum as in the whole tensor; only the GEMMs' blocking differs.
 * Measured before (2026-12-03, 2 cores): at N = 100,000 each of A1 and A3 is 820 MB per layer,
 * and a third of adapter #1's time went to the kernel clearing their fresh pages.  The Vulkan
 * backend keeps the whole tensors (one recorded command buffer; pieces would not free memory
 * before it is submitted). */
#define PIECE_FLOATS ((int64_t)1 << 18) /* 1 MiB of A1's scores */
/* A3's pieces are 128 times larger (128 MiB): its rows are np long, and every piece reads all of
 * k and v of its head again (measured at N = 100,000: whole heads of A3, 102 MB each, 6.3 s for
 * adapter #1; pieces of 4 MiB 20 s; of 32 MiB 6.4 s). */
#define A3_PIECES 128
static int64_t piece_floats = PIECE_FLOATS;

void mexd_nystrom_set_piece(int64_t floats)
{
  piece_floats = floats > 0 ? floats : PIECE_FLOATS;
}

static gboolean use_pieces(const MexdTensor *x, int64_t H, int64_t np, int64_t m)
{
  return mexd_backend_kind(x->backend) == MEXD_BACKEND_CPU && H * np * m > piece_floats;
}

/* One piece: rows [a0, a0 + nr) of a give the scores s = softmax(scale·a·bᵀ) in the first nr rows
 * of sc, then rows [o0, o0 + nr) of o = s·c.  Returns s (a view of sc), NULL on failure. */
static MexdTensor *softmax_piece(MexdTensor *sc, MexdTensor *a, int64_t a0, MexdTensor *b,
                                 MexdTensor *c, MexdTensor *o, int64_t o0, int64_t nr, float scale,
                                 GError **error)
{
  MexdGemmParams pq = {FALSE, TRUE, scale, 0.0f};
  g_autoptr(MexdTensor) ap = mexd_tensor_rows(a, a0, nr, error);
  g_autoptr(MexdTensor) sp = ap ? mexd_tensor_rows(sc, 0, nr, error) : NULL;
  g_autoptr(MexdTensor) op = sp ? mexd_tensor_rows(o, o0, nr, error) : NULL;
  if (!op || !mexd_gemm(sp, ap, b, NULL, &pq, error) || !mexd_softmax_rows(sp, sp, error) ||
      !mexd_gemm(op, sp, c, NULL, NULL, error))
    return NULL;
  return g_steal_pointer(&sp);
}

/* out [H,np,dh] = softmax(scale·q·k̃ᵀ)·zav per head, rows of q [H·np,dh] in pieces. */
static gboolean a1_pieces(MexdTensor *out, MexdTensor *q2, MexdTensor *kl2, MexdTensor *zav,
                          int64_t H, int64_t np, int64_t m, float scale, GError **error)
{
  const int64_t dh = q2->shape[1], rows = CLAMP(piece_floats / m, 1, np);
  g_autoptr(MexdTensor) out2 = mexd_tensor_reshape(out, 2, (int64_t[]){H * np, dh}, error);
  g_autoptr(MexdTensor) zav2 = out2 ? mexd_tensor_reshape(zav, 2, (int64_t[]){H * m, dh}, error)
                                    : NULL;
  g_autoptr(MexdTensor) sc = zav2 ? new_like(q2, 2, (int64_t[]){rows, m}, error) : NULL;
  if (!sc)
    return FALSE;
  for (int64_t h = 0; h < H; h++) {
    g_autoptr(MexdTensor) kh = mexd_tensor_rows(kl2, h * m, m, error);
    g_autoptr(MexdTensor) zh = kh ? mexd_tensor_rows(zav2, h * m, m, error) : NULL;
    if (!zh)
      return FALSE;
    for (int64_t r = 0; r < np; r += rows) {
      g_autoptr(MexdTensor) sp = softmax_piece(sc, q2, h * np + r, kh, zh, out2, h * np + r,
                                               MIN(rows, np - r), scale, error);
      if (!sp)
        return FALSE;
    }
  }
  return TRUE;
}

/* av [H,m,dh] = softmax(scale·q̃·kᵀ)·v per head, rows of landmarks in pieces; with az [H,1,m],
 * aa [H,1,np] = az·softmax(scale·q̃·kᵀ) besides (the class token's attention). */
static gboolean a3v_pieces(MexdTensor *av, MexdTensor *aa, MexdTensor *ql2, MexdTensor *k2,
                           MexdTensor *v2, MexdTensor *az, int64_t H, int64_t np, int64_t m,
                           float scale, GError **error)
{
  const int64_t dh = ql2->shape[1], rows = CLAMP(piece_floats * A3_PIECES / np, 1, m);
  g_autoptr(MexdTensor) av2 = mexd_tensor_reshape(av, 2, (int64_t[]){H * m, dh}, error);
  g_autoptr(MexdTensor) sc = av2 ? new_like(ql2, 2, (int64_t[]){rows, np}, error) : NULL;
  /* az as a column per head [H·m, 1], so that a piece of it is a piece of rows */
  g_autoptr(MexdTensor) azc = sc && aa ? mexd_tensor_reshape(az, 2, (int64_t[]){H * m, 1}, error)
                                       : NULL;
  g_autoptr(MexdTensor) aa2 = azc ? mexd_tensor_reshape(aa, 2, (int64_t[]){H, np}, error) : NULL;
  if (!sc || (aa && !aa2))
    return FALSE;
  MexdGemmParams acc = {TRUE, FALSE, 1.0f, 1.0f};
  for (int64_t h = 0; h < H; h++) {
    g_autoptr(MexdTensor) kh = mexd_tensor_rows(k2, h * np, np, error);
    g_autoptr(MexdTensor) vh = kh ? mexd_tensor_rows(v2, h * np, np, error) : NULL;
    g_autoptr(MexdTensor) aah = vh && aa2 ? mexd_tensor_rows(aa2, h, 1, error) : NULL;
    if (!vh || (aa2 && (!aah || !mexd_tensor_fill_zero(aah, error))))
      return FALSE;
    for (int64_t r = 0; r < m; r += rows) {
      const int64_t nr = MIN(rows, m - r);
      g_autoptr(MexdTensor) sp =
          softmax_piece(sc, ql2, h * m + r, kh, vh, av2, h * m + r, nr, scale, error);
      if (!sp)
        return FALSE;
      if (aah) {
        g_autoptr(MexdTensor) azp = mexd_tensor_rows(azc, h * m + r, nr, error);
        if (!azp || !mexd_gemm(aah, azp, sp, NULL, &acc, error))
          return FALSE;
      }
    }
  }
  return TRUE;
}

MexdTensor *mexd_nystrom_forward(MexdNystrom *ny, MexdTensor *x, GError **error)
{
  return mexd_nystrom_forward_cls(ny, x, -1, NULL, error);
}

MexdTensor *mexd_nystrom_forward_cls(MexdNystrom *ny, MexdTensor *x, int64_t cls_row,
                                     MexdTensor **cls_att, GError **error)
{
  const MexdAttnShape *s = &ny->s;
  int64_t n = x->shape[0], W = s->width, H = s->heads, dh = W / H, m = s->landmarks;
  int64_t l = (n + m - 1) / m, np = m * l;
  float scale = (float)(1.0 / sqrt((double)dh));
  int64_t hs[3] = {H, np, dh}, ls[3] = {H, m, dh};

  /* q, k, v for the padded rows, heads split, [3, H, np, dh]: one part (q, k or v) at a time,
   * its projection going straight below np − n zero rows (the projections of zero rows: there is
   * no bias), then its heads split.  Decision (issue 17): a part at a time, not [np, 3W] at once,
   * so the scratch is a third (at N = 100,000: 196 MB instead of 589 MB per layer). */
  g_autoptr(MexdTensor) heads = new_like(x, 4, (int64_t[]){3, H, np, dh}, error);
  {
    g_autoptr(MexdTensor) hf = heads ? reshape(heads, 2, (int64_t[]){3 * H * np, dh}, error) : NULL;
    g_autoptr(MexdTensor) part = hf ? new_like(x, 2, (int64_t[]){np, W}, error) : NULL;
    g_autoptr(MexdTensor) pad = part && np > n ? mexd_tensor_rows(part, 0, np - n, error) : NULL;
    g_autoptr(MexdTensor) rows = part ? mexd_tensor_rows(part, np - n, n, error) : NULL;
    g_autoptr(MexdTensor) p3 = rows ? reshape(part, 3, (int64_t[]){np, H, dh}, error) : NULL;
    /* only the pad rows need zeros (the GEMMs write the rest) */
    if (!p3 || (np > n && (!pad || !mexd_tensor_fill_zero(pad, error))))
      return NULL;
    for (int64_t j = 0; j < 3; j++) {
      g_autoptr(MexdTensor) wj = mexd_tensor_rows(ny->qkv_w, j * W, W, error);
      g_autoptr(MexdTensor) dj = wj ? mexd_tensor_rows(hf, j * H * np, H * np, error) : NULL;
      g_autoptr(MexdTensor) d3 = dj ? reshape(dj, 3, hs, error) : NULL;
      if (!d3 || !mexd_linear(rows, x, wj, NULL, error) ||
          !mexd_permute(d3, p3, (int[]){1, 0, 2}, error))
        return NULL;
    }
  }
  if (!sync_if_large(x, np * 3 * W, error))
    return NULL;
  g_autoptr(MexdTensor) flat = reshape(heads, 2, (int64_t[]){3 * H * np, dh}, error);
  if (!flat)
    return NULL;
  g_autoptr(MexdTensor) q2 = mexd_tensor_rows(flat, 0, H * np, error);
  g_autoptr(MexdTensor) k2 = mexd_tensor_rows(flat, H * np, H * np, error);
  g_autoptr(MexdTensor) v2 = mexd_tensor_rows(flat, 2 * H * np, H * np, error);
  if (!q2 || !k2 || !v2)
    return NULL;
  g_autoptr(MexdTensor) q = reshape(q2, 3, hs, error);
  g_autoptr(MexdTensor) k = reshape(k2, 3, hs, error);
  g_autoptr(MexdTensor) v = reshape(v2, 3, hs, error);
  g_autoptr(MexdTensor) ql2 = new_like(x, 2, (int64_t[]){H * m, dh}, error);
  g_autoptr(MexdTensor) kl2 = new_like(x, 2, (int64_t[]){H * m, dh}, error);
  if (!q || !k || !v || !ql2 || !kl2 || !mexd_segment_mean(ql2, q2, l, error) ||
      !mexd_segment_mean(kl2, k2, l, error))
    return NULL;
  g_autoptr(MexdTensor) ql = reshape(ql2, 3, ls, error);
  g_autoptr(MexdTensor) kl = reshape(kl2, 3, ls, error);
  if (!ql || !kl)
    return NULL;

  /* Z = pinv(A2); then Z·(A3·v), dropping A3 before A1 exists */
  const gboolean in_pieces = use_pieces(x, H, np, m);
  g_autoptr(MexdTensor) zav = NULL;
  {
    g_autoptr(MexdTensor) a2 = bmm(ql, kl, TRUE, scale, error);
    if (!a2 || !mexd_softmax_rows(a2, a2, error))
      return NULL;
    g_autoptr(MexdTensor) z = nystrom_pinv(a2, s->iterations, error);
    if (!z)
      return NULL;
    /* the class token's attention over every token, A1[row]·Z·A3 per head, mean over the heads:
     * [np] (padded positions included; the caller keeps what it needs) */
    g_autoptr(MexdTensor) az = NULL;
    if (cls_att) {
      int64_t row = np - n + cls_row;
      g_autoptr(MexdTensor) qr = new_like(x, 3, (int64_t[]){H, 1, dh}, error);
      if (!qr)
        return NULL;
      for (int64_t h = 0; h < H; h++) {
        g_autoptr(MexdTensor) qh = mexd_tensor_rows(q2, h * np + row, 1, error);
        g_autoptr(MexdTensor) qr2 = qh ? mexd_tensor_reshape(qr, 2, (int64_t[]){H, dh}, error) : NULL;
        g_autoptr(MexdTensor) dst = qr2 ? mexd_tensor_rows(qr2, h, 1, error) : NULL;
        if (!dst || !mexd_copy(dst, qh, error))
          return NULL;
      }
      g_autoptr(MexdTensor) ar = bmm(qr, kl, TRUE, scale, error);
      if (!ar || !mexd_softmax_rows(ar, ar, error))
        return NULL;
      if (!(az = bmm(ar, z, FALSE, 1.0f, error)))
        return NULL;
    }
    g_autoptr(MexdTensor) av = NULL, aa = NULL;
    if (in_pieces) {
      av = new_like(x, 3, (int64_t[]){H, m, dh}, error);
      aa = cls_att && av ? new_like(x, 3, (int64_t[]){H, 1, np}, error) : NULL;
      if (!av || (cls_att && !aa) || !a3v_pieces(av, aa, ql2, k2, v2, az, H, np, m, scale, error))
        return NULL;
    } else {
      g_autoptr(MexdTensor) a3 = bmm(ql, k, TRUE, scale, error);
      if (!a3 || !mexd_softmax_rows(a3, a3, error))
        return NULL;
      if (cls_att && !(aa = bmm(az, a3, FALSE, 1.0f, error)))
        return NULL;
      if (!(av = bmm(a3, v, FALSE, 1.0f, error)))
        return NULL;
    }
    if (cls_att) {
      g_autoptr(MexdTensor) aa2 = mexd_tensor_reshape(aa, 2, (int64_t[]){H, np}, error);
      MexdTensor *mean = aa2 ? new_like(x, 1, (int64_t[]){np}, error) : NULL;
      if (!mean || !mexd_mean_rows(mean, aa2, error)) {
        if (mean)
          mexd_tensor_unref(mean);
        return NULL;
      }
      *cls_att = mean;
    }
    zav = bmm(z, av, FALSE, 1.0f, error);
    if (!zav)
      return NULL;
  }
  if (!sync_if_large(x, H * np * m, error))
    return NULL;
  g_autoptr(MexdTensor) out = NULL;
  if (in_pieces) {
    out = new_like(x, 3, hs, error);
    if (!out || !a1_pieces(out, q2, kl2, zav, H, np, m, scale, error))
      return NULL;
  } else {
    g_autoptr(MexdTensor) a1 = bmm(q, kl, TRUE, scale, error);
    if (!a1 || !mexd_softmax_rows(a1, a1, error))
      return NULL;
    out = bmm(a1, zav, FALSE, 1.0f, error);
    if (!out)
      return NULL;
  }
  if (!sync_if_large(x, H * np * m, error))
    return NULL;

  /* residual: depthwise conv of v along the rows, one taps×1 kernel per head */
  {
    g_autoptr(MexdTensor) v4 = reshape(v, 4, (int64_t[]){1, H, np, dh}, error);
    g_autoptr(MexdTensor) res = new_like(x, 4, (int64_t[]){1, H, np, dh}, error);
    MexdConv2dParams cp = MEXD_CONV2D_PARAMS_DEFAULT;
    cp.pad_h = s->taps / 2;
    cp.groups = (int)H;
    if (!v4 || !res || !mexd_conv2d(res, v4, ny->conv_w, NULL, &cp, error))
      return NULL;
    g_autoptr(MexdTensor) res3 = reshape(res, 3, hs, error);
    if (!res3 || !mexd_add(out, out, res3, error))
      return NULL;
  }
  g_clear_pointer(&q, mexd_tensor_unref);
  g_clear_pointer(&k, mexd_tensor_unref);
  g_clear_pointer(&v, mexd_tensor_unref);
  g_clear_pointer(&q2, mexd_tensor_unref);
  g_clear_pointer(&k2, mexd_tensor_unref);
  g_clear_pointer(&v2, mexd_tensor_unref);
  g_clear_pointer(&flat, mexd_tensor_unref);
  g_clear_pointer(&heads, mexd_tensor_unref);

  /* merge the heads of the last n rows, then the output projection */
  g_autoptr(MexdTensor) out_last = NULL;
  {
    g_autoptr(MexdTensor) merged = new_like(x, 3, (int64_t[]){np, H, dh}, error);
    if (!merged || !mexd_permute(merged, out, (int[]){1, 0, 2}, error))
      return NULL;
    g_clear_pointer(&out, mexd_tensor_unref);
    g_autoptr(MexdTensor) merged2 = reshape(merged, 2, (int64_t[]){np, W}, error);
    g_autoptr(MexdTensor) last = merged2 ? mexd_tensor_rows(merged2, np - n, n, error) : NULL;
    out_last = last ? mexd_linear_new(last, ny->out_w, ny->out_b, error) : NULL;
    if (!out_last)
      return NULL;
  }
  if (!sync_if_large(x, np * W, error))
    return NULL;
  return g_steal_pointer(&out_last);
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

gboolean mexd_transmil_load(MexdTransMil *tm, MexdWeights *w, const char *prefix, int in_dim,
                            int classes, const MexdAttnShape *s, GError **error)
{
  memset(tm, 0, sizeof *tm);
  tm->in_dim = in_dim;
  tm->classes = classes;
  tm->s = *s;
  int64_t W = s->width;
  int64_t vW[1] = {W};
#define GET(field, suffix, nd, ...)                                                                \
  do {                                                                                             \
    g_autofree char *nm_ = g_strdup_printf("%s.%s", prefix, suffix);                               \
    if (!(tm->field = mexd_weights_get(w, nm_, nd, (int64_t[])__VA_ARGS__, error)))                \
      goto fail;                                                                                   \
  } while (0)
  GET(fc1_w, "fc1.weight", 2, {W, in_dim});
  GET(fc1_b, "fc1.bias", 1, {W});
  {
    g_autofree char *nm = g_strdup_printf("%s.cls_token", prefix);
    g_autoptr(MexdTensor) c = mexd_weights_get(w, nm, 3, (int64_t[]){1, 1, W}, error);
    if (!c || !(tm->cls = mexd_tensor_reshape(c, 2, (int64_t[]){1, W}, error)))
      goto fail;
  }
  GET(ln1_w, "layer1.norm.weight", 1, {W});
  GET(ln1_b, "layer1.norm.bias", 1, {W});
  GET(ln2_w, "layer2.norm.weight", 1, {W});
  GET(ln2_b, "layer2.norm.bias", 1, {W});
  GET(norm_w, "norm.weight", 1, {W});
  GET(norm_b, "norm.bias", 1, {W});
  GET(conv_w[0], "ppeg.conv7.weight", 4, {W, 1, 7, 7});
  GET(conv_b[0], "ppeg.conv7.bias", 1, {W});
  GET(conv_w[1], "ppeg.conv5.weight", 4, {W, 1, 5, 5});
  GET(conv_b[1], "ppeg.conv5.bias", 1, {W});
  GET(conv_w[2], "ppeg.conv3.weight", 4, {W, 1, 3, 3});
  GET(conv_b[2], "ppeg.conv3.bias", 1, {W});
  GET(head_w, "head.weight", 2, {classes, W});
  GET(head_b, "head.bias", 1, {classes});
#undef GET
  (void)vW;
  {
    g_autofree char *p1 = g_strdup_printf("%s.layer1.attn", prefix);
    g_autofree char *p2 = g_strdup_printf("%s.layer2.attn", prefix);
    if (!mexd_nystrom_load(&tm->attn1, w, p1, s, error) ||
        !mexd_nystrom_load(&tm->attn2, w, p2, s, error))
      goto fail;
  }
  return TRUE;
fail:
  mexd_transmil_clear(tm);
  return FALSE;
}

void mexd_transmil_clear(MexdTransMil *tm)
{
  MexdTensor **all[] = {&tm->fc1_w,     &tm->fc1_b,     &tm->cls,       &tm->ln1_w,
                        &tm->ln1_b,     &tm->ln2_w,     &tm->ln2_b,     &tm->norm_w,
                        &tm->norm_b,    &tm->conv_w[0], &tm->conv_w[1], &tm->conv_w[2],
                        &tm->conv_b[0], &tm->conv_b[1], &tm->conv_b[2], &tm->head_w,
                        &tm->head_b};
  for (size_t i = 0; i < G_N_ELEMENTS(all); i++)
    g_clear_pointer(all[i], mexd_tensor_unref);
  mexd_nystrom_clear(&tm->attn1);
  mexd_nystrom_clear(&tm->attn2);
}

/* h += attn(LN(h)); *cls_att (when not NULL) the class token's (row 0) attention */
static gboolean transmil_layer(MexdTensor *h, MexdNystrom *ny, MexdTensor *ln_w, MexdTensor *ln_b,
                               MexdTensor **cls_att, GError **error)
{
  g_autoptr(MexdTensor) hn = new_like(h, 2, h->shape, error);
  if (!hn || !mexd_layernorm(hn, h, ln_w, ln_b, 1e-5f, error))
    return FALSE;
  g_autoptr(MexdTensor) att = mexd_nystrom_forward_cls(ny, hn, cls_att ? 0 : -1, cls_att, error);
  return att && mexd_add(h, h, att, error);
}

/* PPEG over the tokens h [Np+1, W] (row 0 the cls token): a new tensor of the same shape. */
static MexdTensor *transmil_ppeg(MexdTransMil *tm, MexdTensor *h, int64_t S, GError **error)
{
  int64_t W = tm->s.width, Np = S * S;
  g_autoptr(MexdTensor) feat = mexd_tensor_rows(h, 1, Np, error);
  g_autoptr(MexdTensor) gt = feat ? new_like(h, 2, (int64_t[]){W, Np}, error) : NULL;
  if (!gt || !mexd_transpose(gt, feat, error))
    return NULL;
  int64_t gs[4] = {1, W, S, S};
  g_autoptr(MexdTensor) g = reshape(gt, 4, gs, error);
  g_autoptr(MexdTensor) y = g ? new_like(h, 4, gs, error) : NULL;
  g_autoptr(MexdTensor) c = y ? new_like(h, 4, gs, error) : NULL;
  if (!c)
    return NULL;
  static const int ks[3] = {7, 5, 3};
  for (int i = 0; i < 3; i++) {
    MexdConv2dParams cp = MEXD_CONV2D_PARAMS_DEFAULT;
    cp.pad_h = cp.pad_w = ks[i] / 2;
    cp.groups = (int)W;
    /* the authors' order: ((conv7(g) + g) + conv5(g)) + conv3(g) */
    if (!mexd_conv2d(i == 0 ? y : c, g, tm->conv_w[i], tm->conv_b[i], &cp, error) ||
        !mexd_add(y, y, i == 0 ? g : c, error))
      return NULL;
  }
  g_autoptr(MexdTensor) y2 = reshape(y, 2, (int64_t[]){W, Np}, error);
  g_autoptr(MexdTensor) yt = y2 ? new_like(h, 2, (int64_t[]){Np, W}, error) : NULL;
  if (!yt || !mexd_transpose(yt, y2, error))
    return NULL;
  g_autoptr(MexdTensor) cls = mexd_tensor_rows(h, 0, 1, error);
  g_autoptr(MexdTensor) out = cls ? new_like(h, 2, (int64_t[]){Np + 1, W}, error) : NULL;
  MexdTensor *parts[2] = {cls, yt};
  if (!out || !mexd_concat(out, parts, 2, 0, error))
    return NULL;
  return g_steal_pointer(&out);
}

gboolean mexd_transmil_forward(MexdTransMil *tm, MexdTensor *x, MexdTensor **logits,
                               MexdTensor **out, MexdTrace *trace, const char *prefix,
                               GError **error)
{
  return mexd_transmil_forward_attention(tm, x, logits, out, NULL, trace, prefix, error);
}

gboolean mexd_transmil_forward_attention(MexdTransMil *tm, MexdTensor *x, MexdTensor **logits,
                                         MexdTensor **out, MexdTensor **attention,
                                         MexdTrace *trace, const char *prefix, GError **error)
{
  int64_t N = x->shape[0], W = tm->s.width;
  if (x->ndim != 2 || x->shape[1] != tm->in_dim)
    return mexd_fail(error, MEXD_ERROR_SHAPE, "%s: input must be [N,%d]", prefix, tm->in_dim);
  g_autoptr(MexdTensor) h = mexd_linear_new(x, tm->fc1_w, tm->fc1_b, error);
  if (!h || !mexd_relu(h, h, error) || !mexd_trace_put(trace, prefix, "h", h, error))
    return FALSE;
  int64_t S = mexd_square_side(N), Np = S * S, add = Np - N;
  g_autoptr(MexdTensor) tok = new_like(x, 2, (int64_t[]){Np + 1, W}, error);
  g_autoptr(MexdTensor) dup = add > 0 ? mexd_tensor_rows(h, 0, add, error) : NULL;
  if (!tok || (add > 0 && !dup))
    return FALSE;
  MexdTensor *parts[3] = {tm->cls, h, dup};
  if (!mexd_concat(tok, parts, add > 0 ? 3 : 2, 0, error))
    return FALSE;
  g_clear_pointer(&h, mexd_tensor_unref);
  g_clear_pointer(&dup, mexd_tensor_unref);

  g_autoptr(MexdTensor) att_all = NULL;
  if (!transmil_layer(tok, &tm->attn1, tm->ln1_w, tm->ln1_b, attention ? &att_all : NULL, error) ||
      !mexd_trace_put(trace, prefix, "layer1", tok, error))
    return FALSE;
  if (attention) {
    /* the N instances are tokens 1..N of the Np + 1, which sit at the end of the padded rows */
    int64_t np_rows = att_all->shape[0], first = np_rows - (Np + 1) + 1;
    g_autoptr(MexdTensor) a2 = mexd_tensor_reshape(att_all, 2, (int64_t[]){np_rows, 1}, error);
    g_autoptr(MexdTensor) inst = a2 ? mexd_tensor_rows(a2, first, N, error) : NULL;
    g_autoptr(MexdTensor) a = inst ? new_like(x, 1, (int64_t[]){N}, error) : NULL;
    g_autoptr(MexdTensor) a1 = a ? mexd_tensor_reshape(a, 2, (int64_t[]){N, 1}, error) : NULL;
    if (!a1 || !mexd_copy(a1, inst, error) ||
        !mexd_trace_put(trace, prefix, "attention", a, error))
      return FALSE;
    *attention = g_steal_pointer(&a);
  }
  g_autoptr(MexdTensor) p = transmil_ppeg(tm, tok, S, error);
  if (!p || !mexd_trace_put(trace, prefix, "ppeg", p, error))
    return FALSE;
  g_clear_pointer(&tok, mexd_tensor_unref);
  if (!transmil_layer(p, &tm->attn2, tm->ln2_w, tm->ln2_b, NULL, error) ||
      !mexd_trace_put(trace, prefix, "layer2", p, error))
    return FALSE;
  if (!mexd_layernorm(p, p, tm->norm_w, tm->norm_b, 1e-5f, error) ||
      !mexd_trace_put(trace, prefix, "out", p, error))
    return FALSE;
  g_autoptr(MexdTensor) cls = mexd_tensor_rows(p, 0, 1, error);
  g_autoptr(MexdTensor) lg = cls ? mexd_linear_new(cls, tm->head_w, tm->head_b, error) : NULL;
  if (!lg || !mexd_trace_put(trace, prefix, "logits", lg, error))
    return FALSE;
  *logits = g_steal_pointer(&lg);
  if (out)
    *out = g_steal_pointer(&p);
  return TRUE;
}
