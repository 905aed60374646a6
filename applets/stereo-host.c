/* stereo-host.c - the host-side client of stereod: one NDJSON request per subcommand over
 * AF_VSOCK, TCP or hybrid vsock (common/hostaddr.c), replies matched by "id" when the daemon
 * supports it, lifecycle pushes skipped (or printed, by `events`). Mirrors the Go host client
 * (seed 001) on the wire.
 *
 * Spec: docs/protocol.md, docs/clis.md; exit codes in README.md "Conventions"
 */
/*
APPLET(stereo-host)

config STEREO_HOST
	bool "stereo-host: host-side client for stereod (vsock, TCP or hybrid vsock)"
	default y
	help
	  usage: stereo-host [--tcp HOST:PORT | --vsock CID[:PORT] | --uds PATH[:PORT]] [--timeout DUR]
	                     [--connect-timeout DUR] [--json] [--no-id] COMMAND [ARGS]

	  Talk to stereod inside a guest over its NDJSON control plane.

	  Commands:
	    ping                         round trip; prints the time taken
	    health [--json]              state, uptime and agents
	    wait-ready [--interval 500ms] [--timeout 60s]
	                                 poll until ready or healthy; fails on shutdown
	    set-config FILE|-            send jcard.toml content
	    secret set NAME [--mode 0600] [--from-file F | --from-env VAR]
	                                 inject a secret; the value comes from F, from
	                                 the variable VAR or from stdin, never argv
	    ssh-key add USER KEYFILE|-   install an authorized key for USER
	    mount TAG GUEST_PATH --type virtiofs|9p [--ro]
	    shutdown [REASON]            ask the guest to power off
	    events [--count N]           subscribe; print each lifecycle push as a
	                                 JSON line until interrupted (or N pushes)
	    hello                        protocol version and capabilities
	    snapshot-prepare [--freeze PATH]... [--drop-caches] [--thaw-after DUR]
	                                 sync, run freeze hooks, FIFREEZE the PATHs,
	                                 drop caches; thawed after DUR (30s) at the latest
	    snapshot-abort               thaw now
	    restored [--generation N] [--hostname H] [--machine-id ID] [--network F|-]
	                                 after a restore: send this host's time and 64
	                                 random bytes (and the rest), print each step
	    metrics [--json]             cpu, memory, disk, load, pressure, generation
	    metadata ping                microvm-runtime's guest metadata listener
	                                 (vsock/--uds port 5555 unless one is given)
	    metadata set-env K=V...      set variables in the guest's env file; K=
	                                 deletes K; other keys are left as they are
	    metadata set-secret NAME [--from-file F | --from-env VAR]
	                                 write a secret (any bytes; from F, VAR or
	                                 stdin, never argv; base64 on the wire)

	  Address: --tcp HOST:PORT, --vsock CID[:PORT] (CID 3, port 1024 by default),
	  --uds PATH[:PORT] (hybrid vsock: the Unix socket Firecracker or Cloud
	  Hypervisor expose for the guest's vsock device, port 1024 by default; the
	  VMM must answer "CONNECT PORT" with "OK ..." within 2s), or
	  STEREO_HOST_ADDR (vsock://3:1024, tcp://127.0.0.1:1024,
	  unix:///run/vm/v.sock:1024). --show-addr prints the address that would be
	  used and exits.

	  --timeout DUR          per request (default 10s); after wait-ready it is the
	                         overall deadline (default 60s), and each wait-ready
	                         attempt waits at most max(1s, 2 x --interval)
	  --connect-timeout DUR  default 10s
	  --json                 machine-readable output; failures print
	                         {"ok":false,"error":...} on stdout too
	  --no-id                skip the hello and send requests exactly as the
	                         upstream Go client does

	  Exit codes: 0 ok, 1 the guest said no (its error is printed), 2 usage,
	  3 cannot connect, connection lost or timed out.
*/
#include "common/stereo.h"
#include "applets/cli.h"
#include "common/hostaddr.h"
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_TIMEOUT_MS 10000
#define WAIT_READY_TIMEOUT_MS 60000
#define WAIT_READY_INTERVAL_MS 500
#define MAX_INPUT (NDJSON_MAX_LINE - 4096)   /* leaves room for the envelope */
#define MAX_KEY 16384

/* ---- options ---------------------------------------------------------------------------- */
enum {
	OPT_TCP = 0x100, OPT_VSOCK, OPT_UDS, OPT_TIMEOUT, OPT_CONNECT_TIMEOUT, OPT_NO_ID, OPT_SHOW_ADDR,
};

struct opts {
	/* global */
	struct hostaddr addr;
	int timeout_ms, connect_timeout_ms;
	bool json, no_id, show_addr;
	/* per command */
	long long wait_ms, interval_ms;
	long long mode;
	const char *from_file, *from_env, *fs_type;
	bool ro;
	long long count;
	const char *freeze[16];      /* snapshot-prepare */
	int nfreeze;
	bool drop_caches;
	long long thaw_after_ms, generation;
	const char *hostname, *machine_id, *network;
};

static struct opts o;

/* ---- addresses (common/hostaddr.c) ---------------------------------------------------- */
static void addr_str(char *out, size_t n)
{
	hostaddr_str(&o.addr, out, n);
}

static int host_fail(int code, const char *cmd, const char *msg)
{
	return cli_fail(o.json, code, cmd, msg);
}

/* ---- the wire form ------------------------------------------------------------------ */
static void kq(struct buf *b, const char *key, const char *v, size_t n, bool first)
{
	buf_printf(b, "%s\"%s\":", first ? "" : ",", key);
	json_quote(b, v, n);
}

/* ---- the connection ------------------------------------------------------------------- */
/* One reply line, parsed; the struct json borrows line. */
struct reply {
	struct buf line;
	struct json j;
	int payload;                 /* token or -1 */
	char type[64];
};

struct conn {
	int fd;
	struct ndjson in;
	bool ids;                     /* the daemon answered hello: it echoes "id" */
	unsigned long long next_id;
	struct buf hello;             /* the hello reply line, when there was one */
	bool (*on_push)(const struct reply *r);   /* events: print pushes; false = stop */
	bool stop;
	enum hostaddr_fail why;       /* why conn_open failed to connect (0: it did connect) */
};

static void reply_free(struct reply *r)
{
	if (r->j.tok)
		json_free(&r->j);
	buf_free(&r->line);
	memset(r, 0, sizeof *r);
}

static void conn_close(struct conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	ndjson_free(&c->in);
	buf_free(&c->hello);
	c->ids = false;
}

