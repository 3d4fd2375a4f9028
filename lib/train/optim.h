/* optim.h: the optimizers of the training layer, on host float32 parameter arrays.
 *
 * The trainer owns the parameters (float arrays it updates the model from) and the gradients (float
 * arrays it reads back from the device); an optimizer is given pointers to both, one "parameter
 * group" per named array, and updates the parameters in place at each mexd_optim_step().
 *
 * Semantics are PyTorch's, operation by operation in float32 (state in float32, scalars computed in
 * double and rounded to float32 where PyTorch does), so a run matches PyTorch to a few float32
 * ulps (tests/test-optim.c against tests/reference/gen_optim.py):
 *   Adam   torch.optim.Adam: weight_decay is the coupled L2 term g += wd·p; with
 *          decoupled_weight_decay it is torch.optim.AdamW (p *= 1 − lr·wd before the moments).
 *   RAdam  torch.optim.RAdam: rho_inf = 2/(1−β2) − 1, rho_t = rho_inf − 2t·β2^t/(1−β2^t); when
 *          rho_t > 5 the rectified adaptive step, otherwise the plain bias-corrected momentum step
 *          (with β2 = 0.999: steps 1–5 un-rectified, 6 on rectified).  decoupled_weight_decay is
 *          torch 2.x's RAdam(decoupled_weight_decay=True): p *= 1 − lr·wd after the step count is
 *          incremented and before the moments; otherwise weight_decay is coupled (g += wd·p).
 *          exp_avg is updated as 1.13's mul_(β1).add_(g, 1−β1) (torch 2.x's lerp_ can differ in
 *          the last bit).
 *   Lookahead  timm.optim.Lookahead around any inner optimizer: after every k inner steps
 *          slow += α·(fast − slow); fast = slow.  MEXD_LOOKAHEAD_TIMM (what the MExD authors ran
 *          through timm's 'lookahead_radam'): timm creates the slow weights lazily at the first
 *          sync as a copy of the fast ones, so the first sync (after step k) changes nothing.
 *          MEXD_LOOKAHEAD_INIT_AT_CREATION: the paper's variant, slow weights copied from the
 *          parameters when they are registered.
 *
 * MEXD.md §4: stages 0/1 use Lookahead(RAdam(lr 2e-4, β 0.9/0.999, eps 1e-8, decoupled wd 1e-5),
 * α 0.5, k 6); stage 2 Adam(lr 1e-3) after mexd_clip_grad_norm(…, 1.0); mexd_optim_new_for_stage().
 *
 * The optimizer state is a list of named arrays (mexd_optim_state_foreach) for checkpoints;
 * restoring it into a new optimizer with the same parameters continues bit-identically:
 *   optim.step                       I64 scalar  the inner optimizer's steps taken (torch's "step")
 *   optim.<param>.exp_avg            F32 [n]     first moment
 *   optim.<param>.exp_avg_sq         F32 [n]     second moment
 *   optim.lookahead.step             I64 scalar  Lookahead only: timm's lookahead_step
 *   optim.<param>.lookahead_slow     F32 [n]     Lookahead only: the slow weights (with
 *                                                MEXD_LOOKAHEAD_TIMM meaningful from the first sync
 *                                                on; before it they are the registered values)
 * The prefix "optim." is reserved for these in a checkpoint.  Hyperparameters (lr, betas, …) are
 * not state: the trainer's configuration recreates them. */
#pragma once

#include "io/safetensors.h"

#include <glib.h>
#include <stdint.h>

G_BEGIN_DECLS

typedef struct _MexdOptim MexdOptim;

typedef enum {
  MEXD_OPTIM_ADAM,
  MEXD_OPTIM_RADAM,
  MEXD_OPTIM_LOOKAHEAD,
} MexdOptimKind;

typedef enum {
  MEXD_LOOKAHEAD_TIMM,             /* slow weights = the fast ones at the first sync (timm) */
  MEXD_LOOKAHEAD_INIT_AT_CREATION, /* slow weights = the parameters when registered (paper) */
} MexdLookaheadInit;

/* Hyperparameters of Adam and RAdam.  mexd_adam_config_init() gives PyTorch's defaults:
 * lr 1e-3, betas 0.9/0.999, eps 1e-8, weight_decay 0, coupled. */
typedef struct {
  double lr;
  double beta1, beta2;
  double eps;
  double weight_decay;             /* the default for every parameter (see add_param_wd) */
  gboolean decoupled_weight_decay; /* p *= 1 − lr·wd (AdamW / RAdamW) instead of g += wd·p */
} MexdAdamConfig;

void mexd_adam_config_init(MexdAdamConfig *cfg);

/* New optimizers without parameters.  MEXD_ERROR_INVALID_ARGUMENT for a value torch rejects
 * (lr, eps or weight_decay negative or not finite, a beta outside [0, 1)). */
