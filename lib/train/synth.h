/* synth.h: a synthetic multiple-instance-learning benchmark with the imbalance MExD targets (a few
 * lesion instances hidden in large bags of background), written as CLAM feature files.
 *
 * THE GENERATIVE MODEL (version 1; every quantity below is exact, RESULTS.md may cite it)
 *
 * Parameters (MexdSynthOptions; defaults from mexd_synth_options_init): C classes (2 or 3), S
 * slides, feature size D (>= 2), K background clusters (8), L lesion clusters per lesion class (2),
 * centre radius R (6), lesion distance Δ (3.5), noise σ (1), bag sizes [Nmin, Nmax] (200..5000),
 * lesion fractions [fmin, fmax] (0.005..0.10), test fraction τ (0.3), class ratio a_0 : … : a_{C−1}
 * (1 : … : 1), seed s.  Presets (mexd_synth_options_preset) set several at once.
 *
 * Class names: C = 2 (Camelyon16-like) 0 "normal", 1 "tumor"; C = 3 (BRACS-like) 0 "benign",
 * 1 "atypical", 2 "malignant".
 *
 * Randomness.  Every draw is Philox4x32-10 (lib/nn/philox.h) under key (s & 0xffffffff, s >> 32)
 * at counter (c0, c1, c2, 0x73790000 | purpose << 8 | k), k = 0 unless said otherwise; a word x
 * (32 bits) gives the uniform u(x) = (x + 0.5)·2^-32 in (0, 1) and the integer ⌊x·n / 2^32⌋ in
 * [0, n) (bias at most n / 2^32, accepted).  A pair of standard normals at (purpose, c0, c1, c2)
 * is Marsaglia's polar method: for k = 0, 1, … 255, the four words of counter k are tried as
 * (x0, x1) then (x2, x3): a = 2u(x0) − 1, b = 2u(x1) − 1, q = a² + b²; the first q < 1 gives
 * z0 = a·√(−2 ln q / q), z1 = b·√(−2 ln q / q) (never reaching k = 256 has probability < 2^-1000;
 * it would give 0, 0).  A standard normal vector of D elements at (purpose, c0, c1) is the pairs
 * at c2 = 0, 1, … ⌈D/2⌉ − 1, element 2·c2 + j taking zj (an odd D drops the last z1).
 * Purposes: 1 centres, 2 slide draws, 3 class order, 4 tissue mixture, 5 instance assignment,
 * 6 instance noise.
 *
 * Centres (indices: background k = 0 … K−1, then lesion cluster j of class c at K + (c−1)·L + j).
 *   background  b_k = R·g / |g|, g the normal vector at (1, k, 0): uniform on the sphere of radius
 *               R (in high D nearly orthogonal, |b_k − b_k'| ≈ R·√2 ≈ 8.5σ);
 *   lesion      parent p = j mod K (the same parents for every lesion class); h the normal vector
 *               at (1, K + (c−1)·L + j, 1), v = h − (h·b̂_p)·b̂_p, v̂ = v / |v|;
 *               l_{c,j} = R·(cos θ·b̂_p + sin θ·v̂), cos θ = 1 − Δ² / (2R²), sin θ = √(1 − cos² θ):
 *               on the sphere at distance exactly Δ from its parent, far from the other centres.
 *               The classes' lesion clusters of one parent differ in direction (|l_{1,j} −
 *               l_{2,j}| ≈ Δ·√2) for D ≥ 3 (at D = 2 there is one perpendicular direction:
 *               they coincide or mirror each other).
 * Slides i = 0 … S−1, named slide_000 … (zero-padded to at least 3 digits).
 *   class       π = a permutation of 0 … S−1 by Fisher–Yates: for r = S−1 down to 1, swap π[r]
 *               with π[⌊x·(r+1) / 2^32⌋], x word 0 at (3, r, 0, 0).  Slide π[r] has class c_r,
 *               the class sequence of the ratio (integers a_c, A = Σ a_c): c_r is the c with the
 *               largest a_c·(r+1) − A·k_c(r), ties to the lower c, k_c(r) the count of class c
 *               among c_0 … c_{r−1} (every prefix as near the ratio as integers allow; for
 *               1 : … : 1 it is r mod C, and class counts differ by at most 1).
 *   split       stratified: with n_c slides of class c, t_c = min(⌊τ·n_c + 0.5⌋, n_c − 1) test
 *               slides, the slides π[r] of class c with k_c(r) < t_c; the others are train.
 *   size        words x0…x3 at (2, i, 0, 0): N = Nmin + ⌊x0·(Nmax − Nmin + 1) / 2^32⌋;
 *               f = fmin + (fmax − fmin)·u(x1); lesion count m = 0 for class 0, else
 *               m = min(max(⌊f·N + 0.5⌋, 1), N).
 *   layout      instance n sits at grid cell (col, row) = (n mod W, ⌊n / W⌋), W = ⌈√N⌉, coords
 *               (256·col, 256·row), patch_size 256, patch_level 0.
 *   lesion      one compact region: the m instances nearest (Euclidean, in cells) to the cell of
 *               instance ⌊x2·N / 2^32⌋, ties to the lower index.
 *   tissue      Dirichlet(1, …, 1) weights over the K background clusters: w_k = −ln u(x),
 *               x word 0 at (4, i, k, 0).
 *   instances   words y0…y3 at (5, i, n, 0) for instance n: a background instance's cluster is
 *               the first k with u(y0)·Σw < w_0 + … + w_k (K−1 if none); a lesion instance's is
 *               lesion cluster ⌊y1·L / 2^32⌋ of the slide's class.  Its features are
 *               x = μ + σ·z, μ the cluster's centre, z the normal vector at (6, i, n), computed in
 *               double and rounded to float32.
 *
 * Why these numbers: an instance-level linear score separates a lesion cluster from its parent at
 * d' = Δ/σ = 3.5 (learnable), but a bag's mean moves by only f·Δ along that direction against
 * σ/√N of noise (d' ≈ 0.2–1.2 at f = 0.5 % for N = 200–5000) and against the slide-to-slide
 * variation of the tissue mixture (of order R), so mean pooling struggles at low fractions.
 *
 * Determinism.  The same options give the same bytes on every machine with IEEE-754 double
 * arithmetic evaluated in double (FLT_EVAL_METHOD 0: x86-64, aarch64…) and the same HDF5 library
 * version: only +, −, ×, ÷, sqrt (correctly rounded) and frexp are used (ln is computed here, not
 * by libm, whose last bits differ between implementations), in a fixed order, without
 * contraction into fused multiply-adds; the HDF5 files carry no timestamps.
 *
 * OUTPUT (mexd_synth_write)
 *   DIR/h5_files/<slide_id>.h5  the CLAM layout (CLAM's data_dir/h5_files): `features` float32
 *       [N, D], `coords` int64 [N, 2] with int64 attributes patch_level 0 and patch_size 256;
 *       and the ground truth, ignored by mexd_bag_read: `instance_label` int8 [N] (0 background,
 *       c for a lesion instance of class c) and `instance_cluster` int8 [N] (the cluster index
 *       above).  Each written atomically.
 *   DIR/labels.csv  "slide_id,label,split", one row per slide in slide order, label the class
 *       name, split "train" or "test".  Written last: a directory without it is incomplete.
 *   DIR/synth.json  the options and cos θ, for the record; written first, it marks the folder as
 *       this writer's: with force, a folder holding labels.csv or h5_files/ but no synth.json
 *       (a cohort synth-bags did not write) is refused, never overwritten.
 * The files are written by this file's own HDF5 writer (mexd_bag_write_h5 stamps modification
 * times, which breaks byte-identical output, and writes no extra datasets).  Like every HDF5 user
 * outside lib/io/features.c, it must not run while another thread uses HDF5. */