/* Transport-level result codes of the request functions. */
enum { RC_OK = 0, RC_NO = EXIT_FAIL, RC_CONN = EXIT_CONN };

/* Fill err and return code: "return seterr(err, RC_NO, ...)". */
static int seterr(char *err, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, ERRBUF, fmt, ap);
	va_end(ap);
	return code;
}

/* Wait for the reply to the request with id `id` (0 = none: the next non-push line).
 * Lifecycle pushes go to on_push or are skipped; with ids, lines for other ids are skipped. */
static int read_reply(struct conn *c, unsigned long long id, int64_t deadline, struct reply *r,
		      char *err)
{
	for (;;) {
		char *line;
		size_t len;
		int got = ndjson_line(&c->in, &line, &len);
		if (got == -EMSGSIZE)
			return seterr(err, RC_NO, "reply longer than %d bytes", NDJSON_MAX_LINE);
		if (got == 0) {
			int left = deadline < 0 ? -1 : (int)(deadline - now_ms());
			if (deadline >= 0 && left <= 0)
				return seterr(err, RC_CONN, "timed out waiting for a reply");
			int w = fd_wait(c->fd, POLLIN, left);
			if (w == 0)
				continue;
			ssize_t n = w < 0 ? w : ndjson_fill(&c->in, c->fd);
			if (n == -EINTR || n == -EAGAIN)
				continue;
			if (n == -EMSGSIZE)
				return seterr(err, RC_NO, "reply longer than %d bytes", NDJSON_MAX_LINE);
			if (n < 0)
				return seterr(err, RC_CONN, "reading: %s", strerror((int)-n));
			if (n == 0)
				return seterr(err, RC_CONN, "connection closed by the guest");
			continue;
		}
		size_t k = 0;
		while (k < len && strchr(" \t\r", line[k]))
			k++;
		if (k == len)
			continue;            /* empty lines are ignored (§1) */
		reply_free(r);
		buf_append(&r->line, line, len);
		char jerr[ERRBUF];
		if (json_parse(&r->j, r->line.p, r->line.len, true, jerr))
			return seterr(err, RC_NO, "malformed reply: %s", jerr);
		if (cli_json_str(&r->j, 0, "type", r->type, sizeof r->type))
			return seterr(err, RC_NO, "reply without a type");
		r->payload = json_get(&r->j, 0, "payload");
		if (!strcmp(r->type, "lifecycle")) {
			if (c->on_push && !c->on_push(r)) {
				c->stop = true;
				return RC_OK;
			}
			continue;
		}
		if (id) {
			int t = json_get(&r->j, 0, "id");
			uint64_t got_id;
			if (t < 0 || json_u64(&r->j, t, &got_id) || got_id != id)
				continue;   /* not ours: an unsolicited message */
		}
		return RC_OK;
	}
}

/* Send {"type":T[,"payload":P][,"id":N]} and read its reply. The line is wiped afterwards
 * (it may hold a secret). */
static int request(struct conn *c, const char *type, const struct buf *payload, int use_id,
		   struct reply *r, char *err)
{
	unsigned long long id = use_id && c->ids ? ++c->next_id : 0;
	struct buf line = {0};
	buf_reserve(&line, (payload ? payload->len : 0) + strlen(type) * 6 + 64);   /* no realloc */
	buf_puts(&line, "{\"type\":");
	json_quote(&line, type, strlen(type));
	if (payload && payload->len) {
		buf_puts(&line, ",\"payload\":");
		buf_append(&line, payload->p, payload->len);
	}
	if (id)
		buf_printf(&line, ",\"id\":%llu", id);
	buf_puts(&line, "}\n");
	int64_t deadline = now_ms() + o.timeout_ms;
	int rc = RC_OK;
	if (write_all(c->fd, line.p, line.len))   /* SO_SNDTIMEO bounds it: EAGAIN = timed out */
		rc = seterr(err, RC_CONN, "sending %s: %s", type,
			  errno == EAGAIN ? "timed out" : strerror(errno));
	buf_wipe(&line);
	if (rc)
		return rc;
	return read_reply(c, id, deadline, r, err);
}

/* Connect and, unless --no-id, learn whether the daemon speaks our extensions: stereod answers
 * hello; upstream stereosd answers an ack "unknown message type" and gets plain requests. */
static int conn_open(struct conn *c, int connect_timeout_ms, char *err)
{
	char e[ERRBUF];
	c->fd = hostaddr_connect(&o.addr, connect_timeout_ms, &c->why, e);
	if (c->fd < 0)
		return seterr(err, RC_CONN, "%s", e);
	ndjson_init(&c->in, NDJSON_MAX_LINE);
	/* a guest that stops reading must not block a send forever */
	struct timeval tv = {.tv_sec = o.timeout_ms / 1000, .tv_usec = (o.timeout_ms % 1000) * 1000};
	setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	if (o.no_id)
		return RC_OK;
	struct reply r = {0};
	int rc = request(c, "hello", NULL, 0, &r, err);
	if (!rc && !strcmp(r.type, "hello")) {
		buf_append(&c->hello, r.line.p, r.line.len);
		int caps = r.payload >= 0 ? json_get(&r.j, r.payload, "capabilities") : -1;
		for (int i = 0, t; caps >= 0 && (t = json_array_item(&r.j, caps, i)) >= 0; i++)
			if (json_kind(&r.j, t) == JSON_STRING && r.j.tok[t].end - r.j.tok[t].start == 2 &&
			    !memcmp(r.line.p + r.j.tok[t].start, "id", 2))
				c->ids = true;
	}
	reply_free(&r);
	return rc;
}

/* An ack for `type`: ok -> RC_OK; ok:false -> RC_NO with the guest's error. */
static int check_ack(const struct reply *r, const char *type, char *err)
{
	if (strcmp(r->type, "ack"))
		return seterr(err, RC_NO, "unexpected reply type '%s' to %s", r->type, type);
	char reply_to[64], gerr[ERRBUF];
	int okt = r->payload >= 0 ? json_get(&r->j, r->payload, "ok") : -1;
	bool ok = false;
	if (okt < 0 || json_bool(&r->j, okt, &ok))
		return seterr(err, RC_NO, "ack without ok");
	cli_json_str(&r->j, r->payload, "reply_to", reply_to, sizeof reply_to);
	if (!ok) {
		if (cli_json_str(&r->j, r->payload, "error", gerr, sizeof gerr) || !*gerr)
			snprintf(gerr, sizeof gerr, "refused");
		return seterr(err, RC_NO, "%s", gerr);
	}
	if (strcmp(reply_to, type))
		return seterr(err, RC_NO, "ack for '%s' while waiting for %s", reply_to, type);
	return RC_OK;
}

