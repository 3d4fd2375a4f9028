// common.glsl: included by every compute shader of libmexd (see lib/backend/vulkan.h).
//
// - FLOAT16 defined: float tensors are stored as float16_t (arithmetic stays fp32);
//   otherwise as float.  TYPE is the storage type, LOAD/STORE convert.
// - Bindings 0..3 are the op's tensors, binding 4 the status word.  A shader declares tensor k
//   with TENSOR_RO/WO/RW(k, Block, type) and names it `#define t_ TENSOR(Block, k)`; element i is
//   t_[Ok + i].
// - Every shader is also built with MEXD_BDA defined, for tensors larger than the device's
//   maxStorageBufferRange (lavapipe: 128 MiB): the tensors are then reached through buffer device
//   addresses (GL_EXT_buffer_reference) given in the push constants instead of descriptors, and
//   the element offsets are folded into those addresses (Ok is 0).
// - Push constants begin with PC_HEADER: the element offset of each bound tensor inside its
//   descriptor range (o0..o3), or in the MEXD_BDA build the 64-bit address of each tensor's first
//   element (addr0..addr3; 16 bytes more).  The shader's own fields follow, from push.h, which
//   the C side includes too:
//     layout(push_constant) uniform PC { PC_HEADER MEXD_PUSH_SOFTMAX } pc;
// - MEXD_GROUP_ID is the linear workgroup index of a grid spread over x and y by mexd_vk_grid().
#extension GL_EXT_shader_16bit_storage : enable

#include "push.h"

#ifdef FLOAT16
#define TYPE float16_t
#else
#define TYPE float
#endif
#define LOAD(x) float(x)
#define STORE(x) TYPE(x)

#ifdef MEXD_BDA
#extension GL_EXT_buffer_reference : require
#extension GL_EXT_shader_explicit_arithmetic_types_int64 : require
#ifdef FLOAT16
#define MEXD_BDA_ALIGN 2
#else
#define MEXD_BDA_ALIGN 4
#endif
#define PC_HEADER uint64_t addr0; uint64_t addr1; uint64_t addr2; uint64_t addr3;
#define TENSOR_DECL(Q, Block, T)                                                                 \
  layout(buffer_reference, std430, buffer_reference_align = MEXD_BDA_ALIGN) Q buffer Block {     \
    T v[];                                                                                       \
  };
#define TENSOR_RO(k, Block, T) TENSOR_DECL(readonly, Block, T)
#define TENSOR_WO(k, Block, T) TENSOR_DECL(writeonly, Block, T)
#define TENSOR_RW(k, Block, T) TENSOR_DECL(, Block, T)
#define TENSOR(Block, k) Block(pc.addr##k).v
#define O0 0u
#define O1 0u
#define O2 0u
#define O3 0u
#else
#define PC_HEADER uint o0; uint o1; uint o2; uint o3;
#define TENSOR_RO(k, Block, T) layout(std430, binding = k) readonly buffer Block { T v[]; } Block##_;
#define TENSOR_WO(k, Block, T) layout(std430, binding = k) writeonly buffer Block { T v[]; } Block##_;
#define TENSOR_RW(k, Block, T) layout(std430, binding = k) buffer Block { T v[]; } Block##_;
#define TENSOR(Block, k) Block##_.v
#define O0 pc.o0
#define O1 pc.o1
#define O2 pc.o2
#define O3 pc.o3
#endif

#define MEXD_GROUP_ID (gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x)

#define STATUS_INDEX_RANGE 1u
#define STATUS_BUFFER layout(std430, binding = 4) buffer Status { uint status_word; };
