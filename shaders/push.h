/* push.h: the push constants of every shader, written once for both sides: the GLSL includes it
 * through common.glsl (shaders/<name>.comp), the C code through lib/backend/vulkan.h (lib/ops/,
 * lib/nn/diffc.c).
 *
 * MEXD_PUSH_<SHADER> lists a shader's own fields as declarations in the subset C and GLSL share:
 * MEXD_U32, MEXD_I32 and MEXD_F32 (uint32_t / int32_t / float in C, uint / int / float in GLSL),
 * single or in fixed arrays.  Each side puts its header in front:
 *   GLSL: layout(push_constant) uniform PC { PC_HEADER MEXD_PUSH_SOFTMAX } pc;   (common.glsl)
 *   C:    MEXD_VK_PUSH_STRUCT(SoftmaxPush, MEXD_PUSH_SOFTMAX);                  (vulkan.h)
 * The C header is one uint32_t offset per binding (16 bytes); the GLSL one is the same offsets,
 * or in the MEXD_BDA build four 64-bit tensor addresses (32 bytes), which mexd_vk_dispatch()
 * writes in place of the offsets, moving the fields up 16 bytes.  The fields line up with C's on
 * either side because every one is a 4-byte scalar with 4-byte alignment: in a push-constant
 * block (std430) their offsets follow one another with no padding, and a scalar array has a stride
 * of 4, as in a C struct.  So no other type belongs here (a 64-bit, vector or 16-bit field would be
 * aligned differently on the two sides, and would move when the header does).
 *
 * Each list names the shader and the C file that fills it.  A field's comment says what it holds
 * for both sides. */
#ifndef MEXD_PUSH_H
#define MEXD_PUSH_H

#ifdef __STDC__ /* C (lib/); GLSL defines no __STDC__ */
#include <stdint.h>
#define MEXD_U32 uint32_t
#define MEXD_I32 int32_t
#define MEXD_F32 float
#else
#define MEXD_U32 uint
#define MEXD_I32 int
#define MEXD_F32 float
#endif

/* gemm.comp (lib/ops/gemm.c) */
#define MEXD_PUSH_GEMM                                                                             \
  MEXD_U32 M, N;                                                                                   \
  MEXD_U32 kb, ke;        /* the depth range summed by this dispatch (gemm.c splits long K) */     \
  MEXD_U32 sab, sam, sak; /* A: batch, row (m), depth (k) strides */                               \
  MEXD_U32 sbb, sbk, sbn; /* B: batch, depth (k), column (n) strides */                            \
  MEXD_U32 scb;           /* C batch stride (rows are N apart) */                                  \
  MEXD_F32 alpha, beta;                                                                            \
  MEXD_U32 has_bias;

/* conv2d.comp (lib/ops/conv2d.c) */
#define MEXD_PUSH_CONV2D                                                                           \
  MEXD_U32 total; /* MODE 0 (direct): elements of y; MODE 1 (implicit GEMM): workgroup tiles */    \
  MEXD_U32 C, H, W;                                                                                \
  MEXD_U32 O, OH, OW;                                                                              \
  MEXD_U32 KH, KW;                                                                                 \
  MEXD_U32 cpg, opg; /* input / output channels per group */                                       \
  MEXD_I32 stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;                                         \
  MEXD_U32 has_bias;                                                                               \
  MEXD_U32 ncols;  /* N·OH·OW: the GEMM columns */                                                 \
  MEXD_U32 mtiles; /* tiles of BM over opg */                                                      \
  MEXD_U32 ntiles; /* tiles of BN over ncols (K = cpg·KH·KW and P = OH·OW the shader derives) */

/* maxpool.comp (lib/ops/vision.c) */
#define MEXD_PUSH_MAXPOOL                                                                          \
  MEXD_U32 total; /* N·C·OH·OW */                                                                  \
  MEXD_U32 H, W, OH, OW;                                                                           \
  MEXD_U32 k, stride;                                                                              \
  MEXD_I32 pad;

/* image_prep.comp (lib/ops/vision.c) */
#define MEXD_PUSH_IMAGE_PREP                                                                       \
  MEXD_U32 total; /* B·3·OH·OW */                                                                  \
  MEXD_U32 H, W, OH, OW;                                                                           \
  MEXD_U32 KY, KX; /* weights per output row / column */                                           \
  MEXD_F32 mean[3];                                                                                \
  MEXD_F32 inv_std[3];

/* layernorm.comp (lib/ops/layernorm.c) */
#define MEXD_PUSH_LAYERNORM                                                                        \
  MEXD_U32 rows, D;                                                                                \
  MEXD_F32 eps;                                                                                    \
  MEXD_U32 has_gamma, has_beta;

/* softmax.comp (lib/ops/softmax.c) */
#define MEXD_PUSH_SOFTMAX MEXD_U32 rows, D;

/* unary.comp (lib/ops/unary.c) */
#define MEXD_PUSH_UNARY                                                                            \
  MEXD_U32 n;                                                                                      \
  MEXD_U32 op; /* MexdUnaryOp: 0 relu, 1 gelu, 2 softplus, 3 scale, 4 scale_eye, 5 tanh,           \
                  6 sigmoid */                                                                     \
  MEXD_F32 a, b;                                                                                   \
  MEXD_U32 m; /* scale_eye: the size of the square matrices */

