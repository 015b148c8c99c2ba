/* Exercises mf-edge's C API as an app would: open the embedded default model, a file and a
 * buffer; read the card; generate and paint into our own buffers; and check that every bad
 * argument is an error code with a message. Usage:
 *   api_test MODEL.onnx GENERATED.raw PAINTED.raw
 * GENERATED.raw gets 4 images of class 7, seed 42, one step (N x H x W x C bytes), PAINTED.raw
 * the 64x48 RGB test card painted toward class 3 at strength 0.6, seed 7. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mf_edge.h"

static int failures = 0;

#define EXPECT(cond, what)                                                   \
  do {                                                                       \
    if (!(cond)) {                                                           \
      fprintf(stderr, "FAIL %s (line %d): %s\n", what, __LINE__,             \
              mfe_last_error());                                             \
      failures++;                                                            \
    }                                                                        \
  } while (0)

/* An error status, with a message that mentions `needle`. */
#define EXPECT_ERROR(call, status, needle)                                   \
  do {                                                                       \
    MfeStatus s_ = (call);                                                   \
    EXPECT(s_ == (status), #call " returns " #status);                       \
    EXPECT(strstr(mfe_last_error(), (needle)) != NULL,                       \
           #call " names " needle);                                          \
  } while (0)

static int write_file(const char *path, const unsigned char *data, size_t len) {
  FILE *f = fopen(path, "wb");
  if (!f) return 0;
  size_t n = fwrite(data, 1, len, f);
  return fclose(f) == 0 && n == len;
}

static unsigned char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *data = malloc((size_t)size);
  *len = fread(data, 1, (size_t)size, f);
  fclose(f);
  return data;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s MODEL.onnx GENERATED.raw PAINTED.raw\n", argv[0]);
    return 2;
  }
  printf("mf-edge C API %s\n", mfe_version());

  EXPECT(mfe_set_threads(2) == MFE_STATUS_OK, "two engine threads");
  MfeModel *model = NULL;
  EXPECT(mfe_model_open_default(&model) == MFE_STATUS_OK, "open the default model");
  uint32_t c = 0, h = 0, w = 0, classes = 0;
  EXPECT(mfe_model_shape(model, &c, &h, &w) == MFE_STATUS_OK, "shape");
  EXPECT(c == 1 && h == 28 && w == 28, "the default model makes 1x28x28 images");
  EXPECT(mfe_model_classes(model, &classes) == MFE_STATUS_OK && classes == 10, "10 classes");
  char name[16];
  EXPECT(mfe_model_class_name(model, 7, name, sizeof name) == MFE_STATUS_OK &&
             strcmp(name, "7") == 0,
         "class 7 is named 7");

  const uint32_t count = 4;
  size_t len = (size_t)count * c * h * w;
  unsigned char *pixels = calloc(len, 1);
  EXPECT(mfe_generate(model, 7, 42, count, 1, pixels, len) == MFE_STATUS_OK, "generate");
  size_t lit = 0;
  for (size_t i = 0; i < len; i++) lit += pixels[i] > 128;
  EXPECT(lit > len / 40 && lit < len / 2, "a digit has some bright pixels, not all");
  EXPECT(write_file(argv[2], pixels, len), "write the generated pixels");

  /* The same model from a path and from bytes gives the same pixels. */
  unsigned char *again = calloc(len, 1);
  MfeModel *from_path = NULL, *from_bytes = NULL;
  EXPECT(mfe_model_open(argv[1], &from_path) == MFE_STATUS_OK, "open from a path");
  EXPECT(mfe_generate(from_path, 7, 42, count, 1, again, len) == MFE_STATUS_OK &&
             memcmp(again, pixels, len) == 0,
         "a model opened from its path gives the same pixels");
  size_t file_len = 0;
  unsigned char *file = read_file(argv[1], &file_len);
  EXPECT(file != NULL, "read the model file");
  EXPECT(mfe_model_open_bytes(file, file_len, &from_bytes) == MFE_STATUS_OK, "open bytes");
  free(file);
  memset(again, 0, len);
  EXPECT(mfe_generate(from_bytes, 7, 42, count, 1, again, len) == MFE_STATUS_OK &&
             memcmp(again, pixels, len) == 0,
         "a model opened from bytes gives the same pixels");

  /* Paint the test card: a 64x48 RGB gradient with a bright bar. */
  const uint32_t pw = 64, ph = 48;
  unsigned char *card = malloc(pw * ph * 3), *art = calloc(pw * ph * 3, 1);
  for (uint32_t y = 0; y < ph; y++)
    for (uint32_t x = 0; x < pw; x++) {
      unsigned char *p = card + 3 * (y * pw + x);
      p[0] = (unsigned char)(4 * x);
      p[1] = (unsigned char)(5 * y);
      p[2] = (x > 28 && x < 36) ? 255 : 0;
    }
  EXPECT(mfe_paint(model, card, pw, ph, 3, 3, 0.6f, 7, art, pw * ph * 3) == MFE_STATUS_OK,
         "paint");
  EXPECT(write_file(argv[3], art, pw * ph * 3), "write the painted pixels");

  /* Every bad argument is an error code with a message, never a crash. */
  MfeModel *none = NULL;
  EXPECT_ERROR(mfe_model_open(NULL, &none), MFE_STATUS_NULL_POINTER, "path");
  EXPECT_ERROR(mfe_model_open(argv[1], NULL), MFE_STATUS_NULL_POINTER, "out");
  EXPECT_ERROR(mfe_model_open("/no/such/model.onnx", &none), MFE_STATUS_MODEL_ERROR,
               "/no/such/model.onnx");
  const unsigned char junk[] = "not an onnx file";
  EXPECT_ERROR(mfe_model_open_bytes(junk, sizeof junk, &none), MFE_STATUS_MODEL_ERROR,
               "ONNX");
  EXPECT_ERROR(mfe_model_open_bytes(junk, (size_t)1 << 40, &none), MFE_STATUS_MODEL_ERROR,
               "at most 2147483648");
  EXPECT(none == NULL, "a failed open leaves *out alone");
  EXPECT_ERROR(mfe_generate(NULL, 7, 42, 1, 1, pixels, len), MFE_STATUS_NULL_POINTER, "model");
  EXPECT_ERROR(mfe_generate(model, 7, 42, 1, 1, NULL, len), MFE_STATUS_NULL_POINTER, "pixels");
  EXPECT_ERROR(mfe_generate(model, 7, 42, count, 1, pixels, len - 1),
               MFE_STATUS_BUFFER_TOO_SMALL, "3136");
  EXPECT_ERROR(mfe_generate(model, 10, 42, 1, 1, pixels, len), MFE_STATUS_INVALID_ARGUMENT,
               "0..10");
  EXPECT_ERROR(mfe_generate(model, -1, 42, 1, 1, pixels, len), MFE_STATUS_INVALID_ARGUMENT,
               "0..10");
  EXPECT_ERROR(mfe_generate(model, 7, 42, 0, 1, pixels, len), MFE_STATUS_INVALID_ARGUMENT,
               "count 0");
  EXPECT_ERROR(mfe_generate(model, 7, 42, 1, 0, pixels, len), MFE_STATUS_INVALID_ARGUMENT,
               "steps 0");
  EXPECT_ERROR(mfe_generate(model, 7, 42, 4000000000u, 1, pixels, len),
               MFE_STATUS_INVALID_ARGUMENT, "count");
  EXPECT_ERROR(mfe_paint(model, card, pw, ph, 2, 3, 0.6f, 7, art, pw * ph * 3),
               MFE_STATUS_INVALID_ARGUMENT, "2 channels");
  EXPECT_ERROR(mfe_paint(model, card, pw, ph, 3, 3, 0.0f, 7, art, pw * ph * 3),
               MFE_STATUS_INVALID_ARGUMENT, "(0, 1]");
  EXPECT_ERROR(mfe_paint(model, card, pw, ph, 3, 3, 1.5f, 7, art, pw * ph * 3),
               MFE_STATUS_INVALID_ARGUMENT, "(0, 1]");
  EXPECT_ERROR(mfe_paint(model, card, 0, ph, 3, 3, 0.6f, 7, art, pw * ph * 3),
               MFE_STATUS_INVALID_ARGUMENT, "0x48");
  EXPECT_ERROR(mfe_paint(model, card, 16384, 16384, 3, 3, 0.6f, 7, art, pw * ph * 3),
               MFE_STATUS_INVALID_ARGUMENT, "at most");
  EXPECT_ERROR(mfe_paint(model, card, pw, ph, 3, 3, 0.6f, 7, art, 100),
               MFE_STATUS_BUFFER_TOO_SMALL, "9216");
  EXPECT_ERROR(mfe_paint(model, NULL, pw, ph, 3, 3, 0.6f, 7, art, pw * ph * 3),
               MFE_STATUS_NULL_POINTER, "pixels");
  EXPECT_ERROR(mfe_model_class_name(model, 7, name, 1), MFE_STATUS_BUFFER_TOO_SMALL, "2 bytes");
  EXPECT_ERROR(mfe_model_class_name(model, 11, name, sizeof name),
               MFE_STATUS_INVALID_ARGUMENT, "0..10");
  EXPECT_ERROR(mfe_model_shape(model, NULL, &h, &w), MFE_STATUS_NULL_POINTER, "channels");
  EXPECT_ERROR(mfe_set_threads(1), MFE_STATUS_INVALID_ARGUMENT, "already started with 2");
  EXPECT_ERROR(mfe_set_threads(0), MFE_STATUS_INVALID_ARGUMENT, "1 to 1024");
  EXPECT_ERROR(mfe_model_classes(NULL, &classes), MFE_STATUS_NULL_POINTER, "model");

  mfe_model_free(NULL);
  mfe_model_free(from_bytes);
  mfe_model_free(from_path);
  mfe_model_free(model);
  free(pixels);
  free(again);
  free(card);
  free(art);
  if (failures) {
    fprintf(stderr, "%d checks failed\n", failures);
    return 1;
  }
  printf("all C API checks passed\n");
  return 0;
}
