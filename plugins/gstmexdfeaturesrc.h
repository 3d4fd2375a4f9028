/* gstmexdfeaturesrc.h: the mexdfeaturesrc element (see gstmexdfeaturesrc.c). */
#pragma once

#include <gst/base/gstpushsrc.h>

G_BEGIN_DECLS

#define GST_TYPE_MEXD_FEATURE_SRC (gst_mexd_feature_src_get_type())
G_DECLARE_FINAL_TYPE(GstMexdFeatureSrc, gst_mexd_feature_src, GST, MEXD_FEATURE_SRC, GstPushSrc)
GST_ELEMENT_REGISTER_DECLARE(mexdfeaturesrc);

G_END_DECLS
