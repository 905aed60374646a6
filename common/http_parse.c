/* http_parse.c - the HTTP/1.1 parser (see http.h): requests, responses, chunked bodies.
 * Allocation-free: it only points into the caller's bytes. */
#include "common/stereo.h"

/* ---- parser ---------------------------------------------------------------------------- */
static bool is_tchar(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool ieq(const char *a, size_t an, const char *b)
{
	return strlen(b) == an && !strncasecmp(a, b, an);
}

/* Find the end of the line starting at p: returns pointer to '\n', or NULL. */
static const char *line_end(const char *p, const char *end)
{
	return memchr(p, '\n', end - p);
}

static int parse_headers(const char *p, const char *end, struct http_msg *m)
{
	const char *start = p;
	m->nh = 0;
	m->content_length = -1;
	m->chunked = false;
	for (;;) {
		const char *nl = line_end(p, end);
		if (!nl)
			return HTTP_PARTIAL;
		const char *le = nl > p && nl[-1] == '\r' ? nl - 1 : nl;
		if (le == p)
			return (int)(nl + 1 - start);
		if (m->nh == HTTP_MAX_HEADERS)
			return HTTP_TOO_LARGE;
		const char *c = p;
		while (c < le && is_tchar(*c))
			c++;
		if (c == p || c >= le || *c != ':')
			return HTTP_BAD;
		struct http_header *h = &m->h[m->nh++];
		h->name = p;
		h->name_len = c - p;
		const char *v = c + 1, *ve = le;
		while (v < ve && (*v == ' ' || *v == '\t'))
			v++;
		while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
			ve--;
		for (const char *q = v; q < ve; q++)
			if (((unsigned char)*q < 0x20 && *q != '\t') || *q == 0x7f)
				return HTTP_BAD;
		h->value = v;
		h->value_len = ve - v;
		if (ieq(h->name, h->name_len, "content-length")) {
			if (!h->value_len || h->value_len > 15)
				return HTTP_BAD;
			long long cl = 0;
			for (size_t i = 0; i < h->value_len; i++) {
				if (v[i] < '0' || v[i] > '9')
					return HTTP_BAD;
				cl = cl * 10 + (v[i] - '0');
			}
			if (m->content_length >= 0 && m->content_length != cl)
				return HTTP_BAD;
			m->content_length = cl;
		} else if (ieq(h->name, h->name_len, "transfer-encoding")) {
			if (h->value_len >= 7 && !strncasecmp(ve - 7, "chunked", 7))
				m->chunked = true;
			else
				return HTTP_BAD;
		} else if (ieq(h->name, h->name_len, "connection")) {
			if (ieq(v, h->value_len, "close"))
				m->keep_alive = false;
			else if (ieq(v, h->value_len, "keep-alive"))
				m->keep_alive = true;
		}
		p = nl + 1;
	}
}

static int parse_version(const char *p, const char *e, int *minor)
{
	if (e - p != 8 || memcmp(p, "HTTP/1.", 7) || (p[7] != '0' && p[7] != '1'))
		return HTTP_BAD;
	*minor = p[7] - '0';
	return 0;
}

static int finish(const char *buf, size_t len, const char *hstart, struct http_msg *m)
{
	int r = parse_headers(hstart, buf + len, m);
	if (r == HTTP_PARTIAL)
		return len > HTTP_MAX_HEAD ? HTTP_TOO_LARGE : HTTP_PARTIAL;
	if (r < 0)
		return r;
	m->head_len = (hstart - buf) + r;
	if (m->head_len > HTTP_MAX_HEAD)
		return HTTP_TOO_LARGE;
	if (m->chunked && m->content_length >= 0)
		return HTTP_BAD;   /* request smuggling guard (RFC 9112 6.3) */
	return (int)m->head_len;
}

long http_head_end(const char *buf, size_t len, size_t *scanned)
{
	/* The blank line ends "\n\n" or "\n\r\n": resume two bytes before where we stopped. */
	size_t i = *scanned > 2 ? *scanned - 2 : 0;
	for (const char *nl; i < len && (nl = memchr(buf + i, '\n', len - i)); i = nl + 1 - buf) {
		size_t k = nl - buf + 1;
		if (k < len && buf[k] == '\n')
			return (long)(k + 1);
		if (k + 1 < len && buf[k] == '\r' && buf[k + 1] == '\n')
			return (long)(k + 2);
	}
	*scanned = len;
	return len > HTTP_MAX_HEAD ? HTTP_TOO_LARGE : HTTP_PARTIAL;
}

int http_parse_request(const char *buf, size_t len, struct http_msg *m)
{
	memset(m, 0, sizeof *m);
	const char *end = buf + (len > HTTP_MAX_HEAD + 1 ? HTTP_MAX_HEAD + 1 : len);
	const char *nl = line_end(buf, end);
	if (!nl)
		return len > HTTP_MAX_HEAD ? HTTP_TOO_LARGE : HTTP_PARTIAL;
	const char *le = nl > buf && nl[-1] == '\r' ? nl - 1 : nl;
	const char *sp1 = memchr(buf, ' ', le - buf);
	if (!sp1 || sp1 == buf)
		return HTTP_BAD;
	for (const char *q = buf; q < sp1; q++)
		if (!is_tchar(*q))
			return HTTP_BAD;
	const char *t = sp1 + 1;
	const char *sp2 = memchr(t, ' ', le - t);
	if (!sp2 || sp2 == t)
		return HTTP_BAD;
	for (const char *q = t; q < sp2; q++)
		if ((unsigned char)*q <= 0x20 || *q == 0x7f)
			return HTTP_BAD;
	if (parse_version(sp2 + 1, le, &m->minor))
		return HTTP_BAD;
	m->method = buf;
	m->method_len = sp1 - buf;
	m->target = t;
	m->target_len = sp2 - t;
	m->keep_alive = m->minor == 1;
	return finish(buf, end - buf, nl + 1, m);
}

int http_parse_response(const char *buf, size_t len, struct http_msg *m)
{
	memset(m, 0, sizeof *m);
	const char *end = buf + (len > HTTP_MAX_HEAD + 1 ? HTTP_MAX_HEAD + 1 : len);
	const char *nl = line_end(buf, end);
	if (!nl)
		return len > HTTP_MAX_HEAD ? HTTP_TOO_LARGE : HTTP_PARTIAL;
	const char *le = nl > buf && nl[-1] == '\r' ? nl - 1 : nl;
	if (le - buf < 12 || parse_version(buf, buf + 8, &m->minor) || buf[8] != ' ')
		return HTTP_BAD;
	int st = 0;
	for (int i = 9; i < 12; i++) {
		if (buf[i] < '0' || buf[i] > '9')
			return HTTP_BAD;
		st = st * 10 + (buf[i] - '0');
	}
	if (st < 100 || (le - buf > 12 && buf[12] != ' '))
		return HTTP_BAD;
	m->status = st;
	m->keep_alive = m->minor == 1;
	return finish(buf, end - buf, nl + 1, m);
}

const struct http_header *http_header(const struct http_msg *m, const char *name)
{
	for (size_t i = 0; i < m->nh; i++)
		if (ieq(m->h[i].name, m->h[i].name_len, name))
			return &m->h[i];
	return NULL;
}

long http_dechunk(const char *buf, size_t len, struct buf *out, size_t max)
{
	size_t p = 0;
	out->len = 0;
	for (;;) {
		const char *nl = memchr(buf + p, '\n', len - p);
		if (!nl)
			return HTTP_PARTIAL;
		size_t sz = 0;
		const char *q = buf + p;
		int digits = 0;
		for (; q < nl && *q != ';' && *q != '\r'; q++, digits++) {
			int d = (*q >= '0' && *q <= '9') ? *q - '0' : (*q | 0x20) >= 'a' && (*q | 0x20) <= 'f' ? (*q | 0x20) - 'a' + 10 : -1;
			if (d < 0 || digits >= 8)
				return HTTP_BAD;
			sz = sz * 16 + d;
		}
		if (!digits)
			return HTTP_BAD;
		p = nl + 1 - buf;
		if (sz == 0) {   /* trailers until an empty line */
			for (;;) {
				nl = memchr(buf + p, '\n', len - p);
				if (!nl)
					return HTTP_PARTIAL;
				size_t ll = nl - (buf + p);
				p = nl + 1 - buf;
				if (ll == 0 || (ll == 1 && buf[p - 2] == '\r'))
					return (long)p;
			}
		}
		if (out->len + sz > max)
			return HTTP_TOO_LARGE;
		if (len - p < sz + 1)
			return HTTP_PARTIAL;
		buf_append(out, buf + p, sz);
		p += sz;
		if (buf[p] == '\r') {
			if (len - p < 2)
				return HTTP_PARTIAL;
			p++;
		}
		if (buf[p] != '\n')
			return HTTP_BAD;
		p++;
	}
}

const char *http_reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 204: return "No Content";
	case 400: return "Bad Request";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 411: return "Length Required";
	case 413: return "Payload Too Large";
	case 422: return "Unprocessable Entity";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 503: return "Service Unavailable";
	default: return "Unknown";
	}
}

