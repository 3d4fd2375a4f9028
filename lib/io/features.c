/* features.c: bags of instance features: the bag itself, telling the formats apart, and
 * mexd_bag_read, which hands the file to its format's reader (features-h5.c: CLAM HDF5 and its
 * writer; features-csv.c: DSMIL/IBMIL CSV; features-npy.c: NumPy .npy).  See features.h for the
 * formats and the rules enforced. */
#include "io/features-private.h"
#include "io/files.h"

#include "core/error.h"
#include "core/tensor.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <inttypes.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const guint8 HDF5_MAGIC[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
/* How much of the start of a file AUTO looks at to tell text from binary. */
#define TEXT_PROBE_BYTES 4096
/* The largest HDF5 user block AUTO looks behind for the signature (HDF5 allows any power of two
 * from 512 on; this is far beyond what tools write). */
#define MAX_USER_BLOCK ((off_t)1 << 24)

const char *mexd_bag_format_name(MexdBagFormat format)
{
  switch (format) {
  case MEXD_BAG_AUTO: return "auto";
  case MEXD_BAG_H5: return "h5";
  case MEXD_BAG_CSV: return "csv";
  case MEXD_BAG_NPY: return "npy";
  }
  return "invalid";
}

void mexd_bag_free(MexdBag *bag)
{
  if (!bag)
    return;
  g_free(bag->features);
  g_free(bag->coords);
  g_free(bag);
}

MexdBag *mexd_bag_alloc(int64_t n, int64_t d, const char *fname, GError **error)
{
  g_assert(n >= 1 && d >= 1);
  if ((uint64_t)n > SIZE_MAX / sizeof(float) / (uint64_t)d)
    return mexd_fail_null(error, MEXD_ERROR_NO_MEMORY,
                          "%s: %" G_GINT64_FORMAT " x %" G_GINT64_FORMAT
                          " features do not fit in memory",
                          fname, n, d);
  size_t bytes = (size_t)n * (size_t)d * sizeof(float);
  float *f = g_try_malloc(bytes);
  if (!f)
    return mexd_fail_null(error, MEXD_ERROR_NO_MEMORY,
                          "%s: cannot allocate %zu bytes for %" G_GINT64_FORMAT
                          " x %" G_GINT64_FORMAT " features",
                          fname, bytes, n, d);
  MexdBag *bag = g_new0(MexdBag, 1);
  bag->n = n;
  bag->d = d;
  bag->features = f;
  bag->patch_level = -1;
  bag->patch_size = -1;
  return bag;
}

gboolean mexd_bag_check_finite(const MexdBag *bag, GError **error)
{
  if (!bag)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "the bag is NULL");
  if (!bag->features && bag->n > 0 && bag->d > 0)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "the bag's features are NULL");
  if (bag->n <= 0 || bag->d <= 0)
    return TRUE;
  size_t total = (size_t)bag->n * (size_t)bag->d;
  for (size_t i = 0; i < total; i++) {
    float v = bag->features[i];
    if (!isfinite(v))
      return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "instance %zu, feature %zu is %s",
                       i / (size_t)bag->d, i % (size_t)bag->d,
                       isnan(v) ? "NaN"
                       : v > 0  ? "+Inf"
                                : "-Inf");
  }
  return TRUE;
}


/* ---- format detection and the entry point ---- */

static gboolean read_at(int fd, off_t off, void *buf, size_t n)
{
  return pread(fd, buf, n, off) == (ssize_t)n;
}

/* The HDF5 signature at 0 or at a user-block offset 512, 1024, 2048... */
static gboolean has_hdf5_magic(int fd, off_t size)
{
  guint8 b[8];
  for (off_t off = 0; off + 8 <= size && off <= MAX_USER_BLOCK; off = off ? 2 * off : 512)
    if (read_at(fd, off, b, 8) && memcmp(b, HDF5_MAGIC, 8) == 0)
      return TRUE;
  return FALSE;
}

/* Text: no control characters but tab, CR, LF; valid UTF-8 (a sequence cut by the end of the
 * probe is allowed). */