/* Connect, send one request expecting an ack, print {"ok":true,...} with --json. */
static int simple_ack(const char *cmd, const char *type, struct buf *payload, bool wipe)
{
	struct conn c = {.fd = -1};
	struct reply r = {0};
	char err[ERRBUF];
	int rc = conn_open(&c, o.connect_timeout_ms, err);
	if (!rc)
		rc = request(&c, type, payload, 1, &r, err);
	if (wipe)
		buf_wipe(payload);
	else
		buf_free(payload);
	if (!rc)
		rc = check_ack(&r, type, err);
	reply_free(&r);
	conn_close(&c);
	if (rc)
		return host_fail(rc, cmd, err);
	if (o.json)
		printf("{\"ok\":true,\"reply_to\":\"%s\"}\n", type);
	return EXIT_OK;
}

/* ---- commands ------------------------------------------------------------------------- */
static int cmd_ping(int argc, char **argv)
{
	struct conn c = {.fd = -1};
	struct reply r = {0};
	char err[ERRBUF];
	int rc = conn_open(&c, o.connect_timeout_ms, err);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (!rc)
		rc = request(&c, "ping", NULL, 1, &r, err);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (!rc && strcmp(r.type, "pong"))
		rc = seterr(err, RC_NO, "unexpected reply type '%s' to ping", r.type);
	reply_free(&r);
	conn_close(&c);
	if (rc)
		return host_fail(rc, "ping", err);
	long long us = (t1.tv_sec - t0.tv_sec) * 1000000LL + (t1.tv_nsec - t0.tv_nsec) / 1000;
	char a[340];
	addr_str(a, sizeof a);
	if (o.json)
		printf("{\"ok\":true,\"rtt_us\":%lld}\n", us);
	else
		printf("pong from %s in %.3f ms\n", a, us / 1000.0);
	return EXIT_OK;
}

static void print_health_text(const struct json *j, int p)
{
	char state[64];
	cli_json_str(j, p, "state", state, sizeof state);
	uint64_t up = 0;
	int t = json_get(j, p, "uptime_seconds");
	if (t >= 0)
		json_u64(j, t, &up);
	printf("state: ");
	cli_put_safe(stdout, state, strlen(state));
	printf("\nuptime: %llus\n", (unsigned long long)up);
	cli_print_agents(j, json_get(j, p, "agents"));
}

static int get_health(struct conn *c, struct reply *r, char *err)
{
	int rc = request(c, "get_health", NULL, 1, r, err);
	if (!rc && (strcmp(r->type, "health") || r->payload < 0 ||
		    json_kind(&r->j, r->payload) != JSON_OBJECT))
		rc = seterr(err, RC_NO, "unexpected reply type '%s' to get_health", r->type);
	return rc;
}

static int cmd_health(int argc, char **argv)
{
	struct conn c = {.fd = -1};
	struct reply r = {0};
	char err[ERRBUF];
	int rc = conn_open(&c, o.connect_timeout_ms, err);
	if (!rc)
		rc = get_health(&c, &r, err);
	if (!rc) {
		if (o.json)
			cli_print_token(&r.j, r.payload);
		else
			print_health_text(&r.j, r.payload);
	}
	reply_free(&r);
	conn_close(&c);
	return rc ? host_fail(rc, "health", err) : EXIT_OK;
}

