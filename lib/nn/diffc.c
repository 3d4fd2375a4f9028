/* diffc.c: the Diff-C denoiser and its samplers (nn.h; MEXD.md §3).
 *
 * Decisions where MEXD.md is silent (the PyTorch reference in tests/reference/ makes the same):
 * - the schedule β_t, α_t, ᾱ_t and every per-step coefficient are computed in double on the host
 *   and rounded to f32 once; tensor arithmetic is f32 in these forms:
 *     f̂0 = c0·f + c1·ρ + c2·ε̂,  c0 = 1/√A, c1 = −(1−√A)/√A, c2 = −√(1−A)/√A;
 *     CARD: f ← γ0·f̂0 + γ2·ρ + σ·z + γ1·f;  DDIM: f ← √B·f̂0 + (1−√B)·ρ + √(1−B−σ²)·ε̂ (+ σ·z);
 * - DDIM indices τ_i = round-half-up(i·(T−1)/(K−1)), i = 0..K−1;
 * - noise: lib/nn/philox.h (the start noise has index T for CARD and K for DDIM; the step from
 *   index t (CARD) or from τ_i (DDIM, index i) uses t or i);
 * - read-out: q = softmax(−(f̂0 − 1)²) per chain; probabilities = mean of q over the chains, spread
 *   = population standard deviation of q over the chains.
 * cl1's weight [F, 2C] is split at load into its f_t columns and its ρ columns, so the ρ term
 * (constant over a bag's chains and steps) is computed once per bag and folded into the bias. */
#include "nn/nn.h"

#include "core/error.h"
#include "nn/philox.h"

#include <math.h>
#include <string.h>

gboolean mexd_diffc_load(MexdDiffc *dc, MexdWeights *w, int classes, int z_dim, int width, int T,
                         double beta_start, double beta_end, GError **error)
{
  memset(dc, 0, sizeof *dc);
  dc->classes = classes;
  dc->width = width;
  dc->T = T;
  dc->z_dim = z_dim;
  int64_t C = classes, F = width;
  dc->alpha = g_new(double, T);
  dc->abar = g_new(double, T);
  double prod = 1.0;
  for (int t = 0; t < T; t++) {
    double beta = T > 1 ? beta_start + (beta_end - beta_start) * t / (T - 1) : beta_start;
    dc->alpha[t] = 1.0 - beta;
    prod *= dc->alpha[t];
    dc->abar[t] = prod;
  }
  g_autofree float *w1 =
      mexd_weights_get_host(w, "diffc.cl1.weight", 2, (int64_t[]){F, 2 * C}, error);
  if (!w1)
    goto fail;
  {
    g_autofree float *wf = g_new(float, F *C);
    g_autofree float *wr = g_new(float, F *C);
    for (int64_t o = 0; o < F; o++)
      for (int64_t c = 0; c < C; c++) {
        wf[o * C + c] = w1[o * 2 * C + c];
        wr[o * C + c] = w1[o * 2 * C + C + c];
      }
    int64_t sh[2] = {F, C};
    if (!(dc->w1f = mexd_tensor_new_from_f32(w->be, MEXD_DTYPE_F32, 2, sh, wf, error)) ||
        !(dc->w1r = mexd_tensor_new_from_f32(w->be, MEXD_DTYPE_F32, 2, sh, wr, error)))
      goto fail;
  }
#define GET(field, name, nd, ...)                                                                  \
  if (!(dc->field = mexd_weights_get(w, name, nd, (int64_t[])__VA_ARGS__, error)))                 \
    goto fail;
  GET(b1, "diffc.cl1.bias", 1, {F});
  GET(w2, "diffc.cl2.weight", 2, {F, F});
  GET(b2, "diffc.cl2.bias", 1, {F});
  GET(w3, "diffc.cl3.weight", 2, {F, F});
  GET(b3, "diffc.cl3.bias", 1, {F});
  GET(emb[0], "diffc.cl1.embed", 2, {T + 1, F});
  GET(emb[1], "diffc.cl2.embed", 2, {T + 1, F});
  GET(emb[2], "diffc.cl3.embed", 2, {T + 1, F});
  GET(ln_w[0], "diffc.norm1.weight", 1, {F});
  GET(ln_b[0], "diffc.norm1.bias", 1, {F});
  GET(ln_w[1], "diffc.norm2.weight", 1, {F});
  GET(ln_b[1], "diffc.norm2.bias", 1, {F});
  GET(ln_w[2], "diffc.norm3.weight", 1, {F});
  GET(ln_b[2], "diffc.norm3.bias", 1, {F});
  GET(wz, "diffc.z.weight", 2, {F, z_dim});
  GET(bz, "diffc.z.bias", 1, {F});
  GET(lnz_w, "diffc.norm_z.weight", 1, {F});
  GET(lnz_b, "diffc.norm_z.bias", 1, {F});
  GET(wo, "diffc.out.weight", 2, {C, F});
  GET(bo, "diffc.out.bias", 1, {C});
#undef GET
  return TRUE;
fail:
  mexd_diffc_clear(dc);
  return FALSE;
}

