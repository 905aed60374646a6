/* agentd.c - the agentd poller: GET /v1/health then GET /v1/agents over agentd's unix socket
 * every --poll-interval, on the event loop (never blocking the servers). The agents array is
 * kept pre-rendered for the health replies, and each poll's outcome becomes a lifecycle event.
 * agentd being unreachable before it ever answered is normal during boot: logged once.
 * Spec: shared/spec/protocol.md §4, §7
 */
#include "stereod.h"

#define AGENTS_MAX 256
#define POLL_TIMEOUT_MS 2000
/* Caps on agentd's text, so a health reply stays far under the 1 MiB line limit however
 * agentd fills its fields (an escaped byte can take 6 bytes on the wire): each field is cut
 * (at a UTF-8 boundary) and agents past AGENTS_JSON_MAX of rendered JSON are left out. */
#define AGENT_NAME_MAX 256
#define AGENT_SESSION_MAX 256
#define AGENT_ERROR_MAX 1024
#define AGENTS_JSON_MAX (256 * 1024)

/* Cut b to at most max bytes without splitting a UTF-8 sequence. */
static void cap_text(struct buf *b, size_t max)
{
	if (b->len <= max)
		return;
	size_t n = max;
	while (n > 0 && ((unsigned char)b->p[n] & 0xc0) == 0x80)
		n--;
	b->len = n;
	b->p[n] = 0;
}

static void schedule(struct stereod *d, int64_t ms);

static void poll_failed(struct stereod *d, const char *what, const char *why)
{
	log_debug("agentd poll failed", "what=\"%s\" err=\"%s\"", what, why);
	if (!d->agentd_seen) {
		if (!d->agentd_down_logged)
			log_info("agentd not reachable yet (normal during boot)", "socket=%s err=\"%s: %s\"",
				 d->agentd_socket, what, why);
		d->agentd_down_logged = true;
		return;
	}
	if (!d->agentd_down_logged)
		log_warn("agentd became unreachable", "err=\"%s: %s\"", what, why);
	d->agentd_down_logged = true;
	d->nagents = 0;
	d->agents_json.len = 0;
	lc_event(d, EV_AGENTD_LOST, "agentd is unreachable");
}

/* Render agentd's array of agent status objects in our canonical form; -1 if malformed. */
static int render_agents(const char *body, size_t len, struct buf *out, size_t *count,
			 bool *running, struct buf *error_agent)
{
	struct json j;
	char err[ERRBUF];
	if (json_parse(&j, body, len, false, err) || json_kind(&j, 0) != JSON_ARRAY) {
		log_debug("agents list is not a JSON array", "err=\"%s\"", err);
		json_free(&j);
		return -1;
	}
	struct jw w;
	jw_init(&w, out);
	jw_arr(&w);
	int n = j.tok[0].size, rc = 0;
	*count = 0;
	for (int k = 0; k < n && k < AGENTS_MAX && out->len < AGENTS_JSON_MAX; k++) {
		int a = json_array_item(&j, 0, k);
		struct buf name = {0}, session = {0}, error = {0};
		bool run = false;
		int64_t restarts = 0;
		int ni = json_get(&j, a, "name"), ri = json_get(&j, a, "running"),
		    si = json_get(&j, a, "session"), xi = json_get(&j, a, "restarts"),
		    ei = json_get(&j, a, "error");
		if (json_kind(&j, a) != JSON_OBJECT || json_str(&j, ni, &name, JSON_STR_NO_NUL, err) ||
		    (ri >= 0 && json_bool(&j, ri, &run)) ||
		    (si >= 0 && json_kind(&j, si) != JSON_NULL && json_str(&j, si, &session, JSON_STR_NO_NUL, err)) ||
		    (xi >= 0 && json_i64(&j, xi, &restarts)) ||
		    (ei >= 0 && json_kind(&j, ei) != JSON_NULL && json_str(&j, ei, &error, JSON_STR_NO_NUL, err))) {
			rc = -1;
		} else {
			cap_text(&name, AGENT_NAME_MAX);
			cap_text(&session, AGENT_SESSION_MAX);
			cap_text(&error, AGENT_ERROR_MAX);
			jw_obj(&w);
			jw_key(&w, "name");
			jw_strn(&w, name.p ? name.p : "", name.len);
			jw_kbool(&w, "running", run);
			if (session.len) {
				jw_key(&w, "session");
				jw_strn(&w, session.p, session.len);
			}
			jw_kint(&w, "restarts", restarts);
			if (error.len) {
				jw_key(&w, "error");
				jw_strn(&w, error.p, error.len);
				if (!error_agent->len)
					buf_append(error_agent, name.p ? name.p : "?", name.len ? name.len : 1);
			}
			jw_obj_end(&w);
			*running |= run;
			(*count)++;
		}
		buf_free(&name);
		buf_free(&session);
		buf_free(&error);
		if (rc)
			break;
	}
	jw_arr_end(&w);
	json_free(&j);
	return rc;
}

