/* features-h5.c: CLAM HDF5 feature files (features.h): the reader (`features`, `coords` and
 * their attributes, HDF5's own error stack turned into one message) and the atomic writers of
 * bags and patch files.  Without HDF5 the writers say so. */
#include "io/features-private.h"
#include "io/files.h"

#include "core/error.h"

#include <math.h>
#include <string.h>

#ifdef MEXD_HAVE_HDF5
#include <hdf5.h>
#endif

/* ---- CLAM HDF5 ---- */

#ifdef MEXD_HAVE_HDF5

/* HDF5 (serial) is not thread-safe, and its error-printing switch is global. */
static GMutex h5_lock;

typedef struct {
  H5E_auto2_t func;
  void *data;
} H5Quiet;

static void h5_begin(H5Quiet *q)
{
  g_mutex_lock(&h5_lock);
  q->func = NULL;
  q->data = NULL;
  H5Eget_auto2(H5E_DEFAULT, &q->func, &q->data);
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

static void h5_end(H5Quiet *q)
{
  H5Eset_auto2(H5E_DEFAULT, q->func, q->data);
  g_mutex_unlock(&h5_lock);
}

static herr_t h5_walk_cb(unsigned n, const H5E_error2_t *err, void *data)
{
  char **out = data;
  /* the plugin loader's complaints (no plugin directory) precede the real cause */
  if (!*out && err->desc && *err->desc && err->maj_num != H5E_PLUGIN)
    *out = g_strdup(err->desc);
  return 0;
}

/* The most specific message of HDF5's error stack (set by the call that just failed), then clears
 * the stack; free it. */
static char *h5_detail(void)
{
  char *d = NULL;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, h5_walk_cb, &d);
  H5Eclear2(H5E_DEFAULT);
  return d ? d : g_strdup("unknown HDF5 error");
}

static void h5_close_id(hid_t *id)
{
  if (*id >= 0)
    H5Idec_ref(*id);
  *id = H5I_INVALID_HID;
}

typedef struct {
  GString *s;
  guint count;
} H5List;

static herr_t h5_list_cb(hid_t group, const char *name, const H5L_info_t *info, void *data)
{
  H5List *l = data;
  if (info->type != H5L_TYPE_HARD)
    return 0;
  hid_t obj = H5Oopen(group, name, H5P_DEFAULT);
  if (obj < 0) {
    H5Eclear2(H5E_DEFAULT);
    return 0;
  }
  if (H5Iget_type(obj) == H5I_DATASET) {
    if (l->count < 20)
      g_string_append_printf(l->s, "%s%s", l->count ? ", " : "", name);
    l->count++;
  }
  H5Oclose(obj);
  return 0;
}

/* The datasets of the file, "a, grp/b" (at most 20, then a count). */
static char *h5_list_datasets(hid_t file)
{
  H5List l = {g_string_new(NULL), 0};
  H5Lvisit(file, H5_INDEX_NAME, H5_ITER_INC, h5_list_cb, &l);
  H5Eclear2(H5E_DEFAULT);
  if (l.count == 0)
    g_string_assign(l.s, "it has no datasets");
  else if (l.count > 20)
    g_string_append_printf(l.s, " and %u more", l.count - 20);
  return g_string_free(l.s, FALSE);
}

