/* gstmexdcontext.h: one compute device shared by the mexd elements of a pipeline.
 *
 * mexdembed, mexdmoe and mexddiffc each need a MexdBackend.  Opening one per element would create
 * a Vulkan device (with its pipelines, memory and queue) per element; instead they share one
 * through a GstContext of type "mexd.backend" (GST_MEXD_BACKEND_CONTEXT), whose structure
 * "mexd-backend" holds the field "backend" (boxed GST_TYPE_MEXD_BACKEND, a reference to the
 * MexdBackend) and "device" (its name, for logs).  When an element starts it looks, in order:
 *   1. at the context already set on it (gst_element_set_context, by the application or by the
 *      bin that holds the pipeline's context);
 *   2. at its neighbours: a GST_QUERY_CONTEXT to the peers of its pads, downstream then
 *      upstream (mexd elements answer it with the device they have);
 *   3. at the application and the bins: a NEED_CONTEXT message (a bin that holds a
 *      "mexd.backend" context sets it on the element at once; an application may answer from
 *      a synchronous bus handler with gst_element_set_context);
 *   4. else it opens the device itself, sets the context on itself and posts HAVE_CONTEXT, so
 *      that the bin keeps it for the others.
 * A shared device is used only when it is what the element's `device` property asks for
 * (mexd_backend_satisfies: unset takes any); otherwise the element opens its own and keeps it to
 * itself.  An application chooses the device of a whole pipeline by setting a context made with
 * gst_mexd_backend_context_new() on the pipeline before it starts.
 *
 * A MexdBackend may be used from several streaming threads (the vulkan backend records under
 * its own lock, with a full barrier between commands); an error the device reports (a bad
 * index, a lost device) reaches whichever element waits next on it. */
#pragma once

#include "mexd.h"

#include <gst/gst.h>

G_BEGIN_DECLS

#define GST_MEXD_BACKEND_CONTEXT "mexd.backend"

/* MexdBackend as a boxed type (copy = mexd_backend_ref, free = mexd_backend_unref). */
GType gst_mexd_backend_get_type(void);
#define GST_TYPE_MEXD_BACKEND (gst_mexd_backend_get_type())

/* A new persistent "mexd.backend" context holding a reference to `be`. */
GstContext *gst_mexd_backend_context_new(MexdBackend *be);
/* The backend of a "mexd.backend" context (a new reference), or NULL for any other context. */
MexdBackend *gst_mexd_backend_context_get(GstContext *context);

/* For an element's set_context vfunc: when `context` is a "mexd.backend" context, *shared takes
 * its backend (under the object lock; the previous one is dropped).  Chain up afterwards. */
void gst_mexd_device_set_context(GstElement *element, GstContext *context, MexdBackend **shared);
/* For an element's query handler: answers a GST_QUERY_CONTEXT for "mexd.backend" from *shared;
 * FALSE when it is another query or there is no device yet (let the default handler have it). */
gboolean gst_mexd_device_handle_query(GstElement *element, GstQuery *query, MexdBackend **shared);
/* The backend an element should use (a new reference), found or opened as above; `device` is its
 * device property (NULL or "": any).  NULL with the error from mexd_backend_new. */
MexdBackend *gst_mexd_device_acquire(GstElement *element, const char *device,
                                     MexdBackend **shared, GError **error);

G_END_DECLS
