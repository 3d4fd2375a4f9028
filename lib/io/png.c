/* png.c: PNG images (png.h). */
#include "io/png.h"

#include "core/error.h"
#include "io/files.h"

#include <png.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

gboolean mexd_png_write(const char *path, const uint8_t *pixels, int width, int height,
                        int channels, GError **error)
{
  g_autofree char *display = g_filename_display_name(path);
  if (width < 1 || height < 1 || (channels != 3 && channels != 4) || !pixels)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "%s: no image to write (%d × %d × %d)",
                     display, width, height, channels);
  MexdAtomicFile *af = mexd_atomic_file_new(path, error);
  if (!af)
    return FALSE;
  int fd = dup(mexd_atomic_file_fd(af));
  FILE *f = fd >= 0 ? fdopen(fd, "wb") : NULL;
  if (!f) {
    if (fd >= 0)
      close(fd);
    mexd_atomic_file_discard(af);
    return mexd_fail(error, MEXD_ERROR_IO, "%s: cannot write it", display);
  }
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
  png_infop info = png ? png_create_info_struct(png) : NULL;
  volatile gboolean ok = FALSE;
  if (png && info && !setjmp(png_jmpbuf(png))) {
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8,
                 channels == 4 ? PNG_COLOR_TYPE_RGBA : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < height; y++)
      png_write_row(png, (png_const_bytep)(pixels + (size_t)y * width * channels));
    png_write_end(png, NULL);
    ok = TRUE;
  }
  png_destroy_write_struct(&png, &info);
  ok = fclose(f) == 0 && ok;
  if (!ok) {
    mexd_atomic_file_discard(af);
    return mexd_fail(error, MEXD_ERROR_IO, "%s: cannot write the PNG (disk full?)", display);
  }
  return mexd_atomic_file_commit(af, error);
}

uint8_t *mexd_png_read_rgb(const char *path, int64_t max_pixels, int64_t *width, int64_t *height,
                           GError **error)
{
  g_autofree char *display = g_filename_display_name(path);
  if (!mexd_file_check_regular(path, "PNG image", error))
    return NULL;
  png_image img;
  memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_file(&img, path))
    return mexd_fail_null(error, MEXD_ERROR_FORMAT, "%s: not a readable PNG file (%s)", display,
                          img.message);
  if ((int64_t)img.width * img.height > max_pixels) {
    png_image_free(&img);
    return mexd_fail_null(error, MEXD_ERROR_FORMAT,
                          "%s: a %u × %u image, larger than the %" G_GINT64_FORMAT
                          " pixels taken here",
                          display, img.width, img.height, max_pixels);
  }
  img.format = PNG_FORMAT_RGB;
  uint8_t *buf = g_try_malloc(PNG_IMAGE_SIZE(img));
  if (!buf) {
    png_image_free(&img);
    return mexd_fail_null(error, MEXD_ERROR_NO_MEMORY, "%s: no memory for a %u × %u image",
                          display, img.width, img.height);
  }
  if (!png_image_finish_read(&img, NULL, buf, 0, NULL)) {
    g_free(buf);
    return mexd_fail_null(error, MEXD_ERROR_FORMAT, "%s: the PNG data is damaged (%s)", display,
                          img.message);
  }
  *width = img.width;
  *height = img.height;
  return buf;
}
