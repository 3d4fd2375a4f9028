/* dropout.c: mexd_dropout and mexd_dropout_keep (grad.h): y = x ⊙ keep/(1 − p), the mask drawn
 * from Philox4x32-10 (lib/nn/philox.h) so that cpu and vulkan masks are identical; the backward is
 * the same op on dy with the same seed and stream.
 *
 * Its own file rather than unary.c's: it is not a function of x alone (a seed, a stream and a
 * counter per element make the mask), it is a training op only, and it has its own shader.
 * cpu: the mask's Philox words four elements at a time, x·scale in f32 as the shader;
 * vulkan: shaders/dropout.comp, one invocation per element.
 * y may be x exactly (in place). */
#include "backend/cpu.h"
#include "backend/vulkan.h"
#include "nn/philox.h"
#include "ops/ops-private.h"

#include <math.h>

/* The drop threshold on the 24-bit draw, and the scale of kept elements, for p in [0,1]. */
static uint32_t dropout_thr(float p)
{
  return (uint32_t)lround((double)p * 16777216.0);
}

static float dropout_scale(float p)
{
  return p < 1.0f ? (float)(1.0 / (1.0 - (double)p)) : 0.0f;
}

static void dropout_words(uint64_t seed, uint64_t stream, uint64_t block, uint32_t w[4])
{
  const uint32_t counter[4] = {(uint32_t)block, (uint32_t)(stream & 0xffffffffu),
                               (uint32_t)(stream >> 32), MEXD_DROPOUT_TAG};
  const uint32_t key[2] = {(uint32_t)(seed & 0xffffffffu), (uint32_t)(seed >> 32)};
  mexd_philox4x32_10(counter, key, w);
}

gboolean mexd_dropout_keep(float p, uint64_t seed, uint64_t stream, uint64_t i)
{
  uint32_t w[4];
  dropout_words(seed, stream, i / 4, w);
  return (w[i % 4] >> 8) >= dropout_thr(p);
}

MEXD_VK_PUSH_STRUCT(DropoutPush, MEXD_PUSH_DROPOUT);

gboolean mexd_dropout(MexdTensor *y, MexdTensor *x, float p, uint64_t seed, uint64_t stream,
                      gboolean accumulate, GError **error)
{
  const char *name = "dropout";
  if (!mexd_op_check_float(name, "y", y, error) ||
      !mexd_op_check_out_like(name, "y", y, "x", x, error))
    return FALSE;
  if (!(p >= 0.0f && p <= 1.0f))
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "dropout: p is %g, expected 0 <= p <= 1",
                     (double)p);
  if (!mexd_tensor_same_data(y, x) && !mexd_op_check_no_overlap(name, "y", y, "x", x, error))
    return FALSE;
  const int64_t n = mexd_tensor_numel(y);
  const uint32_t thr = dropout_thr(p);
  const float scale = dropout_scale(p);
  MexdBackend *be = y->backend;
  if (be->kind == MEXD_BACKEND_CPU) {
    gboolean ox, oy;
    /* y may be x: elementwise, read before written */
    const float *X = mexd_cpu_f32_in(x, &ox);
    float *Y = mexd_cpu_f32_out(y, accumulate, &oy);
    uint32_t w[4];
    for (int64_t i = 0; i < n; i++) {
      if (i % 4 == 0)
        dropout_words(seed, stream, (uint64_t)i / 4, w);
      /* f32 as the shader: x·scale rounded once, a dropped element exactly 0 */
      float v = (w[i % 4] >> 8) >= thr ? X[i] * scale : 0.0f;
      Y[i] = accumulate ? Y[i] + v : v;
    }
    mexd_cpu_f32_done(y, Y, oy, TRUE);
    mexd_op_free_in(X, ox);
    return TRUE;
  }
  if (!mexd_op_check_u32(name, "elements of y", n, error))
    return FALSE;
  DropoutPush pc = {
      .n = (uint32_t)n,
      .key0 = (uint32_t)(seed & 0xffffffffu),
      .key1 = (uint32_t)(seed >> 32),
      .stream0 = (uint32_t)(stream & 0xffffffffu),
      .stream1 = (uint32_t)(stream >> 32),
      .thr = thr,
      .scale = scale,
      .acc = accumulate != 0,
  };
  MexdVkDispatch d = {
      .shader = MEXD_SHADER_DROPOUT,
      .variant = y->dtype,
      .bind = {x, y},
      .n_bind = 2,
      .push = &pc,
      .push_size = sizeof pc,
  };
  return mexd_op_elem_grid(be, n, d.groups, error) && mexd_vk_dispatch(be, &d, error);
}
