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
 * (constant over a bag's chains and steps) is computed once per bag and folded into the bias.
 *
 * The denoiser is defined once (MexdDiffcNet below, module.h), for training and for the op
 * path here; the fused samplers are its specialisations, tested against it (tests/test-mexd.c).
 * mexd_diffc_eps / mexd_diffc_step run as ops on cpu (gemm, mul, layernorm, softplus, lincomb: the
 * reference); a whole cpu sampling runs fused (sample_cpu_fused below).  vulkan runs a whole step — denoiser and update, all chains — as one dispatch of shaders/diffc_step.comp over a
 * packed copy of the weights, so a 1000-step chain is 1000 dispatches in one command buffer
 * instead of ~16,000 (MEXD_DIFFC_UNFUSED=1 forces the op path there too, for comparison). */
#include "nn/module.h"
#include "nn/nn.h"

#include "backend/cpu.h"
#include "backend/vulkan.h"
#include "core/error.h"
#include "nn/philox.h"

#include <math.h>
#include <string.h>

/* ---- the denoiser's definition (module.h) ---- */

void mexd_diffc_schedule(int T, double beta_start, double beta_end, double *alpha, double *abar)
{
  double prod = 1.0;
  for (int t = 0; t < T; t++) {
    double beta = T > 1 ? beta_start + (beta_end - beta_start) * t / (T - 1) : beta_start;
    prod *= 1.0 - beta;
    if (alpha)
      alpha[t] = 1.0 - beta;
    if (abar)
      abar[t] = prod;
  }
}

gboolean mexd_diffc_net_init(MexdDiffcNet *net, const MexdParamSource *src, int classes,
                             int z_dim, int width, int T, GError **error)
{
  memset(net, 0, sizeof *net);
  net->classes = classes;
  net->width = width;
  net->z_dim = z_dim;
  net->T = T;
  int64_t F = width;
  for (int i = 0; i < 3; i++) {
    g_autofree char *nl = g_strdup_printf("diffc.cl%d", i + 1);
    g_autofree char *ne = g_strdup_printf("diffc.cl%d.embed", i + 1);
    g_autofree char *nw = g_strdup_printf("diffc.norm%d.weight", i + 1);
    g_autofree char *nb = g_strdup_printf("diffc.norm%d.bias", i + 1);
    if (!mexd_param_linear(src, nl, F, i == 0 ? 2 * (int64_t)classes : F, TRUE, &net->w[i],
                           &net->b[i], error) ||
        !(net->emb[i] =
              mexd_param(src, ne, 2, (int64_t[]){T + 1, F}, MEXD_INIT_UNIFORM01, 0, error)) ||
        !(net->ln_w[i] = mexd_param(src, nw, 1, &F, MEXD_INIT_CONST, 1.0, error)) ||
        !(net->ln_b[i] = mexd_param(src, nb, 1, &F, MEXD_INIT_CONST, 0.0, error)))
      goto fail;
  }
  if (mexd_param_linear(src, "diffc.z", F, z_dim, TRUE, &net->wz, &net->bz, error) &&
      (net->lnz_w = mexd_param(src, "diffc.norm_z.weight", 1, &F, MEXD_INIT_CONST, 1.0, error)) &&
      (net->lnz_b = mexd_param(src, "diffc.norm_z.bias", 1, &F, MEXD_INIT_CONST, 0.0, error)) &&
      mexd_param_linear(src, "diffc.out", classes, F, TRUE, &net->wo, &net->bo, error))
    return TRUE;
fail:
  mexd_diffc_net_clear(net);
  return FALSE;
}

void mexd_diffc_net_clear(MexdDiffcNet *net)
{
  MexdVar **all[] = {&net->w[0],  &net->w[1],    &net->w[2],    &net->b[0],    &net->b[1],
                     &net->b[2],  &net->emb[0],  &net->emb[1],  &net->emb[2],  &net->ln_w[0],
                     &net->ln_w[1], &net->ln_w[2], &net->ln_b[0], &net->ln_b[1], &net->ln_b[2],
                     &net->wz,    &net->bz,      &net->lnz_w,   &net->lnz_b,   &net->wo,
                     &net->bo};
  for (size_t i = 0; i < G_N_ELEMENTS(all); i++)
    g_clear_pointer(all[i], mexd_var_unref);
}

/* CLi(x, t) = softplus(LN_i(emb_i[t] ⊙ (W_i·x + b_i))); every row at `step` when ts is NULL
 * (emb_i's row broadcast: a view, nothing written to the device) */
static MexdVar *cl(MexdDiffcNet *net, int i, MexdTape *t, MexdVar *x, MexdTensor *ts, int step,
                   GError **error)
{
  g_autoptr(MexdVar) e = ts ? mexd_ag_gather_rows(t, net->emb[i], ts, error)
                            : mexd_ag_rows(t, net->emb[i], step, 1, error);
  g_autoptr(MexdVar) l = e ? mexd_ag_linear(t, x, net->w[i], net->b[i], error) : NULL;
  g_autoptr(MexdVar) h = l ? mexd_ag_mul(t, l, e, error) : NULL;
  g_autoptr(MexdVar) n =
      h ? mexd_ag_layernorm(t, h, net->ln_w[i], net->ln_b[i], 1e-5f, error) : NULL;
  return n ? mexd_ag_unary(t, n, MEXD_UNARY_SOFTPLUS, error) : NULL;
}

MexdVar *mexd_diffc_net_eps(MexdDiffcNet *net, MexdTape *t, MexdVar *x, MexdVar *z,
                            MexdTensor *ts, int step, GError **error)
{
  g_autoptr(MexdVar) h1 = cl(net, 0, t, x, ts, step, error);
  g_autoptr(MexdVar) hz0 = h1 ? mexd_ag_linear(t, z, net->wz, net->bz, error) : NULL;
  g_autoptr(MexdVar) hz =
      hz0 ? mexd_ag_layernorm(t, hz0, net->lnz_w, net->lnz_b, 1e-5f, error) : NULL;
  g_autoptr(MexdVar) h1z = hz ? mexd_ag_mul(t, h1, hz, error) : NULL;
  g_autoptr(MexdVar) h2 = h1z ? cl(net, 1, t, h1z, ts, step, error) : NULL;
  g_autoptr(MexdVar) h3 = h2 ? cl(net, 2, t, h2, ts, step, error) : NULL;
  return h3 ? mexd_ag_linear(t, h3, net->wo, net->bo, error) : NULL;
}

/* ---- inference ---- */

/* The fused shader's limits: F and C fit its shared arrays on this device. */
static gboolean fused_dims(MexdBackend *be, int F, int C, uint32_t *fmax, uint32_t *cmax)
{
  const MexdVkLimits *lim = mexd_vk_limits(be);
  *fmax = (uint32_t)((F + 63) / 64 * 64);
  *cmax = (uint32_t)((C + 3) / 4 * 4);
  uint64_t shared = 4ull * (2ull * *fmax + 256 + 2ull * *cmax);
  return shared <= lim->max_shared_memory && lim->max_group_invocations >= 256;
}

/* Packs the denoiser for shaders/diffc_step.comp (its off_* functions give the layout). */
static gboolean diffc_pack(MexdDiffc *dc, MexdBackend *be, const float *w1, GError **error)
{
  int64_t C = dc->classes, F = dc->width, T = dc->T;
  uint32_t fmax, cmax;
  if (g_getenv("MEXD_DIFFC_UNFUSED") || !fused_dims(be, (int)F, (int)C, &fmax, &cmax))
    return TRUE; /* the op path */
  int64_t total = C * F + 2 * (F * F + F) + 3 * (T + 1) * F + 6 * F + C * F + C;
  g_autofree float *pk = g_try_new(float, total);
  if (!pk)
    return mexd_fail(error, MEXD_ERROR_NO_MEMORY, "diffc: no memory to pack the denoiser");
  float *q = pk;
  for (int64_t c = 0; c < C; c++) /* W1f transposed: [c][o] */
    for (int64_t o = 0; o < F; o++)
      *q++ = w1[o * 2 * C + c];
  MexdTensor *wb[2][2] = {{dc->w2, dc->b2}, {dc->w3, dc->b3}};
  for (int l = 0; l < 2; l++) {
    g_autofree float *wm = mexd_tensor_dup_f32(wb[l][0], error);
    g_autofree float *bm = wm ? mexd_tensor_dup_f32(wb[l][1], error) : NULL;
    if (!bm)
      return FALSE;
    for (int64_t i = 0; i < F; i++) /* [in][out] */
      for (int64_t o = 0; o < F; o++)
        *q++ = wm[o * F + i];
    memcpy(q, bm, sizeof(float) * F);
    q += F;
  }
  MexdTensor *rest[] = {dc->emb[0],  dc->emb[1],  dc->emb[2],  dc->ln_w[0],
                        dc->ln_b[0], dc->ln_w[1], dc->ln_b[1], dc->ln_w[2],
                        dc->ln_b[2], dc->wo,      dc->bo};
  for (size_t i = 0; i < G_N_ELEMENTS(rest); i++) {
    int64_t n = mexd_tensor_numel(rest[i]);
    if (!mexd_tensor_read_f32(rest[i], q, n, error))
      return FALSE;
    q += n;
  }
  g_assert(q - pk == total);
  dc->packed = mexd_tensor_new_from_f32(be, MEXD_DTYPE_F32, 1, &total, pk, error);
  return dc->packed != NULL;
}

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
  mexd_diffc_schedule(T, beta_start, beta_end, dc->alpha, dc->abar);
  g_autofree float *w1 = NULL; /* cl1's weight [F, 2C], host */
  dc->net = g_new0(MexdDiffcNet, 1);
  MexdParamSource src = mexd_param_source_weights(w);
  if (!mexd_diffc_net_init(dc->net, &src, classes, z_dim, width, T, error))
    goto fail;
  MexdDiffcNet *n = dc->net;
  if (!(w1 = mexd_tensor_dup_f32(mexd_var_value(n->w[0]), error)))
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
  /* the fused samplers' names for the net's tensors */
  struct {
    MexdTensor **dst;
    MexdVar *src;
  } views[] = {{&dc->b1, n->b[0]},       {&dc->w2, n->w[1]},       {&dc->b2, n->b[1]},
               {&dc->w3, n->w[2]},       {&dc->b3, n->b[2]},       {&dc->emb[0], n->emb[0]},
               {&dc->emb[1], n->emb[1]}, {&dc->emb[2], n->emb[2]}, {&dc->ln_w[0], n->ln_w[0]},
               {&dc->ln_b[0], n->ln_b[0]}, {&dc->ln_w[1], n->ln_w[1]}, {&dc->ln_b[1], n->ln_b[1]},
               {&dc->ln_w[2], n->ln_w[2]}, {&dc->ln_b[2], n->ln_b[2]}, {&dc->wz, n->wz},
               {&dc->bz, n->bz},         {&dc->lnz_w, n->lnz_w},   {&dc->lnz_b, n->lnz_b},
               {&dc->wo, n->wo},         {&dc->bo, n->bo}};
  for (size_t i = 0; i < G_N_ELEMENTS(views); i++)
    *views[i].dst = mexd_tensor_ref(mexd_var_value(views[i].src));
  if (mexd_backend_kind(w->be) == MEXD_BACKEND_VULKAN && !diffc_pack(dc, w->be, w1, error))
    goto fail;
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
                        &dc->wo,      &dc->bo,      &dc->packed};
  for (size_t i = 0; i < G_N_ELEMENTS(all); i++)
    g_clear_pointer(all[i], mexd_tensor_unref);
  g_clear_pointer(&dc->alpha, g_free);
  g_clear_pointer(&dc->abar, g_free);
  if (dc->net) {
    mexd_diffc_net_clear(dc->net);
    g_clear_pointer(&dc->net, g_free);
  }
}

