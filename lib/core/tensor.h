/* tensor.h: MexdTensor, the one array type of libmexd.
 *
 * A tensor has a dtype (f32, f16, or i32 for indices), a row-major contiguous shape of 1 to 4
 * dimensions, and storage owned by one backend: host memory on the cpu backend, a device buffer on
 * the vulkan backend.  Views (a range of rows, a reshape) share the storage of their parent and
 * keep it alive.  Tensors are reference counted; `mexd_tensor_new*` return a new reference.
 *
 * Reads and writes go through the backend: on vulkan they wait for the work recorded so far, so a
 * read always sees every op recorded before it. */
#pragma once

#include <glib.h>
#include <stddef.h>
#include <stdint.h>

G_BEGIN_DECLS

typedef enum {
  MEXD_DTYPE_F32 = 0,
  MEXD_DTYPE_F16 = 1,
  MEXD_DTYPE_I32 = 2,
} MexdDType;

#define MEXD_MAX_DIMS 4

typedef struct _MexdBackend MexdBackend;
typedef struct _MexdStorage MexdStorage;

typedef struct _MexdTensor {
  /*< read-only >*/
  MexdBackend *backend; /* the backend owning the storage (a reference is held) */
  MexdDType dtype;
  int ndim;                     /* 1..MEXD_MAX_DIMS */
  int64_t shape[MEXD_MAX_DIMS]; /* dims beyond ndim are 1 */
  /*< private >*/
  MexdStorage *storage;
  size_t offset; /* bytes from the start of the storage */
  gint ref_count;
} MexdTensor;

size_t mexd_dtype_size(MexdDType dtype);
const char *mexd_dtype_name(MexdDType dtype);
gboolean mexd_dtype_is_float(MexdDType dtype);

/* A new uninitialised tensor on `backend`.  Shapes must be positive; a product that overflows or
 * exceeds the backend's limits fails with MEXD_ERROR_NO_MEMORY. */
MexdTensor *mexd_tensor_new(MexdBackend *backend, MexdDType dtype, int ndim, const int64_t *shape,
                            GError **error);
/* The same in memory the host reads directly: for results read back after every batch.  On a
 * discrete GPU it is host-visible system memory that the device writes over the bus, so reading
 * it waits only for the work that wrote it and puts no copy on the device's queue (a read of an
 * ordinary tensor there needs a copy after everything submitted).  Elsewhere = mexd_tensor_new. */
MexdTensor *mexd_tensor_new_host(MexdBackend *backend, MexdDType dtype, int ndim,
                                 const int64_t *shape, GError **error);
MexdTensor *mexd_tensor_new_1d(MexdBackend *backend, MexdDType dtype, int64_t n0, GError **error);
MexdTensor *mexd_tensor_new_2d(MexdBackend *backend, MexdDType dtype, int64_t n0, int64_t n1,
                               GError **error);
/* Sets every element of t (a view: its own elements only) to zero, in order with the work
 * recorded before (on vulkan it does not wait for that work). */
gboolean mexd_tensor_fill_zero(MexdTensor *t, GError **error);
/* A new tensor filled with zeros. */
MexdTensor *mexd_tensor_new_zeros(MexdBackend *backend, MexdDType dtype, int ndim,
                                  const int64_t *shape, GError **error);
/* A new tensor holding a copy of `data` (f32 values, converted to `dtype` when it is f16). */
MexdTensor *mexd_tensor_new_from_f32(MexdBackend *backend, MexdDType dtype, int ndim,
                                     const int64_t *shape, const float *data, GError **error);

MexdTensor *mexd_tensor_ref(MexdTensor *t);
void mexd_tensor_unref(MexdTensor *t);

/* Views sharing storage.  `rows` takes rows [row0, row0+n) of dimension 0; `reshape` keeps the
 * element count. */
MexdTensor *mexd_tensor_rows(MexdTensor *t, int64_t row0, int64_t n, GError **error);
MexdTensor *mexd_tensor_reshape(MexdTensor *t, int ndim, const int64_t *shape, GError **error);

int64_t mexd_tensor_numel(const MexdTensor *t);
size_t mexd_tensor_nbytes(const MexdTensor *t);
/* The number of rows (dims 0..ndim-2 multiplied) and the length of the last dimension. */
int64_t mexd_tensor_rows_count(const MexdTensor *t);
int64_t mexd_tensor_row_len(const MexdTensor *t);
gboolean mexd_tensor_same_shape(const MexdTensor *a, const MexdTensor *b);
/* "f32[3,4]": a newly allocated string for messages. */
char *mexd_tensor_describe(const MexdTensor *t);

/* Raw copies in the tensor's own dtype; `nbytes` must equal mexd_tensor_nbytes(). */
gboolean mexd_tensor_write(MexdTensor *t, const void *src, size_t nbytes, GError **error);
gboolean mexd_tensor_read(const MexdTensor *t, void *dst, size_t nbytes, GError **error);
/* Copies as f32 (converted from/to f16 as needed; not for i32 tensors); `n` = element count. */
gboolean mexd_tensor_write_f32(MexdTensor *t, const float *src, int64_t n, GError **error);
gboolean mexd_tensor_read_f32(const MexdTensor *t, float *dst, int64_t n, GError **error);
/* A newly allocated f32 copy of the whole tensor (g_free it), or NULL with the error set. */
float *mexd_tensor_dup_f32(const MexdTensor *t, GError **error);

/* The host address of the data for tensors on the cpu backend, NULL elsewhere. */
void *mexd_tensor_host_data(const MexdTensor *t);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(MexdTensor, mexd_tensor_unref)

/* IEEE half conversions (round to nearest even; overflow gives ±inf, NaN stays NaN). */
uint16_t mexd_f32_to_f16(float f);
float mexd_f16_to_f32(uint16_t h);
void mexd_f32_to_f16_n(const float *src, uint16_t *dst, size_t n);
void mexd_f16_to_f32_n(const uint16_t *src, float *dst, size_t n);

G_END_DECLS