/* The shape of dataset `name` as [rows, cols], leading dims of 1 dropped. */
static gboolean h5_shape2(hid_t dset, const char *name, const char *fname, int64_t *rows,
                          int64_t *cols, GError **error)
{
  hid_t space = H5Dget_space(dset);
  if (space < 0) {
    g_autofree char *detail = h5_detail();
    return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: cannot read the shape of dataset %s: %s", fname,
                     name, detail);
  }
  int rank = H5Sget_simple_extent_ndims(space);
  hsize_t dims[H5S_MAX_RANK];
  if (rank > 0)
    H5Sget_simple_extent_dims(space, dims, NULL);
  H5Sclose(space);
  g_autoptr(GString) shape = g_string_new("[");
  for (int i = 0; i < rank; i++)
    g_string_append_printf(shape, "%s%" PRIu64, i ? ", " : "", (uint64_t)dims[i]);
  g_string_append_c(shape, ']');
  int first = 0;
  while (rank - first > 2 && dims[first] == 1)
    first++;
  if (rank - first != 2)
    return mexd_fail(error, MEXD_ERROR_FORMAT,
                     "%s: dataset %s has %s %s; expected 2 dimensions [N, %s] (leading "
                     "dimensions of 1 are allowed)",
                     fname, name, rank <= 0 ? "no shape" : "shape",
                     rank <= 0 ? "(a scalar)" : shape->str,
                     strcmp(name, "coords") == 0 ? "2" : "D");
  if (dims[first] > (hsize_t)INT64_MAX || dims[first + 1] > (hsize_t)INT64_MAX)
    return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: dataset %s has a shape too large: %s", fname,
                     name, shape->str);
  *rows = (int64_t)dims[first];
  *cols = (int64_t)dims[first + 1];
  return TRUE;
}

static const char *h5_class_name(H5T_class_t c)
{
  switch (c) {
  case H5T_INTEGER: return "integer";
  case H5T_FLOAT: return "float";
  case H5T_STRING: return "string";
  case H5T_BITFIELD: return "bitfield";
  case H5T_OPAQUE: return "opaque";
  case H5T_COMPOUND: return "compound";
  case H5T_REFERENCE: return "reference";
  case H5T_ENUM: return "enum";
  case H5T_VLEN: return "variable-length";
  case H5T_ARRAY: return "array";
  default: return "unknown";
  }
}

static H5T_class_t h5_dataset_class(hid_t dset)
{
  hid_t type = H5Dget_type(dset);
  if (type < 0)
    return H5T_NO_CLASS;
  H5T_class_t c = H5Tget_class(type);
  H5Tclose(type);
  return c;
}

/* Integer attribute `name` of `obj` into *out (-1 when absent). */
static gboolean h5_int_attr(hid_t obj, const char *name, const char *fname, int *out,
                            GError **error)
{
  *out = -1;
  htri_t exists = H5Aexists(obj, name);
  if (exists == 0)
    return TRUE;
  hid_t attr = exists > 0 ? H5Aopen(obj, name, H5P_DEFAULT) : H5I_INVALID_HID;
  if (attr < 0) {
    g_autofree char *detail = h5_detail();
    return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: cannot open attribute %s of coords: %s", fname,
                     name, detail);
  }
  hid_t type = H5Aget_type(attr), space = H5Aget_space(attr);
  H5T_class_t cls = type >= 0 ? H5Tget_class(type) : H5T_NO_CLASS;
  hssize_t npoints = space >= 0 ? H5Sget_simple_extent_npoints(space) : -1;
  double v = 0;
  gboolean ok = FALSE;
  if ((cls == H5T_INTEGER || cls == H5T_FLOAT) && npoints == 1) {
    if (H5Aread(attr, H5T_NATIVE_DOUBLE, &v) >= 0) {
      ok = TRUE;
    } else {
      g_autofree char *detail = h5_detail();
      mexd_fail(error, MEXD_ERROR_FORMAT, "%s: cannot read attribute %s of coords: %s", fname, name,
                detail);
    }
  } else {
    mexd_fail(error, MEXD_ERROR_FORMAT,
              "%s: attribute %s of coords is not one number (%s, %" G_GINT64_FORMAT " values)",
              fname, name, h5_class_name(cls), (gint64)npoints);
  }
  h5_close_id(&type);
  h5_close_id(&space);
  H5Aclose(attr);
  if (!ok)
    return FALSE;
  if (!(v >= 0 && v <= G_MAXINT && v == floor(v)))
    return mexd_fail(error, MEXD_ERROR_FORMAT,
                     "%s: attribute %s of coords is %g; a non-negative integer is expected", fname,
                     name, v);
  *out = (int)v;
  return TRUE;
}

