/* safetensors.c: the safetensors reader (mapped file, strict validation) and writer (json-glib
 * header, atomic write).  See safetensors.h for the format and the rules enforced. */
#include "io/files.h"
#include "io/safetensors.h"

#include "core/error.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <inttypes.h>
#include <json-glib/json-glib.h>
#include <string.h>
#include <unistd.h>

#define MAX_HEADER_BYTES ((uint64_t)100 * 1024 * 1024)
/* A safetensors header nests 3 deep (root, entry, shape); this only protects json-glib, which
 * recurses once per level, from a stack overflow on "[[[[...". */
#define MAX_JSON_DEPTH 16
/* Longer digit runs may overflow int64, which json-glib wraps silently. */
#define MAX_NUMBER_DIGITS 18

/* ---- dtypes ---- */

static const struct {
  const char *name;
  size_t size;
} st_dtypes[] = {
    [MEXD_ST_F32] = {"F32", 4}, [MEXD_ST_F16] = {"F16", 2}, [MEXD_ST_BF16] = {"BF16", 2},
    [MEXD_ST_I64] = {"I64", 8}, [MEXD_ST_I32] = {"I32", 4},
};
#define N_ST_DTYPES ((int)G_N_ELEMENTS(st_dtypes))

/* dtypes of the format that libmexd does not read: a clear "unsupported" instead of "unknown". */
static const char *const unsupported_dtypes[] = {
    "F64",     "I8",      "U8",      "I16",     "U16",     "U32", "U64", "BOOL",
    "F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4",  "C64",
};

static gboolean st_dtype_valid(MexdStDType dtype)
{
  return (int)dtype >= 0 && (int)dtype < N_ST_DTYPES;
}

const char *mexd_st_dtype_name(MexdStDType dtype)
{
  return st_dtype_valid(dtype) ? st_dtypes[dtype].name : "invalid";
}

size_t mexd_st_dtype_size(MexdStDType dtype)
{
  return st_dtype_valid(dtype) ? st_dtypes[dtype].size : 0;
}

static gboolean st_dtype_is_float(MexdStDType dtype)
{
  return dtype == MEXD_ST_F32 || dtype == MEXD_ST_F16 || dtype == MEXD_ST_BF16;
}

/* product(shape) * elem, or FALSE when it does not fit in size_t.  A 0 anywhere gives 0, whatever
 * the other dims are. */
static gboolean shape_nbytes(int ndim, const int64_t *shape, size_t elem, size_t *out)
{
  for (int i = 0; i < ndim; i++)
    if (shape[i] == 0) {
      *out = 0;
      return TRUE;
    }
  size_t n = elem;
  for (int i = 0; i < ndim; i++) {
    if ((uint64_t)shape[i] > SIZE_MAX || (size_t)shape[i] > SIZE_MAX / n)
      return FALSE;
    n *= (size_t)shape[i];
  }
  *out = n;
  return TRUE;
}

/* ---- the reader ---- */

typedef struct {
  MexdStTensor pub; /* first, so a MexdStTensor * is an Entry * */
  uint64_t begin, end;
} Entry;

struct _MexdSafetensors {
  char *name;          /* for messages */
  GMappedFile *mapped; /* NULL when made from bytes */
  GBytes *bytes;
  Entry *entries; /* sorted by (begin, end, name) */
  guint n_entries;
  GHashTable *by_name;  /* name -> Entry * (names owned by the entries) */
  GHashTable *metadata; /* key -> value, both owned */
};

void mexd_safetensors_free(MexdSafetensors *st)
{
  if (!st)
    return;
  for (guint i = 0; i < st->n_entries; i++)
    g_free((char *)st->entries[i].pub.name);
  g_free(st->entries);
  if (st->by_name)
    g_hash_table_unref(st->by_name);
  if (st->metadata)
    g_hash_table_unref(st->metadata);
  if (st->bytes)
    g_bytes_unref(st->bytes);
  if (st->mapped)
    g_mapped_file_unref(st->mapped);
  g_free(st->name);
  g_free(st);
}

static gboolean is_digit(unsigned char c)
{
  return c >= '0' && c <= '9';
}

