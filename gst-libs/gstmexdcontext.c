/* gstmexdcontext.c: one compute device shared by the mexd elements of a pipeline (see the
 * header for the protocol); part of libmexd-gst. */
#include "gstmexdcontext.h"

GST_DEBUG_CATEGORY_STATIC(gst_mexd_context_debug);
#define GST_CAT_DEFAULT gst_mexd_context_debug

GType gst_mexd_backend_get_type(void)
{
  static GType type = 0;
  if (g_once_init_enter(&type)) {
    GType t = g_boxed_type_register_static("MexdBackend", (GBoxedCopyFunc)mexd_backend_ref,
                                           (GBoxedFreeFunc)mexd_backend_unref);
    g_once_init_leave(&type, t);
  }
  return type;
}

static void debug_init(void)
{
  static gsize once = 0;
  if (g_once_init_enter(&once)) {
    GST_DEBUG_CATEGORY_INIT(gst_mexd_context_debug, "mexdcontext", 0,
                            "the compute device shared by the mexd elements");
    g_once_init_leave(&once, 1);
  }
}

GstContext *gst_mexd_backend_context_new(MexdBackend *be)
{
  g_return_val_if_fail(be != NULL, NULL);
  GstContext *c = gst_context_new(GST_MEXD_BACKEND_CONTEXT, TRUE);
  GstStructure *s = gst_context_writable_structure(c);
  gst_structure_set(s, "backend", GST_TYPE_MEXD_BACKEND, be, "device", G_TYPE_STRING,
                    mexd_backend_name(be), NULL);
  return c;
}

MexdBackend *gst_mexd_backend_context_get(GstContext *context)
{
  if (!context || g_strcmp0(gst_context_get_context_type(context), GST_MEXD_BACKEND_CONTEXT))
    return NULL;
  MexdBackend *be = NULL;
  if (!gst_structure_get(gst_context_get_structure(context), "backend", GST_TYPE_MEXD_BACKEND,
                         &be, NULL))
    return NULL;
  return be; /* gst_structure_get copies the boxed value: a new reference */
}

void gst_mexd_device_set_context(GstElement *element, GstContext *context, MexdBackend **shared)
{
  MexdBackend *be = gst_mexd_backend_context_get(context);
  if (!be)
    return;
  debug_init();
  GST_OBJECT_LOCK(element);
  MexdBackend *old = *shared;
  *shared = be;
  GST_OBJECT_UNLOCK(element);
  GST_DEBUG_OBJECT(element, "shared device: %s", mexd_backend_name(be));
  if (old)
    mexd_backend_unref(old);
}

gboolean gst_mexd_device_handle_query(GstElement *element, GstQuery *query, MexdBackend **shared)
{
  const gchar *type = NULL;
  if (GST_QUERY_TYPE(query) != GST_QUERY_CONTEXT || !gst_query_parse_context_type(query, &type) ||
      g_strcmp0(type, GST_MEXD_BACKEND_CONTEXT))
    return FALSE;
  GST_OBJECT_LOCK(element);
  MexdBackend *be = *shared ? mexd_backend_ref(*shared) : NULL;
  GST_OBJECT_UNLOCK(element);
  if (!be)
    return FALSE;
  GstContext *c = gst_mexd_backend_context_new(be);
  gst_query_set_context(query, c);
  gst_context_unref(c);
  mexd_backend_unref(be);
  return TRUE;
}

/* *shared (a new reference) when it satisfies `device`; *found tells whether there was one. */
static MexdBackend *take_shared(GstElement *element, const char *device, MexdBackend **shared,
                                gboolean *found)
{
  GST_OBJECT_LOCK(element);
  MexdBackend *be = NULL;
  if (*shared) {
    *found = TRUE;
    if (mexd_backend_satisfies(*shared, device))
      be = mexd_backend_ref(*shared);
  }
  GST_OBJECT_UNLOCK(element);
  return be;
}

/* Sends the context query to the peers of the element's pads of one direction; the first answer
 * is set on the element. */
static void query_peers(GstElement *element, gboolean src_pads)
{
  GstIterator *it = src_pads ? gst_element_iterate_src_pads(element)
                             : gst_element_iterate_sink_pads(element);
  GValue item = G_VALUE_INIT;
  gboolean done = FALSE;
  while (!done) {
    switch (gst_iterator_next(it, &item)) {
    case GST_ITERATOR_OK: {
      GstPad *pad = g_value_get_object(&item);
      GstQuery *q = gst_query_new_context(GST_MEXD_BACKEND_CONTEXT);
      if (gst_pad_peer_query(pad, q)) {
        GstContext *c = NULL;
        gst_query_parse_context(q, &c);
        if (c) {
          gst_element_set_context(element, c);
          done = TRUE;
        }
      }
      gst_query_unref(q);
      g_value_reset(&item);
      break;
    }
    case GST_ITERATOR_RESYNC: gst_iterator_resync(it); break;
    default: done = TRUE; break;
    }
  }
  g_value_unset(&item);
  gst_iterator_free(it);
}

MexdBackend *gst_mexd_device_acquire(GstElement *element, const char *device,
                                     MexdBackend **shared, GError **error)
{
  debug_init();
  gboolean found = FALSE;
  MexdBackend *be = take_shared(element, device, shared, &found);
  if (!be && !found) {
    query_peers(element, TRUE);
    be = take_shared(element, device, shared, &found);
  }
  if (!be && !found) {
    query_peers(element, FALSE);
    be = take_shared(element, device, shared, &found);
  }
  if (!be && !found) {
    gst_element_post_message(element, gst_message_new_need_context(GST_OBJECT(element),
                                                                    GST_MEXD_BACKEND_CONTEXT));
    be = take_shared(element, device, shared, &found);
  }
  if (be) {
    GST_INFO_OBJECT(element, "using the pipeline's device %s", mexd_backend_name(be));
    return be;
  }
  be = mexd_backend_new(device && *device ? device : NULL, error);
  if (!be)
    return NULL;
  if (found) {
    /* the pipeline shares another device than this element's `device` asks for */
    GST_INFO_OBJECT(element, "device=%s: not the pipeline's device; opened %s for this element",
                    device, mexd_backend_name(be));
    return be;
  }
  GST_INFO_OBJECT(element, "opened %s, shared with the pipeline", mexd_backend_name(be));
  GstContext *c = gst_mexd_backend_context_new(be);
  gst_element_set_context(element, c);
  gst_element_post_message(element, gst_message_new_have_context(GST_OBJECT(element), c));
  return be;
}
