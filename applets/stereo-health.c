/* stereo-health.c - readiness probe over stereod's unix socket: the exit code says whether
 * the guest is up (0 ready/healthy, 1 booting/degraded/shutdown, 3 stereod unreachable), so
 * it can be used directly in scripts and container-style health checks.
 *
 * Spec: docs/protocol.md (lifecycle), docs/ipc-api.md; exit codes in README.md "Conventions"
 */
/*
APPLET(stereo-health)

config STEREO_HEALTH
	bool "stereo-health: readiness probe for shell scripts"
	default y
	help
	  usage: stereo-health [--socket PATH] [--timeout DUR] [--json] [--agents]
	                       [--wait TIMEOUT] [--interval DUR]

	  Print stereod's lifecycle state and exit 0 when it is ready or healthy.

	  --agents         also list the agents (GET /v1/agents)
	  --wait TIMEOUT   poll until ready or healthy, at most TIMEOUT; stops early
	                   on shutdown
	  --interval DUR   time between polls with --wait (default 200ms)
	  --socket PATH    stereod's socket (default $STEREO_SOCKET, else
	                   /run/stereos/stereosd.sock)
	  --timeout DUR    per request (default 10s)
	  --json           print {"state","uptime_seconds",...} as JSON (with
	                   --agents, "agents" is always present)

	  Exit codes: 0 ready or healthy, 1 booting, degraded or shutdown (or a
	  refused request), 2 usage, 3 stereod unreachable or timed out.
*/
#include "common/stereo.h"
#include "applets/cli.h"
#include <getopt.h>
#include <time.h>

struct probe {
	struct buf health, agents;   /* reply bodies */
	struct json hj, aj;
	char state[64];
	char msg[IPC_MSG];
};

static void probe_free(struct probe *p)
{
	if (p->hj.tok)
		json_free(&p->hj);
	if (p->aj.tok)
		json_free(&p->aj);
	buf_free(&p->health);
	buf_free(&p->agents);
	memset(p, 0, sizeof *p);
}

/* One look at stereod: 0 when it answered (p->state set), else the exit code (p->msg). */
static int probe(const struct ipc *c, bool agents, struct probe *p)
{
	probe_free(p);
	int rc = ipc_request(c, "health", "GET", "/v1/health", NULL, 0, p->msg, &p->health, &p->hj);
	if (rc)
		return rc;
	if (cli_json_str(&p->hj, 0, "state", p->state, sizeof p->state) || !*p->state) {
		snprintf(p->msg, sizeof p->msg, "malformed reply from stereod: no state");
		return EXIT_FAIL;
	}
	if (!agents)
		return EXIT_OK;
	rc = ipc_request(c, "agents", "GET", "/v1/agents", NULL, 0, p->msg, &p->agents, &p->aj);
	int arr = rc ? -1 : json_get(&p->aj, 0, "agents");
	if (!rc && (arr < 0 || json_kind(&p->aj, arr) != JSON_ARRAY)) {
		snprintf(p->msg, sizeof p->msg, "malformed reply from stereod: no agents array");
		rc = EXIT_FAIL;
	}
	return rc;
}

static bool is_up(const char *state)
{
	return !strcmp(state, "ready") || !strcmp(state, "healthy");
}

static void report(const struct ipc *c, bool agents, struct probe *p)
{
	int arr = agents ? json_get(&p->aj, 0, "agents") : -1;
	if (!c->json) {
		printf("%s\n", p->state);
		if (agents)
			cli_print_agents(&p->aj, arr);
		return;
	}
	if (!agents) {
		cli_print_token(&p->hj, 0);
		return;
	}
	/* the health object with "agents" taken from /v1/agents */
	struct buf b = {0};
	struct jw w;
	jw_init(&w, &b);
	jw_obj(&w);
	for (int k = 1; k < p->hj.ntok; k = json_next(&p->hj, k + 1)) {
		if (json_is_key(&p->hj, k, "agents"))
			continue;
		const jsmntok_t *v = &p->hj.tok[k + 1];
		struct buf name = {0};
		json_str(&p->hj, k, &name, JSON_STR_NO_NUL, NULL);
		jw_key(&w, buf_cstr(&name));
		int q = v->type == JSMN_STRING;
		jw_raw(&w, p->hj.s + v->start - q, v->end - v->start + 2 * q);
		buf_free(&name);
	}
	jw_key(&w, "agents");
	jw_raw(&w, p->aj.s + p->aj.tok[arr].start, p->aj.tok[arr].end - p->aj.tok[arr].start);
	jw_obj_end(&w);
	printf("%s\n", buf_cstr(&b));
	buf_free(&b);
}

int stereo_health_main(int argc, char **argv)
{
	static const struct option opts[] = {
		IPC_OPTIONS,
		{"agents", no_argument, NULL, 'a'},
		{"wait", required_argument, NULL, 'w'},
		{"interval", required_argument, NULL, 'i'},
		{0},
	};
	struct ipc c;
	ipc_init(&c);
	bool agents = false;
	long long wait_ms = 0, interval_ms = 200;
	int opt;
	optind = 0;
	while ((opt = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
		int r = ipc_opt(&c, opt, optarg);
		if (r == EXIT_USAGE)
			return r;
		if (!r)
			continue;
		switch (opt) {
		case 'a': agents = true; break;
		case 'w':
			if (parse_duration_ms(optarg, &wait_ms) || wait_ms > INT32_MAX)
				return usage_error("bad duration for --wait: '%s' (like 500ms, 30s)", optarg);
			break;
		case 'i':
			if (parse_duration_ms(optarg, &interval_ms) || interval_ms <= 0 || interval_ms > INT32_MAX)
				return usage_error("bad duration for --interval: '%s'", optarg);
			break;
		case ':': return usage_error("option '%s' needs a value", argv[optind - 1]);
		default: return usage_error("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		return usage_error("unexpected argument '%s'", argv[optind]);
	int64_t deadline = now_ms() + wait_ms;
	int per_request = c.timeout_ms;
	struct probe p = {0};
	int rc;
	for (;;) {
		/* with --wait, no single request may outlive the deadline */
		int64_t left = deadline - now_ms();
		c.timeout_ms = wait_ms && left < per_request ? (left > 0 ? (int)left : 1) : per_request;
		rc = probe(&c, agents, &p);
		if (!rc && (is_up(p.state) || !strcmp(p.state, "shutdown")))
			break;
		left = deadline - now_ms();
		if (left <= 0)
			break;
		long long ms = left < interval_ms ? left : interval_ms;
		struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
		while (nanosleep(&ts, &ts) && errno == EINTR)
			;
		/* the deadline fell during the pause: the last answer stands (no request cut short) */
		if (now_ms() >= deadline)
			break;
	}
	if (rc) {
		rc = cli_fail(c.json, rc, "health", p.msg);
	} else {
		report(&c, agents, &p);
		rc = is_up(p.state) ? EXIT_OK : EXIT_FAIL;
	}
	probe_free(&p);
	return rc;
}
