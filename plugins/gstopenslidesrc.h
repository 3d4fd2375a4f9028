/* gstopenslidesrc.h: the openslidesrc element (see gstopenslidesrc.c). */
#pragma once

#include <gst/base/gstpushsrc.h>

G_BEGIN_DECLS

#define GST_TYPE_OPENSLIDE_SRC (gst_openslide_src_get_type())
G_DECLARE_FINAL_TYPE(GstOpenslideSrc, gst_openslide_src, GST, OPENSLIDE_SRC, GstPushSrc)
GST_ELEMENT_REGISTER_DECLARE(openslidesrc);

/* The `contour-fn` property: which tiles count as tissue (CLAM's contour_fn; the values of
 * MexdContourFn in lib/wsi/slide.h). */
typedef enum {
  GST_MEXD_CONTOUR_FN_FOUR_PT,      /* any of four points around the centre inside the tissue */
  GST_MEXD_CONTOUR_FN_FOUR_PT_HARD, /* all four */
  GST_MEXD_CONTOUR_FN_CENTER,       /* the centre */
} GstMexdContourFn;
GType gst_mexd_contour_fn_get_type(void);
#define GST_TYPE_MEXD_CONTOUR_FN (gst_mexd_contour_fn_get_type())

G_END_DECLS