void mexd_diffc_clear(MexdDiffc *dc)
{
  MexdTensor **all[] = {&dc->w1f,     &dc->w1r,     &dc->b1,      &dc->w2,      &dc->b2,
                        &dc->w3,      &dc->b3,      &dc->emb[0],  &dc->emb[1],  &dc->emb[2],
                        &dc->ln_w[0], &dc->ln_w[1], &dc->ln_w[2], &dc->ln_b[0], &dc->ln_b[1],
                        &dc->ln_b[2], &dc->wz,      &dc->bz,      &dc->lnz_w,   &dc->lnz_b,
                        &dc->wo,      &dc->bo};
  for (size_t i = 0; i < G_N_ELEMENTS(all); i++)
    g_clear_pointer(all[i], mexd_tensor_unref);
  g_clear_pointer(&dc->alpha, g_free);
  g_clear_pointer(&dc->abar, g_free);
}

void mexd_diffc_cond_clear(MexdDiffcCond *cond)
{
  g_clear_pointer(&cond->rho, mexd_tensor_unref);
  g_clear_pointer(&cond->hz, mexd_tensor_unref);
  g_clear_pointer(&cond->b1eff, mexd_tensor_unref);
}

gboolean mexd_diffc_condition(MexdDiffc *dc, MexdDiffcCond *cond, MexdTensor *z, MexdTensor *rho,
                              GError **error)
{
  memset(cond, 0, sizeof *cond);
  if (mexd_tensor_numel(z) != dc->z_dim || mexd_tensor_numel(rho) != dc->classes)
    return mexd_fail(error, MEXD_ERROR_SHAPE, "diffc: the condition must be Z [%d] and rho [%d]",
                     dc->z_dim, dc->classes);
  g_autoptr(MexdTensor) z2 = mexd_tensor_reshape(z, 2, (int64_t[]){1, dc->z_dim}, error);
  g_autoptr(MexdTensor) r2 =
      z2 ? mexd_tensor_reshape(rho, 2, (int64_t[]){1, dc->classes}, error) : NULL;
  if (!r2)
    return FALSE;
  if (!(cond->rho = mexd_tensor_reshape(rho, 1, (int64_t[]){dc->classes}, error)))
    goto fail;
  {
    g_autoptr(MexdTensor) hz = mexd_linear_new(z2, dc->wz, dc->bz, error);
    if (!hz || !mexd_layernorm(hz, hz, dc->lnz_w, dc->lnz_b, 1e-5f, error) ||
        !(cond->hz = mexd_tensor_reshape(hz, 1, (int64_t[]){dc->width}, error)))
      goto fail;
    g_autoptr(MexdTensor) b = mexd_linear_new(r2, dc->w1r, dc->b1, error);
    if (!b || !(cond->b1eff = mexd_tensor_reshape(b, 1, (int64_t[]){dc->width}, error)))
      goto fail;
  }
  return TRUE;
fail:
  mexd_diffc_cond_clear(cond);
  return FALSE;
}

/* h = softplus(LN(emb[t] ⊙ h)) in place */
static gboolean cl_tail(MexdDiffc *dc, int layer, MexdTensor *h, int t, GError **error)
{
  g_autoptr(MexdTensor) e = mexd_tensor_rows(dc->emb[layer], t, 1, error);
  return e && mexd_mul(h, h, e, error) &&
         mexd_layernorm(h, h, dc->ln_w[layer], dc->ln_b[layer], 1e-5f, error) &&
         mexd_softplus(h, h, error);
}

