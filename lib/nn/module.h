/* module.h: models written once, for inference and training (issue 18).
 *
 * A model's definition (its parameters by name and shape, and its forward pass over MexdVar) is
 * written once in lib/nn and serves both: training runs it on a MexdTape (nn/autograd.h) and
 * backpropagates; inference runs the same function with tape = NULL, which records nothing and
 * costs the forward ops alone.  A definition asks for each parameter through a MexdParamSource:
 * training's source creates it with its initial values (lib/train/params.c,
 * MEXD_PARAMS_SOURCE), inference's takes it from the model file (mexd_param_source_weights,
 * which checks its shape and remembers it as taken).  Fused kernels that an inference path runs
 * instead (the samplers of diffc.c) are specialisations of a definition, tested against it.
 *
 * Done so far: Diff-C's denoiser (MexdDiffcNet, diffc.c), ABMIL (abmil.c) and Dyn-MoE's routing
 * (mexd_moe_route_paper, model.c).  TransMIL and the rest of Dyn-MoE (blocks, centroids, expert
 * classifiers) still have their inference forward in layers.c/model.c and their training forward
 * in lib/train/models.c (the next step of issue 18, item 1). */
#pragma once

#include "nn/autograd.h"
#include "nn/nn.h"

G_BEGIN_DECLS

/* How a new parameter starts (training; a model file gives inference its values). */
typedef enum {
  MEXD_INIT_UNIFORM,   /* U(−a, a) */
  MEXD_INIT_UNIFORM01, /* U(0, 1) */
  MEXD_INIT_NORMAL,    /* N(0, a²) */
  MEXD_INIT_CONST,     /* every element a */
} MexdInit;

/* Where a definition's parameters come from: `get` returns a new reference to the Var of the
 * parameter `name` of that shape (created with `init`/`a`, or taken from a file), or NULL with
 * the error set. */
typedef struct {
  MexdVar *(*get)(gpointer ctx, const char *name, int ndim, const int64_t *shape, MexdInit init,
                  double a, GError **error);
  gpointer ctx;
} MexdParamSource;

/* The parameter `name` from `src` (a new reference). */
MexdVar *mexd_param(const MexdParamSource *src, const char *name, int ndim, const int64_t *shape,
                    MexdInit init, double a, GError **error);
/* A Linear's weight "<prefix>.weight" [out,in] and, with `bias`, "<prefix>.bias" [out]
 * (PyTorch's default start: U(±1/√in) for both); new references in *w and *b (*b NULL without
 * bias). */
gboolean mexd_param_linear(const MexdParamSource *src, const char *prefix, int64_t out, int64_t in,
                           gboolean bias, MexdVar **w, MexdVar **b, GError **error);
/* Inference's source: each parameter is the model file's tensor of that name, which must have
 * that shape (mexd_weights_get); its Var takes no gradient.  `w` must outlive the source. */
MexdParamSource mexd_param_source_weights(MexdWeights *w);

/* ---- Diff-C's denoiser ε_θ (MEXD.md §3) ----
 * x = [f_t, ρ] [S, 2C]:  h1 = CL1(x, t) ⊙ LN_z(W_z·Z + b_z);  h2 = CL2(h1, t);  h3 = CL3(h2, t);
 * ε̂ = W_o·h3 + b_o, where CLi(x, t) = softplus(LN_i(emb_i[t] ⊙ (W_i·x + b_i))).  Parameters
 * diffc.cl{1,2,3}.{weight,bias,embed}, diffc.norm{1,2,3}.*, diffc.z.*, diffc.norm_z.*,
 * diffc.out.*. */
typedef struct _MexdDiffcNet {
  int classes, width, z_dim, T; /* C, F, W, T */
  MexdVar *w[3], *b[3], *emb[3], *ln_w[3], *ln_b[3];
  MexdVar *wz, *bz, *lnz_w, *lnz_b, *wo, *bo;
} MexdDiffcNet;

gboolean mexd_diffc_net_init(MexdDiffcNet *net, const MexdParamSource *src, int classes,
                             int z_dim, int width, int T, GError **error);
void mexd_diffc_net_clear(MexdDiffcNet *net);
/* ε̂ [S, C] for x [S, 2C], Z [1, W] and the step index of each row, ts (i32 [S], data), or with
 * ts NULL every row at `step` (a sampler's step: nothing is uploaded). */
MexdVar *mexd_diffc_net_eps(MexdDiffcNet *net, MexdTape *t, MexdVar *x, MexdVar *z,
                            MexdTensor *ts, int step, GError **error);
/* ---- ABMIL (Ilse et al. 2018, gated attention; CLAM's and the baseline of docs/RESULTS.md) ----
 * h = dropout(ReLU(W_fc·x + b)); A = softmax_N(w_cᵀ(tanh(W_a·h) ⊙ σ(W_b·h)) + c); M = A·h;
 * logits = W_cls·M + b.  Parameters abmil.fc, abmil.attn_a, abmil.attn_b, abmil.attn_c,
 * abmil.classifier (weight, bias each). */
typedef struct {
  int in_dim, width, attn_dim, classes;
  float dropout; /* 0.25 after fc in training (a tape that is not training: none) */
  MexdVar *fc_w, *fc_b, *a_w, *a_b, *b_w, *b_b, *c_w, *c_b, *cls_w, *cls_b;
} MexdAbmil;

gboolean mexd_abmil_init(MexdAbmil *ab, const MexdParamSource *src, int in_dim, int width,
                         int attn_dim, int classes, GError **error);
void mexd_abmil_clear(MexdAbmil *ab);
/* x [N, D] → logits [1, C] (new); attention (optional) [1, N] (new). */
gboolean mexd_abmil_forward(MexdAbmil *ab, MexdTape *t, MexdVar *x, MexdVar **logits,
                            MexdVar **attention, GError **error);

/* The noise schedule: β_t linear from beta_start to beta_end over t = 0..T−1 (beta_start alone
 * when T = 1), α_t = 1 − β_t, ᾱ_t = Π α (double); either array may be NULL. */
void mexd_diffc_schedule(int T, double beta_start, double beta_end, double *alpha, double *abar);

G_END_DECLS
