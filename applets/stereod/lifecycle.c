/* lifecycle.c - the state machine booting -> ready -> healthy | degraded -> shutdown, and the
 * health payload. Every transition goes through lc_event, which logs it and reports it through
 * the lc_notify callback (stereod.c pushes it to the subscribed connections), from this one
 * place; nothing here knows about connections.
 * Spec: docs/protocol.md (lifecycle)
 */
#include "stereod.h"

static const char *const state_names[] = {
	[ST_BOOTING] = "booting", [ST_READY] = "ready", [ST_HEALTHY] = "healthy",
	[ST_DEGRADED] = "degraded", [ST_SHUTDOWN] = "shutdown",
};

const char *lc_state_name(enum lc_state s) { return state_names[s]; }

/* next[state][event]: the state an event leads to; -1 = ignored in that state.
 * Upstream only promotes ready -> healthy; ours also degrades on agent errors or when agentd
 * disappears after having answered, and recovers when an agent runs cleanly again. */
static const signed char next[5][5] = {
	/*               STARTED   RUNNING     ERROR        LOST         SHUTDOWN */
	[ST_BOOTING]  = {ST_READY, -1,         -1,          -1,          ST_SHUTDOWN},
	[ST_READY]    = {-1,       ST_HEALTHY, ST_DEGRADED, ST_DEGRADED, ST_SHUTDOWN},
	[ST_HEALTHY]  = {-1,       -1,         ST_DEGRADED, ST_DEGRADED, ST_SHUTDOWN},
	[ST_DEGRADED] = {-1,       ST_HEALTHY, -1,          -1,          ST_SHUTDOWN},
	[ST_SHUTDOWN] = {-1,       -1,         -1,          -1,          -1},
};

void lc_event(struct stereod *d, enum lc_event ev, const char *message)
{
	int to = next[d->state][ev];
	if (to < 0 || to == (int)d->state)
		return;
	log_info("state change", "from=%s to=%s", state_names[d->state], state_names[to]);
	d->state = to;
	if (to == ST_HEALTHY)
		d->ever_healthy = true;
	if (to == ST_DEGRADED)
		snprintf(d->degraded_reason, sizeof d->degraded_reason, "%s", message ? message : "");
	if (d->lc_notify)
		d->lc_notify(d->lc_ctx, to, message);
}

/* Upstream never reports degraded, and its Go host client keeps polling (then fails the boot)
 * while it sees it; so a client that did not say hello sees the state upstream would show (ready,
 * or healthy once an agent has run: upstream never leaves healthy) plus a "degraded" field. */
void lc_health_payload(struct stereod *d, struct jw *w, bool upstream_view)
{
	bool hide = upstream_view && d->state == ST_DEGRADED;
	jw_obj(w);
	jw_kstr(w, "state", hide ? state_names[d->ever_healthy ? ST_HEALTHY : ST_READY] : state_names[d->state]);
	const char *agents;
	size_t len;
	if (agentd_agents(d->agentd, &agents, &len)) {
		jw_key(w, "agents");
		jw_raw(w, agents, len);
	}
	jw_kint(w, "uptime_seconds", (now_ms() - d->started_ms) / 1000);
	if (hide) {
		jw_key(w, "degraded");
		jw_obj(w);
		jw_kstr(w, "reason", d->degraded_reason[0] ? d->degraded_reason : "degraded");
		jw_obj_end(w);
	}
	jw_obj_end(w);
}
