/* cli.h - what the four client applets (stereo-host, stereo-secret, stereo-mount,
 * stereo-health) share and nothing else uses: failure reporting in the house form (and as
 * {"ok":false,...} with --json), printing text that came from the guest, reading a value from
 * a file or stdin without leaving copies of it in memory, and, for the three guest CLIs, one
 * HTTP call to stereod's unix socket mapped onto the exit codes.
 *
 * Spec: design.md (exit codes, --json); protocol.md §6 (the IPC API) */
#ifndef STEREO_APPLETS_CLI_H
#define STEREO_APPLETS_CLI_H
#include "common/stereo.h"
#include <fcntl.h>
#include <unistd.h>

#define CLI_UNUSED __attribute__((unused))

/* Text from the guest may hold anything: control characters are printed escaped. */
static CLI_UNUSED void cli_put_safe(FILE *f, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = s[i];
		if (c < 0x20 || c == 0x7f) {
			fprintf(f, "\\x%02x", c);
		} else if (c == 0xc2 && i + 1 < n && (unsigned char)s[i + 1] >= 0x80 &&
			   (unsigned char)s[i + 1] <= 0x9f) {
			/* U+0080..U+009F: C1 controls (CSI is U+009B), which some terminals obey */
			fprintf(f, "\\u%04x", (unsigned char)s[++i]);
		} else {
			fputc(c, f);
		}
	}
}

/* "APPLET: WHAT: MSG" on stderr, and {"ok":false,"error":MSG} on stdout with --json. */
static CLI_UNUSED int cli_fail(bool json, int code, const char *what, const char *msg)
{
	fprintf(stderr, "%s: %s: ", prog, what);
	cli_put_safe(stderr, msg, strlen(msg));
	fputc('\n', stderr);
	if (json) {
		struct buf b = {0};
		struct jw w;
		jw_init(&w, &b);
		jw_obj(&w);
		jw_kbool(&w, "ok", false);
		jw_kstr(&w, "error", msg);
		jw_obj_end(&w);
		printf("%s\n", buf_cstr(&b));
		buf_free(&b);
	}
	return code;
}

/* Read all of PATH ("-" = stdin) up to max bytes into a buffer reserved once, so a secret is
 * never left behind in freed memory by a realloc. 0 or -1 with err. */
