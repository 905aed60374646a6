/* proc.h - starting child processes, the one way every applet does it (proc.c). */
#ifndef STEREO_PROC_H
#define STEREO_PROC_H
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define PROC_NULL (-1)      /* in/out/err: /dev/null */
#define PROC_FDS_MAX 4

/* What the child gets. Zero-initialise it and set what you need: by default the child inherits
 * stdin/stdout/stderr and the environment, has no other fd, its own process group, and
 * default signal handling (an empty mask; every signal this process ignored through
 * proc_sig_ignore is back to SIG_DFL). */
struct proc_req {
	char *const *argv;          /* argv[0]: a path, or a name looked up in PATH */
	char *const *envp;          /* NULL: this process's environment */
	const char *dir;            /* chdir there before exec; NULL: stay */
	int in, out, err;           /* 0: inherit; PROC_NULL: /dev/null; N > 0: dup fd N there */
	struct {
		int from, to;       /* dup from onto to (from == to: keep it open) */
	} fds[PROC_FDS_MAX];        /* fds >= 3 the child keeps; every other one is closed. A
	                             * "to" must not be the "from" of a later entry. */
	int nfds;
	bool setsid;                /* a new session, not only a new process group */
	bool set_user;              /* drop to uid/gid with no supplementary groups */
	uid_t uid;
	gid_t gid;
};

/* Ignore sig in this process and remember it, so children get SIG_DFL back (tini's rule:
 * restore exactly what we changed, in one place). For start-up code; returns 0 or -errno. */
int proc_sig_ignore(int sig);

/* Start a child that reports its exit with SIGCHLD, for a caller that reaps with
 * waitpid(-1) (init, stereod's loop). Returns the pid or -errno. In the child, a failing
 * chdir or credential change exits 126, a failing exec 127 (not found) or 126, with a line on
 * its stderr. */
pid_t proc_spawn(const struct proc_req *r);

/* Start a child and block until it exits, killing its process group with SIGKILL at
 * deadline (absolute, now_ms() milliseconds; 0: no deadline; past: killed at once). The child
 * is started and waited for by a private go-between process, so a waitpid(-1) elsewhere in
 * the process (another thread's loop reaping) cannot take its status: safe on a worker
 * thread. Returns 0 with *status (a wait status) when it exited, -ETIMEDOUT with *status when
 * it was killed at the deadline, another -errno when it could not run. */
int proc_run(const struct proc_req *r, int64_t deadline, int *status);

/* "exit 3", "signal 9" */
const char *proc_status_str(int status, char *buf, size_t n);

#endif
