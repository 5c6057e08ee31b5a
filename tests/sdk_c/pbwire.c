/* pbwire: a minimal protobuf wire encoder and decoder (see pbwire.h).
 *
 * Thread-safety: no shared state.
 */
#include "pbwire.h"

#include <stdlib.h>
#include <string.h>

void pb_writer_init(pb_writer* w) {
  w->data = NULL;
  w->size = 0;
  w->capacity = 0;
  w->ok = true;
}

void pb_writer_free(pb_writer* w) {
  free(w->data);
  pb_writer_init(w);
}

static void put_raw(pb_writer* w, const void* data, size_t size) {
  if (!w->ok) return;
  if (w->size + size > w->capacity) {
    size_t capacity = w->capacity == 0 ? 64 : w->capacity;
    while (capacity < w->size + size) capacity *= 2;
    uint8_t* grown = realloc(w->data, capacity);
    if (grown == NULL) {
      w->ok = false;
      return;
    }
    w->data = grown;
    w->capacity = capacity;
  }
  if (size > 0) memcpy(w->data + w->size, data, size);
  w->size += size;
}

static size_t encode_varint(uint64_t value, uint8_t out[10]) {
  size_t n = 0;
  do {
    uint8_t byte = (uint8_t)(value & 0x7f);
    value >>= 7;
    if (value != 0) byte |= 0x80;
    out[n++] = byte;
  } while (value != 0);
  return n;
}

static void put_varint_raw(pb_writer* w, uint64_t value) {
  uint8_t bytes[10];
  put_raw(w, bytes, encode_varint(value, bytes));
}

static void put_tag(pb_writer* w, uint32_t field, int wire_type) {
  put_varint_raw(w, ((uint64_t)field << 3) | (uint64_t)wire_type);
}

void pb_put_varint(pb_writer* w, uint32_t field, uint64_t value) {
  put_tag(w, field, PB_VARINT);
  put_varint_raw(w, value);
}

void pb_put_double(pb_writer* w, uint32_t field, double value) {
  uint64_t bits;
  uint8_t bytes[8];
  memcpy(&bits, &value, sizeof bits);
  for (int i = 0; i < 8; ++i) bytes[i] = (uint8_t)(bits >> (8 * i)); /* little-endian */
  put_tag(w, field, PB_FIXED64);
  put_raw(w, bytes, sizeof bytes);
}

void pb_put_bytes(pb_writer* w, uint32_t field, const void* data, size_t size) {
  put_tag(w, field, PB_LEN);
  put_varint_raw(w, size);
  put_raw(w, data, size);
}

void pb_put_string(pb_writer* w, uint32_t field, const char* text) {
  pb_put_bytes(w, field, text, strlen(text));
}

void pb_put_packed(pb_writer* w, uint32_t field, const uint64_t* values, size_t count) {
  size_t size = 0;
  uint8_t bytes[10];
  for (size_t i = 0; i < count; ++i) size += encode_varint(values[i], bytes);
  put_tag(w, field, PB_LEN);
  put_varint_raw(w, size);
  for (size_t i = 0; i < count; ++i) put_varint_raw(w, values[i]);
}

void pb_reader_init(pb_reader* r, const uint8_t* data, size_t size) {
  r->data = data;
  r->size = size;
  r->pos = 0;
  r->error = false;
}

static bool read_varint(pb_reader* r, uint64_t* out) {
  uint64_t value = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (r->pos >= r->size) return false;
    const uint8_t byte = r->data[r->pos++];
    value |= (uint64_t)(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) {
      *out = value;
      return true;
    }
  }
  return false;
}

static bool read_fixed(pb_reader* r, size_t size, uint64_t* out) {
  if (r->size - r->pos < size) return false;
  uint64_t value = 0;
  for (size_t i = 0; i < size; ++i) value |= (uint64_t)r->data[r->pos + i] << (8 * i);
  r->pos += size;
  *out = value;
  return true;
}

