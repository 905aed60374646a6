/* unit.c - drives common/ from bats: each subcommand exercises one module on stdin/argv and
 * prints a result a test can compare. Not part of the stereo binary. */
#include "common/stereo.h"
#include "common/peer.h"
#include <arpa/inet.h>
#include "common/conn.h"
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>


/* static: still reachable at exit, so early returns are not leaks */
static struct buf in, out;

static void slurp(struct buf *b)
{
	char tmp[65536];
	ssize_t n;
	while ((n = read(0, tmp, sizeof tmp)) > 0)
		buf_append(b, tmp, n);
}

static void print_escaped(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = s[i];
		if (c >= 0x20 && c < 0x7f && c != '\\')
			putchar(c);
		else
			printf("\\x%02x", c);
	}
	putchar('\n');
}

static void echo_handler(struct http_conn *c, const struct http_msg *req, const char *body,
			 size_t len, void *ctx)
{
	struct buf b = {0};
	struct jw w;
	jw_init(&w, &b);
	jw_obj(&w);
	jw_key(&w, "method");
	jw_strn(&w, req->method, req->method_len);
	jw_key(&w, "path");
	jw_strn(&w, req->target, req->target_len);
	jw_key(&w, "body");
	jw_strn(&w, body, len);
	jw_obj_end(&w);
	if (req->target_len == 5 && !memcmp(req->target, "/stop", 5))
		loop_stop(ctx);
	http_reply_json(c, 200, &b);
	buf_free(&b);
}

struct tctx {
	int id;
	int *order, *n;
};

static void fire(struct loop *lp, void *ctx)
{
	struct tctx *c = ctx;
	c->order[(*c->n)++] = c->id;
	if (*c->n == 3)
		loop_stop(lp);
}

static void stop_on_signal(struct loop *l, const struct signalfd_siginfo *si, void *ctx)
{
	loop_stop(l);
}

