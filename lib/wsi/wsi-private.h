/* wsi-private.h: what slide.c and tiles.c share. */
#pragma once

#include "slide.h"

typedef struct {
  int64_t w, h;
  double ds;
} MexdLevel;

struct MexdSlide {
  void *osr; /* openslide_t */
  char *path, *fname, *name, *vendor;
  int n_levels;
  MexdLevel *levels;
  double mpp_x, mpp_y, objective;
  const char *mpp_source;
};

void mexd_wsi_argb_to_rgb(const uint32_t *argb, size_t n, uint8_t *rgb);
