/* snapshot.c - quiesce before a VM snapshot and notice restores nobody announced.
 *
 * Every operation runs off the loop thread (snapshot_request; see "operations" below).
 * snapshot_prepare: sync, run the freeze hooks (every file in ROOT/etc/stereos/hooks/freeze.d, by
 * name, each with the time left of a shared budget), FIFREEZE the listed filesystems, drop
 * the page cache when asked, and arm a watchdog that thaws after timeout_ms. Thaw is
 * guaranteed: snapshot_abort, any restore (restore.c) and the watchdog all call
 * snapshot_thaw_all, which also runs the hooks again with "thaw", in reverse order.
 *
 * Detection (docs/snapshot.md says where each was seen to work): the kernel's log line
 * "crng reseeded due to virtual machine fork" on /dev/kmsg, which the vmgenid driver causes
 * on every VM generation change (seen in QEMU clones of Debian's 6.1 kernel). Never seen to
 * fire on a real restore, kept for what they do detect: a tick every second compares
 * CLOCK_BOOTTIME and CLOCK_REALTIME with CLOCK_MONOTONIC (a guest suspend, a wall-clock jump
 * while prepared); a uevent with NEW_VMGENID=1 (only some kernels send it; 6.1 does not).
 * A detection runs the restore pipeline without the host's inputs, unless the host's
 * `restored` arrives within a grace period.
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
#include <linux/openat2.h>
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
#define DETECT_GRACE_MS 5000            /* a detected restore waits this long for the host's */
#define BACKSTOP_GRACE_MS 2000          /* the backstop child thaws this long after the watchdog */

/* One operation (see "operations off the loop thread" below). */
enum op_kind { OP_PREPARE, OP_ABORT, OP_RESTORED, OP_DETECTED, OP_WATCHDOG };
struct snap_op {
	struct snapshot *s;
	enum op_kind kind;
	struct buf text;               /* a copy of the request's payload, parsed into j */
	struct json j;
	int payload;                   /* token in j, -1 when none */
	uint64_t timeout;              /* prepare */
	bool drop, ran;
	int freeze;
	struct restore_req rr;         /* restored, detected */
	const char *source;
	void *keep;
	struct buf body;               /* the reply object, written by w */
	struct jw w;
	struct steps st;               /* restore: carried from restore_steps to restore_finish */
	enum snap_rc rc;
	char err[ERRBUF];
	snap_reply_fn reply;           /* NULL for the watchdog and detected restores: logged */
	void *ctx;
};

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
}

/* ---- freeze and thaw ------------------------------------------------------------------------ */
/* The directory clean (absolute) names under the root, reached without following any symlink
 * and without leaving the root (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS): a link
 * planted in the tree cannot make FIFREEZE hit another filesystem, such as the one holding
 * the root. fd or -errno. */