static gboolean is_hex(unsigned char c)
{
  return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* The value of 4 hex digits at p (of `avail` bytes), or -1. */
static int hex4(const unsigned char *p, size_t avail)
{
  if (avail < 4)
    return -1;
  int v = 0;
  for (int k = 0; k < 4; k++) {
    unsigned char c = p[k];
    if (!is_hex(c))
      return -1;
    v = v * 16 + (c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
  }
  return v;
}

/* A lexical pass over the header before json-glib sees it.  json-glib is more lenient than JSON
 * (comments, single quotes, trailing text after the root, "var x = ..." assignments, raw control
 * characters), wraps numbers that overflow int64, truncates strings at "\u0000", makes invalid
 * UTF-8 of a lone low surrogate and recurses without limit.  This pass rejects all that, so that
 * what json-glib parses is strict JSON with its root an object; the grammar itself is left to
 * json-glib. */
static gboolean prescan_header(const char *fname, const unsigned char *h, size_t n, GError **error)
{
  int depth = 0;
  gboolean started = FALSE, done = FALSE;
  size_t digits = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = h[i];
    digits = is_digit(c) ? digits + 1 : 0;
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r')
      continue;
    if (done)
      return mexd_fail(error, MEXD_ERROR_FORMAT,
                       "%s: header has text after the end of its JSON object (byte %zu)", fname, i);
    if (!started && c != '{')
      return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: header is not a JSON object", fname);
    switch (c) {
    case '{':
    case '[':
      started = TRUE;
      if (++depth > MAX_JSON_DEPTH)
        return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: header JSON nests more than %d levels deep",
                         fname, MAX_JSON_DEPTH);
      break;
    case '}':
    case ']':
      if (--depth == 0)
        done = TRUE;
      break;
    case '"':
      for (i++;; i++) {
        if (i >= n)
          return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: header has an unterminated string",
                           fname);
        c = h[i];
        if (c == '"')
          break;
        if (c < 0x20)
          return mexd_fail(error, MEXD_ERROR_FORMAT,
                           "%s: header has a control character (0x%02x) in a string at byte %zu",
                           fname, c, i);
        if (c != '\\')
          continue;
        if (++i >= n)
          return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: header has an unterminated string",
                           fname);
        c = h[i];
        if (c == 'u') {
          int u = hex4(h + i + 1, n - i - 1);
          if (u < 0)
            return mexd_fail(error, MEXD_ERROR_FORMAT,
                             "%s: header has a bad \\u escape at byte %zu", fname, i - 1);
          if (u == 0)
            return mexd_fail(error, MEXD_ERROR_FORMAT,
                             "%s: header has a NUL character (\\u0000) in a string", fname);
          i += 4;
          /* a surrogate must be a high one followed by an escaped low one: json-glib turns a lone
           * low surrogate into invalid UTF-8 */
          if (u >= 0xd800 && u <= 0xdfff) {
            int lo =
                n - i > 2 && h[i + 1] == '\\' && h[i + 2] == 'u' ? hex4(h + i + 3, n - i - 3) : -1;
            if (u >= 0xdc00 || lo < 0xdc00 || lo > 0xdfff)
              return mexd_fail(error, MEXD_ERROR_FORMAT,
                               "%s: header has an unpaired surrogate \\u%04x at byte %zu", fname,
                               (unsigned)u, i - 5);
            i += 6;
          }
        } else if (!strchr("\"\\/bfnrt", c) || c == 0) {
          return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: header has a bad escape at byte %zu",
                           fname, i - 1);
        }
      }
      break;
    case ':':
    case ',':
    case '-':
    case '+':
    case '.': break;
    default:
      if (is_digit(c)) {
        if (digits > MAX_NUMBER_DIGITS)
          return mexd_fail(error, MEXD_ERROR_FORMAT,
                           "%s: header has a number of more than %d digits (byte %zu)", fname,
                           MAX_NUMBER_DIGITS, i);
      } else if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) {
        /* letters are let through for true/false/null; json-glib rejects other words */
        return mexd_fail(error, MEXD_ERROR_FORMAT,
                         "%s: header has an unexpected character 0x%02x at byte %zu", fname, c, i);
      }
      break;
    }
  }
  if (!started)
    return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: header is empty", fname);
  if (!done)
    return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: header JSON object is not closed", fname);
  return TRUE;
}

/* Duplicate keys: json-glib keeps the last of two equal keys silently, and emits "object-member"
 * after storing each member.  A name seen twice in one object is a duplicate.  Objects replaced by
 * a duplicate are freed during the parse and their address may be reused, which could flag a
 * later, innocent name; only the first report is kept, and it is always genuine. */
typedef struct {
  GHashTable *seen; /* JsonObject * -> GHashTable of names */
  JsonObject *dup_object;
  char *dup_name;
} DupCheck;

static void on_object_member(JsonParser *parser, JsonObject *object, const char *name,
                             gpointer user_data)
{
  (void)parser;
  DupCheck *dc = user_data;
  if (dc->dup_name)
    return;
  GHashTable *names = g_hash_table_lookup(dc->seen, object);
  if (!names) {
    names = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    g_hash_table_insert(dc->seen, object, names);
  }
  if (g_hash_table_contains(names, name)) {
    dc->dup_object = object;
    dc->dup_name = g_strdup(name);
    return;
  }
  g_hash_table_add(names, g_strdup(name));
}

/* An integer JSON value into *out; FALSE when the node is not one. */
static gboolean node_int(JsonNode *node, int64_t *out)
{
  if (!node || !JSON_NODE_HOLDS_VALUE(node) || json_node_get_value_type(node) != G_TYPE_INT64)
    return FALSE;
  *out = json_node_get_int(node);
  return TRUE;
}