static void sleep_ms(long long ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* WaitForReady: poll get_health until ready or healthy; shutdown fails; errors are retried. */
static int cmd_wait_ready(int argc, char **argv)
{
	int64_t deadline = now_ms() + o.wait_ms;
	struct conn c = {.fd = -1};
	char err[ERRBUF] = "", last[ERRBUF] = "no answer yet";
	bool have_last = false;
	int saved_timeout = o.timeout_ms;
	/* One attempt waits at most max(1 s, 2 x interval): a forwarder that accepts before the
	 * guest listens (QEMU user networking) would otherwise cost a whole request timeout. */
	long long attempt = o.interval_ms * 2 > 1000 ? o.interval_ms * 2 : 1000;
	int attempt_ms = attempt < saved_timeout ? (int)attempt : saved_timeout;
	for (;;) {
		int64_t left = deadline - now_ms();
		if (left <= 0)
			break;
		o.timeout_ms = (int)(left < attempt_ms ? left : attempt_ms);
		int rc = c.fd >= 0 ? RC_OK
				   : conn_open(&c, (int)(left < o.connect_timeout_ms ? left
											: o.connect_timeout_ms), err);
		struct reply r = {0};
		if (!rc)
			rc = get_health(&c, &r, err);
		if (!rc) {
			char state[64];
			cli_json_str(&r.j, r.payload, "state", state, sizeof state);
			if (!strcmp(state, "ready") || !strcmp(state, "healthy")) {
				if (o.json)
					cli_print_token(&r.j, r.payload);
				else {
					cli_put_safe(stdout, state, strlen(state));
					putchar('\n');
				}
				reply_free(&r);
				conn_close(&c);
				return EXIT_OK;
			}
			if (!strcmp(state, "shutdown")) {
				reply_free(&r);
				conn_close(&c);
				return host_fail(EXIT_FAIL, "wait-ready", "the guest is shutting down");
			}
			snprintf(last, sizeof last, "state %s", state);
			have_last = true;
		} else {
			/* an attempt the deadline cut short says less than the one before it did */
			if (!have_last || now_ms() < deadline)
				snprintf(last, sizeof last, "%s", err);
			have_last = true;
			/* a guest that is not there yet is retried; a socket path we cannot use is not */
			if (c.why == HOSTADDR_ERROR && o.addr.kind == HOSTADDR_UDS) {
				conn_close(&c);
				o.timeout_ms = saved_timeout;
				return host_fail(EXIT_CONN, "wait-ready", err);
			}
			c.why = 0;
			conn_close(&c);   /* a broken or confused connection is not reused */
		}
		reply_free(&r);
		left = deadline - now_ms();
		if (left <= 0)
			break;
		sleep_ms(left < o.interval_ms ? left : o.interval_ms);
	}
	conn_close(&c);
	o.timeout_ms = saved_timeout;
	char msg[2 * ERRBUF];
	snprintf(msg, sizeof msg, "not ready after %.3gs (last: %s)", o.wait_ms / 1000.0, last);
	return host_fail(EXIT_CONN, "wait-ready", msg);
}

static int cmd_set_config(int argc, char **argv)
{
	struct buf content = {0}, p = {0};
	char err[ERRBUF];
	if (cli_read_input(argv[0], &content, MAX_INPUT, err)) {
		buf_free(&content);
		return host_fail(EXIT_FAIL, "set-config", err);
	}
	buf_putc(&p, '{');
	kq(&p, "content", content.p ? content.p : "", content.len, true);
	buf_putc(&p, '}');
	buf_free(&content);
	return simple_ack("set-config", "set_config", &p, false);
}

static int cmd_secret_set(int argc, char **argv)
{
	const char *name = argv[0];
	char err[ERRBUF];
	struct buf v = {0}, p = {0};
	/* the value must not end up in a core dump either */
	prctl(PR_SET_DUMPABLE, 0);
	if (o.from_env) {
		char *e = getenv(o.from_env);
		if (!e)
			return host_fail(EXIT_USAGE, "secret set", "the variable named by --from-env is not set");
		size_t n = strlen(e);
		buf_reserve(&v, n + 1);
		buf_append(&v, e, n);
		/* wipe it in place: /proc/PID/environ reads this memory */
		explicit_bzero(e, n);
	} else if (!o.from_file && isatty(0)) {
		return host_fail(EXIT_USAGE, "secret set", CLI_TTY_SECRET);
	} else if (cli_read_input(o.from_file ? o.from_file : "-", &v, MAX_INPUT, err)) {
		buf_wipe(&v);
		return host_fail(EXIT_FAIL, "secret set", err);
	}
	if (!utf8_valid(v.p ? v.p : "", v.len)) {
		buf_wipe(&v);
		return host_fail(EXIT_FAIL, "secret set", CLI_NOT_UTF8);
	}
	buf_reserve(&p, v.len * 6 + strlen(name) * 6 + 64);   /* no realloc: no stray copies */
	buf_putc(&p, '{');
	kq(&p, "name", name, strlen(name), true);
	kq(&p, "value", v.p ? v.p : "", v.len, false);
	if (o.mode)
		buf_printf(&p, ",\"mode\":%lld", o.mode);
	buf_putc(&p, '}');
	buf_wipe(&v);
	return simple_ack("secret set", "inject_secret", &p, true);
}

static int cmd_ssh_key_add(int argc, char **argv)
{
	struct buf key = {0}, p = {0};
	char err[ERRBUF];
	if (cli_read_input(argv[1], &key, MAX_KEY, err)) {
		buf_free(&key);
		return host_fail(EXIT_FAIL, "ssh-key add", err);
	}
	while (key.len && strchr(" \t\r\n", key.p[key.len - 1]))
		key.len--;
	if (!key.len) {
		buf_free(&key);
		return host_fail(EXIT_FAIL, "ssh-key add", "the key is empty");
	}
	buf_putc(&p, '{');
	kq(&p, "user", argv[0], strlen(argv[0]), true);
	kq(&p, "public_key", key.p, key.len, false);
	buf_putc(&p, '}');
	buf_free(&key);
	return simple_ack("ssh-key add", "inject_ssh_key", &p, false);
}

static int cmd_mount(int argc, char **argv)
{
	struct buf p = {0};
	buf_putc(&p, '{');
	kq(&p, "tag", argv[0], strlen(argv[0]), true);
	kq(&p, "guest_path", argv[1], strlen(argv[1]), false);
	kq(&p, "fs_type", o.fs_type, strlen(o.fs_type), false);
	if (o.ro)
		buf_puts(&p, ",\"read_only\":true");
	buf_putc(&p, '}');
	return simple_ack("mount", "mount", &p, false);
}

static int cmd_shutdown(int argc, char **argv)
{
	struct buf reason = {0}, p = {0};
	for (int i = 0; i < argc; i++) {
		if (i)
			buf_putc(&reason, ' ');
		buf_puts(&reason, argv[i]);
	}
	buf_putc(&p, '{');
	if (reason.len)
		kq(&p, "reason", reason.p, reason.len, true);
	buf_putc(&p, '}');
	buf_free(&reason);
	return simple_ack("shutdown", "shutdown", &p, false);
}

static long long pushes_left;
static char last_state[64];

static bool print_push(const struct reply *r)
{
	cli_json_str(&r->j, r->payload, "state", last_state, sizeof last_state);
	fwrite(r->line.p, 1, r->line.len, stdout);
	putchar('\n');
	if (fflush(stdout) || ferror(stdout))
		return false;
	return !(pushes_left > 0 && --pushes_left == 0);
}

static int cmd_events(int argc, char **argv)
{
	struct conn c = {.fd = -1};
	struct reply r = {0};
	char err[ERRBUF];
	pushes_left = o.count;
	int rc = conn_open(&c, o.connect_timeout_ms, err);
	c.on_push = print_push;
	if (!rc)
		rc = request(&c, "subscribe", NULL, 1, &r, err);
	if (!rc && !c.stop)
		rc = check_ack(&r, "subscribe", err);
	if (!rc && !c.stop) {
		char a[340];
		addr_str(a, sizeof a);
		fprintf(stderr, "%s: events: subscribed to %s\n", prog, a);
	}
	/* then wait for pushes as long as it takes; an id nobody uses makes read_reply skip every
	 * other line (without ids, an unexpected line simply ends up ignored here) */
	while (!rc && !c.stop) {
		reply_free(&r);
		rc = read_reply(&c, c.ids ? ~0ULL : 0, -1, &r, err);
	}
	reply_free(&r);
	conn_close(&c);
	if (rc == RC_CONN && !strcmp(last_state, "shutdown"))
		rc = RC_OK;   /* the guest went away after saying it would */
	if (rc)
		return host_fail(rc, "events", err);
	return ferror(stdout) ? host_fail(EXIT_FAIL, "events", "writing to stdout failed") : EXIT_OK;
}

static int cmd_hello(int argc, char **argv)
{
	struct conn c = {.fd = -1};
	char err[ERRBUF];
	bool no_id = o.no_id;
	o.no_id = false;   /* hello is the point here */
	int rc = conn_open(&c, o.connect_timeout_ms, err);
	o.no_id = no_id;
	if (!rc && !c.hello.len)
		rc = seterr(err, RC_NO, "the guest does not know hello (an upstream stereosd?)");
	if (!rc) {
		struct reply r = {0};
		char e[ERRBUF];
		if (json_parse(&r.j, c.hello.p, c.hello.len, true, e) == 0) {
			r.payload = json_get(&r.j, 0, "payload");
			if (r.payload >= 0 && o.json) {
				const jsmntok_t *t = &r.j.tok[r.payload];
				fwrite(c.hello.p + t->start, 1, t->end - t->start, stdout);
				putchar('\n');
			} else if (r.payload >= 0) {
				char ver[128];
				uint64_t proto = 0;
				int t = json_get(&r.j, r.payload, "proto");
				if (t >= 0)
					json_u64(&r.j, t, &proto);
				cli_json_str(&r.j, r.payload, "version", ver, sizeof ver);
				printf("proto: %llu\nversion: ", (unsigned long long)proto);
				cli_put_safe(stdout, ver, strlen(ver));
				printf("\ncapabilities:");
				int caps = json_get(&r.j, r.payload, "capabilities");
				for (int i = 0, a; caps >= 0 && (a = json_array_item(&r.j, caps, i)) >= 0; i++) {
					struct buf s = {0};
					if (!json_str(&r.j, a, &s, JSON_STR_NO_NUL, NULL)) {
						putchar(' ');
						cli_put_safe(stdout, buf_cstr(&s), s.len);
					}
					buf_free(&s);
				}
				putchar('\n');
			}
			json_free(&r.j);
		}
	}
	conn_close(&c);
	return rc ? host_fail(rc, "hello", err) : EXIT_OK;
}

/* ---- snapshot commands (docs/snapshot.md) ------------------------------------------------ */
/* Send type with payload; print the ack's steps (text) or its payload (--json). An ack with
 * ok:false exits 1 after printing what was done. */
static int snapshot_request(const char *cmd, const char *type, struct buf *payload)
{
	struct conn c = {.fd = -1};
	struct reply r = {0};
	char err[ERRBUF];
	int rc = conn_open(&c, o.connect_timeout_ms, err);
	if (!rc)
		rc = request(&c, type, payload, 1, &r, err);
	buf_wipe(payload);             /* restored carries entropy */
	int ack = rc ? rc : check_ack(&r, type, err);
	if ((!rc || ack == RC_NO) && r.payload >= 0 && !strcmp(r.type, "ack")) {
		const jsmntok_t *t = &r.j.tok[r.payload];
		int steps = json_get(&r.j, r.payload, "steps");
		if (o.json) {
			fwrite(r.line.p + t->start, 1, t->end - t->start, stdout);
			putchar('\n');
		}
		for (int i = 0, s; !o.json && steps >= 0 && (s = json_array_item(&r.j, steps, i)) >= 0; i++) {
			char name[64], what[300] = "", why[ERRBUF] = "";
			bool ok = false;
			int okt = json_get(&r.j, s, "ok");
			if (okt >= 0)
				json_bool(&r.j, okt, &ok);
			cli_json_str(&r.j, s, "step", name, sizeof name);
			if (cli_json_str(&r.j, s, "path", what, sizeof what))
				cli_json_str(&r.j, s, "name", what, sizeof what);
			cli_json_str(&r.j, s, "error", why, sizeof why);
			printf("%-4s ", ok ? "ok" : "FAIL");
			cli_put_safe(stdout, name, strlen(name));
			if (*what)
				putchar(' ');
			cli_put_safe(stdout, what, strlen(what));
			/* the step's other fields as key=value: skew_ms=-12 stepped=false */
			for (int k = s + 1; k + 1 < r.j.ntok && r.j.tok[k].start < r.j.tok[s].end;
			     k = json_next(&r.j, k + 1)) {
				const jsmntok_t *kt = &r.j.tok[k], *vt = &r.j.tok[k + 1];
				static const char *const skip[] = {"step", "ok", "error", "path", "name"};
				bool shown = true;
				for (size_t x = 0; x < ARRAY_SIZE(skip); x++)
					if (json_is_key(&r.j, k, skip[x]))
						shown = false;
				if (!shown)
					continue;
				putchar(' ');
				cli_put_safe(stdout, r.line.p + kt->start, kt->end - kt->start);
				putchar('=');
				cli_put_safe(stdout, r.line.p + vt->start, vt->end - vt->start);
			}
			if (*why) {
				printf(": ");
				cli_put_safe(stdout, why, strlen(why));
			}
			putchar('\n');
		}
	}
	reply_free(&r);
	conn_close(&c);
	if (ack && !(o.json && ack == RC_NO))
		return host_fail(ack, cmd, err);
	return ack ? EXIT_FAIL : EXIT_OK;
}

static int cmd_snapshot_prepare(int argc, char **argv)
{
	struct buf p = {0};
	buf_puts(&p, "{\"freeze\":[");
	for (int i = 0; i < o.nfreeze; i++) {
		if (i)
			buf_putc(&p, ',');
		json_quote(&p, o.freeze[i], strlen(o.freeze[i]));
	}
	buf_printf(&p, "],\"drop_caches\":%s", o.drop_caches ? "true" : "false");
	if (o.thaw_after_ms)
		buf_printf(&p, ",\"timeout_ms\":%lld", o.thaw_after_ms);
	buf_putc(&p, '}');
	return snapshot_request("snapshot-prepare", "snapshot_prepare", &p);
}

static int cmd_snapshot_abort(int argc, char **argv)
{
	struct buf p = {0};
	return snapshot_request("snapshot-abort", "snapshot_abort", &p);
}

/* The host's wall clock and 64 bytes from getrandom: what a restored guest lacks. */
static int cmd_restored(int argc, char **argv)
{
	unsigned char rnd[64];
	struct timespec now;
	struct buf p = {0}, net = {0};
	char err[ERRBUF];
	if (o.network && cli_read_input(o.network, &net, 65536, err))
		return host_fail(EXIT_USAGE, "restored", err);
	if (net.len && json_validate(net.p, net.len, err)) {
		buf_free(&net);
		return usage_error("--network: not JSON: %s", err);
	}
	if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
		buf_free(&net);
		return host_fail(EXIT_FAIL, "restored", "getrandom failed");
	}
	clock_gettime(CLOCK_REALTIME, &now);
	buf_printf(&p, "{\"wall_clock_ns\":%lld,\"entropy_b64\":\"",
		   (long long)now.tv_sec * 1000000000LL + now.tv_nsec);
	base64_encode(rnd, sizeof rnd, &p);
	explicit_bzero(rnd, sizeof rnd);
	buf_putc(&p, '"');
	if (o.generation >= 0)
		buf_printf(&p, ",\"generation\":%lld", o.generation);
	if (o.hostname) {
		buf_puts(&p, ",\"hostname\":");
		json_quote(&p, o.hostname, strlen(o.hostname));
	}
	if (o.machine_id) {
		buf_puts(&p, ",\"machine_id\":");
		json_quote(&p, o.machine_id, strlen(o.machine_id));
	}
	if (net.len) {
		/* valid JSON has newlines only between tokens: blanks keep the request one line */
		for (size_t i = 0; i < net.len; i++)
			if (net.p[i] == '\n' || net.p[i] == '\r')
				net.p[i] = ' ';
		buf_puts(&p, ",\"network\":");
		buf_append(&p, net.p, net.len);
	}
	buf_putc(&p, '}');
	buf_free(&net);
	return snapshot_request("restored", "restored", &p);
}