void mexd_diffc_cond_clear(MexdDiffcCond *cond)
{
  g_clear_pointer(&cond->z, mexd_tensor_unref);
  g_clear_pointer(&cond->rho, mexd_tensor_unref);
  g_clear_pointer(&cond->hz, mexd_tensor_unref);
  g_clear_pointer(&cond->b1eff, mexd_tensor_unref);
  g_clear_pointer(&cond->packed, mexd_tensor_unref);
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
  if (!(cond->rho = mexd_tensor_reshape(rho, 1, (int64_t[]){dc->classes}, error)) ||
      !(cond->z = mexd_tensor_ref(z2)))
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
  if (dc->packed) {
    MexdTensor *parts[3] = {cond->b1eff, cond->hz, cond->rho};
    cond->packed = mexd_tensor_new_1d(dc->packed->backend, MEXD_DTYPE_F32,
                                      2 * (int64_t)dc->width + dc->classes, error);
    if (!cond->packed || !mexd_concat(cond->packed, parts, 3, 0, error))
      goto fail;
  }
  return TRUE;
fail:
  mexd_diffc_cond_clear(cond);
  return FALSE;
}

/* ---- the fused step (vulkan) ---- */

MEXD_VK_PUSH_STRUCT(StepPush, MEXD_PUSH_DIFFC_STEP);

