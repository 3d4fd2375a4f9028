/* ops-private.h: what the ops share (ops-common.c): argument checks, each returning FALSE with a
 * GError that names the op and the argument ("gemm: argument b is f16[3,4], expected f32"); and
 * the small helpers of the cpu kernels and shader dispatches of the backward ops (grad.h). */
#pragma once

#include "backend/backend-private.h"
#include "ops/grad.h"
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

/* t (not NULL) is on ref's backend with ref's dtype and shape. */
gboolean mexd_op_check_like(const char *op, const char *arg, const MexdTensor *t,
                            const MexdTensor *ref, GError **error);
/* Output o (already checked to be a float tensor) and input i: i on o's backend with o's dtype,
 * and o of i's shape, so that a wrong output is the argument an error names. */
gboolean mexd_op_check_out_like(const char *op, const char *on, const MexdTensor *o,
                                const char *in, const MexdTensor *i, GError **error);
/* A one-element tensor of ref's dtype on ref's backend (a loss, or its upstream gradient). */
gboolean mexd_op_check_scalar(const char *op, const char *arg, const MexdTensor *t,
                              const MexdTensor *ref, GError **error);

/* cpu kernels (the backward ops: f32 in, sums in double, one rounding out) */
/* The value to store: v, or v added to the old contents. */
static inline float mexd_op_acc_store(float old, double v, gboolean acc)
{
  return (float)(acc ? (double)old + v : v);
}
/* Frees what mexd_cpu_f32_in() returned when it was a converted copy. */
static inline void mexd_op_free_in(const float *p, gboolean owned)
{
  if (owned)
    g_free((float *)p);
}
/* The value of the one-element tensor t as f32, or dflt when t is NULL. */
float mexd_op_cpu_scalar(MexdTensor *t, float dflt);

/* vulkan */
#define MEXD_OP_ELEM_GROUP 256 /* local_size_x of the one-invocation-per-element shaders */
/* The grid of one invocation per element for n elements (MEXD_OP_ELEM_GROUP per workgroup). */
gboolean mexd_op_elem_grid(MexdBackend *be, int64_t n, uint32_t groups[3], GError **error);
/* A new f32 scratch tensor of n elements on be (partial sums, statistics): the vulkan backend
 * keeps bound tensors alive until the recorded work has run, so the op may drop it at once. */
MexdTensor *mexd_op_scratch_new(const char *op, MexdBackend *be, int64_t n, GError **error);
/* The single-workgroup passes (cross-entropy's mean over rows, abs_sum_max_bwd's maximum and
 * count over lines) walk a data-dependent number of elements per invocation: on a CPU device
 * they refuse (MEXD_ERROR_UNSUPPORTED) what would take an invocation past this many loop
 * iterations, inside lavapipe's 65,535 with room for the shader's other loops. */
#define MEXD_OP_CPU_DEVICE_MAX_LOOP 60000

/* vulkan: the workgroup size of a one-workgroup-per-row reduction over rows of D elements
 * (layernorm, softmax): 256 for long rows, 64 otherwise, halved to the device's limit; always a
 * power of two, for the shaders' tree reductions. */
uint32_t mexd_vk_row_workgroup(MexdBackend *be, int64_t D);

G_END_DECLS