MexdOptim *mexd_optim_adam_new(const MexdAdamConfig *cfg, GError **error);
MexdOptim *mexd_optim_radam_new(const MexdAdamConfig *cfg, GError **error);
/* Wraps `inner` (ownership passes to the wrapper, also on failure, when it is freed).  The
 * parameters `inner` already has get slow weights now; add more through the wrapper.
 * MEXD_ERROR_INVALID_ARGUMENT when alpha is outside [0, 1], k < 1, or inner is a Lookahead. */
MexdOptim *mexd_optim_lookahead_new(MexdOptim *inner, double alpha, int k, MexdLookaheadInit init,
                                    GError **error);
/* MEXD.md §4's optimizer for stage 0, 1 (Lookahead-RAdam, timm init) or 2 (Adam lr 1e-3; the
 * trainer clips gradients to norm 1.0 itself). */
MexdOptim *mexd_optim_new_for_stage(int stage, GError **error);
void mexd_optim_free(MexdOptim *opt);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MexdOptim, mexd_optim_free)

MexdOptimKind mexd_optim_kind(const MexdOptim *opt);

/* Registers parameter group `name` (copied): n floats at `param`, updated in place, whose gradient
 * is read from `grad` at each step.  Both arrays must stay valid (and not overlap) while the
 * optimizer lives; the trainer writes the gradients into `grad` before each step.  State starts at
 * zero as in torch.  _wd gives this group its own weight decay (e.g. 0 for biases and norms, as
 * timm's optimizer factory does for 1-d parameters).  Fails (MEXD_ERROR_INVALID_ARGUMENT) for a
 * NULL or empty name, one already registered, NULL arrays, n < 1, a negative weight decay, or once
 * the optimizer has stepped (all groups share one step count). */
gboolean mexd_optim_add_param(MexdOptim *opt, const char *name, float *param, const float *grad,
                              int64_t n, GError **error);
gboolean mexd_optim_add_param_wd(MexdOptim *opt, const char *name, float *param,
                                 const float *grad, int64_t n, double weight_decay,
                                 GError **error);
int mexd_optim_n_params(const MexdOptim *opt);

/* One step of every parameter group from the current gradients. */
void mexd_optim_step(MexdOptim *opt);
/* The number of steps taken (optim.step; for a Lookahead, its inner optimizer's). */
int64_t mexd_optim_get_step(const MexdOptim *opt);
/* The learning rate (of the inner optimizer for a Lookahead), e.g. for a schedule. */
double mexd_optim_get_lr(const MexdOptim *opt);
void mexd_optim_set_lr(MexdOptim *opt, double lr);

/* ---- state for checkpoints (names in the comment at the top) ---- */

/* Called once per state array: F32 arrays of n floats, or I64 scalars (n = 1, write them as 0-d
 * tensors).  `data` points into the optimizer and is valid during the call.  Return FALSE with
 * the error set to stop. */
typedef gboolean (*MexdOptimStateFunc)(const char *name, MexdStDType dtype, const void *data,
                                       int64_t n, gpointer user_data, GError **error);
/* Calls `fn` for every state array, in a fixed order; FALSE when `fn` failed. */
gboolean mexd_optim_state_foreach(MexdOptim *opt, MexdOptimStateFunc fn, gpointer user_data,
                                  GError **error);
/* Sets state array `name` from `data` (n values of `dtype`; need not be aligned).  Errors:
 * MEXD_ERROR_NOT_FOUND for a name this optimizer does not have, MEXD_ERROR_DTYPE for a dtype
 * other than the name's, MEXD_ERROR_SHAPE for a wrong count, MEXD_ERROR_INVALID_ARGUMENT for a
 * negative step count.  Nothing changes on failure. */
gboolean mexd_optim_state_set(MexdOptim *opt, const char *name, MexdStDType dtype,
                              const void *data, int64_t n, GError **error);
/* Adds every state array to `w` (steps as 0-d I64, arrays as 1-d F32). */
gboolean mexd_optim_state_save(MexdOptim *opt, MexdSafetensorsWriter *w, GError **error);
/* Restores every state array from `st`.  All of them must be there with the right dtype and
 * element count (any shape), and `st` must hold no other "optim." tensor (which would mean an
 * optimizer of another kind or with other parameters wrote it): MEXD_ERROR_NOT_FOUND,
 * MEXD_ERROR_DTYPE, MEXD_ERROR_SHAPE or MEXD_ERROR_FORMAT naming the file and the tensor.
 * Everything is checked before anything changes. */
gboolean mexd_optim_state_load(MexdOptim *opt, MexdSafetensors *st, GError **error);

/* torch.nn.utils.clip_grad_norm_ (L2): the total norm over the `count` arrays grads[i] of n[i]
 * floats (accumulated in double), and when the clip coefficient max_norm / (norm + 1e-6) — in
 * float32 as torch computes it — is below 1, every gradient is multiplied by it (so a norm equal
 * to max_norm is still scaled by a hair, as in torch).  Returns the norm.  A non-finite norm is
 * returned with the gradients untouched (torch would turn them into NaN); the trainer should skip
 * that step. */
double mexd_clip_grad_norm(float *const *grads, const int64_t *n, int count, double max_norm);

G_END_DECLS
