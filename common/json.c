/* json.c - strict JSON: a recursive-descent validator (jsmn's strict mode still accepts
 * "tru", "01", trailing commas and raw control characters), jsmn for the token tree, string
 * unescaping (\uXXXX with surrogate pairs), and the writer. */
#define JSON_IMPL
#include "common/stereo.h"
#include <ctype.h>
#include <math.h>

/* ---- validator ------------------------------------------------------------------------ */
struct vstate {
	const char *s, *end;
	const char *p;
	char *err;
};

static int verr(struct vstate *v, const char *what)
{
	return errf(v->err, "%s at offset %zu", what, (size_t)(v->p - v->s));
}

static void skip_ws(struct vstate *v)
{
	while (v->p < v->end && (*v->p == ' ' || *v->p == '\t' || *v->p == '\n' || *v->p == '\r'))
		v->p++;
}

/* Length of the valid UTF-8 sequence at p (1..4), or 0 if invalid. */
static int utf8_len(const unsigned char *p, const unsigned char *end)
{
	unsigned c = p[0];
	int n;
	unsigned min;
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		n = 2, min = 0x80;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3, min = 0x800;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4, min = 0x10000;
	else
		return 0;
	if (end - p < n)
		return 0;
	unsigned cp = c & (0x3f >> (n - 1));
	for (int i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

bool utf8_valid(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s, *end = p + n;
	while (p < end) {
		int len = utf8_len(p, end);
		if (!len)
			return false;
		p += len;
	}
	return true;
}

static int hex4(const char *p, unsigned *out)
{
	unsigned v = 0;
	for (int i = 0; i < 4; i++) {
		char c = p[i];
		v <<= 4;
		if (c >= '0' && c <= '9') v |= c - '0';
		else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
		else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
		else return -1;
	}
	*out = v;
	return 0;
}

static int v_string(struct vstate *v)
{
	v->p++;
	while (v->p < v->end) {
		unsigned char c = *v->p;
		if (c == '"') {
			v->p++;
			return 0;
		}
		if (c < 0x20)
			return verr(v, "control character in string");
		if (c == '\\') {
			if (v->end - v->p < 2)
				break;
			char e = v->p[1];
			if (e == 'u') {
				unsigned u;
				if (v->end - v->p < 6 || hex4(v->p + 2, &u))
					return verr(v, "bad \\u escape");
				v->p += 6;
				if (u >= 0xdc00 && u <= 0xdfff)
					return verr(v, "lone low surrogate");
				if (u >= 0xd800 && u <= 0xdbff) {
					unsigned lo;
					if (v->end - v->p < 6 || v->p[0] != '\\' || v->p[1] != 'u' ||
					    hex4(v->p + 2, &lo) || lo < 0xdc00 || lo > 0xdfff)
						return verr(v, "lone high surrogate");
					v->p += 6;
				}
				continue;
			}
			if (!strchr("\"\\/bfnrt", e) || !e)
				return verr(v, "bad escape");
			v->p += 2;
			continue;
		}
		int n = utf8_len((const unsigned char *)v->p, (const unsigned char *)v->end);
		if (!n)
			return verr(v, "invalid UTF-8");
		v->p += n;
	}
	return verr(v, "unterminated string");
}

static int v_number(struct vstate *v)
{
	const char *p = v->p;
	if (p < v->end && *p == '-')
		p++;
	if (p >= v->end)
		return verr(v, "bad number");
	if (*p == '0') {
		p++;
	} else if (*p >= '1' && *p <= '9') {
		while (p < v->end && *p >= '0' && *p <= '9') p++;
	} else {
		return verr(v, "bad number");
	}
	if (p < v->end && *p == '.') {
		p++;
		if (p >= v->end || *p < '0' || *p > '9')
			return verr(v, "bad number");
		while (p < v->end && *p >= '0' && *p <= '9') p++;
	}
	if (p < v->end && (*p == 'e' || *p == 'E')) {
		p++;
		if (p < v->end && (*p == '+' || *p == '-')) p++;
		if (p >= v->end || *p < '0' || *p > '9')
			return verr(v, "bad number");
		while (p < v->end && *p >= '0' && *p <= '9') p++;
	}
	v->p = p;
	return 0;
}

static int v_value(struct vstate *v, int depth)
{
	skip_ws(v);
	if (v->p >= v->end)
		return verr(v, "unexpected end of input");
	if (depth > JSON_MAX_DEPTH)
		return verr(v, "nesting too deep");
	char c = *v->p;
	if (c == '{' || c == '[') {
		char close = c == '{' ? '}' : ']';
		v->p++;
		skip_ws(v);
		if (v->p < v->end && *v->p == close) {
			v->p++;
			return 0;
		}
		for (;;) {
			skip_ws(v);
			if (c == '{') {
				if (v->p >= v->end || *v->p != '"')
					return verr(v, "expected object key");
				if (v_string(v))
					return -1;
				skip_ws(v);
				if (v->p >= v->end || *v->p != ':')
					return verr(v, "expected ':'");
				v->p++;
			}
			if (v_value(v, depth + 1))
				return -1;
			skip_ws(v);
			if (v->p < v->end && *v->p == ',') {
				v->p++;
				continue;
			}
			if (v->p < v->end && *v->p == close) {
				v->p++;
				return 0;
			}
			return verr(v, c == '{' ? "expected ',' or '}'" : "expected ',' or ']'");
		}
	}
	if (c == '"')
		return v_string(v);
	if (c == '-' || (c >= '0' && c <= '9'))
		return v_number(v);
	static const char *lits[] = {"true", "false", "null"};
	for (int i = 0; i < 3; i++) {
		size_t n = strlen(lits[i]);
		if ((size_t)(v->end - v->p) >= n && !memcmp(v->p, lits[i], n)) {
			v->p += n;
			return 0;
		}
	}
	return verr(v, "invalid literal");
}

int json_validate(const char *s, size_t len, char *err)
{
	struct vstate v = {s, s + len, s, err};
	if (v_value(&v, 0))
		return -1;
	skip_ws(&v);
	if (v.p != v.end)
		return verr(&v, "trailing data");
	return 0;
}

/* ---- tokens ---------------------------------------------------------------------------- */
int json_parse(struct json *j, const char *s, size_t len, bool root_object, char *err)
{
	memset(j, 0, sizeof *j);
	if (json_validate(s, len, err))
		return -1;
	size_t i = 0;
	while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
		i++;
	if (root_object && s[i] != '{')
		return errf(err, "expected a JSON object");
	jsmn_parser p;
	jsmn_init(&p);
	int n = jsmn_parse(&p, s, len, NULL, 0);
	if (n <= 0 || n > JSON_MAX_TOKENS)
		return errf(err, n > 0 ? "too many JSON tokens" : "cannot tokenize JSON");
	j->tok = malloc(sizeof(jsmntok_t) * n);
	if (!j->tok)
		return errf(err, "out of memory");
	jsmn_init(&p);
	if (jsmn_parse(&p, s, len, j->tok, n) != n) {
		json_free(j);
		return errf(err, "cannot tokenize JSON");
	}
	j->s = s;
	j->len = len;
	j->ntok = n;
	return 0;
}

void json_free(struct json *j)
{
	free(j->tok);
	j->tok = NULL;
	j->ntok = 0;
}

enum json_kind json_kind(const struct json *j, int i)
{
	if (i < 0 || i >= j->ntok)
		return JSON_NONE;
	const jsmntok_t *t = &j->tok[i];
	switch (t->type) {
	case JSMN_OBJECT: return JSON_OBJECT;
	case JSMN_ARRAY: return JSON_ARRAY;
	case JSMN_STRING: return JSON_STRING;
	case JSMN_PRIMITIVE:
		switch (j->s[t->start]) {
		case 't': case 'f': return JSON_BOOL;
		case 'n': return JSON_NULL;
		default: return JSON_NUMBER;
		}
	default: return JSON_NONE;
	}
}

int json_next(const struct json *j, int i)
{
	int todo = 1;
	while (todo > 0 && i < j->ntok) {
		todo += j->tok[i].size;
		/* an object's size counts keys; each key token has size 1 (its value) */
		todo--;
		i++;
	}
	return i;
}

bool json_is_key(const struct json *j, int i, const char *key)
{
	const jsmntok_t *t = &j->tok[i];
	size_t n = strlen(key);
	/* keys with escapes never match a plain C key: compare the raw bytes */
	return t->type == JSMN_STRING && (size_t)(t->end - t->start) == n &&
	       !memcmp(j->s + t->start, key, n);
}

int json_get(const struct json *j, int obj, const char *key)
{
	if (json_kind(j, obj) != JSON_OBJECT)
		return -1;
	int n = j->tok[obj].size, i = obj + 1, found = -1;
	for (int k = 0; k < n; k++) {
		if (json_is_key(j, i, key))
			found = i + 1;   /* last duplicate wins, as in Go's encoding/json */
		i = json_next(j, i + 1);
	}
	return found;
}

int json_array_item(const struct json *j, int arr, int n)
{
	if (json_kind(j, arr) != JSON_ARRAY || n < 0 || n >= j->tok[arr].size)
		return -1;
	int i = arr + 1;
	while (n--)
		i = json_next(j, i);
	return i;
}

static void put_utf8(struct buf *b, unsigned cp)
{
	char u[4];
	int n;
	if (cp < 0x80) { u[0] = cp; n = 1; }
	else if (cp < 0x800) { u[0] = 0xc0 | cp >> 6; u[1] = 0x80 | (cp & 0x3f); n = 2; }
	else if (cp < 0x10000) { u[0] = 0xe0 | cp >> 12; u[1] = 0x80 | ((cp >> 6) & 0x3f); u[2] = 0x80 | (cp & 0x3f); n = 3; }
	else { u[0] = 0xf0 | cp >> 18; u[1] = 0x80 | ((cp >> 12) & 0x3f); u[2] = 0x80 | ((cp >> 6) & 0x3f); u[3] = 0x80 | (cp & 0x3f); n = 4; }
	buf_append(b, u, n);
}

int json_unescape(const char *s, size_t n, struct buf *out, int flags, char *err)
{
	out->len = 0;
	if (buf_reserve(out, n))
		return errf(err, "out of memory");
	size_t i = 0;
	while (i < n) {
		size_t k = i;
		while (k < n && s[k] != '\\' && (unsigned char)s[k] >= 0x20)
			k++;
		int len = 0;
		for (size_t q = i; q < k; q += len)
			if (!(len = utf8_len((const unsigned char *)s + q, (const unsigned char *)s + k)))
				return errf(err, "invalid UTF-8 in string");
		buf_append(out, s + i, k - i);
		if (k >= n)
			break;
		if ((unsigned char)s[k] < 0x20)
			return errf(err, "control character in string");
		if (k + 1 >= n)
			return errf(err, "bad escape");
		char e = s[k + 1];
		const char *map = "\"\"\\\\//b\bf\fn\nr\rt\t";
		const char *m = strchr(map, e);
		if (e != 'u') {
			if (!m || ((m - map) & 1))
				return errf(err, "bad escape \\%c", e);
			buf_putc(out, m[1]);
			i = k + 2;
			continue;
		}
		unsigned cp;
		if (k + 6 > n || hex4(s + k + 2, &cp))
			return errf(err, "bad \\u escape");
		i = k + 6;
		if (cp >= 0xdc00 && cp <= 0xdfff)
			return errf(err, "lone low surrogate \\u%04x", cp);
		if (cp >= 0xd800 && cp <= 0xdbff) {
			unsigned lo;
			if (i + 6 > n || s[i] != '\\' || s[i + 1] != 'u' || hex4(s + i + 2, &lo) ||
			    lo < 0xdc00 || lo > 0xdfff)
				return errf(err, "lone high surrogate \\u%04x", cp);
			cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
			i += 6;
		}
		if (cp == 0 && (flags & JSON_STR_NO_NUL))
			return errf(err, "NUL character not allowed");
		put_utf8(out, cp);
	}
	if (out->p)
		out->p[out->len] = 0;
	return 0;
}

int json_str(const struct json *j, int i, struct buf *out, int flags, char *err)
{
	if (json_kind(j, i) != JSON_STRING)
		return errf(err, "expected a string");
	const jsmntok_t *t = &j->tok[i];
	return json_unescape(j->s + t->start, t->end - t->start, out, flags, err);
}

int json_bool(const struct json *j, int i, bool *out)
{
	if (json_kind(j, i) != JSON_BOOL)
		return -1;
	*out = j->s[j->tok[i].start] == 't';
	return 0;
}

/* Integers only: no fraction, no exponent (Go rejects 1.5 for an integer field too). */
static int json_int_parts(const struct json *j, int i, bool *neg, uint64_t *mag)
{
	if (json_kind(j, i) != JSON_NUMBER)
		return -1;
	const char *p = j->s + j->tok[i].start, *e = j->s + j->tok[i].end;
	*neg = *p == '-';
	if (*neg)
		p++;
	uint64_t v = 0;
	for (; p < e; p++) {
		if (*p < '0' || *p > '9')
			return -1;
		if (v > (UINT64_MAX - (*p - '0')) / 10)
			return -1;
		v = v * 10 + (*p - '0');
	}
	*mag = v;
	return 0;
}

int json_u64(const struct json *j, int i, uint64_t *out)
{
	bool neg;
	uint64_t m;
	if (json_int_parts(j, i, &neg, &m) || (neg && m))
		return -1;
	*out = m;
	return 0;
}

int json_i64(const struct json *j, int i, int64_t *out)
{
	bool neg;
	uint64_t m;
	if (json_int_parts(j, i, &neg, &m) || m > (uint64_t)INT64_MAX + neg)
		return -1;
	*out = neg ? (int64_t)(0 - m) : (int64_t)m;
	return 0;
}

/* ---- writer ---------------------------------------------------------------------------- */
/* Go's encoding/json string form, so our output is byte for byte what stereosd and its Go
 * client write: HTML-safe escapes for < > &, U+2028/U+2029 escaped, invalid UTF-8 as \ufffd. */
void json_quote(struct buf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	buf_reserve(b, n + 2);
	buf_putc(b, '"');
	size_t i = 0;
	while (i < n) {
		size_t k = i;
		while (k < n && (unsigned char)s[k] >= 0x20 && (unsigned char)s[k] < 0x80 &&
		       !strchr("\"\\<>&", s[k]))
			k++;
		buf_append(b, s + i, k - i);
		if (k >= n)
			break;
		unsigned char c = s[k];
		if (c >= 0x80) {
			int len = utf8_len((const unsigned char *)s + k, (const unsigned char *)s + n);
			if (!len)
				buf_puts(b, "\\ufffd");
			else if (len == 3 && c == 0xe2 && (unsigned char)s[k + 1] == 0x80 &&
				 ((unsigned char)s[k + 2] == 0xa8 || (unsigned char)s[k + 2] == 0xa9))
				buf_puts(b, (unsigned char)s[k + 2] == 0xa8 ? "\\u2028" : "\\u2029");
			else
				buf_append(b, s + k, len);
			i = k + (len ? len : 1);
			continue;
		}
		switch (c) {
		case '"': buf_puts(b, "\\\""); break;
		case '\\': buf_puts(b, "\\\\"); break;
		case '\n': buf_puts(b, "\\n"); break;
		case '\r': buf_puts(b, "\\r"); break;
		case '\t': buf_puts(b, "\\t"); break;
		default: {
			char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
			buf_append(b, u, 6);
		}
		}
		i = k + 1;
	}
	buf_putc(b, '"');
}

void jw_init(struct jw *w, struct buf *b)
{
	w->b = b;
	w->depth = 0;
	w->first[0] = true;
}

static void jw_sep(struct jw *w)
{
	if (!w->first[w->depth])
		buf_putc(w->b, ',');
	w->first[w->depth] = false;
}

static void jw_open(struct jw *w, char c)
{
	jw_sep(w);
	buf_putc(w->b, c);
	if (w->depth < JSON_MAX_DEPTH - 1)
		w->depth++;
	w->first[w->depth] = true;
}

static void jw_close(struct jw *w, char c)
{
	buf_putc(w->b, c);
	if (w->depth > 0)
		w->depth--;
}

void jw_obj(struct jw *w) { jw_open(w, '{'); }
void jw_obj_end(struct jw *w) { jw_close(w, '}'); }
void jw_arr(struct jw *w) { jw_open(w, '['); }
void jw_arr_end(struct jw *w) { jw_close(w, ']'); }

void jw_key(struct jw *w, const char *k)
{
	jw_sep(w);
	json_quote(w->b, k, strlen(k));
	buf_putc(w->b, ':');
	w->first[w->depth] = true;   /* the value that follows takes no comma */
}

void jw_strn(struct jw *w, const char *s, size_t n) { jw_sep(w); json_quote(w->b, s, n); }
void jw_str(struct jw *w, const char *s) { jw_strn(w, s, strlen(s)); }
void jw_int(struct jw *w, long long v) { jw_sep(w); buf_printf(w->b, "%lld", v); }
void jw_uint(struct jw *w, unsigned long long v) { jw_sep(w); buf_printf(w->b, "%llu", v); }
void jw_double(struct jw *w, double v)
{
	jw_sep(w);
	if (isfinite(v))
		buf_printf(w->b, "%.6g", v);
	else
		buf_puts(w->b, "null");
}
void jw_bool(struct jw *w, bool v) { jw_sep(w); buf_puts(w->b, v ? "true" : "false"); }
void jw_null(struct jw *w) { jw_sep(w); buf_puts(w->b, "null"); }
void jw_raw(struct jw *w, const char *json, size_t n) { jw_sep(w); buf_append(w->b, json, n); }
void jw_kstr(struct jw *w, const char *k, const char *v) { jw_key(w, k); jw_str(w, v); }
void jw_kint(struct jw *w, const char *k, long long v) { jw_key(w, k); jw_int(w, v); }
void jw_kbool(struct jw *w, const char *k, bool v) { jw_key(w, k); jw_bool(w, v); }

/* ---- Go encoding/json compatibility ----------------------------------------------------
 * stereosd decodes requests with Go's encoding/json; a drop-in must find the same fields and
 * refuse with the same words. What Go does (documented at pkg.go.dev/encoding/json,
 * "Unmarshal"): a key selects the field with exactly that name, else the field whose name
 * matches case-insensitively; a later duplicate overwrites an earlier one. With field names
 * that differ in more than case, that is: the last key equal to the name ignoring ASCII case.
 * (Go also folds the Kelvin sign and the long s; we do not.) */

static bool key_fold_eq(const struct json *j, int i, const char *key)
{
	const jsmntok_t *t = &j->tok[i];
	const char *s = j->s + t->start;
	size_t n = t->end - t->start, kn = strlen(key);
	struct buf un = {0};
	bool eq = false;
	if (t->type != JSMN_STRING)
		return false;
	if (memchr(s, '\\', n)) {   /* an escaped key is matched by what it means */
		char err[ERRBUF];
		if (n > 6 * kn + 6 || json_unescape(s, n, &un, JSON_STR_ANY, err)) {
			buf_free(&un);
			return false;
		}
		s = un.p ? un.p : "";
		n = un.len;
	}
	if (n == kn) {
		eq = true;
		for (size_t k = 0; k < n && eq; k++) {
			unsigned char a = s[k], b = key[k];
			if (a >= 'A' && a <= 'Z') a += 32;
			if (b >= 'A' && b <= 'Z') b += 32;
			eq = a == b;
		}
	}
	buf_free(&un);
	return eq;
}

int json_get_fold(const struct json *j, int obj, const char *key)
{
	if (json_kind(j, obj) != JSON_OBJECT)
		return -1;
	int n = j->tok[obj].size, i = obj + 1, found = -1;
	for (int k = 0; k < n; k++) {
		if (key_fold_eq(j, i, key))
			found = i + 1;
		i = json_next(j, i + 1);
	}
	return found;
}

const char *json_go_kind(const struct json *j, int i)
{
	switch (json_kind(j, i)) {
	case JSON_OBJECT: return "object";
	case JSON_ARRAY: return "array";
	case JSON_STRING: return "string";
	case JSON_NUMBER: return "number";
	case JSON_BOOL: return "bool";
	default: return "null";
	}
}

int json_go_object(const struct json *j, int i, const char *gotype, char *err)
{
	enum json_kind k = json_kind(j, i);
	if (k == JSON_OBJECT || k == JSON_NULL || k == JSON_NONE)
		return 0;
	return errf(err, "json: cannot unmarshal %s into Go value of type %s", json_go_kind(j, i), gotype);
}

static int go_field_err(const struct json *j, int i, const char *what, const char *st,
			const char *key, const char *type, char *err)
{
	return errf(err, "json: cannot unmarshal %s into Go struct field %s.%s of type %s",
		    what ? what : json_go_kind(j, i), st, key, type);
}

int json_go_str(const struct json *j, int obj, const char *st, const char *key, struct buf *out, char *err)
{
	int i = json_get_fold(j, obj, key);
	out->len = 0;
	if (i < 0 || json_kind(j, i) == JSON_NULL)
		return 0;
	if (json_kind(j, i) != JSON_STRING)
		return go_field_err(j, i, NULL, st, key, "string", err);
	return json_str(j, i, out, JSON_STR_ANY, err);
}

int json_go_bool(const struct json *j, int obj, const char *st, const char *key, bool *out, char *err)
{
	int i = json_get_fold(j, obj, key);
	if (i < 0 || json_kind(j, i) == JSON_NULL)
		return 0;
	if (json_bool(j, i, out))
		return go_field_err(j, i, NULL, st, key, "bool", err);
	return 0;
}

int json_go_uint(const struct json *j, int obj, const char *st, const char *key, int bits,
		 uint64_t *out, char *err)
{
	int i = json_get_fold(j, obj, key);
	uint64_t v;
	if (i < 0 || json_kind(j, i) == JSON_NULL)
		return 0;
	if (json_kind(j, i) != JSON_NUMBER)
		return go_field_err(j, i, NULL, st, key, bits == 32 ? "uint32" : "uint64", err);
	if (json_u64(j, i, &v) || (bits < 64 && v >> bits)) {
		/* Go names the literal when it is a number that does not fit */
		const jsmntok_t *t = &j->tok[i];
		char what[64];
		snprintf(what, sizeof what, "number %.*s", (int)(t->end - t->start > 48 ? 48 : t->end - t->start),
			 j->s + t->start);
		return go_field_err(j, i, what, st, key, bits == 32 ? "uint32" : "uint64", err);
	}
	*out = v;
	return 0;
}

/* Go's %q of a byte string (strconv.Quote): printable UTF-8 kept, the rest escaped. */
void go_quote(struct buf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	buf_putc(b, '"');
	for (size_t i = 0; i < n;) {
		unsigned char c = s[i];
		int len = c >= 0x80 ? utf8_len((const unsigned char *)s + i, (const unsigned char *)s + n) : 1;
		if (c >= 0x80 && len) {
			/* C1 controls (U+0080..U+009F) and U+00AD are not printable in Go */
			unsigned cp = len == 2 ? ((c & 0x1f) << 6) | (s[i + 1] & 0x3f) : 0x100;
			if (cp < 0xa0 || cp == 0xad)
				buf_printf(b, "\\u%04x", cp);
			else
				buf_append(b, s + i, len);
			i += len;
			continue;
		}
		if (c >= 0x80) {
			buf_printf(b, "\\x%c%c", hex[c >> 4], hex[c & 15]);
		} else if (c == '"' || c == '\\') {
			buf_putc(b, '\\');
			buf_putc(b, c);
		} else if (c >= 0x20 && c < 0x7f) {
			buf_putc(b, c);
		} else {
			static const char map[] = "\aa\bb\ff\nn\rr\tt\vv";
			const char *m = c ? memchr(map, c, sizeof map - 1) : NULL;
			if (m && ((m - map) & 1) == 0) {
				buf_putc(b, '\\');
				buf_putc(b, m[1]);
			} else {
				buf_printf(b, "\\x%c%c", hex[c >> 4], hex[c & 15]);
			}
		}
		i++;
	}
	buf_putc(b, '"');
}

/* Go's scanner (encoding/json/scanner.go) error texts for text it refuses: "invalid character
 * 'x' CONTEXT" or "unexpected end of JSON input". Returns 0 when Go's scanner accepts s (then
 * our stricter validator refused it for a reason Go does not have: invalid UTF-8, depth). */
struct gscan {
	const char *s, *end, *p;
	char *err;
};

static int gs_char(struct gscan *g, const char *ctx)
{
	if (g->p >= g->end)
		return errf(g->err, "unexpected end of JSON input");
	unsigned char c = *g->p;
	struct buf q = {0};
	if (c == '\'')
		buf_puts(&q, "'\\''");
	else if (c == '"')
		buf_puts(&q, "'\"'");
	else {
		/* strconv.Quote(string(rune(c))): bytes >= 0x80 stand for U+0080..U+00FF */
		char u[2] = {(char)(0xc0 | (c >> 6)), (char)(0x80 | (c & 0x3f))};
		go_quote(&q, c < 0x80 ? (const char *)&c : u, c < 0x80 ? 1 : 2);
		q.p[0] = q.p[q.len - 1] = '\'';
	}
	errf(g->err, "invalid character %s %s", buf_cstr(&q), ctx);
	buf_free(&q);
	return -1;
}

static void gs_ws(struct gscan *g)
{
	while (g->p < g->end && (*g->p == ' ' || *g->p == '\t' || *g->p == '\n' || *g->p == '\r'))
		g->p++;
}

static bool gs_digit(struct gscan *g) { return g->p < g->end && *g->p >= '0' && *g->p <= '9'; }

static int gs_value(struct gscan *g, int depth);

static int gs_string(struct gscan *g)
{
	g->p++;
	for (;;) {
		if (g->p >= g->end)
			return gs_char(g, "");
		unsigned char c = *g->p;
		if (c == '"') {
			g->p++;
			return 0;
		}
		if (c < 0x20)
			return gs_char(g, "in string literal");
		g->p++;
		if (c != '\\')
			continue;
		if (g->p >= g->end)
			return gs_char(g, "");
		c = *g->p;
		if (c == 'u') {
			g->p++;
			for (int k = 0; k < 4; k++, g->p++)
				if (g->p >= g->end || !isxdigit((unsigned char)*g->p))
					return gs_char(g, "in \\u hexadecimal character escape");
			continue;
		}
		if (!c || !strchr("bfnrt\\/\"", c))
			return gs_char(g, "in string escape code");
		g->p++;
	}
}

static int gs_number(struct gscan *g)
{
	if (*g->p == '-') {
		g->p++;
		if (!gs_digit(g))
			return gs_char(g, "in numeric literal");
	}
	if (*g->p == '0')
		g->p++;
	else
		while (gs_digit(g))
			g->p++;
	if (g->p < g->end && *g->p == '.') {
		g->p++;
		if (!gs_digit(g))
			return gs_char(g, "after decimal point in numeric literal");
		while (gs_digit(g))
			g->p++;
	}
	if (g->p < g->end && (*g->p == 'e' || *g->p == 'E')) {
		g->p++;
		if (g->p < g->end && (*g->p == '+' || *g->p == '-'))
			g->p++;
		if (!gs_digit(g))
			return gs_char(g, "in exponent of numeric literal");
		while (gs_digit(g))
			g->p++;
	}
	return 0;
}

static int gs_value(struct gscan *g, int depth)
{
	gs_ws(g);
	if (g->p >= g->end)
		return gs_char(g, "");
	char c = *g->p;
	if (depth > 10000)
		return errf(g->err, "exceeded max depth");
	if (c == '{' || c == '[') {
		char close = c == '{' ? '}' : ']';
		g->p++;
		gs_ws(g);
		if (g->p < g->end && *g->p == close) {
			g->p++;
			return 0;
		}
		for (;;) {
			if (c == '{') {
				gs_ws(g);
				if (g->p >= g->end || *g->p != '"')
					return gs_char(g, "looking for beginning of object key string");
				if (gs_string(g))
					return -1;
				gs_ws(g);
				if (g->p >= g->end || *g->p != ':')
					return gs_char(g, "after object key");
				g->p++;
			}
			if (gs_value(g, depth + 1))
				return -1;
			gs_ws(g);
			if (g->p < g->end && *g->p == ',') {
				g->p++;
				continue;
			}
			if (g->p < g->end && *g->p == close) {
				g->p++;
				return 0;
			}
			return gs_char(g, c == '{' ? "after object key:value pair" : "after array element");
		}
	}
	if (c == '"')
		return gs_string(g);
	if (c == '-' || (c >= '0' && c <= '9'))
		return gs_number(g);
	static const char *const lits[] = {"true", "false", "null"};
	for (int i = 0; i < 3; i++) {
		if (c != lits[i][0])
			continue;
		g->p++;
		for (const char *l = lits[i] + 1; *l; l++, g->p++)
			if (g->p >= g->end || *g->p != *l) {
				char ctx[64];
				snprintf(ctx, sizeof ctx, "in literal %s (expecting '%c')", lits[i], *l);
				return gs_char(g, ctx);
			}
		return 0;
	}
	return gs_char(g, "looking for beginning of value");
}

int json_go_syntax(const char *s, size_t len, char *err)
{
	struct gscan g = {s, s + len, s, err};
	if (gs_value(&g, 0))
		return -1;
	gs_ws(&g);
	if (g.p < g.end)
		return gs_char(&g, "after top-level value");
	return 0;
}
