/* features-npy.c: NumPy .npy feature files (features.h): the header parsed, every length
 * checked, nothing read outside the file. */
#include "io/features-private.h"

#include "core/error.h"
#include "core/tensor.h"

#include <inttypes.h>
#include <math.h>
#include <string.h>

const guint8 MEXD_NPY_MAGIC[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};


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

MexdBag *mexd_bag_read_npy(const guint8 *p, size_t len, const char *fname, GError **error)
{
  if (len < 10 || memcmp(p, MEXD_NPY_MAGIC, sizeof MEXD_NPY_MAGIC) != 0)
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

  MexdBag *bag = mexd_bag_alloc(n, d, fname, error);
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

