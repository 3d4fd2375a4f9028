/* bench-train.c: `mexd bench train` — seconds per training step and per epoch of a stage, on
 * random bags of a given size, with the real step (forward, backward, gradients to the host,
 * the stage's optimizer, weights back to the device).
 *
 *   mexd bench train [--stage adapter|moe|diffusion|abmil] [--bags 270] [--n 8000] [--dim 768]
 *                    [--steps 5] [--warmup 1] [--device D] [--width 512] [--heads 8]
 *                    [--landmarks 256] [--seed S] [--json]
 *
 * An epoch is `bags` steps; the benchmark runs `steps` of them (after `warmup`) and multiplies the
 * median step by `bags` (the bags all have n instances, so every step costs the same).
 *   adapter  TransMIL(D, 2) on x [n, D] ~ U(−1, 1), dropout 0.1 (the TransMIL baseline too);
 *   moe      the Dyn-MoE stage (E = 2, α 0.25/0.5, Camelyon16's) on P [n, W] ~ N(0, 1) standing
 *            for adapter #1's LayerNorm'd rows — adapter #1 runs once per bag before training
 *            (the trainer caches its rows), so it is not part of a step; with fresh routers about
 *            half the rows are kept and 0.25 / 0.5 of those selected, so adapter #2 sees about
 *            0.375·n rows (a trained router's selection differs);
 *   diffusion  one bag's 64 noised labels through the denoiser (W = F = 512);
 *   abmil    gated attention on x [n, D].
 * Ranges (a usage error, exit 2, names the option and its range): --bags 1..1000000, --n
 * 1..10000000, --dim 1..65536 (n × max(D, W) at most 2^31 values), --steps 1..10000, --warmup
 * 0..1000, --width 1..65536 (a multiple of --heads), --heads 1..1024, --landmarks 1..16384,
 * --seed 0..2^63−1. */
#include "mexd.h"
#include "opts.h"

#include "../lib/mexd.h"
#include "../lib/train/models.h"
#include "../lib/train/optim.h"
#include "../lib/train/params.h"
#include "../lib/train/trainer.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static MexdTensor *random_tensor(MexdBackend *be, int64_t rows, int64_t cols, gboolean normal,
                                 uint32_t seed, GError **error)
{
  g_autofree float *v = g_try_new(float, rows * cols);
  if (!v)
    return mexd_fail_null(error, MEXD_ERROR_NO_MEMORY,
                          "no memory for a bag of %" G_GINT64_FORMAT " × %" G_GINT64_FORMAT, rows,
                          cols);
  GRand *r = g_rand_new_with_seed(seed);
  for (int64_t i = 0; i < rows * cols; i++) {
    if (normal) {
      double u0 = g_rand_double(r), u1 = g_rand_double(r);
      v[i] = (float)(sqrt(-2 * log(u0 + 1e-300)) * cos(2 * G_PI * u1));
    } else {
      v[i] = (float)g_rand_double_range(r, -1, 1);
    }
  }
  g_rand_free(r);
  return mexd_tensor_new_from_f32(be, MEXD_DTYPE_F32, 2, (int64_t[]){rows, cols}, v, error);
}

