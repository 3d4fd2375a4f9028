/* vulkan.h: what the ops in lib/ops/ use to run a shader on the vulkan backend.
 *
 * An op fills a MexdVkDispatch and calls mexd_vk_dispatch(); the dispatch is recorded into the
 * backend's open command buffer (after a compute→compute barrier) and runs at the next
 * mexd_backend_sync() or tensor read.  Bound tensors are kept alive until then, so an op may drop
 * its temporaries at once.
 *
 * Shader conventions (shaders/common.glsl):
 * - bindings 0..MEXD_VK_MAX_BINDINGS-1 are std430 storage buffers; binding MEXD_VK_STATUS_BINDING
 * is the status word a shader sets (atomicOr) to report bad data found on the device;
 * - push constants start with one uint per binding, the element offset of the tensor inside the
 *   bound range (descriptor offsets must be aligned, tensor views need not be); the op's own
 *   parameters follow, in at most 128 − 32 bytes (the MEXD_BDA builds, chosen by the backend when
 *   a bound tensor exceeds maxStorageBufferRange, take 16 bytes more: one 64-bit address per
 *   binding instead of the offsets; the op's push struct stays the same).  The parameters of
 *   each shader are written once, in shaders/push.h, for the shader and for the op's struct
 *   (MEXD_VK_PUSH_STRUCT);
 * - specialization constants 0..n−1 are the op's tile sizes / workgroup sizes;
 * - every shader exists as "<name>.f32" and "<name>.f16" (float storage type; arithmetic and
 *   accumulation are f32 in both). */
#pragma once

#include "backend/backend-private.h"
#include "push.h" /* shaders/push.h: each shader's push-constant fields, shared with the GLSL */

G_BEGIN_DECLS

#define MEXD_VK_MAX_BINDINGS   4
#define MEXD_VK_STATUS_BINDING 4
#define MEXD_VK_PUSH_HEADER    16 /* bytes of binding offsets at the start of the push constants */
#define MEXD_VK_MAX_PUSH       128

/* The push-constant struct `Name` of a shader: the binding offsets (MEXD_VK_PUSH_HEADER bytes,
 * which mexd_vk_dispatch() fills), then FIELDS, the shader's MEXD_PUSH_<NAME> from push.h.  It
 * must fit with the 16 bytes more of the MEXD_BDA builds' addresses.
 *   MEXD_VK_PUSH_STRUCT(SoftmaxPush, MEXD_PUSH_SOFTMAX); */
#define MEXD_VK_PUSH_STRUCT(Name, FIELDS)                                                          \
  typedef struct {                                                                                 \
    uint32_t off[MEXD_VK_MAX_BINDINGS];                                                            \
    FIELDS                                                                                         \
  } Name;                                                                                          \
  _Static_assert(sizeof(Name) + MEXD_VK_PUSH_HEADER <= MEXD_VK_MAX_PUSH,                           \
                 #Name ": the push constants do not fit in the MEXD_BDA builds")

/* Bits a shader may set in the status word (shaders/common.glsl has the same values). */
enum {
  MEXD_VK_STATUS_INDEX_RANGE = 1u << 0, /* a gather index outside the source rows */
};

typedef struct {
  const char *shader; /* base name: "gemm" */
  MexdDType variant;  /* F32 or F16: which build of the shader */
  uint32_t spec[8];   /* specialization constants 0..n_spec−1 */
  int n_spec;
  MexdTensor *bind[MEXD_VK_MAX_BINDINGS]; /* NULL: a small dummy buffer is bound */
  int n_bind;
  gboolean bind_status;
  const void *push; /* the op's push constants, MEXD_VK_PUSH_HEADER bytes reserved at the start */
  size_t push_size;
  uint32_t groups[3];
} MexdVkDispatch;

typedef struct {
  uint32_t subgroup_size;
  uint32_t max_shared_memory;
  uint32_t max_group_count[3];
  uint32_t max_group_invocations;
  uint64_t max_storage_range;
  gboolean is_gpu; /* a discrete or integrated GPU (not lavapipe / a CPU device) */
  gboolean discrete;
} MexdVkLimits;

gboolean mexd_vk_dispatch(MexdBackend *be, const MexdVkDispatch *d, GError **error);
const MexdVkLimits *mexd_vk_limits(MexdBackend *be);
/* Spreads `n_groups` workgroups over x (and y when x would exceed the device limit).  Shaders
 * recover the linear workgroup index with MEXD_GROUP_ID (common.glsl) and must bounds-check it. */
gboolean mexd_vk_grid(MexdBackend *be, uint64_t n_groups, uint32_t groups[3], GError **error);

/* Queue submissions made so far by all vulkan backends (tests: a batch is one submission). */
guint mexd_vk_submissions(void);
/* Validation-layer messages seen so far by backends opened with MEXD_VK_VALIDATION=1. */
guint mexd_vk_validation_messages(void);

G_END_DECLS
