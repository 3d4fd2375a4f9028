/* tissue.c: CLAM's tissue segmentation with OpenCV's operations written out (see tissue.h). */
#include "tissue.h"

#include "../core/error.h"

#include <float.h>
#include <math.h>
#include <string.h>

/* ---- presets ---- */

typedef struct {
  const char *name;
  MexdTissueParams p;
} Preset;

/* CLAM's create_patches_fp.py defaults and its presets (CSV files) (sthresh, sthresh_up, mthresh,
 * close, use_otsu, a_t, a_h, max_n_holes, ref_patch_size). */
static const Preset PRESETS[] = {
    {"default", {8, 255, 7, 4, FALSE, 100, 16, 8, 512}},
    {"tcga", {8, 255, 7, 4, FALSE, 16, 4, 8, 512}},
    {"bwh_biopsy", {15, 255, 11, 2, FALSE, 1, 1, 2, 512}},
    {"bwh_resection", {15, 255, 11, 4, FALSE, 100, 16, 8, 512}},
};

const char *mexd_tissue_preset_list(void)
{
  return "default, tcga, bwh_biopsy, bwh_resection";
}

gboolean mexd_tissue_preset(const char *name, MexdTissueParams *out, GError **error)
{
  for (size_t i = 0; name && i < G_N_ELEMENTS(PRESETS); i++)
    if (strcmp(name, PRESETS[i].name) == 0) {
      *out = PRESETS[i].p;
      return TRUE;
    }
  return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "unknown tissue preset \"%s\" (presets: %s)",
                   name ? name : "(null)", mexd_tissue_preset_list());
}

gboolean mexd_tissue_params_check(const MexdTissueParams *p, GError **error)
{
  if (!p)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "tissue parameters are NULL");
  if (p->sthresh < 0 || p->sthresh > 255 || p->sthresh_up < 1 || p->sthresh_up > 255)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "tissue: saturation threshold %d / value %d must lie in 0..255 / 1..255",
                     p->sthresh, p->sthresh_up);
  if (p->mthresh < 3 || p->mthresh % 2 == 0 || p->mthresh > 255)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "tissue: the median kernel must be odd and in 3..255, not %d", p->mthresh);
  if (p->close < 0 || p->close > 255)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "tissue: the closing kernel must be in 0..255, not %d", p->close);
  if (!(p->a_t >= 0) || !(p->a_h >= 0) || p->max_n_holes < 0 || p->ref_patch_size < 1)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "tissue: area thresholds, hole count and reference patch must be >= 0 "
                     "(a_t %g, a_h %g, holes %d, reference patch %d)",
                     p->a_t, p->a_h, p->max_n_holes, p->ref_patch_size);
  return TRUE;
}

/* ---- pixel operations ---- */

void mexd_cv_saturation(const uint8_t *pixels, int width, int height, size_t stride, int channels,
                        uint8_t *out)
{
  /* OpenCV's RGB2HSV_b: s = (diff * round((255 << 12) / v) + (1 << 11)) >> 12.  No table entry
   * is a rounding tie (255·4096 = 2^12·3·5·17 has no factor 2^13), so lround is exact. */
  int table[256];
  table[0] = 0;
  for (int v = 1; v < 256; v++)
    table[v] = (int)lround((255 << 12) / (double)v);
  for (int y = 0; y < height; y++) {
    const uint8_t *row = pixels + (size_t)y * stride;
    uint8_t *o = out + (size_t)y * width;
    for (int x = 0; x < width; x++) {
      const uint8_t *p = row + (size_t)x * channels;
      int mx = MAX(p[0], MAX(p[1], p[2])), mn = MIN(p[0], MIN(p[1], p[2]));
      o[x] = (uint8_t)(((mx - mn) * table[mx] + (1 << 11)) >> 12);
    }
  }
}

/* The median of a k×k window with clamped coordinates: a 256-bin histogram slid along each
 * row (with 16 coarse bins to find the median quickly). */
