/* cli.h - what the four client applets (stereo-host, stereo-secret, stereo-mount,
 * stereo-health) share and nothing else uses: failure reporting in the house form (and as
 * {"ok":false,...} with --json), printing text that came from the guest, reading a value from
 * a file or stdin without leaving copies of it in memory, and, for the three guest CLIs, one
 * HTTP call to stereod's unix socket mapped onto the exit codes. The code is in cli.c, linked
 * into the binary like every .c in applets/ that declares no applet.
 *
 * Spec: README.md "Conventions" (exit codes, --json); docs/ipc-api.md */
#ifndef STEREO_APPLETS_CLI_H
#define STEREO_APPLETS_CLI_H
#include "common/stereo.h"
#include <fcntl.h>
#include <unistd.h>

/* Text from the guest may hold anything: control characters are printed escaped. */
void cli_put_safe(FILE *f, const char *s, size_t n);

/* "APPLET: WHAT: MSG" on stderr, and {"ok":false,"error":MSG} on stdout with --json. */
int cli_fail(bool json, int code, const char *what, const char *msg);

/* Read all of PATH ("-" = stdin) up to max bytes into a buffer reserved once, so a secret is
 * never left behind in freed memory by a realloc. 0 or -1 with err. */
int cli_read_input(const char *path, struct buf *out, size_t max, char *err);

#define CLI_TTY_SECRET \
	"refusing to read a secret from a terminal: pipe it in, or use --from-file or --from-env"
#define CLI_NOT_UTF8 "the value is not valid UTF-8 (JSON strings cannot carry it)"

/* The string member `key` of object token obj into out ("" and -1 when absent or not a
 * string). */
int cli_json_str(const struct json *j, int obj, const char *key, char *out,
		 size_t n);

/* Agent status objects (protocol.md §3), one line each. */
void cli_print_agents(const struct json *j, int arr);

/* Print token i of j (a whole JSON value) as one line. */
void cli_print_token(const struct json *j, int i);

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

void ipc_init(struct ipc *c);

/* 1 = not one of IPC_OPTIONS, 0 = handled, EXIT_USAGE = bad value (reported); --help
 * anywhere prints the help and exits 0. */
int ipc_opt(struct ipc *c, int opt, const char *arg);

#define IPC_MSG (2 * ERRBUF)

/* One request. Returns 0 with the reply body in resp and parsed (root object) into j, which
 * the caller frees; or the exit code: 3 when stereod cannot be reached or did not answer in
 * time, 1 when it refused (HTTP >= 400) or answered nonsense. The failure is reported now,
 * or, when msg (IPC_MSG bytes) is given, left there for the caller to report later. */
int ipc_request(const struct ipc *c, const char *what, const char *method,
		const char *path, const char *body, size_t len, char *msg,
		struct buf *resp, struct json *j);

/* POST body to path; with --json print stereod's answer. Errors are reported. */
int ipc_post(const struct ipc *c, const char *what, const char *path,
	     const char *body, size_t len);

/* GET a list route: the reply's array `key` in *arr. Non-zero (already reported) when the
 * request fails or the reply has no such array; resp and j are freed then. */
int ipc_get_list(const struct ipc *c, const char *path, const char *key,
		 struct buf *resp, struct json *j, int *arr);

/* Append s to b percent-encoded for a URL path segment. */
void ipc_path_escape(struct buf *b, const char *s);
#endif