static gboolean parse_entry(const char *fname, const char *name, JsonNode *node, size_t data_len,
                            Entry *e, GError **error)
{
  if (!g_utf8_validate(name, -1, NULL))
    return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: a tensor name is not valid UTF-8", fname);
  if (!JSON_NODE_HOLDS_OBJECT(node))
    return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: entry '%s' is not a JSON object", fname, name);
  JsonObject *obj = json_node_get_object(node);

  /* dtype */
  JsonNode *dn = json_object_get_member(obj, "dtype");
  if (!dn)
    return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: tensor '%s' has no dtype", fname, name);
  if (!JSON_NODE_HOLDS_VALUE(dn) || json_node_get_value_type(dn) != G_TYPE_STRING)
    return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: the dtype of tensor '%s' is not a string",
                     fname, name);
  const char *ds = json_node_get_string(dn);
  int dtype = -1;
  for (int i = 0; i < N_ST_DTYPES; i++)
    if (strcmp(ds, st_dtypes[i].name) == 0)
      dtype = i;
  if (dtype < 0) {
    for (guint i = 0; i < G_N_ELEMENTS(unsupported_dtypes); i++)
      if (strcmp(ds, unsupported_dtypes[i]) == 0)
        return mexd_fail(error, MEXD_ERROR_UNSUPPORTED,
                         "%s: tensor '%s' has dtype %s, which libmexd does not read (it reads "
                         "F32, F16, BF16, I64 and I32)",
                         fname, name, ds);
    return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: tensor '%s' has an unknown dtype '%s'", fname,
                     name, ds);
  }
  e->pub.dtype = (MexdStDType)dtype;

  /* shape */
  JsonNode *sn = json_object_get_member(obj, "shape");
  if (!sn)
    return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: tensor '%s' has no shape", fname, name);
  if (!JSON_NODE_HOLDS_ARRAY(sn))
    return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: the shape of tensor '%s' is not an array",
                     fname, name);
  JsonArray *sa = json_node_get_array(sn);
  guint ndim = json_array_get_length(sa);
  if (ndim > MEXD_ST_MAX_DIMS)
    return mexd_fail(error, MEXD_ERROR_FORMAT,
                     "%s: tensor '%s' has %u dimensions; at most %d are allowed", fname, name, ndim,
                     MEXD_ST_MAX_DIMS);
  e->pub.ndim = (int)ndim;
  for (guint i = 0; i < ndim; i++) {
    int64_t d;
    if (!node_int(json_array_get_element(sa, i), &d))
      return mexd_fail(error, MEXD_ERROR_FORMAT,
                       "%s: dimension %u of tensor '%s' is not an integer", fname, i, name);
    if (d < 0)
      return mexd_fail(error, MEXD_ERROR_FORMAT,
                       "%s: dimension %u of tensor '%s' is negative (%" PRId64 ")", fname, i, name,
                       d);
    e->pub.shape[i] = d;
  }
  size_t nbytes;
  if (!shape_nbytes(e->pub.ndim, e->pub.shape, st_dtypes[dtype].size, &nbytes))
    return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: the shape of tensor '%s' overflows", fname,
                     name);
  e->pub.nbytes = nbytes;

  /* data_offsets */
  JsonNode *on = json_object_get_member(obj, "data_offsets");
  if (!on)
    return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: tensor '%s' has no data_offsets", fname, name);
  int64_t begin, end;
  if (!JSON_NODE_HOLDS_ARRAY(on) || json_array_get_length(json_node_get_array(on)) != 2 ||
      !node_int(json_array_get_element(json_node_get_array(on), 0), &begin) ||
      !node_int(json_array_get_element(json_node_get_array(on), 1), &end))
    return mexd_fail(error, MEXD_ERROR_FORMAT,
                     "%s: the data_offsets of tensor '%s' are not two integers", fname, name);
  if (begin < 0 || end < 0)
    return mexd_fail(error, MEXD_ERROR_FORMAT,
                     "%s: tensor '%s' has negative data_offsets [%" PRId64 ", %" PRId64 "]", fname,
                     name, begin, end);
  if (begin > end)
    return mexd_fail(error, MEXD_ERROR_FORMAT,
                     "%s: tensor '%s' has data_offsets [%" PRId64 ", %" PRId64
                     "] that end before they begin",
                     fname, name, begin, end);
  if ((uint64_t)end > data_len)
    return mexd_fail(error, MEXD_ERROR_FORMAT,
                     "%s: tensor '%s' ends at byte %" PRId64
                     " of the data buffer, beyond its end (%zu bytes)",
                     fname, name, end, data_len);
  if ((uint64_t)(end - begin) != nbytes)
    return mexd_fail(error, MEXD_ERROR_FORMAT,
                     "%s: tensor '%s' has %" PRId64 " bytes of data, but its dtype %s and shape "
                     "need %zu",
                     fname, name, end - begin, st_dtypes[dtype].name, nbytes);
  e->begin = (uint64_t)begin;
  e->end = (uint64_t)end;
  return TRUE;
}

static gboolean parse_metadata(const char *fname, JsonNode *node, GHashTable *md, GError **error)
{
  if (!JSON_NODE_HOLDS_OBJECT(node))
    return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: __metadata__ is not a JSON object", fname);
  JsonObject *obj = json_node_get_object(node);
  g_autoptr(GList) keys = json_object_get_members(obj);
  for (GList *l = keys; l; l = l->next) {
    const char *k = l->data;
    JsonNode *v = json_object_get_member(obj, k);
    if (!JSON_NODE_HOLDS_VALUE(v) || json_node_get_value_type(v) != G_TYPE_STRING)
      return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: __metadata__ entry '%s' is not a string",
                       fname, k);
    const char *s = json_node_get_string(v);
    if (!g_utf8_validate(k, -1, NULL) || !g_utf8_validate(s, -1, NULL))
      return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: __metadata__ is not valid UTF-8", fname);
    g_hash_table_insert(md, g_strdup(k), g_strdup(s));
  }
  return TRUE;
}

static int entry_cmp(const void *pa, const void *pb)
{
  const Entry *a = pa, *b = pb;
  if (a->begin != b->begin)
    return a->begin < b->begin ? -1 : 1;
  if (a->end != b->end)
    return a->end < b->end ? -1 : 1;
  return strcmp(a->pub.name, b->pub.name);
}