static int open_under_root(const struct snapshot *s, const char *clean)
{
	int rootfd = open(s->root[0] ? s->root : "/", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		return -errno;
	int fd = open_resolve(rootfd, clean[1] ? clean + 1 : ".", O_RDONLY | O_DIRECTORY,
			      RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS);
	close(rootfd);
	return fd;
}

static void freeze_one(struct snapshot *s, const char *req_path, size_t len, struct steps *st)
{
	char clean[256], why[ERRBUF] = "";
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
	else if ((fd = open_under_root(s, clean)) < 0)
		snprintf(why, sizeof why, "open: %s", fd == -ELOOP ? "a symlink on the way (refused)" :
			 fd == -EXDEV ? "outside the root (refused)" : strerror(-fd));
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

/* One "thaw" step listing what was thawed; after a prepare, the hooks again with "thaw". */
int snapshot_thaw_all(struct snapshot *s, struct steps *st)
{
	char why[ERRBUF] = "";
	int failed = 0;
	backstop_stop(s);   /* the watchdog timer is the loop thread's: see snapshot_request */
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
	/* The hooks present now get "thaw", whether or not they were there at the freeze: a
	 * "hooks ran" flag set at the freeze was found unset here in QEMU guests though the
	 * freeze hook had run; cause not found (docs/snapshot.md). */
	if (was_prepared)
		run_hooks(s, "thaw", HOOK_BUDGET_MS, st);
	return failed ? -1 : 0;
}

static void submit(struct snap_op *op);

/* Neither abort nor restore came in time: thaw, off the loop like every other operation. */
static void watchdog_fire(struct loop *l, void *ctx)
{
	struct snapshot *s = ctx;
	s->watchdog = 0;
	struct snap_op *op = calloc(1, sizeof *op);
	if (!op) {
		/* never exit with a filesystem frozen: try again shortly (the backstop child thaws
		 * in any case) */
		log_error("watchdog: out of memory, retrying", "%s", "");
		s->watchdog = loop_timer(s->loop, 100, watchdog_fire, s);
		return;
	}
	*op = (struct snap_op){.s = s, .kind = OP_WATCHDOG, .payload = -1};
	submit(op);
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

/* The payload checks of snapshot_prepare (loop thread): SNAP_OK or SNAP_INVALID with err. */
static enum snap_rc prepare_parse(struct snap_op *op, char *err)
{
	const struct json *j = &op->j;
	int payload = op->payload, freeze = -1, t;
	op->timeout = DEFAULT_TIMEOUT_MS;
	if (payload >= 0 && json_kind(j, payload) != JSON_OBJECT)
		return errf(err, "payload must be an object"), SNAP_INVALID;
	if (payload >= 0) {
		if ((t = json_get(j, payload, "drop_caches")) >= 0 && json_bool(j, t, &op->drop))
			return errf(err, "drop_caches must be a boolean"), SNAP_INVALID;
		if ((t = json_get(j, payload, "timeout_ms")) >= 0 &&
		    (json_u64(j, t, &op->timeout) || op->timeout < 1 || op->timeout > MAX_TIMEOUT_MS))
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
	op->freeze = freeze;
	return SNAP_OK;
}

/* sync, hooks, FIFREEZE, drop caches (worker thread). The watchdog is armed when it is done. */
static void prepare_work(struct snap_op *op)
{
	struct snapshot *s = op->s;
	const struct json *j = &op->j;
	struct jw *w = &op->w;
	struct steps st = {.w = w};
	uint64_t timeout = op->timeout;
	int freeze = op->freeze;
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
	if (op->drop)
		drop_caches(s, &st);

	s->prepared = true;
	s->watchdog_ms = (int64_t)timeout;
	backstop_start(s, (int64_t)timeout);
	jw_arr_end(w);
	jw_key(w, "frozen");
	jw_arr(w);
	for (int i = 0; i < s->nfrozen; i++)
		jw_str(w, s->frozen[i].path);
	jw_arr_end(w);
	jw_kint(w, "timeout_ms", (long long)timeout);
	op->rc = steps_result(&st, op->err);
	log_info("snapshot prepared", "frozen=%d timeout_ms=%llu failed=%d", s->nfrozen,
		 (unsigned long long)timeout, op->rc != SNAP_OK);
}

static void abort_work(struct snap_op *op)
{
	struct steps st = {.w = &op->w};
	jw_key(&op->w, "steps");
	jw_arr(&op->w);
	snapshot_thaw_all(op->s, &st);
	jw_arr_end(&op->w);
	log_info("snapshot aborted", "failed=%d", st.nfail);
	op->rc = steps_result(&st, op->err);
}

static void watchdog_work(struct snap_op *op)
{
	struct steps st = {.w = &op->w};
	if (!op->s->prepared)   /* thawed meanwhile */
		return;
	jw_key(&op->w, "steps");
	jw_arr(&op->w);
	snapshot_thaw_all(op->s, &st);
	jw_arr_end(&op->w);
	op->rc = steps_result(&st, op->err);
	op->ran = true;
}

/* ---- operations off the loop thread --------------------------------------------------------- */
/* Every operation that thaws, freezes, runs hooks or restores goes through here: its blocking
 * part (op_work) runs on the offload worker, one operation at a time, and op_done finishes it
 * on the loop thread. While any is under way (s->busy) the loop side leaves the snapshot
 * state alone: the detectors wait, and the watchdog is only armed or cancelled here. */
static void op_work(void *arg)
{
	struct snap_op *op = arg;
	jw_init(&op->w, &op->body);
	jw_obj(&op->w);
	switch (op->kind) {
	case OP_PREPARE:
		prepare_work(op);
		break;
	case OP_ABORT:
		abort_work(op);
		break;
	case OP_WATCHDOG:
		watchdog_work(op);
		break;
	default:
		op->st.w = &op->w;
		restore_steps(op->s, &op->rr, op->source, &op->st);
		break;
	}
}

static void detected(struct snapshot *s, const char *source);

static void op_done(void *arg)
{
	struct snap_op *op = arg;
	struct snapshot *s = op->s;
	if (op->kind == OP_RESTORED || op->kind == OP_DETECTED)
		op->rc = restore_finish(s, op->source, op->keep, &op->st, op->err);
	jw_obj_end(&op->w);
	s->busy--;
	if (s->prepared && !s->watchdog)
		s->watchdog = loop_timer(s->loop, s->watchdog_ms, watchdog_fire, s);
	s->prepared_pub = s->prepared;
	s->generation_pub = s->generation;
	/* the reply's members without the object's braces */
	const char *fields = op->body.len > 2 ? op->body.p + 1 : "";
	size_t flen = op->body.len > 2 ? op->body.len - 2 : 0;
	if (op->reply) {
		op->reply(op->ctx, op->rc, fields, flen, op->err);
	} else if (op->kind == OP_WATCHDOG && op->ran) {
		log_warn("snapshot watchdog: thawed, neither abort nor restore arrived in time",
			 "steps=%.*s", (int)flen, fields);
	} else if (op->kind == OP_DETECTED) {
		if (op->rc == SNAP_OK)
			log_info("restore detected, recovered", "source=%s reply={%.*s}", op->source,
				 (int)flen, fields);
		else
			log_warn("restore detected, recovery incomplete", "source=%s error=\"%s\" reply={%.*s}",
				 op->source, op->err, (int)flen, fields);
	}
	buf_wipe(&op->rr.entropy);
	json_free(&op->j);
	buf_free(&op->text);
	buf_free(&op->body);
	free(op);
	if (!s->busy && s->detect_pending) {
		const char *src = s->detect_pending;
		s->detect_pending = NULL;
		detected(s, src);
	}
}

static void submit(struct snap_op *op)
{
	struct snapshot *s = op->s;
	/* every operation starts by thawing (or finds nothing to thaw): the old deadline is moot,
	 * and op_done arms a new one when the system is left prepared */
	if (s->watchdog) {
		loop_timer_cancel(s->loop, s->watchdog);
		s->watchdog = 0;
	}
	s->busy++;
	if (!s->offload || s->offload(s->ctx, op_work, op_done, op)) {
		op_work(op);
		op_done(op);
	}
}

void snapshot_request(struct snapshot *s, enum snap_kind kind, const struct json *j, int payload,
		      void *keep, snap_reply_fn reply, void *ctx)
{
	char err[ERRBUF] = "";
	struct snap_op *op = calloc(1, sizeof *op);
	if (!op) {
		reply(ctx, SNAP_FAILED, "", 0, "out of memory");
		return;
	}
	*op = (struct snap_op){.s = s, .kind = kind == SNAP_PREPARE ? OP_PREPARE :
				   kind == SNAP_ABORT ? OP_ABORT : OP_RESTORED,
			       .payload = -1, .keep = keep, .reply = reply, .ctx = ctx,
			       .source = "host", .rr = {.network = -1}};
	/* the request's text is gone once the handler returns: the operation keeps a copy */
	enum snap_rc rc = SNAP_OK;
	if (payload >= 0 && kind != SNAP_ABORT) {
		const jsmntok_t *t = &j->tok[payload];
		buf_append(&op->text, j->s + t->start, t->end - t->start);
		if (json_parse(&op->j, buf_cstr(&op->text), op->text.len, false, err))
			rc = SNAP_INVALID;
		op->payload = 0;
	}
	if (rc == SNAP_OK && kind == SNAP_PREPARE)
		rc = prepare_parse(op, err);
	else if (rc == SNAP_OK && kind == SNAP_RESTORED)
		rc = restore_parse(&op->j, op->payload, &op->rr, err);
	if (rc != SNAP_OK) {
		reply(ctx, rc, "", 0, err);
		json_free(&op->j);
		buf_free(&op->text);
		free(op);
		return;
	}
	if (kind == SNAP_RESTORED && s->detect_timer) {   /* the host announced it: run once */
		loop_timer_cancel(s->loop, s->detect_timer);
		s->detect_timer = 0;
		log_info("detected restore announced by the host", "source=%s", s->detect_source);
	}
	submit(op);
}

uint64_t snapshot_generation(const struct snapshot *s)
{
	return s->generation_pub;
}

/* ---- restore detection ------------------------------------------------------------------- */
/* A detector fires at once when the VM resumes, a moment before the host's `restored` (which
 * brings the time, entropy and identity) can arrive. Recovering then would run the thaw
 * hooks with the snapshot's clock, so a detected restore waits DETECT_GRACE_MS and runs only
 * if the host has not announced it meanwhile (snapshot_request cancels the wait). */
static void detected_run(struct loop *l, void *ctx)
{
	struct snapshot *s = ctx;
	const char *source = s->detect_source;
	(void)l;
	s->detect_timer = 0;
	if (s->busy) {                 /* after the operation under way (it may be a restore) */
		s->detect_pending = source;
		return;
	}
	if (s->last_restore_ms && now_ms() - s->last_restore_ms < COALESCE_MS) {
		log_info("restore detector fired again, already recovered", "source=%s", source);
		return;
	}
	struct snap_op *op = calloc(1, sizeof *op);
	if (!op) {
		log_error("restore detected, not recovered: out of memory", "source=%s", source);
		return;
	}
	*op = (struct snap_op){.s = s, .kind = OP_DETECTED, .payload = -1, .source = source,
			       .rr = {.network = -1}};
	submit(op);
}

/* source: a string literal (it outlives the wait). */
static void detected(struct snapshot *s, const char *source)
{
	if (s->busy) {                 /* after the operation under way (it may be a restore) */
		s->detect_pending = source;
		return;
	}
	if ((s->last_restore_ms && now_ms() - s->last_restore_ms < COALESCE_MS) || s->detect_timer) {
		log_info("restore detector fired again, already recovered or waiting", "source=%s",
			 source);
		return;
	}
	log_info("restore detected, waiting for the host's restored", "source=%s grace_ms=%d", source,
		 DETECT_GRACE_MS);
	s->detect_source = source;
	s->detect_timer = loop_timer(s->loop, DETECT_GRACE_MS, detected_run, s);
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
	s->cpu_prev = s->cpu_last;
	cpu_sample_read(&s->cpu_last);
	s->tick = loop_timer(l, TICK_MS, tick, s);
	if (s->busy)                   /* an operation owns the clocks' bases until it is done */
		return;
	int64_t mono = clock_raw(CLOCK_MONOTONIC);
	int64_t boot = snap_clock_ns(s, CLOCK_BOOTTIME) - mono;
	int64_t real = snap_clock_ns(s, CLOCK_REALTIME) - mono;
	int64_t dboot = boot - s->base_boot_ns, dreal = real - s->base_real_ns;
	s->base_boot_ns = boot;
	s->base_real_ns = real;
	/* BOOTTIME runs on while the guest is suspended; MONOTONIC does not. A VM restore moves
	 * neither (nor REALTIME): this was never seen to fire on one (docs/snapshot.md) */
	if (dboot > JUMP_NS)
		detected(s, "clock");
	else if (llabs(dreal) > JUMP_NS && s->prepared)
		detected(s, "clock");
	else if (llabs(dreal) > JUMP_NS)
		log_info("wall clock stepped", "by_ms=%lld", (long long)(dreal / 1000000));
}

/* Some kernels' vmgenid driver sends "change@..." with NEW_VMGENID=1 when the VM generation
 * changes; Debian's 6.1 does not, and the clone test never saw one (docs/snapshot.md). Only
 * root can send on this netlink family, and only messages with root credentials are
 * believed. */
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

/* The kernel's own account of a VM fork: when the vmgenid driver sees the generation change
 * it reseeds the RNG and, if the RNG was already initialised, logs "random: crng reseeded due
 * to virtual machine fork" (Linux 5.18+). This is the signal the clone test sees on Debian's
 * 6.1 kernel under QEMU, where no uevent comes (docs/snapshot.md). Only records with the
 * kernel facility count: user space can write to /dev/kmsg, but not as the kernel. */
#define VMFORK_MSG "crng reseeded due to virtual machine fork"

static void kmsg_read(struct loop *l, int fd, uint32_t events, void *ctx)
{
	struct snapshot *s = ctx;
	char rec[2048];
	bool hit = false;
	for (int round = 0; round < 256; round++) {
		ssize_t n = read(fd, rec, sizeof rec - 1);
		if (n < 0 && (errno == EPIPE || errno == EINTR || errno == EINVAL))
			continue;       /* overwritten before we read it, or too long: skip it */
		if (n <= 0)
			break;
		rec[n] = 0;
		/* "PRI,SEQ,USEC,FLAGS;MESSAGE\n": facility = PRI >> 3, 0 is the kernel */
		char *msg = strchr(rec, ';');
		if (msg && strtol(rec, NULL, 10) < 8 && strstr(msg, VMFORK_MSG))
			hit = true;
	}
	if (hit)
		detected(s, "kmsg");
}

static void kmsg_open(struct snapshot *s)
{
	int fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0 || lseek(fd, 0, SEEK_END) < 0 || loop_add(s->loop, fd, EPOLLIN, kmsg_read, s)) {
		log_warn("kernel-log restore detection off", "error=\"%s\"", strerror(errno));
		if (fd >= 0)
			close(fd);
		return;
	}
	s->kmsg_fd = fd;
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
	s->offload = o->offload;
	s->ctx = o->ctx;
	s->uevent_fd = -1;
	s->kmsg_fd = -1;
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
	s->generation_pub = s->generation;
	snap_detect_rebase(s);
	cpu_sample_read(&s->cpu_last);
	s->cpu_prev = s->cpu_last;
	s->tick = loop_timer(l, TICK_MS, tick, s);
	uevent_open(s);
	kmsg_open(s);
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
	if (s->detect_timer)
		loop_timer_cancel(s->loop, s->detect_timer);
	if (s->tick)
		loop_timer_cancel(s->loop, s->tick);
	if (s->uevent_fd >= 0) {
		loop_del(s->loop, s->uevent_fd);
		close(s->uevent_fd);
	}
	if (s->kmsg_fd >= 0) {
		loop_del(s->loop, s->kmsg_fd);
		close(s->kmsg_fd);
	}
	free(s);
}
