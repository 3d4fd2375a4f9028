/* png.h: PNG images in and out (libpng). */
#pragma once

#include <glib.h>
#include <stdint.h>

G_BEGIN_DECLS

/* Writes 8-bit RGB (channels 3) or RGBA (4) pixels, rows packed, atomically (files.h). */
gboolean mexd_png_write(const char *path, const uint8_t *pixels, int width, int height,
                        int channels, GError **error);
/* Reads a PNG as 8-bit RGB (any colour type libpng converts; alpha dropped) after checking it is
 * a regular file and its size (at most max_pixels); g_free the pixels. */
uint8_t *mexd_png_read_rgb(const char *path, int64_t max_pixels, int64_t *width, int64_t *height,
                           GError **error);

G_END_DECLS