/* Reads `coords` (known to exist) and its attributes into `bag`. */
static gboolean h5_read_coords(hid_t file, MexdBag *bag, const char *fname, GError **error)
{
  hid_t dset = H5Dopen2(file, "coords", H5P_DEFAULT);
  if (dset < 0) {
    g_autofree char *detail = h5_detail();
    return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: cannot open coords as a dataset: %s", fname,
                     detail);
  }
  gboolean ok = FALSE;
  int64_t rows = 0, cols = 0;
  int64_t *tmp = NULL;
  H5T_class_t cls = h5_dataset_class(dset);
  if (cls != H5T_INTEGER) {
    mexd_fail(error, MEXD_ERROR_FORMAT, "%s: dataset coords has %s type; integers are expected",
              fname, h5_class_name(cls));
    goto out;
  }
  if (!h5_shape2(dset, "coords", fname, &rows, &cols, error))
    goto out;
  if (rows != bag->n || cols != 2) {
    mexd_fail(error, MEXD_ERROR_FORMAT,
              "%s: dataset coords has shape [%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT
              "] but features has %" G_GINT64_FORMAT " rows; expected [%" G_GINT64_FORMAT ", 2]",
              fname, rows, cols, bag->n, bag->n);
    goto out;
  }
  tmp = g_try_malloc((size_t)rows * 2 * sizeof(int64_t));
  bag->coords = g_try_malloc((size_t)rows * 2 * sizeof(int32_t));
  if (!tmp || !bag->coords) {
    mexd_fail(error, MEXD_ERROR_NO_MEMORY, "%s: cannot allocate %" G_GINT64_FORMAT " coords", fname,
              rows);
    goto out;
  }
  if (H5Dread(dset, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, tmp) < 0) {
    g_autofree char *detail = h5_detail();
    mexd_fail(error, MEXD_ERROR_FORMAT, "%s: cannot read dataset coords: %s", fname, detail);
    goto out;
  }
  for (int64_t i = 0; i < rows * 2; i++) {
    if (tmp[i] < INT32_MIN || tmp[i] > INT32_MAX) {
      mexd_fail(error, MEXD_ERROR_FORMAT,
                "%s: coords of instance %" G_GINT64_FORMAT " (%c = %" G_GINT64_FORMAT
                ") do not fit in 32 bits",
                fname, i / 2, i % 2 ? 'y' : 'x', tmp[i]);
      goto out;
    }
    bag->coords[i] = (int32_t)tmp[i];
  }
  ok = h5_int_attr(dset, "patch_level", fname, &bag->patch_level, error) &&
       h5_int_attr(dset, "patch_size", fname, &bag->patch_size, error);
out:
  g_free(tmp);
  if (!ok) {
    g_free(bag->coords);
    bag->coords = NULL;
  }
  H5Dclose(dset);
  return ok;
}

/* Whether the root of `file` has a link `name` (FALSE on errors too). */
static gboolean h5_has(hid_t file, const char *name)
{
  htri_t r = H5Lexists(file, name, H5P_DEFAULT);
  if (r < 0)
    H5Eclear2(H5E_DEFAULT);
  return r > 0;
}