void mexd_cv_median(const uint8_t *src, int width, int height, int k, uint8_t *dst)
{
  int r = k / 2, half = (k * k) / 2; /* the median is the (half+1)-th smallest */
  for (int y = 0; y < height; y++) {
    int fine[256] = {0}, coarse[16] = {0};
    int rows[256];
    for (int i = 0; i < k; i++)
      rows[i] = CLAMP(y + i - r, 0, height - 1);
#define ADD_COL(cx, d)                                                                             \
  do {                                                                                             \
    int c_ = CLAMP((cx), 0, width - 1);                                                            \
    for (int i_ = 0; i_ < k; i_++) {                                                               \
      uint8_t v_ = src[(size_t)rows[i_] * width + c_];                                             \
      fine[v_] += (d);                                                                             \
      coarse[v_ >> 4] += (d);                                                                      \
    }                                                                                              \
  } while (0)
    for (int c = -r; c <= r; c++)
      ADD_COL(c, 1);
    for (int x = 0; x < width; x++) {
      int acc = 0, b = 0;
      while (acc + coarse[b] <= half)
        acc += coarse[b++];
      int v = b * 16;
      while (acc + fine[v] <= half)
        acc += fine[v++];
      dst[(size_t)y * width + x] = (uint8_t)v;
      if (x + 1 < width) {
        ADD_COL(x - r, -1);
        ADD_COL(x + r + 1, 1);
      }
    }
#undef ADD_COL
  }
}

int mexd_cv_otsu(const uint8_t *src, size_t n)
{
  /* OpenCV's getThreshVal_Otsu_8u: the first level maximising the between-class variance,
   * levels where either class weight is within FLT_EPSILON of 0 or 1 skipped. */
  double h[256] = {0};
  for (size_t i = 0; i < n; i++)
    h[src[i]] += 1;
  double scale = n ? 1.0 / (double)n : 0, mu = 0;
  for (int i = 0; i < 256; i++)
    mu += i * h[i];
  mu *= scale;
  double mu1 = 0, q1 = 0, max_sigma = 0;
  int max_val = 0;
  for (int i = 0; i < 256; i++) {
    double p_i = h[i] * scale;
    mu1 *= q1;
    q1 += p_i;
    double q2 = 1.0 - q1;
    if (MIN(q1, q2) < FLT_EPSILON || MAX(q1, q2) > 1.0 - FLT_EPSILON)
      continue;
    mu1 = (mu1 + i * p_i) / q1;
    double mu2 = (mu - q1 * mu1) / q2;
    double sigma = q1 * q2 * (mu1 - mu2) * (mu1 - mu2);
    if (sigma > max_sigma) {
      max_sigma = sigma;
      max_val = i;
    }
  }
  return max_val;
}

/* dst(x, y) = max or min of src(x + j − a, y + i − a), i, j in [0, k), over the pixels inside
 * the image (OpenCV's default morphology border never wins).  Separable: rows, then columns. */
static void morph(uint8_t *img, int width, int height, int k, gboolean dilate, uint8_t *tmp)
{
  int a = k / 2;
  for (int y = 0; y < height; y++) {
    const uint8_t *s = img + (size_t)y * width;
    uint8_t *t = tmp + (size_t)y * width;
    for (int x = 0; x < width; x++) {
      int lo = MAX(x - a, 0), hi = MIN(x - a + k - 1, width - 1);
      uint8_t v = s[lo];
      for (int c = lo + 1; c <= hi; c++)
        v = dilate ? MAX(v, s[c]) : MIN(v, s[c]);
      t[x] = v;
    }
  }
  for (int y = 0; y < height; y++) {
    int lo = MAX(y - a, 0), hi = MIN(y - a + k - 1, height - 1);
    uint8_t *o = img + (size_t)y * width;
    for (int x = 0; x < width; x++) {
      uint8_t v = tmp[(size_t)lo * width + x];
      for (int r = lo + 1; r <= hi; r++) {
        uint8_t u = tmp[(size_t)r * width + x];
        v = dilate ? MAX(v, u) : MIN(v, u);
      }
      o[x] = v;
    }
  }
}