bool pb_next(pb_reader* r, pb_field* out) {
  if (r->error || r->pos >= r->size) return false;
  uint64_t tag;
  if (!read_varint(r, &tag) || (tag >> 3) == 0 || (tag >> 3) > 0x1fffffff) {
    r->error = true;
    return false;
  }
  memset(out, 0, sizeof *out);
  out->number = (uint32_t)(tag >> 3);
  out->wire_type = (int)(tag & 7);
  bool ok = false;
  switch (out->wire_type) {
    case PB_VARINT:
      ok = read_varint(r, &out->varint);
      break;
    case PB_FIXED64:
      ok = read_fixed(r, 8, &out->varint);
      break;
    case PB_FIXED32:
      ok = read_fixed(r, 4, &out->varint);
      break;
    case PB_LEN: {
      uint64_t size;
      ok = read_varint(r, &size) && size <= r->size - r->pos;
      if (ok) {
        out->data = r->data + r->pos;
        out->size = (size_t)size;
        r->pos += (size_t)size;
      }
      break;
    }
    default:
      break;
  }
  if (!ok) r->error = true;
  return ok;
}

bool pb_find(const uint8_t* data, size_t size, uint32_t field, pb_field* out) {
  pb_reader r;
  pb_field f;
  bool found = false;
  pb_reader_init(&r, data, size);
  while (pb_next(&r, &f)) {
    if (f.number == field) {
      *out = f;
      found = true;
    }
  }
  return found;
}

uint64_t pb_get_varint(const uint8_t* data, size_t size, uint32_t field) {
  pb_field f;
  return pb_find(data, size, field, &f) && f.wire_type == PB_VARINT ? f.varint : 0;
}

double pb_get_double(const uint8_t* data, size_t size, uint32_t field) {
  pb_field f;
  double value = 0;
  if (pb_find(data, size, field, &f) && f.wire_type == PB_FIXED64) {
    memcpy(&value, &f.varint, sizeof value);
  }
  return value;
}

const char* pb_get_string(const uint8_t* data, size_t size, uint32_t field, char* buf,
                          size_t buf_size) {
  pb_field f;
  size_t n = 0;
  if (pb_find(data, size, field, &f) && f.wire_type == PB_LEN) {
    n = f.size < buf_size - 1 ? f.size : buf_size - 1;
    memcpy(buf, f.data, n);
  }
  buf[n] = '\0';
  return buf;
}

size_t pb_count(const uint8_t* data, size_t size, uint32_t field) {
  pb_reader r;
  pb_field f;
  size_t count = 0;
  pb_reader_init(&r, data, size);
  while (pb_next(&r, &f)) count += f.number == field;
  return count;
}

bool pb_get_nth(const uint8_t* data, size_t size, uint32_t field, size_t n, pb_field* out) {
  pb_reader r;
  pb_field f;
  pb_reader_init(&r, data, size);
  while (pb_next(&r, &f)) {
    if (f.number != field || f.wire_type != PB_LEN) continue;
    if (n-- == 0) {
      *out = f;
      return true;
    }
  }
  return false;
}

size_t pb_get_varints(const uint8_t* data, size_t size, uint32_t field, uint64_t* values,
                      size_t max) {
  pb_reader r;
  pb_field f;
  size_t count = 0;
  pb_reader_init(&r, data, size);
  while (pb_next(&r, &f)) {
    if (f.number != field) continue;
    if (f.wire_type == PB_VARINT) {
      if (count < max) values[count] = f.varint;
      ++count;
    } else if (f.wire_type == PB_LEN) { /* packed */
      pb_reader packed;
      pb_reader_init(&packed, f.data, f.size);
      uint64_t value;
      while (packed.pos < packed.size && read_varint(&packed, &value)) {
        if (count < max) values[count] = value;
        ++count;
      }
    }
  }
  return count < max ? count : max;
}
