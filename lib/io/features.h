/* features.h: reading a bag of instance features (one slide's patch embeddings) from the files
 * users bring, and writing the CLAM layout.
 *
 * Three formats are read, all giving N instances of D float32 features, row-major:
 *
 *   CLAM HDF5 (.h5).  Dataset `features` at the root, of shape [N, D], or with leading dims of 1
 *   ([1, N, D], as some extraction scripts write a batch of one), of any float type (float32,
 *   float16 and float64 are converted to float32; integer features are MEXD_ERROR_UNSUPPORTED,
 *   other types MEXD_ERROR_FORMAT).  Optional dataset `coords` at the root, of shape [N, 2] (also
 *   with leading 1s), any integer type (CLAM writes int64), the level-0 (x, y) of each patch's
 *   top-left corner; its values must fit in int32.  Optional integer scalar attributes
 *   `patch_level` and `patch_size` on `coords`.  Other datasets and attributes are ignored.  Needs
 *   libmexd built with HDF5 (MEXD_HAVE_HDF5): otherwise an HDF5 file fails with
 *   MEXD_ERROR_UNSUPPORTED "built without HDF5".
 *
 *   DSMIL/IBMIL CSV (.csv).  One line per instance, D comma-separated numbers per line, with or
 *   without a header line.  The first line is a header when one of its cells is not a number, or
 *   when its cells are exactly 0, 1, ..., D-1 (the column names pandas writes; a data row of
 *   exactly those integers is not a realistic feature vector).  A header whose first cell is empty
 *   or "Unnamed: 0" marks a pandas index column, which is dropped from every line.  Cells may be
 *   surrounded by spaces and quoted as RFC 4180 says (io/csv.h, the project's one CSV tokenizer).
 *   Numbers are parsed locale-independently (g_ascii_strtod: decimal, exponent, "nan", "inf"...)
 *   and rounded to float32.  An empty cell is an error (write NaN as "nan").  Blank lines are
 *   skipped; "\r\n" line ends and a UTF-8 byte order mark are accepted.  Error messages give the
 *   1-based line number of the file (a malformed quote or a NUL byte: "FILE:LINE: ...").
 *
 *   NumPy (.npy) versions 1.0, 2.0 and 3.0.  dtype float32, float16 or float64 of either byte
 *   order ('<f4', '>f8'...), converted to float32; other dtypes are MEXD_ERROR_UNSUPPORTED, as is
 *   fortran_order True.  The shape must be 2-D, (N, D).  The file size must be exactly the header
 *   plus N*D elements (a truncated file, or bytes after the data, is MEXD_ERROR_FORMAT).
 *
 * MEXD_BAG_AUTO picks the format from the contents: the HDF5 signature (at offset 0 or at a user
 * block offset 512, 1024, 2048...), the NumPy magic "\x93NUMPY", else CSV when the name ends in
 * ".csv" or the start of the file is text.
 *
 * Every format requires N >= 1 and D >= 1.  NaN and infinite values are read as they are (the
 * model rejects them with its own message); mexd_bag_check_finite() finds them beforehand.
 *
 * Every failure is a GError in MEXD_ERROR whose message starts with the file name:
 * MEXD_ERROR_IO when the file cannot be opened, read or written; MEXD_ERROR_FORMAT when its
 * contents are malformed or not a bag of features; MEXD_ERROR_UNSUPPORTED for valid files of a
 * variant not read here; MEXD_ERROR_NO_MEMORY when the features do not fit in memory.
 *
 * HDF5 files are parsed by the HDF5 library, which is not hardened against corrupt files (HDF5
 * 1.10 makes invalid memory accesses on some mutated files): read only HDF5 files you trust.
 * The CSV and .npy parsers here check every length and read nothing outside the file.
 *
 * HDF5 (a serial build) is not thread-safe: calls here that use it are serialised by a lock of
 * this file, but other code of the process must not use HDF5 at the same time.  HDF5's automatic
 * error printing is switched off during those calls (and restored after); its errors become
 * GErrors. */
#pragma once

#include <glib.h>
#include <stdint.h>

G_BEGIN_DECLS

typedef enum {
  MEXD_BAG_AUTO, /* from the contents (see above) */
  MEXD_BAG_H5,   /* CLAM HDF5 */
  MEXD_BAG_CSV,  /* DSMIL/IBMIL CSV */
  MEXD_BAG_NPY,  /* NumPy .npy */
} MexdBagFormat;

/* One bag.  Everything is owned by the bag and freed by mexd_bag_free(). */
typedef struct {
  int64_t n, d;                /* instances, feature size; both >= 1 in a bag that was read */
  float *features;             /* [n*d] row-major, g_malloc'd */
  int32_t *coords;             /* [n*2] (x, y) level-0 pixels, g_malloc'd, or NULL when none */
  int patch_level, patch_size; /* CLAM attributes of coords, -1 when absent */
} MexdBag;

/* "auto", "h5", "csv", "npy", or "invalid" for a value outside the enum. */
const char *mexd_bag_format_name(MexdBagFormat format);

/* Reads the bag of the file at `path` in `format` (MEXD_BAG_AUTO: detected).  NULL with the error
 * set on failure.  Free with mexd_bag_free(). */
MexdBag *mexd_bag_read(const char *path, MexdBagFormat format, GError **error);

/* Frees the bag and its arrays.  NULL is allowed. */
void mexd_bag_free(MexdBag *bag);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(MexdBag, mexd_bag_free)

/* TRUE when every feature is finite; otherwise MEXD_ERROR_INVALID_ARGUMENT naming the first bad
 * value in row-major order, 0-based: "instance 17, feature 3 is NaN" (or "+Inf", "-Inf"). */
gboolean mexd_bag_check_finite(const MexdBag *bag, GError **error);

/* Writes `bag` to `path` in the CLAM layout: dataset `features` float32 [n, d] and, when
 * bag->coords is not NULL, dataset `coords` int64 [n, 2] with int64 scalar attributes
 * `patch_level` and `patch_size` (each only when >= 0).  Atomic: the file is written beside
 * `path` under a temporary name, flushed to disk and renamed over `path`; on failure `path` is
 * untouched.  MEXD_ERROR_INVALID_ARGUMENT for a NULL or empty bag, MEXD_ERROR_IO naming the path
 * when it cannot be written, MEXD_ERROR_UNSUPPORTED when built without HDF5. */
gboolean mexd_bag_write_h5(const char *path, const MexdBag *bag, GError **error);

/* A CLAM patch file: dataset `coords` int64 [n, 2] (level-0 x, y of each tile's top-left) with
 * CLAM's attributes on it: patch_size, patch_level (int64), downsample (float64 [2]), level_dim
 * and downsampled_level_dim (int64 [2], the patch level's size), name (the slide's name), and
 * ours: patch_size_level0 (a tile's level-0 extent) and mpp (µm per tile pixel, when known). */
typedef struct {
  int64_t n;
  const int32_t *coords; /* [n*2] */
  int patch_size, patch_level;
  double downsample[2];
  int64_t level_dim[2];
  const char *name;
  int64_t patch_size_level0;
  double mpp;
} MexdPatchFile;

/* Writes `pf` to `path` atomically, as mexd_bag_write_h5.  n may be 0 (a slide without
 * tissue). */
gboolean mexd_patches_write_h5(const char *path, const MexdPatchFile *pf, GError **error);

G_END_DECLS
