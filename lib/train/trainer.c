/* trainer.c: the training stages (trainer.h, docs/TRAINING.md).
 *
 * One step = one bag: a tape keyed by (seed, epoch, slide) (dropout masks), forward, loss,
 * backward, gradients read to the host, a non-finite gradient skips the step (counted in the
 * epoch report), stage 2 clips the gradient norm to 1.0, the optimizer updates the host arrays
 * and they are written back to the device.  After each epoch the validation split is evaluated
 * with the same model code without a tape (stage 2: the DDIM sampler of lib/nn over the current
 * denoiser), the selection is updated, and the checkpoint written.
 *
 * Caches: stage 1 computes adapter #1's instance rows P of every train/val bag once (eval mode,
 * lib/nn's TransMIL: the verified inference code) and keeps them on the device when they fit in
 * cache_bytes, else recomputes them for each step; stage 2 computes (ρ, Z) once per bag with
 * lib/nn's whole Dyn-MoE forward of the stage-1 model file.
 *
 * Fault injection for the resume test: MEXD_TRAIN_KILL_AT=E:B kills the process (SIGKILL) after
 * step B (1-based) of epoch E, as a power cut or an OOM kill would. */
#include "train/trainer.h"

#include "core/error.h"
#include "core/log.h"
#include "io/files.h"
#include "io/json.h"
#include "io/safetensors.h"
#include "nn/config-json.h"
#include "nn/nn.h"
#include "train/classifier.h"
#include "train/metrics.h"
#include "train/models.h"
#include "train/optim.h"
#include "train/params.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHECKPOINT_FORMAT "mexd-checkpoint/1"

const char *mexd_train_stage_name(MexdTrainStage stage)
{
  switch (stage) {
  case MEXD_TRAIN_ADAPTER: return "adapter";
  case MEXD_TRAIN_MOE: return "moe";
  case MEXD_TRAIN_DIFFUSION: return "diffusion";
  case MEXD_TRAIN_ABMIL: return "abmil";
  }
  return "invalid";
}

gboolean mexd_train_stage_parse(const char *name, MexdTrainStage *stage, GError **error)
{
  static const struct {
    const char *name;
    MexdTrainStage stage;
  } names[] = {{"adapter", MEXD_TRAIN_ADAPTER}, {"transmil", MEXD_TRAIN_ADAPTER},
               {"moe", MEXD_TRAIN_MOE},         {"diffusion", MEXD_TRAIN_DIFFUSION},
               {"abmil", MEXD_TRAIN_ABMIL}};
  for (size_t i = 0; name && i < G_N_ELEMENTS(names); i++)
    if (g_str_equal(name, names[i].name)) {
      *stage = names[i].stage;
      return TRUE;
    }
  return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                   "unknown training stage \"%s\" (adapter, transmil, moe, diffusion, abmil)",
                   name ? name : "");
}

void mexd_train_options_init(MexdTrainOptions *o, MexdTrainStage stage)
{
  memset(o, 0, sizeof *o);
  o->stage = stage;
  o->epochs = stage == MEXD_TRAIN_DIFFUSION ? 100 : 200;
  o->width = 512;
  o->heads = 8;
  o->landmarks = 256;
  o->pinv_iterations = 6;
  o->res_conv_taps = 33;
  o->dropout = 0.1f;
  o->expert_of_class[0] = -1;
  o->T = 1000;
  o->diffusion_width = 512;
  o->val_steps = 50;
  o->val_chains = 8;
  o->abmil_width = 512;
  o->abmil_attn = 256;
  o->abmil_dropout = 0.25f;
}

typedef struct {
  const MexdTrainOptions *o;
  MexdDataset *ds;
  MexdBackend *be;
  MexdParams *ps;
  MexdOptim *opt;
  MexdTransMil tm;
  MexdAbmil ab;
  MexdMoeT moe;
  MexdDiffcT dc;
  gboolean have_dc;
  MexdModelConfig cfg; /* MOE / DIFFUSION: the model written */
  gboolean have_cfg;
  MexdAttnShape s;
  MexdSafetensors *init_st; /* the tensors the output copies (MOE: adapter #1; DIFFUSION: all) */
  MexdTransMil a1;          /* MOE: frozen adapter #1 */
  gboolean have_a1;
  MexdTensor **P;   /* MOE: per slide, or NULL */
  float **rho, **z; /* DIFFUSION: per slide */
  char *key;        /* what shapes the run (checked on resume) */
  int done_epochs;
  int best_epoch;
  double best_auc, best_loss;
  int64_t steps;
  int stale; /* epochs since the selected one */
  int kill_epoch, kill_step;
  gboolean *excluded; /* per slide: left out of the whole run (skip_bad) */
  gboolean *warned;   /* per slide: its skip_bad warning was given */
} Trainer;

static void trainer_clear(Trainer *tr)
{
  if (tr->P)
    for (int i = 0; i < tr->ds->n_slides; i++)
      if (tr->P[i])
        mexd_tensor_unref(tr->P[i]);
  g_free(tr->P);
  if (tr->rho)
    for (int i = 0; i < tr->ds->n_slides; i++) {
      g_free(tr->rho[i]);
      g_free(tr->z[i]);
    }
  g_free(tr->rho);
  g_free(tr->z);
  if (tr->have_a1)
    mexd_transmil_clear(&tr->a1);
  if (tr->init_st)
    mexd_safetensors_free(tr->init_st);
  if (tr->have_dc)
    mexd_diffc_t_clear(&tr->dc);
  mexd_abmil_clear(&tr->ab);
  mexd_transmil_clear(&tr->tm);
  mexd_moe_t_clear(&tr->moe);
  if (tr->have_cfg)
    mexd_model_config_clear(&tr->cfg);
  if (tr->opt)
    mexd_optim_free(tr->opt);
  if (tr->ps)
    mexd_params_free(tr->ps);
  g_free(tr->key);
  g_free(tr->excluded);
  g_free(tr->warned);
}

/* ---- bags whose numbers are not finite ---- */

/* Slide i's numbers are not finite (`what`, printf-style): an error naming the slide and its
 * file, or with skip_bad a warning (once per slide and run) and TRUE. */
static gboolean bad_slide(Trainer *tr, int i, GError **error, const char *format, ...)
    G_GNUC_PRINTF(4, 5);

