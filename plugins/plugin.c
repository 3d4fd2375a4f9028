/* plugin.c: registers the elements of the mexd GStreamer plugin. */
#include "gstmexddiffc.h"
#include "gstmexdembed.h"
#include "gstmexdfeaturesink.h"
#include "gstmexdfeaturesrc.h"
#include "gstmexdheatmap.h"
#include "gstmexdmoe.h"
#include "gstopenslidesrc.h"

#include <gst/gst.h>

static gboolean plugin_init(GstPlugin *plugin)
{
  gboolean ok = TRUE;
  ok &= gst_element_register(plugin, "openslidesrc", GST_RANK_NONE, GST_TYPE_OPENSLIDE_SRC);
  ok &= gst_element_register(plugin, "mexdembed", GST_RANK_NONE, GST_TYPE_MEXD_EMBED);
  ok &= gst_element_register(plugin, "mexdfeaturesink", GST_RANK_NONE,
                             GST_TYPE_MEXD_FEATURE_SINK);
  ok &= gst_element_register(plugin, "mexdfeaturesrc", GST_RANK_NONE, GST_TYPE_MEXD_FEATURE_SRC);
  ok &= gst_element_register(plugin, "mexdmoe", GST_RANK_NONE, GST_TYPE_MEXD_MOE);
  ok &= gst_element_register(plugin, "mexddiffc", GST_RANK_NONE, GST_TYPE_MEXD_DIFFC);
  ok &= gst_element_register(plugin, "mexdheatmap", GST_RANK_NONE, GST_TYPE_MEXD_HEATMAP);
  return ok;
}

#define PACKAGE "mexd"
GST_PLUGIN_DEFINE(GST_VERSION_MAJOR, GST_VERSION_MINOR, mexd,
                  "Whole-slide image classification with MExD on Vulkan (tiles, features, "
                  "Dyn-MoE, diffusion classifier)",
                  plugin_init, "0.1.0", "MIT/X11", "mexd", "https://example.invalid/mexd")