gboolean mexd_diffc_eps(MexdDiffc *dc, MexdDiffcCond *cond, MexdTensor *eps, MexdTensor *f, int t,
                        GError **error)
{
  if (t < 0 || t > dc->T)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "diffc: step index %d outside 0..%d", t,
                     dc->T);
  if (f->ndim != 2 || f->shape[1] != dc->classes)
    return mexd_fail(error, MEXD_ERROR_SHAPE, "diffc: the state must be [S,%d]", dc->classes);
  g_autoptr(MexdTensor) h1 = mexd_linear_new(f, dc->w1f, cond->b1eff, error);
  if (!h1 || !cl_tail(dc, 0, h1, t, error) || !mexd_mul(h1, h1, cond->hz, error))
    return FALSE;
  g_autoptr(MexdTensor) h2 = mexd_linear_new(h1, dc->w2, dc->b2, error);
  if (!h2 || !cl_tail(dc, 1, h2, t, error))
    return FALSE;
  g_autoptr(MexdTensor) h3 = mexd_linear_new(h2, dc->w3, dc->b3, error);
  if (!h3 || !cl_tail(dc, 2, h3, t, error))
    return FALSE;
  return mexd_linear(eps, h3, dc->wo, dc->bo, error);
}

static gboolean f0_from_eps(MexdDiffc *dc, MexdDiffcCond *cond, MexdTensor *f0, MexdTensor *f,
                            MexdTensor *eps, int t, GError **error)
{
  double A = dc->abar[t], sA = sqrt(A);
  return mexd_lincomb(f0, (float)(1.0 / sA), f, (float)(-(1.0 - sA) / sA), cond->rho,
                      (float)(-sqrt(1.0 - A) / sA), eps, 0.0f, error);
}

gboolean mexd_diffc_step(MexdDiffc *dc, MexdDiffcCond *cond, MexdTensor *f, MexdTensor *f0,
                         MexdTensor *z, int t, int t_prev, double eta, GError **error)
{
  if (t < 0 || t >= dc->T || (t_prev < 0 && t < 1) || t_prev >= t)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "diffc: bad step %d -> %d", t, t_prev);
  g_autoptr(MexdTensor) eps = mexd_tensor_new(f->backend, f->dtype, 2, f->shape, error);
  if (!eps || !mexd_diffc_eps(dc, cond, eps, f, t, error) ||
      !f0_from_eps(dc, cond, f0, f, eps, t, error))
    return FALSE;
  double A = dc->abar[t];
  if (t_prev < 0) { /* CARD ancestral step to t − 1 */
    double a = dc->alpha[t], Ap = dc->abar[t - 1];
    double g0 = (1 - a) * sqrt(Ap) / (1 - A);
    double g1 = (1 - Ap) * sqrt(a) / (1 - A);
    double g2 = 1 + (sqrt(A) - 1) * (sqrt(a) + sqrt(Ap)) / (1 - A);
    double sigma = sqrt((1 - Ap) / (1 - A) * (1 - a));
    if (!z)
      return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "diffc: the CARD step needs noise");
    return mexd_lincomb(f, (float)g0, f0, (float)g2, cond->rho, (float)sigma, z, (float)g1, error);
  }
  double B = dc->abar[t_prev], sB = sqrt(B);
  double sigma = eta * sqrt((1 - B) / (1 - A)) * sqrt(1 - A / B);
  double ce = 1 - B - sigma * sigma;
  if (!mexd_lincomb(f, (float)sB, f0, (float)(1 - sB), cond->rho, (float)sqrt(ce > 0 ? ce : 0), eps,
                    0.0f, error))
    return FALSE;
  if (sigma > 0) {
    if (!z)
      return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "diffc: DDIM with eta > 0 needs noise");
    return mexd_lincomb(f, (float)sigma, z, 0, NULL, 0, NULL, 1.0f, error);
  }
  return TRUE;
}

int mexd_ddim_index(int i, int K, int T)
{
  return (int)((2 * (int64_t)i * (T - 1) + (K - 1)) / (2 * (int64_t)(K - 1)));
}

