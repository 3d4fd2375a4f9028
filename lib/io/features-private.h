/* features-private.h: what the feature-file readers of lib/io share (features.c holds the bag and
 * the entry point, features-<format>.c one format each). */
#pragma once

#include "io/features.h"

#include <stddef.h>
#include <stdint.h>

/* The first bytes of a NumPy .npy file. */
extern const guint8 MEXD_NPY_MAGIC[6];

/* A new bag of n x d features (uninitialised), no coords.  MEXD_ERROR_NO_MEMORY naming `fname`
 * when n*d floats do not fit. */
MexdBag *mexd_bag_alloc(int64_t n, int64_t d, const char *fname, GError **error);

/* The readers, each given the whole file (mapped) or its path; `fname` names it in messages. */
MexdBag *mexd_bag_read_npy(const guint8 *p, size_t len, const char *fname, GError **error);
MexdBag *mexd_bag_read_csv(const char *p, size_t len, const char *fname, GError **error);
#ifdef MEXD_HAVE_HDF5
MexdBag *mexd_bag_read_h5(const char *path, const char *fname, GError **error);
#endif