static MexdBag *h5_read_locked(const char *path, const char *fname, GError **error)
{
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  /* close whatever remains open when the file is closed (attributes of failed reads...) */
  H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG);
  hid_t file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
  if (file < 0) {
    g_autofree char *detail = h5_detail(); /* before H5Pclose() clears the error stack */
    H5Pclose(fapl);
    return mexd_fail_null(error, MEXD_ERROR_FORMAT, "%s: cannot open as an HDF5 file: %s", fname,
                          detail);
  }
  H5Pclose(fapl);
  MexdBag *bag = NULL;
  hid_t dset = H5I_INVALID_HID;
  if (!h5_has(file, "features")) {
    g_autofree char *list = h5_list_datasets(file);
    mexd_fail(error, MEXD_ERROR_FORMAT,
              "%s: has no dataset \"features\" (a CLAM feature file is expected; %s%s)", fname,
              strstr(list, "no datasets") ? "" : "its datasets: ", list);
    goto out;
  }
  dset = H5Dopen2(file, "features", H5P_DEFAULT);
  if (dset < 0) {
    g_autofree char *detail = h5_detail();
    mexd_fail(error, MEXD_ERROR_FORMAT, "%s: cannot open features as a dataset: %s", fname, detail);
    goto out;
  }
  H5T_class_t cls = h5_dataset_class(dset);
  if (cls == H5T_INTEGER) {
    mexd_fail(error, MEXD_ERROR_UNSUPPORTED,
              "%s: dataset features has integer type; float16, float32 or float64 is expected",
              fname);
    goto out;
  }
  if (cls != H5T_FLOAT) {
    mexd_fail(error, MEXD_ERROR_FORMAT,
              "%s: dataset features has %s type, not numbers; float32 is expected", fname,
              h5_class_name(cls));
    goto out;
  }
  int64_t n = 0, d = 0;
  if (!h5_shape2(dset, "features", fname, &n, &d, error))
    goto out;
  if (n == 0 || d == 0) {
    mexd_fail(error, MEXD_ERROR_FORMAT, "%s: dataset features has %s", fname,
              n == 0 ? "no instances (0 rows)" : "no features (0 columns)");
    goto out;
  }
  bag = mexd_bag_alloc(n, d, fname, error);
  if (!bag)
    goto out;
  if (H5Dread(dset, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, bag->features) < 0) {
    g_autofree char *detail = h5_detail();
    mexd_fail(error, MEXD_ERROR_FORMAT, "%s: cannot read dataset features: %s", fname, detail);
    g_clear_pointer(&bag, mexd_bag_free);
    goto out;
  }
  if (h5_has(file, "coords") && !h5_read_coords(file, bag, fname, error))
    g_clear_pointer(&bag, mexd_bag_free);
out:
  h5_close_id(&dset);
  H5Fclose(file);
  H5Eclear2(H5E_DEFAULT);
  return bag;
}

MexdBag *mexd_bag_read_h5(const char *path, const char *fname, GError **error)
{
  H5Quiet q;
  h5_begin(&q);
  MexdBag *bag = h5_read_locked(path, fname, error);
  h5_end(&q);
  return bag;
}

/* In the writers below: run an HDF5 call; on failure note what was being done and leave. */
#define H5_TRY(expr, what)                                                                         \
  do {                                                                                             \
    if ((expr) < 0) {                                                                              \
      *step = what;                                                                                \
      goto out;                                                                                    \
    }                                                                                              \
  } while (0)

/* Writes a scalar (count 1) or 1-D int64 / float64 attribute `name` on `obj`; < 0 on failure. */
static herr_t h5_put_attr(hid_t obj, const char *name, gboolean is_float, int count,
                          const int64_t *iv, const double *fv)
{
  hsize_t dim = (hsize_t)count;
  hid_t space = count == 1 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &dim, NULL);
  if (space < 0)
    return -1;
  hid_t attr = H5Acreate2(obj, name, is_float ? H5T_IEEE_F64LE : H5T_STD_I64LE, space,
                          H5P_DEFAULT, H5P_DEFAULT);
  herr_t r = attr < 0 ? -1
             : is_float ? H5Awrite(attr, H5T_NATIVE_DOUBLE, fv)
                        : H5Awrite(attr, H5T_NATIVE_INT64, iv);
  if (attr >= 0)
    H5Aclose(attr);
  H5Sclose(space);
  return r;
}

