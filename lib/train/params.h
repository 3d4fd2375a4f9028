/* params.h: the trainable parameters of a model during training.
 *
 * A parameter is a named array with three copies: `host` (float32, what the optimizer updates in
 * place and what checkpoints hold), its Var on the device (the value the forward pass reads) and
 * `grad` (float32 on the host, read back from the device after backward).  One step:
 *   mexd_params_zero_grad → forward + mexd_tape_backward → mexd_params_read_grads →
 *   mexd_optim_step (on host/grad) → mexd_params_upload.
 * A frozen parameter (mexd_params_freeze) has a Var without requires_grad, takes no gradient and
 * is not given to the optimizer.
 *
 * Initial values (docs/TRAINING.md): each tensor's draws are Philox4x32-10 (lib/nn/philox.h)
 * under key (seed) with counter (i / 4, h_lo, h_hi, MEXD_INIT_TAG), h = FNV-1a-64 of the name,
 * word i % 4 of the output: u = ((w >> 8) + 0.5)·2^-24; uniform U(lo, hi) = lo + (hi − lo)·u;
 * normal: Box–Muller in double from the words of counter (i / 2, …), z = √(−2 ln u0)·cos(2π u1)
 * for even i and ·sin for odd i.  So a tensor's values depend only on (seed, name, shape). */
#pragma once

#include "io/safetensors.h"
#include "nn/autograd.h"
#include "nn/module.h"
#include "train/optim.h"

#include <glib.h>

G_BEGIN_DECLS

#define MEXD_INIT_TAG 0x696e6974u /* "init" */

/* MexdInit: nn/module.h */

typedef struct {
  char *name;
  int ndim;
  int64_t shape[MEXD_MAX_DIMS];
  int64_t n;
  float *host;
  float *grad;
  MexdVar *var;
  gboolean frozen;
} MexdParam;

typedef struct _MexdParams MexdParams;

MexdParams *mexd_params_new(MexdBackend *be, uint64_t seed);
void mexd_params_free(MexdParams *ps);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MexdParams, mexd_params_free)

/* Adds a parameter initialised as above; returns its Var (borrowed: the set owns it).  A name
 * already there is an error. */
MexdVar *mexd_params_add(MexdParams *ps, const char *name, int ndim, const int64_t *shape,
                         MexdInit init, double a, GError **error);
/* PyTorch's default for a Linear's weight [out,in] and bias [out]: U(±1/√in) (bias may be
 * NULL-named: no bias). */
gboolean mexd_params_add_linear(MexdParams *ps, const char *prefix, int64_t out, int64_t in,
                                gboolean bias, MexdVar **w, MexdVar **b, GError **error);
MexdVar *mexd_params_get(MexdParams *ps, const char *name); /* borrowed, NULL when absent */
/* Training's source of a model definition's parameters (nn/module.h), as a pointer to a
 * temporary for a call's argument: each `get` adds the parameter to `ps` as mexd_params_add does
 * and returns a new reference to its Var. */
MexdVar *mexd_params_source_get(gpointer ps, const char *name, int ndim, const int64_t *shape,
                                MexdInit init, double a, GError **error);
#define MEXD_PARAMS_SOURCE(ps) (&(const MexdParamSource){mexd_params_source_get, (ps)})
MexdParam *mexd_params_find(MexdParams *ps, const char *name);
guint mexd_params_count(const MexdParams *ps);
MexdParam *mexd_params_index(MexdParams *ps, guint i);
int64_t mexd_params_numel(const MexdParams *ps, gboolean trainable_only);

/* Freezes (or unfreezes) every parameter whose name starts with `prefix`. */
void mexd_params_freeze(MexdParams *ps, const char *prefix, gboolean frozen);
/* Writes every host array to its Var. */
gboolean mexd_params_upload(MexdParams *ps, GError **error);
/* Drops the Vars' gradients. */
void mexd_params_zero_grad(MexdParams *ps);
/* Reads every trainable parameter's gradient into `grad` (zeros where none flowed). */
gboolean mexd_params_read_grads(MexdParams *ps, GError **error);
/* Registers every trainable parameter with the optimizer (in the set's order). */
gboolean mexd_params_register(MexdParams *ps, MexdOptim *opt, GError **error);
/* The global L2 norm of the gradients, clipped to max_norm (mexd_clip_grad_norm); returns it. */
double mexd_params_clip(MexdParams *ps, double max_norm);
/* Adds every parameter (F32, its shape) whose name starts with `prefix` ("" or NULL: all) to `w`. */
gboolean mexd_params_save(MexdParams *ps, MexdSafetensorsWriter *w, const char *prefix,
                          GError **error);
/* Sets every parameter whose name starts with `prefix` from the tensor of the same name in `st`
 * (which must be there with that number of elements; any float dtype), then uploads it. */
gboolean mexd_params_load(MexdParams *ps, MexdSafetensors *st, const char *prefix,
                          GError **error);
/* FALSE naming the first parameter whose host values are not all finite. */
gboolean mexd_params_check_finite(MexdParams *ps, GError **error);

G_END_DECLS