void mexd_cv_close(uint8_t *img, int width, int height, int k)
{
  if (k < 1 || width < 1 || height < 1)
    return;
  uint8_t *tmp = g_malloc((size_t)width * height);
  morph(img, width, height, k, TRUE, tmp);
  morph(img, width, height, k, FALSE, tmp);
  g_free(tmp);
}

/* ---- contours: Suzuki & Abe's border following, as OpenCV 4.6 runs it ----
 *
 * The image gets a one-pixel frame of zeros and holds 0 (background), 1 (object, not yet on a
 * followed border), 2 (on a followed border) and −126 (on a followed border with background
 * just east of it, examined while following: such a pixel never starts a hole border).  The
 * raster scan starts an outer border at a 0→1 step and a hole border where a pixel >= 1 is
 * followed by a 0; each border is followed once, 8-connected, writing every pixel
 * (CHAIN_APPROX_NONE). */

typedef struct {
  GArray *pts; /* MexdPoint */
  gboolean hole;
  int comp;    /* the 8-connected object component the border belongs to */
} Border;

static const int DX[8] = {1, 1, 0, -1, -1, -1, 0, 1};
static const int DY[8] = {0, -1, -1, -1, 0, 1, 1, 1};

static void follow(int8_t *img, int stride, int x0, int y0, gboolean hole, GArray *pts)
{
  /* x0, y0: the start pixel in framed coordinates; points are written unframed */
  int delta[16];
  for (int s = 0; s < 8; s++)
    delta[s] = delta[s + 8] = DY[s] * stride + DX[s];
  int8_t *i0 = img + (ptrdiff_t)y0 * stride + x0, *i1, *i3, *i4 = NULL;
  int s, s_end;
  s_end = s = hole ? 0 : 4;
  do {
    s = (s - 1) & 7;
    i1 = i0 + delta[s];
  } while (*i1 == 0 && s != s_end);
  MexdPoint pt = {x0 - 1, y0 - 1};
  if (s == s_end) { /* a single pixel */
    *i0 = (int8_t)-126;
    g_array_append_val(pts, pt);
    return;
  }
  i3 = i0;
  for (;;) {
    s_end = s;
    while (s < 15) {
      i4 = i3 + delta[++s];
      if (*i4 != 0)
        break;
    }
    s &= 7;
    if ((unsigned)(s - 1) < (unsigned)s_end)
      *i3 = (int8_t)-126;
    else if (*i3 == 1)
      *i3 = 2;
    g_array_append_val(pts, pt);
    pt.x += DX[s];
    pt.y += DY[s];
    if (i4 == i0 && i3 == i1)
      break;
    i3 = i4;
    s = (s + 4) & 7;
  }
}

/* 8-connected labels of the object pixels (framed image), 0 for background; returns the count. */
static int label_components(const int8_t *img, int fw, int fh, int *lab)
{
  int n = 0;
  GArray *stack = g_array_new(FALSE, FALSE, sizeof(int));
  for (int i = 0; i < fw * fh; i++) {
    if (!img[i] || lab[i])
      continue;
    lab[i] = ++n;
    g_array_append_val(stack, i);
    while (stack->len) {
      int j = g_array_index(stack, int, stack->len - 1);
      g_array_set_size(stack, stack->len - 1);
      int jx = j % fw, jy = j / fw;
      for (int s = 0; s < 8; s++) {
        int nx = jx + DX[s], ny = jy + DY[s];
        if (nx < 0 || ny < 0 || nx >= fw || ny >= fh)
          continue;
        int q = ny * fw + nx;
        if (img[q] && !lab[q]) {
          lab[q] = n;
          g_array_append_val(stack, q);
        }
      }
    }
  }
  g_array_free(stack, TRUE);
  return n;
}