static int cmd_metrics(int argc, char **argv)
{
	struct conn c = {.fd = -1};
	struct reply r = {0};
	char err[ERRBUF];
	int rc = conn_open(&c, o.connect_timeout_ms, err);
	if (!rc)
		rc = request(&c, "get_metrics", NULL, 1, &r, err);
	if (!rc && (strcmp(r.type, "metrics") || r.payload < 0 ||
		    json_kind(&r.j, r.payload) != JSON_OBJECT))
		rc = seterr(err, RC_NO, "unexpected reply type '%s' to get_metrics", r.type);
	if (!rc && o.json) {
		const jsmntok_t *t = &r.j.tok[r.payload];
		fwrite(r.line.p + t->start, 1, t->end - t->start, stdout);
		putchar('\n');
	}
	/* text: one "key: value" line per number (psi stays a JSON object) */
	for (int t = r.payload + 1; !rc && !o.json && t < r.j.ntok && r.j.tok[t].start < r.j.tok[r.payload].end;
	     t = json_next(&r.j, t + 1)) {
		const jsmntok_t *k = &r.j.tok[t], *v = &r.j.tok[t + 1];
		cli_put_safe(stdout, r.line.p + k->start, k->end - k->start);
		printf(": ");
		cli_put_safe(stdout, r.line.p + v->start, v->end - v->start);
		putchar('\n');
	}
	reply_free(&r);
	conn_close(&c);
	return rc ? host_fail(rc, "metrics", err) : EXIT_OK;
}

