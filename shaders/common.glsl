// common.glsl: included by every compute shader of libmexd (see lib/backend/vulkan.h).
//
// - FLOAT16 defined: float tensors are stored as float16_t (arithmetic stays fp32);
//   otherwise as float.  TYPE is the storage type, LOAD/STORE convert.
// - Bindings 0..3 are the op's tensors, binding 4 the status word.
// - Push constants begin with PC_HEADER: the element offset of each bound tensor inside its
//   descriptor range (o0..o3).  Ops add their own fields after it.
// - MEXD_GROUP_ID is the linear workgroup index of a grid spread over x and y by mexd_vk_grid().
#extension GL_EXT_shader_16bit_storage : enable

#ifdef FLOAT16
#define TYPE float16_t
#else
#define TYPE float
#endif
#define LOAD(x) float(x)
#define STORE(x) TYPE(x)

#define PC_HEADER uint o0; uint o1; uint o2; uint o3;

#define MEXD_GROUP_ID (gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x)

#define STATUS_INDEX_RANGE 1u
#define STATUS_BUFFER layout(std430, binding = 4) buffer Status { uint status_word; };
