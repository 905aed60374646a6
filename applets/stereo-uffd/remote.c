/* remote.c - snapshot layers read from object storage over HTTP(S) with libcurl: URLs,
 * the object probe (size and ETag from a one-byte Range request), the small whole-object
 * GET (a header), and the fetcher thread that fills the chunk cache (cache.c).
 *
 * The fetcher is one thread driving a curl multi handle (connection reuse, HTTP/2
 * multiplexing where the server offers it) with up to --fetch-concurrency chunks in
 * flight. Requests come from two queues: urgent (a vCPU waits on it) before background
 * (prefetch, cat). Before downloading a chunk it takes the chunk's lock in the cache;
 * when another server holds it, it waits for that one's presence byte instead, so a chunk
 * is downloaded once per host. Every response is checked: 206, the exact Content-Range,
 * the object's size and ETag unchanged, the exact length. Connection errors, stalls and
 * 5xx are retried with backoff until --fetch-timeout; anything else fails the chunk at once.
 * A failed chunk stays failed: remote_avail reports it (with the URL, the chunk and why) to
 * whoever needs it, which fails closed; remote_poll/remote_wait report the first failure.
 * URLs in messages and cache keys lose their query string (it may hold a signature).
 */
#include "uffd.h"
#ifdef CONFIG_STEREO_UFFD_REMOTE
#include "remote.h"
#include <curl/curl.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define WAIT_OTHER_MS 10      /* how often a chunk another server fetches is looked at */
#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 2000

enum { CH_IDLE, CH_QUEUED, CH_URGENT, CH_ACTIVE, CH_DONE, CH_FAILED };

struct rlayer {
	char *url, *pub, *etag;
	uint64_t size;
	struct centry e;
	const uint8_t *map;
	uint8_t *st;              /* per chunk, under G.mu */
	char fail[512];           /* why the (last) failed chunk failed, under G.mu */
};

struct req {
	struct rlayer *R;
	uint64_t c;
};

struct queue {
	struct req *q;
	size_t head, n, cap;
};

enum slot_state { SLOT_FREE, SLOT_ACTIVE, SLOT_BACKOFF, SLOT_OTHER };

struct slot {
	enum slot_state state;
	CURL *h;
	struct rlayer *R;
	uint64_t c, off, want, got;
	int attempts;
	long long first_ms, next_ms;
	int wr_err;
	bool overflow, not206;
	char crange[128], etag[256];
	char last[ERRBUF];
};

static struct {
	struct remote_opts o;
	bool inited, started, stop;
	CURLM *multi;
	CURL *sync;
	pthread_t th;
	pthread_mutex_t mu;
	struct queue urgent, bg;
	struct slot *slots;
	int efd;
	bool failed;
	char fail[512];
} G = {.mu = PTHREAD_MUTEX_INITIALIZER, .efd = -1};

static long long mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool is_url(const char *s)
{
	return !strncmp(s, "http://", 7) || !strncmp(s, "https://", 8);
}

char *url_join(const char *base, const char *name)
{
	size_t q = strcspn(base, "?");
	size_t n = q;
	while (n > 0 && base[n - 1] == '/')
		n--;
	struct buf b = {0};
	buf_printf(&b, "%.*s/%s%s", (int)n, base, name, base + q);
	return b.p;
}

char *url_public(const char *url)
{
	size_t q = strcspn(url, "?");
	struct buf b = {0};
	buf_printf(&b, "%.*s%s", (int)q, url, url[q] ? "?..." : "");
	return b.p;
}

uint64_t remote_chunk_size(void)
{
	return G.o.chunk;
}

/* ---- queues ------------------------------------------------------------------------------ */
static void q_push(struct queue *q, struct rlayer *R, uint64_t c)
{
	if (q->n == q->cap) {
		size_t cap = q->cap ? q->cap * 2 : 256;
		struct req *nq = xcalloc(cap, sizeof *nq);
		for (size_t i = 0; i < q->n; i++)
			nq[i] = q->q[(q->head + i) % q->cap];
		free(q->q);
		q->q = nq;
		q->cap = cap;
		q->head = 0;
	}
	q->q[(q->head + q->n++) % q->cap] = (struct req){R, c};
}

