/* gstmexdheatmap.h: the mexdheatmap element (see gstmexdheatmap.c). */
#pragma once

#include <gst/gst.h>

G_BEGIN_DECLS

#define GST_TYPE_MEXD_HEATMAP (gst_mexd_heatmap_get_type())
G_DECLARE_FINAL_TYPE(GstMexdHeatmap, gst_mexd_heatmap, GST, MEXD_HEATMAP, GstElement)
GST_ELEMENT_REGISTER_DECLARE(mexdheatmap);

typedef enum {
  GST_MEXD_HEATMAP_SCORE_ATTENTION,
  GST_MEXD_HEATMAP_SCORE_GATE,
} GstMexdHeatmapScore;
GType gst_mexd_heatmap_score_get_type(void);
#define GST_TYPE_MEXD_HEATMAP_SCORE (gst_mexd_heatmap_score_get_type())

G_END_DECLS