static gboolean bad_slide(Trainer *tr, int i, GError **error, const char *format, ...)
{
  const MexdDatasetSlide *sl = &tr->ds->slides[i];
  va_list ap;
  va_start(ap, format);
  g_autofree char *what = g_strdup_vprintf(format, ap);
  va_end(ap);
  g_autofree char *sid = g_utf8_make_valid(sl->slide_id, -1);
  g_autofree char *file = g_filename_display_name(sl->path ? sl->path : "");
  g_autofree char *msg = g_strdup_printf("slide '%s' (%s): %s", sid, file, what);
  if (!tr->o->skip_bad)
    return mexd_fail(error, MEXD_ERROR_FORMAT, "%s%s", msg,
                     " (--skip-bad skips such slides with a warning)");
  if (!tr->warned[i]) {
    tr->warned[i] = TRUE;
    if (tr->o->warn)
      tr->o->warn(sl->slide_id, msg, tr->o->warn_data);
    else
      mexd_warning("%s (skipped)", msg);
  }
  return TRUE;
}

/* The largest |feature| of slide i (for messages). */
static double largest_feature(const Trainer *tr, int i)
{
  const MexdBag *bag = tr->ds->slides[i].bag;
  double big = 0;
  for (int64_t k = 0; bag && bag->features && k < bag->n * bag->d; k++)
    big = MAX(big, fabs((double)bag->features[k]));
  return big;
}

static gboolean all_finite(const float *v, int n)
{
  for (int k = 0; k < n; k++)
    if (!isfinite(v[k]))
      return FALSE;
  return TRUE;
}

static uint64_t mix64(uint64_t x)
{
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

static uint64_t step_seed(uint64_t seed, int epoch, int slide)
{
  return mix64(seed ^ mix64(((uint64_t)(uint32_t)epoch << 32) | (uint32_t)slide));
}

/* ---- set-up ---- */

static gboolean same_classes(const MexdDataset *ds, char *const *classes, int n, const char *file,
                             GError **error)
{
  gboolean same = n == ds->n_classes;
  for (int c = 0; same && c < n; c++)
    same = g_str_equal(classes[c], ds->classes[c]);
  if (same)
    return TRUE;
  g_autofree char *a = g_strjoinv(", ", (char **)classes);
  g_autofree char *b = g_strjoinv(", ", ds->classes);
  return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                   "%s was trained for the classes (%s); this data set has (%s)", file, a, b);
}

/* The Dyn-MoE configuration from the options, the preset or the defaults. */
static gboolean moe_config(Trainer *tr, int feature_dim, GError **error)
{
  const MexdTrainOptions *o = tr->o;
  const MexdDataset *ds = tr->ds;
  MexdModelConfig *c = &tr->cfg;
  memset(c, 0, sizeof *c);
  tr->have_cfg = TRUE;
  c->feature_dim = feature_dim;
  c->width = tr->s.width;
  c->heads = tr->s.heads;
  c->landmarks = tr->s.landmarks;
  c->pinv_iterations = tr->s.iterations;
  c->res_conv_taps = tr->s.taps;
  c->n_classes = ds->n_classes;
  c->classes = g_strdupv(ds->classes);
  const MexdPreset *p = ds->preset;
  c->experts = o->experts ? o->experts : p ? p->experts : ds->n_classes + 1;
  if (c->experts < 2 || c->experts > MEXD_MAX_EXPERTS)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "--experts must be 2 to %d, not %d",
                     MEXD_MAX_EXPERTS, c->experts);
  for (int r = 0; r < c->experts; r++)
    c->alpha[r] = o->alpha[0] > 0 ? o->alpha[r]
                  : p && !o->experts ? p->alpha[r]
                                     : (r == 0 ? 0.25 : 0.5);
  for (int k = 0; k < ds->n_classes; k++)
    c->expert_of_class[k] = o->expert_of_class[0] >= 0 ? o->expert_of_class[k]
                            : p && !o->experts ? p->expert_of_class[k]
                            : c->experts == ds->n_classes ? k
                                                          : MIN(k + 1, c->experts - 1);
  for (int r = 0; r < c->experts; r++)
    if (!(c->alpha[r] > 0 && c->alpha[r] <= 1))
      return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "alpha[%d] = %g is outside (0, 1]", r,
                       c->alpha[r]);
  for (int k = 0; k < ds->n_classes; k++)
    if (c->expert_of_class[k] < 0 || c->expert_of_class[k] >= c->experts)
      return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                       "expert_of_class[%d] = %d is not an expert 0..%d", k,
                       c->expert_of_class[k], c->experts - 1);
  c->mode = MEXD_ROUTE_PAPER;
  return TRUE;
}

/* Opens the MOE stage's adapter file (mexd-transmil/1, or a mexd-model/1 whose adapter #1 is
 * taken) and loads adapter #1 for inference. */
static gboolean load_adapter(Trainer *tr, GError **error)
{
  const char *path = tr->o->init;
  if (!path)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "stage moe needs the adapter trained by stage adapter (--adapter FILE)");
  tr->init_st = mexd_safetensors_open(path, error);
  if (!tr->init_st)
    return FALSE;
  const char *fmt = mexd_safetensors_metadata(tr->init_st, "mexd.format");
  const char *json = mexd_safetensors_metadata(tr->init_st, "mexd.config");
  int D;
  g_auto(GStrv) classes = NULL;
  MexdAttnShape s;
  if (fmt && json && g_str_equal(fmt, "mexd-transmil/1")) {
    if (!mexd_transmil_config_parse(json, path, &D, &s, &classes, error))
      return FALSE;
  } else if (fmt && json && g_str_equal(fmt, "mexd-model/1")) {
    MexdModelConfig mc;
    if (!mexd_model_config_parse(&mc, json, path, error))
      return FALSE;
    D = mc.feature_dim;
    s = (MexdAttnShape){mc.width, mc.heads, mc.landmarks, mc.pinv_iterations, mc.res_conv_taps};
    classes = g_strdupv(mc.classes);
    mexd_model_config_clear(&mc);
  } else {
    return mexd_fail(error, MEXD_ERROR_FORMAT,
                     "%s: not an adapter file (mexd-transmil/1, from mexd train adapter)", path);
  }
  if (!same_classes(tr->ds, classes, (int)g_strv_length(classes), path, error))
    return FALSE;
  if (D != tr->ds->d)
    return mexd_fail(error, MEXD_ERROR_SHAPE, "%s takes %d-d features; the data set has %" G_GINT64_FORMAT,
                     path, D, tr->ds->d);
  tr->s = s; /* adapter #2 has adapter #1's shape */
  MexdWeights w;
  mexd_weights_init(&w, tr->init_st, tr->be);
  MexdParamSource src = mexd_param_source_weights(&w);
  gboolean ok = mexd_transmil_init(&tr->a1, &src, "adapter1", D, tr->ds->n_classes, &s, error);
  mexd_weights_clear(&w);
  tr->have_a1 = ok;
  return ok && moe_config(tr, D, error);
}

