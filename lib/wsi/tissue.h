/* tissue.h: finding tissue on a slide the way CLAM does, to the pixel.
 *
 * CLAM's patching script (create_patches_fp.py) is what MExD, TransMIL and most MIL papers used to
 * cut their slides; users compare our patch coordinates with the ones they already have.  So the
 * segmentation here reproduces CLAM's effective algorithm exactly (../shared/design/WSI.md, "Exact
 * rules"), including the OpenCV 4.6 operations it calls:
 *
 *   RGBA of the whole segmentation level → saturation of OpenCV's 8-bit RGB→HSV → median blur
 *   (kernel mthresh, replicated border) → threshold S > sthresh (or Otsu's threshold) → closing
 *   with a close×close square of ones (OpenCV's anchor at close/2 for both dilation and erosion)
 *   → contours with holes (findContours RETR_CCOMP, CHAIN_APPROX_NONE: Suzuki–Abe border
 *   following, in OpenCV's output order) → area filters in reference-patch units → polygons
 *   scaled to level 0 by truncation.
 *
 * The building blocks are exposed (mexd_cv_*) so that tests can check each against OpenCV itself
 * (tests/reference/gen_wsi_cv.py).  Nothing here needs OpenSlide: slide.h reads the pixels. */
#pragma once

#include <glib.h>
#include <stdint.h>

G_BEGIN_DECLS

typedef struct {
  int32_t x, y;
} MexdPoint;

/* A closed polygon: the last point connects to the first.  A ring of one point is a single
 * pixel; of two, a segment. */
typedef struct {
  MexdPoint *pts;
  int n;
} MexdRing;

/* CLAM's segmentation and filter parameters.  The presets are CLAM's own: "default" (the
 * arguments of create_patches_fp.py without a preset), "tcga", "bwh_biopsy", "bwh_resection"
 * (the CSV files in its presets folder).  All of them patch with padding and the four_pt test. */
typedef struct {
  int sthresh;       /* saturation threshold: tissue where S > sthresh (0..255) */
  int sthresh_up;    /* the value written for tissue (CLAM: 255; any nonzero value acts alike) */
  int mthresh;       /* median kernel, odd, >= 3 */
  int close;         /* closing kernel size; 0: none */
  gboolean use_otsu; /* Otsu's threshold instead of sthresh */
  double a_t;        /* minimum net tissue area of a contour, in reference patches */
  double a_h;        /* minimum hole area, in reference patches */
  int max_n_holes;   /* holes kept per contour (the largest) */
  int ref_patch_size; /* the reference patch, level-0 pixels (CLAM: 512) */
} MexdTissueParams;

/* Fills *out with the preset `name`; MEXD_ERROR_INVALID_ARGUMENT naming the presets otherwise. */
gboolean mexd_tissue_preset(const char *name, MexdTissueParams *out, GError **error);
/* "default, tcga, bwh_biopsy, bwh_resection" */
const char *mexd_tissue_preset_list(void);
/* MEXD_ERROR_INVALID_ARGUMENT when a parameter is out of range (even or small median...). */
gboolean mexd_tissue_params_check(const MexdTissueParams *p, GError **error);

/* The result: kept tissue contours in OpenCV's order, each with its kept holes, in level-0
 * pixels. */
typedef struct {
  int n;               /* contours */
  MexdRing *contours;  /* [n] */
  int *n_holes;        /* [n] */
  MexdRing **holes;    /* [n][n_holes[i]] */
  int level;           /* the slide level segmented (-1 when not from a slide) */
  double ds_x, ds_y;   /* the segmentation level's downsample per axis (level-0 / level size) */
  int width, height;   /* the segmentation image */
  int threshold;       /* the saturation threshold used (Otsu's when asked for) */
  double tissue_fraction; /* net area of the kept contours over the image area (seg level) */
} MexdTissue;

/* Segments an 8-bit RGB or RGBA image (`channels` 3 or 4; alpha is ignored: OpenSlide's
 * transparent pixels arrive as 0,0,0 which has no saturation) whose downsample from level 0 is
 * (ds_x, ds_y).  Rows are `stride` bytes apart. */
MexdTissue *mexd_tissue_segment(const uint8_t *pixels, int width, int height, size_t stride,
                                int channels, double ds_x, double ds_y,
                                const MexdTissueParams *params, GError **error);
void mexd_tissue_free(MexdTissue *t);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MexdTissue, mexd_tissue_free)

/* ---- the OpenCV 4.6 operations, as CLAM calls them (exposed for the tests) ---- */

/* S of cv2.cvtColor(RGB2HSV) for 8-bit input: 0 where max = 0, else round(255 (max−min) / max)
 * computed with OpenCV's fixed-point table. */
void mexd_cv_saturation(const uint8_t *pixels, int width, int height, size_t stride, int channels,
                        uint8_t *out);
/* cv2.medianBlur(src, k) for 8-bit, k odd >= 3: median of the k×k window, border replicated. */
void mexd_cv_median(const uint8_t *src, int width, int height, int k, uint8_t *dst);
/* The threshold cv2.threshold(..., THRESH_OTSU) picks for an 8-bit image. */
int mexd_cv_otsu(const uint8_t *src, size_t n);
/* cv2.morphologyEx(img, MORPH_CLOSE, np.ones((k, k))) in place, 8-bit, k >= 1. */
void mexd_cv_close(uint8_t *img, int width, int height, int k);

/* cv2.findContours(bin, RETR_CCOMP, CHAIN_APPROX_NONE) of an 8-bit image (nonzero = object),
 * in OpenCV's order.  Returns the number of contours; *rings gets them (free each pts and the
 * array with g_free) and *parent the index of each one's parent (−1 for outer borders; holes
 * point at their outer border). */
int mexd_cv_find_contours(const uint8_t *bin, int width, int height, MexdRing **rings,
                          int **parent);
/* cv2.contourArea (unsigned). */
double mexd_cv_contour_area(const MexdRing *r);
/* cv2.pointPolygonTest(ring, (x, y), False): +1 inside, 0 on an edge, −1 outside.  (x, y) are
 * converted to float as OpenCV's Point2f does. */
int mexd_cv_point_polygon_test(const MexdRing *r, double x, double y);
/* cv2.boundingRect of the points. */
void mexd_cv_bounding_rect(const MexdRing *r, int *x, int *y, int *w, int *h);

void mexd_rings_free(MexdRing *rings, int n);

G_END_DECLS