/* ---- the guest metadata protocol (microvm-runtime; docs/stereod.md) -------------------- */
#define METADATA_PORT 5555

/* Send one {"op":...,"id":ID,...} line (body: the fields after the id, without braces) to the
 * metadata listener and check its {"id":ID,"ok":...} reply. The line is wiped afterwards. */
static int md_call(const char *cmd, const char *op, struct buf *body)
{
	char err[ERRBUF], e[ERRBUF], id[40];
	unsigned char r[16];
	if (getrandom(r, sizeof r, 0) != sizeof r)
		return host_fail(EXIT_FAIL, cmd, "no random bytes for the request id");
	r[6] = (r[6] & 0x0f) | 0x40;   /* a version 4 UUID, as the host library sends */
	r[8] = (r[8] & 0x3f) | 0x80;
	snprintf(id, sizeof id, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		 r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13],
		 r[14], r[15]);
	struct buf line = {0};
	buf_reserve(&line, (body ? body->len : 0) + 128);   /* no realloc: no stray copies */
	buf_printf(&line, "{\"op\":\"%s\",\"id\":\"%s\"", op, id);
	if (body && body->len) {
		buf_putc(&line, ',');
		buf_append(&line, body->p, body->len);
	}
	buf_puts(&line, "}\n");
	if (body)
		buf_wipe(body);
	struct hostaddr a = o.addr;   /* vsock and --uds: port 5555 unless a port was named */
	if (a.kind != HOSTADDR_TCP && !a.port_given)
		a.port = METADATA_PORT;
	enum hostaddr_fail why;
	int rc = RC_OK, fd = hostaddr_connect(&a, o.connect_timeout_ms, &why, e);
	if (fd < 0)
		rc = seterr(err, RC_CONN, "%s", e);
	else if (write_all(fd, line.p, line.len))
		rc = seterr(err, RC_CONN, "sending %s: %s", op, strerror(errno));
	buf_wipe(&line);
	struct ndjson in;
	ndjson_init(&in, NDJSON_MAX_LINE);
	char *l = NULL;
	size_t len = 0;
	int64_t deadline = now_ms() + o.timeout_ms;
	while (!rc) {
		int got = ndjson_line(&in, &l, &len);
		if (got > 0)
			break;
		int left = (int)(deadline - now_ms());
		if (got < 0 || left <= 0) {
			rc = seterr(err, got < 0 ? RC_NO : RC_CONN, got < 0 ? "reply too long" : "timed out waiting for a reply");
			break;
		}
		int w = fd_wait(fd, POLLIN, left);
		ssize_t n = w <= 0 ? (w < 0 ? w : -EAGAIN) : ndjson_fill(&in, fd);
		if (n == 0)
			rc = seterr(err, RC_CONN, "connection closed by the guest");
		else if (n < 0 && n != -EAGAIN && n != -EINTR)
			rc = seterr(err, RC_CONN, "reading: %s", strerror((int)-n));
	}
	struct json j = {0};
	bool ok = false;
	char rid[40] = "", gerr[ERRBUF] = "";
	if (!rc && json_parse(&j, l, len, true, e))
		rc = seterr(err, RC_NO, "malformed reply: %s", e);
	if (!rc) {
		int okt = json_get(&j, 0, "ok");
		cli_json_str(&j, 0, "id", rid, sizeof rid);
		if (okt < 0 || json_bool(&j, okt, &ok))
			rc = seterr(err, RC_NO, "reply without ok");
		else if (!ok) {
			if (cli_json_str(&j, 0, "error", gerr, sizeof gerr) || !*gerr)
				snprintf(gerr, sizeof gerr, "refused");
			rc = seterr(err, RC_NO, "%s", gerr);
		} else if (strcmp(rid, id))
			rc = seterr(err, RC_NO, "reply for id '%s' while waiting for %s", rid, id);
		json_free(&j);
	}
	ndjson_free(&in);
	if (fd >= 0)
		close(fd);
	if (rc)
		return host_fail(rc, cmd, err);
	if (o.json)
		printf("{\"ok\":true,\"id\":\"%s\"}\n", id);
	return EXIT_OK;
}

static int cmd_md_ping(int argc, char **argv)
{
	int rc = md_call("metadata ping", "ping", NULL);
	if (!rc && !o.json)
		printf("ok\n");
	return rc;
}

