/* gstmexdfilter.c: the base class of mexdembed, mexdmoe and mexddiffc (gstmexdfilter.h). */
#include "gstmexdfilter.h"

#include "gstmexdcontext.h"
#include "gstmexdutil.h"

typedef struct {
  gchar *model, *device; /* the properties */
  MexdBackend *shared;   /* the pipeline's device, from a context (gstmexdcontext.h) */
  MexdBackend *be;       /* the device in use, between start and stop */
} GstMexdFilterPrivate;

enum { PROP_0, PROP_MODEL, PROP_DEVICE };

G_DEFINE_ABSTRACT_TYPE_WITH_PRIVATE(GstMexdFilter, gst_mexd_filter, GST_TYPE_BASE_TRANSFORM)

#define PRIV(f) ((GstMexdFilterPrivate *)gst_mexd_filter_get_instance_private(GST_MEXD_FILTER(f)))

MexdBackend *gst_mexd_filter_device(GstMexdFilter *f)
{
  return PRIV(f)->be;
}

const char *gst_mexd_filter_model(GstMexdFilter *f)
{
  return PRIV(f)->model;
}

static gboolean gst_mexd_filter_start(GstBaseTransform *bt)
{
  GstMexdFilter *f = GST_MEXD_FILTER(bt);
  GstMexdFilterClass *k = GST_MEXD_FILTER_GET_CLASS(f);
  GstMexdFilterPrivate *p = PRIV(f);
  if (k->check && !k->check(f))
    return FALSE;
  if (!p->model || !*p->model) {
    GST_ELEMENT_ERROR(f, RESOURCE, NOT_FOUND,
                      ("No %s given: set the model property (%s).", k->model_name, k->model_hint),
                      (NULL));
    return FALSE;
  }
  g_autoptr(GError) error = NULL;
  p->be = gst_mexd_device_acquire(GST_ELEMENT(f), p->device, &p->shared, &error);
  if (p->be && k->open(f, p->be, p->model, &error))
    return TRUE;
  if (error)
    GST_ELEMENT_ERROR(f, RESOURCE, OPEN_READ, ("Cannot load the %s: %s", k->model_name,
                                               error->message),
                      (NULL));
  if (p->be && k->close)
    k->close(f);
  g_clear_pointer(&p->be, mexd_backend_unref);
  return FALSE;
}

static gboolean gst_mexd_filter_stop(GstBaseTransform *bt)
{
  GstMexdFilter *f = GST_MEXD_FILTER(bt);
  GstMexdFilterClass *k = GST_MEXD_FILTER_GET_CLASS(f);
  if (k->close)
    k->close(f);
  g_clear_pointer(&PRIV(f)->be, mexd_backend_unref);
  return TRUE;
}

static void gst_mexd_filter_set_property(GObject *object, guint id, const GValue *value,
                                         GParamSpec *pspec)
{
  GstMexdFilterPrivate *p = PRIV(object);
  GST_OBJECT_LOCK(object);
  gchar **field = id == PROP_MODEL ? &p->model : id == PROP_DEVICE ? &p->device : NULL;
  if (field) {
    gst_mexd_replace_string(field, value);
  } else {
    G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
  }
  GST_OBJECT_UNLOCK(object);
}

static void gst_mexd_filter_get_property(GObject *object, guint id, GValue *value,
                                         GParamSpec *pspec)
{
  GstMexdFilterPrivate *p = PRIV(object);
  GST_OBJECT_LOCK(object);
  if (id == PROP_MODEL)
    g_value_set_string(value, p->model);
  else if (id == PROP_DEVICE)
    g_value_set_string(value, p->device);
  else
    G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
  GST_OBJECT_UNLOCK(object);
}

static void gst_mexd_filter_finalize(GObject *object)
{
  GstMexdFilterPrivate *p = PRIV(object);
  g_free(p->model);
  g_free(p->device);
  g_clear_pointer(&p->shared, mexd_backend_unref);
  G_OBJECT_CLASS(gst_mexd_filter_parent_class)->finalize(object);
}

static void gst_mexd_filter_set_context(GstElement *element, GstContext *context)
{
  gst_mexd_device_set_context(element, context, &PRIV(element)->shared);
  GST_ELEMENT_CLASS(gst_mexd_filter_parent_class)->set_context(element, context);
}

static gboolean gst_mexd_filter_query(GstBaseTransform *bt, GstPadDirection direction,
                                      GstQuery *query)
{
  if (gst_mexd_device_handle_query(GST_ELEMENT(bt), query, &PRIV(bt)->shared))
    return TRUE;
  return GST_BASE_TRANSFORM_CLASS(gst_mexd_filter_parent_class)->query(bt, direction, query);
}

static void gst_mexd_filter_class_init(GstMexdFilterClass *klass)
{
  GObjectClass *oc = G_OBJECT_CLASS(klass);
  GstElementClass *ec = GST_ELEMENT_CLASS(klass);
  GstBaseTransformClass *bc = GST_BASE_TRANSFORM_CLASS(klass);
  oc->set_property = gst_mexd_filter_set_property;
  oc->get_property = gst_mexd_filter_get_property;
  oc->finalize = gst_mexd_filter_finalize;
  const GParamFlags rw = G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_READY;
  g_object_class_install_property(
      oc, PROP_MODEL,
      g_param_spec_string("model", "Model",
                          "The model file: a backbone for mexdembed (tools/convert.py makes it), "
                          "a MExD model for mexdmoe and mexddiffc (the same file for both)",
                          NULL, rw));
  g_object_class_install_property(
      oc, PROP_DEVICE,
      g_param_spec_string("device", "Device",
                          "cpu, vulkan or vulkan:N (default: the device the other mexd elements of "
                          "the pipeline share, else MEXD_DEVICE, else the best GPU Vulkan shows, "
                          "else the cpu backend; lavapipe only when asked for)",
                          NULL, rw));
  ec->set_context = gst_mexd_filter_set_context;
  bc->query = gst_mexd_filter_query;
  bc->start = gst_mexd_filter_start;
  bc->stop = gst_mexd_filter_stop;
  klass->model_name = "model";
  klass->model_hint = "a model file";
  gst_type_mark_as_plugin_api(GST_TYPE_MEXD_FILTER, 0);
}

static void gst_mexd_filter_init(GstMexdFilter *f)
{
  (void)f;
}