static CLI_UNUSED int cli_read_input(const char *path, struct buf *out, size_t max, char *err)
{
	bool in = !strcmp(path, "-");
	const char *name = in ? "stdin" : path;
	int fd = in ? 0 : open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errf(err, "opening %s: %s", path, strerror(errno));
	int rc = buf_reserve(out, max + 1) ? errf(err, "out of memory") : 0;
	while (!rc) {
		ssize_t r = read(fd, out->p + out->len, max + 1 - out->len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			rc = errf(err, "reading %s: %s", name, strerror(errno));
		else if (!r)
			break;
		else if ((out->len += r) > max)
			rc = errf(err, "%s is larger than %zu bytes", name, max);
	}
	if (!in)
		close(fd);
	return rc;
}

#define CLI_TTY_SECRET \
	"refusing to read a secret from a terminal: pipe it in, or use --from-file or --from-env"
#define CLI_NOT_UTF8 "the value is not valid UTF-8 (JSON strings cannot carry it)"

/* The string member `key` of object token obj into out ("" and -1 when absent or not a
 * string). */
static CLI_UNUSED int cli_json_str(const struct json *j, int obj, const char *key, char *out,
				    size_t n)
{
	struct buf b = {0};
	int t = obj >= 0 ? json_get(j, obj, key) : -1;
	int rc = t >= 0 && json_kind(j, t) == JSON_STRING ? json_str(j, t, &b, JSON_STR_NO_NUL, NULL) : -1;
	snprintf(out, n, "%s", rc ? "" : buf_cstr(&b));
	buf_free(&b);
	return rc;
}

/* Agent status objects (protocol.md §3), one line each. */
static CLI_UNUSED void cli_print_agents(const struct json *j, int arr)
{
	int n = 0, t;
	for (int a; arr >= 0 && (a = json_array_item(j, arr, n)) >= 0; n++) {
		char name[256], session[256], aerr[ERRBUF];
		bool running = false;
		uint64_t restarts = 0;
		cli_json_str(j, a, "name", name, sizeof name);
		cli_json_str(j, a, "session", session, sizeof session);
		cli_json_str(j, a, "error", aerr, sizeof aerr);
		if ((t = json_get(j, a, "running")) >= 0)
			json_bool(j, t, &running);
		if ((t = json_get(j, a, "restarts")) >= 0)
			json_u64(j, t, &restarts);
		printf("agent ");
		cli_put_safe(stdout, name, strlen(name));
		printf(": %s, restarts %llu", running ? "running" : "stopped",
		       (unsigned long long)restarts);
		if (*session) {
			printf(", session ");
			cli_put_safe(stdout, session, strlen(session));
		}
		if (*aerr) {
			printf(", error: ");
			cli_put_safe(stdout, aerr, strlen(aerr));
		}
		putchar('\n');
	}
	if (!n)
		printf("agents: none\n");
}

/* Print token i of j (a whole JSON value) as one line. */
static CLI_UNUSED void cli_print_token(const struct json *j, int i)
{
	fwrite(j->s + j->tok[i].start, 1, j->tok[i].end - j->tok[i].start, stdout);
	putchar('\n');
}

/* ---- the guest CLIs: one HTTP request to stereod ------------------------------------- */
#define IPC_DEFAULT_SOCKET "/run/stereos/stereosd.sock"
#define IPC_DEFAULT_TIMEOUT_MS 10000

struct ipc {
	const char *sock;
	int timeout_ms;
	bool json;
};

/* Options every guest CLI takes; pass them to ipc_opt from the getopt loop. */
#define IPC_OPTIONS \
	{"socket", required_argument, NULL, 'S'}, \
	{"timeout", required_argument, NULL, 'T'}, \
	{"json", no_argument, NULL, 'j'}, \
	{"help", no_argument, NULL, 'h'}

static CLI_UNUSED void ipc_init(struct ipc *c)
{
	const char *env = getenv("STEREO_SOCKET");
	c->sock = env && *env ? env : IPC_DEFAULT_SOCKET;
	c->timeout_ms = IPC_DEFAULT_TIMEOUT_MS;
	c->json = false;
}

/* 1 = not one of IPC_OPTIONS, 0 = handled, EXIT_USAGE = bad value (reported); --help
 * anywhere prints the help and exits 0. */
static CLI_UNUSED int ipc_opt(struct ipc *c, int opt, const char *arg)
{
	long long ms;
	switch (opt) {
	case 'S': c->sock = arg; return 0;
	case 'j': c->json = true; return 0;
	case 'h':
		fputs(applet_help(prog), stdout);
		exit(EXIT_OK);
	case 'T':
		if (parse_duration_ms(arg, &ms) || ms <= 0 || ms > INT32_MAX)
			return usage_error("bad duration for --timeout: '%s' (like 500ms, 10s)", arg);
		c->timeout_ms = (int)ms;
		return 0;
	}
	return 1;
}

#define IPC_MSG (2 * ERRBUF)

/* One request. Returns 0 with the reply body in resp and parsed (root object) into j, which
 * the caller frees; or the exit code: 3 when stereod cannot be reached or did not answer in
 * time, 1 when it refused (HTTP >= 400) or answered nonsense. The failure is reported now,
 * or, when msg (IPC_MSG bytes) is given, left there for the caller to report later. */
static CLI_UNUSED int ipc_request(const struct ipc *c, const char *what, const char *method,
				  const char *path, const char *body, size_t len, char *msg,
				  struct buf *resp, struct json *j)
{
	char err[ERRBUF], m[IPC_MSG];
	int status = 0, rc;
	memset(j, 0, sizeof *j);
	resp->len = 0;
	switch (http_call(c->sock, method, path, body, len, c->timeout_ms, &status, resp, err)) {
	case 0:
		break;
	case HTTPC_CONNECT:
	case HTTPC_TIMEOUT:
		rc = EXIT_CONN;
		snprintf(m, sizeof m, "%s", err);
		goto failed;
	default:
		rc = EXIT_FAIL;
		snprintf(m, sizeof m, "%s", err);
		goto failed;
	}
	rc = EXIT_FAIL;
	if (json_parse(j, resp->p ? resp->p : "", resp->len, true, err)) {
		memset(j, 0, sizeof *j);
		snprintf(m, sizeof m, "malformed reply from stereod (HTTP %d): %s", status, err);
		goto failed;
	}
	if (status >= 200 && status < 300)
		return EXIT_OK;
	char e[ERRBUF];
	if (cli_json_str(j, 0, "error", e, sizeof e) || !*e)
		snprintf(e, sizeof e, "%s", http_reason(status));
	snprintf(m, sizeof m, "%s (HTTP %d)", e, status);
	json_free(j);
	memset(j, 0, sizeof *j);
failed:
	if (msg) {
		memcpy(msg, m, IPC_MSG);
		return rc;
	}
	return cli_fail(c->json, rc, what, m);
}

/* POST body to path; with --json print stereod's answer. Errors are reported. */
static CLI_UNUSED int ipc_post(const struct ipc *c, const char *what, const char *path,
			       const char *body, size_t len)
{
	struct buf resp = {0};
	struct json j;
	int rc = ipc_request(c, what, "POST", path, body, len, NULL, &resp, &j);
	if (!rc) {
		if (c->json)
			cli_print_token(&j, 0);
		json_free(&j);
	}
	buf_wipe(&resp);
	return rc;
}

/* GET a list route: the reply's array `key` in *arr. Non-zero (already reported) when the
 * request fails or the reply has no such array; resp and j are freed then. */
static CLI_UNUSED int ipc_get_list(const struct ipc *c, const char *path, const char *key,
				   struct buf *resp, struct json *j, int *arr)
{
	int rc = ipc_request(c, "list", "GET", path, NULL, 0, NULL, resp, j);
	if (rc) {
		buf_free(resp);
		return rc;
	}
	*arr = json_get(j, 0, key);
	if (*arr >= 0 && json_kind(j, *arr) == JSON_ARRAY)
		return EXIT_OK;
	char m[128];
	snprintf(m, sizeof m, "malformed reply from stereod: no %s array", key);
	json_free(j);
	buf_free(resp);
	return cli_fail(c->json, EXIT_FAIL, "list", m);
}

/* Append s to b percent-encoded for a URL path segment. */
static CLI_UNUSED void ipc_path_escape(struct buf *b, const char *s)
{
	for (; *s; s++) {
		unsigned char ch = *s;
		if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
		    strchr("-._~", ch))
			buf_putc(b, ch);
		else
			buf_printf(b, "%%%02X", ch);
	}
}
#endif
