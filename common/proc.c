/* proc.c - the one way to start a child: init's services, stereod's shell commands and the
 * snapshot hooks all go through here, so every child starts from the same clean state
 * (tini's and catatonit's rule): the signal mask empty, every signal this process ignored back
 * to its default, no fd beyond stdin/stdout/stderr and the ones asked for, its own process
 * group or session, then the asked-for directory and credentials, then exec.
 *
 * proc_spawn's children are reaped by the caller's waitpid(-1) (init's and stereod's loops);
 * proc_run waits for its own child through a go-between process (see there).
 */
#include "common/stereo.h"
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

/* The signals this process set to SIG_IGN through proc_sig_ignore (process-wide state by
 * nature, written at start-up only). Dispositions a parent handed us stay as they were. */
static sigset_t ignored;

int proc_sig_ignore(int sig)
{
	struct sigaction sa = {.sa_handler = SIG_IGN};
	if (sigaction(sig, &sa, NULL))
		return -errno;
	sigaddset(&ignored, sig);
	return 0;
}

const char *proc_status_str(int status, char *buf, size_t n)
{
	if (WIFEXITED(status))
		snprintf(buf, n, "exit %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, n, "signal %d", WTERMSIG(status));
	else
		snprintf(buf, n, "status %d", status);
	return buf;
}

/* ---- in the child: async-signal-safe calls only, no allocation ---------------------------- */

static void child_say(const char *what, const char *arg, int e)
{
	const char *why = strerrordesc_np(e);
	struct iovec v[] = {
		{(void *)what, strlen(what)}, {(void *)": ", 2}, {(void *)arg, strlen(arg)},
		{(void *)": ", 2}, {(void *)(why ? why : "error"), strlen(why ? why : "error")},
		{(void *)"\n", 1},
	};
	ssize_t ignored_rc = writev(2, v, ARRAY_SIZE(v));
	(void)ignored_rc;
}

static void close_fds(unsigned lo, unsigned hi)
{
	if (!syscall(SYS_close_range, lo, hi, 0) || errno != ENOSYS)
		return;
	struct rlimit rl;   /* a kernel before 5.9 */
	unsigned top = !getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < 65536 ? (unsigned)rl.rlim_cur : 65536;
	for (unsigned fd = lo; fd <= hi && fd < top; fd++)
		close((int)fd);
}

/* Close every fd >= 3 that is not in keep. */
static void close_all_but(const int *keep, int n)
{
	int sorted[PROC_FDS_MAX];
	for (int i = 0; i < n; i++) {
		int k = keep[i], j = i;
		for (; j > 0 && sorted[j - 1] > k; j--)
			sorted[j] = sorted[j - 1];
		sorted[j] = k;
	}
	unsigned lo = 3;
	for (int i = 0; i < n; i++) {
		unsigned k = (unsigned)sorted[i];
		if (k > lo)
			close_fds(lo, k - 1);
		if (k + 1 > lo)
			lo = k + 1;
	}
	close_fds(lo, ~0U);
}

static _Noreturn void child_exec(const struct proc_req *r)
{
	/* dispositions first, then the mask, so a signal let through meets its default action */
	struct sigaction dfl = {.sa_handler = SIG_DFL};
	for (int s = 1; s < NSIG; s++)
		if (sigismember(&ignored, s) == 1)
			sigaction(s, &dfl, NULL);
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	if (r->setsid)
		setsid();
	else
		setpgid(0, 0);

	const int io[3] = {r->in, r->out, r->err};
	for (int i = 0; i < 3; i++) {
		if (io[i] == PROC_NULL) {
			int nul = open("/dev/null", O_RDWR);
			if (nul >= 0 && nul != i) {
				dup2(nul, i);
				close(nul);
			}
		} else if (io[i] > 0 && io[i] != i && dup2(io[i], i) < 0) {
			_exit(126);
		}
	}
	int keep[PROC_FDS_MAX];
	for (int i = 0; i < r->nfds; i++) {
		keep[i] = r->fds[i].to;
		if (r->fds[i].from == r->fds[i].to ? fcntl(keep[i], F_SETFD, 0) < 0 :
						     dup2(r->fds[i].from, keep[i]) < 0)
			_exit(126);
	}
	close_all_but(keep, r->nfds);

	const char *name = r->argv[0];
	if (r->dir && chdir(r->dir) < 0) {
		child_say(name, r->dir, errno);
		_exit(126);
	}
	/* raw system calls: this child has one thread, and glibc's wrappers would try to change
	 * the credentials of threads that exist only in the parent */
	if (r->set_user && (syscall(SYS_setgroups, 0, NULL) || syscall(SYS_setgid, r->gid) ||
			    syscall(SYS_setuid, r->uid))) {
		child_say(name, "switching user", errno);
		_exit(126);
	}
	if (r->envp)
		execvpe(name, r->argv, r->envp);
	else
		execvp(name, r->argv);
	int e = errno;
	child_say(name, "exec", e);
	_exit(e == ENOENT ? 127 : 126);
}

/* ---- in the parent ----------------------------------------------------------------------- */

pid_t proc_spawn(const struct proc_req *r)
{
	if (r->nfds < 0 || r->nfds > PROC_FDS_MAX)
		return -EINVAL;
	pid_t pid = fork();
	if (pid == 0)
		child_exec(r);
	if (pid < 0)
		return -errno;
	if (!r->setsid)
		setpgid(pid, pid);   /* whichever of the two runs first, the group exists now */
	return pid;
}

/* A raw clone: a private copy of the caller like fork(), but without glibc's fork handlers,
 * so it is safe in a multi-threaded process as long as the copy makes only plain system calls
 * (no malloc, no stdio, no locks). exit_signal 0: a "clone child" that waitpid(-1) without
 * __WALL does not see. All the other arguments are 0, so their order (which differs between
 * architectures) does not matter. */
static pid_t raw_clone(int exit_signal)
{
	return (pid_t)syscall(SYS_clone, (unsigned long)exit_signal, 0UL, 0UL, 0UL, 0UL);
}

/* Wait for pid until deadline (0: none), SIGKILL its process group past it. 0 or -ETIMEDOUT
 * with *status, or -errno. Runs in proc_run's go-between: system calls only. */
static int wait_until(pid_t pid, int64_t deadline, int *status)
{
	int pidfd = (int)syscall(SYS_pidfd_open, pid, 0), rc = 0;
	for (;;) {
		int wait_ms = -1;
		if (deadline) {
			int64_t left = deadline - now_ms();
			if (left <= 0) {
				kill(-pid, SIGKILL);   /* not reaped yet: pid and group are still ours */
				kill(pid, SIGKILL);
				rc = -ETIMEDOUT;
				break;
			}
			wait_ms = left > INT_MAX ? INT_MAX : (int)left;
		}
		if (pidfd < 0) {   /* no pidfd (before Linux 5.3): look every 10 ms */
			if (waitpid(pid, status, WNOHANG) == pid)
				return 0;
			poll(NULL, 0, wait_ms < 0 || wait_ms > 10 ? 10 : wait_ms);
			continue;
		}
		struct pollfd p = {.fd = pidfd, .events = POLLIN};
		if (poll(&p, 1, wait_ms) > 0)
			break;
	}
	if (pidfd >= 0)
		close(pidfd);
	while (waitpid(pid, status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return rc;
}

/* The child is started by a private go-between process, which waits for it (with the
 * deadline) and reports its status through a pipe. A child that execs becomes a normal
 * SIGCHLD child whatever it was cloned with, so this is the only way to keep another
 * thread's waitpid(-1) (a daemon's loop reaping) from taking the status away: the go-between
 * is the child's parent, and the go-between itself never execs and sends no SIGCHLD. */
int proc_run(const struct proc_req *r, int64_t deadline, int *status)
{
	if (r->nfds < 0 || r->nfds > PROC_FDS_MAX)
		return -EINVAL;
	int p[2];
	if (pipe2(p, O_CLOEXEC))
		return -errno;
	pid_t mid = raw_clone(0);
	if (mid == 0) {
		struct { int rc, status; } res = {0, 0};
		close(p[0]);
		pid_t pid = raw_clone(SIGCHLD);
		if (pid == 0)
			child_exec(r);
		if (pid < 0) {
			res.rc = -errno;
		} else {
			if (!r->setsid)
				setpgid(pid, pid);
			res.rc = wait_until(pid, deadline, &res.status);
		}
		ssize_t w = write(p[1], &res, sizeof res);
		_exit(w == sizeof res ? 0 : 1);
	}
	int e = errno;
	close(p[1]);
	if (mid < 0) {
		close(p[0]);
		return -e;
	}
	struct { int rc, status; } res;
	ssize_t n;
	while ((n = read(p[0], &res, sizeof res)) < 0 && errno == EINTR)
		;
	close(p[0]);
	while (waitpid(mid, NULL, __WALL) < 0 && errno == EINTR)
		;
	if (n != sizeof res)
		return -EIO;   /* the go-between died (killed from outside) */
	*status = res.status;
	return res.rc;
}
