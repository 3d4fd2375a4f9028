/* ops-private.h: argument checks shared by the ops.  Each returns FALSE with a GError that names
 * the op and the argument ("gemm: argument b is f16[3,4], expected f32"). */
#pragma once

#include "backend/backend-private.h"
#include "ops/ops.h"

G_BEGIN_DECLS

/* t is not NULL and, when `be` is not NULL, belongs to `be`. */
gboolean mexd_op_check_tensor(const char *op, const char *arg, const MexdTensor *t,
                              const MexdBackend *be, GError **error);
/* t (checked as above) has dtype `dtype`. */
gboolean mexd_op_check_dtype(const char *op, const char *arg, const MexdTensor *t,
                             const MexdBackend *be, MexdDType dtype, GError **error);
/* The dtype of a float output: f32 or f16. */
gboolean mexd_op_check_float(const char *op, const char *arg, const MexdTensor *t, GError **error);
/* t has `ndim` dimensions with the given sizes (a size < 0 is not checked). */
gboolean mexd_op_check_shape(const char *op, const char *arg, const MexdTensor *t, int ndim,
                             const int64_t *shape, GError **error);
/* a and b do not share storage bytes (an output must not alias an input unless the op allows). */
gboolean mexd_op_check_no_overlap(const char *op, const char *out, const MexdTensor *a,
                                  const char *in, const MexdTensor *b, GError **error);
/* TRUE when a and b are the same bytes of the same storage with the same dtype. */
gboolean mexd_tensor_same_data(const MexdTensor *a, const MexdTensor *b);

/* Element count as uint32 for a shader, or an error when it does not fit. */
gboolean mexd_op_check_u32(const char *op, const char *what, int64_t v, GError **error);

/* vulkan: the workgroup size of a one-workgroup-per-row reduction over rows of D elements
 * (layernorm, softmax): 256 for long rows, 64 otherwise, halved to the device's limit; always a
 * power of two, for the shaders' tree reductions. */
uint32_t mexd_vk_row_workgroup(MexdBackend *be, int64_t D);

G_END_DECLS
