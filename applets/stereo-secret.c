/* stereo-secret.c - set, list and remove stereod's secrets from a shell inside the guest,
 * over stereod's unix-socket HTTP API. Values come from stdin, a file or a variable, never
 * from argv, and are wiped from memory once sent.
 *
 * Spec: docs/ipc-api.md (secrets); exit codes in README.md "Conventions"
 */
/*
APPLET(stereo-secret)

config STEREO_SECRET
	bool "stereo-secret: manage secrets through stereod"
	default y
	help
	  usage: stereo-secret [--socket PATH] [--timeout DUR] [--json] COMMAND

	    set NAME [--mode 0600] [--from-file F | --from-env VAR]
	                   store a secret; the value is read from stdin unless
	                   --from-file or --from-env says otherwise (exact bytes,
	                   a trailing newline included; UTF-8 text only)
	    list [--json]  the secret names, one per line
	    rm NAME        remove a secret (removing a missing one succeeds)

	  --socket PATH  stereod's socket (default $STEREO_SOCKET, else
	                 /run/stereos/stereosd.sock)
	  --timeout DUR  per request (default 10s)
	  --json         print the reply as JSON; failures as {"ok":false,...}

	  Exit codes: 0 ok, 1 stereod refused (its error is printed), 2 usage,
	  3 stereod unreachable or timed out.
*/
#include "common/stereo.h"
#include "applets/cli.h"
#include <getopt.h>
#include <sys/prctl.h>

#define MAX_VALUE (HTTP_MAX_BODY - 4096)

static int secret_set(struct ipc *c, const char *name, long long mode, const char *file,
		      const char *env)
{
	char err[ERRBUF];
	struct buf v = {0}, body = {0};
	prctl(PR_SET_DUMPABLE, 0);   /* no core dump with the value in it */
	if (env) {
		char *e = getenv(env);
		if (!e)
			return cli_fail(c->json, EXIT_USAGE, "set", "the variable named by --from-env is not set");
		size_t n = strlen(e);
		buf_reserve(&v, n + 1);
		buf_append(&v, e, n);
		explicit_bzero(e, n);   /* /proc/PID/environ reads this memory */
	} else if (!file && isatty(0)) {
		return cli_fail(c->json, EXIT_USAGE, "set", CLI_TTY_SECRET);
	} else if (cli_read_input(file ? file : "-", &v, MAX_VALUE, err)) {
		buf_wipe(&v);
		return cli_fail(c->json, EXIT_FAIL, "set", err);
	}
	if (!utf8_valid(v.p ? v.p : "", v.len)) {
		buf_wipe(&v);
		return cli_fail(c->json, EXIT_FAIL, "set", CLI_NOT_UTF8);
	}
	buf_reserve(&body, v.len * 6 + strlen(name) * 6 + 64);   /* one allocation: no stray copies */
	struct jw w;
	jw_init(&w, &body);
	jw_obj(&w);
	jw_kstr(&w, "name", name);
	jw_key(&w, "value");
	jw_strn(&w, v.p ? v.p : "", v.len);
	jw_kint(&w, "mode", mode);
	jw_obj_end(&w);
	buf_wipe(&v);
	int rc = ipc_post(c, "set", "/v1/secrets", body.p, body.len);
	buf_wipe(&body);
	return rc;
}

static int secret_list(struct ipc *c)
{
	struct buf resp = {0};
	struct json j;
	int arr, rc = ipc_get_list(c, "/v1/secrets", "secrets", &resp, &j, &arr);
	if (rc)
		return rc;
	if (c->json) {
		cli_print_token(&j, 0);
	} else {
		for (int i = 0, t; (t = json_array_item(&j, arr, i)) >= 0; i++) {
			struct buf s = {0};
			if (!json_str(&j, t, &s, JSON_STR_NO_NUL, NULL)) {
				cli_put_safe(stdout, buf_cstr(&s), s.len);
				putchar('\n');
			}
			buf_free(&s);
		}
	}
	json_free(&j);
	buf_free(&resp);
	return rc;
}

static int secret_rm(struct ipc *c, const char *name)
{
	struct buf path = {0}, resp = {0};
	struct json j;
	buf_puts(&path, "/v1/secrets/");
	ipc_path_escape(&path, name);
	int rc = ipc_request(c, "rm", "DELETE", buf_cstr(&path), NULL, 0, NULL, &resp, &j);
	if (!rc) {
		if (c->json)
			cli_print_token(&j, 0);
		json_free(&j);
	}
	buf_free(&path);
	buf_free(&resp);
	return rc;
}

int stereo_secret_main(int argc, char **argv)
{
	static const struct option opts[] = {
		IPC_OPTIONS,
		{"mode", required_argument, NULL, 'm'},
		{"from-file", required_argument, NULL, 'f'},
		{"from-env", required_argument, NULL, 'e'},
		{0},
	};
	struct ipc c;
	ipc_init(&c);
	long long mode = 0600;
	const char *file = NULL, *env = NULL;
	bool value_opt = false;
	int opt;
	optind = 0;
	while ((opt = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
		int r = ipc_opt(&c, opt, optarg);
		if (r == EXIT_USAGE)
			return r;
		if (!r)
			continue;
		char *end;
		switch (opt) {
		case 'm':
			errno = 0;
			mode = strtoll(optarg, &end, 8);
			if (errno || end == optarg || *end || mode < 0 || mode > 0777)
				return usage_error("bad --mode '%s' (octal, at most 0777)", optarg);
			value_opt = true;
			break;
		case 'f': file = optarg; value_opt = true; break;
		case 'e': env = optarg; value_opt = true; break;
		case ':': return usage_error("option '%s' needs a value", argv[optind - 1]);
		default: return usage_error("unknown option '%s'", argv[optind - 1]);
		}
	}
	int n = argc - optind;
	char **a = argv + optind;
	if (!n)
		return usage_error("missing COMMAND (set, list or rm)");
	if (file && env)
		return usage_error("--from-file and --from-env exclude each other");
	if (strcmp(a[0], "set") && value_opt)
		return usage_error("--mode, --from-file and --from-env belong to set");
	if (!strcmp(a[0], "set") && n == 2)
		return secret_set(&c, a[1], mode, file, env);
	if (!strcmp(a[0], "list") && n == 1)
		return secret_list(&c);
	if (!strcmp(a[0], "rm") && n == 2)
		return secret_rm(&c, a[1]);
	if (!strcmp(a[0], "set") || !strcmp(a[0], "rm") || !strcmp(a[0], "list"))
		return usage_cmd(a[0]);   /* the command's line of the help text */
	return usage_error("unknown command '%s' (set, list or rm)", a[0]);
}
