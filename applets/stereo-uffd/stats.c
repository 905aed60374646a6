/* stats.c - the page server's counters: the fault-latency histogram, the one-line summary on
 * stderr (exit and SIGUSR1) and the --stats JSON file (written atomically). */
#include "serve.h"

void lat_record(struct server *S, uint64_t ns)
{
	uint64_t us = ns / 1000;
	int b = 0;
	while (us && b < LAT_BUCKETS - 1) {
		us >>= 1;
		b++;
	}
	S->c.lat[b]++;
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

void print_counters(const struct server *S)
{
	const struct counters *c = &S->c;
	fprintf(stderr,
		"%s: stats faults=%llu fault_pages=%llu pages_copied=%llu pages_zeroed=%llu "
		"bytes_copied=%llu removes=%llu removed_pages=%llu eagain=%llu eexist=%llu "
		"prefetch_pages=%llu prefetch_ms=%.3f fault_us_p50=%llu fault_us_p99=%llu\n",
		prog, (unsigned long long)c->faults, (unsigned long long)c->fault_pages,
		(unsigned long long)c->pages_copied, (unsigned long long)c->pages_zeroed,
		(unsigned long long)c->bytes_copied, (unsigned long long)c->removes,
		(unsigned long long)c->removed_pages, (unsigned long long)c->eagain,
		(unsigned long long)c->eexist, (unsigned long long)c->prefetch_pages,
		(double)c->prefetch_ns / 1e6, (unsigned long long)lat_quantile(c, 0.5),
		(unsigned long long)lat_quantile(c, 0.99));
}

void write_stats(const struct server *S, const char *path)
{
	const struct counters *c = &S->c;
	struct buf b = {0};
	struct jw w;
	jw_init(&w, &b);
	jw_obj(&w);
#define K(name) jw_key(&w, #name), jw_uint(&w, c->name)
	K(faults); K(fault_pages); K(pages_copied); K(pages_zeroed); K(bytes_copied);
	K(removes); K(removed_pages); K(eagain); K(eexist); K(wakes); K(spurious);
	K(prefetch_pages); K(prefetch_bytes); K(prefetch_ns);
#undef K
	jw_kbool(&w, "prefetch_done", S->pf.done);
	jw_key(&w, "fault_latency_us_log2");
	jw_arr(&w);
	for (int i = 0; i < LAT_BUCKETS; i++)
		jw_uint(&w, c->lat[i]);
	jw_arr_end(&w);
	jw_obj_end(&w);
	buf_putc(&b, '\n');
	int r = atomic_write(path, b.p, b.len, 0644, (uid_t)-1, (gid_t)-1);
	if (r)
		warnx("serve: writing stats %s: %s", path, strerror(-r));
	buf_free(&b);
}

