/* gstmexddiffc.h: the mexddiffc element (see gstmexddiffc.c). */
#pragma once

#include "gstmexdfilter.h"

G_BEGIN_DECLS

#define GST_TYPE_MEXD_DIFFC (gst_mexd_diffc_get_type())
G_DECLARE_FINAL_TYPE(GstMexdDiffc, gst_mexd_diffc, GST, MEXD_DIFFC, GstMexdFilter)
GST_ELEMENT_REGISTER_DECLARE(mexddiffc);

/* The `sampler` property. */
typedef enum {
  GST_MEXD_SAMPLER_CARD, /* CARD's ancestral sampler over all T steps */
  GST_MEXD_SAMPLER_DDIM, /* DDIM with `steps` steps */
} GstMexdSampler;
GType gst_mexd_sampler_get_type(void);
#define GST_TYPE_MEXD_SAMPLER (gst_mexd_sampler_get_type())

G_END_DECLS