enum { MODE_F0 = 1u, MODE_UPDATE = 2u, MODE_EPS = 4u };

/* One dispatch over `state` [(2 + noise rows)·S, C]: f = rows 0..S−1, f̂0 = rows S..2S−1, noise
 * row r = rows (2 + r)·S… */
static gboolean fused_step(MexdDiffc *dc, MexdDiffcCond *cond, MexdTensor *state, int S, int t,
                           uint32_t mode, uint32_t noise_row, const double c[3], const double a[5],
                           GError **error)
{
  uint32_t fmax, cmax;
  fused_dims(dc->packed->backend, dc->width, dc->classes, &fmax, &cmax);
  StepPush pc = {.F = (uint32_t)dc->width,
                 .C = (uint32_t)dc->classes,
                 .S = (uint32_t)S,
                 .T = (uint32_t)dc->T,
                 .t = (uint32_t)t,
                 .mode = mode,
                 .noise_row = noise_row};
  for (int i = 0; i < 3; i++)
    pc.c[i] = (float)c[i];
  for (int i = 0; i < 5; i++)
    pc.a[i] = a ? (float)a[i] : 0.0f;
  MexdVkDispatch d = {
      .shader = MEXD_SHADER_DIFFC_STEP,
      .variant = MEXD_DTYPE_F32,
      .spec = {fmax, cmax},
      .n_spec = 2,
      .bind = {dc->packed, cond->packed, state},
      .n_bind = 3,
      .push = &pc,
      .push_size = sizeof pc,
      .groups = {(uint32_t)S, 1, 1},
  };
  return mexd_vk_dispatch(dc->packed->backend, &d, error);
}

/* f̂0 = c0·f + c1·ρ + c2·ε̂ at index t */
static void f0_coefs(MexdDiffc *dc, int t, double c[3])
{
  double A = dc->abar[t], sA = sqrt(A);
  c[0] = 1.0 / sA;
  c[1] = -(1.0 - sA) / sA;
  c[2] = -sqrt(1.0 - A) / sA;
}

