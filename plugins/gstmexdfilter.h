/* gstmexdfilter.h: GstMexdFilter, the base class of the elements that compute on a device
 * (mexdembed, mexdmoe, mexddiffc): the `model` and `device` properties, the device shared through
 * GstContext (gstmexdcontext.h: set_context and the context query answered), and start/stop
 * around the subclass's open/close with one way of turning a GError into an element error. */
#pragma once

#include "mexd.h"

#include <gst/base/gstbasetransform.h>

G_BEGIN_DECLS

#define GST_TYPE_MEXD_FILTER (gst_mexd_filter_get_type())
G_DECLARE_DERIVABLE_TYPE(GstMexdFilter, gst_mexd_filter, GST, MEXD_FILTER, GstBaseTransform)

struct _GstMexdFilterClass {
  GstBaseTransformClass parent_class;
  /* in messages: "No <model_name> given: set the model property (<model_hint>)." and "Cannot
   * load the <model_name>: …" */
  const char *model_name, *model_hint;
  /* start(), before the device: the settings that need no model (FALSE: it posted an error) */
  gboolean (*check)(GstMexdFilter *f);
  /* start(), the device acquired: load `model` on `be`.  FALSE: either *error is set (posted as
   * "Cannot load the <model_name>: <message>") or it posted an element error of its own */
  gboolean (*open)(GstMexdFilter *f, MexdBackend *be, const char *model, GError **error);
  /* stop(), and after a failed open: drop what open made (the device is released after) */
  void (*close)(GstMexdFilter *f);
};

/* The element's device between start and stop (no new reference), else NULL. */
MexdBackend *gst_mexd_filter_device(GstMexdFilter *f);
/* The model property's value (valid while the element is not in NULL: the property can change
 * only in NULL and READY, and start reads it). */
const char *gst_mexd_filter_model(GstMexdFilter *f);


G_END_DECLS
