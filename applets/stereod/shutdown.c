/* shutdown.c - the shutdown sequence: state shutdown -> unmount all (LIFO) -> sync -> poweroff.
 * Unmounting and sync run on the jobs worker (they can block); the daemon keeps answering.
 *
 * It runs from a zero-delay timer, i.e. after the current dispatch pass has flushed the ack
 * (or the 202) that announced it. The poweroff action is chosen by --poweroff:
 *   init     SIGUSR2 to PID 1 (our init's and busybox init's "poweroff" signal)
 *   systemd  "systemctl poweroff"
 *   cmd      "/bin/sh -c CMD" (--poweroff-cmd; tests and `make run`)
 *   auto     cmd when --poweroff-cmd is given, else init when our init started us (it sets
 *            STEREO_INIT=1), else systemd when /run/systemd/system exists, else none
 *   none     log only
 * The daemon keeps serving afterwards (get_health answers "shutdown") until it is stopped.
 * Spec: docs/protocol.md (shutdown), docs/stereod.md
 */
#include "stereod.h"
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static enum poweroff_kind resolve(const struct stereod *d)
{
	if (d->poweroff != POWEROFF_AUTO)
		return d->poweroff;
	const char *si = getenv("STEREO_INIT");
	if (si && !strcmp(si, "1"))
		return POWEROFF_INIT;
	struct stat st;
	if (!stat("/run/systemd/system", &st) && S_ISDIR(st.st_mode))
		return POWEROFF_SYSTEMD;
	return POWEROFF_NONE;
}

static void power_off(struct stereod *d)
{
	pid_t pid;
	switch (resolve(d)) {
	case POWEROFF_INIT:
		log_info("requesting poweroff from init", "signal=SIGUSR2");
		if (kill(1, SIGUSR2))
			log_error("cannot signal init to power off", "err=\"%s\"", strerror(errno));
		return;
	case POWEROFF_SYSTEMD:
	case POWEROFF_CMD:
		pid = spawn_sh(d->poweroff == POWEROFF_CMD ? d->poweroff_cmd : "systemctl poweroff", NULL);
		if (pid < 0) {
			log_error("cannot start the poweroff command", "err=\"%s\"", strerror(-pid));
			return;
		}
		d->poweroff_pid = pid;
		log_info("poweroff command started", "pid=%d", (int)pid);
		return;
	default:
		log_warn("no poweroff action configured (see --poweroff)", "%s", "");
		return;
	}
}

/* Unmounting (the helper, umount2 on a busy mount) and sync(2) can block: they run on the
 * jobs worker, and the poweroff follows on the loop thread. */
struct shutdown_job {
	struct stereod *d;
	struct mount_list *mounts;
};

static void shutdown_work(void *ctx)
{
	struct shutdown_job *j = ctx;
	mount_list_unmount(j->mounts);
	sync();
	log_info("filesystems synced", "%s", "");
}

static void shutdown_done(void *ctx)
{
	struct shutdown_job *j = ctx;
	power_off(j->d);
	free(j);
}

static void run_shutdown(struct loop *l, void *ctx)
{
	struct stereod *d = ctx;
	lc_event(d, EV_SHUTDOWN, d->shutdown_reason);
	struct shutdown_job *j = malloc(sizeof *j);
	if (!j) {
		/* no memory for the job: do the same work here, on the loop, rather than exit */
		struct shutdown_job local = {.d = d, .mounts = mounts_detach(d->mounts)};
		shutdown_work(&local);
		power_off(d);
		return;
	}
	*j = (struct shutdown_job){.d = d, .mounts = mounts_detach(d->mounts)};
	if (jobs_run(d->jobs, shutdown_work, shutdown_done, j)) {
		shutdown_work(j);
		shutdown_done(j);
	}
}

void shutdown_request(struct stereod *d, const char *reason)
{
	if (d->shutting_down) {
		log_info("shutdown already in progress", "%s", "");
		return;
	}
	d->shutting_down = true;
	size_t i = 0;
	for (; reason[i] && i < sizeof d->shutdown_reason - 1; i++)   /* printable only: it is logged */
		d->shutdown_reason[i] = (unsigned char)reason[i] < 0x20 || reason[i] == '"' ? '?' : reason[i];
	d->shutdown_reason[i] = 0;
	log_info("shutdown requested", "reason=\"%s\"", d->shutdown_reason);
	loop_timer(d->loop, 0, run_shutdown, d);
}

void shutdown_child_exited(struct stereod *d, pid_t pid, int status)
{
	if (pid != d->poweroff_pid)
		return;
	d->poweroff_pid = 0;
	if (WIFEXITED(status))
		log_info("poweroff command finished", "status=%d", WEXITSTATUS(status));
	else
		log_warn("poweroff command killed", "signal=%d", WTERMSIG(status));
}