/* The update's coefficients (a0·f̂0 + a1·ρ + a2·ε̂ + a3·z + a4·f) of a CARD step from t
 * (t_prev < 0) or a DDIM step from t to t_prev. */
static void update_coefs(MexdDiffc *dc, int t, int t_prev, double eta, double a[5])
{
  double A = dc->abar[t];
  if (t_prev < 0) {
    double al = dc->alpha[t], Ap = dc->abar[t - 1];
    a[0] = (1 - al) * sqrt(Ap) / (1 - A);
    a[1] = 1 + (sqrt(A) - 1) * (sqrt(al) + sqrt(Ap)) / (1 - A);
    a[2] = 0;
    a[3] = sqrt((1 - Ap) / (1 - A) * (1 - al));
    a[4] = (1 - Ap) * sqrt(al) / (1 - A);
  } else {
    double B = dc->abar[t_prev], sB = sqrt(B);
    double sigma = eta * sqrt((1 - B) / (1 - A)) * sqrt(1 - A / B);
    double ce = 1 - B - sigma * sigma;
    a[0] = sB;
    a[1] = 1 - sB;
    a[2] = sqrt(ce > 0 ? ce : 0);
    a[3] = sigma;
    a[4] = 0;
  }
}

/* A state buffer [(2 + rows)·S, C] holding f (and, when given, z as noise row 0). */
static MexdTensor *state_new(MexdDiffc *dc, MexdTensor *f, MexdTensor *z, int S, GError **error)
{
  int64_t C = dc->classes, rows = z ? 1 : 0;
  g_autoptr(MexdTensor) st =
      mexd_tensor_new_zeros(f->backend, MEXD_DTYPE_F32, 2, (int64_t[]){(2 + rows) * S, C}, error);
  g_autoptr(MexdTensor) fv = st ? mexd_tensor_rows(st, 0, S, error) : NULL;
  g_autoptr(MexdTensor) zv = fv && z ? mexd_tensor_rows(st, 2 * S, S, error) : NULL;
  if (!fv || !mexd_copy(fv, f, error) || (z && (!zv || !mexd_copy(zv, z, error))))
    return NULL;
  return g_steal_pointer(&st);
}

static gboolean state_get(MexdTensor *st, int64_t row0, int S, MexdTensor *dst, GError **error)
{
  g_autoptr(MexdTensor) v = mexd_tensor_rows(st, row0, S, error);
  return v && mexd_copy(dst, v, error);
}

gboolean mexd_diffc_eps(MexdDiffc *dc, MexdDiffcCond *cond, MexdTensor *eps, MexdTensor *f, int t,
                        GError **error)
{
  if (t < 0 || t > dc->T)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "diffc: step index %d outside 0..%d", t,
                     dc->T);
  if (f->ndim != 2 || f->shape[1] != dc->classes)
    return mexd_fail(error, MEXD_ERROR_SHAPE, "diffc: the state must be [S,%d]", dc->classes);
  if (dc->packed) {
    int S = (int)f->shape[0];
    double c[3] = {0, 0, 0};
    g_autoptr(MexdTensor) st = state_new(dc, f, NULL, S, error);
    return st && fused_step(dc, cond, st, S, t, MODE_EPS, 0, c, NULL, error) &&
           state_get(st, S, S, eps, error);
  }
  /* the op path: the definition itself, x = [f, ρ] with ρ on every row, every row at index t */
  MexdBackend *be = f->backend;
  int64_t S = f->shape[0], C = dc->classes;
  g_autoptr(MexdTensor) zi = mexd_tensor_new_zeros(be, MEXD_DTYPE_I32, 1, &S, error);
  g_autoptr(MexdTensor) r2 =
      zi ? mexd_tensor_reshape(cond->rho, 2, (int64_t[]){1, C}, error) : NULL;
  g_autoptr(MexdTensor) rr = r2 ? mexd_tensor_new_2d(be, MEXD_DTYPE_F32, S, C, error) : NULL;
  g_autoptr(MexdTensor) x = rr ? mexd_tensor_new_2d(be, MEXD_DTYPE_F32, S, 2 * C, error) : NULL;
  MexdTensor *parts[2] = {f, rr};
  if (!x || !mexd_gather_rows(rr, r2, zi, error) || !mexd_concat(x, parts, 2, 1, error))
    return FALSE;
  g_autoptr(MexdVar) xv = mexd_var_new(x, FALSE);
  g_autoptr(MexdVar) zv = mexd_var_new(cond->z, FALSE);
  g_autoptr(MexdVar) e = mexd_diffc_net_eps(dc->net, NULL, xv, zv, NULL, t, error);
  return e && mexd_copy(eps, mexd_var_value(e), error);
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
  if (dc->packed) {
    int S = (int)f->shape[0];
    double c[3], a[5];
    f0_coefs(dc, t, c);
    update_coefs(dc, t, t_prev, eta, a);
    if (a[3] != 0 && !z)
      return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "diffc: this step needs noise");
    g_autoptr(MexdTensor) st = state_new(dc, f, a[3] != 0 ? z : NULL, S, error);
    return st && fused_step(dc, cond, st, S, t, MODE_F0 | MODE_UPDATE, 0, c, a, error) &&
           state_get(st, 0, S, f, error) && state_get(st, S, S, f0, error);
  }
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