/* Fills st from its bytes: header length, JSON, entries, coverage of the data buffer. */
static gboolean parse(MexdSafetensors *st, GError **error)
{
  const char *fname = st->name;
  gsize len = 0;
  const unsigned char *buf = g_bytes_get_data(st->bytes, &len);
  if (len < 8)
    return mexd_fail(error, MEXD_ERROR_FORMAT,
                     "%s: the file is %zu bytes long, too short for the 8-byte header length",
                     fname, (size_t)len);
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--)
    hlen = (hlen << 8) | buf[i];
  if (hlen > MAX_HEADER_BYTES)
    return mexd_fail(error, MEXD_ERROR_FORMAT,
                     "%s: the header length %" PRIu64 " is absurd (the limit is 100 MiB)", fname,
                     hlen);
  if (hlen > len - 8)
    return mexd_fail(error, MEXD_ERROR_FORMAT,
                     "%s: the header length %" PRIu64 " is beyond the end of the file (%zu bytes)",
                     fname, hlen, (size_t)len);
  const unsigned char *header = buf + 8;
  const unsigned char *data = header + hlen;
  size_t data_len = len - 8 - (size_t)hlen;

  const char *bad = NULL;
  if (!g_utf8_validate_len((const char *)header, (gsize)hlen, &bad))
    return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: the header is not valid UTF-8 (byte %zu)",
                     fname, (size_t)((const unsigned char *)bad - header));
  if (!prescan_header(fname, header, (size_t)hlen, error))
    return FALSE;

  g_autoptr(JsonParser) parser = json_parser_new();
  DupCheck dc = {g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL,
                                       (GDestroyNotify)g_hash_table_unref),
                 NULL, NULL};
  g_signal_connect(parser, "object-member", G_CALLBACK(on_object_member), &dc);
  GError *jerr = NULL;
  gboolean ok = json_parser_load_from_data(parser, (const char *)header, (gssize)hlen, &jerr);
  g_signal_handlers_disconnect_by_data(parser, &dc);
  g_hash_table_unref(dc.seen);
  g_autofree char *dup_name = dc.dup_name;
  if (!ok) {
    mexd_fail(error, MEXD_ERROR_FORMAT, "%s: the header is not valid JSON: %s", fname,
              jerr->message);
    g_error_free(jerr);
    return FALSE;
  }
  JsonNode *root = json_parser_get_root(parser);
  if (!root || !JSON_NODE_HOLDS_OBJECT(root) || json_parser_has_assignment(parser, NULL))
    return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: header is not a JSON object", fname);
  JsonObject *robj = json_node_get_object(root);
  if (dup_name) {
    if (dc.dup_object == robj)
      return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: the header names '%s' twice", fname,
                       dup_name);
    return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: the header has key '%s' twice in one object",
                     fname, dup_name);
  }

  g_autoptr(GList) members = json_object_get_members(robj);
  guint n_members = g_list_length(members);
  st->entries = g_new0(Entry, MAX(n_members, 1));
  st->n_entries = 0;
  for (GList *l = members; l; l = l->next) {
    const char *key = l->data;
    JsonNode *node = json_object_get_member(robj, key);
    if (strcmp(key, "__metadata__") == 0) {
      if (!parse_metadata(fname, node, st->metadata, error))
        return FALSE;
      continue;
    }
    Entry *e = &st->entries[st->n_entries];
    if (!parse_entry(fname, key, node, data_len, e, error))
      return FALSE;
    e->pub.name = g_strdup(key);
    e->pub.data = data + e->begin;
    st->n_entries++;
  }

  /* The data buffer must be covered exactly, in offset order. */
  qsort(st->entries, st->n_entries, sizeof(Entry), entry_cmp);
  uint64_t pos = 0;
  const Entry *last = NULL; /* the tensor that ends at pos */
  for (guint i = 0; i < st->n_entries; i++) {
    const Entry *e = &st->entries[i];
    if (last && e->begin < pos) /* pos > 0 only once there is a `last` */
      return mexd_fail(
          error, MEXD_ERROR_FORMAT,
          "%s: tensors '%s' [%" PRIu64 ", %" PRIu64 ") and '%s' [%" PRIu64 ", %" PRIu64 ") overlap",
          fname, last->pub.name, last->begin, last->end, e->pub.name, e->begin, e->end);
    if (e->begin > pos)
      return mexd_fail(error, MEXD_ERROR_FORMAT,
                       "%s: bytes [%" PRIu64 ", %" PRIu64 ") of the data buffer belong to no "
                       "tensor (a hole before '%s')",
                       fname, pos, e->begin, e->pub.name);
    if (e->end > pos || !last) {
      pos = e->end;
      last = e;
    }
  }
  if (pos != data_len)
    return mexd_fail(error, MEXD_ERROR_FORMAT,
                     "%s: the last %" PRIu64 " bytes of the data buffer belong to no tensor", fname,
                     (uint64_t)data_len - pos);

  for (guint i = 0; i < st->n_entries; i++)
    g_hash_table_insert(st->by_name, (gpointer)st->entries[i].pub.name, &st->entries[i]);
  return TRUE;
}

static MexdSafetensors *parse_new(GBytes *bytes, GMappedFile *mapped, const char *fname,
                                  GError **error)
{
  MexdSafetensors *st = g_new0(MexdSafetensors, 1);
  st->name = g_strdup(fname);
  st->bytes = bytes;
  st->mapped = mapped;
  st->by_name = g_hash_table_new(g_str_hash, g_str_equal);
  st->metadata = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  if (!parse(st, error)) {
    mexd_safetensors_free(st);
    return NULL;
  }
  return st;
}

