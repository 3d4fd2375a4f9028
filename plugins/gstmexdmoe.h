/* gstmexdmoe.h: the mexdmoe element (see gstmexdmoe.c). */
#pragma once

#include "gstmexdfilter.h"

G_BEGIN_DECLS

#define GST_TYPE_MEXD_MOE (gst_mexd_moe_get_type())
G_DECLARE_FINAL_TYPE(GstMexdMoe, gst_mexd_moe, GST, MEXD_MOE, GstMexdFilter)
GST_ELEMENT_REGISTER_DECLARE(mexdmoe);

/* The `mode` property: the Dyn-MoE's routing. */
typedef enum {
  GST_MEXD_MOE_MODE_AUTO,     /* the model file's */
  GST_MEXD_MOE_MODE_PAPER,    /* MEXD.md */
  GST_MEXD_MOE_MODE_OFFICIAL, /* the authors' stage-1 code */
} GstMexdMoeMode;
GType gst_mexd_moe_mode_get_type(void);
#define GST_TYPE_MEXD_MOE_MODE (gst_mexd_moe_mode_get_type())

G_END_DECLS
