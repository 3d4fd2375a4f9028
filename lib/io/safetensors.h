/* safetensors.h: reading and writing safetensors files.
 *
 * The format (https://huggingface.co/docs/safetensors): 8 bytes of little-endian uint64 N, then N
 * bytes of UTF-8 JSON (an object, possibly padded with trailing spaces), then the data buffer.  The
 * JSON maps each tensor name to {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}
 * (byte offsets into the data buffer, end exclusive); the optional key "__metadata__" maps to an
 * object of string -> string.
 *
 * Reading.  A file is mapped (never read whole), parsed and validated once by
 * mexd_safetensors_open(); the tensors then point straight into the mapping.  The reader is strict,
 * like the reference implementation:
 *   - the data buffer must be covered exactly: tensors laid back to back with no overlaps, no holes
 *     between them and no bytes after the last one (a file with no tensors has an empty buffer).
 *     Zero-sized tensors (a 0 in the shape, begin == end) are allowed anywhere in that sequence;
 *   - duplicate keys (two tensors with one name, or a key repeated inside an entry) are an error;
 *   - the header must be strict JSON: one object, nothing but spaces/tabs/newlines after it, no
 *     comments, no single quotes, no raw control characters, "\u0000" or unpaired surrogate escapes
 *     in strings, no number of more than 18 digits, at most 16 levels of nesting;
 *   - keys of a tensor entry other than dtype, shape and data_offsets are ignored;
 *   - the header is limited to 100 MiB, tensors to 8 dimensions;
 *   - dtypes F32, F16, BF16, I64 and I32 are read; other dtypes of the format (F64, I8, U8, BOOL,
 *     F8_E4M3...) fail the whole open with MEXD_ERROR_UNSUPPORTED naming the tensor and the dtype,
 *     and strings that are no dtype at all with MEXD_ERROR_FORMAT.
 * Every failure is a GError in MEXD_ERROR whose message starts with the file name: MEXD_ERROR_IO
 * when the file cannot be opened or mapped, MEXD_ERROR_FORMAT when its contents are malformed.
 *
 * The data of a tensor is not aligned in general (offsets are arbitrary byte positions): read it
 * with memcpy, or through mexd_safetensors_load(), never by casting the pointer.  A mapped file
 * that is truncated by another process while open makes reads of it fault (SIGBUS); that is the
 * price of mapping.
 *
 * An open file is not modified by any call but mexd_safetensors_free(), so several threads may
 * read and load from it at once.
 *
 * Writing.  A MexdSafetensorsWriter collects tensors (copies of their data) and metadata, then
 * writes the file atomically (a temporary file in the same directory, renamed over the target).
 * The header is compact JSON padded with spaces so that the data buffer starts at a multiple of 8
 * bytes; tensors are laid out back to back in the order they were added, with no gaps. */
#pragma once

#include "backend/backend.h"
#include "core/tensor.h"

#include <glib.h>
#include <stddef.h>
#include <stdint.h>

G_BEGIN_DECLS

/* The element types read and written here. */
typedef enum {
  MEXD_ST_F32,  /* "F32": IEEE binary32 */
  MEXD_ST_F16,  /* "F16": IEEE binary16 */
  MEXD_ST_BF16, /* "BF16": bfloat16, the upper half of a binary32 */
  MEXD_ST_I64,  /* "I64": signed 64-bit integer */
  MEXD_ST_I32,  /* "I32": signed 32-bit integer */
} MexdStDType;

/* The most dimensions a tensor of a safetensors file may have here. */
#define MEXD_ST_MAX_DIMS 8

/* One tensor of an open file.  Everything points into the MexdSafetensors and lives as long as it
 * does.  All multi-byte values of the data are little-endian. */
typedef struct {
  const char *name;
  MexdStDType dtype;
  int ndim;                        /* 0 (a scalar) to MEXD_ST_MAX_DIMS */
  int64_t shape[MEXD_ST_MAX_DIMS]; /* dims beyond ndim are 0; a dim may be 0 (an empty tensor) */
  const void *data;                /* NOT aligned in general: read with memcpy */
  size_t nbytes;                   /* product(shape) * element size */
} MexdStTensor;

typedef struct _MexdSafetensors MexdSafetensors;
typedef struct _MexdSafetensorsWriter MexdSafetensorsWriter;

/* The format's name of a dtype ("F32", "BF16"...), or "invalid" for a value outside the enum. */
const char *mexd_st_dtype_name(MexdStDType dtype);
/* The size of one element in bytes, or 0 for a value outside the enum. */
size_t mexd_st_dtype_size(MexdStDType dtype);

/* ---- reading ---- */

/* Maps the file at `path`, parses and validates its header.  NULL with the error set on failure
 * (MEXD_ERROR_IO: cannot open or map the file; MEXD_ERROR_FORMAT: malformed contents;
 * MEXD_ERROR_UNSUPPORTED: a dtype other than the five above).  Free with mexd_safetensors_free().
 */
MexdSafetensors *mexd_safetensors_open(const char *path, GError **error);

/* The same parser over bytes in memory (a reference to `bytes` is kept).  `name_for_errors` is the
 * file name used in messages (NULL gives "<memory>"). */
MexdSafetensors *mexd_safetensors_new_from_bytes(GBytes *bytes, const char *name_for_errors,
                                                 GError **error);