#pragma once

#include "io/features.h"

#include <glib.h>
#include <stdint.h>

G_BEGIN_DECLS

#define MEXD_SYNTH_MAX_DIM 65536
#define MEXD_SYNTH_MAX_INSTANCES 1000000
#define MEXD_SYNTH_MAX_SLIDES 1000000

typedef struct {
  int n_classes;                    /* 2 or 3 */
  int n_slides;                     /* >= n_classes */
  double test_fraction;             /* τ in [0, 1) */
  int dim;                          /* D in [2, MEXD_SYNTH_MAX_DIM] */
  int min_instances, max_instances; /* 1 <= Nmin <= Nmax <= MEXD_SYNTH_MAX_INSTANCES */
  double min_fraction, max_fraction; /* 0 < fmin <= fmax <= 1 */
  uint64_t seed;
  /* the model's constants (see above) */
  int background_clusters; /* K in [1, 64] */
  int lesion_clusters;     /* L in [1, 16] */
  double radius;           /* R in (0, 1e6) */
  double lesion_distance;  /* Δ in (0, 2R] */
  double noise;            /* σ in [0, 1e6) */
  int class_ratio[3];      /* a_c in 1..1000 for c < n_classes (1 each by default) */
} MexdSynthOptions;

/* The defaults above for `n_classes` (2 or 3; S = 60 for 2 classes, 90 for 3). */
void mexd_synth_options_init(MexdSynthOptions *o, int n_classes);

