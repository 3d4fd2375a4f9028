/* classify-bag.c: the README's C example — load a MExD model, classify one bag of features.
 *
 *   cc classify-bag.c $(pkg-config --cflags --libs mexd) -o classify-bag
 *   ./classify-bag model.safetensors slide.h5      # CLAM .h5, DSMIL .csv or .npy features
 *
 * The device is the default one (the best hardware GPU, else the cpu backend; MEXD_DEVICE
 * overrides).  Exit status 0, 1 on an error (the message on stderr), 2 on bad usage. */
#include <mexd.h>

#include <stdio.h>

int main(int argc, char **argv)
{
  if (argc != 3) {
    fprintf(stderr, "usage: %s MODEL.safetensors FEATURES.{h5,csv,npy}\n", argv[0]);
    return 2;
  }
  g_autoptr(GError) error = NULL;
  g_autoptr(MexdBackend) device = mexd_backend_new(NULL, &error);
  g_autoptr(MexdModel) model = device ? mexd_model_load(argv[1], device, &error) : NULL;
  g_autoptr(MexdBag) bag = model ? mexd_bag_read(argv[2], MEXD_BAG_AUTO, &error) : NULL;
  MexdForwardOptions opt = MEXD_FORWARD_OPTIONS_DEFAULT; /* Diff-C: 32 CARD chains */
  g_autoptr(MexdResult) r =
      bag ? mexd_model_forward(model, bag->features, bag->n, bag->d, &opt, NULL, &error) : NULL;
  if (!r) {
    fprintf(stderr, "%s: %s\n", argv[0], error->message);
    return 1;
  }
  printf("%s: %" G_GINT64_FORMAT " instances on %s: class %d\n", argv[2], bag->n,
         mexd_backend_name(device), r->predicted);
  const float *p = r->has_probs ? r->probs : r->rho;
  for (int c = 0; c < r->n_classes; c++)
    printf("  class %d: %.4f\n", c, p[c]);
  return 0;
}
