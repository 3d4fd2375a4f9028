/* cpu.h: helpers for the cpu kernels in lib/ops/.  The kernels compute in f32 (accumulating in
 * f32 or double); f16 tensors are converted on the way in and rounded once on the way out, which is
 * what the shaders do too. */
#pragma once

#include "core/tensor.h"

G_BEGIN_DECLS

/* The tensor's values as f32: its own data when it is f32 (*owned = FALSE), else a converted copy
 * (*owned = TRUE, g_free it). */
float *mexd_cpu_f32_in(const MexdTensor *t, gboolean *owned);
/* A f32 buffer to write the tensor's values into; `load` fills it with the current values (for
 * accumulating ops).  Hand it to mexd_cpu_f32_done() with store = TRUE to write it back. */
float *mexd_cpu_f32_out(MexdTensor *t, gboolean load, gboolean *owned);
void mexd_cpu_f32_done(MexdTensor *t, float *f, gboolean owned, gboolean store);

G_END_DECLS