static bool q_pop(struct queue *q, struct req *out)
{
	if (!q->n)
		return false;
	*out = q->q[q->head];
	q->head = (q->head + 1) % q->cap;
	q->n--;
	return true;
}

static void notify(void)
{
	uint64_t one = 1;
	if (write(G.efd, &one, sizeof one) < 0) {
		/* the counter cannot overflow in practice; a failed write changes nothing */
	}
}

/* ---- easy handles ------------------------------------------------------------------------- */
static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
	struct slot *s = ud;
	size_t len = size * n;
	char line[512];
	size_t k = len < sizeof line - 1 ? len : sizeof line - 1;
	memcpy(line, p, k);
	line[k] = 0;
	while (k && (line[k - 1] == '\r' || line[k - 1] == '\n' || line[k - 1] == ' '))
		line[--k] = 0;
	if (!strncasecmp(line, "HTTP/", 5)) {   /* a new response (after a redirect): start over */
		s->crange[0] = s->etag[0] = 0;
		return len;
	}
	char *colon = strchr(line, ':');
	if (!colon)
		return len;
	*colon = 0;
	char *v = colon + 1;
	while (*v == ' ' || *v == '\t')
		v++;
	if (!strcasecmp(line, "content-range"))
		snprintf(s->crange, sizeof s->crange, "%s", v);
	else if (!strcasecmp(line, "etag"))
		snprintf(s->etag, sizeof s->etag, "%s", v);
	return len;
}

/* Chunk bodies go straight into the cache's data file (not yet marked present). */
static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
	struct slot *s = ud;
	size_t len = size * n;
	long code = 0;
	curl_easy_getinfo(s->h, CURLINFO_RESPONSE_CODE, &code);
	if (code != 206) {
		s->not206 = true;   /* never write a whole object (200) or an error page */
		return 0;
	}
	if (s->got + len > s->want) {
		s->overflow = true;
		return 0;
	}
	for (size_t done = 0; done < len;) {
		ssize_t w = pwrite(s->R->e.datafd, p + done, len - done, (off_t)(s->off + s->got + done));
		if (w < 0) {
			if (errno == EINTR)
				continue;
			s->wr_err = errno;
			return 0;
		}
		done += (size_t)w;
	}
	s->got += len;
	return len;
}

static void set_common(CURL *h, long long left_ms)
{
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
	curl_easy_setopt(h, CURLOPT_MAXREDIRS, 5L);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_USERAGENT, "stereo-uffd/" STEREO_VERSION);
	curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
	curl_easy_setopt(h, CURLOPT_PIPEWAIT, 1L);
	curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(h, CURLOPT_BUFFERSIZE, 512L * 1024);   /* fewer, larger writes into the cache */
	if (G.o.cacert)
		curl_easy_setopt(h, CURLOPT_CAINFO, G.o.cacert);
	if (left_ms < 1)
		left_ms = 1;
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)left_ms);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)(left_ms < 10000 ? left_ms : 10000));
	/* a stalled transfer (no byte for a while) is abandoned and retried */
	long stall = G.o.timeout_ms / 4000;
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, stall < 1 ? 1L : stall > 10 ? 10L : stall);
}

static bool retryable_curl(CURLcode rc)
{
	switch (rc) {
	case CURLE_COULDNT_CONNECT: case CURLE_COULDNT_RESOLVE_HOST: case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR: case CURLE_PARTIAL_FILE: case CURLE_OPERATION_TIMEDOUT:
	case CURLE_GOT_NOTHING: case CURLE_HTTP2: case CURLE_HTTP2_STREAM:
	case CURLE_SSL_CONNECT_ERROR:
		return true;
	default:
		return false;
	}
}

static bool retryable_status(long code)
{
	return code >= 500 || code == 429 || code == 408;
}

/* ---- synchronous requests (header, probe) ----------------------------------------------------- */
struct sink {
	CURL *h;
	struct buf *b;
	size_t max;
	bool overflow;
};

