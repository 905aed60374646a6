/* stats.c - the page server's counters: per clone and in total (every clone served so far),
 * the fault-latency histogram, the stats lines on stderr (exit and SIGUSR1) and the --stats
 * JSON file (written atomically). Finished clones stay in the file through a ring of the
 * most recent ones; the totals keep everything. print_counters and write_stats read every
 * worker's clones: the caller holds every worker's mutex and the server's (serve.c). */
#include "serve.h"

void lat_record(struct clone *C, uint64_t ns)
{
	uint64_t us = ns / 1000;
	int b = 0;
	while (us && b < LAT_BUCKETS - 1) {
		us >>= 1;
		b++;
	}
	C->c.lat[b]++;
}

void stats_add(struct counters *to, const struct counters *c)
{
	const uint64_t *a = (const uint64_t *)c;
	uint64_t *t = (uint64_t *)to;
	for (size_t i = 0; i < sizeof *c / sizeof(uint64_t); i++)
		t[i] += a[i];
}

static uint64_t lat_quantile(const struct counters *c, double q)
{
	uint64_t total = 0, acc = 0;
	for (int b = 0; b < LAT_BUCKETS; b++)
		total += c->lat[b];
	if (!total)
		return 0;
	for (int b = 0; b < LAT_BUCKETS; b++) {
		acc += c->lat[b];
		if ((double)acc >= q * (double)total)
			return b ? 1ULL << b : 1;   /* upper bound of the bucket, in us */
	}
	return 1ULL << (LAT_BUCKETS - 1);
}

static struct counters totals(const struct server *S)
{
	struct counters t = S->gone;
	struct clone *C;
	FOR_EACH_CLONE(S, C)
		stats_add(&t, &C->c);
	return t;
}

void print_clone(const struct clone *C, const char *what)
{
	const struct counters *c = &C->c;
	fprintf(stderr,
		"%s: stats clone=%u pid=%d %s faults=%llu fault_pages=%llu pages_copied=%llu "
		"pages_zeroed=%llu removes=%llu eagain=%llu prefetch_pages=%llu/%llu prefetch_done=%d "
		"fault_us_p50=%llu fault_us_p99=%llu\n",
		prog, C->id, (int)C->peer.pid, what, (unsigned long long)c->faults,
		(unsigned long long)c->fault_pages, (unsigned long long)c->pages_copied,
		(unsigned long long)c->pages_zeroed, (unsigned long long)c->removes,
		(unsigned long long)c->eagain, (unsigned long long)c->prefetch_pages,
		(unsigned long long)C->npages, C->pf.done, (unsigned long long)lat_quantile(c, 0.5),
		(unsigned long long)lat_quantile(c, 0.99));
}

void print_counters(const struct server *S)
{
	struct counters t = totals(S);
	const struct counters *c = &t;
	fprintf(stderr,
		"%s: stats faults=%llu fault_pages=%llu pages_copied=%llu pages_zeroed=%llu "
		"bytes_copied=%llu removes=%llu removed_pages=%llu eagain=%llu eexist=%llu "
		"prefetch_pages=%llu prefetch_ms=%.3f fault_us_p50=%llu fault_us_p99=%llu "
		"clones=%u live=%zu\n",
		prog, (unsigned long long)c->faults, (unsigned long long)c->fault_pages,
		(unsigned long long)c->pages_copied, (unsigned long long)c->pages_zeroed,
		(unsigned long long)c->bytes_copied, (unsigned long long)c->removes,
		(unsigned long long)c->removed_pages, (unsigned long long)c->eagain,
		(unsigned long long)c->eexist, (unsigned long long)c->prefetch_pages,
		(double)c->prefetch_ns / 1e6, (unsigned long long)lat_quantile(c, 0.5),
		(unsigned long long)lat_quantile(c, 0.99), S->accepted, S->live);
	struct clone *C;
	FOR_EACH_CLONE(S, C)
		if (C->state == CL_SERVING)
			print_clone(C, "serving");
}

static void counters_json(struct jw *w, const struct counters *c)
{
#define K(name) jw_key(w, #name), jw_uint(w, c->name)
	K(faults); K(fault_pages); K(pages_copied); K(pages_zeroed); K(bytes_copied);
	K(removes); K(removed_pages); K(eagain); K(eexist); K(wakes); K(spurious); K(layer_waits);
	K(prefetch_pages); K(prefetch_bytes); K(prefetch_ns); K(trace_pages);
#undef K
	jw_key(w, "fault_us_p50");
	jw_uint(w, lat_quantile(c, 0.5));
	jw_key(w, "fault_us_p99");
	jw_uint(w, lat_quantile(c, 0.99));
	jw_key(w, "fault_latency_us_log2");
	jw_arr(w);
	for (int i = 0; i < LAT_BUCKETS; i++)
		jw_uint(w, c->lat[i]);
	jw_arr_end(w);
}

static void clone_json(struct jw *w, unsigned id, pid_t pid, const char *state, uint64_t npages,
		       bool done, const uint64_t *first, unsigned nfirst, const struct counters *c)
{
	jw_obj(w);
	jw_kint(w, "id", id);
	jw_kint(w, "pid", pid);
	jw_kstr(w, "state", state);
	jw_kint(w, "pages", (long long)npages);
	jw_kbool(w, "prefetch_done", done);
	jw_key(w, "prefetch_first");
	jw_arr(w);
	for (unsigned i = 0; i < nfirst; i++)
		jw_uint(w, first[i]);
	jw_arr_end(w);
	counters_json(w, c);
	jw_obj_end(w);
}

void write_stats(const struct server *S, const char *path)
{
	struct counters t = totals(S);
	struct buf b = {0};
	struct jw w;
	bool done = S->accepted > 0;
	struct clone *C;
	FOR_EACH_CLONE(S, C)
		if (C->state == CL_SERVING && C->pf.active && !C->pf.done)
			done = false;
	if (S->prefetch_all && !S->live && S->ngone) {   /* only finished clones: the last one says */
		const struct clone_summary *g = &S->ring[(S->ngone - 1) % SUMMARY_RING];
		done = g->prefetch_done;
	}
	jw_init(&w, &b);
	jw_obj(&w);
	counters_json(&w, &t);
	jw_kbool(&w, "prefetch_done", done);
	jw_kint(&w, "clones_served", S->accepted);
	jw_kint(&w, "clones_live", (long long)S->live);
	jw_key(&w, "clones");
	jw_arr(&w);
	unsigned from = S->ngone > SUMMARY_RING ? S->ngone - SUMMARY_RING : 0;
	for (unsigned i = from; i < S->ngone; i++) {
		const struct clone_summary *g = &S->ring[i % SUMMARY_RING];
		clone_json(&w, g->id, g->pid, g->killed ? "killed" : "gone", g->npages, g->prefetch_done,
			   g->pf_first, g->npf_first, &g->c);
	}
	FOR_EACH_CLONE(S, C) {
		if (C->state != CL_SERVING)
			continue;
		clone_json(&w, C->id, C->peer.pid, "serving", C->npages, C->pf.done, C->pf_first,
			   C->npf_first, &C->c);
	}
	jw_arr_end(&w);
	jw_obj_end(&w);
	int r = buf_putc(&b, '\n');
	if (!r)
		r = atomic_write(path, b.p, b.len, 0644, (uid_t)-1, (gid_t)-1);
	if (r)
		warnx("serve: writing stats %s: %s", path, strerror(-r));
	buf_free(&b);
}