/* The cohorts at the scale of the paper's data sets (issue 19), `name` one of
 * mexd_synth_preset_names(): every option but the seed (and the output) set as the preset says
 * (lib/train/synth.c has each preset's reasons).  FALSE with MEXD_ERROR_INVALID_ARGUMENT naming
 * the presets for an unknown name. */
gboolean mexd_synth_options_preset(MexdSynthOptions *o, const char *name, GError **error);
/* NULL-terminated, static. */
const char *const *mexd_synth_preset_names(void);

/* MEXD_ERROR_INVALID_ARGUMENT naming the first option out of range ("--dim must be …", in the
 * command's flag names). */
gboolean mexd_synth_options_check(const MexdSynthOptions *o, GError **error);

/* The class name of class c (NULL outside 0 … n_classes−1). */
const char *mexd_synth_class_name(int n_classes, int c);

/* One slide of the plan (cheap: no features). */
typedef struct {
  int index;
  char id[32];         /* slide_000 … */
  int label;           /* the class */
  gboolean test;       /* in the test split */
  int64_t n_instances; /* N */
  int64_t n_lesion;    /* m */
} MexdSynthSlide;

/* The data set: the options, the centres and the slides' plan. */
typedef struct _MexdSynth MexdSynth;

MexdSynth *mexd_synth_new(const MexdSynthOptions *o, GError **error);
void mexd_synth_free(MexdSynth *s);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MexdSynth, mexd_synth_free)

int mexd_synth_n_slides(const MexdSynth *s);
const MexdSynthSlide *mexd_synth_slide(const MexdSynth *s, int i);
/* The centre of cluster k ([D] doubles; k as in the header: background, then lesion clusters), or
 * NULL out of range. */
const double *mexd_synth_centre(const MexdSynth *s, int k);
int mexd_synth_n_clusters(const MexdSynth *s);

/* Generates slide i: its bag (features, coords, patch_size 256, patch_level 0) and, when not
 * NULL, *instance_label and *instance_cluster ([N] int8, g_free them).  Any slide alone gives the
 * same values as in a whole run.  NULL with MEXD_ERROR_NO_MEMORY when it does not fit. */
MexdBag *mexd_synth_bag(const MexdSynth *s, int i, int8_t **instance_label,
                        int8_t **instance_cluster, GError **error);

/* Called after each slide is written (done = 1 … n). */
typedef void (*MexdSynthProgress)(const MexdSynthSlide *slide, int done, int n, gpointer user_data);

/* Writes the data set into `dir` (created when missing).  A `dir` that exists and is not empty is
 * refused (MEXD_ERROR_INVALID_ARGUMENT) unless `force`: then files of the same names are replaced
 * and other files are left alone.  MEXD_ERROR_UNSUPPORTED when built without HDF5, MEXD_ERROR_IO
 * naming the file that cannot be written. */
gboolean mexd_synth_write(const MexdSynthOptions *o, const char *dir, gboolean force,
                          MexdSynthProgress progress, gpointer user_data, GError **error);

G_END_DECLS