static gboolean looks_like_text(const guint8 *b, size_t n, gboolean cut)
{
  for (size_t i = 0; i < n; i++)
    if ((b[i] < 0x20 && b[i] != '\t' && b[i] != '\n' && b[i] != '\r') || b[i] == 0x7f)
      return FALSE;
  const char *bad = NULL;
  if (g_utf8_validate((const char *)b, (gssize)n, &bad))
    return TRUE;
  return cut && (size_t)((const guint8 *)bad - b) + 4 > n;
}

static gboolean detect_format(int fd, off_t size, const char *path, const char *fname,
                              MexdBagFormat *out, GError **error)
{
  guint8 head[TEXT_PROBE_BYTES];
  size_t n = (size_t)MIN(size, (off_t)sizeof head);
  if (!read_at(fd, 0, head, n)) {
    int err_no = errno;
    return mexd_fail(error, MEXD_ERROR_IO, "%s: cannot read: %s", fname,
                     err_no ? g_strerror(err_no) : "short read");
  }
  if (n >= sizeof MEXD_NPY_MAGIC && memcmp(head, MEXD_NPY_MAGIC, sizeof MEXD_NPY_MAGIC) == 0)
    *out = MEXD_BAG_NPY;
  else if (has_hdf5_magic(fd, size))
    *out = MEXD_BAG_H5;
  else if (g_str_has_suffix(path, ".csv") || g_str_has_suffix(path, ".CSV") ||
           looks_like_text(head, n, (off_t)n < size))
    *out = MEXD_BAG_CSV;
  else
    return mexd_fail(error, MEXD_ERROR_FORMAT,
                     "%s: is not a feature file: not HDF5, not NumPy .npy and not CSV text", fname);
  return TRUE;
}

MexdBag *mexd_bag_read(const char *path, MexdBagFormat format, GError **error)
{
  if (!path)
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT, "bag reader: the path is NULL");
  g_autofree char *fname = g_filename_display_name(path);
  if ((int)format < MEXD_BAG_AUTO || (int)format > MEXD_BAG_NPY)
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT, "%s: invalid format %d", fname,
                          (int)format);
  /* refuse FIFOs and devices before the open (which would block on a FIFO) */
  if (!mexd_file_check_regular(path, "feature file", error))
    return NULL;
  int fd = g_open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK, 0);
  if (fd < 0) {
    int err_no = errno;
    return mexd_fail_null(error, MEXD_ERROR_IO, "%s: cannot open: %s", fname, g_strerror(err_no));
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    int err_no = errno;
    gboolean dir = S_ISDIR(st.st_mode);
    close(fd);
    return mexd_fail_null(error, MEXD_ERROR_IO, "%s: %s", fname,
                          dir      ? "is a directory, not a feature file"
                          : err_no ? g_strerror(err_no)
                                   : "is not a regular file");
  }
  if (st.st_size == 0) {
    close(fd);
    return mexd_fail_null(error, MEXD_ERROR_FORMAT, "%s: is empty", fname);
  }
  if (format == MEXD_BAG_AUTO && !detect_format(fd, st.st_size, path, fname, &format, error)) {
    close(fd);
    return NULL;
  }

  if (format == MEXD_BAG_H5) {
    gboolean magic = has_hdf5_magic(fd, st.st_size);
    close(fd);
    if (!magic)
      return mexd_fail_null(error, MEXD_ERROR_FORMAT, "%s: is not an HDF5 file (no HDF5 signature)",
                            fname);
#ifdef MEXD_HAVE_HDF5
    return mexd_bag_read_h5(path, fname, error);
#else
    return mexd_fail_null(error, MEXD_ERROR_UNSUPPORTED,
                          "%s: is an HDF5 file, but libmexd was built without HDF5", fname);
#endif
  }

  GError *map_error = NULL;
  GMappedFile *mapped = g_mapped_file_new_from_fd(fd, FALSE, &map_error);
  close(fd);
  if (!mapped) {
    mexd_fail(error, MEXD_ERROR_IO, "%s: cannot map: %s", fname, map_error->message);
    g_error_free(map_error);
    return NULL;
  }
  const char *data = g_mapped_file_get_contents(mapped);
  size_t len = g_mapped_file_get_length(mapped);
  MexdBag *bag = format == MEXD_BAG_NPY
                     ? mexd_bag_read_npy((const guint8 *)data, len, fname, error)
                     : mexd_bag_read_csv(data, len, fname, error);
  g_mapped_file_unref(mapped);
  return bag;
}
