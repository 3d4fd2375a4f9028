/* gstmexdmoe.h: the mexdmoe element (see gstmexdmoe.c). */
#pragma once

#include <gst/base/gstbasetransform.h>

G_BEGIN_DECLS

#define GST_TYPE_MEXD_MOE (gst_mexd_moe_get_type())
G_DECLARE_FINAL_TYPE(GstMexdMoe, gst_mexd_moe, GST, MEXD_MOE, GstBaseTransform)

G_END_DECLS
