/* geojson.c: tissue and tiles as GeoJSON (geojson.h). */
#include "pipeline/geojson.h"

#include "io/files.h"

struct _MexdGeoJson {
  GString *s;
  gboolean any, closed;
};

MexdGeoJson *mexd_geojson_new(void)
{
  MexdGeoJson *g = g_new0(MexdGeoJson, 1);
  g->s = g_string_new("{\"type\": \"FeatureCollection\", \"features\": [");
  return g;
}

void mexd_geojson_free(MexdGeoJson *g)
{
  if (!g)
    return;
  g_string_free(g->s, TRUE);
  g_free(g);
}

static void begin_feature(MexdGeoJson *g)
{
  g_string_append(g->s, g->any ? ",\n" : "\n");
  g->any = TRUE;
}

static void ring_json(GString *s, const MexdRing *r)
{
  g_string_append_c(s, '[');
  for (int i = 0; i <= r->n; i++) { /* closed: the first point again */
    const MexdPoint *p = &r->pts[i % MAX(r->n, 1)];
    g_string_append_printf(s, "%s[%d, %d]", i ? ", " : "", p->x, p->y);
  }
  if (r->n < 3) /* a GeoJSON ring needs four positions: repeat the first */
    for (int i = r->n + 1; i < 4; i++)
      g_string_append_printf(s, ", [%d, %d]", r->pts[0].x, r->pts[0].y);
  g_string_append_c(s, ']');
}

void mexd_geojson_add_tissue(MexdGeoJson *g, const MexdTissue *t)
{
  for (int c = 0; t && c < t->n; c++) {
    if (t->contours[c].n < 1)
      continue;
    begin_feature(g);
    g_string_append_printf(g->s,
                           "{\"type\": \"Feature\", \"properties\": {\"objectType\": "
                           "\"annotation\", \"classification\": {\"name\": \"Tissue\"}, "
                           "\"contour\": %d}, \"geometry\": {\"type\": \"Polygon\", "
                           "\"coordinates\": [",
                           c);
    ring_json(g->s, &t->contours[c]);
    for (int h = 0; h < t->n_holes[c]; h++) {
      g_string_append(g->s, ", ");
      ring_json(g->s, &t->holes[c][h]);
    }
    g_string_append(g->s, "]}}");
  }
}

static void number(GString *s, double v)
{
  char b[G_ASCII_DTOSTR_BUF_SIZE];
  g_string_append(s, g_ascii_formatd(b, sizeof b, "%.6g", v));
}

void mexd_geojson_add_tile(MexdGeoJson *g, int64_t index, int64_t x, int64_t y, int64_t w,
                           int64_t h, const MexdTileScore *score)
{
  begin_feature(g);
  g_string_append_printf(g->s, "{\"type\": \"Feature\", \"properties\": {\"objectType\": "
                               "\"tile\", \"index\": %" G_GINT64_FORMAT,
                         index);
  if (score) {
    g_string_append(g->s, ", \"score\": ");
    number(g->s, score->score);
    g_string_append(g->s, ", \"gate\": ");
    number(g->s, score->gate);
    g_string_append(g->s, ", \"experts\": [");
    gboolean first = TRUE;
    for (int k = 0; k < 32; k++)
      if (score->experts & (1u << k)) {
        g_string_append_printf(g->s, "%s%d", first ? "" : ", ", k);
        first = FALSE;
      }
    g_string_append(g->s, "], \"measurements\": {\"attention\": ");
    number(g->s, score->score);
    g_string_append(g->s, ", \"gate\": ");
    number(g->s, score->gate);
    g_string_append(g->s, "}");
  }
  g_string_append_printf(g->s,
                         "}, \"geometry\": {\"type\": \"Polygon\", \"coordinates\": [[[%" G_GINT64_FORMAT
                         ", %" G_GINT64_FORMAT "], [%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT
                         "], [%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT "], [%" G_GINT64_FORMAT
                         ", %" G_GINT64_FORMAT "], [%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT
                         "]]]}}",
                         x, y, x + w, y, x + w, y + h, x, y + h, x, y);
}

const char *mexd_geojson_text(MexdGeoJson *g)
{
  if (!g->closed) {
    g_string_append(g->s, "\n]}\n");
    g->closed = TRUE;
  }
  return g->s->str;
}

gboolean mexd_geojson_write(MexdGeoJson *g, const char *path, GError **error)
{
  const char *t = mexd_geojson_text(g);
  return mexd_file_write_atomic(path, t, (gssize)g->s->len, error);
}

gboolean mexd_geojson_write_scored_tiles(const char *path, const int32_t *xy, const float *score,
                                         const float *gate, const guint32 *experts, int64_t n,
                                         int64_t extent, GError **error)
{
  g_autoptr(MexdGeoJson) g = mexd_geojson_new();
  for (int64_t i = 0; i < n; i++) {
    if (xy[2 * i] < 0)
      continue;
    MexdTileScore sc = {score[i], gate[i], experts[i]};
    mexd_geojson_add_tile(g, i, xy[2 * i], xy[2 * i + 1], extent, extent, &sc);
  }
  return mexd_geojson_write(g, path, error);
}