int main(int argc, char **argv)
{
	prog = "unit";
	char err[ERRBUF] = "";
	if (argc < 2)
		return 2;
	const char *cmd = argv[1];
	if (!strcmp(cmd, "json-parse")) {           /* stdin -> "ok" / "error: ..." */
		slurp(&in);
		struct json j;
		if (json_parse(&j, in.p ? in.p : "", in.len, argc > 2, err)) {
			printf("error: %s\n", err);
			return 1;
		}
		printf("ok %d tokens\n", j.ntok);
		json_free(&j);
	} else if (!strcmp(cmd, "json-str")) {      /* stdin {"s":...} -> unescaped bytes */
		slurp(&in);
		struct json j;
		if (json_parse(&j, in.p ? in.p : "", in.len, true, err)) {
			printf("error: %s\n", err);
			return 1;
		}
		int flags = argc > 2 && !strcmp(argv[2], "name") ? JSON_STR_NO_NUL : 0;
		int rc = json_str(&j, json_get(&j, 0, "s"), &out, flags, err);
		json_free(&j);
		if (rc) {
			printf("error: %s\n", err);
			return 1;
		}
		print_escaped(out.p ? out.p : "", out.len);
	} else if (!strcmp(cmd, "json-quote")) {    /* stdin raw -> quoted JSON */
		slurp(&in);
		json_quote(&out, in.p ? in.p : "", in.len);
		printf("%s\n", out.p);
		if (json_validate(out.p, out.len, err))
			return printf("invalid: %s\n", err), 1;
	} else if (!strcmp(cmd, "json-get")) {      /* stdin, KEY TYPE -> value */
		slurp(&in);
		struct json j;
		if (json_parse(&j, in.p ? in.p : "", in.len, true, err))
			return printf("error: %s\n", err), 1;
		int i = json_get(&j, 0, argv[2]);
		uint64_t u;
		int64_t s;
		bool b;
		int rc = 0;
		if (i < 0)
			printf("missing\n"), rc = 1;
		else if (!strcmp(argv[3], "u64"))
			rc = json_u64(&j, i, &u) ? (printf("bad\n"), 1) : (printf("%llu\n", (unsigned long long)u), 0);
		else if (!strcmp(argv[3], "i64"))
			rc = json_i64(&j, i, &s) ? (printf("bad\n"), 1) : (printf("%lld\n", (long long)s), 0);
		else if (!strcmp(argv[3], "bool"))
			rc = json_bool(&j, i, &b) ? (printf("bad\n"), 1) : (printf("%s\n", b ? "true" : "false"), 0);
		json_free(&j);
		return rc;
	} else if (!strcmp(cmd, "peer-cid")) {      /* ALLOWLIST|- CID...: allowed/refused per CID */
		struct peer_rules pr = {0};
		if (strcmp(argv[2], "-") && peer_parse_cids(&pr, argv[2], err))
			return printf("error: %s\n", err), 1;
		for (int k = 3; k < argc; k++)
			printf("%s %s\n", argv[k], peer_cid_allowed(&pr, (unsigned)strtoul(argv[k], NULL, 10))
			       ? "allowed" : "refused");
	} else if (!strcmp(cmd, "peer-tcp")) {      /* CIDRS|- LOCAL(0|1) ADDR...: the TCP check */
		struct peer_rules pr = {.allow_local = argv[3][0] == '1'};
		if (strcmp(argv[2], "-") && peer_parse_cidrs(&pr, argv[2], err))
			return printf("error: %s\n", err), 1;
		for (int k = 4; k < argc; k++) {
			struct sockaddr_storage ss = {0};
			struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
			struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
			if (inet_pton(AF_INET, argv[k], &s4->sin_addr) == 1)
				s4->sin_family = AF_INET;
			else if (inet_pton(AF_INET6, argv[k], &s6->sin6_addr) == 1)
				s6->sin6_family = AF_INET6;
			else
				return printf("bad address %s\n", argv[k]), 1;
			printf("%s %s\n", argv[k], peer_allowed(&pr, "unit", (struct sockaddr *)&ss, sizeof ss)
			       ? "allowed" : "refused");
		}
	} else if (!strcmp(cmd, "log-kv")) {        /* VALUE: how log.c writes name=VALUE */
		log_info("unit", "name=%s quoted=\"%s\" pair=\"%s: %s\" n=%d", argv[2], argv[2], "x y",
			 argv[2], 7);
	} else if (!strcmp(cmd, "ndjson")) {        /* stdin, CAP -> one line per frame */
		struct ndjson n;
		ndjson_init(&n, strtoul(argv[2], NULL, 0));
		size_t maxheld = 0;
		for (;;) {
			ssize_t r = ndjson_fill(&n, 0);
			if (n.in.cap > maxheld)
				maxheld = n.in.cap;
			char *line;
			size_t len;
			int k;
			while ((k = ndjson_line(&n, &line, &len)) == 1)
				printf("line %zu\n", len);
			if (k < 0 || r == -EMSGSIZE) {
				printf("too long (held at most %zu bytes)\n", maxheld);
				break;
			}
			if (r <= 0) {
				printf("eof pending=%zu held=%zu\n", ndjson_pending(&n), maxheld);
				break;
			}
		}
		ndjson_free(&n);
	} else if (!strcmp(cmd, "atomic-write")) {  /* PATH MODE < data */
		slurp(&in);
		int rc = atomic_write(argv[2], in.p ? in.p : "", in.len, strtoul(argv[3], NULL, 8), -1, -1);
		if (rc) {
			printf("error: %s\n", strerror(-rc));
			return 1;
		}
	} else if (!strcmp(cmd, "open-beneath")) {  /* DIR REL: create REL for writing */
		int dfd = open(argv[2], O_RDONLY | O_DIRECTORY);
		int fd = open_beneath(dfd, argv[3], O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (fd < 0) {
			printf("error: %s\n", strerror(-fd));
			return 1;
		}
		printf("ok\n");
		close(fd);
		close(dfd);
	} else if (!strcmp(cmd, "valid-name")) {
		int rc = valid_file_name(argv[2], strlen(argv[2]), err);
		printf("%s\n", rc ? err : "ok");
		return rc ? 1 : 0;
	} else if (!strcmp(cmd, "path-clean")) {
		char p[4096];
		if (path_clean(argv[2], strlen(argv[2]), p, sizeof p, err))
			return printf("error: %s\n", err), 1;
		printf("%s\n", p);
	} else if (!strcmp(cmd, "http-parse")) {    /* stdin -> parse result */
		slurp(&in);
		struct http_msg m;
		int r = http_parse_request(in.p ? in.p : "", in.len, &m);
		if (r < 0)
			return printf("%s\n", r == HTTP_PARTIAL ? "partial" : r == HTTP_BAD ? "bad" : "too large"), 1;
		printf("method=%.*s target=%.*s minor=%d headers=%zu cl=%lld keepalive=%d head=%d\n",
		       (int)m.method_len, m.method, (int)m.target_len, m.target, m.minor, m.nh,
		       m.content_length, m.keep_alive, r);
	} else if (!strcmp(cmd, "http-serve")) {    /* SOCK READYFILE: echo server on the loop */
		struct loop *l = loop_new();
		int lfd = sock_listen_unix(argv[2], 0600, -1, err);
		if (lfd < 0)
			return printf("error: %s\n", err), 1;
		struct conn_pool *pool = conn_pool_new(l, 64 << 20, 64 << 20);
		struct http_server *srv = http_server_new(pool, lfd, NULL, echo_handler, l);
		int sigs[] = {SIGTERM, SIGINT};
		loop_signals(l, sigs, 2, stop_on_signal, NULL);
		FILE *f = fopen(argv[3], "w");
		fputs("ready\n", f);
		fclose(f);
		loop_run(l);
		http_server_free(srv);   /* closes lfd */
		conn_pool_free(pool);
		loop_free(l);
	} else if (!strcmp(cmd, "http-call")) {     /* SOCK METHOD PATH [BODY] */
		int status = 0;
		const char *body = argc > 5 ? argv[5] : NULL;
		int rc = http_call(argv[2], argv[3], argv[4], body, body ? strlen(body) : 0, 2000,
				   &status, &out, err);
		if (rc)
			return printf("error %d: %s\n", rc, err), rc == HTTPC_TIMEOUT ? 3 : 1;
		printf("%d %s\n", status, out.p ? out.p : "");
	} else if (!strcmp(cmd, "loop-timers")) {   /* timers fire in deadline order; cancel works */
		struct loop *l = loop_new();
		static int order[8], n;
		struct tctx t[4];
		int64_t start = now_ms();
		for (int i = 0; i < 4; i++)
			t[i] = (struct tctx){i, order, &n};
		loop_timer(l, 60, fire, &t[0]);
		loop_timer(l, 20, fire, &t[1]);
		uint64_t c = loop_timer(l, 10, fire, &t[2]);
		loop_timer(l, 40, fire, &t[3]);
		loop_timer_cancel(l, c);
		loop_run(l);
		printf("order %d %d %d elapsed>=60:%d\n", order[0], order[1], order[2], now_ms() - start >= 60);
		loop_free(l);
	} else if (!strcmp(cmd, "duration")) {
		long long ms;
		if (parse_duration_ms(argv[2], &ms))
			return printf("bad\n"), 1;
		printf("%lld\n", ms);
	} else {
		fprintf(stderr, "unit: unknown command %s\n", cmd);
		return 2;
	}
	buf_free(&in);
	buf_free(&out);
	return 0;
}