/* The instance rows P [N, W] of slide i from the frozen adapter #1 (a new tensor). */
static MexdTensor *adapter_rows(Trainer *tr, int i, GError **error)
{
  const MexdBag *bag = tr->ds->slides[i].bag;
  g_autoptr(MexdTensor) x = mexd_tensor_new_from_f32(tr->be, MEXD_DTYPE_F32, 2,
                                                     (int64_t[]){bag->n, bag->d}, bag->features,
                                                     error);
  g_autoptr(MexdTensor) logits = NULL, out = NULL;
  if (!x || !mexd_transmil_run(&tr->a1, x, &logits, &out, NULL, NULL, "a1", error))
    return NULL;
  g_autoptr(MexdTensor) rows = mexd_tensor_rows(out, 1, bag->n, error);
  g_autoptr(MexdTensor) P =
      rows ? mexd_tensor_new_2d(tr->be, MEXD_DTYPE_F32, bag->n, tr->s.width, error) : NULL;
  if (!P || !mexd_copy(P, rows, error))
    return NULL;
  return g_steal_pointer(&P);
}

static gboolean cache_rows(Trainer *tr, GError **error)
{
  const MexdDataset *ds = tr->ds;
  size_t budget = tr->o->cache_bytes ? tr->o->cache_bytes : ((size_t)8 << 30), need = 0;
  for (int i = 0; i < ds->n_slides; i++)
    if (ds->slides[i].split != MEXD_SPLIT_TEST)
      need += (size_t)ds->slides[i].bag->n * tr->s.width * sizeof(float);
  tr->P = g_new0(MexdTensor *, (gsize)MAX(ds->n_slides, 1));
  if (need > budget) {
    g_message("adapter #1 rows need %.1f MiB, more than the cache budget: recomputed each step",
              need / 1048576.0);
    return TRUE;
  }
  for (int i = 0; i < ds->n_slides; i++) {
    if (ds->slides[i].split == MEXD_SPLIT_TEST)
      continue;
    if (!(tr->P[i] = adapter_rows(tr, i, error)))
      return FALSE;
    if (!mexd_backend_sync(tr->be, error))
      return FALSE;
  }
  return TRUE;
}

/* DIFFUSION: the stage-1 model, (ρ, Z) of every train/val bag. */
static gboolean load_moe_model(Trainer *tr, GError **error)
{
  const char *path = tr->o->init;
  if (!path)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "stage diffusion needs the model trained by stage moe (--moe FILE)");
  g_autoptr(MexdModel) m = mexd_model_load(path, tr->be, error);
  if (!m)
    return FALSE;
  const MexdModelConfig *mc = mexd_model_config(m);
  if (!same_classes(tr->ds, mc->classes, mc->n_classes, path, error))
    return FALSE;
  if (mc->feature_dim != tr->ds->d)
    return mexd_fail(error, MEXD_ERROR_SHAPE, "%s takes %d-d features; the data set has %" G_GINT64_FORMAT,
                     path, mc->feature_dim, tr->ds->d);
  if (mc->mode != MEXD_ROUTE_PAPER)
    return mexd_fail(error, MEXD_ERROR_UNSUPPORTED, "%s: stage diffusion needs a paper-mode model",
                     path);
  /* the output: the stage-1 model's configuration with a diffusion part */
  g_autofree char *json = mexd_model_config_to_json(mc);
  if (!mexd_model_config_parse(&tr->cfg, json, path, error))
    return FALSE;
  tr->have_cfg = TRUE;
  tr->cfg.has_diffusion = TRUE;
  tr->cfg.T = tr->o->T;
  tr->cfg.diffusion_width = tr->o->diffusion_width;
  tr->cfg.beta_start = 1e-4;
  tr->cfg.beta_end = 0.02;
  tr->cfg.prior_none = tr->o->prior_none;
  tr->init_st = mexd_safetensors_open(path, error);
  if (!tr->init_st)
    return FALSE;
  for (guint i = 0; i < mexd_safetensors_n_tensors(tr->init_st); i++)
    if (g_str_has_prefix(mexd_safetensors_index(tr->init_st, i)->name, "diffc."))
      return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                       "%s has a Diff-C already: stage diffusion starts from the Dyn-MoE model of "
                       "stage moe",
                       path);
  const MexdDataset *ds = tr->ds;
  tr->rho = g_new0(float *, (gsize)MAX(ds->n_slides, 1));
  tr->z = g_new0(float *, (gsize)MAX(ds->n_slides, 1));
  MexdForwardOptions fo = MEXD_FORWARD_OPTIONS_DEFAULT;
  fo.diffusion = FALSE;
  for (int i = 0; i < ds->n_slides; i++) {
    if (ds->slides[i].split == MEXD_SPLIT_TEST)
      continue;
    const MexdBag *bag = ds->slides[i].bag;
    GError *ferr = NULL;
    g_autoptr(MexdResult) r =
        mexd_model_forward(m, bag->features, bag->n, bag->d, &fo, NULL, &ferr);
    if (!r && (ferr->code == MEXD_ERROR_FORMAT || ferr->code == MEXD_ERROR_INVALID_ARGUMENT)) {
      /* the bag's numbers (its output not finite): the slide's fault, not the run's */
      gboolean skipped = bad_slide(tr, i, error, "%s", ferr->message);
      g_error_free(ferr);
      if (!skipped)
        return FALSE;
      tr->excluded[i] = TRUE;
      continue;
    }
    if (!r) {
      g_autofree char *sid = g_utf8_make_valid(ds->slides[i].slide_id, -1);
      g_propagate_prefixed_error(error, ferr, "slide '%s': ", sid);
      return FALSE;
    }
    tr->rho[i] = g_memdup2(r->rho, sizeof(float) * mc->n_classes);
    tr->z[i] = g_memdup2(r->z, sizeof(float) * mc->width);
  }
  return TRUE;
}