/* ---- the fused sampler (cpu) ----
 *
 * The op path allocates ~20 tensors and runs ~17 ops per step, each a pass over [S,F] with its
 * own thread-pool round; at 1000 steps × 32 chains that overhead was most of the time.  Here a
 * sampling allocates its buffers once and runs a step as: per layer one cblas_sgemm over all
 * chains (the bias preloaded into C, beta 1: the very call mexd_linear makes) and one pass per
 * chain row over the thread pool doing ⊙emb[t], LayerNorm, softplus (and ⊙hz) with the same
 * f32/double arithmetic as the ops, then the f̂0 and update combinations in lincomb's order.  So
 * it gives the op path's numbers (tests/test-mexd.c compares the two over whole samplings); the
 * op path stays the reference, and MEXD_DIFFC_UNFUSED=1 selects it here too. */
#ifdef MEXD_HAVE_CBLAS
#include <cblas.h>

typedef struct {
  int S, C, F;
  const float *w1f, *b1eff, *hz, *rho, *w2, *b2, *w3, *b3, *wo, *bo;
  const float *emb[3], *lnw[3], *lnb[3];
  const float *w2t, *w3t;      /* grouped path: w2, w3 as panels of 32 columns [in][32], or NULL */
  float *f, *f0, *eps, *h, *g; /* [S,C] ×3, [S,F] ×2 */
  /* the current row pass */
  int layer, t;
  float *x;             /* the rows it works on */
  const float *mul_hz;  /* layer 0: ⊙hz after the softplus */
  float *next;          /* the next layer's output, rows preloaded with `next_bias` */
  const float *next_bias;
  int64_t next_len;
} CpuSampler;

/* Rows [r0, r1) of the current layer: x ← softplus(LN(x ⊙ emb[t])) (⊙ hz), and the next layer's
 * output rows set to its bias (the ops' order and precision: mexd_mul in f32, layernorm_range's
 * double statistics, mexd_softplus_f32, mexd_mul). */
static void sampler_rows(int64_t r0, int64_t r1, void *ctx)
{
  const CpuSampler *sp = ctx;
  int64_t F = sp->F;
  const float *e = sp->emb[sp->layer] + (int64_t)sp->t * F;
  for (int64_t r = r0; r < r1; r++) {
    mexd_cpu_diffc_row(sp->x + r * F, e, sp->lnw[sp->layer], sp->lnb[sp->layer], sp->mul_hz, F);
    memcpy(sp->next + r * sp->next_len, sp->next_bias, sizeof(float) * (size_t)sp->next_len);
  }
}

/* y[S,N] (preloaded with the bias) += x[S,K]·w[N,K]ᵀ */
static void sampler_gemm(const CpuSampler *sp, const float *x, const float *w, float *y, int N,
                         int K)
{
  mexd_cpu_sgemm(FALSE, TRUE, 1, sp->S, N, K, 1.0f, x, K, 0, w, K, 0, 1.0f, y, N, 0);
}

static void sampler_pass(CpuSampler *sp, int layer, float *x, float *next, const float *next_bias,
                         int64_t next_len)
{
  sp->layer = layer;
  sp->x = x;
  sp->mul_hz = layer == 0 ? sp->hz : NULL;
  sp->next = next;
  sp->next_bias = next_bias;
  sp->next_len = next_len;
  /* a row is ~50 ns of work per element (the softplus): a few rows per piece */
  mexd_parallel_for(sp->S, 2, sampler_rows, sp);
}

/* ---- the grouped path's products (no BLAS: a group runs on one thread of the pool) ----
 * y[R, N] += x[R, K]·wt with wt the weight [N, K] laid out once per sampling as panels of 32
 * output columns, each [K][32] (so a block reads its weights front to back), each output a
 * sum over k in order (FMA on AVX-512), so a row's result depends on nothing but its own inputs:
 * not on the group it is in, nor on the thread.  Blocks of 8 rows × 32 columns keep 16
 * accumulators in registers; fewer rows take the same code with R = 4, 2, 1. */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define SAMPLER_AVX512 1

