/* gstmexdutil.c: memory that grows without aborting, libmexd errors as element errors
 * (gstmexdutil.h). */
#include "gstmexdutil.h"
#include "gstmexdmeta.h"

#include "core/error.h"

#include <string.h>

void gst_mexd_array_init(GstMexdArray *a, gsize esize)
{
  a->data = NULL;
  a->len = a->cap = 0;
  a->esize = esize;
}

static gboolean no_memory(gsize elements, gsize esize, const char *what, GError **error)
{
  g_autofree char *size = NULL;
  if (esize && elements <= G_MAXSIZE / esize) {
    const double b = (double)elements * (double)esize;
    size = b >= 0x1p30   ? g_strdup_printf("%.1f GiB (%.0f bytes)", b / 0x1p30, b)
           : b >= 0x1p20 ? g_strdup_printf("%.1f MiB (%.0f bytes)", b / 0x1p20, b)
                         : g_strdup_printf("%.0f bytes", b);
  } else {
    size = g_strdup("more bytes than the address space holds");
  }
  g_set_error(error, MEXD_ERROR, MEXD_ERROR_NO_MEMORY,
              "out of memory: %s could not be allocated for %s", size, what ? what : "the data");
  return FALSE;
}

gboolean gst_mexd_array_append(GstMexdArray *a, const void *v, gsize n, const char *what,
                               GError **error)
{
  if (n > G_MAXSIZE - a->len)
    return no_memory(G_MAXSIZE, 1, what, error);
  const gsize need = a->len + n;
  if (need > a->cap) {
    if (need > G_MAXSIZE / a->esize)
      return no_memory(need, a->esize, what, error);
    const gsize most = G_MAXSIZE / a->esize;
    /* doubling; when that does not fit, an eighth more (still geometric, so appending stays
     * linear overall) */
    gsize cap = a->cap < most / 2 ? MAX(a->cap * 2, (gsize)64) : most;
    guint8 *d = g_try_realloc(a->data, MAX(cap, need) * a->esize);
    if (!d) {
      cap = a->cap < most - a->cap / 8 ? a->cap + a->cap / 8 : most;
      d = g_try_realloc(a->data, MAX(cap, need) * a->esize);
    }
    if (!d)
      return no_memory(need, a->esize, what, error);
    a->data = d;
    a->cap = MAX(cap, need);
  }
  if (v)
    memcpy(a->data + a->len * a->esize, v, n * a->esize);
  else
    memset(a->data + a->len * a->esize, 0, n * a->esize);
  a->len = need;
  return TRUE;
}

void gst_mexd_array_reset(GstMexdArray *a)
{
  a->len = 0;
  if (a->cap * a->esize > ((gsize)16 << 20))
    gst_mexd_array_clear(a);
}

void gst_mexd_array_clear(GstMexdArray *a)
{
  g_clear_pointer(&a->data, g_free);
  a->len = a->cap = 0;
}

gpointer gst_mexd_try_alloc(gsize n, const char *what, GError **error)
{
  gpointer p = g_try_malloc(MAX(n, (gsize)1));
  if (!p)
    no_memory(n, 1, what, error);
  return p;
}

gchar *gst_mexd_slide_label(const char *id, const char *path)
{
  const char *name = id && *id ? id : "(unnamed)";
  if (path && *path)
    return g_strdup_printf("Slide %s (%s)", name, path);
  return g_strdup_printf("Slide %s", name);
}