static char *run_key(Trainer *tr)
{
  const MexdTrainOptions *o = tr->o;
  const MexdDataset *ds = tr->ds;
  GString *k = g_string_new(NULL);
  g_string_append_printf(k, "stage=%s seed=%" G_GUINT64_FORMAT " lr=%.9g D=%" G_GINT64_FORMAT,
                         mexd_train_stage_name(o->stage), o->seed, o->lr, ds->d);
  g_string_append_printf(k, " transmil=%d,%d,%d,%d,%d dropout=%g", tr->s.width, tr->s.heads,
                         tr->s.landmarks, tr->s.iterations, tr->s.taps, (double)o->dropout);
  if (tr->have_cfg) {
    g_autofree char *j = mexd_model_config_to_json(&tr->cfg);
    g_string_append_printf(k, " model=%s no_routing=%d", j, o->no_routing);
  }
  if (o->stage == MEXD_TRAIN_ABMIL)
    g_string_append_printf(k, " abmil=%d,%d,%g", o->abmil_width, o->abmil_attn,
                           (double)o->abmil_dropout);
  if (o->stage == MEXD_TRAIN_DIFFUSION)
    g_string_append_printf(k, " val=%d,%d", o->val_steps, o->val_chains);
  g_string_append(k, " classes=");
  for (int c = 0; c < ds->n_classes; c++)
    g_string_append_printf(k, "%s%s", c ? "," : "", ds->classes[c]);
  for (int s = 0; s < 2; s++) {
    g_string_append_printf(k, " %s=", s ? "val" : "train");
    for (int j = 0; j < ds->n_split[s]; j++)
      g_string_append_printf(k, "%s%s", j ? "," : "", ds->slides[ds->split_slides[s][j]].slide_id);
  }
  if (o->init) {
    /* the init file by content */
    g_autofree char *sum = NULL;
    g_autoptr(GMappedFile) mf = g_mapped_file_new(o->init, FALSE, NULL);
    if (mf)
      sum = g_compute_checksum_for_data(G_CHECKSUM_SHA256,
                                        (const guchar *)g_mapped_file_get_contents(mf),
                                        g_mapped_file_get_length(mf));
    g_string_append_printf(k, " init=%s", sum ? sum : "?");
  }
  return g_string_free(k, FALSE);
}

static gboolean setup(Trainer *tr, GError **error)
{
  const MexdTrainOptions *o = tr->o;
  const MexdDataset *ds = tr->ds;
  tr->s = (MexdAttnShape){o->width, o->heads, o->landmarks, o->pinv_iterations, o->res_conv_taps};
  tr->ps = mexd_params_new(tr->be, o->seed);
  int stage_opt = 0;
  switch (o->stage) {
  case MEXD_TRAIN_ADAPTER:
    if (!mexd_transmil_init(&tr->tm, MEXD_PARAMS_SOURCE(tr->ps), "adapter1", (int)ds->d,
                            ds->n_classes, &tr->s, error))
      return FALSE;
    tr->tm.dropout = o->dropout;
    break;
  case MEXD_TRAIN_ABMIL:
    if (!mexd_abmil_init(&tr->ab, MEXD_PARAMS_SOURCE(tr->ps), (int)ds->d, o->abmil_width, o->abmil_attn,
                           ds->n_classes, error))
      return FALSE;
    tr->ab.dropout = o->abmil_dropout;
    break;
  case MEXD_TRAIN_MOE:
    if (!load_adapter(tr, error) ||
        !mexd_moe_t_init(&tr->moe, tr->ps, &tr->cfg, o->no_routing, error))
      return FALSE;
    tr->moe.a2.dropout = o->dropout;
    stage_opt = 1;
    break;
  case MEXD_TRAIN_DIFFUSION:
    if (!load_moe_model(tr, error) ||
        !mexd_diffc_t_init(&tr->dc, tr->ps, ds->n_classes, tr->cfg.width, o->diffusion_width,
                           o->T, 1e-4, 0.02, o->prior_none, error))
      return FALSE;
    tr->have_dc = TRUE;
    stage_opt = 2;
    break;
  }
  if (!(tr->opt = mexd_optim_new_for_stage(stage_opt, error)))
    return FALSE;
  if (o->lr > 0)
    mexd_optim_set_lr(tr->opt, o->lr);
  if (!mexd_params_register(tr->ps, tr->opt, error))
    return FALSE;
  tr->key = run_key(tr);
  tr->best_epoch = 0;
  tr->best_auc = NAN;
  tr->best_loss = NAN;
  const char *kill = g_getenv("MEXD_TRAIN_KILL_AT");
  if (kill && sscanf(kill, "%d:%d", &tr->kill_epoch, &tr->kill_step) != 2)
    tr->kill_epoch = 0;
  return TRUE;
}

/* ---- one step ---- */

static MexdVar *bag_var(Trainer *tr, int i, GError **error)
{
  const MexdBag *bag = tr->ds->slides[i].bag;
  MexdTensor *x = mexd_tensor_new_from_f32(tr->be, MEXD_DTYPE_F32, 2, (int64_t[]){bag->n, bag->d},
                                           bag->features, error);
  return x ? mexd_var_take(x, FALSE) : NULL;
}

static MexdVar *ce_loss(MexdVar *logits, MexdTape *t, int label, GError **error)
{
  g_autoptr(MexdTensor) lab =
      mexd_tensor_new_1d(mexd_var_value(logits)->backend, MEXD_DTYPE_I32, 1, error);
  int32_t v = label;
  if (!lab || !mexd_tensor_write(lab, &v, sizeof v, error))
    return NULL;
  return mexd_ag_cross_entropy(t, logits, lab, error);
}

/* The loss of slide i (a Var on tape t; t NULL: evaluation) and, when probs is given, its class
 * probabilities. */
static MexdVar *slide_loss(Trainer *tr, MexdTape *t, int i, int epoch, float *probs,
                           GError **error)
{
  const MexdDatasetSlide *sl = &tr->ds->slides[i];
  const int C = tr->ds->n_classes;
  g_autoptr(MexdVar) logits = NULL;
  g_autoptr(MexdVar) loss = NULL;
  switch (tr->o->stage) {
  case MEXD_TRAIN_ADAPTER:
  case MEXD_TRAIN_ABMIL: {
    g_autoptr(MexdVar) x = bag_var(tr, i, error);
    gboolean ok = x && (tr->o->stage == MEXD_TRAIN_ADAPTER
                            ? mexd_transmil_forward(&tr->tm, t, x, &logits, NULL, NULL, NULL, "adapter1",
                                                    error)
                            : mexd_abmil_forward(&tr->ab, t, x, &logits, NULL, error));
    if (!ok || !(loss = ce_loss(logits, t, sl->label, error)))
      return NULL;
    break;
  }
  case MEXD_TRAIN_MOE: {
    g_autoptr(MexdTensor) P = tr->P[i] ? mexd_tensor_ref(tr->P[i]) : adapter_rows(tr, i, error);
    MexdMoeOut out;
    if (!P || !mexd_moe_t_forward(&tr->moe, t, P, sl->label, &out, error))
      return NULL;
    logits = g_steal_pointer(&out.logits2);
    loss = g_steal_pointer(&out.loss);
    mexd_moe_out_clear(&out);
    break;
  }
  case MEXD_TRAIN_DIFFUSION: {
    int32_t ts[64];
    g_autofree float *eps = g_new(float, 64 * C);
    /* evaluation: fixed draws (epoch index 0xffffffff) */
    mexd_diffc_t_draw(&tr->dc, tr->o->seed, t ? (uint32_t)epoch : 0xffffffffu, (uint32_t)i, ts,
                      eps);
    loss = mexd_diffc_t_loss(&tr->dc, t, tr->z[i], tr->rho[i], sl->label, ts, eps, 64, error);
    if (!loss)
      return NULL;
    break;
  }
  }
  if (probs && logits) {
    float lg[MEXD_MAX_CLASSES];
    if (!mexd_tensor_read_f32(mexd_var_value(logits), lg, C, error))
      return NULL;
    double m = lg[0], s = 0;
    for (int k = 1; k < C; k++)
      m = MAX(m, lg[k]);
    for (int k = 0; k < C; k++)
      s += exp(lg[k] - m);
    for (int k = 0; k < C; k++)
      probs[k] = (float)(exp(lg[k] - m) / s);
  }
  return g_steal_pointer(&loss);
}