int mexd_cv_find_contours(const uint8_t *bin, int width, int height, MexdRing **rings,
                          int **parent)
{
  *rings = NULL;
  *parent = NULL;
  if (width < 1 || height < 1)
    return 0;
  int fw = width + 2, fh = height + 2;
  int8_t *img = g_malloc0((size_t)fw * fh);
  for (int y = 0; y < height; y++)
    for (int x = 0; x < width; x++)
      img[(size_t)(y + 1) * fw + x + 1] = bin[(size_t)y * width + x] != 0;
  int *lab = g_malloc0((size_t)fw * fh * sizeof(int));
  int ncomp = label_components(img, fw, fh, lab);
  int *outer_of = g_malloc0((size_t)(ncomp + 1) * sizeof(int)); /* component → border index */
  GArray *borders = g_array_new(FALSE, FALSE, sizeof(Border));

  for (int y = 1; y < fh - 1; y++) {
    int8_t *row = img + (size_t)y * fw;
    int prev = 0;
    for (int x = 1; x < fw - 1; x++) {
      int p = row[x];
      if (p == prev)
        continue;
      gboolean hole = FALSE;
      if (!(prev == 0 && p == 1)) {
        if (p != 0 || prev < 1) {
          prev = p;
          continue;
        }
        hole = TRUE;
      }
      Border b = {g_array_new(FALSE, FALSE, sizeof(MexdPoint)), hole,
                  lab[(size_t)y * fw + x - hole]};
      if (!hole)
        outer_of[b.comp] = (int)borders->len;
      follow(img, fw, x - hole, y, hole, b.pts);
      g_array_append_val(borders, b);
      prev = row[x]; /* the scan resumes after the start, which following may have marked */
    }
  }

  /* OpenCV links each border at the head of its parent's child list (outer borders under the
   * image frame, holes under their component's outer border) and lists the tree depth first:
   * outer borders last-found first, each followed by its holes last-found first. */
  int nb = (int)borders->len;
  int *first_hole = g_malloc((size_t)nb * sizeof(int)), *next_hole = g_malloc((size_t)nb * sizeof(int));
  for (int i = 0; i < nb; i++)
    first_hole[i] = next_hole[i] = -1;
  for (int i = 0; i < nb; i++) {
    Border *b = &g_array_index(borders, Border, i);
    if (!b->hole)
      continue;
    int o = outer_of[b->comp];
    next_hole[i] = first_hole[o];
    first_hole[o] = i;
  }
  MexdRing *out = g_new0(MexdRing, MAX(nb, 1));
  int *par = g_new(int, MAX(nb, 1));
  int k = 0;
  for (int i = nb - 1; i >= 0; i--) {
    Border *b = &g_array_index(borders, Border, i);
    if (b->hole)
      continue;
    int me = k;
    out[k].n = (int)b->pts->len;
    out[k].pts = (MexdPoint *)(void *)g_array_free(b->pts, FALSE);
    par[k++] = -1;
    for (int h = first_hole[i]; h >= 0; h = next_hole[h]) {
      Border *hb = &g_array_index(borders, Border, h);
      out[k].n = (int)hb->pts->len;
      out[k].pts = (MexdPoint *)(void *)g_array_free(hb->pts, FALSE);
      par[k++] = me;
    }
  }
  g_free(first_hole);
  g_free(next_hole);
  g_array_free(borders, TRUE);
  g_free(outer_of);
  g_free(lab);
  g_free(img);
  *rings = out;
  *parent = par;
  return k;
}

double mexd_cv_contour_area(const MexdRing *r)
{
  if (r->n < 1)
    return 0;
  double a = 0;
  MexdPoint prev = r->pts[r->n - 1];
  for (int i = 0; i < r->n; i++) {
    MexdPoint p = r->pts[i];
    a += (double)prev.x * p.y - (double)prev.y * p.x;
    prev = p;
  }
  return fabs(a * 0.5);
}