/* Writes the datasets of `bag` into the new file `tmp`; on failure *step says what failed. */
static gboolean h5_write_locked(const char *tmp, const MexdBag *bag, const char **step,
                                char **detail)
{
  hid_t file = H5I_INVALID_HID, space = H5I_INVALID_HID, dset = H5I_INVALID_HID;
  gboolean ok = FALSE;
  H5_TRY(file = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), "create the file");
  hsize_t dims[2] = {(hsize_t)bag->n, (hsize_t)bag->d};
  H5_TRY(space = H5Screate_simple(2, dims, NULL), "create the features dataspace");
  H5_TRY(dset = H5Dcreate2(file, "features", H5T_IEEE_F32LE, space, H5P_DEFAULT, H5P_DEFAULT,
                           H5P_DEFAULT),
         "create dataset features");
  H5_TRY(H5Dwrite(dset, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, bag->features),
         "write dataset features");
  h5_close_id(&dset);
  h5_close_id(&space);
  if (bag->coords) {
    dims[1] = 2;
    H5_TRY(space = H5Screate_simple(2, dims, NULL), "create the coords dataspace");
    H5_TRY(dset = H5Dcreate2(file, "coords", H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT,
                             H5P_DEFAULT),
           "create dataset coords");
    H5_TRY(H5Dwrite(dset, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, bag->coords),
           "write dataset coords");
    const struct {
      const char *name;
      int value;
    } attrs[] = {{"patch_level", bag->patch_level}, {"patch_size", bag->patch_size}};
    for (size_t i = 0; i < G_N_ELEMENTS(attrs); i++) {
      int64_t v = attrs[i].value;
      if (v >= 0)
        H5_TRY(h5_put_attr(dset, attrs[i].name, FALSE, 1, &v, NULL),
               "write an attribute of coords");
    }
  }
  h5_close_id(&dset);
  hid_t f = file;
  file = H5I_INVALID_HID;
  H5_TRY(H5Fclose(f), "close the file");
  ok = TRUE;
out:
  if (!ok)
    *detail = h5_detail();
  h5_close_id(&dset);
  h5_close_id(&space);
  h5_close_id(&file);
  H5Eclear2(H5E_DEFAULT);
  return ok;
}

/* Writes the patch file `pf` (CLAM's patch layout) into the new file `tmp`. */
static gboolean h5_write_patches_locked(const char *tmp, const MexdPatchFile *pf,
                                        const char **step, char **detail)
{
  hid_t file = H5I_INVALID_HID, space = H5I_INVALID_HID, dset = H5I_INVALID_HID;
  hid_t aspace = H5I_INVALID_HID, attr = H5I_INVALID_HID, stype = H5I_INVALID_HID;
  gboolean ok = FALSE;
  H5_TRY(file = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), "create the file");
  /* a dataset of 0 rows is a valid patch file (a slide without tissue): HDF5 takes 0 dims */
  hsize_t dims[2] = {(hsize_t)pf->n, 2};
  H5_TRY(space = H5Screate_simple(2, dims, NULL), "create the coords dataspace");
  H5_TRY(dset = H5Dcreate2(file, "coords", H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT,
                           H5P_DEFAULT),
         "create dataset coords");
  if (pf->n > 0)
    H5_TRY(H5Dwrite(dset, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, pf->coords),
           "write dataset coords");
  const struct {
    const char *name;
    int count; /* 1: scalar */
    gboolean is_float;
    int64_t i[2];
    double f[2];
  } attrs[] = {
      {"patch_size", 1, FALSE, {pf->patch_size, 0}, {0, 0}},
      {"patch_level", 1, FALSE, {pf->patch_level, 0}, {0, 0}},
      {"downsample", 2, TRUE, {0, 0}, {pf->downsample[0], pf->downsample[1]}},
      {"level_dim", 2, FALSE, {pf->level_dim[0], pf->level_dim[1]}, {0, 0}},
      {"downsampled_level_dim", 2, FALSE, {pf->level_dim[0], pf->level_dim[1]}, {0, 0}},
      {"patch_size_level0", 1, FALSE, {pf->patch_size_level0, 0}, {0, 0}},
      {"mpp", 1, TRUE, {0, 0}, {pf->mpp, 0}},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(attrs); i++)
    if (strcmp(attrs[i].name, "mpp") || pf->mpp > 0)
      H5_TRY(h5_put_attr(dset, attrs[i].name, attrs[i].is_float, attrs[i].count, attrs[i].i,
                         attrs[i].f),
             "write an attribute of coords");
  if (pf->name) {
    H5_TRY(stype = H5Tcopy(H5T_C_S1), "make a string type");
    /* a variable-length UTF-8 string, as h5py writes a Python str */
    H5_TRY(H5Tset_size(stype, H5T_VARIABLE), "size a string type");
    H5_TRY(H5Tset_cset(stype, H5T_CSET_UTF8), "set a string type's character set");
    H5_TRY(aspace = H5Screate(H5S_SCALAR), "create an attribute dataspace");
    H5_TRY(attr = H5Acreate2(dset, "name", stype, aspace, H5P_DEFAULT, H5P_DEFAULT),
           "create attribute name");
    H5_TRY(H5Awrite(attr, stype, &pf->name), "write attribute name");
  }
  h5_close_id(&attr);
  h5_close_id(&dset);
  hid_t f = file;
  file = H5I_INVALID_HID;
  H5_TRY(H5Fclose(f), "close the file");
  ok = TRUE;