static void agents_done(void *ctx, int status, const char *body, size_t len, const char *err)
{
	struct stereod *d = ctx;
	d->poll_in_flight = false;
	if (d->stopping) {
		loop_stop(d->loop);
		return;
	}
	schedule(d, d->poll_ms);
	if (err || status != 200) {
		poll_failed(d, "GET /v1/agents", err ? err : "unexpected HTTP status");
		return;
	}
	struct buf agents = {0}, error_agent = {0};
	size_t count = 0;
	bool running = false;
	if (render_agents(body, len, &agents, &count, &running, &error_agent)) {
		buf_free(&agents);
		buf_free(&error_agent);
		poll_failed(d, "GET /v1/agents", "malformed agents list");
		return;
	}
	if (!d->agentd_seen || d->agentd_down_logged)
		log_info("agentd answered", "agents=%zu", count);
	d->agentd_seen = true;
	d->agentd_down_logged = false;
	buf_free(&d->agents_json);
	d->agents_json = agents;
	d->nagents = count;
	if (error_agent.len) {
		struct buf m = {0};
		buf_printf(&m, "agent %s reports an error", buf_cstr(&error_agent));
		lc_event(d, EV_AGENT_ERROR, m.p);
		buf_free(&m);
	} else if (running) {
		lc_event(d, EV_AGENT_RUNNING, "an agent is running");
	}
	buf_free(&error_agent);
}

static int timeout_ms(struct stereod *d)
{
	return d->poll_ms < POLL_TIMEOUT_MS ? (int)(d->poll_ms > 200 ? d->poll_ms : 200) : POLL_TIMEOUT_MS;
}

static void health_done(void *ctx, int status, const char *body, size_t len, const char *err)
{
	struct stereod *d = ctx;
	if (d->stopping) {
		d->poll_in_flight = false;
		loop_stop(d->loop);
		return;
	}
	if (err || status != 200) {
		d->poll_in_flight = false;
		schedule(d, d->poll_ms);
		poll_failed(d, "GET /v1/health", err ? err : "unexpected HTTP status");
		return;
	}
	int r = http_async(d->loop, d->agentd_socket, "GET", "/v1/agents", timeout_ms(d), agents_done, d);
	if (r) {
		d->poll_in_flight = false;
		schedule(d, d->poll_ms);
		poll_failed(d, "GET /v1/agents", strerror(-r));
	}
}

static void poll_now(struct loop *l, void *ctx)
{
	struct stereod *d = ctx;
	d->poll_timer = 0;
	if (d->state == ST_SHUTDOWN)
		return;
	int r = http_async(d->loop, d->agentd_socket, "GET", "/v1/health", timeout_ms(d), health_done, d);
	if (r) {
		schedule(d, d->poll_ms);
		poll_failed(d, "connecting", strerror(-r));
		return;
	}
	d->poll_in_flight = true;
}

static void schedule(struct stereod *d, int64_t ms)
{
	if (!d->poll_timer && d->state != ST_SHUTDOWN)
		d->poll_timer = loop_timer(d->loop, ms, poll_now, d);
}

void agentd_start(struct stereod *d) { schedule(d, 0); }

bool agentd_stop(struct stereod *d)
{
	if (d->poll_timer)
		loop_timer_cancel(d->loop, d->poll_timer);
	d->poll_timer = 0;
	return d->poll_in_flight;
}
