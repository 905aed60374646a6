/* snapshot.c - quiesce before a VM snapshot and notice restores nobody announced.
 *
 * snapshot_prepare: sync, run the freeze hooks (every file in ROOT/etc/stereos/hooks/freeze.d, by
 * name, each with the time left of a shared budget), FIFREEZE the listed filesystems, drop
 * the page cache when asked, and arm a watchdog that thaws after timeout_ms. Thaw is
 * guaranteed: snapshot_abort, any restore (restore.c) and the watchdog all call
 * snapshot_thaw_all, which also runs the hooks again with "thaw", in reverse order.
 *
 * Detection: a tick every second compares CLOCK_BOOTTIME and CLOCK_REALTIME with
 * CLOCK_MONOTONIC; the kernel's vmgenid driver sends a uevent with NEW_VMGENID=1 when the VM
 * generation changes. Either runs the restore pipeline without the host's inputs.
 *
 * Tests point the clocks at STEREO_FAKE_CLOCK, a file "REALTIME_OFFSET_NS BOOTTIME_OFFSET_NS"
 * added to the real clocks; a clock step then rewrites the offset instead of the real clock.
 */
#include "applets/stereod/snapshot.h"
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <linux/netlink.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define HOOKS_DIR "/etc/stereos/hooks/freeze.d"
#define HOOK_BUDGET_MS 5000            /* all hooks of one phase together: fits a 10 s client timeout */
#define MAX_HOOKS 64
#define DEFAULT_TIMEOUT_MS 30000
#define MAX_TIMEOUT_MS 600000
#define TICK_MS 1000
#define JUMP_NS 2000000000LL            /* a clock jump this big means the VM was restored */
#define COALESCE_MS 2000                /* detectors firing together report one restore */
#define BACKSTOP_GRACE_MS 2000          /* the backstop child thaws this long after the watchdog */

/* ---- small shared helpers ----------------------------------------------------------------- */
int snap_path(const struct snapshot *s, const char *path, char *out, size_t outsz)
{
	int n = snprintf(out, outsz, "%s%s", s->root, path);
	return n < 0 || (size_t)n >= outsz ? -ENAMETOOLONG : 0;
}

void step_begin(struct steps *st, const char *name)
{
	jw_obj(st->w);
	jw_kstr(st->w, "step", name);
}

void step_end(struct steps *st, const char *name, int rc, const char *why)
{
	jw_kbool(st->w, "ok", rc == 0);
	if (rc) {
		jw_kstr(st->w, "error", why);
		buf_printf(&st->fails, "%s%s: %s", st->nfail ? "; " : "", name, why);
		st->nfail++;
	}
	jw_obj_end(st->w);
}