MexdSafetensors *mexd_safetensors_open(const char *path, GError **error)
{
  if (!path)
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT,
                          "mexd_safetensors_open: path is NULL");
  g_autofree char *display = g_filename_display_name(path);
  /* a FIFO or a device would block the open below, or map forever */
  if (!mexd_file_check_regular(path, "safetensors file", error))
    return NULL;
  GError *ferr = NULL;
  GMappedFile *mf = g_mapped_file_new(path, FALSE, &ferr);
  if (!mf) {
    /* GLib's message already names the file */
    mexd_fail(error, MEXD_ERROR_IO, "%s", ferr->message);
    g_error_free(ferr);
    return NULL;
  }
  return parse_new(g_mapped_file_get_bytes(mf), mf, display, error);
}

MexdSafetensors *mexd_safetensors_new_from_bytes(GBytes *bytes, const char *name_for_errors,
                                                 GError **error)
{
  const char *fname = name_for_errors ? name_for_errors : "<memory>";
  if (!bytes)
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT, "%s: the bytes are NULL", fname);
  return parse_new(g_bytes_ref(bytes), NULL, fname, error);
}

const char *mexd_safetensors_name(const MexdSafetensors *st)
{
  return st ? st->name : NULL;
}

guint mexd_safetensors_n_tensors(const MexdSafetensors *st)
{
  return st ? st->n_entries : 0;
}

const MexdStTensor *mexd_safetensors_index(const MexdSafetensors *st, guint i)
{
  if (!st || i >= st->n_entries)
    return NULL;
  return &st->entries[i].pub;
}

const MexdStTensor *mexd_safetensors_find(const MexdSafetensors *st, const char *name)
{
  if (!st || !name)
    return NULL;
  Entry *e = g_hash_table_lookup(st->by_name, name);
  return e ? &e->pub : NULL;
}

const char *mexd_safetensors_metadata(const MexdSafetensors *st, const char *key)
{
  if (!st || !key)
    return NULL;
  return g_hash_table_lookup(st->metadata, key);
}

static int strcmp_ptr(const void *a, const void *b)
{
  return strcmp(*(char *const *)a, *(char *const *)b);
}

char **mexd_safetensors_metadata_keys(const MexdSafetensors *st)
{
  guint n = st ? g_hash_table_size(st->metadata) : 0;
  char **keys = g_new0(char *, n + 1);
  if (n == 0)
    return keys;
  GHashTableIter it;
  gpointer k;
  guint i = 0;
  g_hash_table_iter_init(&it, st->metadata);
  while (g_hash_table_iter_next(&it, &k, NULL))
    keys[i++] = g_strdup(k);
  qsort(keys, n, sizeof(char *), strcmp_ptr);
  return keys;
}

/* ---- loading ---- */

static float bf16_to_f32(uint16_t b)
{
  uint32_t x = (uint32_t)b << 16;
  float f;
  memcpy(&f, &x, 4);
  return f;
}

/* One element of `src` (unaligned) as float. */
static float load_float(const unsigned char *src, MexdStDType dtype, size_t i)
{
  uint16_t h;
  float f;
  switch (dtype) {
  case MEXD_ST_F32: memcpy(&f, src + i * 4, 4); return f;
  case MEXD_ST_F16: memcpy(&h, src + i * 2, 2); return mexd_f16_to_f32(h);
  default: /* BF16 */ memcpy(&h, src + i * 2, 2); return bf16_to_f32(h);
  }
}

/* TRUE when the file's bytes are already the bytes of a `want` tensor. */
static gboolean same_layout(MexdStDType dtype, MexdDType want)
{
  return (want == MEXD_DTYPE_F32 && dtype == MEXD_ST_F32) ||
         (want == MEXD_DTYPE_F16 && dtype == MEXD_ST_F16) ||
         (want == MEXD_DTYPE_I32 && dtype == MEXD_ST_I32);
}

/* Converts n elements of the file's data to `want` into dst (aligned host memory). */
static gboolean convert(const MexdSafetensors *st, const MexdStTensor *t, MexdDType want, void *dst,
                        size_t n, GError **error)
{
  const unsigned char *src = t->data;
  if (same_layout(t->dtype, want)) {
    memcpy(dst, src, t->nbytes);
    return TRUE;
  }
  if (want == MEXD_DTYPE_F32) {
    float *d = dst;
    for (size_t i = 0; i < n; i++)
      d[i] = load_float(src, t->dtype, i);
  } else if (want == MEXD_DTYPE_F16) {
    uint16_t *d = dst;
    for (size_t i = 0; i < n; i++)
      d[i] = mexd_f32_to_f16(load_float(src, t->dtype, i));
  } else { /* I64 -> i32 */
    int32_t *d = dst;
    for (size_t i = 0; i < n; i++) {
      int64_t v;
      memcpy(&v, src + i * 8, 8);
      if (v < INT32_MIN || v > INT32_MAX)
        return mexd_fail(error, MEXD_ERROR_DTYPE,
                         "%s: element %zu of tensor '%s' is %" PRId64 ", outside the range of i32",
                         st->name, i, t->name, v);
      d[i] = (int32_t)v;
    }
  }
  return TRUE;
}