static gboolean grads_finite(MexdParams *ps)
{
  for (guint i = 0; i < mexd_params_count(ps); i++) {
    MexdParam *p = mexd_params_index(ps, i);
    if (p->frozen)
      continue;
    for (int64_t k = 0; k < p->n; k++)
      if (!isfinite(p->grad[k]))
        return FALSE;
  }
  return TRUE;
}

/* One optimizer step on slide i; *loss_out its loss; *skipped when the gradient was not finite. */
static gboolean step(Trainer *tr, int i, int epoch, double *loss_out, gboolean *skipped,
                     GError **error)
{
  g_autoptr(MexdTape) t = mexd_tape_new(tr->be, TRUE, step_seed(tr->o->seed, epoch, i));
  mexd_params_zero_grad(tr->ps);
  g_autoptr(MexdVar) loss = slide_loss(tr, t, i, epoch, NULL, error);
  float lv = NAN;
  if (!loss || !mexd_tensor_read_f32(mexd_var_value(loss), &lv, 1, error) ||
      !mexd_tape_backward(t, loss, error) || !mexd_params_read_grads(tr->ps, error)) {
    if (error && *error)
      g_prefix_error(error, "slide %s: ", tr->ds->slides[i].slide_id);
    return FALSE;
  }
  g_clear_pointer(&t, mexd_tape_free);
  *loss_out = lv;
  if (!isfinite(lv)) {
    *skipped = TRUE;
    return bad_slide(tr, i, error,
                     "the training loss is %s at epoch %d: the computation overflowed float32 on "
                     "this bag (its largest |feature| is %g) or the training diverged (a lower "
                     "learning rate)",
                     isnan(lv) ? "NaN" : "infinite", epoch + 1, largest_feature(tr, i));
  }
  *skipped = !grads_finite(tr->ps);
  if (*skipped)
    return TRUE;
  if (tr->o->stage == MEXD_TRAIN_DIFFUSION)
    mexd_params_clip(tr->ps, 1.0);
  mexd_optim_step(tr->opt);
  tr->steps++;
  return mexd_params_upload(tr->ps, error);
}

/* ---- evaluation of the validation split ---- */

/* The current denoiser as lib/nn's sampler sees it (an in-memory model file). */
static gboolean diffusion_probs(Trainer *tr, const int *slides, int n, float *probs,
                                GError **error)
{
  const int C = tr->ds->n_classes, S = tr->o->val_chains;
  g_autoptr(MexdSafetensorsWriter) w = mexd_safetensors_writer_new();
  if (!mexd_params_save(tr->ps, w, "diffc.", error))
    return FALSE;
  g_autoptr(GBytes) bytes = mexd_safetensors_writer_to_bytes(w, error);
  g_autoptr(MexdSafetensors) st =
      bytes ? mexd_safetensors_new_from_bytes(bytes, "(the denoiser in training)", error) : NULL;
  if (!st)
    return FALSE;
  MexdWeights wt;
  mexd_weights_init(&wt, st, tr->be);
  MexdDiffc dc;
  gboolean ok = mexd_diffc_load(&dc, &wt, C, tr->cfg.width, tr->o->diffusion_width, tr->o->T,
                                1e-4, 0.02, error);
  mexd_weights_clear(&wt);
  if (!ok)
    return FALSE;
  g_autofree float *zero = g_new0(float, C);
  g_autofree float *f0h = g_new(float, (size_t)S * C);
  float spread[MEXD_MAX_CLASSES];
  for (int j = 0; ok && j < n; j++) {
    int i = slides[j];
    g_autoptr(MexdTensor) z = mexd_tensor_new_from_f32(tr->be, MEXD_DTYPE_F32, 2,
                                                       (int64_t[]){1, tr->cfg.width}, tr->z[i],
                                                       error);
    g_autoptr(MexdTensor) rho = z ? mexd_tensor_new_from_f32(
                                        tr->be, MEXD_DTYPE_F32, 2, (int64_t[]){1, C},
                                        tr->o->prior_none ? zero : tr->rho[i], error)
                                  : NULL;
    g_autoptr(MexdTensor) f0 = rho ? mexd_tensor_new_2d(tr->be, MEXD_DTYPE_F32, S, C, error) : NULL;
    MexdDiffcCond cond;
    ok = f0 && mexd_diffc_condition(&dc, &cond, z, rho, error);
    if (!ok)
      break;
    ok = mexd_diffc_sample(&dc, &cond, tr->o->val_steps, 0.0, S, 12345, f0, error) &&
         mexd_tensor_read_f32(f0, f0h, (int64_t)S * C, error);
    mexd_diffc_cond_clear(&cond);
    if (ok)
      mexd_diffc_readout(f0h, S, C, probs + (size_t)j * C, spread);
  }
  mexd_diffc_clear(&dc);
  return ok;
}

/* Slide `i` of a validation: `what` (a loss or probabilities) is not finite. */
static gboolean bad_validation(Trainer *tr, int i, const char *what, GError **error)
{
  return bad_slide(tr, i, error,
                   "its validation %s not finite: the computation overflowed float32 on this bag "
                   "(its largest |feature| is %g) or the training diverged",
                   what, largest_feature(tr, i));
}