gboolean mexd_diffc_sample(MexdDiffc *dc, MexdDiffcCond *cond, int steps, double eta, int chains,
                           uint64_t seed, MexdTensor *f0, GError **error)
{
  int C = dc->classes, T = dc->T;
  gboolean card = steps <= 0;
  if (!card && (steps < 2 || steps > T))
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "diffc: DDIM needs 2 to %d steps, not %d",
                     T, steps);
  if (chains < 1)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "diffc: chains must be at least 1");
  int n_idx = card ? T + 1 : steps + 1; /* noise indices 0..T (CARD) or 0..K (DDIM) */
  gboolean need_step_noise = card || eta > 0;
  MexdBackend *be = f0->backend;
  int64_t per = (int64_t)chains * C;
  int64_t rows = need_step_noise ? n_idx : 1;
  g_autofree float *noise = g_try_new(float, rows *per);
  if (!noise)
    return mexd_fail(error, MEXD_ERROR_NO_MEMORY, "diffc: no memory for the noise");
  /* row r holds noise index r; without step noise only the start noise (row 0 = index n_idx−1) */
  for (int64_t r = 0; r < rows; r++)
    mexd_philox_noise(seed, need_step_noise ? (uint32_t)r : (uint32_t)(n_idx - 1), (uint32_t)chains,
                      (uint32_t)C, noise + r * per);
  g_autoptr(MexdTensor) nz =
      mexd_tensor_new_from_f32(be, f0->dtype, 3, (int64_t[]){rows, chains, C}, noise, error);
  g_autoptr(MexdTensor) nz2 =
      nz ? mexd_tensor_reshape(nz, 2, (int64_t[]){rows * chains, C}, error) : NULL;
  g_autoptr(MexdTensor) f = nz2 ? mexd_tensor_new_2d(be, f0->dtype, chains, C, error) : NULL;
  if (!f)
    return FALSE;
#define NOISE(idx)                                                                                 \
  mexd_tensor_rows(nz2, (int64_t)(need_step_noise ? (idx) : 0) * chains, chains, error)
  {
    g_autoptr(MexdTensor) z0 = NOISE(n_idx - 1);
    if (!z0 || !mexd_lincomb(f, 1.0f, cond->rho, 1.0f, z0, 0, NULL, 0.0f, error))
      return FALSE;
  }
  if (card) {
    for (int t = T - 1; t >= 1; t--) {
      g_autoptr(MexdTensor) z = NOISE(t);
      if (!z || !mexd_diffc_step(dc, cond, f, f0, z, t, -1, 0, error))
        return FALSE;
    }
  } else {
    for (int i = steps - 1; i >= 1; i--) {
      g_autoptr(MexdTensor) z = eta > 0 ? NOISE(i) : NULL;
      if ((eta > 0 && !z) || !mexd_diffc_step(dc, cond, f, f0, z, mexd_ddim_index(i, steps, T),
                                              mexd_ddim_index(i - 1, steps, T), eta, error))
        return FALSE;
    }
  }
#undef NOISE
  g_autoptr(MexdTensor) eps = mexd_tensor_new(be, f0->dtype, 2, f->shape, error);
  return eps && mexd_diffc_eps(dc, cond, eps, f, 0, error) &&
         f0_from_eps(dc, cond, f0, f, eps, 0, error);
}

void mexd_diffc_readout(const float *f0, int chains, int classes, float *probs, float *spread)
{
  double *sum = g_new0(double, classes), *sum2 = g_new0(double, classes);
  float *q = g_new(float, classes);
  for (int s = 0; s < chains; s++) {
    const float *row = f0 + (int64_t)s * classes;
    float mx = -INFINITY;
    for (int c = 0; c < classes; c++) {
      float d = row[c] - 1.0f;
      q[c] = -(d * d);
      mx = fmaxf(mx, q[c]);
    }
    float tot = 0;
    for (int c = 0; c < classes; c++) {
      q[c] = expf(q[c] - mx);
      tot += q[c];
    }
    for (int c = 0; c < classes; c++) {
      double v = q[c] / tot;
      sum[c] += v;
      sum2[c] += v * v;
    }
  }
  for (int c = 0; c < classes; c++) {
    double m = sum[c] / chains, var = sum2[c] / chains - m * m;
    probs[c] = (float)m;
    spread[c] = (float)sqrt(var > 0 ? var : 0);
  }
  g_free(sum);
  g_free(sum2);
  g_free(q);
}