static size_t on_sync_body(char *p, size_t size, size_t n, void *ud)
{
	struct sink *k = ud;
	size_t len = size * n;
	long code = 0;
	curl_easy_getinfo(k->h, CURLINFO_RESPONSE_CODE, &code);
	if (code < 200 || code > 299)
		return len;   /* an error page: only its status matters */
	if (k->b->len + len > k->max) {
		k->overflow = true;
		return 0;
	}
	buf_append(k->b, p, len);
	return len;
}

/* GET url (range "0-0" or NULL) with retries; *code the final status. */
static int sync_get(const char *url, const char *range, size_t max, struct buf *body, long *code,
		    struct slot *hdr, char *err)
{
	char *pub = url_public(url);
	long long t0 = mono_ms();
	int r = -1;
	for (int attempt = 0;; attempt++) {
		CURL *h = G.sync;
		curl_easy_reset(h);
		set_common(h, G.o.timeout_ms - (mono_ms() - t0));
		curl_easy_setopt(h, CURLOPT_URL, url);
		if (range)
			curl_easy_setopt(h, CURLOPT_RANGE, range);
		struct sink k = {h, body, max, false};
		body->len = 0;
		memset(hdr, 0, sizeof *hdr);
		curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_sync_body);
		curl_easy_setopt(h, CURLOPT_WRITEDATA, &k);
		curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
		curl_easy_setopt(h, CURLOPT_HEADERDATA, hdr);
		CURLcode rc = curl_easy_perform(h);
		*code = 0;
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, code);
		if (k.overflow) {
			errf(err, "%s: larger than %zu bytes", pub, max);
			break;
		}
		bool again = false;
		if (rc != CURLE_OK) {
			errf(err, "%s: %s", pub, curl_easy_strerror(rc));
			again = retryable_curl(rc);
		} else if (retryable_status(*code)) {
			errf(err, "%s: HTTP %ld", pub, *code);
			again = true;
		} else {
			r = 0;
			break;
		}
		long long wait = (long long)BACKOFF_MIN_MS << (attempt < 6 ? attempt : 6);
		if (wait > BACKOFF_MAX_MS)
			wait = BACKOFF_MAX_MS;
		if (!again || mono_ms() - t0 + wait >= G.o.timeout_ms)
			break;
		poll(NULL, 0, (int)wait);
	}
	free(pub);
	return r;
}

int remote_get(const char *url, size_t max, struct buf *out, char *err)
{
	long code;
	struct slot hdr;
	if (sync_get(url, NULL, max, out, &code, &hdr, err))
		return -1;
	char *pub = url_public(url);
	int r = 0;
	if (code == 404)
		r = -ENOENT, errf(err, "%s: not found (HTTP 404)", pub);
	else if (code != 200)
		r = -1, errf(err, "%s: HTTP %ld", pub, code);
	free(pub);
	return r;
}

/* ---- the fetcher thread ---------------------------------------------------------------------- */
static void chunk_failed(struct slot *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void chunk_failed(struct slot *s, const char *fmt, ...)
{
	char why[ERRBUF];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof why, fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&G.mu);
	snprintf(s->R->fail, sizeof s->R->fail, "%.120s: chunk %llu (bytes %llu-%llu): %.200s", s->R->pub,
		 (unsigned long long)s->c, (unsigned long long)s->off,
		 (unsigned long long)(s->off + s->want - 1), why);
	if (!G.failed) {
		G.failed = true;
		snprintf(G.fail, sizeof G.fail, "%s", s->R->fail);
	}
	s->R->st[s->c] = CH_FAILED;   /* whoever needs it fails closed; nobody retries it */
	pthread_mutex_unlock(&G.mu);
	s->state = SLOT_FREE;
	notify();
}

static void chunk_done(struct slot *s)
{
	pthread_mutex_lock(&G.mu);
	s->R->st[s->c] = CH_DONE;
	pthread_mutex_unlock(&G.mu);
	s->state = SLOT_FREE;
	notify();
}

