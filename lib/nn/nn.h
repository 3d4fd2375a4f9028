/* nn.h: the building blocks of the MExD model (MEXD.md §1–§3) over the op library.
 *
 * Each module is a struct holding its weight tensors (on the model's backend) and a forward
 * function that records ops on that backend; nothing loops over instances on the host.  Weights
 * come from a model file through a MexdWeights loader, which checks each tensor's shape and
 * remembers what was taken, so that a file with tensors nobody asked for is refused too.
 *
 * A MexdTrace, when given, receives copies of named intermediates ("a1.layer1"...): the tests
 * compare them with the PyTorch reference's (tests/reference/); forward passes without a trace
 * cost nothing for it. */
#pragma once

#include "io/safetensors.h"
#include "ops/ops.h"

G_BEGIN_DECLS

/* ---- weights ---- */
typedef struct {
  MexdSafetensors *st; /* borrowed */
  MexdBackend *be;     /* borrowed */
  GHashTable *taken;   /* names loaded so far */
} MexdWeights;

void mexd_weights_init(MexdWeights *w, MexdSafetensors *st, MexdBackend *be);
void mexd_weights_clear(MexdWeights *w);
/* Tensor `name` as f32 on the backend, which must have exactly the given shape; the error names
 * the file, the tensor, its shape and the expected one (and says when it is missing). */
MexdTensor *mexd_weights_get(MexdWeights *w, const char *name, int ndim, const int64_t *shape,
                             GError **error);
/* The same, but the host copy (g_free it); for weights that are rearranged before upload. */
float *mexd_weights_get_host(MexdWeights *w, const char *name, int ndim, const int64_t *shape,
                             GError **error);
/* FALSE naming the first tensor of the file that no module took. */
gboolean mexd_weights_check_all_taken(MexdWeights *w, GError **error);

/* ---- trace ---- */
typedef struct _MexdTrace {
  GHashTable *tensors; /* name -> MexdTensor (copies) */
} MexdTrace;

MexdTrace *mexd_trace_new(void);
void mexd_trace_free(MexdTrace *t);
/* Records a copy of `x` under prefix.name (does nothing when trace is NULL). */
gboolean mexd_trace_put(MexdTrace *trace, const char *prefix, const char *name, MexdTensor *x,
                        GError **error);
MexdTensor *mexd_trace_get(MexdTrace *trace, const char *name);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MexdTrace, mexd_trace_free)

/* ---- linear ---- */
/* y [M,out] = x [M,in] · wᵀ + b; w [out,in] (PyTorch's layout), b [out] or NULL. */
gboolean mexd_linear(MexdTensor *y, MexdTensor *x, MexdTensor *w, MexdTensor *b, GError **error);
/* A new tensor [M,out] holding mexd_linear(x). */
MexdTensor *mexd_linear_new(MexdTensor *x, MexdTensor *w, MexdTensor *b, GError **error);

/* ---- Nyström attention (MEXD.md §1) ---- */
typedef struct {
  int width, heads, landmarks, iterations, taps;
} MexdAttnShape;

/* Nyström attention and TransMIL are defined once for inference and training: nn/module.h. */

/* Dyn-MoE's routing as the paper has it (MEXD.md §2), for inference and training alike: for each
 * router r the rows whose gate p1 beats p0 (mexd_route_keep), ranked by gate (ties: the lower row
 * first; mexd_topk), the first floor(n·α_r) of them (all when that is 0); when no row is kept, the
 * single largest gate.  probs [R, E, 2] (each router's softmax per row).  n_sel[r] and sel[r] (host,
 * g_free) for each router; ti[r] (optional) the indices on the device.  On failure what was made
 * is still handed over. */
gboolean mexd_moe_route_paper(MexdTensor *probs, int E, const double *alpha, int64_t *n_sel,
                              int32_t **sel, MexdTensor **ti, GError **error);
/* The square side S = ceil(sqrt(N)) of a bag of N (exact for any N of int64). */
int64_t mexd_square_side(int64_t n);

G_END_DECLS

G_BEGIN_DECLS