/* ---- clocks --------------------------------------------------------------------------------- */
static int64_t clock_raw(int id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void fake_offsets(const struct snapshot *s, int64_t *real, int64_t *boot)
{
	*real = *boot = 0;
	struct buf b = {0};
	if (read_file(s->fake_clock, &b, 128) == 0) {
		long long r = 0, bt = 0;
		if (sscanf(buf_cstr(&b), "%lld %lld", &r, &bt) >= 1) {
			*real = r;
			*boot = bt;
		}
	}
	buf_free(&b);
}

int64_t snap_clock_ns(const struct snapshot *s, int clock_id)
{
	int64_t v = clock_raw(clock_id), real = 0, boot = 0;
	if (!s->fake_clock[0] || clock_id == CLOCK_MONOTONIC)
		return v;
	fake_offsets(s, &real, &boot);
	return v + (clock_id == CLOCK_REALTIME ? real : clock_id == CLOCK_BOOTTIME ? boot : 0);
}

int snap_clock_step(struct snapshot *s, int64_t target_ns, char *err)
{
	if (s->fake_clock[0]) {
		int64_t real, boot;
		fake_offsets(s, &real, &boot);
		char line[64];
		int n = snprintf(line, sizeof line, "%lld %lld\n",
				 (long long)(target_ns - clock_raw(CLOCK_REALTIME)), (long long)boot);
		int rc = atomic_write(s->fake_clock, line, n, 0644, (uid_t)-1, (gid_t)-1);
		return rc ? errf(err, "writing %s: %s", s->fake_clock, strerror(-rc)) : 0;
	}
	struct timespec ts = {.tv_sec = target_ns / 1000000000LL, .tv_nsec = target_ns % 1000000000LL};
	if (clock_settime(CLOCK_REALTIME, &ts))
		return errf(err, "clock_settime: %s", strerror(errno));
	return 0;
}

/* ---- freeze hooks -------------------------------------------------------------------------- */
typedef char hook_name[NAME_MAX + 1];

static int name_cmp(const void *a, const void *b)
{
	return strcmp(a, b);
}

/* Executable regular files of the hooks dir, sorted; names not starting with '.'. Fixed
 * storage: listing the hooks cannot fail for want of memory. */
static int list_hooks(const struct snapshot *s, hook_name *names, int max)
{
	char dir[768];
	if (snap_path(s, HOOKS_DIR, dir, sizeof dir))
		return 0;
	DIR *d = opendir(dir);
	if (!d)
		return 0;
	int n = 0;
	struct dirent *e;
	while (n < max && (e = readdir(d))) {
		struct stat st;
		if (e->d_name[0] == '.' || fstatat(dirfd(d), e->d_name, &st, 0) ||
		    !S_ISREG(st.st_mode) || !(st.st_mode & 0111))
			continue;
		snprintf(names[n++], sizeof *names, "%s", e->d_name);
	}
	closedir(d);
	qsort(names, n, sizeof *names, name_cmp);
	return n;
}

static int run_hook(const struct snapshot *s, const char *name, const char *arg, int64_t deadline,
		    struct steps *st)
{
	char path[1024], label[300], why[ERRBUF] = "";
	int rc = snap_path(s, HOOKS_DIR, path, sizeof path);
	snprintf(label, sizeof label, "%s hook %s", arg, name);
	if (!rc && strlen(path) + 1 + strlen(name) >= sizeof path)
		rc = -ENAMETOOLONG;
	if (!rc) {
		strcat(path, "/");
		strcat(path, name);
	}
	step_begin(st, arg[0] == 'f' ? "freeze_hook" : "thaw_hook");
	jw_kstr(st->w, "name", name);
	if (rc) {
		step_end(st, label, -1, strerror(-rc));
		return -1;
	}
	/* stdin /dev/null, stdout to stereod's stderr (the log), its own process group */
	char *argv[] = {path, (char *)arg, NULL};
	struct proc_req r = {.argv = argv, .in = PROC_NULL, .out = 2};
	int status = 0;
	rc = proc_run(&r, deadline, &status);
	if (rc == -ETIMEDOUT)
		snprintf(why, sizeof why, "timed out, killed");
	else if (rc)
		snprintf(why, sizeof why, "starting: %s", strerror(-rc));
	else if (WIFSIGNALED(status))
		snprintf(why, sizeof why, "killed by signal %d", WTERMSIG(status));
	else if (WEXITSTATUS(status))
		snprintf(why, sizeof why, "exit status %d", WEXITSTATUS(status));
	if (!rc && WIFEXITED(status))
		jw_kint(st->w, "exit_code", WEXITSTATUS(status));
	step_end(st, label, why[0] ? -1 : 0, why);
	return why[0] ? -1 : 0;
}

/* Run every hook with arg ("freeze" in name order, "thaw" in reverse) within the budget. */
static void run_hooks(struct snapshot *s, const char *arg, int64_t budget_ms, struct steps *st)
{
	hook_name names[MAX_HOOKS];
	int n = list_hooks(s, names, MAX_HOOKS);
	bool thaw = !strcmp(arg, "thaw");
	int64_t deadline = now_ms() + budget_ms;
	for (int i = 0; i < n; i++) {
		const char *name = names[thaw ? n - 1 - i : i];
		run_hook(s, name, arg, deadline, st);
	}
	if (!thaw)
		s->hooks_ran = n > 0;
}

/* ---- freeze and thaw ------------------------------------------------------------------------ */
static void freeze_one(struct snapshot *s, const char *req_path, size_t len, struct steps *st)
{
	char clean[256], full[1024], why[ERRBUF] = "";
	step_begin(st, "freeze");
	if (path_clean(req_path, len, clean, sizeof clean, why)) {
		jw_key(st->w, "path");
		jw_strn(st->w, req_path, len);
		step_end(st, "freeze", -1, why);
		return;
	}
	jw_kstr(st->w, "path", clean);
	char label[300];
	snprintf(label, sizeof label, "freeze %s", clean);
	int fd = -1;
	if (s->nfrozen == SNAP_MAX_FREEZE)
		snprintf(why, sizeof why, "too many filesystems (max %d)", SNAP_MAX_FREEZE);
	else if (snap_path(s, clean, full, sizeof full))
		snprintf(why, sizeof why, "path too long");
	else if ((fd = open(full, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		snprintf(why, sizeof why, "open: %s", strerror(errno));
	if (why[0]) {
		step_end(st, label, -1, why);
		return;
	}
	/* two paths on one filesystem: the second FIFREEZE would say EBUSY */
	struct stat me, other;
	fstat(fd, &me);
	for (int i = 0; i < s->nfrozen; i++) {
		if (!fstat(s->frozen[i].fd, &other) && other.st_dev == me.st_dev) {
			jw_kstr(st->w, "same_filesystem_as", s->frozen[i].path);
			close(fd);
			step_end(st, label, 0, NULL);
			return;
		}
	}
	if (ioctl(fd, FIFREEZE, 0)) {
		int e = errno;
		snprintf(why, sizeof why, "FIFREEZE: %s", e == EBUSY ? "already frozen" :
			 e == EOPNOTSUPP ? "filesystem cannot be frozen" : strerror(e));
		close(fd);
		step_end(st, label, -1, why);
		return;
	}
	struct snap_frozen *f = &s->frozen[s->nfrozen++];
	f->fd = fd;
	snprintf(f->path, sizeof f->path, "%s", clean);
	step_end(st, label, 0, NULL);
}

/* The watchdog runs on stereod's loop, which a write to a filesystem stereod froze itself (a
 * config under a frozen /etc, say) would stall for good. So a child holding the frozen mount
 * points' fds sleeps a little longer than the watchdog and thaws them unless it is killed
 * first; it also thaws after a crash of stereod. Signalled and reaped through a pidfd, so a
 * recycled pid or stereod's own SIGCHLD reaper cannot confuse it. */
static void backstop_start(struct snapshot *s, int64_t timeout_ms)
{
	if (!s->nfrozen)
		return;
	int64_t ms = timeout_ms + BACKSTOP_GRACE_MS;
	pid_t pid = fork();
	if (pid < 0) {
		log_warn("no backstop thaw", "error=\"fork: %s\"", strerror(errno));
		return;
	}
	if (pid == 0) {
		/* keep only the mount points: no listening socket outlives a crashed stereod */
		int keep[SNAP_MAX_FREEZE], n = s->nfrozen, prev = 2;
		for (int i = 0; i < n; i++) {
			int k = s->frozen[i].fd, j = i;
			for (; j > 0 && keep[j - 1] > k; j--)
				keep[j] = keep[j - 1];
			keep[j] = k;
		}
		for (int i = 0; i < n; i++) {
			if (keep[i] > prev + 1)
				close_range(prev + 1, keep[i] - 1, 0);
			prev = keep[i];
		}
		close_range(prev + 1, ~0U, 0);
		struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = ms % 1000 * 1000000};
		while (nanosleep(&ts, &ts) && errno == EINTR)
			;
		for (int i = s->nfrozen - 1; i >= 0; i--)
			ioctl(s->frozen[i].fd, FITHAW, 0);
		_exit(0);
	}
	s->backstop = (int)syscall(SYS_pidfd_open, pid, 0);
	if (s->backstop < 0) {
		kill(pid, SIGKILL);     /* just forked, not yet reaped: the pid is still ours */
		log_warn("no backstop thaw", "error=\"pidfd_open: %s\"", strerror(errno));
	}
}

static void backstop_stop(struct snapshot *s)
{
	if (s->backstop < 0)
		return;
	siginfo_t si;
	syscall(SYS_pidfd_send_signal, s->backstop, SIGKILL, NULL, 0);
	waitid((idtype_t)P_PIDFD, (id_t)s->backstop, &si, WEXITED);
	close(s->backstop);
	s->backstop = -1;
}

/* One "thaw" step listing what was thawed; hooks run again with "thaw" when they ran. */
int snapshot_thaw_all(struct snapshot *s, struct steps *st)
{
	char why[ERRBUF] = "";
	int failed = 0;
	if (s->watchdog) {
		loop_timer_cancel(s->loop, s->watchdog);
		s->watchdog = 0;
	}
	backstop_stop(s);
	step_begin(st, "thaw");
	jw_key(st->w, "thawed");
	jw_arr(st->w);
	for (int i = s->nfrozen - 1; i >= 0; i--) {
		struct snap_frozen *f = &s->frozen[i];
		/* EINVAL: not frozen any more (someone else thawed it): the goal is met */
		if (ioctl(f->fd, FITHAW, 0) && errno != EINVAL) {
			int n = strlen(why);
			snprintf(why + n, sizeof why - n, "%s%s: %s", failed ? "; " : "", f->path,
				 strerror(errno));
			failed++;
		} else {
			jw_str(st->w, f->path);
		}
		close(f->fd);
	}
	jw_arr_end(st->w);
	s->nfrozen = 0;
	bool was_prepared = s->prepared;
	s->prepared = false;
	step_end(st, "thaw", failed ? -1 : 0, why);
	if (was_prepared && s->hooks_ran) {
		s->hooks_ran = false;
		run_hooks(s, "thaw", HOOK_BUDGET_MS, st);
	}
	return failed ? -1 : 0;
}

static void watchdog_fire(struct loop *l, void *ctx)
{
	struct snapshot *s = ctx;
	struct buf b = {0};
	struct jw w;
	struct steps st = {.w = &w};
	s->watchdog = 0;
	jw_init(&w, &b);
	jw_arr(&w);
	snapshot_thaw_all(s, &st);
	jw_arr_end(&w);
	log_warn("snapshot watchdog: thawed, neither abort nor restore arrived in time",
		 "steps=%s", buf_cstr(&b));
	buf_free(&b);
	buf_free(&st.fails);
}

/* ---- snapshot_prepare / snapshot_abort ----------------------------------------------------- */
static void drop_caches(struct snapshot *s, struct steps *st)
{
	char path[768], why[ERRBUF] = "";
	step_begin(st, "drop_caches");
	int fd = -1, rc;
	if (snap_path(s, "/proc/sys/vm/drop_caches", path, sizeof path))
		snprintf(why, sizeof why, "path too long");
	else if ((fd = open(path, O_WRONLY | O_CLOEXEC)) < 0)
		snprintf(why, sizeof why, "open /proc/sys/vm/drop_caches: %s", strerror(errno));
	else if ((rc = write_all(fd, "3\n", 2)))
		snprintf(why, sizeof why, "write /proc/sys/vm/drop_caches: %s", strerror(-rc));
	if (fd >= 0)
		close(fd);
	step_end(st, "drop_caches", why[0] ? -1 : 0, why);
}

/* The result of a run of steps: SNAP_FAILED with the failures in err when any failed. */
enum snap_rc steps_result(struct steps *st, char *err)
{
	enum snap_rc rc = SNAP_OK;
	if (st->nfail) {
		errf(err, "%d step%s failed: %s", st->nfail, st->nfail > 1 ? "s" : "",
		     buf_cstr(&st->fails));
		rc = SNAP_FAILED;
	}
	buf_free(&st->fails);
	return rc;
}

enum snap_rc snapshot_prepare(struct snapshot *s, const struct json *j, int payload,
			      struct jw *w, char *err)
{
	bool drop = false;
	uint64_t timeout = DEFAULT_TIMEOUT_MS;
	int freeze = -1, t;
	if (payload >= 0 && json_kind(j, payload) != JSON_OBJECT)
		return errf(err, "payload must be an object"), SNAP_INVALID;
	if (payload >= 0) {
		if ((t = json_get(j, payload, "drop_caches")) >= 0 && json_bool(j, t, &drop))
			return errf(err, "drop_caches must be a boolean"), SNAP_INVALID;
		if ((t = json_get(j, payload, "timeout_ms")) >= 0 &&
		    (json_u64(j, t, &timeout) || timeout < 1 || timeout > MAX_TIMEOUT_MS))
			return errf(err, "timeout_ms must be an integer 1..%d", MAX_TIMEOUT_MS),
			       SNAP_INVALID;
		if ((freeze = json_get(j, payload, "freeze")) >= 0) {
			if (json_kind(j, freeze) != JSON_ARRAY)
				return errf(err, "freeze must be an array of paths"), SNAP_INVALID;
			if (j->tok[freeze].size > SNAP_MAX_FREEZE)
				return errf(err, "freeze: at most %d paths", SNAP_MAX_FREEZE), SNAP_INVALID;
			for (int i = 0; i < j->tok[freeze].size; i++)
				if (json_kind(j, json_array_item(j, freeze, i)) != JSON_STRING)
					return errf(err, "freeze[%d] must be a string", i), SNAP_INVALID;
		}
	}

	struct steps st = {.w = w};
	jw_key(w, "steps");
	jw_arr(w);
	/* a second prepare starts from a thawed system */
	if (s->prepared)
		snapshot_thaw_all(s, &st);

	step_begin(&st, "sync");
	sync();
	step_end(&st, "sync", 0, NULL);

	run_hooks(s, "freeze", timeout < HOOK_BUDGET_MS ? (int64_t)timeout : HOOK_BUDGET_MS, &st);

	for (int i = 0; freeze >= 0 && i < j->tok[freeze].size; i++) {
		const jsmntok_t *p = &j->tok[json_array_item(j, freeze, i)];
		struct buf path = {0};
		char why[ERRBUF];
		if (json_unescape(j->s + p->start, p->end - p->start, &path, JSON_STR_NO_NUL, why)) {
			step_begin(&st, "freeze");
			step_end(&st, "freeze", -1, why);
		} else {
			freeze_one(s, buf_cstr(&path), path.len, &st);
		}
		buf_free(&path);
	}
	if (drop)
		drop_caches(s, &st);

	s->prepared = true;
	s->watchdog = loop_timer(s->loop, timeout, watchdog_fire, s);
	backstop_start(s, (int64_t)timeout);
	jw_arr_end(w);
	jw_key(w, "frozen");
	jw_arr(w);
	for (int i = 0; i < s->nfrozen; i++)
		jw_str(w, s->frozen[i].path);
	jw_arr_end(w);
	jw_kint(w, "timeout_ms", (long long)timeout);
	enum snap_rc rc = steps_result(&st, err);
	log_info("snapshot prepared", "frozen=%d timeout_ms=%llu failed=%d", s->nfrozen,
		 (unsigned long long)timeout, rc != SNAP_OK);
	return rc;
}

enum snap_rc snapshot_abort(struct snapshot *s, struct jw *w, char *err)
{
	struct steps st = {.w = w};
	jw_key(w, "steps");
	jw_arr(w);
	snapshot_thaw_all(s, &st);
	jw_arr_end(w);
	log_info("snapshot aborted", "failed=%d", st.nfail);
	return steps_result(&st, err);
}

uint64_t snapshot_generation(const struct snapshot *s)
{
	return s->generation;
}

/* ---- restore detection ------------------------------------------------------------------- */
static void detected(struct snapshot *s, const char *source)
{
	if (s->last_restore_ms && now_ms() - s->last_restore_ms < COALESCE_MS) {
		log_info("restore detector fired again, already recovered", "source=%s", source);
		return;
	}
	struct restore_req r = {.network = -1};
	struct buf b = {0};
	struct jw w;
	char err[ERRBUF] = "";
	jw_init(&w, &b);
	jw_obj(&w);
	enum snap_rc rc = restore_run(s, &r, source, NULL, &w, err);
	jw_obj_end(&w);
	if (rc == SNAP_OK)
		log_info("restore detected, recovered", "source=%s reply=%s", source, buf_cstr(&b));
	else
		log_warn("restore detected, recovery incomplete", "source=%s error=\"%s\" reply=%s",
			 source, err, buf_cstr(&b));
	buf_free(&b);
}

void snap_detect_rebase(struct snapshot *s)
{
	int64_t mono = clock_raw(CLOCK_MONOTONIC);
	s->base_boot_ns = snap_clock_ns(s, CLOCK_BOOTTIME) - mono;
	s->base_real_ns = snap_clock_ns(s, CLOCK_REALTIME) - mono;
}

static void tick(struct loop *l, void *ctx)
{
	struct snapshot *s = ctx;
	int64_t mono = clock_raw(CLOCK_MONOTONIC);
	int64_t boot = snap_clock_ns(s, CLOCK_BOOTTIME) - mono;
	int64_t real = snap_clock_ns(s, CLOCK_REALTIME) - mono;
	int64_t dboot = boot - s->base_boot_ns, dreal = real - s->base_real_ns;
	s->base_boot_ns = boot;
	s->base_real_ns = real;
	/* BOOTTIME runs on while the VM is paused-and-counted; MONOTONIC does not */
	if (dboot > JUMP_NS)
		detected(s, "clock");
	else if (llabs(dreal) > JUMP_NS && s->prepared)
		detected(s, "clock");
	else if (llabs(dreal) > JUMP_NS)
		log_info("wall clock stepped", "by_ms=%lld", (long long)(dreal / 1000000));

	s->cpu_prev = s->cpu_last;
	cpu_sample_read(&s->cpu_last);
	s->tick = loop_timer(l, TICK_MS, tick, s);
}

/* The vmgenid driver (Linux 6.2+) sends "change@..." with NEW_VMGENID=1 when the host
 * restored or cloned the VM. Only root can send on this netlink family, and only messages
 * with root credentials are believed. */
static void uevent_read(struct loop *l, int fd, uint32_t events, void *ctx)
{
	struct snapshot *s = ctx;
	char data[8192], cbuf[CMSG_SPACE(sizeof(struct ucred))];
	bool hit = false;
	for (int round = 0; round < 64; round++) {
		struct iovec iov = {data, sizeof data - 1};
		struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
				   .msg_controllen = sizeof cbuf};
		ssize_t n = recvmsg(fd, &m, MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR || errno == ENOBUFS)
				continue;
			break;
		}
		struct cmsghdr *c = CMSG_FIRSTHDR(&m);
		if (!c || c->cmsg_type != SCM_CREDENTIALS ||
		    ((struct ucred *)CMSG_DATA(c))->uid != 0)
			continue;
		data[n] = 0;
		for (char *p = data; p < data + n; p += strlen(p) + 1)
			if (!strcmp(p, "NEW_VMGENID=1"))
				hit = true;
	}
	if (hit)
		detected(s, "vmgenid");
}

static void uevent_open(struct snapshot *s)
{
	int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_KOBJECT_UEVENT);
	struct sockaddr_nl sa = {.nl_family = AF_NETLINK, .nl_groups = 1};
	int on = 1;
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) ||
	    setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &on, sizeof on) ||
	    loop_add(s->loop, fd, EPOLLIN, uevent_read, s)) {
		log_warn("vmgenid restore detection off", "error=\"%s\"", strerror(errno));
		if (fd >= 0)
			close(fd);
		return;
	}
	s->uevent_fd = fd;
}

