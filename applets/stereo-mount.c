/* stereo-mount.c - ask stereod to mount a shared directory (virtiofs or 9p), or list what it
 * has mounted, over stereod's unix-socket HTTP API.
 *
 * Spec: docs/ipc-api.md (mounts); exit codes in README.md "Conventions"
 */
/*
APPLET(stereo-mount)

config STEREO_MOUNT
	bool "stereo-mount: mount shared directories through stereod"
	default y
	help
	  usage: stereo-mount [--socket PATH] [--timeout DUR] [--json]
	                      TAG PATH --type virtiofs|9p [--ro]
	         stereo-mount [--socket PATH] [--json] list

	  Mount the host share TAG at PATH (absolute, not a system directory), or
	  list stereod's mounts in the order they were made (TAG PATH TYPE ro|rw).

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

static int do_mount(struct ipc *c, const char *tag, const char *path, const char *type, bool ro)
{
	struct buf body = {0};
	struct jw w;
	jw_init(&w, &body);
	jw_obj(&w);
	jw_kstr(&w, "tag", tag);
	jw_kstr(&w, "guest_path", path);
	jw_kstr(&w, "fs_type", type);
	jw_kbool(&w, "read_only", ro);
	jw_obj_end(&w);
	int rc = ipc_post(c, "mount", "/v1/mounts", body.p, body.len);
	buf_free(&body);
	return rc;
}

static int do_list(struct ipc *c)
{
	struct buf resp = {0};
	struct json j;
	int arr, rc = ipc_get_list(c, "/v1/mounts", "mounts", &resp, &j, &arr);
	if (rc)
		return rc;
	if (c->json) {
		cli_print_token(&j, 0);
	} else {
		for (int i = 0, m; (m = json_array_item(&j, arr, i)) >= 0; i++) {
			char tag[256], path[4096], type[32];
			bool ro = false;
			cli_json_str(&j, m, "tag", tag, sizeof tag);
			cli_json_str(&j, m, "guest_path", path, sizeof path);
			cli_json_str(&j, m, "fs_type", type, sizeof type);
			int t = json_get(&j, m, "read_only");
			if (t >= 0)
				json_bool(&j, t, &ro);
			cli_put_safe(stdout, tag, strlen(tag));
			putchar(' ');
			cli_put_safe(stdout, path, strlen(path));
			printf(" %s %s\n", type, ro ? "ro" : "rw");
		}
	}
	json_free(&j);
	buf_free(&resp);
	return rc;
}

int stereo_mount_main(int argc, char **argv)
{
	static const struct option opts[] = {
		IPC_OPTIONS,
		{"type", required_argument, NULL, 't'},
		{"ro", no_argument, NULL, 'r'},
		{0},
	};
	struct ipc c;
	ipc_init(&c);
	const char *type = NULL;
	bool ro = false;
	int opt;
	optind = 0;
	while ((opt = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
		int r = ipc_opt(&c, opt, optarg);
		if (r == EXIT_USAGE)
			return r;
		if (!r)
			continue;
		switch (opt) {
		case 't':
			if (strcmp(optarg, "virtiofs") && strcmp(optarg, "9p"))
				return usage_error("bad --type '%s' (virtiofs or 9p)", optarg);
			type = optarg;
			break;
		case 'r': ro = true; break;
		case ':': return usage_error("option '%s' needs a value", argv[optind - 1]);
		default: return usage_error("unknown option '%s'", argv[optind - 1]);
		}
	}
	int n = argc - optind;
	char **a = argv + optind;
	if (n == 1 && !strcmp(a[0], "list")) {
		if (type || ro)
			return usage_error("--type and --ro belong to mounting, not list");
		return do_list(&c);
	}
	if (n != 2)
		return usage_error("usage: TAG PATH --type virtiofs|9p [--ro], or list");
	if (!type)
		return usage_error("mounting needs --type virtiofs|9p");
	return do_mount(&c, a[0], a[1], type, ro);
}