__attribute__((target("avx512f"), always_inline)) static inline void
rows_block_avx512(const float *x, int R, int64_t K, const float *wt, int64_t N, float *y)
{
  for (int64_t n0 = 0; n0 < N; n0 += 32) {
    __m512 acc[8][2];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
      acc[r][0] = _mm512_loadu_ps(y + r * N + n0);
      acc[r][1] = _mm512_loadu_ps(y + r * N + n0 + 16);
    }
    const float *w = wt + n0 * K; /* the panel of columns n0 .. n0+31: [K][32] */
    for (int64_t k = 0; k < K; k++, w += 32) {
      __m512 w0 = _mm512_loadu_ps(w), w1 = _mm512_loadu_ps(w + 16);
#pragma GCC unroll 8
      for (int r = 0; r < R; r++) {
        __m512 xv = _mm512_set1_ps(x[r * K + k]);
        acc[r][0] = _mm512_fmadd_ps(xv, w0, acc[r][0]);
        acc[r][1] = _mm512_fmadd_ps(xv, w1, acc[r][1]);
      }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
      _mm512_storeu_ps(y + r * N + n0, acc[r][0]);
      _mm512_storeu_ps(y + r * N + n0 + 16, acc[r][1]);
    }
  }
}

__attribute__((target("avx512f"))) static void rows_gemm_avx512(const float *x, int64_t R,
                                                                int64_t K, const float *wt,
                                                                int64_t N, float *y)
{
  int64_t r = 0;
  for (; r + 8 <= R; r += 8)
    rows_block_avx512(x + r * K, 8, K, wt, N, y + r * N);
  if (r + 4 <= R) {
    rows_block_avx512(x + r * K, 4, K, wt, N, y + r * N);
    r += 4;
  }
  if (r + 2 <= R) {
    rows_block_avx512(x + r * K, 2, K, wt, N, y + r * N);
    r += 2;
  }
  if (r < R)
    rows_block_avx512(x + r * K, 1, K, wt, N, y + r * N);
}
#endif

/* y[S, N] += x[S, K]·w[N, K]ᵀ for the thin products (K = C or N = C): plain sums over k in order */
static void rows_gemm_small(const float *x, int64_t S, int64_t K, const float *w, int64_t N,
                            float *y)
{
  for (int64_t s = 0; s < S; s++)
    for (int64_t n = 0; n < N; n++) {
      float acc = 0.0f;
      for (int64_t k = 0; k < K; k++)
        acc += x[s * K + k] * w[n * K + k];
      y[s * N + n] += acc;
    }
}

/* eps ← the denoiser at index t for the chains in f */
static void sampler_eps(CpuSampler *sp, int t)
{
  int C = sp->C, F = sp->F;
  sp->t = t;
  for (int s = 0; s < sp->S; s++)
    memcpy(sp->h + (int64_t)s * F, sp->b1eff, sizeof(float) * F);
#ifdef SAMPLER_AVX512
  if (sp->w2t) {
    rows_gemm_small(sp->f, sp->S, C, sp->w1f, F, sp->h);
    sampler_pass(sp, 0, sp->h, sp->g, sp->b2, F);
    rows_gemm_avx512(sp->h, sp->S, F, sp->w2t, F, sp->g);
    sampler_pass(sp, 1, sp->g, sp->h, sp->b3, F);
    rows_gemm_avx512(sp->g, sp->S, F, sp->w3t, F, sp->h);
    sampler_pass(sp, 2, sp->h, sp->eps, sp->bo, C);
    rows_gemm_small(sp->h, sp->S, F, sp->wo, C, sp->eps);
    return;
  }
#endif
  sampler_gemm(sp, sp->f, sp->w1f, sp->h, F, C);
  sampler_pass(sp, 0, sp->h, sp->g, sp->b2, F);
  sampler_gemm(sp, sp->h, sp->w2, sp->g, F, F);
  sampler_pass(sp, 1, sp->g, sp->h, sp->b3, F);
  sampler_gemm(sp, sp->g, sp->w3, sp->h, F, F);
  sampler_pass(sp, 2, sp->h, sp->eps, sp->bo, C);
  sampler_gemm(sp, sp->h, sp->wo, sp->eps, C, F);
}

/* f̂0 = ((c0·f + c1·ρ) + c2·ε̂), as mexd_lincomb forms it */
static void sampler_f0(CpuSampler *sp, const double c[3])
{
  float c0 = (float)c[0], c1 = (float)c[1], c2 = (float)c[2];
  for (int s = 0; s < sp->S; s++)
    for (int k = 0; k < sp->C; k++) {
      int64_t i = (int64_t)s * sp->C + k;
      float acc = c0 * sp->f[i];
      acc += c1 * sp->rho[k];
      acc += c2 * sp->eps[i];
      sp->f0[i] = acc;
    }
}

/* The update after f̂0, in the op path's lincomb order: CARD ((a0·f̂0 + a1·ρ) + a3·z) + a4·f;
 * DDIM ((a0·f̂0 + a1·ρ) + a2·ε̂), then a3·z + f when a3 ≠ 0. */
static void sampler_update(CpuSampler *sp, const double a[5], gboolean card, const float *z)
{
  float a0 = (float)a[0], a1 = (float)a[1], a2 = (float)a[2], a3 = (float)a[3], a4 = (float)a[4];
  for (int s = 0; s < sp->S; s++)
    for (int k = 0; k < sp->C; k++) {
      int64_t i = (int64_t)s * sp->C + k;
      float acc = a0 * sp->f0[i];
      acc += a1 * sp->rho[k];
      if (card) {
        acc += a3 * z[i];
        acc += a4 * sp->f[i];
      } else {
        acc += a2 * sp->eps[i];
        if (a[3] > 0) {
          float u = a3 * z[i];
          u += 1.0f * acc;
          acc = u;
        }
      }
      sp->f[i] = acc;
    }
}