out:
  if (!ok)
    *detail = h5_detail();
  if (stype >= 0)
    H5Tclose(stype);
  h5_close_id(&attr);
  h5_close_id(&aspace);
  h5_close_id(&dset);
  h5_close_id(&space);
  h5_close_id(&file);
  H5Eclear2(H5E_DEFAULT);
  return ok;
}

#endif /* MEXD_HAVE_HDF5 */

#ifdef MEXD_HAVE_HDF5
/* Runs `write` (under the HDF5 lock) on a temporary file beside `path`, flushes it and renames
 * it over `path`; on failure `path` is untouched. */
static gboolean h5_write_atomic(const char *path, const char *fname,
                                gboolean (*write)(const char *tmp, const void *data,
                                                  const char **step, char **detail),
                                const void *data, GError **error)
{
  MexdAtomicFile *f = mexd_atomic_file_new(path, error);
  if (!f)
    return FALSE;
  const char *step = NULL;
  g_autofree char *detail = NULL;
  H5Quiet q;
  h5_begin(&q);
  gboolean ok = write(mexd_atomic_file_temp_path(f), data, &step, &detail);
  h5_end(&q);
  if (!ok) {
    mexd_atomic_file_discard(f);
    return mexd_fail(error, MEXD_ERROR_IO, "%s: cannot write: failed to %s: %s", fname, step,
                     detail ? detail : "HDF5 error");
  }
  /* HDF5 wrote through its own descriptor of the same file: commit flushes it through ours */
  return mexd_atomic_file_commit(f, error);
}

static gboolean write_bag_cb(const char *tmp, const void *data, const char **step, char **detail)
{
  return h5_write_locked(tmp, data, step, detail);
}

static gboolean write_patches_cb(const char *tmp, const void *data, const char **step,
                                 char **detail)
{
  return h5_write_patches_locked(tmp, data, step, detail);
}
#endif

gboolean mexd_bag_write_h5(const char *path, const MexdBag *bag, GError **error)
{
  if (!path || !bag)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "bag writer: %s is NULL",
                     !path ? "the path" : "the bag");
  g_autofree char *fname = g_filename_display_name(path);
  if (bag->n < 1 || bag->d < 1 || !bag->features)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "%s: cannot write a bag of %" G_GINT64_FORMAT " x %" G_GINT64_FORMAT
                     " features%s",
                     fname, bag->n, bag->d, bag->features ? "" : " (NULL)");
#ifndef MEXD_HAVE_HDF5
  return mexd_fail(error, MEXD_ERROR_UNSUPPORTED,
                   "%s: cannot write HDF5: libmexd was built without HDF5", fname);
#else
  return h5_write_atomic(path, fname, write_bag_cb, bag, error);
#endif
}

gboolean mexd_patches_write_h5(const char *path, const MexdPatchFile *pf, GError **error)
{
  if (!path || !pf)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "patch writer: %s is NULL",
                     !path ? "the path" : "the patch file");
  g_autofree char *fname = g_filename_display_name(path);
  if (pf->n < 0 || (pf->n > 0 && !pf->coords))
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "%s: cannot write %" G_GINT64_FORMAT
                     " patches without coordinates", fname, pf->n);
#ifndef MEXD_HAVE_HDF5
  return mexd_fail(error, MEXD_ERROR_UNSUPPORTED,
                   "%s: cannot write HDF5: libmexd was built without HDF5", fname);
#else
  return h5_write_atomic(path, fname, write_patches_cb, pf, error);
#endif
}