gboolean mexd_safetensors_check_finite(const MexdSafetensors *st, const MexdStTensor *t,
                                       GError **error)
{
  const unsigned char *p = t->data;
  size_t n = t->nbytes / mexd_st_dtype_size(t->dtype), bad = n;
  switch (t->dtype) {
  case MEXD_ST_F32:
    for (size_t i = 0; i < n && bad == n; i++) {
      uint32_t b;
      memcpy(&b, p + 4 * i, 4);
      if (((b >> 23) & 0xff) == 0xff)
        bad = i;
    }
    break;
  case MEXD_ST_F16:
  case MEXD_ST_BF16: {
    const uint16_t mask = t->dtype == MEXD_ST_F16 ? 0x7c00 : 0x7f80;
    for (size_t i = 0; i < n && bad == n; i++) {
      uint16_t b;
      memcpy(&b, p + 2 * i, 2);
      if ((b & mask) == mask)
        bad = i;
    }
    break;
  }
  default: break;
  }
  if (bad < n)
    return mexd_fail(error, MEXD_ERROR_FORMAT,
                     "%s: tensor %s holds NaN or Inf (element %zu): these weights cannot give "
                     "an answer (a damaged file, or a training that diverged)",
                     st->name, t->name, bad);
  return TRUE;
}

MexdTensor *mexd_safetensors_load(MexdSafetensors *st, const char *name, MexdBackend *be,
                                  MexdDType want, GError **error)
{
  if (!st || !name || !be)
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT, "mexd_safetensors_load: %s is NULL",
                          !st     ? "the file"
                          : !name ? "the name"
                                  : "the backend");
  const MexdStTensor *t = mexd_safetensors_find(st, name);
  if (!t)
    return mexd_fail_null(error, MEXD_ERROR_NOT_FOUND, "%s: there is no tensor '%s'", st->name,
                          name);
  if (want != MEXD_DTYPE_F32 && want != MEXD_DTYPE_F16 && want != MEXD_DTYPE_I32)
    return mexd_fail_null(error, MEXD_ERROR_DTYPE, "%s: tensor '%s': unknown dtype %d asked for",
                          st->name, name, (int)want);
  if (st_dtype_is_float(t->dtype) != mexd_dtype_is_float(want))
    return mexd_fail_null(
        error, MEXD_ERROR_DTYPE, "%s: tensor '%s' is %s, which does not load as %s (%s)", st->name,
        name, mexd_st_dtype_name(t->dtype), mexd_dtype_name(want),
        st_dtype_is_float(t->dtype) ? "floats load as f32 or f16" : "integers load as i32");
  if (t->ndim > MEXD_MAX_DIMS)
    return mexd_fail_null(error, MEXD_ERROR_UNSUPPORTED,
                          "%s: tensor '%s' has %d dimensions; a MexdTensor has at most %d",
                          st->name, name, t->ndim, MEXD_MAX_DIMS);
  int ndim = t->ndim;
  int64_t shape[MEXD_MAX_DIMS] = {1, 1, 1, 1};
  size_t n = 1;
  for (int i = 0; i < ndim; i++) {
    if (t->shape[i] == 0)
      return mexd_fail_null(error, MEXD_ERROR_UNSUPPORTED,
                            "%s: tensor '%s' is empty (a 0 in its shape); a MexdTensor cannot be",
                            st->name, name);
    shape[i] = t->shape[i];
    n *= (size_t)t->shape[i]; /* no overflow: n * element size == nbytes */
  }
  if (ndim == 0)
    ndim = 1; /* a scalar loads as [1] */

  GError *terr = NULL;
  MexdTensor *out = mexd_tensor_new(be, want, ndim, shape, &terr);
  if (!out) {
    g_propagate_prefixed_error(error, terr, "%s: tensor '%s': ", st->name, name);
    return NULL;
  }
  size_t out_bytes = mexd_tensor_nbytes(out);
  void *host = mexd_tensor_host_data(out);
  gboolean ok;
  if (host) {
    ok = convert(st, t, want, host, n, error);
  } else if (same_layout(t->dtype, want)) {
    /* same dtype on a device: straight from the mapping */
    ok = mexd_tensor_write(out, t->data, t->nbytes, error);
  } else {
    void *tmp = g_try_malloc(out_bytes);
    if (!tmp) {
      ok = mexd_fail(error, MEXD_ERROR_NO_MEMORY, "%s: tensor '%s': out of host memory (%zu bytes)",
                     st->name, name, out_bytes);
    } else {
      ok = convert(st, t, want, tmp, n, error) && mexd_tensor_write(out, tmp, out_bytes, error);
      g_free(tmp);
    }
  }
  if (!ok) {
    mexd_tensor_unref(out);
    return NULL;
  }
  return out;
}

/* ---- the writer ---- */

typedef struct {
  char *name;
  MexdStDType dtype;
  int ndim;
  int64_t shape[MEXD_ST_MAX_DIMS];
  void *data;
  size_t nbytes;
} WEntry;

struct _MexdSafetensorsWriter {
  GPtrArray *entries;   /* WEntry *, in the order added */
  GHashTable *names;    /* set of the names (owned by the entries) */
  GHashTable *metadata; /* key -> value, owned */
};

static void wentry_free(gpointer p)
{
  WEntry *e = p;
  g_free(e->name);
  g_free(e->data);
  g_free(e);
}

MexdSafetensorsWriter *mexd_safetensors_writer_new(void)
{
  MexdSafetensorsWriter *w = g_new0(MexdSafetensorsWriter, 1);
  w->entries = g_ptr_array_new_with_free_func(wentry_free);
  w->names = g_hash_table_new(g_str_hash, g_str_equal);
  w->metadata = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  return w;
}