int mexd_bench_train(int argc, char **argv)
{
  g_autofree char *stage_s = NULL, *device = NULL;
  int bags = 270, n = 8000, dim = 768, steps = 5, warmup = 1, width = 512, heads = 8,
      landmarks = 256;
  gint64 seed = 1;
  gboolean json = FALSE;
  GOptionEntry entries[] = {
      {"stage", 's', 0, G_OPTION_ARG_STRING, &stage_s, "adapter (default), moe, diffusion, abmil",
       "S"},
      {"bags", 0, 0, G_OPTION_ARG_INT, &bags, "bags in an epoch (270; 1..1000000)", "B"},
      {"n", 'n', 0, G_OPTION_ARG_INT, &n, "instances per bag (8000; 1..10000000)", "N"},
      {"dim", 0, 0, G_OPTION_ARG_INT, &dim, "feature size D (768; 1..65536)", "D"},
      {"steps", 0, 0, G_OPTION_ARG_INT, &steps, "timed steps (5; 1..10000)", "K"},
      {"warmup", 0, 0, G_OPTION_ARG_INT, &warmup, "untimed steps first (1; 0..1000)", "K"},
      {"device", 'd', 0, G_OPTION_ARG_STRING, &device, "cpu | vulkan | vulkan:N", "D"},
      {"width", 0, 0, G_OPTION_ARG_INT, &width,
       "model width (512; 1..65536, a multiple of --heads)", "W"},
      {"heads", 0, 0, G_OPTION_ARG_INT, &heads, "Nyström heads (8; 1..1024)", "H"},
      {"landmarks", 0, 0, G_OPTION_ARG_INT, &landmarks, "Nyström landmarks (256; 1..16384)", "M"},
      {"seed", 0, 0, G_OPTION_ARG_INT64, &seed, "seed (1; 0..9223372036854775807)", "S"},
      {"json", 0, 0, G_OPTION_ARG_NONE, &json, "one JSON line", NULL},
      {NULL},
  };
  g_autoptr(GOptionContext) ctx = g_option_context_new("- seconds per training step and epoch");
  g_option_context_add_main_entries(ctx, entries, NULL);
  g_autoptr(GError) error = NULL;
  if (!g_option_context_parse(ctx, &argc, &argv, &error)) {
    fprintf(stderr, "mexd bench train: %s\n", error->message);
    return 2;
  }
  MexdTrainStage stage = MEXD_TRAIN_ADAPTER;
  if (stage_s && !mexd_train_stage_parse(stage_s, &stage, &error)) {
    fprintf(stderr, "mexd bench train: %s\n", error->message);
    return 2;
  }
  const char *cmd = "mexd bench train";
  if (argc > 1) {
    fprintf(stderr, "%s: unexpected argument \"%s\"\n", cmd, argv[1]);
    return 2;
  }
  if (!mexd_opt_int(cmd, "--bags", bags, 1, 1000000) ||
      !mexd_opt_int(cmd, "--n", n, 1, 10000000) || !mexd_opt_int(cmd, "--dim", dim, 1, 65536) ||
      !mexd_opt_int(cmd, "--steps", steps, 1, 10000) ||
      !mexd_opt_int(cmd, "--warmup", warmup, 0, 1000) ||
      !mexd_opt_int(cmd, "--width", width, 1, 65536) ||
      !mexd_opt_int(cmd, "--heads", heads, 1, 1024) ||
      !mexd_opt_int(cmd, "--landmarks", landmarks, 1, 16384) ||
      !mexd_opt_int(cmd, "--seed", seed, 0, G_MAXINT64))
    return 2;
  if (width % heads) {
    fprintf(stderr, "%s: --width %d is not a multiple of --heads %d\n", cmd, width, heads);
    return 2;
  }
  if ((int64_t)n * MAX(dim, width) > ((int64_t)1 << 31)) {
    fprintf(stderr, "%s: a bag of %d × %d values is more than 2^31 (8 GiB): give a smaller --n\n",
            cmd, n, MAX(dim, width));
    return 2;
  }
  g_autoptr(MexdBackend) be = mexd_backend_new(device, &error);
  if (!be) {
    fprintf(stderr, "mexd bench train: %s\n", error->message);
    return 1;
  }
  g_autoptr(MexdParams) ps = mexd_params_new(be, (uint64_t)seed);
  MexdAttnShape s = {width, heads, landmarks, 6, 33};
  MexdTransMil tm;
  MexdMoeT moe;
  MexdDiffcT dc;
  MexdAbmil ab;
  memset(&tm, 0, sizeof tm);
  memset(&moe, 0, sizeof moe);
  memset(&dc, 0, sizeof dc);
  memset(&ab, 0, sizeof ab);
  MexdModelConfig cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.width = width;
  cfg.heads = heads;
  cfg.landmarks = landmarks;
  cfg.pinv_iterations = 6;
  cfg.res_conv_taps = 33;
  cfg.n_classes = 2;
  cfg.experts = 2;
  cfg.alpha[0] = 0.25;
  cfg.alpha[1] = 0.5;
  cfg.expert_of_class[0] = 0;
  cfg.expert_of_class[1] = 1;
  gboolean ok;
  int stage_opt = 0;
  switch (stage) {
  case MEXD_TRAIN_ADAPTER:
    ok = mexd_transmil_init(&tm, MEXD_PARAMS_SOURCE(ps), "adapter1", dim, 2, &s, &error);
    break;
  case MEXD_TRAIN_MOE:
    ok = mexd_moe_t_init(&moe, ps, &cfg, FALSE, &error);
    stage_opt = 1;
    break;
  case MEXD_TRAIN_DIFFUSION:
    ok = mexd_diffc_t_init(&dc, ps, 2, width, 512, 1000, 1e-4, 0.02, FALSE, &error);
    stage_opt = 2;
    break;
  default: ok = mexd_abmil_init(&ab, MEXD_PARAMS_SOURCE(ps), dim, 512, 256, 2, &error); break;
  }
  g_autoptr(MexdOptim) opt = ok ? mexd_optim_new_for_stage(stage_opt, &error) : NULL;
  ok = opt && mexd_params_register(ps, opt, &error) && mexd_params_upload(ps, &error);
  g_autoptr(MexdTensor) data =
      ok ? random_tensor(be, n, stage == MEXD_TRAIN_MOE ? width : dim, stage == MEXD_TRAIN_MOE,
                         (uint32_t)seed, &error)
         : NULL;
  if (!data) {
    fprintf(stderr, "mexd bench train: %s\n", error->message);
    return 1;
  }
  /* the diffusion stage's condition: a Z of the model's width */
  g_autofree float *z = g_new(float, width);
  float rho[2] = {0.3f, 0.7f};
  for (int i = 0; i < width; i++)
    z[i] = (float)sin(0.1 * i);
  g_autofree double *t = g_new(double, steps);
  double loss_last = NAN;
  for (int k = 0; k < warmup + steps; k++) {
    gint64 t0 = g_get_monotonic_time();
    g_autoptr(MexdTape) tape = mexd_tape_new(be, TRUE, (uint64_t)(seed + k));
    mexd_params_zero_grad(ps);
    g_autoptr(MexdVar) loss = NULL;
    g_autoptr(MexdVar) x = mexd_var_new(data, FALSE);
    g_autoptr(MexdVar) logits = NULL;
    int label = k % 2;
    MexdMoeOut mo;
    switch (stage) {
    case MEXD_TRAIN_ADAPTER:
    case MEXD_TRAIN_ABMIL: {
      ok = stage == MEXD_TRAIN_ADAPTER ? mexd_transmil_forward(&tm, tape, x, &logits, NULL, NULL, NULL,
                                                                 "adapter1", &error)
                                       : mexd_abmil_forward(&ab, tape, x, &logits, NULL, &error);
      g_autoptr(MexdTensor) lab = ok ? mexd_tensor_new_1d(be, MEXD_DTYPE_I32, 1, &error) : NULL;
      int32_t v = label;
      ok = lab && mexd_tensor_write(lab, &v, 4, &error) &&
           (loss = mexd_ag_cross_entropy(tape, logits, lab, &error));
      break;
    }
    case MEXD_TRAIN_MOE:
      ok = mexd_moe_t_forward(&moe, tape, data, label, &mo, &error);
      if (ok) {
        loss = mexd_var_ref(mo.loss);
        mexd_moe_out_clear(&mo);
      }
      break;
    default: {
      int32_t ts[64];
      float eps[128];
      mexd_diffc_t_draw(&dc, (uint64_t)seed, 0, (uint32_t)k, ts, eps);
      ok = (loss = mexd_diffc_t_loss(&dc, tape, z, rho, label, ts, eps, 64, &error)) != NULL;
      break;
    }
    }
    ok = ok && mexd_tensor_read_f32(mexd_var_value(loss), &(float){0}, 1, &error) &&
         mexd_tape_backward(tape, loss, &error) && mexd_params_read_grads(ps, &error);
    if (ok) {
      float lv;
      mexd_tensor_read_f32(mexd_var_value(loss), &lv, 1, NULL);
      loss_last = lv;
      if (stage == MEXD_TRAIN_DIFFUSION)
        mexd_params_clip(ps, 1.0);
      mexd_optim_step(opt);
      ok = mexd_params_upload(ps, &error) && mexd_backend_sync(be, &error);
    }
    if (!ok) {
      fprintf(stderr, "mexd bench train: %s\n", error->message);
      return 1;
    }
    if (k >= warmup)
      t[k - warmup] = (double)(g_get_monotonic_time() - t0) / 1e6;
  }
  if (stage == MEXD_TRAIN_DIFFUSION)
    mexd_diffc_t_clear(&dc);
  mexd_abmil_clear(&ab);
  mexd_transmil_clear(&tm);
  mexd_moe_t_clear(&moe);
  double med = mexd_median(t, steps);
  if (json)
    printf("{\"bench\": \"train\", \"stage\": \"%s\", \"device\": \"%s\", \"n\": %d, \"dim\": %d, "
           "\"width\": %d, \"bags\": %d, \"s_per_step\": %.4f, \"s_per_epoch\": %.1f, "
           "\"params\": %" G_GINT64_FORMAT ", \"steps\": %d}\n",
           mexd_train_stage_name(stage), mexd_backend_name(be), n, dim, width, bags, med,
           med * bags, mexd_params_numel(ps, TRUE), steps);
  else
    printf("mexd bench train %s on %s: bags of %d × %d, width %d: %.3f s per step (median of "
           "%d), %.1f s per epoch of %d bags; %" G_GINT64_FORMAT " parameters; last loss %.4f\n",
           mexd_train_stage_name(stage), mexd_backend_name(be), n,
           stage == MEXD_TRAIN_MOE ? width : dim, width, med, steps, med * bags, bags,
           mexd_params_numel(ps, TRUE), loss_last);
  return 0;
}
