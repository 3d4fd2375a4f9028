/* gstmexdfeaturesink.h: the mexdfeaturesink element (see gstmexdfeaturesink.c). */
#pragma once

#include <gst/base/gstbasesink.h>

G_BEGIN_DECLS

#define GST_TYPE_MEXD_FEATURE_SINK (gst_mexd_feature_sink_get_type())
G_DECLARE_FINAL_TYPE(GstMexdFeatureSink, gst_mexd_feature_sink, GST, MEXD_FEATURE_SINK,
                     GstBaseSink)
GST_ELEMENT_REGISTER_DECLARE(mexdfeaturesink);

G_END_DECLS