/* ---- Diff-C denoiser and samplers (MEXD.md §3) ---- */
typedef struct _MexdDiffcNet MexdDiffcNet; /* the denoiser's definition (nn/module.h) */
typedef struct {
  int classes, width, T, z_dim; /* C, F, T, W */
  double *abar;                 /* ᾱ_t, t = 0..T−1, in double */
  double *alpha;                /* α_t */
  MexdDiffcNet *net;            /* the denoiser, as training defines it: the op path runs it */
  /* the fused samplers' views of the same weights (the net's values; cl1 split into its f_t
   * columns [F,C] and its ρ columns [F,C]) */
  MexdTensor *w1f, *w1r, *b1;
  MexdTensor *w2, *b2, *w3, *b3;
  MexdTensor *emb[3]; /* [T+1, F] */
  MexdTensor *ln_w[3], *ln_b[3];
  MexdTensor *wz, *bz, *lnz_w, *lnz_b;
  MexdTensor *wo, *bo;
  MexdTensor *packed; /* vulkan: every denoiser weight in one buffer for shaders/diffc_step.comp */
} MexdDiffc;

/* Per-bag conditioning: Z [1, W] and ρ [C] themselves, and for the fused samplers the guidance
 * embedding LN_z(W_z·Z + b_z) [F] and cl1's ρ term plus bias (W1ρ·ρ + b1) [F], computed once per
 * bag. */
typedef struct {
  MexdTensor *z, *rho, *hz, *b1eff;
  MexdTensor *packed; /* vulkan: b1eff, hz, ρ in one buffer [2F + C] */
} MexdDiffcCond;

gboolean mexd_diffc_load(MexdDiffc *dc, MexdWeights *w, int classes, int z_dim, int width, int T,
                         double beta_start, double beta_end, GError **error);
void mexd_diffc_clear(MexdDiffc *dc);
/* z [W] (or [1,W]) and rho [C] (or [1,C]) on the backend. */
gboolean mexd_diffc_condition(MexdDiffc *dc, MexdDiffcCond *cond, MexdTensor *z, MexdTensor *rho,
                              GError **error);
void mexd_diffc_cond_clear(MexdDiffcCond *cond);
/* eps [S,C] = ε_θ(Z, f, ρ, t) for f [S,C], 0 ≤ t ≤ T. */
gboolean mexd_diffc_eps(MexdDiffc *dc, MexdDiffcCond *cond, MexdTensor *eps, MexdTensor *f, int t,
                        GError **error);
/* One sampler step from index t with the denoiser's output: f0 [S,C] receives f̂0; f is updated
 * in place to the next state.  CARD (t_prev < 0): to t−1 with noise z [S,C] (t ≥ 1).  DDIM: from
 * t to t_prev with σ from eta; z may be NULL when eta = 0. */
gboolean mexd_diffc_step(MexdDiffc *dc, MexdDiffcCond *cond, MexdTensor *f, MexdTensor *f0,
                         MexdTensor *z, int t, int t_prev, double eta, GError **error);
/* A whole chain batch: CARD over all T indices (steps ≤ 0) or DDIM with `steps` ≥ 2 indices; S
 * chains; noise from Philox under `seed` (lib/nn/philox.h).  f0 [S,C] receives the final f̂0. */
gboolean mexd_diffc_sample(MexdDiffc *dc, MexdDiffcCond *cond, int steps, double eta, int chains,
                           uint64_t seed, MexdTensor *f0, GError **error);
/* DDIM's index τ_i for i = 0..K−1 (τ_0 = 0, τ_{K−1} = T−1). */
int mexd_ddim_index(int i, int K, int T);
/* Read-out over chains: q = softmax(−(f̂0 − 1)²) per chain; probs = mean over chains, spread =
 * population standard deviation over chains (both [C]). */
void mexd_diffc_readout(const float *f0, int chains, int classes, float *probs, float *spread);

G_END_DECLS

G_BEGIN_DECLS
/* The model's Diff-C, or NULL when it has none (tests drive the samplers with it). */
typedef struct _MexdModel MexdModel;
MexdDiffc *mexd_model_get_diffc(MexdModel *m);
G_END_DECLS