void mexd_safetensors_writer_free(MexdSafetensorsWriter *w)
{
  if (!w)
    return;
  g_hash_table_unref(w->names);
  g_ptr_array_unref(w->entries);
  g_hash_table_unref(w->metadata);
  g_free(w);
}

/* Checks everything but the data; on success *nbytes_out is the size the shape needs. */
static gboolean check_add(MexdSafetensorsWriter *w, const char *name, MexdStDType dtype, int ndim,
                          const int64_t *shape, size_t *nbytes_out, GError **error)
{
  if (!w)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "safetensors writer: the writer is NULL");
  if (!name)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "safetensors writer: the name is NULL");
  if (!g_utf8_validate(name, -1, NULL))
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "safetensors writer: a tensor name is not valid UTF-8");
  if (strcmp(name, "__metadata__") == 0)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "safetensors writer: '__metadata__' is reserved and cannot name a tensor");
  if (g_hash_table_contains(w->names, name))
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "safetensors writer: a tensor named '%s' was already added", name);
  if (!st_dtype_valid(dtype))
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "safetensors writer: tensor '%s': unknown dtype %d", name, (int)dtype);
  if (ndim < 0 || ndim > MEXD_ST_MAX_DIMS)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "safetensors writer: tensor '%s' has %d dimensions; 0 to %d are allowed", name,
                     ndim, MEXD_ST_MAX_DIMS);
  if (ndim > 0 && !shape)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "safetensors writer: tensor '%s': the shape is NULL", name);
  for (int i = 0; i < ndim; i++)
    if (shape[i] < 0)
      return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                       "safetensors writer: tensor '%s': dimension %d is negative", name, i);
  if (!shape_nbytes(ndim, shape, mexd_st_dtype_size(dtype), nbytes_out))
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "safetensors writer: tensor '%s': the shape overflows", name);
  return TRUE;
}

/* Adds an entry taking ownership of `data` (already checked). */
static void add_entry(MexdSafetensorsWriter *w, const char *name, MexdStDType dtype, int ndim,
                      const int64_t *shape, void *data, size_t nbytes)
{
  WEntry *e = g_new0(WEntry, 1);
  e->name = g_strdup(name);
  e->dtype = dtype;
  e->ndim = ndim;
  for (int i = 0; i < ndim; i++)
    e->shape[i] = shape[i];
  e->data = data;
  e->nbytes = nbytes;
  g_ptr_array_add(w->entries, e);
  g_hash_table_add(w->names, e->name);
}

gboolean mexd_safetensors_writer_add(MexdSafetensorsWriter *w, const char *name, MexdStDType dtype,
                                     int ndim, const int64_t *shape, const void *data,
                                     size_t nbytes, GError **error)
{
  size_t need;
  if (!check_add(w, name, dtype, ndim, shape, &need, error))
    return FALSE;
  if (nbytes != need)
    return mexd_fail(error, MEXD_ERROR_SHAPE,
                     "safetensors writer: tensor '%s' is given %zu bytes, but its dtype %s and "
                     "shape need %zu",
                     name, nbytes, mexd_st_dtype_name(dtype), need);
  if (nbytes > 0 && !data)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "safetensors writer: tensor '%s': the data is NULL", name);
  void *copy = NULL;
  if (nbytes > 0) {
    copy = g_try_malloc(nbytes);
    if (!copy)
      return mexd_fail(error, MEXD_ERROR_NO_MEMORY,
                       "safetensors writer: tensor '%s': out of host memory (%zu bytes)", name,
                       nbytes);
    memcpy(copy, data, nbytes);
  }
  add_entry(w, name, dtype, ndim, shape, copy, nbytes);
  return TRUE;
}

gboolean mexd_safetensors_writer_add_tensor(MexdSafetensorsWriter *w, const char *name,
                                            MexdTensor *t, GError **error)
{
  if (!t)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "safetensors writer: tensor '%s' is NULL",
                     name ? name : "(null)");
  MexdStDType dtype;
  switch (t->dtype) {
  case MEXD_DTYPE_F32: dtype = MEXD_ST_F32; break;
  case MEXD_DTYPE_F16: dtype = MEXD_ST_F16; break;
  case MEXD_DTYPE_I32: dtype = MEXD_ST_I32; break;
  default:
    return mexd_fail(error, MEXD_ERROR_DTYPE, "safetensors writer: tensor '%s' has dtype %d",
                     name ? name : "(null)", (int)t->dtype);
  }
  size_t need;
  if (!check_add(w, name, dtype, t->ndim, t->shape, &need, error))
    return FALSE;
  size_t nbytes = mexd_tensor_nbytes(t);
  void *copy = g_try_malloc(nbytes);
  if (!copy)
    return mexd_fail(error, MEXD_ERROR_NO_MEMORY,
                     "safetensors writer: tensor '%s': out of host memory (%zu bytes)", name,
                     nbytes);
  if (!mexd_tensor_read(t, copy, nbytes, error)) {
    g_free(copy);
    g_prefix_error(error, "safetensors writer: tensor '%s': ", name);
    return FALSE;
  }
  add_entry(w, name, dtype, t->ndim, t->shape, copy, nbytes);
  return TRUE;
}