static int cmd_md_set_env(int argc, char **argv)
{
	struct buf b = {0};
	buf_puts(&b, "\"env\":{");
	for (int i = 0; i < argc; i++) {
		const char *eq = strchr(argv[i], '=');
		if (!eq || eq == argv[i]) {
			buf_free(&b);
			return usage_error("metadata set-env: '%s' is not KEY=VALUE (KEY= deletes KEY)", argv[i]);
		}
		if (i)
			buf_putc(&b, ',');
		json_quote(&b, argv[i], eq - argv[i]);
		buf_putc(&b, ':');
		json_quote(&b, eq + 1, strlen(eq + 1));
	}
	buf_putc(&b, '}');
	return md_call("metadata set-env", "set_env", &b);
}

static int cmd_md_set_secret(int argc, char **argv)
{
	const char *name = argv[0];
	char err[ERRBUF];
	struct buf v = {0}, b = {0};
	prctl(PR_SET_DUMPABLE, 0);   /* the value must not end up in a core dump */
	if (o.from_env) {
		char *e = getenv(o.from_env);
		if (!e)
			return host_fail(EXIT_USAGE, "metadata set-secret", "the variable named by --from-env is not set");
		size_t n = strlen(e);
		buf_reserve(&v, n + 1);
		buf_append(&v, e, n);
		explicit_bzero(e, n);   /* /proc/PID/environ reads this memory */
	} else if (!o.from_file && isatty(0)) {
		return host_fail(EXIT_USAGE, "metadata set-secret", CLI_TTY_SECRET);
	} else if (cli_read_input(o.from_file ? o.from_file : "-", &v, MAX_INPUT / 4 * 3, err)) {
		buf_wipe(&v);
		return host_fail(EXIT_FAIL, "metadata set-secret", err);
	}
	buf_reserve(&b, v.len / 3 * 4 + 4 + strlen(name) * 6 + 64);   /* no realloc */
	buf_puts(&b, "\"name\":");
	json_quote(&b, name, strlen(name));
	buf_puts(&b, ",\"value_b64\":\"");
	base64_encode(v.p ? v.p : "", v.len, &b);
	buf_putc(&b, '"');
	buf_wipe(&v);
	return md_call("metadata set-secret", "set_secret", &b);
}

/* ---- dispatch ------------------------------------------------------------------------- */
/* Option letters a command accepts after its name besides --json and --timeout: i --interval,
 * m --mode, f --from-file, e --from-env, t --type, r --ro, c --count, F --freeze,
 * D --drop-caches, W --thaw-after, g --generation, H --hostname, M --machine-id, N --network. */
static const struct cmd {
	const char *name, *sub;
	int (*run)(int argc, char **argv);
	const char *opts;
	int min_args, max_args;   /* the usage is the command's line of the help text */
} cmds[] = {
	{"ping", NULL, cmd_ping, "", 0, 0},
	{"health", NULL, cmd_health, "", 0, 0},
	{"wait-ready", NULL, cmd_wait_ready, "i", 0, 0},
	{"set-config", NULL, cmd_set_config, "", 1, 1},
	{"secret", "set", cmd_secret_set, "mfe", 1, 1},
	{"ssh-key", "add", cmd_ssh_key_add, "", 2, 2},
	{"mount", NULL, cmd_mount, "tr", 2, 2},
	{"shutdown", NULL, cmd_shutdown, "", 0, 64},
	{"events", NULL, cmd_events, "c", 0, 0},
	{"hello", NULL, cmd_hello, "", 0, 0},
	{"snapshot-prepare", NULL, cmd_snapshot_prepare, "FDW", 0, 0},
	{"snapshot-abort", NULL, cmd_snapshot_abort, "", 0, 0},
	{"restored", NULL, cmd_restored, "gHMN", 0, 0},
	{"metrics", NULL, cmd_metrics, "", 0, 0},
	{"metadata", "ping", cmd_md_ping, "", 0, 0},
	{"metadata", "set-env", cmd_md_set_env, "", 1, 1024},
	{"metadata", "set-secret", cmd_md_set_secret, "fe", 1, 1},
};

static const struct option global_opts[] = {
	{"tcp", required_argument, NULL, OPT_TCP},
	{"vsock", required_argument, NULL, OPT_VSOCK},
	{"uds", required_argument, NULL, OPT_UDS},
	{"timeout", required_argument, NULL, OPT_TIMEOUT},
	{"connect-timeout", required_argument, NULL, OPT_CONNECT_TIMEOUT},
	{"json", no_argument, NULL, 'j'},
	{"no-id", no_argument, NULL, OPT_NO_ID},
	{"show-addr", no_argument, NULL, OPT_SHOW_ADDR},
	{"help", no_argument, NULL, 'h'},
	{0},
};

static const struct option cmd_opts[] = {
	{"json", no_argument, NULL, 'j'},
	{"interval", required_argument, NULL, 'i'},
	{"timeout", required_argument, NULL, 'T'},
	{"mode", required_argument, NULL, 'm'},
	{"from-file", required_argument, NULL, 'f'},
	{"from-env", required_argument, NULL, 'e'},
	{"type", required_argument, NULL, 't'},
	{"ro", no_argument, NULL, 'r'},
	{"count", required_argument, NULL, 'c'},
	{"freeze", required_argument, NULL, 'F'},
	{"drop-caches", no_argument, NULL, 'D'},
	{"thaw-after", required_argument, NULL, 'W'},
	{"generation", required_argument, NULL, 'g'},
	{"hostname", required_argument, NULL, 'H'},
	{"machine-id", required_argument, NULL, 'M'},
	{"network", required_argument, NULL, 'N'},
	{"help", no_argument, NULL, 'h'},
	{0},
};

static int duration(const char *opt, const char *s, long long *ms, bool zero_ok)
{
	if (parse_duration_ms(s, ms) || (!zero_ok && *ms <= 0) || *ms > INT32_MAX)
		return usage_error("bad duration for --%s: '%s' (like 500ms, 10s, 2m)", opt, s);
	return 0;
}