void gst_mexd_post_error(GstElement *element, GstMexdFault fault, const GError *error,
                         const char *file, const char *function, int line, const char *prefix)
{
  const gboolean slide = fault == GST_MEXD_FAULT_SLIDE;
  GQuark domain = slide ? GST_STREAM_ERROR : GST_RESOURCE_ERROR;
  gint code = slide ? GST_STREAM_ERROR_FAILED : GST_RESOURCE_ERROR_FAILED;
  if (error && error->domain == MEXD_ERROR) {
    switch (error->code) {
    case MEXD_ERROR_DEVICE:
    case MEXD_ERROR_BACKEND: /* the device fails every slide alike */
      domain = GST_RESOURCE_ERROR;
      code = GST_RESOURCE_ERROR_FAILED;
      break;
    case MEXD_ERROR_NOT_FOUND:
      domain = GST_RESOURCE_ERROR;
      code = GST_RESOURCE_ERROR_NOT_FOUND;
      break;
    case MEXD_ERROR_IO:
      domain = GST_RESOURCE_ERROR;
      code = GST_RESOURCE_ERROR_OPEN_READ;
      break;
    case MEXD_ERROR_NO_MEMORY:
      if (!slide)
        code = GST_RESOURCE_ERROR_NO_SPACE_LEFT;
      break;
    case MEXD_ERROR_FORMAT:
      code = slide ? GST_STREAM_ERROR_DECODE : GST_RESOURCE_ERROR_OPEN_READ;
      break;
    case MEXD_ERROR_SHAPE:
    case MEXD_ERROR_DTYPE:
      code = slide ? GST_STREAM_ERROR_FORMAT : GST_RESOURCE_ERROR_OPEN_READ;
      break;
    case MEXD_ERROR_UNSUPPORTED:
      code = slide ? GST_STREAM_ERROR_WRONG_TYPE : GST_RESOURCE_ERROR_SETTINGS;
      break;
    case MEXD_ERROR_INVALID_ARGUMENT:
    case MEXD_ERROR_INDEX:
      code = slide ? GST_STREAM_ERROR_FAILED : GST_RESOURCE_ERROR_SETTINGS;
      break;
    default: break;
    }
  }
  const char *msg = error ? error->message : "unknown error";
  gchar *text = prefix ? g_strdup_printf("%s: %s", prefix, msg) : g_strdup(msg);
  gst_element_message_full(element, GST_MESSAGE_ERROR, domain, code, text, NULL, file, function,
                           line);
}

gboolean gst_mexd_check_downstream(GstElement *element, GstPad *srcpad, GstCaps *ours,
                                   const char *what)
{
  GstCaps *peer = gst_pad_peer_query_caps(srcpad, NULL);
  const gboolean fits = !peer || gst_caps_can_intersect(ours, peer);
  if (!fits) {
    g_autofree char *want = gst_caps_to_string(peer);
    GST_ELEMENT_ERROR(element, CORE, NEGOTIATION, ("%s; the next element takes %s.", what, want),
                      (NULL));
  }
  if (peer)
    gst_caps_unref(peer);
  gst_caps_unref(ours);
  return fits;
}

/* ---- numeric properties checked by the element ---- */

static gboolean keep_value(GParamSpec *pspec, GValue *value)
{
  (void)pspec;
  (void)value;
  return FALSE; /* unchanged: the element checks it (gst_mexd_check_ranges) */
}

static gboolean any_value(GParamSpec *pspec, const GValue *value)
{
  (void)pspec;
  (void)value;
  return TRUE;
}

static void checked_class_init(gpointer klass, gpointer data)
{
  (void)data;
  GParamSpecClass *pc = klass;
  pc->value_validate = keep_value;
  pc->value_is_valid = any_value;
}

static GType checked_type(GType parent, const char *name)
{
  const GTypeInfo info = {
      sizeof(GParamSpecClass), NULL, NULL, checked_class_init, NULL, NULL, 0, 0, NULL, NULL};
  GTypeQuery q;
  g_type_query(parent, &q);
  GTypeInfo i = info;
  i.class_size = (guint16)q.class_size;
  i.instance_size = (guint16)q.instance_size;
  return g_type_register_static(parent, name, &i, 0);
}

static GType param_int_type(void)
{
  static GType type = 0;
  if (g_once_init_enter(&type))
    g_once_init_leave(&type, checked_type(G_TYPE_PARAM_INT, "GstMexdParamInt"));
  return type;
}