/* Another try later, or the end of the budget. */
static void chunk_retry(struct slot *s)
{
	long long now = mono_ms();
	long long wait = (long long)BACKOFF_MIN_MS << (s->attempts < 6 ? s->attempts : 6);
	if (wait > BACKOFF_MAX_MS)
		wait = BACKOFF_MAX_MS;
	if (now - s->first_ms + wait >= G.o.timeout_ms) {
		chunk_failed(s, "still missing after %lld ms and %d attempts: %s", now - s->first_ms,
			     s->attempts, s->last);
		return;
	}
	s->state = SLOT_BACKOFF;
	s->next_ms = now + wait;
}

/* Start (or restart) the slot's chunk: already there, being fetched by another server, or
 * ours to download. */
static void chunk_start(struct slot *s)
{
	struct rlayer *R = s->R;
	if (cache_present(&R->e, s->c)) {
		chunk_done(s);
		return;
	}
	int r = cache_lock_chunk(&R->e, s->c);
	if (r < 0) {
		chunk_failed(s, "locking the cache: %s", strerror(-r));
		return;
	}
	if (r == 1) {   /* another server downloads it: wait for its presence byte */
		if (mono_ms() - s->first_ms >= G.o.timeout_ms) {
			chunk_failed(s, "still being fetched by another server after %lld ms", G.o.timeout_ms);
			return;
		}
		s->state = SLOT_OTHER;
		s->next_ms = mono_ms() + WAIT_OTHER_MS;
		return;
	}
	if (cache_present(&R->e, s->c)) {   /* finished between our look and the lock */
		cache_unlock_chunk(&R->e, s->c);
		chunk_done(s);
		return;
	}
	char range[64];
	snprintf(range, sizeof range, "%llu-%llu", (unsigned long long)s->off,
		 (unsigned long long)(s->off + s->want - 1));
	CURL *h = s->h;
	curl_easy_reset(h);
	set_common(h, G.o.timeout_ms - (mono_ms() - s->first_ms));
	curl_easy_setopt(h, CURLOPT_URL, R->url);
	curl_easy_setopt(h, CURLOPT_RANGE, range);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, s);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, s);
	curl_easy_setopt(h, CURLOPT_PRIVATE, s);
	s->got = 0;
	s->wr_err = 0;
	s->overflow = s->not206 = false;
	s->crange[0] = s->etag[0] = 0;
	s->attempts++;
	s->state = SLOT_ACTIVE;
	curl_multi_add_handle(G.multi, h);
}

/* A transfer ended: check everything about the response before the chunk counts. */
static void chunk_finished(struct slot *s, CURLcode rc)
{
	struct rlayer *R = s->R;
	long code = 0;
	curl_easy_getinfo(s->h, CURLINFO_RESPONSE_CODE, &code);
	curl_multi_remove_handle(G.multi, s->h);
	char want_cr[128];
	snprintf(want_cr, sizeof want_cr, "bytes %llu-%llu/%llu", (unsigned long long)s->off,
		 (unsigned long long)(s->off + s->want - 1), (unsigned long long)R->size);
	const char *fatal = NULL;
	char why[ERRBUF];
	if (s->wr_err) {
		snprintf(why, sizeof why, "writing the cache: %s", strerror(s->wr_err));
		fatal = why;
	} else if (s->overflow) {
		fatal = "the body is longer than the range asked for";
	} else if (rc != CURLE_OK && !s->not206 && !retryable_curl(rc)) {
		snprintf(why, sizeof why, "%s", curl_easy_strerror(rc));
		fatal = why;
	} else if (rc != CURLE_OK && !s->not206) {
		snprintf(s->last, sizeof s->last, "%s", curl_easy_strerror(rc));
	} else if (retryable_status(code)) {
		snprintf(s->last, sizeof s->last, "HTTP %ld", code);
	} else if (code != 206) {
		snprintf(why, sizeof why, code == 200 ? "the server answered 200 (the whole object), not 206"
				: "the server answered HTTP %ld, not 206", code);
		fatal = why;
	} else if (strcmp(s->crange, want_cr)) {
		unsigned long long a, b, t;
		if (sscanf(s->crange, "bytes %llu-%llu/%llu", &a, &b, &t) == 3 && a == s->off &&
		    b == s->off + s->want - 1 && t != R->size)
			snprintf(why, sizeof why, "the object changed: it is now %llu bytes, was %llu", t,
				 (unsigned long long)R->size);
		else
			snprintf(why, sizeof why, "wrong Content-Range '%.80s' (expected '%.80s')", s->crange, want_cr);
		fatal = why;
	} else if (R->etag[0] && strcmp(s->etag, R->etag)) {
		snprintf(why, sizeof why, "the object changed: ETag %.80s, was %.80s", s->etag[0] ? s->etag : "(none)",
			 R->etag);
		fatal = why;
	} else if (s->got != s->want) {
		snprintf(s->last, sizeof s->last, "short body: %llu of %llu bytes",
			 (unsigned long long)s->got, (unsigned long long)s->want);
	} else {
		char e[ERRBUF];
		if (cache_commit_chunk(&R->e, s->c, e)) {
			cache_unlock_chunk(&R->e, s->c);
			chunk_failed(s, "%s", e);
			return;
		}
		cache_unlock_chunk(&R->e, s->c);
		chunk_done(s);
		return;
	}
	cache_unlock_chunk(&R->e, s->c);
	if (fatal)
		chunk_failed(s, "%s", fatal);
	else
		chunk_retry(s);
}