/* One group of chains sampled start to end: chains [c0, c0 + sp->S) of the noise rows. */
typedef struct {
  MexdDiffc *dc;
  const CpuSampler *proto; /* weights, conditioning; S = the group size */
  int chains, steps;
  double eta;
  const float *noise;
  gboolean need_step_noise;
  int n_idx;
  float *f0_all; /* [chains, C] */
  float *bufs;   /* per group: 3·S·C + 2·S·F floats */
} SampleJob;

static void sample_group(const SampleJob *job, int group)
{
  MexdDiffc *dc = job->dc;
  int C = dc->classes, F = dc->width, T = dc->T;
  gboolean card = job->steps <= 0;
  CpuSampler sp = *job->proto;
  int c0 = group * sp.S;
  sp.S = MIN(sp.S, job->chains - c0);
  int64_t per = (int64_t)job->chains * C, gper = (int64_t)sp.S * C;
  int64_t stride = 3 * (int64_t)job->proto->S * C + 2 * (int64_t)job->proto->S * F;
  float *buf = job->bufs + (int64_t)group * stride;
  sp.f = buf;
  sp.f0 = job->f0_all + (int64_t)c0 * C;
  sp.eps = buf + gper;
  sp.h = buf + 2 * gper;
  sp.g = sp.h + (int64_t)sp.S * F;
  const float *noise = job->noise + (int64_t)c0 * C;
#define NOISE(idx) (noise + (int64_t)(job->need_step_noise ? (idx) : 0) * per)
  {
    const float *z0 = NOISE(job->n_idx - 1);
    for (int64_t i = 0; i < gper; i++) {
      float acc = 1.0f * sp.rho[i % C];
      acc += 1.0f * z0[i];
      sp.f[i] = acc;
    }
  }
  double c[3], a[5];
  if (card) {
    for (int t = T - 1; t >= 1; t--) {
      f0_coefs(dc, t, c);
      update_coefs(dc, t, -1, 0, a);
      sampler_eps(&sp, t);
      sampler_f0(&sp, c);
      sampler_update(&sp, a, TRUE, NOISE(t));
    }
  } else {
    for (int i = job->steps - 1; i >= 1; i--) {
      int t = mexd_ddim_index(i, job->steps, T), tp = mexd_ddim_index(i - 1, job->steps, T);
      f0_coefs(dc, t, c);
      update_coefs(dc, t, tp, job->eta, a);
      sampler_eps(&sp, t);
      sampler_f0(&sp, c);
      sampler_update(&sp, a, FALSE, NOISE(i));
    }
  }
#undef NOISE
  f0_coefs(dc, 0, c);
  sampler_eps(&sp, 0);
  sampler_f0(&sp, c);
}

static void sample_groups(int64_t g0, int64_t g1, void *ctx)
{
  for (int64_t g = g0; g < g1; g++)
    sample_group(ctx, (int)g);
}

/* The whole sampling on the cpu backend (f32); noise rows as mexd_diffc_sample lays them out.
 *
 * Chains never interact, so on a CPU with AVX-512 they are sampled in groups of SAMPLER_GROUP
 * chains, each group from the first step to the last on one thread of the pool: one hand-off per
 * sampling instead of seven per step, and products against the two F×F weights transposed once
 * (rows_gemm_avx512) instead of BLAS calls that pack a 1 MiB weight again for every 32-row
 * product.  Measured on this project's 2-core machine, 1000 steps × 32 chains at F = 512
 * (bench/cpu-vs-torch.sh): 601 ms on the BLAS path with its steps split over both threads; see
 * docs/PERFORMANCE.md for the grouped figure.  The group size is fixed, and each output is a sum
 * in order, so the bits change neither with MEXD_THREADS nor with the number of chains; they
 * differ from the op path's BLAS products by rounding (tests/test-mexd.c bounds it).  Elsewhere
 * (no AVX-512, F not a multiple of 32, MEXD_DIFFC_BLAS=1) one group holds every chain and
 * makes the op path's BLAS calls. */
#define SAMPLER_GROUP 8

