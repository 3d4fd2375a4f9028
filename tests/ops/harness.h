/* harness.h: the op test harness.
 *
 * Every op test runs its op on every backend that opens here ("cpu", "vulkan:N"; restrict with
 * MEXD_TEST_BACKENDS=cpu,vulkan:0) over random shapes including edge sizes, and compares:
 * - the cpu backend against a naive reference written in the test (double accumulation);
 * - every other backend against the cpu backend;
 * by normalised mean squared error, NMSE = Σ(out − ref)² / Σ ref².
 * Under MEXD_VK_VALIDATION=1 the run ends by asserting that the validation layer said nothing.
 *
 * Each op file defines `void register_<op>_tests(void)`, which adds its GTest cases with
 * harness_add() (one case per backend and dtype). */
#pragma once

#include "mexd.h"

#include <glib.h>

G_BEGIN_DECLS

#define NMSE_F32      1e-7 /* elementwise, reductions */
#define NMSE_F32_GEMM 1e-6
#define NMSE_F16      5e-4 /* gemm / conv in f16 (also used for f16 elementwise) */

typedef struct {
  MexdBackend *be;  /* the backend under test */
  MexdBackend *cpu; /* the reference backend */
  MexdDType dtype;  /* F32 or F16 */
  const char *spec;
} HarnessCase;

typedef void (*HarnessFunc)(const HarnessCase *hc);

/* Adds "/ops/<name>/<backend>/<dtype>" for every backend and for each dtype in `dtypes`
 * (a bitmask of 1 << MEXD_DTYPE_*); f16 cases are skipped on backends without f16. */
void harness_add(const char *name, unsigned dtypes, HarnessFunc fn);
#define HARNESS_F32  (1u << MEXD_DTYPE_F32)
#define HARNESS_F16  (1u << MEXD_DTYPE_F16)
#define HARNESS_BOTH (HARNESS_F32 | HARNESS_F16)

/* Sizes that exercise edges: 1, 7, 255, 257, and random ones; picked per case from the seeded
 * generator (g_test_rand_*: run with --seed to reproduce). */
int64_t harness_size(int64_t max);
/* n uniform values in [lo, hi), rounded to f16 when `dtype` is F16 (so references see the same
 * inputs). g_free them. */
float *harness_random(int64_t n, float lo, float hi, MexdDType dtype);
/* A tensor on `be` holding `data` (converted to `dtype`); aborts the test on error. */
MexdTensor *harness_tensor(MexdBackend *be, MexdDType dtype, int ndim, const int64_t *shape,
                           const float *data);
MexdTensor *harness_tensor_i32(MexdBackend *be, int ndim, const int64_t *shape,
                               const int32_t *data);
/* `data` as a view `pad` elements into a larger 1-D tensor whose other elements are `fill`
 * (pad 0: a plain tensor), so ops see inputs at offsets that are not descriptor-aligned. */
MexdTensor *harness_view_tensor(MexdBackend *be, MexdDType dtype, int ndim, const int64_t *shape,
                                const float *data, int64_t pad);
int64_t harness_numel(int ndim, const int64_t *shape);
/* "[3,4]"; g_free it. */
char *harness_shape_str(int ndim, const int64_t *shape);
/* The tensor's values as f32 (syncs; aborts on error). g_free them. */
float *harness_read(MexdTensor *t);
double harness_nmse(const float *out, const double *ref, int64_t n);
double harness_nmse_f(const float *out, const float *ref, int64_t n);
/* Asserts NMSE ≤ thr, printing the op, shape and the worst element on failure. */
void harness_assert_close(const char *what, const float *out, const float *ref, int64_t n,
                          double thr);
void harness_assert_close_d(const char *what, const float *out, const double *ref, int64_t n,
                            double thr);
/* Asserts that the call failed with an error in MEXD_ERROR (of the given code, or any if < 0)
 * and frees it. */
void harness_assert_error(GError *error, int code, const char *what);
/* The threshold for an op in the case's dtype. */
double harness_thr(const HarnessCase *hc, double f32_thr);
float harness_f16_round(float x);

void register_gemm_tests(void);
void register_conv2d_tests(void);
void register_norm_tests(void);        /* layernorm, softmax */
void register_elementwise_tests(void); /* unary, binary */
void register_reduce_tests(void);      /* mean_rows, segment_mean */
void register_index_tests(void);       /* gather, topk */
void register_layout_tests(void);      /* concat, permute, transpose, copy */
void register_vision_tests(void);      /* maxpool2d, image_prep */
void register_mexd_tests(void);        /* lincomb, scale_eye, abs_sum_max, route_keep */
void register_grad_tests(void);        /* the backward ops of ops/grad.h */

G_END_DECLS