static gboolean evaluate(Trainer *tr, MexdSplit split, double *loss, double *auc, double *acc,
                         GError **error)
{
  const MexdDataset *ds = tr->ds;
  const int n_all = ds->n_split[split], C = ds->n_classes;
  *loss = *auc = *acc = NAN;
  if (n_all == 0)
    return TRUE;
  g_autofree float *pf = g_new(float, (size_t)n_all * C);
  g_autofree double *pd = g_new(double, (size_t)n_all * C);
  g_autofree int *labels = g_new(int, n_all);
  g_autofree int *slides = g_new(int, n_all);
  g_autofree double *losses = g_new(double, n_all);
  const gboolean diffusion = tr->o->stage == MEXD_TRAIN_DIFFUSION;
  int n = 0; /* the slides kept: those whose numbers are finite */
  for (int j = 0; j < n_all; j++) {
    int i = ds->split_slides[split][j];
    if (tr->excluded[i])
      continue;
    g_autoptr(MexdVar) l = slide_loss(tr, NULL, i, 0, pf + (size_t)n * C, error);
    float lv;
    if (!l || !mexd_tensor_read_f32(mexd_var_value(l), &lv, 1, error)) {
      g_autofree char *sid = g_utf8_make_valid(ds->slides[i].slide_id, -1);
      g_prefix_error(error, "slide '%s': ", sid);
      return FALSE;
    }
    if (!isfinite(lv) || (!diffusion && !all_finite(pf + (size_t)n * C, C))) {
      if (!bad_validation(tr, i, isfinite(lv) ? "probabilities are" : "loss is", error))
        return FALSE;
      continue;
    }
    losses[n] = lv;
    slides[n] = i;
    labels[n] = ds->slides[i].label;
    n++;
  }
  if (diffusion && n > 0) {
    if (!diffusion_probs(tr, slides, n, pf, error))
      return FALSE;
    int kept = 0;
    for (int j = 0; j < n; j++) {
      if (!all_finite(pf + (size_t)j * C, C)) {
        if (!bad_validation(tr, slides[j], "probabilities are", error))
          return FALSE;
        continue; /* its loss leaves the mean too */
      }
      if (kept != j) {
        memmove(pf + (size_t)kept * C, pf + (size_t)j * C, sizeof(float) * C);
        slides[kept] = slides[j];
        labels[kept] = labels[j];
        losses[kept] = losses[j];
      }
      kept++;
    }
    n = kept;
  }
  if (n == 0)
    return TRUE; /* every slide skipped: no validation figures */
  double sum = 0; /* in slide order, as before */
  for (int j = 0; j < n; j++)
    sum += losses[j];
  for (int k = 0; k < n * C; k++)
    pd[k] = pf[k];
  *loss = sum / n;
  g_autoptr(MexdMetrics) m = mexd_metrics_compute(pd, labels, n, C, error);
  if (!m)
    return FALSE;
  *auc = m->auc_status == MEXD_AUC_UNDEFINED ? NAN : m->auc;
  *acc = m->accuracy;
  return TRUE;
}

/* ---- files ---- */

static char *out_path(const Trainer *tr, const char *name)
{
  return g_build_filename(tr->o->out_dir, name, NULL);
}

/* Adds the tensors of `st` whose name starts with one of the prefixes (NULL: all). */
static gboolean copy_tensors(MexdSafetensorsWriter *w, MexdSafetensors *st,
                             const char *const *prefixes, GError **error)
{
  for (guint i = 0; i < mexd_safetensors_n_tensors(st); i++) {
    const MexdStTensor *t = mexd_safetensors_index(st, i);
    gboolean take = prefixes == NULL;
    for (int k = 0; prefixes && prefixes[k]; k++)
      take = take || g_str_has_prefix(t->name, prefixes[k]);
    if (take && !mexd_safetensors_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data,
                                             t->nbytes, error))
      return FALSE;
  }
  return TRUE;
}

static gboolean write_model(Trainer *tr, GError **error)
{
  const MexdDataset *ds = tr->ds;
  g_autoptr(MexdSafetensorsWriter) w = mexd_safetensors_writer_new();
  g_autofree char *json = NULL;
  const char *fmt = "mexd-model/1";
  switch (tr->o->stage) {
  case MEXD_TRAIN_ADAPTER:
    fmt = "mexd-transmil/1";
    json = mexd_transmil_config_json((int)ds->d, &tr->s, (const char *const *)ds->classes,
                                     ds->n_classes);
    break;
  case MEXD_TRAIN_ABMIL:
    fmt = "mexd-abmil/1";
    json = mexd_abmil_config_json((int)ds->d, tr->o->abmil_width, tr->o->abmil_attn,
                                  (const char *const *)ds->classes, ds->n_classes);
    break;
  case MEXD_TRAIN_MOE: {
    static const char *const a1[] = {"adapter1.", NULL};
    if (!copy_tensors(w, tr->init_st, a1, error))
      return FALSE;
    json = mexd_model_config_to_json(&tr->cfg);
    break;
  }
  case MEXD_TRAIN_DIFFUSION:
    if (!copy_tensors(w, tr->init_st, NULL, error))
      return FALSE;
    json = mexd_model_config_to_json(&tr->cfg);
    break;
  }
  if (!mexd_params_save(tr->ps, w, NULL, error))
    return FALSE;
  mexd_safetensors_writer_set_metadata(w, "mexd.format", fmt);
  mexd_safetensors_writer_set_metadata(w, "mexd.config", json);
  g_autofree char *ep = g_strdup_printf("%d", tr->best_epoch);
  mexd_safetensors_writer_set_metadata(w, "mexd.train.epoch", ep);
  mexd_safetensors_writer_set_metadata(w, "mexd.train.stage", mexd_train_stage_name(tr->o->stage));
  g_autofree char *path = out_path(tr, "model.safetensors");
  return mexd_safetensors_writer_write(w, path, error);
}

static char *fmt_num(double v)
{
  if (!isfinite(v))
    return g_strdup("null");
  char buf[G_ASCII_DTOSTR_BUF_SIZE];
  return g_strdup(g_ascii_dtostr(buf, sizeof buf, v));
}

static char *report_json(const MexdEpochReport *r)
{
  g_autofree char *tl = fmt_num(r->train_loss), *vl = fmt_num(r->val_loss),
                  *va = fmt_num(r->val_auc), *vc = fmt_num(r->val_acc), *sec = fmt_num(r->seconds);
  return g_strdup_printf("{\"epoch\": %d, \"steps\": %" G_GINT64_FORMAT
                         ", \"train_loss\": %s, \"val_loss\": %s, \"val_auc\": %s, "
                         "\"val_acc\": %s, \"seconds\": %s, \"best\": %s, \"skipped_steps\": %d}",
                         r->epoch, r->steps, tl, vl, va, vc, sec, r->best ? "true" : "false",
                         r->skipped_steps);
}