/* binary.comp (lib/ops/binary.c) */
#define MEXD_PUSH_BINARY                                                                           \
  MEXD_U32 n;                                                                                      \
  MEXD_U32 op;         /* 0 add, 1 sub, 2 mul, 3 div (MexdBinaryOp) */                             \
  MEXD_U32 flags;      /* bit 0: a is read at y's index, bit 1: b is */                            \
  MEXD_U32 d1, d2, d3; /* y's dims 1..3 (dim 0 follows from n) */                                  \
  MEXD_U32 sa[4];                                                                                  \
  MEXD_U32 sb[4];

/* mean_rows.comp (lib/ops/reduce.c) */
#define MEXD_PUSH_MEAN_ROWS                                                                        \
  MEXD_U32 mode;                                                                                   \
  MEXD_U32 M, N;                                                                                   \
  MEXD_U32 seg_len; /* rows per segment (the last segment has M − (n_seg−1)·seg_len) */            \
  MEXD_U32 n_seg;                                                                                  \
  MEXD_U32 chunk;    /* rows per chunk */                                                          \
  MEXD_U32 kpc;      /* chunks per segment */                                                      \
  MEXD_U32 n_colblk; /* ceil(N/64) */

/* segment_mean.comp (lib/ops/reduce.c) */
#define MEXD_PUSH_SEGMENT_MEAN                                                                     \
  MEXD_U32 M, N;                                                                                   \
  MEXD_U32 seg_len;                                                                                \
  MEXD_U32 n_out; /* n_seg·N */

/* gather.comp (lib/ops/gather.c) */
#define MEXD_PUSH_GATHER                                                                           \
  MEXD_U32 M, N;     /* x is [M,N] */                                                              \
  MEXD_U32 total;    /* K·N, the elements of y */                                                  \
  MEXD_U32 n_groups; /* workgroups that hold elements (the grid may have a few more) */

/* topk.comp (lib/ops/topk.c) */
#define MEXD_PUSH_TOPK                                                                             \
  MEXD_U32 mode;                                                                                   \
  MEXD_U32 n;        /* elements of x */                                                           \
  MEXD_U32 P;        /* pairs sorted (a power of two) */                                           \
  MEXD_U32 k;        /* outputs */                                                                 \
  MEXD_U32 size;     /* GLOBAL, LOCAL_MERGE: the bitonic sequence size of this stage */            \
  MEXD_U32 stride;   /* GLOBAL: the compare distance */                                            \
  MEXD_U32 n_groups; /* workgroups with work */                                                    \
  MEXD_U32 has_values;

/* concat.comp (lib/ops/concat.c) */
#define MEXD_PUSH_CONCAT                                                                           \
  MEXD_U32 n;    /* elements of x */                                                               \
  MEXD_U32 xrow; /* x's elements per outer index */                                                \
  MEXD_U32 yrow; /* y's elements per outer index */                                                \
  MEXD_U32 yoff; /* where x's row starts inside y's row */

/* permute.comp (lib/ops/permute.c) */
#define MEXD_PUSH_PERMUTE                                                                          \
  MEXD_U32 n;          /* elements */                                                              \
  MEXD_U32 d1, d2, d3; /* y's dims 1..3 */                                                         \
  MEXD_U32 s[4];

/* lincomb.comp (lib/ops/lincomb.c) */
#define MEXD_PUSH_LINCOMB                                                                          \
  MEXD_U32 n;                                                                                      \
  MEXD_U32 nk[3];                                                                                  \
  MEXD_U32 mask; /* bit k: term k present (k = 3: beta·y) */                                       \
  MEXD_F32 a[3];                                                                                   \
  MEXD_F32 beta;

/* abs_sum_max.comp (lib/ops/route.c) */
#define MEXD_PUSH_ABS_SUM_MAX                                                                      \
  MEXD_U32 B, R, C;                                                                                \
  MEXD_U32 axis;

/* route_keep.comp (lib/ops/route.c) */
#define MEXD_PUSH_ROUTE_KEEP MEXD_U32 R, E;

/* diffc_step.comp (lib/nn/diffc.c) */
#define MEXD_PUSH_DIFFC_STEP                                                                       \
  MEXD_U32 F, C, S, T;                                                                             \
  MEXD_U32 t;                                                                                      \
  MEXD_U32 mode; /* bit 0: write f̂0; bit 1: update f; bit 2: write ε̂ where f̂0 goes (tests) */   \
  MEXD_U32 noise_row; /* the row of ST's noise block used as z (a3 ≠ 0 only) */                    \
  MEXD_F32 c[3];                                                                                   \
  MEXD_F32 a[5];

/* unary_bwd.comp (lib/ops/unary.c) */
#define MEXD_PUSH_UNARY_BWD                                                                        \
  MEXD_U32 n;                                                                                      \
  MEXD_U32 op; /* 0 relu, 1 gelu, 2 softplus, 5 tanh, 6 sigmoid */                                 \
  MEXD_U32 acc;

