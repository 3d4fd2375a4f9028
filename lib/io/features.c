/* features.c: bags of instance features from CLAM HDF5, DSMIL/IBMIL CSV and NumPy .npy files, and
 * the CLAM HDF5 writer.  See features.h for the formats and the rules enforced. */
#include "io/files.h"
#include "io/features.h"

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

#ifdef MEXD_HAVE_HDF5
#include <hdf5.h>
#endif

static const guint8 HDF5_MAGIC[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
static const guint8 NPY_MAGIC[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
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

/* A new bag of n x d features (uninitialised), no coords.  MEXD_ERROR_NO_MEMORY naming `fname`
 * when n*d floats do not fit. */
static MexdBag *bag_new(int64_t n, int64_t d, const char *fname, GError **error)
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

/* ---- NumPy .npy ---- */

/* The header of a .npy file is the repr of a Python dict, e.g.
 * "{'descr': '<f4', 'fortran_order': False, 'shape': (5, 3), }".  This parses the subset numpy
 * writes: string keys; values that are strings, True/False or tuples of non-negative integers. */

#define NPY_MAX_DIMS 32

typedef struct {
  const char *p, *end;
  const char *fname;
} NpyCur;

typedef struct {
  char *descr; /* NULL when absent */
  int fortran; /* -1 when absent */
  int ndim;    /* -1 when absent */
  int64_t shape[NPY_MAX_DIMS];
} NpyHeader;

static void npy_ws(NpyCur *c)
{
  while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
    c->p++;
}

static gboolean npy_bad(NpyCur *c, GError **error, const char *what)
{
  return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: malformed .npy header: %s", c->fname, what);
}

/* A quoted string ('...' or "...", no escapes) at c->p; a new string in *out. */
static gboolean npy_string(NpyCur *c, char **out, GError **error)
{
  if (c->p >= c->end || (*c->p != '\'' && *c->p != '"'))
    return npy_bad(c, error, "a string was expected");
  char q = *c->p++;
  const char *s = c->p;
  while (c->p < c->end && *c->p != q) {
    if (*c->p == '\\')
      return npy_bad(c, error, "escapes in strings are not supported");
    c->p++;
  }
  if (c->p >= c->end)
    return npy_bad(c, error, "an unterminated string");
  *out = g_strndup(s, (gsize)(c->p - s));
  c->p++;
  return TRUE;
}

static gboolean npy_word(NpyCur *c, const char *w)
{
  size_t n = strlen(w);
  if ((size_t)(c->end - c->p) >= n && memcmp(c->p, w, n) == 0) {
    c->p += n;
    return TRUE;
  }
  return FALSE;
}

/* A tuple of non-negative integers, "()", "(5,)", "(5, 3)"; Python 2's "5L" is accepted. */
static gboolean npy_tuple(NpyCur *c, NpyHeader *h, GError **error)
{
  c->p++; /* '(' */
  h->ndim = 0;
  for (;;) {
    npy_ws(c);
    if (c->p < c->end && *c->p == ')') {
      c->p++;
      return TRUE;
    }
    if (c->p >= c->end || !g_ascii_isdigit(*c->p))
      return npy_bad(c, error, "the shape is not a tuple of non-negative integers");
    int64_t v = 0;
    int digits = 0;
    while (c->p < c->end && g_ascii_isdigit(*c->p)) {
      if (++digits > 18)
        return npy_bad(c, error, "a dimension of the shape is too large");
      v = v * 10 + (*c->p++ - '0');
    }
    if (c->p < c->end && *c->p == 'L')
      c->p++;
    if (h->ndim >= NPY_MAX_DIMS)
      return npy_bad(c, error, "the shape has too many dimensions");
    h->shape[h->ndim++] = v;
    npy_ws(c);
    if (c->p < c->end && *c->p == ',')
      c->p++;
    else if (c->p >= c->end || *c->p != ')')
      return npy_bad(c, error, "the shape is not a tuple of non-negative integers");
  }
}

static gboolean npy_parse_header(const char *text, size_t len, const char *fname, NpyHeader *h,
                                 GError **error)
{
  NpyCur c = {text, text + len, fname};
  npy_ws(&c);
  if (c.p >= c.end || *c.p != '{')
    return npy_bad(&c, error, "it is not a dict");
  c.p++;
  for (;;) {
    npy_ws(&c);
    if (c.p < c.end && *c.p == '}') {
      c.p++;
      break;
    }
    g_autofree char *key = NULL;
    if (!npy_string(&c, &key, error))
      return FALSE;
    npy_ws(&c);
    if (c.p >= c.end || *c.p != ':')
      return npy_bad(&c, error, "':' was expected after a key");
    c.p++;
    npy_ws(&c);
    if (c.p >= c.end)
      return npy_bad(&c, error, "it ends inside the dict");
    gboolean is_descr = strcmp(key, "descr") == 0;
    gboolean is_fortran = strcmp(key, "fortran_order") == 0;
    gboolean is_shape = strcmp(key, "shape") == 0;
    if (*c.p == '\'' || *c.p == '"') {
      g_autofree char *s = NULL;
      if (!npy_string(&c, &s, error))
        return FALSE;
      if (is_descr) {
        g_free(h->descr);
        h->descr = g_steal_pointer(&s);
      } else if (is_fortran || is_shape) {
        return npy_bad(&c, error, is_shape ? "shape is a string" : "fortran_order is a string");
      }
    } else if (*c.p == '[') {
      if (is_descr)
        return mexd_fail(error, MEXD_ERROR_UNSUPPORTED,
                         "%s: the array has a structured dtype; a plain float array is expected",
                         fname);
      return npy_bad(&c, error, "a list value");
    } else if (*c.p == '(') {
      if (!is_shape)
        return npy_bad(&c, error, "a tuple value for a key other than shape");
      if (!npy_tuple(&c, h, error))
        return FALSE;
    } else if (*c.p == 'T' || *c.p == 'F') {
      gboolean value = npy_word(&c, "True");
      if (!value && !npy_word(&c, "False"))
        return npy_bad(&c, error, "a value numpy does not write");
      if (is_descr || is_shape)
        return npy_bad(&c, error, is_shape ? "shape is a boolean" : "descr is a boolean");
      if (is_fortran)
        h->fortran = value;
    } else {
      return npy_bad(&c, error, "a value numpy does not write");
    }
    npy_ws(&c);
    if (c.p < c.end && *c.p == ',')
      c.p++;
    else if (c.p >= c.end || *c.p != '}')
      return npy_bad(&c, error, "',' or '}' was expected after a value");
  }
  npy_ws(&c);
  if (c.p != c.end)
    return npy_bad(&c, error, "text after the dict");
  if (!h->descr || h->fortran < 0 || h->ndim < 0)
    return npy_bad(&c, error,
                   !h->descr        ? "no 'descr' key"
                   : h->fortran < 0 ? "no 'fortran_order' key"
                                    : "no 'shape' key");
  return TRUE;
}

static char *npy_shape_text(const NpyHeader *h)
{
  GString *s = g_string_new("(");
  for (int i = 0; i < h->ndim; i++)
    g_string_append_printf(s, "%s%" G_GINT64_FORMAT, i ? ", " : "", h->shape[i]);
  g_string_append(s, h->ndim == 1 ? ",)" : ")");
  return g_string_free(s, FALSE);
}

static MexdBag *read_npy(const guint8 *p, size_t len, const char *fname, GError **error)
{
  if (len < 10 || memcmp(p, NPY_MAGIC, sizeof NPY_MAGIC) != 0)
    return mexd_fail_null(error, MEXD_ERROR_FORMAT,
                          "%s: is not a NumPy .npy file (no \\x93NUMPY magic)", fname);
  int major = p[6], minor = p[7];
  size_t hstart, hlen;
  if (major == 1) {
    hstart = 10;
    hlen = (size_t)p[8] | (size_t)p[9] << 8;
  } else if (major == 2 || major == 3) {
    if (len < 12)
      return mexd_fail_null(error, MEXD_ERROR_FORMAT, "%s: is truncated inside its .npy header",
                            fname);
    hstart = 12;
    hlen = (size_t)p[8] | (size_t)p[9] << 8 | (size_t)p[10] << 16 | (size_t)p[11] << 24;
  } else {
    return mexd_fail_null(error, MEXD_ERROR_UNSUPPORTED,
                          "%s: .npy format version %d.%d is not supported (1.0, 2.0, 3.0 are)",
                          fname, major, minor);
  }
  if (hlen > len - hstart)
    return mexd_fail_null(error, MEXD_ERROR_FORMAT,
                          "%s: is truncated inside its .npy header (%zu header bytes announced, "
                          "%zu in the file)",
                          fname, hlen, len - hstart);

  NpyHeader h = {.descr = NULL, .fortran = -1, .ndim = -1};
  gboolean ok = npy_parse_header((const char *)p + hstart, hlen, fname, &h, error);
  g_autofree char *descr = h.descr;
  if (!ok)
    return NULL;

  /* descr: byte order, kind, size */
  size_t elem = 0;
  gboolean big = FALSE;
  if (strlen(descr) == 3 && (descr[0] == '<' || descr[0] == '>' || descr[0] == '=') &&
      descr[1] == 'f' && (descr[2] == '2' || descr[2] == '4' || descr[2] == '8')) {
    elem = (size_t)(descr[2] - '0');
    big = descr[0] == '>';
  }
  if (!elem)
    return mexd_fail_null(error, MEXD_ERROR_UNSUPPORTED,
                          "%s: dtype '%s' is not supported; features must be float16, float32 "
                          "or float64",
                          fname, descr);
  g_autofree char *shape_text = npy_shape_text(&h);
  if (h.ndim != 2)
    return mexd_fail_null(error, MEXD_ERROR_FORMAT,
                          "%s: the array has shape %s (%d-D); a bag of features is 2-D (N, D)",
                          fname, shape_text, h.ndim);
  int64_t n = h.shape[0], d = h.shape[1];
  if (n == 0 || d == 0)
    return mexd_fail_null(error, MEXD_ERROR_FORMAT, "%s: the array has shape %s: %s", fname,
                          shape_text, n == 0 ? "no instances" : "no features");
  if (h.fortran && n > 1 && d > 1)
    return mexd_fail_null(error, MEXD_ERROR_UNSUPPORTED,
                          "%s: the array is stored in Fortran (column-major) order, which is not "
                          "supported; save it with np.save(path, np.ascontiguousarray(x))",
                          fname);

  size_t avail = len - hstart - hlen;
  if ((uint64_t)n > SIZE_MAX / elem / (uint64_t)d)
    return mexd_fail_null(error, MEXD_ERROR_FORMAT, "%s: the shape %s is too large", fname,
                          shape_text);
  size_t need = (size_t)n * (size_t)d * elem;
  if (avail < need)
    return mexd_fail_null(error, MEXD_ERROR_FORMAT,
                          "%s: is truncated: shape %s of '%s' needs %zu bytes of data, the file "
                          "has %zu",
                          fname, shape_text, descr, need, avail);
  if (avail > need)
    return mexd_fail_null(error, MEXD_ERROR_FORMAT,
                          "%s: has %zu bytes after the data of shape %s of '%s'", fname,
                          avail - need, shape_text, descr);

  MexdBag *bag = bag_new(n, d, fname, error);
  if (!bag)
    return NULL;
  const guint8 *src = p + hstart + hlen;
  size_t total = (size_t)n * (size_t)d;
  for (size_t i = 0; i < total; i++, src += elem) {
    guint8 b[8];
    for (size_t k = 0; k < elem; k++)
      b[k] = big ? src[elem - 1 - k] : src[k];
    if (elem == 2) {
      uint16_t v;
      memcpy(&v, b, 2);
      bag->features[i] = mexd_f16_to_f32(GUINT16_FROM_LE(v));
    } else if (elem == 4) {
      uint32_t v;
      float f;
      memcpy(&v, b, 4);
      v = GUINT32_FROM_LE(v);
      memcpy(&f, &v, 4);
      bag->features[i] = f;
    } else {
      uint64_t v;
      double f;
      memcpy(&v, b, 8);
      v = GUINT64_FROM_LE(v);
      memcpy(&f, &v, 8);
      bag->features[i] = (float)f;
    }
  }
  return bag;
}

/* ---- CSV ---- */

/* `s` without surrounding spaces/tabs and one pair of double quotes, in place. */
static char *csv_trim(char *s)
{
  for (int pass = 0; pass < 2; pass++) {
    while (*s == ' ' || *s == '\t')
      s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
      s[--n] = '\0';
    if (pass == 0 && n >= 2 && s[0] == '"' && s[n - 1] == '"') {
      s[n - 1] = '\0';
      s++;
    } else {
      break;
    }
  }
  return s;
}

/* Splits `line` (modified) at commas into `cells` (cleared first, pointers into `line`). */
static void csv_split(char *line, GPtrArray *cells)
{
  g_ptr_array_set_size(cells, 0);
  for (char *s = line;;) {
    char *comma = strchr(s, ',');
    if (comma)
      *comma = '\0';
    g_ptr_array_add(cells, csv_trim(s));
    if (!comma)
      break;
    s = comma + 1;
  }
}

static gboolean csv_number(const char *s, double *out)
{
  if (!*s)
    return FALSE;
  char *end = NULL;
  double v = g_ascii_strtod(s, &end);
  if (end == s || *end)
    return FALSE;
  *out = v;
  return TRUE;
}

/* Whether the first line's `cells` are a header (see features.h). */
static gboolean csv_is_header(GPtrArray *cells)
{
  for (guint i = 0; i < cells->len; i++) {
    double v;
    if (!csv_number(g_ptr_array_index(cells, i), &v))
      return TRUE;
  }
  for (guint i = 0; i < cells->len; i++) {
    char want[16];
    g_snprintf(want, sizeof want, "%u", i);
    if (strcmp(g_ptr_array_index(cells, i), want) != 0)
      return FALSE;
  }
  return TRUE;
}

static gboolean csv_bad_cell(const char *fname, guint64 lineno, guint col, const char *cell,
                             GError **error)
{
  if (!*cell)
    return mexd_fail(error, MEXD_ERROR_FORMAT,
                     "%s: line %" G_GUINT64_FORMAT ", column %u is empty (write a missing value as "
                     "nan)",
                     fname, lineno, col);
  g_autofree char *head = g_strndup(cell, 40);
  g_autofree char *shown = g_utf8_make_valid(head, -1);
  return mexd_fail(error, MEXD_ERROR_FORMAT,
                   "%s: line %" G_GUINT64_FORMAT ", column %u is not a number: \"%s%s\"", fname,
                   lineno, col, shown, strlen(cell) > 40 ? "..." : "");
}

static MexdBag *read_csv(const char *p, size_t len, const char *fname, GError **error)
{
  const char *end = p + len;
  if (len >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0)
    p += 3;

  g_autoptr(GPtrArray) cells = g_ptr_array_new();
  char *buf = NULL;
  size_t buf_size = 0;
  float *feat = NULL;
  int64_t n = 0, d = -1, max_rows = 0;
  guint skip = 0; /* 1 when the first column is a pandas index */
  gboolean header = FALSE;
  guint64 lineno = 0;
  gboolean ok = TRUE;

  while (ok && p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    const char *line_end = nl ? nl : end;
    size_t line_len = (size_t)(line_end - p);
    if (line_len > 0 && line_end[-1] == '\r')
      line_len--;
    lineno++;
    const char *line = p;
    p = nl ? nl + 1 : end;

    if (memchr(line, '\0', line_len)) {
      ok = mexd_fail(error, MEXD_ERROR_FORMAT, "%s: line %" G_GUINT64_FORMAT " has a NUL byte",
                     fname, lineno);
      break;
    }
    if (line_len + 1 > buf_size) {
      buf_size = MAX(line_len + 1, 2 * buf_size);
      buf = g_realloc(buf, buf_size);
    }
    memcpy(buf, line, line_len);
    buf[line_len] = '\0';
    if (!*csv_trim(buf))
      continue;                  /* a blank line */
    memcpy(buf, line, line_len); /* csv_trim wrote NULs */
    buf[line_len] = '\0';
    csv_split(buf, cells);

    if (d < 0) {
      /* the first line: header or data; it fixes D */
      header = csv_is_header(cells);
      if (header && cells->len > 1) {
        const char *first = g_ptr_array_index(cells, 0);
        if (!*first || strcmp(first, "Unnamed: 0") == 0)
          skip = 1;
      }
      d = (int64_t)cells->len - skip;
      /* every further line holds at most one row: an upper bound for the allocation */
      int64_t lines_left = 1;
      for (const char *q = p; (q = memchr(q, '\n', (size_t)(end - q))) != NULL; q++)
        lines_left++;
      max_rows = header ? lines_left : lines_left + 1;
      if ((uint64_t)max_rows > SIZE_MAX / sizeof(float) / (uint64_t)d) {
        ok = mexd_fail(error, MEXD_ERROR_NO_MEMORY, "%s: too many values", fname);
        break;
      }
      feat = g_try_malloc((size_t)max_rows * (size_t)d * sizeof(float));
      if (!feat) {
        ok = mexd_fail(error, MEXD_ERROR_NO_MEMORY,
                       "%s: cannot allocate memory for up to %" G_GINT64_FORMAT
                       " x %" G_GINT64_FORMAT " features",
                       fname, max_rows, d);
        break;
      }
      if (header)
        continue;
    }

    if ((int64_t)cells->len != d + skip) {
      ok = mexd_fail(error, MEXD_ERROR_FORMAT,
                     "%s: line %" G_GUINT64_FORMAT " has %" G_GINT64_FORMAT
                     " values, expected %" G_GINT64_FORMAT,
                     fname, lineno, (int64_t)cells->len - skip, d);
      break;
    }
    g_assert(n < max_rows);
    float *row = feat + (size_t)n * (size_t)d;
    for (guint j = skip; j < cells->len; j++) {
      const char *cell = g_ptr_array_index(cells, j);
      double v;
      if (!csv_number(cell, &v)) {
        ok = csv_bad_cell(fname, lineno, j + 1, cell, error);
        break;
      }
      row[j - skip] = (float)v;
    }
    n++;
  }
  g_free(buf);
  if (ok && d < 0)
    ok = mexd_fail(error, MEXD_ERROR_FORMAT, "%s: has no lines but blank ones", fname);
  else if (ok && n == 0)
    ok = mexd_fail(error, MEXD_ERROR_FORMAT, "%s: has a header line but no data lines", fname);
  if (!ok) {
    g_free(feat);
    return NULL;
  }
  MexdBag *bag = g_new0(MexdBag, 1);
  bag->n = n;
  bag->d = d;
  bag->features = n < max_rows ? g_realloc(feat, (size_t)n * (size_t)d * sizeof(float)) : feat;
  bag->patch_level = -1;
  bag->patch_size = -1;
  return bag;
}

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
  bag = bag_new(n, d, fname, error);
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

static MexdBag *read_h5(const char *path, const char *fname, GError **error)
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
  if (n >= sizeof NPY_MAGIC && memcmp(head, NPY_MAGIC, sizeof NPY_MAGIC) == 0)
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
    return read_h5(path, fname, error);
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
  MexdBag *bag = format == MEXD_BAG_NPY ? read_npy((const guint8 *)data, len, fname, error)
                                        : read_csv(data, len, fname, error);
  g_mapped_file_unref(mapped);
  return bag;
}