/* ---- life cycle ------------------------------------------------------------------------------ */
struct snapshot *snapshot_new(struct loop *l, const struct snap_opts *o, char *err)
{
	struct snapshot *s = calloc(1, sizeof *s);
	if (!s)
		return errf(err, "out of memory"), NULL;
	s->loop = l;
	s->restored = o->restored;
	s->ctx = o->ctx;
	s->uevent_fd = -1;
	s->backstop = -1;
	const char *root = o->root && strcmp(o->root, "/") ? o->root : "";
	if (strlen(root) >= sizeof s->root - 256) {
		free(s);
		return errf(err, "root path too long"), NULL;
	}
	snprintf(s->root, sizeof s->root, "%s", root);
	const char *fake = getenv("STEREO_FAKE_CLOCK");
	if (fake && *fake) {
		snprintf(s->fake_clock, sizeof s->fake_clock, "%s", fake);
		log_warn("clocks come from a fake-clock file (tests only)", "file=%s", fake);
	}
	char gen[768];
	struct buf b = {0};
	if (!snap_path(s, "/run/stereos/generation", gen, sizeof gen) && !read_file(gen, &b, 64))
		s->generation = strtoull(buf_cstr(&b), NULL, 10);
	buf_free(&b);
	snap_detect_rebase(s);
	cpu_sample_read(&s->cpu_last);
	s->cpu_prev = s->cpu_last;
	s->tick = loop_timer(l, TICK_MS, tick, s);
	uevent_open(s);
	return s;
}

void snapshot_free(struct snapshot *s)
{
	if (!s)
		return;
	if (s->nfrozen) {
		struct buf b = {0};
		struct jw w;
		struct steps st = {.w = &w};
		jw_init(&w, &b);
		jw_arr(&w);
		snapshot_thaw_all(s, &st);
		buf_free(&b);
		buf_free(&st.fails);
	}
	if (s->watchdog)
		loop_timer_cancel(s->loop, s->watchdog);
	if (s->tick)
		loop_timer_cancel(s->loop, s->tick);
	if (s->uevent_fd >= 0) {
		loop_del(s->loop, s->uevent_fd);
		close(s->uevent_fd);
	}
	free(s);
}
