/* pbwire: the smallest protobuf wire-format encoder and decoder a C program needs to talk
 * to libkcnet (kcnet_c.h) without a protobuf library: varint, 64-bit and length-delimited
 * fields, packed repeated varints. Enough for the few fields the end-to-end test sets and
 * reads; not a general protobuf implementation.
 *
 * Thread-safety: a pb_writer / pb_reader belongs to one thread; the functions keep no state.
 */
#ifndef KCNET_TESTS_SDK_C_PBWIRE_H_
#define KCNET_TESTS_SDK_C_PBWIRE_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Wire types. */
enum { PB_VARINT = 0, PB_FIXED64 = 1, PB_LEN = 2, PB_FIXED32 = 5 };

/* A growing output buffer (malloc'd); `ok` turns false when memory runs out. */
typedef struct pb_writer {
  uint8_t* data;
  size_t size;
  size_t capacity;
  bool ok;
} pb_writer;

void pb_writer_init(pb_writer* w);
void pb_writer_free(pb_writer* w);

void pb_put_varint(pb_writer* w, uint32_t field, uint64_t value); /* int64, enum, bool */
void pb_put_double(pb_writer* w, uint32_t field, double value);
void pb_put_bytes(pb_writer* w, uint32_t field, const void* data, size_t size);
void pb_put_string(pb_writer* w, uint32_t field, const char* text);
/* A packed repeated varint field (e.g. repeated enum). */
void pb_put_packed(pb_writer* w, uint32_t field, const uint64_t* values, size_t count);

/* One field read from a message. */
typedef struct pb_field {
  uint32_t number;
  int wire_type;
  uint64_t varint;     /* PB_VARINT; the raw bits for PB_FIXED64 / PB_FIXED32 */
  const uint8_t* data; /* PB_LEN */
  size_t size;         /* PB_LEN */
} pb_field;

typedef struct pb_reader {
  const uint8_t* data;
  size_t size;
  size_t pos;
  bool error; /* malformed input met */
} pb_reader;

void pb_reader_init(pb_reader* r, const uint8_t* data, size_t size);
/* The next field; false at the end (or on malformed input: r->error). */
bool pb_next(pb_reader* r, pb_field* out);

/* Lookups in a whole message (the last occurrence wins for singular fields). */
bool pb_find(const uint8_t* data, size_t size, uint32_t field, pb_field* out);
uint64_t pb_get_varint(const uint8_t* data, size_t size, uint32_t field);
double pb_get_double(const uint8_t* data, size_t size, uint32_t field);
/* Copies a string field into buf (NUL-terminated, cut to buf_size - 1); "" when absent. */
const char* pb_get_string(const uint8_t* data, size_t size, uint32_t field, char* buf,
                          size_t buf_size);
/* The number of occurrences of a non-packed field (e.g. a repeated message). */
size_t pb_count(const uint8_t* data, size_t size, uint32_t field);
/* The n-th (0-based) occurrence of a length-delimited field. */
bool pb_get_nth(const uint8_t* data, size_t size, uint32_t field, size_t n, pb_field* out);
/* The values of a repeated varint field, packed or not; returns how many (at most max). */
size_t pb_get_varints(const uint8_t* data, size_t size, uint32_t field, uint64_t* values,
                      size_t max);

#endif /* KCNET_TESTS_SDK_C_PBWIRE_H_ */