static GType param_double_type(void)
{
  static GType type = 0;
  if (g_once_init_enter(&type))
    g_once_init_leave(&type, checked_type(G_TYPE_PARAM_DOUBLE, "GstMexdParamDouble"));
  return type;
}

GParamSpec *gst_mexd_param_spec_int(const gchar *name, const gchar *nick, const gchar *blurb,
                                    gint minimum, gint maximum, gint default_value,
                                    GParamFlags flags)
{
  GParamSpecInt *p = g_param_spec_internal(param_int_type(), name, nick, blurb, flags);
  p->minimum = minimum;
  p->maximum = maximum;
  p->default_value = default_value;
  return G_PARAM_SPEC(p);
}

GParamSpec *gst_mexd_param_spec_double(const gchar *name, const gchar *nick, const gchar *blurb,
                                       gdouble minimum, gdouble maximum, gdouble default_value,
                                       GParamFlags flags)
{
  GParamSpecDouble *p = g_param_spec_internal(param_double_type(), name, nick, blurb, flags);
  p->minimum = minimum;
  p->maximum = maximum;
  p->default_value = default_value;
  return G_PARAM_SPEC(p);
}

gboolean gst_mexd_check_ranges(GstElement *element)
{
  guint n = 0;
  g_autofree GParamSpec **props = g_object_class_list_properties(G_OBJECT_GET_CLASS(element), &n);
  for (guint i = 0; i < n; i++) {
    GParamSpec *p = props[i];
    GValue v = G_VALUE_INIT;
    if (G_TYPE_CHECK_INSTANCE_TYPE(p, param_int_type())) {
      const GParamSpecInt *pi = G_PARAM_SPEC_INT(p);
      g_value_init(&v, G_TYPE_INT);
      g_object_get_property(G_OBJECT(element), p->name, &v);
      const gint x = g_value_get_int(&v);
      if (x < pi->minimum || x > pi->maximum) {
        GST_ELEMENT_ERROR(element, RESOURCE, SETTINGS,
                          ("%s=%d is outside %d..%d.", p->name, x, pi->minimum, pi->maximum),
                          (NULL));
        return FALSE;
      }
    } else if (G_TYPE_CHECK_INSTANCE_TYPE(p, param_double_type())) {
      const GParamSpecDouble *pd = G_PARAM_SPEC_DOUBLE(p);
      g_value_init(&v, G_TYPE_DOUBLE);
      g_object_get_property(G_OBJECT(element), p->name, &v);
      const gdouble x = g_value_get_double(&v);
      if (!(x >= pd->minimum && x <= pd->maximum)) {
        GST_ELEMENT_ERROR(element, RESOURCE, SETTINGS,
                          ("%s=%g is outside %g..%g.", p->name, x, pd->minimum, pd->maximum),
                          (NULL));
        return FALSE;
      }
    }
  }
  return TRUE;
}

gboolean gst_mexd_drop_slide_event_after_error(gboolean failed, GstEvent *ev)
{
  if (!failed ||
      !(gst_mexd_event_is_slide_start(ev, NULL) || gst_mexd_event_is_slide_end(ev, NULL)))
    return FALSE;
  gst_event_unref(ev);
  return TRUE;
}

gboolean gst_mexd_refuse_event(gboolean *failed, GstEvent *ev)
{
  *failed = TRUE;
  gst_event_unref(ev);
  return FALSE;
}

void gst_mexd_replace_string(gchar **field, const GValue *value)
{
  g_free(*field);
  *field = g_value_dup_string(value);
}

void gst_mexd_post_orphan_slide_end(GstElement *element, const char *id, const char *file,
                                    const char *function, int line)
{
  gchar *text = g_strdup_printf("A mexd/slide-end (slide %s) without a mexd/slide-start before "
                                "it: the source must send mexd/slide-start before a slide's "
                                "tiles.",
                                id ? id : "(unnamed)");
  gst_element_message_full(element, GST_MESSAGE_ERROR, GST_CORE_ERROR, GST_CORE_ERROR_EVENT, text,
                           NULL, file, function, line);
}