static bool next_request(struct req *rq)
{
	pthread_mutex_lock(&G.mu);
	bool got = false;
	while (!got && (q_pop(&G.urgent, rq) || q_pop(&G.bg, rq))) {
		if (rq->R->st[rq->c] == CH_QUEUED || rq->R->st[rq->c] == CH_URGENT) {
			rq->R->st[rq->c] = CH_ACTIVE;
			got = true;
		}
	}
	pthread_mutex_unlock(&G.mu);
	return got;
}

static void *fetcher(void *arg)
{
	(void)arg;
	for (;;) {
		pthread_mutex_lock(&G.mu);
		bool stop = G.stop;
		pthread_mutex_unlock(&G.mu);
		if (stop)
			break;
		long long now = mono_ms();
		for (int i = 0; i < G.o.concurrency; i++) {
			struct slot *s = &G.slots[i];
			if (s->state == SLOT_FREE) {
				struct req rq;
				if (!next_request(&rq))
					continue;
				s->R = rq.R;
				s->c = rq.c;
				s->off = rq.c * G.o.chunk;
				s->want = rq.R->size - s->off < G.o.chunk ? rq.R->size - s->off : G.o.chunk;
				s->attempts = 0;
				s->first_ms = now;
				s->last[0] = 0;
				chunk_start(s);
			} else if ((s->state == SLOT_BACKOFF || s->state == SLOT_OTHER) && now >= s->next_ms) {
				chunk_start(s);
			}
		}
		int running;
		curl_multi_perform(G.multi, &running);
		CURLMsg *m;
		int left;
		while ((m = curl_multi_info_read(G.multi, &left))) {
			if (m->msg != CURLMSG_DONE)
				continue;
			struct slot *s = NULL;
			curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&s);
			chunk_finished(s, m->data.result);
		}
		long long timeout = 1000;
		now = mono_ms();
		bool free_slot = false;
		for (int i = 0; i < G.o.concurrency; i++) {
			struct slot *s = &G.slots[i];
			if (s->state == SLOT_BACKOFF || s->state == SLOT_OTHER)
				timeout = s->next_ms - now < timeout ? s->next_ms - now : timeout;
			free_slot |= s->state == SLOT_FREE;
		}
		pthread_mutex_lock(&G.mu);
		if (free_slot && (G.urgent.n || G.bg.n))
			timeout = 0;
		pthread_mutex_unlock(&G.mu);
		if (timeout < 0)
			timeout = 0;
		curl_multi_poll(G.multi, NULL, 0, (int)timeout, NULL);
	}
	return NULL;
}

