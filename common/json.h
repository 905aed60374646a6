/* json.h - JSON on top of jsmn: a strict validator, navigation by token index, typed getters
 * that fully unescape strings, and a writer that always emits valid JSON.
 *
 * Token indexes are jsmn's; a lookup that fails returns -1. A parsed struct json borrows
 * the text it was given: keep the text alive while the tokens are used. */
#ifndef STEREO_JSON_H
#define STEREO_JSON_H
#ifndef JSON_IMPL
#define JSMN_HEADER
#endif
#include <jsmn.h>
#include <stdbool.h>
#include <stdint.h>
#include "common/buf.h"

#define JSON_MAX_TOKENS 200000
#define JSON_MAX_DEPTH 64

struct json {
	const char *s;
	size_t len;
	jsmntok_t *tok;
	int ntok;
};

enum json_kind { JSON_NONE, JSON_OBJECT, JSON_ARRAY, JSON_STRING, JSON_NUMBER, JSON_BOOL, JSON_NULL };

/* Parse exactly one JSON value (root_object: it must be an object) spanning s[0..len) with
 * only whitespace around it. Rejects everything RFC 8259 rejects (trailing commas, leading
 * zeros, raw control characters, bad escapes, invalid UTF-8, lone surrogates) and nesting
 * deeper than JSON_MAX_DEPTH. 0 or -1 with a message in err. Free with json_free. */
int json_parse(struct json *j, const char *s, size_t len, bool root_object, char *err);
void json_free(struct json *j);
/* Only the syntax check of json_parse (no tokens). */
int json_validate(const char *s, size_t len, char *err);

enum json_kind json_kind(const struct json *j, int i);
int json_next(const struct json *j, int i);               /* token after i's subtree */
int json_get(const struct json *j, int obj, const char *key); /* value token or -1 */
int json_array_item(const struct json *j, int arr, int n);  /* n-th item or -1 */
bool json_is_key(const struct json *j, int i, const char *key);

/* Typed getters: 0 ok, -1 wrong type or out of range (err says which). */
enum { JSON_STR_ANY = 0, JSON_STR_NO_NUL = 1 };
int json_str(const struct json *j, int i, struct buf *out, int flags, char *err);
int json_bool(const struct json *j, int i, bool *out);
int json_u64(const struct json *j, int i, uint64_t *out);
int json_i64(const struct json *j, int i, int64_t *out);
/* Unescape a raw JSON string body (between the quotes) into out. */
int json_unescape(const char *s, size_t n, struct buf *out, int flags, char *err);

/* Writer: appends to a struct buf, commas handled by nesting state. */
struct jw {
	struct buf *b;
	int depth;
	bool first[JSON_MAX_DEPTH];
};
void jw_init(struct jw *w, struct buf *b);
void jw_obj(struct jw *w);
void jw_obj_end(struct jw *w);
void jw_arr(struct jw *w);
void jw_arr_end(struct jw *w);
void jw_key(struct jw *w, const char *k);
void jw_str(struct jw *w, const char *s);
void jw_strn(struct jw *w, const char *s, size_t n);
void jw_int(struct jw *w, long long v);
void jw_uint(struct jw *w, unsigned long long v);
void jw_double(struct jw *w, double v);
void jw_bool(struct jw *w, bool v);
void jw_null(struct jw *w);
void jw_raw(struct jw *w, const char *json, size_t n);   /* already-valid JSON value */
/* key + value shorthands */
void jw_kstr(struct jw *w, const char *k, const char *v);
void jw_kint(struct jw *w, const char *k, long long v);
void jw_kbool(struct jw *w, const char *k, bool v);
/* Append s as a quoted JSON string in Go's encoding/json form (see json.c). */
void json_quote(struct buf *b, const char *s, size_t n);
/* True when s[0..n) is well-formed UTF-8 (no overlongs, surrogates or values > U+10FFFF). */
bool utf8_valid(const char *s, size_t n);

/* Go encoding/json compatibility (the wire peers of stereod are Go programs; see json.c).
 * json_get_fold: the value Go's decoder puts in the field named key, or -1. */
int json_get_fold(const struct json *j, int obj, const char *key);
const char *json_go_kind(const struct json *j, int i);   /* "object", "number", ... */
/* 0 when token i (or -1: absent) can be decoded into a Go struct (object, null, absent),
 * else -1 with Go's "json: cannot unmarshal KIND into Go value of type GOTYPE". */
int json_go_object(const struct json *j, int i, const char *gotype, char *err);
/* Decode field key of object obj into a Go string / bool / uintBITS field of struct st, as
 * Go does: absent or null leaves the zero value (out->len = 0 / unchanged), a wrong type is
 * -1 with Go's UnmarshalTypeError text. */
int json_go_str(const struct json *j, int obj, const char *st, const char *key, struct buf *out, char *err);
int json_go_bool(const struct json *j, int obj, const char *st, const char *key, bool *out, char *err);
int json_go_uint(const struct json *j, int obj, const char *st, const char *key, int bits,
		 uint64_t *out, char *err);
/* Go's fmt %q of a byte string, appended to b. */
void go_quote(struct buf *b, const char *s, size_t n);
/* Go's scanner verdict on s: 0 when Go accepts its syntax, else -1 with Go's error text
 * ("invalid character 'x' looking for beginning of value", "unexpected end of JSON input"). */
int json_go_syntax(const char *s, size_t len, char *err);
#endif
