/* moe.c: Dyn-MoE's routers, blocks, centroids and expert classifiers, defined once for inference
 * and training (module.h; MEXD.md §2).  Which rows each expert gets is decided outside (the
 * paper's routing, mexd_moe_route_paper, or the authors' official rules: model.c); this file
 * computes everything that a gradient flows through.
 *
 * Decision (issue 18): the gated centroid is the paper's mean(g ⊙ P_sel) / mean(g), from the gated
 * block itself, in inference and in training (training had Σ g·P / Σ g as a GEMM: equal up to
 * rounding, but measured against the PyTorch fixtures at N = 4,096 the GEMM's f32 sum was 10×
 * further off, 8e-7 against 8e-8). */
#include "nn/module.h"

#include "core/error.h"

#include <string.h>

#define V MexdVar

gboolean mexd_moe_init(MexdMoe *moe, const MexdParamSource *src, int experts, int width,
                       GError **error)
{
  memset(moe, 0, sizeof *moe);
  if (experts < 1 || experts > MEXD_MAX_EXPERTS || width < 1)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "Dyn-MoE: 1 to %d experts of width ≥ 1, not %d of %d", MEXD_MAX_EXPERTS,
                     experts, width);
  moe->experts = experts;
  moe->width = width;
  for (int r = 0; r < experts; r++) {
    g_autofree char *nr = g_strdup_printf("moe.router.%d", r);
    g_autofree char *nc = g_strdup_printf("moe.classifier.%d", r);
    if (!mexd_param_linear(src, nr, 2, width, FALSE, &moe->router[r], NULL, error) ||
        !mexd_param_linear(src, nc, experts, width, TRUE, &moe->cls_w[r], &moe->cls_b[r],
                           error)) {
      mexd_moe_clear(moe);
      return FALSE;
    }
  }
  return TRUE;
}

void mexd_moe_clear(MexdMoe *moe)
{
  for (int r = 0; r < MEXD_MAX_EXPERTS; r++) {
    g_clear_pointer(&moe->router[r], mexd_var_unref);
    g_clear_pointer(&moe->cls_w[r], mexd_var_unref);
    g_clear_pointer(&moe->cls_b[r], mexd_var_unref);
  }
}

V *mexd_moe_gates(MexdMoe *moe, MexdTape *t, V *P, GError **error)
{
  const int E = moe->experts;
  MexdTensor *X = mexd_var_value(P);
  if (X->ndim != 2 || X->shape[1] != moe->width || X->shape[0] < 1)
    return mexd_fail_null(error, MEXD_ERROR_SHAPE, "Dyn-MoE: the rows must be [R ≥ 1, %d]",
                          moe->width);
  /* the E routers as one GEMM ([R,W]·[2E,W]ᵀ), a softmax over each pair */
  g_autoptr(V) routers = mexd_ag_concat(t, moe->router, E, 0, error);
  g_autoptr(V) lg = routers ? mexd_ag_linear(t, P, routers, NULL, error) : NULL;
  g_autoptr(V) lg3 = lg ? mexd_ag_reshape(t, lg, 3, (int64_t[]){X->shape[0], E, 2}, error) : NULL;
  return lg3 ? mexd_ag_softmax(t, lg3, error) : NULL;
}

void mexd_moe_head_clear(MexdMoeHead *out)
{
  g_clear_pointer(&out->rows, mexd_var_unref);
  g_clear_pointer(&out->cent, mexd_var_unref);
  g_clear_pointer(&out->c, mexd_var_unref);
  g_clear_pointer(&out->z, mexd_var_unref);
  for (int r = 0; r < MEXD_MAX_EXPERTS; r++)
    g_clear_pointer(&out->u[r], mexd_var_unref);
}