/* ---- the public side ---------------------------------------------------------------------- */
int remote_init(const struct remote_opts *o, char *err)
{
	if (G.inited)
		return 0;
	G.o = *o;
	if (curl_global_init(CURL_GLOBAL_DEFAULT))
		return errf(err, "curl_global_init failed");
	G.multi = curl_multi_init();
	G.sync = curl_easy_init();
	G.efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (!G.multi || !G.sync || G.efd < 0)
		return errf(err, "initialising libcurl: out of memory");
	curl_multi_setopt(G.multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)o->concurrency);
	G.slots = xcalloc((size_t)o->concurrency, sizeof *G.slots);
	for (int i = 0; i < o->concurrency; i++)
		if (!(G.slots[i].h = curl_easy_init()))
			return errf(err, "initialising libcurl: out of memory");
	G.inited = true;
	return 0;
}

void remote_shutdown(void)
{
	if (!G.inited)
		return;
	if (G.started) {
		pthread_mutex_lock(&G.mu);
		G.stop = true;
		pthread_mutex_unlock(&G.mu);
		curl_multi_wakeup(G.multi);
		pthread_join(G.th, NULL);
	}
	for (int i = 0; i < G.o.concurrency; i++) {
		if (G.slots[i].state == SLOT_ACTIVE)
			curl_multi_remove_handle(G.multi, G.slots[i].h);
		curl_easy_cleanup(G.slots[i].h);
	}
	free(G.slots);
	curl_easy_cleanup(G.sync);
	curl_multi_cleanup(G.multi);
	curl_global_cleanup();
	free(G.urgent.q);
	free(G.bg.q);
	close(G.efd);
	memset(&G.urgent, 0, sizeof G.urgent);
	memset(&G.bg, 0, sizeof G.bg);
	G.inited = G.started = G.stop = false;
}

int remote_open(const char *url, struct rlayer **out, char *err)
{
	if (!G.inited)
		return errf(err, "%s: remote layers are not initialised", url);
	struct buf body = {0};
	long code;
	struct slot hdr;
	int r = sync_get(url, "0-0", 1, &body, &code, &hdr, err);
	buf_free(&body);
	if (r)
		return -1;
	char *pub = url_public(url);
	unsigned long long a, b, t;
	if (code == 404) {
		errf(err, "%s: not found (HTTP 404)", pub);
		free(pub);
		return -ENOENT;
	}
	if (code != 206 || sscanf(hdr.crange, "bytes %llu-%llu/%llu", &a, &b, &t) != 3 || a || b || !t) {
		if (code == 200)
			errf(err, "%s: the server does not answer Range requests (200, not 206)", pub);
		else if (code != 206)
			errf(err, "%s: HTTP %ld", pub, code);
		else
			errf(err, "%s: bad Content-Range '%s' for bytes 0-0", pub, hdr.crange);
		free(pub);
		return -1;
	}
	struct rlayer *R = xcalloc(1, sizeof *R);
	R->url = xstrdup(url);
	R->pub = pub;
	R->etag = xstrdup(hdr.etag);
	R->size = t;
	R->e.datafd = R->e.mapfd = R->e.lockfd = -1;
	struct buf key = {0};
	buf_printf(&key, "url %.*s\nsize %llu\netag %s\nchunk %llu\n", (int)strcspn(url, "?"), url, t,
		   R->etag, (unsigned long long)G.o.chunk);
	r = cache_open(G.o.cache_dir, buf_cstr(&key), R->size, G.o.chunk, G.o.cache_max, &R->e, err);
	buf_free(&key);
	if (r) {
		remote_close(R);
		return -1;
	}
	void *p = mmap(NULL, R->size, PROT_READ, MAP_SHARED, R->e.datafd, 0);
	if (p == MAP_FAILED) {
		errf(err, "mapping %s/data: %s", R->e.dir, strerror(errno));
		remote_close(R);
		return -1;
	}
	R->map = p;
	R->st = xcalloc(R->e.nchunks, 1);
	if (!G.started) {
		/* every signal stays with the main thread (serve's signalfd): the fetcher blocks all */
		sigset_t all, old;
		sigfillset(&all);
		pthread_sigmask(SIG_SETMASK, &all, &old);
		int e = pthread_create(&G.th, NULL, fetcher, NULL);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		if (e) {
			errf(err, "starting the fetcher thread: %s", strerror(e));
			remote_close(R);
			return -1;
		}
		G.started = true;
	}
	*out = R;
	return 0;
}