static int parse_cmd_opts(const struct cmd *cmd, int argc, char **argv)
{
	optind = 0;   /* GNU getopt: full re-initialisation */
	int c;
	long long ms;
	while ((c = getopt_long(argc, argv, ":", cmd_opts, NULL)) != -1) {
		if (c == '?')
			return usage_error("unknown option '%s' for %s", argv[optind - 1], cmd->name);
		if (c == ':')
			return usage_error("option '%s' needs a value", argv[optind - 1]);
		if (c == 'h') {
			fputs(applet_help(prog), stdout);
			exit(EXIT_OK);
		}
		if (c != 'j' && c != 'T' && !strchr(cmd->opts, c))
			return usage_error("option '%s' is not valid for %s", argv[optind - 1], cmd->name);
		char *end;
		switch (c) {
		case 'j': o.json = true; break;
		case 'i': if (duration("interval", optarg, &o.interval_ms, false)) return EXIT_USAGE; break;
		case 'T':   /* wait-ready: the overall deadline; elsewhere: per request */
			if (duration("timeout", optarg, cmd->run == cmd_wait_ready ? &o.wait_ms : &ms, false))
				return EXIT_USAGE;
			if (cmd->run != cmd_wait_ready)
				o.timeout_ms = (int)ms;
			break;
		case 'm':
			errno = 0;
			o.mode = strtoll(optarg, &end, 8);
			if (errno || end == optarg || *end || o.mode < 0 || o.mode > 0777)
				return usage_error("bad --mode '%s' (octal, at most 0777)", optarg);
			break;
		case 'f': o.from_file = optarg; break;
		case 'e': o.from_env = optarg; break;
		case 't':
			if (strcmp(optarg, "virtiofs") && strcmp(optarg, "9p"))
				return usage_error("bad --type '%s' (virtiofs or 9p)", optarg);
			o.fs_type = optarg;
			break;
		case 'r': o.ro = true; break;
		case 'c':
			errno = 0;
			o.count = strtoll(optarg, &end, 10);
			if (errno || end == optarg || *end || o.count < 1)
				return usage_error("bad --count '%s'", optarg);
			break;
		case 'F':
			if (o.nfreeze == (int)ARRAY_SIZE(o.freeze))
				return usage_error("at most %zu --freeze paths", ARRAY_SIZE(o.freeze));
			o.freeze[o.nfreeze++] = optarg;
			break;
		case 'D': o.drop_caches = true; break;
		case 'W':
			if (duration("thaw-after", optarg, &o.thaw_after_ms, false))
				return EXIT_USAGE;
			break;
		case 'g':
			errno = 0;
			o.generation = strtoll(optarg, &end, 10);
			if (errno || end == optarg || *end || o.generation < 0)
				return usage_error("bad --generation '%s'", optarg);
			break;
		case 'H': o.hostname = optarg; break;
		case 'M': o.machine_id = optarg; break;
		case 'N': o.network = optarg; break;
		}
	}
	return 0;
}

int stereo_host_main(int argc, char **argv)
{
	o = (struct opts){.timeout_ms = DEFAULT_TIMEOUT_MS, .connect_timeout_ms = DEFAULT_TIMEOUT_MS,
			  .wait_ms = WAIT_READY_TIMEOUT_MS, .interval_ms = WAIT_READY_INTERVAL_MS,
			  .mode = 0600, .generation = -1,
			  .addr = {.kind = HOSTADDR_VSOCK, .cid = VSOCK_GUEST_CID,
				   .port = VSOCK_DEFAULT_PORT}};
	signal(SIGPIPE, SIG_IGN);
	char err[ERRBUF];
	bool addr_flag = false;
	int c;
	long long ms;
	optind = 0;
	while ((c = getopt_long(argc, argv, "+:", global_opts, NULL)) != -1) {
		switch (c) {
		case OPT_TCP:
		case OPT_VSOCK:
		case OPT_UDS:
			if (c == OPT_TCP ? hostaddr_parse_tcp(&o.addr, optarg, err)
			    : c == OPT_VSOCK ? hostaddr_parse_vsock(&o.addr, optarg, VSOCK_DEFAULT_PORT, err)
					     : hostaddr_parse_uds(&o.addr, optarg, VSOCK_DEFAULT_PORT, err))
				return usage_error("%s", err);
			addr_flag = true;
			break;
		case 'h':
			fputs(applet_help(prog), stdout);
			return EXIT_OK;
		case OPT_TIMEOUT:
			if (duration("timeout", optarg, &ms, false))
				return EXIT_USAGE;
			o.timeout_ms = (int)ms;
			break;
		case OPT_CONNECT_TIMEOUT:
			if (duration("connect-timeout", optarg, &ms, false))
				return EXIT_USAGE;
			o.connect_timeout_ms = (int)ms;
			break;
		case 'j': o.json = true; break;
		case OPT_NO_ID: o.no_id = true; break;
		case OPT_SHOW_ADDR: o.show_addr = true; break;
		case ':': return usage_error("option '%s' needs a value", argv[optind - 1]);
		default: return usage_error("unknown option '%s'", argv[optind - 1]);
		}
	}
	const char *env = getenv("STEREO_HOST_ADDR");
	if (!addr_flag && env && *env && hostaddr_parse_url(&o.addr, env, VSOCK_DEFAULT_PORT, err))
		return usage_error("STEREO_HOST_ADDR: %s", err);
	if (o.show_addr) {
		char a[340];
		addr_str(a, sizeof a);
		printf("%s\n", a);
		return EXIT_OK;
	}
	if (optind >= argc)
		return usage_error("missing COMMAND");
	const char *name = argv[optind];
	const char *sub = optind + 1 < argc ? argv[optind + 1] : NULL;
	const struct cmd *cmd = NULL;
	for (size_t i = 0; i < ARRAY_SIZE(cmds) && !cmd; i++)
		if (!strcmp(cmds[i].name, name) && (!cmds[i].sub || (sub && !strcmp(cmds[i].sub, sub))))
			cmd = &cmds[i];
	if (!cmd) {
		for (size_t i = 0; i < ARRAY_SIZE(cmds); i++)
			if (!strcmp(cmds[i].name, name))
				return usage_cmd(name);
		return usage_error("unknown command '%s'", name);
	}
	/* the command's own argv: argv[0] is its name, options may follow the arguments */
	int skip = cmd->sub ? 2 : 1;
	int cargc = argc - optind - skip + 1;
	char **cargv = argv + optind + skip - 1;
	int rc = parse_cmd_opts(cmd, cargc, cargv);
	if (rc)
		return rc;
	int nargs = cargc - optind;
	if (nargs < cmd->min_args || nargs > cmd->max_args) {
		char full[64];
		snprintf(full, sizeof full, "%s%s%s", cmd->name, cmd->sub ? " " : "", cmd->sub ? cmd->sub : "");
		return usage_cmd(full);
	}
	if (cmd->run == cmd_mount && !o.fs_type)
		return usage_error("mount needs --type virtiofs|9p");
	if (o.from_file && o.from_env)
		return usage_error("--from-file and --from-env exclude each other");
	return cmd->run(nargs, cargv + optind);
}
