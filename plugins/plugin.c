/* plugin.c: registers the elements of the mexd GStreamer plugin. */
#include "gstmexddiffc.h"
#include "gstmexdembed.h"
#include "gstmexdfeaturesink.h"
#include "gstmexdfeaturesrc.h"
#include "gstmexdheatmap.h"
#include "gstmexdmoe.h"
#include "gstopenslidesrc.h"

#include <gst/gst.h>

/* Every element or none: a plugin that loads without one of them would fail later, in a
 * pipeline, with a less helpful message. */
static gboolean plugin_init(GstPlugin *plugin)
{
  gboolean ok = TRUE;
  ok &= GST_ELEMENT_REGISTER(openslidesrc, plugin);
  ok &= GST_ELEMENT_REGISTER(mexdembed, plugin);
  ok &= GST_ELEMENT_REGISTER(mexdfeaturesink, plugin);
  ok &= GST_ELEMENT_REGISTER(mexdfeaturesrc, plugin);
  ok &= GST_ELEMENT_REGISTER(mexdmoe, plugin);
  ok &= GST_ELEMENT_REGISTER(mexddiffc, plugin);
  ok &= GST_ELEMENT_REGISTER(mexdheatmap, plugin);
  return ok;
}

#define PACKAGE "mexd"
/* origin: GStreamer's own wording when a package names none (the project has no public address
 * yet) */
GST_PLUGIN_DEFINE(GST_VERSION_MAJOR, GST_VERSION_MINOR, mexd,
                  "Whole-slide image classification with MExD (tiles, features, Dyn-MoE, "
                  "diffusion classifier) on Vulkan devices or the cpu backend",
                  plugin_init, MEXD_VERSION, "MIT/X11", "mexd", "Unknown package origin")