static gboolean write_checkpoint(Trainer *tr, const char *report, GError **error)
{
  g_autoptr(MexdSafetensorsWriter) w = mexd_safetensors_writer_new();
  if (!mexd_params_save(tr->ps, w, NULL, error) || !mexd_optim_state_save(tr->opt, w, error))
    return FALSE;
  g_autofree char *ep = g_strdup_printf("%d", tr->done_epochs);
  g_autofree char *be = g_strdup_printf("%d", tr->best_epoch);
  g_autofree char *ba = fmt_num(tr->best_auc), *bl = fmt_num(tr->best_loss);
  g_autofree char *st = g_strdup_printf("%" G_GINT64_FORMAT, tr->steps);
  mexd_safetensors_writer_set_metadata(w, "mexd.format", CHECKPOINT_FORMAT);
  mexd_safetensors_writer_set_metadata(w, "train.key", tr->key);
  mexd_safetensors_writer_set_metadata(w, "train.epoch", ep);
  mexd_safetensors_writer_set_metadata(w, "train.best_epoch", be);
  mexd_safetensors_writer_set_metadata(w, "train.best_auc", ba);
  mexd_safetensors_writer_set_metadata(w, "train.best_loss", bl);
  mexd_safetensors_writer_set_metadata(w, "train.steps", st);
  g_autofree char *sl = g_strdup_printf("%d", tr->stale);
  mexd_safetensors_writer_set_metadata(w, "train.stale", sl);
  mexd_safetensors_writer_set_metadata(w, "train.report", report);
  g_autofree char *path = out_path(tr, "checkpoint.safetensors");
  return mexd_safetensors_writer_write(w, path, error);
}

static double meta_num(MexdSafetensors *st, const char *key)
{
  const char *v = mexd_safetensors_metadata(st, key);
  return !v || g_str_equal(v, "null") ? NAN : g_ascii_strtod(v, NULL);
}

/* Appends a line to log.jsonl: one write of the whole line to a regular file opened for
 * appending (never truncated; O_NONBLOCK: a FIFO in its place fails instead of blocking). */
static gboolean log_line(Trainer *tr, const char *line, GError **error)
{
  g_autofree char *path = out_path(tr, "log.jsonl");
  g_autofree char *shown = g_filename_display_name(path);
  int fd = g_open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NONBLOCK, 0644);
  if (fd < 0) {
    int e = errno;
    return mexd_fail(error, MEXD_ERROR_IO, "%s: cannot append: %s", shown, g_strerror(e));
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return mexd_fail(error, MEXD_ERROR_IO, "%s: is not a regular file: the log is not written",
                     shown);
  }
  g_autofree char *text = g_strconcat(line, "\n", NULL);
  size_t len = strlen(text), done = 0;
  while (done < len) {
    ssize_t w = write(fd, text + done, len - done);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0) {
      int e = errno;
      close(fd);
      return mexd_fail(error, MEXD_ERROR_IO, "%s: cannot write: %s", shown, g_strerror(e));
    }
    done += (size_t)w;
  }
  if (close(fd) != 0) {
    int e = errno;
    return mexd_fail(error, MEXD_ERROR_IO, "%s: cannot write: %s", shown, g_strerror(e));
  }
  return TRUE;
}

/* The epoch of a complete log line (a JSON object with an integer "epoch"), or -1 (a line a kill
 * cut short, or not one of ours). */
static int log_line_epoch(const char *line)
{
  if (!g_str_has_prefix(line, "{\"epoch\": "))
    return -1;
  g_autoptr(JsonNode) node = mexd_json_parse(line, -1, "log.jsonl", NULL);
  if (!node || !JSON_NODE_HOLDS_OBJECT(node))
    return -1;
  JsonNode *e = json_object_get_member(json_node_get_object(node), "epoch");
  if (!e || !JSON_NODE_HOLDS_VALUE(e) || json_node_get_value_type(e) != G_TYPE_INT64)
    return -1;
  gint64 v = json_node_get_int(e);
  return v >= 1 && v <= G_MAXINT ? (int)v : -1;
}

/* On resume: keeps the complete lines of log.jsonl up to the checkpoint's epoch and adds the
 * checkpoint's own when the kill came between the checkpoint and the log; written atomically. */
static gboolean resume_log(Trainer *tr, const char *report, GError **error)
{
  g_autofree char *path = out_path(tr, "log.jsonl");
  GString *keep = g_string_new(NULL);
  int last = 0;
  GError *rerr = NULL;
  g_autofree char *text = mexd_file_read_small(path, "training log", (gsize)1 << 30, NULL, &rerr);
  if (!text && rerr->code != MEXD_ERROR_NOT_FOUND) {
    g_propagate_error(error, rerr);
    g_string_free(keep, TRUE);
    return FALSE;
  }
  g_clear_error(&rerr);
  if (text) {
    g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
    for (int i = 0; lines[i]; i++) {
      int ep = log_line_epoch(lines[i]);
      if (ep >= 1 && ep <= tr->done_epochs) {
        g_string_append_printf(keep, "%s\n", lines[i]);
        last = ep;
      }
    }
  }
  if (last < tr->done_epochs && report)
    g_string_append_printf(keep, "%s\n", report);
  gboolean ok = mexd_file_write_atomic(path, keep->str, (gssize)keep->len, error);
  g_string_free(keep, TRUE);
  return ok;
}

static gboolean resume(Trainer *tr, GError **error)
{
  g_autofree char *path = out_path(tr, "checkpoint.safetensors");
  if (!g_file_test(path, G_FILE_TEST_EXISTS))
    return TRUE; /* nothing to resume: a fresh run */
  g_autoptr(MexdSafetensors) st = mexd_safetensors_open(path, error);
  if (!st)
    return FALSE;
  const char *fmt = mexd_safetensors_metadata(st, "mexd.format");
  const char *key = mexd_safetensors_metadata(st, "train.key");
  if (!fmt || !g_str_equal(fmt, CHECKPOINT_FORMAT) || !key)
    return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: not a training checkpoint", path);
  if (!g_str_equal(key, tr->key))
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "%s was written by a run with other settings or data; resume needs the "
                     "same options and data (or another --out)",
                     path);
  if (!mexd_params_load(tr->ps, st, NULL, error) || !mexd_optim_state_load(tr->opt, st, error))
    return FALSE;
  tr->done_epochs = (int)meta_num(st, "train.epoch");
  tr->best_epoch = (int)meta_num(st, "train.best_epoch");
  tr->best_auc = meta_num(st, "train.best_auc");
  tr->best_loss = meta_num(st, "train.best_loss");
  tr->steps = (int64_t)meta_num(st, "train.steps");
  tr->stale = (int)meta_num(st, "train.stale");
  return resume_log(tr, mexd_safetensors_metadata(st, "train.report"), error);
}