uint64_t remote_size(const struct rlayer *R) { return R->size; }
const uint8_t *remote_map(const struct rlayer *R) { return R->map; }
int remote_fd(const struct rlayer *R) { return R->e.datafd; }
const char *remote_url(const struct rlayer *R) { return R->pub; }

/* Only after remote_shutdown (or before the fetcher ever saw the layer). */
void remote_close(struct rlayer *R)
{
	if (!R)
		return;
	if (R->map)
		munmap((void *)R->map, R->size);
	cache_close(&R->e);
	if (R->url)   /* a pre-signed URL's query string is a credential */
		explicit_bzero(R->url, strlen(R->url));
	free(R->url);
	free(R->pub);
	free(R->etag);
	free(R->st);
	free(R);
}

/* 0: all present; 1: queued (or on the way); -1: a chunk of it failed (err) */
static int queue_range(struct rlayer *R, uint64_t off, uint64_t len, bool urgent, bool check, char *err)
{
	uint64_t c0 = off / G.o.chunk, c1 = (off + len - 1) / G.o.chunk;
	if (check) {
		bool all = true;
		for (uint64_t c = c0; c <= c1 && all; c++)
			all = cache_present(&R->e, c);
		if (all)
			return 0;
	}
	bool queued = false;
	int r = 1;
	pthread_mutex_lock(&G.mu);
	for (uint64_t c = c0; c <= c1; c++) {
		uint8_t st = R->st[c];
		if (st == CH_FAILED && !cache_present(&R->e, c)) {
			if (err)
				errf(err, "fetching %s", R->fail);
			r = -1;
			break;
		}
		if (cache_present(&R->e, c) || st == CH_ACTIVE || st == CH_DONE || st == CH_URGENT)
			continue;
		if (st == CH_IDLE || urgent) {   /* a background chunk a vCPU now waits for jumps the line */
			q_push(urgent ? &G.urgent : &G.bg, R, c);
			R->st[c] = urgent ? CH_URGENT : CH_QUEUED;
			queued = true;
		}
	}
	pthread_mutex_unlock(&G.mu);
	if (queued)
		curl_multi_wakeup(G.multi);
	return r;
}

int remote_avail(struct rlayer *R, uint64_t off, uint64_t len, bool urgent, char *err)
{
	return len == 0 ? 0 : queue_range(R, off, len, urgent, true, err);
}

bool remote_present(const struct rlayer *R, uint64_t off, uint64_t len)
{
	for (uint64_t c = off / G.o.chunk; len && c <= (off + len - 1) / G.o.chunk; c++)
		if (!cache_present(&R->e, c))
			return false;
	return true;
}

void remote_prefetch(struct rlayer *R, uint64_t off, uint64_t len)
{
	if (len)
		queue_range(R, off, len, false, false, NULL);
}

int remote_eventfd(void)
{
	return G.efd;
}

int remote_poll(char *err)
{
	uint64_t v;
	if (read(G.efd, &v, sizeof v) < 0) {
		/* nothing new */
	}
	pthread_mutex_lock(&G.mu);
	int r = G.failed ? errf(err, "%s", G.fail) : 0;
	pthread_mutex_unlock(&G.mu);
	return r;
}

int remote_wait(struct rlayer *R, uint64_t off, uint64_t len, char *err)
{
	int r;
	while ((r = remote_avail(R, off, len, false, err)) == 1) {
		struct pollfd p = {.fd = G.efd, .events = POLLIN};
		poll(&p, 1, 1000);
		if (remote_poll(err))
			return -1;
	}
	return r;
}
#endif