void mexd_safetensors_writer_set_metadata(MexdSafetensorsWriter *w, const char *key,
                                          const char *value)
{
  if (!w || !key)
    return;
  if (!value)
    g_hash_table_remove(w->metadata, key);
  else
    g_hash_table_insert(w->metadata, g_strdup(key), g_strdup(value));
}

/* The 8-byte length and the JSON header padded with spaces to a multiple of 8 bytes. */
static GBytes *build_header(MexdSafetensorsWriter *w, GError **error)
{
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  guint n_md = g_hash_table_size(w->metadata);
  if (n_md > 0) {
    g_autofree gpointer *keys = g_hash_table_get_keys_as_array(w->metadata, NULL);
    qsort(keys, n_md, sizeof(gpointer), strcmp_ptr);
    json_builder_set_member_name(b, "__metadata__");
    json_builder_begin_object(b);
    for (guint i = 0; i < n_md; i++) {
      const char *v = g_hash_table_lookup(w->metadata, keys[i]);
      if (!g_utf8_validate(keys[i], -1, NULL) || !g_utf8_validate(v, -1, NULL))
        return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT,
                              "safetensors writer: a metadata key or value is not valid UTF-8");
      json_builder_set_member_name(b, keys[i]);
      json_builder_add_string_value(b, v);
    }
    json_builder_end_object(b);
  }
  uint64_t off = 0;
  for (guint i = 0; i < w->entries->len; i++) {
    const WEntry *e = g_ptr_array_index(w->entries, i);
    json_builder_set_member_name(b, e->name);
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "dtype");
    json_builder_add_string_value(b, mexd_st_dtype_name(e->dtype));
    json_builder_set_member_name(b, "shape");
    json_builder_begin_array(b);
    for (int d = 0; d < e->ndim; d++)
      json_builder_add_int_value(b, e->shape[d]);
    json_builder_end_array(b);
    json_builder_set_member_name(b, "data_offsets");
    json_builder_begin_array(b);
    json_builder_add_int_value(b, (gint64)off);
    json_builder_add_int_value(b, (gint64)(off + e->nbytes));
    json_builder_end_array(b);
    json_builder_end_object(b);
    off += e->nbytes;
  }
  json_builder_end_object(b);

  g_autoptr(JsonNode) root = json_builder_get_root(b);
  g_autoptr(JsonGenerator) gen = json_generator_new();
  json_generator_set_root(gen, root);
  gsize jlen = 0;
  g_autofree char *json = json_generator_to_data(gen, &jlen);
  size_t padded = (jlen + 7) & ~(size_t)7;
  guint8 *out = g_malloc(8 + padded);
  for (int i = 0; i < 8; i++)
    out[i] = (guint8)((uint64_t)padded >> (8 * i));
  memcpy(out + 8, json, jlen);
  memset(out + 8 + jlen, ' ', padded - jlen);
  return g_bytes_new_take(out, 8 + padded);
}

GBytes *mexd_safetensors_writer_to_bytes(MexdSafetensorsWriter *w, GError **error)
{
  if (!w)
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT, "safetensors writer: NULL writer");
  g_autoptr(GBytes) header = build_header(w, error);
  if (!header)
    return NULL;
  size_t total = g_bytes_get_size(header);
  for (guint i = 0; i < w->entries->len; i++)
    total += ((WEntry *)g_ptr_array_index(w->entries, i))->nbytes;
  guint8 *out = g_try_malloc(total);
  if (!out)
    return mexd_fail_null(error, MEXD_ERROR_NO_MEMORY,
                          "safetensors writer: out of host memory (%zu bytes)", total);
  size_t pos = g_bytes_get_size(header);
  memcpy(out, g_bytes_get_data(header, NULL), pos);
  for (guint i = 0; i < w->entries->len; i++) {
    const WEntry *e = g_ptr_array_index(w->entries, i);
    if (e->nbytes)
      memcpy(out + pos, e->data, e->nbytes);
    pos += e->nbytes;
  }
  return g_bytes_new_take(out, total);
}

static gboolean write_all(int fd, const void *p, size_t n)
{
  const char *c = p;
  while (n > 0) {
    ssize_t k = write(fd, c, MIN(n, (size_t)1 << 30));
    if (k < 0) {
      if (errno == EINTR)
        continue;
      return FALSE;
    }
    c += k;
    n -= (size_t)k;
  }
  return TRUE;
}

gboolean mexd_safetensors_writer_write(MexdSafetensorsWriter *w, const char *path, GError **error)
{
  if (!w || !path)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "safetensors writer: %s is NULL",
                     !w ? "the writer" : "the path");
  g_autofree char *display = g_filename_display_name(path);
  g_autoptr(GBytes) header = build_header(w, error);
  if (!header)
    return FALSE;

  MexdAtomicFile *f = mexd_atomic_file_new(path, error);
  if (!f)
    return FALSE;
  int fd = mexd_atomic_file_fd(f);
  gboolean ok = write_all(fd, g_bytes_get_data(header, NULL), g_bytes_get_size(header));
  for (guint i = 0; ok && i < w->entries->len; i++) {
    const WEntry *e = g_ptr_array_index(w->entries, i);
    ok = write_all(fd, e->data, e->nbytes);
  }
  if (!ok) {
    int err_no = errno;
    mexd_atomic_file_discard(f);
    return mexd_fail(error, MEXD_ERROR_IO, "%s: cannot write: %s", display, g_strerror(err_no));
  }
  return mexd_atomic_file_commit(f, error);
}