/* Frees the file and everything pointing into it (the MexdStTensor and the strings handed out).
 * NULL is allowed.  Tensors made by mexd_safetensors_load() are copies and stay valid. */
void mexd_safetensors_free(MexdSafetensors *st);

/* The file name used in messages (the path given to open, or `name_for_errors`). */
const char *mexd_safetensors_name(const MexdSafetensors *st);

/* The number of tensors (0 is valid). */
guint mexd_safetensors_n_tensors(const MexdSafetensors *st);

/* Tensor `i` (0 <= i < n_tensors), or NULL when `i` is out of range.  Tensors are sorted by their
 * data offsets (begin, then end), i.e. in the order of the data buffer, which is not the order of
 * the JSON; ties (zero-sized tensors at one offset) are broken by name. */
const MexdStTensor *mexd_safetensors_index(const MexdSafetensors *st, guint i);

/* The tensor called `name`, or NULL when there is none. */
const MexdStTensor *mexd_safetensors_find(const MexdSafetensors *st, const char *name);

/* The value of the "__metadata__" entry `key`, or NULL when absent. */
const char *mexd_safetensors_metadata(const MexdSafetensors *st, const char *key);

/* The keys of "__metadata__", sorted by strcmp, NULL-terminated (empty when there is no metadata);
 * free with g_strfreev(). */
char **mexd_safetensors_metadata_keys(const MexdSafetensors *st);

/* A new tensor on `be` holding the values of tensor `name` converted to `want`:
 *   F32, F16, BF16 -> MEXD_DTYPE_F32 (exact) or MEXD_DTYPE_F16 (rounded to nearest even);
 *   I64, I32       -> MEXD_DTYPE_I32 (an I64 value outside the i32 range is MEXD_ERROR_DTYPE).
 * Floats do not load as i32 nor integers as floats (MEXD_ERROR_DTYPE).  A scalar loads with shape
 * [1]; tensors of more than 4 dimensions, or with a 0 in the shape, are MEXD_ERROR_UNSUPPORTED
 * (MexdTensor has 1 to 4 positive dims).  An absent name is MEXD_ERROR_NOT_FOUND naming the file
 * and the tensor. */
MexdTensor *mexd_safetensors_load(MexdSafetensors *st, const char *name, MexdBackend *be,
                                  MexdDType want, GError **error);

/* Refuses (MEXD_ERROR_FORMAT, naming the file, the tensor and the element) a float tensor that
 * holds NaN or Inf: weights like that give no answer.  Integer tensors pass. */
gboolean mexd_safetensors_check_finite(const MexdSafetensors *st, const MexdStTensor *t,
                                       GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(MexdSafetensors, mexd_safetensors_free)

/* ---- writing ---- */

/* A new, empty writer.  Free with mexd_safetensors_writer_free(). */
MexdSafetensorsWriter *mexd_safetensors_writer_new(void);

/* Adds a tensor, copying `nbytes` of `data` (which may be NULL when nbytes is 0).  `shape` has
 * `ndim` dims (0..MEXD_ST_MAX_DIMS, 0 for a scalar; `shape` may be NULL then); dims are >= 0.
 * Fails with MEXD_ERROR_SHAPE when nbytes is not product(shape) * element size, and with
 * MEXD_ERROR_INVALID_ARGUMENT for a NULL, non-UTF-8 or duplicate name, the reserved name
 * "__metadata__", a dtype outside the enum or a bad shape. */
gboolean mexd_safetensors_writer_add(MexdSafetensorsWriter *w, const char *name, MexdStDType dtype,
                                     int ndim, const int64_t *shape, const void *data,
                                     size_t nbytes, GError **error);

/* Adds a copy of tensor `t` (read from its backend, whichever it is): f32 -> F32, f16 -> F16,
 * i32 -> I32, with t's shape.  Name rules as mexd_safetensors_writer_add(). */
gboolean mexd_safetensors_writer_add_tensor(MexdSafetensorsWriter *w, const char *name,
                                            MexdTensor *t, GError **error);

/* Sets "__metadata__" entry `key` to `value` (both copied; a later call replaces it).  A NULL
 * `value` removes the key; a NULL `w` or `key` does nothing.  Keys and values must be UTF-8:
 * mexd_safetensors_writer_write() reports those that are not. */
void mexd_safetensors_writer_set_metadata(MexdSafetensorsWriter *w, const char *key,
                                          const char *value);

/* Writes the file to `path` atomically: the data goes to a temporary file beside `path`, which is
 * flushed to disk and renamed over `path`; on failure `path` is untouched and the temporary file
 * removed.  The "__metadata__" entry is written only when there is metadata.  MEXD_ERROR_IO names
 * the path when it cannot be written.  The writer can be written again or extended afterwards. */
gboolean mexd_safetensors_writer_write(MexdSafetensorsWriter *w, const char *path, GError **error);

/* The bytes the writer would write to a file (for tests and in-memory use). */
GBytes *mexd_safetensors_writer_to_bytes(MexdSafetensorsWriter *w, GError **error);

/* Frees the writer and its copies of the data.  NULL is allowed. */
void mexd_safetensors_writer_free(MexdSafetensorsWriter *w);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(MexdSafetensorsWriter, mexd_safetensors_writer_free)

G_END_DECLS
