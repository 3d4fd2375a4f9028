/* gstmexdheatmap.h: the mexdheatmap element (see gstmexdheatmap.c). */
#pragma once

#include <gst/gst.h>

G_BEGIN_DECLS

#define GST_TYPE_MEXD_HEATMAP (gst_mexd_heatmap_get_type())
G_DECLARE_FINAL_TYPE(GstMexdHeatmap, gst_mexd_heatmap, GST, MEXD_HEATMAP, GstElement)

G_END_DECLS
