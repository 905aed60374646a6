/* power.c - the ordered stop: services in reverse dependency order (supervise.c sends SIGTERM
 * and, after stop_timeout, SIGKILL), then SIGTERM to every remaining process, SIGKILL after
 * stop_timeout, and once no child is left the final action. As the real PID 1 that is:
 * unmount everything in reverse order, sync, reboot(2). Otherwise (a subreaper, or a test run
 * with --root) init stops its loop and exits: 0 after poweroff, 129 after reboot.
 */
#include "init/init.h"
#include <dirent.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/wait.h>
#include <unistd.h>

enum phase { P_IDLE, P_SERVICES, P_TERM_ALL, P_KILL_ALL, P_DONE };

static struct {
	struct loop *l;
	const struct init_opts *o;
	struct super *s;
	enum halt_kind kind;
	enum phase phase;
	uint64_t timer;
	int64_t give_up;    /* when stragglers are left behind */
} pw;

bool power_active(void) { return pw.phase != P_IDLE; }
bool power_done(void) { return pw.phase == P_DONE; }

static bool children_left(void)
{
	siginfo_t si;
	return waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) == 0;
}

/* Signal every process but ourselves. PID 1 has kill(-1) for that (it spares the caller, and in
 * a PID namespace it reaches only the namespace); a subreaper signals its children, and their
 * orphans become its children in turn. */
static void kill_rest(int sig)
{
	if (pw.o->pid1) {
		kill(-1, sig);
		return;
	}
	DIR *d = opendir("/proc");
	if (!d)
		return;
	pid_t me = getpid();
	struct dirent *de;
	while ((de = readdir(d))) {
		char path[300], buf[512];
		if (de->d_name[0] < '1' || de->d_name[0] > '9')
			continue;
		snprintf(path, sizeof path, "/proc/%s/stat", de->d_name);
		FILE *f = fopen(path, "re");
		if (!f)
			continue;
		size_t n = fread(buf, 1, sizeof buf - 1, f);
		fclose(f);
		buf[n] = 0;
		/* pid (comm) state ppid: comm may hold spaces and parentheses, so start after the last ')' */
		char *rp = strrchr(buf, ')');
		int ppid = 0;
		char st;
		if (rp && sscanf(rp + 1, " %c %d", &st, &ppid) == 2 && ppid == me)
			kill(atoi(de->d_name), sig);
	}
	closedir(d);
}

static void phase_timeout(struct loop *l, void *ctx);

static void enter(enum phase p)
{
	if (pw.timer)
		loop_timer_cancel(pw.l, pw.timer);
	pw.timer = 0;
	pw.phase = p;
	switch (p) {
	case P_TERM_ALL:
		log_info("stopping remaining processes", "signal=TERM");
		kill_rest(SIGTERM);
		pw.timer = loop_timer(pw.l, pw.o->stop_timeout_ms, phase_timeout, NULL);
		break;
	case P_KILL_ALL:
		log_info("killing remaining processes", "signal=KILL");
		kill_rest(SIGKILL);
		pw.give_up = now_ms() + 5000;
		pw.timer = loop_timer(pw.l, 100, phase_timeout, NULL);
		break;
	case P_DONE:
		loop_stop(pw.l);
		break;
	default:
		break;
	}
}

static void phase_timeout(struct loop *l, void *ctx)
{
	pw.timer = 0;
	if (pw.phase == P_SERVICES) {
		log_warn("services did not stop in time", NULL);
		enter(P_TERM_ALL);
	} else if (pw.phase == P_TERM_ALL) {
		enter(P_KILL_ALL);
	} else if (pw.phase == P_KILL_ALL) {
		if (now_ms() >= pw.give_up) {
			log_error("processes survived SIGKILL, halting anyway", NULL);
			enter(P_DONE);
			return;
		}
		kill_rest(SIGKILL);   /* orphans re-parented since the last pass */
		pw.timer = loop_timer(pw.l, 100, phase_timeout, NULL);
	}
}

void power_init(struct loop *l, const struct init_opts *o, struct super *s)
{
	pw.l = l;
	pw.o = o;
	pw.s = s;
	pw.kind = HALT_POWEROFF;
}

void power_begin(enum halt_kind k)
{
	if (pw.phase != P_IDLE) {
		if (k == HALT_REBOOT)
			pw.kind = k;   /* a reboot request wins over a poweroff in progress */
		return;
	}
	pw.kind = k;
	struct loop *l = pw.l;
	const struct init_opts *o = pw.o;
	struct super *s = pw.s;
	pw.phase = P_SERVICES;
	log_info("shutting down", "action=%s", k == HALT_REBOOT ? "reboot" : "poweroff");
	super_shutdown(s);
	/* each service gets its stop timeout after its SIGTERM; a chain waits at most their sum */
	long long total = o->stop_timeout_ms + 1000;
	for (int i = 0; i < super_count(s); i++) {
		long long t = super_svc(s, i)->def.stop_timeout_ms;
		total += t > 0 ? t : o->stop_timeout_ms;
	}
	pw.timer = loop_timer(l, total, phase_timeout, NULL);
}

/* Called before each loop wait, after reaping: move on when the current phase is done. */
void power_tick(void)
{
	if (pw.phase == P_SERVICES && super_all_down(pw.s))
		enter(P_TERM_ALL);
	if ((pw.phase == P_TERM_ALL || pw.phase == P_KILL_ALL) && !children_left())
		enter(P_DONE);
}

/* mountinfo escapes space, tab, newline and backslash as \ooo */
static void unescape_octal(char *s)
{
	char *o = s;
	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*o++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 3;
		} else {
			*o++ = *s;
		}
	}
	*o = 0;
}

/* Unmount in reverse mount order; "/" is remounted read-only instead. */
static void unmount_all(void)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return;
	char *points[256];
	int n = 0;
	char line[4096];
	while (n < (int)ARRAY_SIZE(points) && fgets(line, sizeof line, f)) {
		char mp[4096];
		/* id parent major:minor root mountpoint ... */
		if (sscanf(line, "%*s %*s %*s %*s %4095s", mp) == 1) {
			unescape_octal(mp);
			if ((points[n] = strdup(mp)))   /* out of memory: left mounted, still synced */
				n++;
		}
	}
	fclose(f);
	for (int i = n - 1; i >= 0; i--) {
		if (strcmp(points[i], "/")) {
			if (umount2(points[i], 0) && errno != EINVAL && errno != ENOENT)
				umount2(points[i], MNT_DETACH);
		}
		free(points[i]);
	}
	mount(NULL, "/", NULL, MS_REMOUNT | MS_RDONLY, NULL);
}

/* The end of the road. As the real PID 1 this never returns (PID 1 must not exit); otherwise
 * it returns the exit status. */
int power_finish(void)
{
	int cmd = pw.kind == HALT_REBOOT ? RB_AUTOBOOT : pw.o->halt_cmd;
	log_info("halting", "action=%s", cmd == RB_AUTOBOOT ? "reboot" : "poweroff");
	if (!pw.o->system)
		return cmd == RB_AUTOBOOT ? 128 + SIGHUP : EXIT_OK;
	log_set_kmsg(false);
	sync();
	unmount_all();
	sync();
	reboot(cmd);
	/* reboot(2) failed (no CAP_SYS_BOOT?): stay alive rather than panic the kernel */
	for (;;)
		pause();
}
