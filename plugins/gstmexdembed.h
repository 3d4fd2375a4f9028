/* gstmexdembed.h: the mexdembed element (see gstmexdembed.c). */
#pragma once

#include "gstmexdfilter.h"

G_BEGIN_DECLS

#define GST_TYPE_MEXD_EMBED (gst_mexd_embed_get_type())
G_DECLARE_FINAL_TYPE(GstMexdEmbed, gst_mexd_embed, GST, MEXD_EMBED, GstMexdFilter)
GST_ELEMENT_REGISTER_DECLARE(mexdembed);

/* The `precision` property: the backbone's weights and activations (fp32 accumulation). */
typedef enum {
  GST_MEXD_PRECISION_FP32,
  GST_MEXD_PRECISION_FP16,
  GST_MEXD_PRECISION_BF16,
} GstMexdPrecision;
GType gst_mexd_precision_get_type(void);
#define GST_TYPE_MEXD_PRECISION (gst_mexd_precision_get_type())

G_END_DECLS
