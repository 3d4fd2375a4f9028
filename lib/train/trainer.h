/* trainer.h: the training stages of docs/TRAINING.md over a loaded data set (dataset.h).
 *
 *   ADAPTER (= TRANSMIL)  TransMIL(D, C) on the slide labels: MExD's adapter #1 and the TransMIL
 *                         baseline; writes a `mexd-transmil/1` file.
 *   MOE                   adapter #1 (from `init`, frozen) → routers, expert classifiers and
 *                         adapter #2 with the selective expert loss; writes a `mexd-model/1`
 *                         file without Diff-C (its prior ρ is the prediction).
 *   DIFFUSION             the Dyn-MoE model of `init` frozen, (ρ, Z) cached per bag → the Diff-C
 *                         denoiser; writes the whole `mexd-model/1` file.
 *   ABMIL                 the gated-attention baseline; writes a `mexd-abmil/1` file.
 *
 * Files in out_dir: model.safetensors (the selected epoch's model, replaced atomically whenever
 * the validation improves), checkpoint.safetensors (the last finished epoch: weights, optimizer
 * state, the selection so far; written atomically at the end of every epoch), log.jsonl (one JSON
 * object per finished epoch).  With resume, a run continues from checkpoint.safetensors and ends
 * with the weights an uninterrupted run would have (every random draw and the bag order are
 * functions of (seed, epoch, bag); the options that shape the run must be the same, which is
 * checked).
 *
 * Model selection (docs/TRAINING.md): the epoch with the best validation AUC, ties by the lower
 * validation loss, then the earlier epoch; without a validation split, the last epoch.
 *
 * Outputs never destroy inputs: an output of out_dir (model.safetensors, checkpoint.safetensors,
 * log.jsonl) that is the same file as `init` or as a slide's feature file (links count) is refused
 * (MEXD_ERROR_INVALID_ARGUMENT naming both) before anything is written.  model and checkpoint are
 * written atomically (a killed run leaves the previous file, and its temporary is removed by the
 * next run); log.jsonl is appended one whole line per write and never truncated: a resumed run
 * keeps its complete lines up to the checkpoint's epoch (written atomically) and drops a line a
 * kill cut short.
 *
 * Numbers that are not finite never become answers.  A bag whose training loss, validation loss
 * or validation probabilities are NaN or infinite (finite features can overflow float32 on the
 * way: features of 1e30, or a diverging run) is an error naming the slide and its feature file
 * (MEXD_ERROR_FORMAT); with skip_bad it is skipped instead: the step is not taken (it counts in
 * skipped_steps), the slide is left out of that validation's metrics, and `warn` is called once
 * per slide and run with a message naming it.  Stage DIFFUSION caches the Dyn-MoE's (ρ, Z) of
 * every train/val bag first: a bag the model refuses (its output not finite) is an error naming
 * the slide, or with skip_bad is left out of the whole run (a warning).  A step whose loss is
 * finite but whose gradient is not is skipped as before (skipped_steps), without a warning. */
#pragma once

#include "backend/backend.h"
#include "train/dataset.h"

#include <glib.h>
#include <stdio.h>

G_BEGIN_DECLS

typedef enum {
  MEXD_TRAIN_ADAPTER,
  MEXD_TRAIN_MOE,
  MEXD_TRAIN_DIFFUSION,
  MEXD_TRAIN_ABMIL,
} MexdTrainStage;

/* "adapter", "moe", "diffusion", "abmil"; parse also takes "transmil" (= adapter). */
const char *mexd_train_stage_name(MexdTrainStage stage);
gboolean mexd_train_stage_parse(const char *name, MexdTrainStage *stage, GError **error);

typedef struct {
  int epoch, epochs;      /* 1-based epoch just finished, and the planned count */
  int64_t steps;          /* optimizer steps so far */
  double train_loss;      /* mean over the epoch's bags */
  double val_loss, val_auc, val_acc; /* NaN without a validation split (AUC: when undefined) */
  double seconds;         /* of this epoch (training and validation) */
  double eta_seconds;     /* for the remaining epochs, from the mean epoch time */
  gboolean best;          /* this epoch is the selected one so far */
  int skipped_steps;      /* steps skipped because a gradient was not finite */
} MexdEpochReport;

/* Called after each bag (done of n, within the epoch) and after each epoch (report != NULL). */
typedef void (*MexdTrainProgress)(MexdTrainStage stage, int epoch, int done, int n,
                                  const MexdEpochReport *report, gpointer user_data);

typedef struct {
  MexdTrainStage stage;
  const char *out_dir;
  const char *init; /* MOE: the adapter file; DIFFUSION: the Dyn-MoE model file */
  int epochs;       /* default: 200 (stages 0/1, baselines; the authors' count), 100 (stage 2) */
  int patience;     /* stop after this many epochs without a better selection (0: never) */
  uint64_t seed;
  gboolean resume;
  double lr;        /* 0: the stage's default (2e-4; stage 2: 1e-3) */
  /* TransMIL (adapter, moe's adapter #2) */
  int width, heads, landmarks, pinv_iterations, res_conv_taps; /* 512, 8, 256, 6, 33 */
  float dropout;                                               /* 0.1 */
  /* MOE */
  int experts;                       /* 0: the preset's, else classes + 1 */
  double alpha[16];                  /* alpha[0] = 0: the preset's, else 0.25, 0.5, ... */
  int expert_of_class[256];          /* [0] = −1: the preset's, else class c → expert c (+1) */
  gboolean no_routing;               /* the ablation */
  /* DIFFUSION */
  int T, diffusion_width;            /* 1000, 512 */
  gboolean prior_none;               /* the pure-noise ablation */
  int val_steps, val_chains;         /* DDIM steps and chains of the validation (50, 8) */
  /* ABMIL */
  int abmil_width, abmil_attn;       /* 512, 256 */
  float abmil_dropout;               /* 0.25 */
  /* memory budget for cached adapter-#1 rows (MOE), bytes; 0: 8 GiB */
  size_t cache_bytes;
  /* bags whose numbers are not finite: skipped with a warning instead of failing (see above) */
  gboolean skip_bad;
  MexdDatasetWarnFunc warn; /* NULL: g_warning in the "mexd" domain */
  gpointer warn_data;
  MexdTrainProgress progress;
  gpointer progress_data;
} MexdTrainOptions;

void mexd_train_options_init(MexdTrainOptions *o, MexdTrainStage stage);

/* Runs the stage on `ds` (its train split; selection on its val split) on `be`. */
gboolean mexd_train_run(const MexdTrainOptions *o, MexdDataset *ds, MexdBackend *be,
                        GError **error);

G_END_DECLS