/* softmax_bwd.comp (lib/ops/softmax.c) */
#define MEXD_PUSH_SOFTMAX_BWD                                                                      \
  MEXD_U32 rows, D;                                                                                \
  MEXD_U32 acc;

/* layernorm_bwd.comp (lib/ops/layernorm.c) */
#define MEXD_PUSH_LAYERNORM_BWD                                                                    \
  MEXD_U32 rows, D;                                                                                \
  MEXD_F32 eps;                                                                                    \
  MEXD_U32 has_gamma;                                                                              \
  MEXD_U32 acc;

/* layernorm_bwd_param.comp (lib/ops/layernorm.c) */
#define MEXD_PUSH_LAYERNORM_BWD_PARAM                                                              \
  MEXD_U32 mode;                                                                                   \
  MEXD_U32 rows, D;                                                                                \
  MEXD_F32 eps;                                                                                    \
  MEXD_U32 chunk, kpc;                                                                             \
  MEXD_U32 n_colblk; /* ceil(D/64) */                                                              \
  MEXD_U32 has_dgamma, has_dbeta;

/* sum_rows.comp (lib/ops/reduce.c) */
#define MEXD_PUSH_SUM_ROWS                                                                         \
  MEXD_U32 mode;                                                                                   \
  MEXD_U32 M, N;                                                                                   \
  MEXD_U32 chunk, kpc;                                                                             \
  MEXD_U32 n_colblk; /* ceil(N/64) */                                                              \
  MEXD_U32 acc;

/* scatter_add.comp (lib/ops/gather.c) */
#define MEXD_PUSH_SCATTER_ADD                                                                      \
  MEXD_U32 M, N;                                                                                   \
  MEXD_U32 k0, k1;   /* the indices of this dispatch */                                            \
  MEXD_U32 n_colblk; /* ceil(N/256) */                                                             \
  MEXD_U32 flags;    /* 1 FIRST: the first chunk of indices, 2 LAST: the last, 4 ACC: add to y */

/* slice.comp (lib/ops/concat.c) */
#define MEXD_PUSH_SLICE                                                                            \
  MEXD_U32 n; /* elements of y */                                                                  \
  MEXD_U32 xrow, yrow, xoff;                                                                       \
  MEXD_U32 acc;

/* xent.comp (lib/ops/loss.c) */
#define MEXD_PUSH_XENT                                                                             \
  MEXD_U32 mode;                                                                                   \
  MEXD_U32 R, C;

/* xent_bwd.comp (lib/ops/loss.c) */
#define MEXD_PUSH_XENT_BWD                                                                         \
  MEXD_U32 R, C;                                                                                   \
  MEXD_U32 has_dloss;                                                                              \
  MEXD_U32 acc;

/* mse.comp (lib/ops/loss.c) */
#define MEXD_PUSH_MSE                                                                              \
  MEXD_U32 mode;                                                                                   \
  MEXD_U32 n;                                                                                      \
  MEXD_U32 per_group;                                                                              \
  MEXD_U32 n_groups;

/* mse_bwd.comp (lib/ops/loss.c) */
#define MEXD_PUSH_MSE_BWD                                                                          \
  MEXD_U32 n;                                                                                      \
  MEXD_F32 two_over_n;                                                                             \
  MEXD_U32 has_dloss;                                                                              \
  MEXD_U32 acc;

/* dropout.comp (lib/ops/dropout.c) */
#define MEXD_PUSH_DROPOUT                                                                          \
  MEXD_U32 n;                                                                                      \
  MEXD_U32 key0, key1;                                                                             \
  MEXD_U32 stream0, stream1;                                                                       \
  MEXD_U32 thr;   /* drop when the 24-bit draw is below it */                                      \
  MEXD_F32 scale; /* 1/(1 − p), 0 for p = 1 */                                                     \
  MEXD_U32 acc;

/* conv2d_dw_bwd.comp (lib/ops/conv2d.c) */
#define MEXD_PUSH_CONV2D_DW_BWD                                                                    \
  MEXD_U32 mode;                                                                                   \
  MEXD_U32 N, C, H, W;                                                                             \
  MEXD_U32 OH, OW, KH, KW;                                                                         \
  MEXD_I32 pad_h, pad_w;                                                                           \
  MEXD_U32 total; /* mode 0: elements of dx; 1: workgroups (taps·nchunks); 2: taps */              \
  MEXD_U32 taps;  /* C·KH·KW, + C with db */                                                       \
  MEXD_U32 acc;   /* mode 0: add to dx */                                                          \
  MEXD_U32 chunk, nchunks;

/* abs_sum_max_bwd.comp (lib/ops/route.c) */
#define MEXD_PUSH_ABS_SUM_MAX_BWD                                                                  \
  MEXD_U32 mode;                                                                                   \
  MEXD_U32 B, R, C;                                                                                \
  MEXD_U32 axis;                                                                                   \
  MEXD_U32 nseg, seg;                                                                              \
  MEXD_U32 n; /* elements of x */                                                                  \
  MEXD_U32 acc;

#endif /* MEXD_PUSH_H */
