/* metrics.c - what get_metrics / GET /v1/metrics report: cpu, memory, disk of the root,
 * load, pressure stall information, uptime and the restore generation.
 *
 * Field names follow Wrenn's envd where it has the value (ts, cpu_count, cpu_used_pct,
 * mem_total, mem_used, mem_total_mib, mem_used_mib, disk_total, disk_used; bytes, "used"
 * memory = MemTotal - MemAvailable, disk used = total - available to users). cpu_used_pct is
 * measured between the last two one-second ticks of snapshot.c, so a request never waits.
 * Kernel numbers come from the real /proc whatever --root says; the disk is ROOT's.
 */
#include "applets/stereod/snapshot.h"
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#define PROC_CAP 8192

int cpu_sample_read(struct cpu_sample *c)
{
	struct buf b = {0};
	unsigned long long v[10] = {0};
	int rc = read_file("/proc/stat", &b, 65536);
	if (rc == 0 && sscanf(buf_cstr(&b), "cpu %llu %llu %llu %llu %llu %llu %llu %llu",
			      &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) >= 4) {
		/* user nice system idle iowait irq softirq steal; idle + iowait are not busy */
		c->total = 0;
		for (int i = 0; i < 8; i++)
			c->total += v[i];
		c->busy = c->total - v[3] - v[4];
	} else {
		rc = -EIO;
	}
	buf_free(&b);
	return rc;
}

static double cpu_used_pct(const struct snapshot *s)
{
	struct cpu_sample a = s->cpu_prev, b = s->cpu_last;
	if (b.total <= a.total)       /* one sample only: the average since boot */
		a = (struct cpu_sample){0, 0};
	if (b.total <= a.total || b.busy < a.busy)
		return 0;
	double pct = 100.0 * (double)(b.busy - a.busy) / (double)(b.total - a.total);
	return (double)(long long)(pct * 100 + 0.5) / 100;   /* two decimals, like envd */
}

/* "Key:   123 kB" from /proc/meminfo, in bytes; 0 when absent. */
static unsigned long long meminfo(const char *text, const char *key)
{
	const char *p = strstr(text, key);
	size_t n = strlen(key);
	while (p && !(p == text || p[-1] == '\n'))
		p = strstr(p + 1, key);
	if (!p || p[n] != ':')
		return 0;
	return strtoull(p + n + 1, NULL, 10) * 1024;
}

/* /proc/pressure/RES: {"some":{avg10,avg60,avg300,total},"full":{...}} */
static void psi_one(struct jw *w, const char *res)
{
	char path[64];
	struct buf b = {0};
	snprintf(path, sizeof path, "/proc/pressure/%s", res);
	if (read_file(path, &b, PROC_CAP)) {
		buf_free(&b);
		return;
	}
	jw_key(w, res);
	jw_obj(w);
	for (char *line = b.p; line && line < b.p + b.len;) {
		char *nl = memchr(line, '\n', b.p + b.len - line);
		char kind[8];
		double a10, a60, a300;
		unsigned long long total;
		if (sscanf(line, "%7s avg10=%lf avg60=%lf avg300=%lf total=%llu", kind, &a10, &a60,
			   &a300, &total) == 5) {
			jw_key(w, kind);
			jw_obj(w);
			jw_key(w, "avg10");
			jw_double(w, a10);
			jw_key(w, "avg60");
			jw_double(w, a60);
			jw_key(w, "avg300");
			jw_double(w, a300);
			jw_key(w, "total_us");
			jw_uint(w, total);
			jw_obj_end(w);
		}
		line = nl ? nl + 1 : NULL;
	}
	jw_obj_end(w);
	buf_free(&b);
}

void snapshot_metrics(struct snapshot *s, struct jw *w)
{
	struct buf b = {0};
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	jw_kint(w, "ts", (long long)ts.tv_sec);

	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	jw_kint(w, "cpu_count", ncpu > 0 ? ncpu : 1);
	jw_key(w, "cpu_used_pct");
	jw_double(w, cpu_used_pct(s));

	if (read_file("/proc/meminfo", &b, PROC_CAP) == 0) {
		unsigned long long total = meminfo(buf_cstr(&b), "MemTotal");
		unsigned long long avail = meminfo(buf_cstr(&b), "MemAvailable");
		unsigned long long used = total > avail ? total - avail : 0;
		jw_key(w, "mem_total");
		jw_uint(w, total);
		jw_key(w, "mem_used");
		jw_uint(w, used);
		jw_key(w, "mem_total_mib");
		jw_uint(w, total >> 20);
		jw_key(w, "mem_used_mib");
		jw_uint(w, used >> 20);
	}

	struct statfs sf;
	if (statfs(s->root[0] ? s->root : "/", &sf) == 0) {
		unsigned long long bs = sf.f_frsize ? sf.f_frsize : sf.f_bsize;
		unsigned long long total = sf.f_blocks * bs, avail = sf.f_bavail * bs;
		jw_key(w, "disk_total");
		jw_uint(w, total);
		jw_key(w, "disk_used");
		jw_uint(w, total > avail ? total - avail : 0);
	}

	b.len = 0;
	double l1, l5, l15;
	if (read_file("/proc/loadavg", &b, PROC_CAP) == 0 &&
	    sscanf(buf_cstr(&b), "%lf %lf %lf", &l1, &l5, &l15) == 3) {
		jw_key(w, "load_1");
		jw_double(w, l1);
		jw_key(w, "load_5");
		jw_double(w, l5);
		jw_key(w, "load_15");
		jw_double(w, l15);
	}
	buf_free(&b);

	if (access("/proc/pressure", F_OK) == 0) {
		jw_key(w, "psi");
		jw_obj(w);
		psi_one(w, "cpu");
		psi_one(w, "memory");
		psi_one(w, "io");
		jw_obj_end(w);
	}

	struct timespec up;
	clock_gettime(CLOCK_BOOTTIME, &up);
	jw_kint(w, "uptime_seconds", (long long)up.tv_sec);
	jw_key(w, "generation");
	jw_uint(w, s->generation_pub);
	jw_kint(w, "restores", s->restores);
	jw_kbool(w, "snapshot_prepared", s->prepared_pub);
}