/* Expert r's block (*block, when asked for) and centroid [1, W]. */
static gboolean expert_block(MexdTape *t, V *P, V *gates, const MexdMoeBlock *b, gboolean gated,
                             V **block, V **cent, GError **error)
{
  MexdTensor *X = mexd_var_value(P);
  const int64_t W = X->shape[1];
  if (b->zero_row) {
    MexdTensor *z = mexd_tensor_new_zeros(X->backend, MEXD_DTYPE_F32, 2, (int64_t[]){1, W}, error);
    if (!z)
      return FALSE;
    g_autoptr(V) zv = mexd_var_take(z, FALSE);
    if (block)
      *block = mexd_var_ref(zv);
    *cent = g_steal_pointer(&zv); /* the mean of the zero row */
    return TRUE;
  }
  if (!b->idx || mexd_tensor_numel(b->idx) != b->n || b->n < 1)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "Dyn-MoE: a block needs its indices");
  g_autoptr(V) psel = mexd_ag_gather_rows(t, P, b->idx, error);
  if (!psel)
    return FALSE;
  if (!gated) {
    g_autoptr(V) mean = mexd_ag_mean_rows(t, psel, error);
    *cent = mean ? mexd_ag_reshape(t, mean, 2, (int64_t[]){1, W}, error) : NULL;
    if (*cent && block)
      *block = g_steal_pointer(&psel);
    return *cent != NULL;
  }
  g_autoptr(V) g = mexd_ag_gather_rows(t, gates, b->idx, error); /* [k, 1] */
  g_autoptr(V) gp = g ? mexd_ag_mul(t, psel, g, error) : NULL;
  g_clear_pointer(&psel, mexd_var_unref);
  g_autoptr(V) num = gp ? mexd_ag_mean_rows(t, gp, error) : NULL;
  g_autoptr(V) num2 = num ? mexd_ag_reshape(t, num, 2, (int64_t[]){1, W}, error) : NULL;
  g_autoptr(V) den = num2 ? mexd_ag_mean_rows(t, g, error) : NULL;
  *cent = den ? mexd_ag_binary(t, num2, den, MEXD_BINARY_DIV, error) : NULL;
  if (*cent && block)
    *block = g_steal_pointer(&gp);
  return *cent != NULL;
}

gboolean mexd_moe_head(MexdMoe *moe, MexdTape *t, V *P, V *probs, const MexdMoeBlock *blk,
                       gboolean gated, gboolean rows, MexdMoeHead *out, GError **error)
{
  memset(out, 0, sizeof *out);
  const int E = moe->experts;
  MexdTensor *X = mexd_var_value(P), *Pr = mexd_var_value(probs);
  if (X->ndim != 2 || X->shape[1] != moe->width || Pr->ndim != 3 || Pr->shape[1] != E ||
      Pr->shape[2] != 2 || Pr->shape[0] > X->shape[0])
    return mexd_fail(error, MEXD_ERROR_SHAPE,
                     "Dyn-MoE: rows [N, %d] and their gates [R ≤ N, %d, 2] expected", moe->width,
                     E);
  const int64_t R = Pr->shape[0];
  /* the gates p1 of router r as a column [R, 1]: row 2r + 1 of probs as [2E, R] */
  g_autoptr(V) pg = mexd_ag_permute(t, probs, (int[]){1, 2, 0}, error);
  g_autoptr(V) pg2 = pg ? mexd_ag_reshape(t, pg, 2, (int64_t[]){2 * E, R}, error) : NULL;
  if (!pg2)
    return FALSE;
  V *blocks[MEXD_MAX_EXPERTS] = {NULL}, *cent[MEXD_MAX_EXPERTS] = {NULL},
    *cv[MEXD_MAX_EXPERTS] = {NULL};
  gboolean ok = TRUE;
  for (int r = 0; ok && r < E; r++) {
    g_autoptr(V) grow = mexd_ag_rows(t, pg2, 2 * r + 1, 1, error);
    g_autoptr(V) gcol = grow ? mexd_ag_reshape(t, grow, 2, (int64_t[]){R, 1}, error) : NULL;
    ok = gcol && expert_block(t, P, gcol, &blk[r], gated, rows ? &blocks[r] : NULL, &cent[r],
                              error);
    out->u[r] = ok ? mexd_ag_linear(t, cent[r], moe->cls_w[r], moe->cls_b[r], error) : NULL;
    g_autoptr(V) su = out->u[r] ? mexd_ag_softmax(t, out->u[r], error) : NULL;
    g_autoptr(V) su2 = su ? mexd_ag_reshape(t, su, 2, (int64_t[]){E, 1}, error) : NULL;
    cv[r] = su2 ? mexd_ag_rows(t, su2, r, 1, error) : NULL;
    ok = cv[r] != NULL;
  }
  if (ok && (out->cent = mexd_ag_concat(t, cent, E, 0, error)) &&
      (out->c = mexd_ag_concat(t, cv, E, 0, error)) &&
      (out->z = mexd_ag_matmul(t, out->c, out->cent, TRUE, FALSE, 1.0f, error)) && rows)
    out->rows = mexd_ag_concat(t, blocks, E, 0, error);
  ok = out->z && (!rows || out->rows);
  for (int r = 0; r < E; r++) {
    g_clear_pointer(&blocks[r], mexd_var_unref);
    g_clear_pointer(&cent[r], mexd_var_unref);
    g_clear_pointer(&cv[r], mexd_var_unref);
  }
  if (!ok)
    mexd_moe_head_clear(out);
  return ok;
}