/* Refuses an output of out_dir that is the same file as an input: the init file or a slide's
 * feature file (links count), before anything is written. */
static gboolean check_outputs(const MexdTrainOptions *o, const MexdDataset *ds, GError **error)
{
  static const char *const names[] = {"model.safetensors", "checkpoint.safetensors", "log.jsonl"};
  g_autoptr(MexdInputSet) in = mexd_input_set_new();
  if (o->init)
    mexd_input_set_add(in, o->init);
  for (int i = 0; i < ds->n_slides; i++)
    if (ds->slides[i].path)
      mexd_input_set_add(in, ds->slides[i].path);
  for (size_t k = 0; k < G_N_ELEMENTS(names); k++) {
    g_autofree char *path = g_build_filename(o->out_dir, names[k], NULL);
    if (!mexd_input_set_check(in, path, error))
      return FALSE;
  }
  return TRUE;
}

/* Is (auc, loss) better than the best so far? */
static gboolean better(const Trainer *tr, double auc, double loss)
{
  if (tr->best_epoch == 0 || tr->ds->n_split[MEXD_SPLIT_VAL] == 0)
    return TRUE;
  if (isfinite(auc) && !isfinite(tr->best_auc))
    return TRUE;
  if (isfinite(auc) && auc != tr->best_auc)
    return auc > tr->best_auc;
  if (!isfinite(auc) && isfinite(tr->best_auc))
    return FALSE;
  if (isfinite(loss) && isfinite(tr->best_loss))
    return loss < tr->best_loss;
  return isfinite(loss) && !isfinite(tr->best_loss);
}

gboolean mexd_train_run(const MexdTrainOptions *o, MexdDataset *ds, MexdBackend *be,
                        GError **error)
{
  if (!o || !ds || !be || !o->out_dir)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "mexd_train_run: missing %s",
                     !o ? "options" : !ds ? "data set" : !be ? "backend" : "output directory");
  if (o->epochs < 1)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "--epochs must be at least 1");
  if (!(o->lr == 0 || (isfinite(o->lr) && o->lr > 0)))
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "the learning rate %g is not a positive number", o->lr);
  if (!check_outputs(o, ds, error))
    return FALSE;
  if (g_mkdir_with_parents(o->out_dir, 0755) != 0)
    return mexd_fail(error, MEXD_ERROR_IO, "%s: cannot create the directory: %s", o->out_dir,
                     g_strerror(errno));
  Trainer tr = {.o = o, .ds = ds, .be = be};
  tr.excluded = g_new0(gboolean, MAX(ds->n_slides, 1));
  tr.warned = g_new0(gboolean, MAX(ds->n_slides, 1));
  gboolean ok = setup(&tr, error);
  if (ok) {
    int usable = 0;
    for (int k = 0; k < ds->n_split[MEXD_SPLIT_TRAIN]; k++)
      usable += !tr.excluded[ds->split_slides[MEXD_SPLIT_TRAIN][k]];
    if (usable == 0)
      ok = mexd_fail(error, MEXD_ERROR_FORMAT, "no training slide remains: every one was skipped");
  }
  if (ok && !o->resume) {
    g_autofree char *ck = out_path(&tr, "checkpoint.safetensors");
    if (g_file_test(ck, G_FILE_TEST_EXISTS)) {
      ok = mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "%s exists: continue that run with --resume, or choose another --out", ck);
    } else {
      g_autofree char *lg = out_path(&tr, "log.jsonl");
      g_unlink(lg);
    }
  }
  if (ok && o->resume)
    ok = resume(&tr, error);
  if (ok && o->stage == MEXD_TRAIN_MOE)
    ok = cache_rows(&tr, error);
  if (ok && tr.done_epochs == 0)
    ok = mexd_params_upload(tr.ps, error);
  const int n_train = ds->n_split[MEXD_SPLIT_TRAIN];
  double total_s = 0;
  int timed = 0;
  for (int e = tr.done_epochs; ok && e < o->epochs; e++) {
    gint64 t0 = g_get_monotonic_time();
    g_autofree int *order = mexd_dataset_epoch_order(ds, (uint32_t)e);
    double sum = 0;
    int counted = 0, skipped = 0;
    for (int j = 0; ok && j < n_train; j++) {
      double lv = NAN;
      gboolean sk = TRUE;
      if (!tr.excluded[order[j]])
        ok = step(&tr, order[j], e, &lv, &sk, error);
      if (ok && !sk) {
        sum += lv;
        counted++;
      }
      skipped += ok && sk;
      if (ok && o->progress)
        o->progress(o->stage, e + 1, j + 1, n_train, NULL, o->progress_data);
      if (tr.kill_epoch == e + 1 && tr.kill_step == j + 1)
        raise(SIGKILL);
    }
    if (!ok)
      break;
    MexdEpochReport r = {.epoch = e + 1, .epochs = o->epochs, .skipped_steps = skipped};
    r.train_loss = counted ? sum / counted : NAN;
    ok = evaluate(&tr, MEXD_SPLIT_VAL, &r.val_loss, &r.val_auc, &r.val_acc, error);
    if (!ok)
      break;
    tr.done_epochs = e + 1;
    r.steps = tr.steps;
    r.best = better(&tr, r.val_auc, r.val_loss);
    if (r.best) {
      tr.best_epoch = e + 1;
      tr.best_auc = r.val_auc;
      tr.best_loss = r.val_loss;
      tr.stale = 0;
      ok = write_model(&tr, error);
    } else {
      tr.stale++;
    }
    r.seconds = (double)(g_get_monotonic_time() - t0) / 1e6;
    total_s += r.seconds;
    timed++;
    r.eta_seconds = total_s / timed * (o->epochs - e - 1);
    g_autofree char *line = report_json(&r);
    ok = ok && write_checkpoint(&tr, line, error) && log_line(&tr, line, error);
    if (ok && o->progress)
      o->progress(o->stage, e + 1, n_train, n_train, &r, o->progress_data);
    if (o->patience > 0 && tr.stale >= o->patience)
      break;
  }
  trainer_clear(&tr);
  return ok;
}