int mexd_cv_point_polygon_test(const MexdRing *r, double x, double y)
{
  if (r->n < 1)
    return -1;
  float fx = (float)x, fy = (float)y;
  int counter = 0;
  if (fx == nearbyintf(fx) && fy == nearbyintf(fy)) { /* OpenCV's integer branch */
    int64_t ix = (int64_t)fx, iy = (int64_t)fy;
    MexdPoint v = r->pts[r->n - 1], v0;
    for (int i = 0; i < r->n; i++) {
      v0 = v;
      v = r->pts[i];
      if ((v0.y <= iy && v.y <= iy) || (v0.y > iy && v.y > iy) || (v0.x < ix && v.x < ix)) {
        if (iy == v.y && (ix == v.x || (iy == v0.y && ((v0.x <= ix && ix <= v.x) ||
                                                        (v.x <= ix && ix <= v0.x)))))
          return 0;
        continue;
      }
      int64_t dist = (iy - v0.y) * (int64_t)(v.x - v0.x) - (ix - v0.x) * (int64_t)(v.y - v0.y);
      if (dist == 0)
        return 0;
      if (v.y < v0.y)
        dist = -dist;
      counter += dist > 0;
    }
    return counter % 2 == 0 ? -1 : 1;
  }
  /* the general branch: vertices as Point2f, differences in float, products in double */
  float vx = (float)r->pts[r->n - 1].x, vy = (float)r->pts[r->n - 1].y, v0x, v0y;
  for (int i = 0; i < r->n; i++) {
    v0x = vx;
    v0y = vy;
    vx = (float)r->pts[i].x;
    vy = (float)r->pts[i].y;
    if ((v0y <= fy && vy <= fy) || (v0y > fy && vy > fy) || (v0x < fx && vx < fx)) {
      if (fy == vy &&
          (fx == vx || (fy == v0y && ((v0x <= fx && fx <= vx) || (vx <= fx && fx <= v0x)))))
        return 0;
      continue;
    }
    double dist = (double)(fy - v0y) * (vx - v0x) - (double)(fx - v0x) * (vy - v0y);
    if (dist == 0)
      return 0;
    if (vy < v0y)
      dist = -dist;
    counter += dist > 0;
  }
  return counter % 2 == 0 ? -1 : 1;
}

void mexd_cv_bounding_rect(const MexdRing *r, int *x, int *y, int *w, int *h)
{
  if (r->n < 1) {
    *x = *y = *w = *h = 0;
    return;
  }
  int x0 = r->pts[0].x, x1 = x0, y0 = r->pts[0].y, y1 = y0;
  for (int i = 1; i < r->n; i++) {
    x0 = MIN(x0, r->pts[i].x);
    x1 = MAX(x1, r->pts[i].x);
    y0 = MIN(y0, r->pts[i].y);
    y1 = MAX(y1, r->pts[i].y);
  }
  *x = x0;
  *y = y0;
  *w = x1 - x0 + 1;
  *h = y1 - y0 + 1;
}

void mexd_rings_free(MexdRing *rings, int n)
{
  if (!rings)
    return;
  for (int i = 0; i < n; i++)
    g_free(rings[i].pts);
  g_free(rings);
}

/* ---- the segmentation ---- */

void mexd_tissue_free(MexdTissue *t)
{
  if (!t)
    return;
  for (int i = 0; i < t->n; i++) {
    g_free(t->contours[i].pts);
    mexd_rings_free(t->holes[i], t->n_holes[i]);
  }
  g_free(t->contours);
  g_free(t->holes);
  g_free(t->n_holes);
  g_free(t);
}

static MexdRing scale_ring(const MexdRing *r, double sx, double sy)
{
  MexdRing o = {g_new(MexdPoint, MAX(r->n, 1)), r->n};
  for (int i = 0; i < r->n; i++) { /* numpy's float64 → int32 cast truncates */
    o.pts[i].x = (int32_t)(r->pts[i].x * sx);
    o.pts[i].y = (int32_t)(r->pts[i].y * sy);
  }
  return o;
}

typedef struct {
  int idx;
  double area;
} HoleArea;

static int hole_cmp(const void *a, const void *b)
{
  const HoleArea *x = a, *y = b;
  if (x->area != y->area)
    return x->area > y->area ? -1 : 1; /* largest first */
  return x->idx - y->idx;              /* a stable sort, as Python's sorted() */
}