static gboolean sample_cpu_fused(MexdDiffc *dc, MexdDiffcCond *cond, int steps, double eta,
                                 int chains, const float *noise, gboolean need_step_noise,
                                 int n_idx, MexdTensor *f0_out, GError **error)
{
  int C = dc->classes, F = dc->width;
  int64_t per = (int64_t)chains * C;
  CpuSampler sp = {.C = C, .F = F};
  sp.w1f = mexd_tensor_host_data(dc->w1f);
  sp.b1eff = mexd_tensor_host_data(cond->b1eff);
  sp.hz = mexd_tensor_host_data(cond->hz);
  sp.rho = mexd_tensor_host_data(cond->rho);
  sp.w2 = mexd_tensor_host_data(dc->w2);
  sp.b2 = mexd_tensor_host_data(dc->b2);
  sp.w3 = mexd_tensor_host_data(dc->w3);
  sp.b3 = mexd_tensor_host_data(dc->b3);
  sp.wo = mexd_tensor_host_data(dc->wo);
  sp.bo = mexd_tensor_host_data(dc->bo);
  for (int l = 0; l < 3; l++) {
    sp.emb[l] = mexd_tensor_host_data(dc->emb[l]);
    sp.lnw[l] = mexd_tensor_host_data(dc->ln_w[l]);
    sp.lnb[l] = mexd_tensor_host_data(dc->ln_b[l]);
  }
  gboolean grouped = FALSE;
  g_autofree float *w2t = NULL, *w3t = NULL;
#ifdef SAMPLER_AVX512
  grouped = F % 32 == 0 && __builtin_cpu_supports("avx512f") && !g_getenv("MEXD_DIFFC_BLAS");
  if (grouped) {
    w2t = g_try_new(float, (int64_t)F * F);
    w3t = g_try_new(float, (int64_t)F * F);
    if (!w2t || !w3t)
      return mexd_fail(error, MEXD_ERROR_NO_MEMORY, "diffc: no memory for the denoiser");
    /* panels of 32 output columns, each [in][32], read front to back by rows_block_avx512 */
    for (int64_t o = 0; o < F; o++)
      for (int64_t i = 0; i < F; i++) {
        int64_t at = (o / 32) * 32 * F + i * 32 + o % 32;
        w2t[at] = sp.w2[o * F + i];
        w3t[at] = sp.w3[o * F + i];
      }
    sp.w2t = w2t;
    sp.w3t = w3t;
  }
#endif
  sp.S = grouped ? SAMPLER_GROUP : chains;
  int groups = (chains + sp.S - 1) / sp.S;
  int64_t stride = 3 * (int64_t)sp.S * C + 2 * (int64_t)sp.S * F;
  g_autofree float *bufs = g_try_new(float, groups * stride);
  g_autofree float *f0 = g_try_new(float, per);
  if (!bufs || !f0)
    return mexd_fail(error, MEXD_ERROR_NO_MEMORY, "diffc: no memory for %d chains", chains);
  SampleJob job = {dc, &sp, chains, steps, eta, noise, need_step_noise, n_idx, f0, bufs};
  if (grouped) {
    mexd_parallel_for(groups, 1, sample_groups, &job);
  } else {
    sample_group(&job, 0);
  }
  return mexd_tensor_write_f32(f0_out, f0, per, error);
}
#endif

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
#ifdef MEXD_HAVE_CBLAS
  if (mexd_backend_kind(be) == MEXD_BACKEND_CPU && f0->dtype == MEXD_DTYPE_F32 &&
      !g_getenv("MEXD_DIFFC_UNFUSED"))
    return sample_cpu_fused(dc, cond, steps, eta, chains, noise, need_step_noise, n_idx, f0, error);
#endif
  if (dc->packed) {
    /* one state buffer: f, f̂0, then the noise rows */
    g_autofree float *host = g_try_new0(float, (2 + rows) * per);
    if (!host)
      return mexd_fail(error, MEXD_ERROR_NO_MEMORY, "diffc: no memory for the noise");
    memcpy(host + 2 * per, noise, sizeof(float) * rows * per);
    g_autoptr(MexdTensor) st = mexd_tensor_new_from_f32(
        be, MEXD_DTYPE_F32, 2, (int64_t[]){(2 + rows) * chains, C}, host, error);
    int64_t zrow = need_step_noise ? n_idx - 1 : 0;
    g_autoptr(MexdTensor) fv = st ? mexd_tensor_rows(st, 0, chains, error) : NULL;
    g_autoptr(MexdTensor) zv = fv ? mexd_tensor_rows(st, (2 + zrow) * chains, chains, error) : NULL;
    if (!zv || !mexd_lincomb(fv, 1.0f, cond->rho, 1.0f, zv, 0, NULL, 0.0f, error))
      return FALSE;
    double c[3], a[5];
    if (card) {
      for (int t = T - 1; t >= 1; t--) {
        f0_coefs(dc, t, c);
        update_coefs(dc, t, -1, 0, a);
        if (!fused_step(dc, cond, st, chains, t, MODE_UPDATE, (uint32_t)t, c, a, error))
          return FALSE;
      }
    } else {
      for (int i = steps - 1; i >= 1; i--) {
        int t = mexd_ddim_index(i, steps, T), tp = mexd_ddim_index(i - 1, steps, T);
        f0_coefs(dc, t, c);
        update_coefs(dc, t, tp, eta, a);
        if (!fused_step(dc, cond, st, chains, t, MODE_UPDATE, need_step_noise ? (uint32_t)i : 0, c,
                        a, error))
          return FALSE;
      }
    }
    f0_coefs(dc, 0, c);
    return fused_step(dc, cond, st, chains, 0, MODE_F0, 0, c, NULL, error) &&
           state_get(st, chains, chains, f0, error);
  }
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
