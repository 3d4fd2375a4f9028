/* gstmexdutil.h: what the mexd elements share beyond the meta and the device: memory that grows
 * with a slide without aborting when it cannot be had, and libmexd errors posted as element
 * errors in the domain that says whose failure it is.
 *
 * Error domains (`mexd classify` decides from them, tools/classify.c outcome_of()):
 *   STREAM    the slide's data (a slide or feature file that is corrupt or unreadable as such,
 *             its features or results not finite, more tiles than memory holds): the next
 *             slide may well succeed;
 *   RESOURCE  files named by properties (models, outputs), the compute device, settings and
 *             memory that every slide needs (a batch): the run stops;
 *   CORE      caps and events that do not fit (elements in the wrong order, misuse). */
#pragma once

#include <gst/gst.h>

G_BEGIN_DECLS

/* A growable array of fixed-size elements.  Growth goes through g_try_realloc (doubling), so a
 * slide with more tiles than memory holds gives an error instead of an abort. */
typedef struct {
  guint8 *data;
  gsize len;   /* elements */
  gsize cap;   /* elements allocated */
  gsize esize; /* bytes per element */
} GstMexdArray;

void gst_mexd_array_init(GstMexdArray *a, gsize esize);
/* Appends n elements (copied from v; NULL: zeroed).  FALSE with MEXD_ERROR_NO_MEMORY when the
 * array cannot grow to hold them; the message says how many bytes it needed for `what`. */
gboolean gst_mexd_array_append(GstMexdArray *a, const void *v, gsize n, const char *what,
                               GError **error);
/* Empties it for the next slide; memory over 16 MiB is given back, less is kept for reuse. */
void gst_mexd_array_reset(GstMexdArray *a);
/* Frees its memory (it may be used again after init). */
void gst_mexd_array_clear(GstMexdArray *a);

/* n bytes, or NULL with MEXD_ERROR_NO_MEMORY naming the size and `what` (never aborts). */
gpointer gst_mexd_try_alloc(gsize n, const char *what, GError **error);

/* How messages name a slide: "Slide ID (PATH)", "Slide ID" without a path, "(unnamed)" for a
 * NULL or empty id (g_free). */
gchar *gst_mexd_slide_label(const char *id, const char *path);

/* Whose failure a libmexd error is, when an element posts it. */
typedef enum {
  GST_MEXD_FAULT_SLIDE,    /* the slide's data: STREAM (missing or unreadable files: RESOURCE) */
  GST_MEXD_FAULT_RESOURCE, /* a model file, a setting, an output: RESOURCE */
} GstMexdFault;

/* Posts `error` (libmexd's) as an element error: "<prefix>: <error's message>" (no prefix when
 * it is NULL).  The domain follows `fault` and the error's code: a compute device or backend
 * failure is RESOURCE whatever the fault (the next slide would fail the same way); a missing
 * file RESOURCE NOT_FOUND; a file that cannot be read RESOURCE OPEN_READ / READ; otherwise
 * STREAM (FORMAT, DECODE, WRONG_TYPE or FAILED) for the slide's data, RESOURCE (SETTINGS,
 * OPEN_READ, NO_SPACE_LEFT or FAILED) for the rest. */
void gst_mexd_post_error(GstElement *element, GstMexdFault fault, const GError *error,
                         const char *file, const char *function, int line, const char *prefix);
#define GST_MEXD_POST_ERROR(el, fault, err, prefix)                                                \
  gst_mexd_post_error(GST_ELEMENT(el), (fault), (err), __FILE__, GST_FUNCTION, __LINE__, (prefix))

/* At start (the elements downstream have started): FALSE, with a CORE NEGOTIATION error
 * "<what>; the next element takes <its caps>.", when the caps `ours` (taken) cannot go through
 * `srcpad`'s peer.  An error found here fails the state change, which every application (and
 * gst-launch-1.0) handles; the same error at negotiation, in the streaming thread, can be posted
 * before an application listens (gst-launch-1.0 1.22 then waits forever). */
gboolean gst_mexd_check_downstream(GstElement *element, GstPad *srcpad, GstCaps *ours,
                                   const char *what);

/* Numeric properties whose out-of-range values reach the element instead of GObject's warning.
 * They are GParamSpecInt / GParamSpecDouble (gst-inspect shows their range, and `mexd classify`
 * reads it for its option checks), of a subtype whose validation leaves the value as it is:
 * gst-launch-1.0 openslidesrc tile-size=0 then fails the start with an element error naming the
 * property and its range (gst_mexd_check_ranges), where a plain GParamSpecInt would print a
 * GLib-GObject-WARNING and run silently with the previous value.
 * Decisions: a subtype rather than wide ranges checked by hand, so that the range stays where
 * tools and users read it; elements must call gst_mexd_check_ranges before using the values. */
GParamSpec *gst_mexd_param_spec_int(const gchar *name, const gchar *nick, const gchar *blurb,
                                    gint minimum, gint maximum, gint default_value,
                                    GParamFlags flags);
GParamSpec *gst_mexd_param_spec_double(const gchar *name, const gchar *nick, const gchar *blurb,
                                       gdouble minimum, gdouble maximum, gdouble default_value,
                                       GParamFlags flags);
/* TRUE when every property of the element made by the two functions above holds a value in its
 * range; otherwise posts RESOURCE SETTINGS naming the property, its value and its range. */
gboolean gst_mexd_check_ranges(GstElement *element);

/* The slide events of an element that posted an error: once `failed`, the slides that follow are
 * not looked at — a slide-start or slide-end is dropped (TRUE: `ev` was consumed; the handler
 * returns FALSE).  Other events, and every event before a failure: FALSE, `ev` untouched. */
gboolean gst_mexd_drop_slide_event_after_error(gboolean failed, GstEvent *ev);
/* What an event handler does after it posted an error: marks the element failed, drops `ev` and
 * returns FALSE (the handler's result). */
gboolean gst_mexd_refuse_event(gboolean *failed, GstEvent *ev);

/* A string property's new value: *field freed and replaced by a copy of `value`'s string (call it
 * under the object lock, in set_property). */
void gst_mexd_replace_string(gchar **field, const GValue *value);

/* A mexd/slide-end that no mexd/slide-start opened: a CORE EVENT error naming the slide. */
void gst_mexd_post_orphan_slide_end(GstElement *element, const char *id, const char *file,
                                    const char *function, int line);
#define GST_MEXD_POST_ORPHAN_SLIDE_END(el, id)                                                     \
  gst_mexd_post_orphan_slide_end(GST_ELEMENT(el), (id), __FILE__, GST_FUNCTION, __LINE__)

G_END_DECLS
