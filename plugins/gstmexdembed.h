/* gstmexdembed.h: the mexdembed element (see gstmexdembed.c). */
#pragma once

#include <gst/base/gstbasetransform.h>

G_BEGIN_DECLS

#define GST_TYPE_MEXD_EMBED (gst_mexd_embed_get_type())
G_DECLARE_FINAL_TYPE(GstMexdEmbed, gst_mexd_embed, GST, MEXD_EMBED, GstBaseTransform)

G_END_DECLS
