/* forward.c: `mexd forward` — one bag of features through a MExD model file. */
#include "mexd.h"
#include "opts.h"

#include "../lib/io/features.h"
#include "../lib/mexd.h"

#include <stdio.h>
#include <string.h>

int mexd_cmd_forward(int argc, char **argv)
{
  g_autofree char *model = NULL, *features = NULL, *compat = NULL, *device = NULL;
  g_autofree char *sampler = NULL;
  gint64 seed = 0;
  int steps = G_MININT, chains = 32; /* G_MININT: --steps not given (50) */
  double eta = 0;
  gboolean json = FALSE, no_diffusion = FALSE, quiet = FALSE;
  GOptionEntry entries[] = {
      {"model", 'm', 0, G_OPTION_ARG_FILENAME, &model, "the model file (safetensors)", "M"},
      {"features", 'f', 0, G_OPTION_ARG_FILENAME, &features,
       "the bag: CLAM .h5, DSMIL .csv or float32 .npy [N,D]", "BAG"},
      {"compat", 0, 0, G_OPTION_ARG_STRING, &compat,
       "routing: paper (default) or official (the authors' stage 1)", "MODE"},
      {"seed", 0, 0, G_OPTION_ARG_INT64, &seed, "noise seed of the diffusion chains (0)", "S"},
      {"sampler", 0, 0, G_OPTION_ARG_STRING, &sampler, "card (all T steps, default) or ddim",
       "NAME"},
      {"steps", 0, 0, G_OPTION_ARG_INT, &steps, "DDIM steps (50; 2..T, the model's T)", "K"},
      {"eta", 0, 0, G_OPTION_ARG_DOUBLE, &eta, "DDIM's eta (0: deterministic; 0..1)", "E"},
      {"chains", 0, 0, G_OPTION_ARG_INT, &chains,
       "diffusion chains run as one batch (32; 1..4096)", "N"},
      {"no-diffusion", 0, 0, G_OPTION_ARG_NONE, &no_diffusion, "stop at the prior rho", NULL},
      {"device", 'd', 0, G_OPTION_ARG_STRING, &device, "cpu | vulkan | vulkan:N", "D"},
      {"json", 0, 0, G_OPTION_ARG_NONE, &json, "print the whole result as JSON", NULL},
      {"quiet", 'q', 0, G_OPTION_ARG_NONE, &quiet, "print only the class", NULL},
      {NULL},
  };
  g_autoptr(GOptionContext) ctx = g_option_context_new("- classify one bag of features");
  g_option_context_add_main_entries(ctx, entries, NULL);
  g_option_context_set_summary(
      ctx, "Runs adapter #1, the Dyn-MoE, adapter #2 and (when the model has one) the diffusion\n"
           "classifier on one bag, and prints the class, probabilities and routing.");
  g_autoptr(GError) error = NULL;
  if (!g_option_context_parse(ctx, &argc, &argv, &error)) {
    fprintf(stderr, "mexd forward: %s\n", error->message);
    return 2;
  }
  if (argc > 1) {
    fprintf(stderr, "mexd forward: unexpected argument \"%s\"\n", argv[1]);
    return 2;
  }
  if (!model || !features) {
    fprintf(stderr, "mexd forward: give --model M and --features BAG (mexd forward --help)\n");
    return 2;
  }
  const char *cmd = "mexd forward";
  const gboolean steps_given = steps != G_MININT;
  if (!steps_given)
    steps = 50;
  if (!mexd_opt_int(cmd, "--steps", steps, 2, 100000) ||
      !mexd_opt_int(cmd, "--chains", chains, 1, 4096) ||
      !mexd_opt_int(cmd, "--seed", seed, 0, G_MAXINT64) ||
      !mexd_opt_double(cmd, "--eta", eta, 0, 1, FALSE))
    return 2;
  if (eta != 0 && !(sampler && g_str_equal(sampler, "ddim"))) {
    fprintf(stderr, "mexd forward: --eta is DDIM's: give --sampler ddim\n");
    return 2;
  }
  MexdForwardOptions opt = MEXD_FORWARD_OPTIONS_DEFAULT;
  opt.seed = (uint64_t)seed;
  opt.steps = steps;
  opt.chains = chains;
  opt.eta = eta;
  opt.diffusion = !no_diffusion;
  if (sampler && g_str_equal(sampler, "ddim"))
    opt.sampler = MEXD_SAMPLER_DDIM;
  else if (sampler && !g_str_equal(sampler, "card")) {
    fprintf(stderr, "mexd forward: --sampler is card or ddim, not \"%s\"\n", sampler);
    return 2;
  }
  if (compat && !g_str_equal(compat, "paper") && !g_str_equal(compat, "official")) {
    fprintf(stderr, "mexd forward: --compat is paper or official, not \"%s\"\n", compat);
    return 2;
  }
  g_autoptr(MexdBackend) be = mexd_backend_new(device, &error);
  if (!be) {
    fprintf(stderr, "mexd forward: %s\n", error->message);
    return 1;
  }
  g_autoptr(MexdModel) m = mexd_model_load(model, be, &error);
  if (!m ||
      (compat &&
       !mexd_model_set_mode(
           m, g_str_equal(compat, "official") ? MEXD_ROUTE_OFFICIAL : MEXD_ROUTE_PAPER, &error))) {
    fprintf(stderr, "mexd forward: %s\n", error->message);
    return 1;
  }
  /* a --steps given is checked against the model's T, also for CARD (which takes all T) */
  const MexdModelConfig *mc = mexd_model_config(m);
  if (mc->has_diffusion && (steps_given || opt.sampler == MEXD_SAMPLER_DDIM) &&
      !mexd_opt_int(cmd, "--steps", steps, 2, mc->T))
    return 2;
  g_autoptr(MexdBag) bag = mexd_bag_read(features, MEXD_BAG_AUTO, &error);
  g_autofree char *bag_id = mexd_slide_id_of(features);
  if (!bag) {
    fprintf(stderr, "mexd forward: %s\n", error->message);
    return 1;
  }
  g_autoptr(MexdResult) r =
      mexd_model_forward(m, bag->features, bag->n, bag->d, &opt, NULL, &error);
  const MexdModelConfig *cfg = r ? mexd_model_config(m) : NULL;
  /* the result in the one schema (lib/pipeline/result.h), which refuses NaN and Inf */
  g_autoptr(MexdSlideResult) sr =
      r ? mexd_slide_result_new_from_model(r, cfg, &opt, bag_id, features, TRUE, &error) : NULL;
  if (!sr) {
    fprintf(stderr, "mexd forward: %s: %s\n", features, error->message);
    return 1;
  }
  sr->device = g_strdup(mexd_backend_name(be));
  if (json) {
    g_autofree char *s = mexd_slide_result_to_json(sr, TRUE);
    printf("%s\n", s);
  } else if (quiet) {
    printf("%s\n", cfg->classes[r->predicted]);
  } else {
    printf("%s: %" G_GINT64_FORMAT " instances, class %s\n", features, r->n_instances,
           cfg->classes[r->predicted]);
    for (int c = 0; c < r->n_classes; c++) {
      printf("  %-16s prior rho %.4f", cfg->classes[c], r->rho[c]);
      if (r->has_probs)
        printf("   p %.4f ± %.4f over %d chains", r->probs[c], r->spread[c], r->chains);
      printf("\n");
    }
    for (int e = 0; e < r->experts; e++)
      printf("  expert %d: %" G_GINT64_FORMAT " instances%s, c = %.4f\n", e, r->n_selected[e],
             r->zero_row[e] ? " (empty: one zero row)" : "", r->c[e]);
    printf("  time: adapter #1 %.1f ms, Dyn-MoE + adapter #2 %.1f ms, diffusion %.1f ms (%s)\n",
           r->ms_adapter1, r->ms_moe, r->ms_diffusion, mexd_backend_name(be));
  }
  return 0;
}