MexdTissue *mexd_tissue_segment(const uint8_t *pixels, int width, int height, size_t stride,
                                int channels, double ds_x, double ds_y,
                                const MexdTissueParams *params, GError **error)
{
  if (!mexd_tissue_params_check(params, error))
    return NULL;
  if (!pixels || width < 1 || height < 1 || (channels != 3 && channels != 4) ||
      stride < (size_t)width * channels || !(ds_x > 0) || !(ds_y > 0))
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT,
                          "tissue: bad image (%d x %d, %d channels, stride %zu, downsample %g, %g)",
                          width, height, channels, stride, ds_x, ds_y);
  size_t npx = (size_t)width * height;
  uint8_t *sat = g_try_malloc(npx), *med = g_try_malloc(npx);
  if (!sat || !med) {
    g_free(sat);
    g_free(med);
    return mexd_fail_null(error, MEXD_ERROR_NO_MEMORY,
                          "tissue: no memory for a %d x %d segmentation image", width, height);
  }
  mexd_cv_saturation(pixels, width, height, stride, channels, sat);
  mexd_cv_median(sat, width, height, params->mthresh, med);
  int thr = params->use_otsu ? mexd_cv_otsu(med, npx) : params->sthresh;
  for (size_t i = 0; i < npx; i++)
    med[i] = med[i] > thr ? (uint8_t)params->sthresh_up : 0;
  if (params->close > 0)
    mexd_cv_close(med, width, height, params->close);
  g_free(sat);

  MexdRing *rings;
  int *parent;
  int nr = mexd_cv_find_contours(med, width, height, &rings, &parent);
  g_free(med);
  double *area = g_new(double, MAX(nr, 1));
  for (int i = 0; i < nr; i++)
    area[i] = mexd_cv_contour_area(&rings[i]);

  /* CLAM: reference area int(512² / (ds_x ds_y)); a contour is kept when its area minus its
   * holes' is nonzero and above a_t; its holes, largest first, the first max_n_holes of them,
   * each kept when above a_h */
  double ref_area = (double)(int64_t)((double)params->ref_patch_size * params->ref_patch_size /
                                      (ds_x * ds_y));
  double a_t = params->a_t * ref_area, a_h = params->a_h * ref_area;
  MexdTissue *t = g_new0(MexdTissue, 1);
  t->level = -1;
  t->ds_x = ds_x;
  t->ds_y = ds_y;
  t->width = width;
  t->height = height;
  t->threshold = thr;
  t->contours = g_new0(MexdRing, MAX(nr, 1));
  t->holes = g_new0(MexdRing *, MAX(nr, 1));
  t->n_holes = g_new0(int, MAX(nr, 1));
  HoleArea *ha = g_new(HoleArea, MAX(nr, 1));
  double net_total = 0;
  for (int i = 0; i < nr; i++) {
    if (parent[i] != -1)
      continue;
    int nh = 0;
    double net = area[i];
    for (int j = 0; j < nr; j++)
      if (parent[j] == i) {
        ha[nh++] = (HoleArea){j, area[j]};
        net -= area[j];
      }
    if (net == 0 || !(net > a_t))
      continue;
    qsort(ha, (size_t)nh, sizeof *ha, hole_cmp);
    nh = MIN(nh, params->max_n_holes);
    int k = t->n++;
    t->contours[k] = scale_ring(&rings[i], ds_x, ds_y);
    t->holes[k] = g_new0(MexdRing, MAX(nh, 1));
    double kept = area[i];
    for (int h = 0; h < nh; h++)
      if (ha[h].area > a_h) {
        t->holes[k][t->n_holes[k]++] = scale_ring(&rings[ha[h].idx], ds_x, ds_y);
        kept -= ha[h].area;
      }
    net_total += kept;
  }
  t->tissue_fraction = net_total / ((double)width * height);
  g_free(ha);
  g_free(area);
  g_free(parent);
  mexd_rings_free(rings, nr);
  return t;
}
