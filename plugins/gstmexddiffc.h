/* gstmexddiffc.h: the mexddiffc element (see gstmexddiffc.c). */
#pragma once

#include <gst/base/gstbasetransform.h>

G_BEGIN_DECLS

#define GST_TYPE_MEXD_DIFFC (gst_mexd_diffc_get_type())
G_DECLARE_FINAL_TYPE(GstMexdDiffc, gst_mexd_diffc, GST, MEXD_DIFFC, GstBaseTransform)

G_END_DECLS
