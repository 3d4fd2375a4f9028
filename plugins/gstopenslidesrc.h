/* gstopenslidesrc.h: the openslidesrc element (see gstopenslidesrc.c). */
#pragma once

#include <gst/base/gstpushsrc.h>

G_BEGIN_DECLS

#define GST_TYPE_OPENSLIDE_SRC (gst_openslide_src_get_type())
G_DECLARE_FINAL_TYPE(GstOpenslideSrc, gst_openslide_src, GST, OPENSLIDE_SRC, GstPushSrc)

G_END_DECLS
