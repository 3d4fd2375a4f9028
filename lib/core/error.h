/* error.h: the GError domain of libmexd.
 *
 * Every fallible call in libmexd takes a trailing `GError **error` and returns FALSE / NULL on
 * failure with the error set; nothing aborts on bad input.  Messages name the object that is
 * wrong (the file, the tensor argument, the device) and what is wrong with it. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

#define MEXD_ERROR (mexd_error_quark())
GQuark mexd_error_quark(void);

typedef enum {
  MEXD_ERROR_INVALID_ARGUMENT, /* NULL where an object is needed, a bad parameter value */
  MEXD_ERROR_SHAPE,            /* shapes that do not fit together */
  MEXD_ERROR_DTYPE,            /* a dtype the op does not take, or mismatched dtypes */
  MEXD_ERROR_INDEX,            /* an index out of range */
  MEXD_ERROR_BACKEND,     /* tensors from different backends, or a backend that cannot run it */
  MEXD_ERROR_DEVICE,      /* the compute device failed (lost, timed out, driver error) */
  MEXD_ERROR_NO_MEMORY,   /* an allocation failed or exceeds a device limit */
  MEXD_ERROR_IO,          /* reading or writing a file failed */
  MEXD_ERROR_FORMAT,      /* a file's contents are corrupt or not what was expected */
  MEXD_ERROR_UNSUPPORTED, /* valid, but not supported here (device feature, file variant) */
  MEXD_ERROR_NOT_FOUND,   /* a named thing (tensor, device) does not exist */
} MexdErrorCode;

/* Shorthands used throughout lib/: set the error (when error is not NULL) and return FALSE /
 * NULL. */
gboolean mexd_fail(GError **error, int code, const char *format, ...) G_GNUC_PRINTF(3, 4);
gpointer mexd_fail_null(GError **error, int code, const char *format, ...) G_GNUC_PRINTF(3, 4);

G_END_DECLS
