/* reap.c - the small core of init that must be obviously correct, kept apart from the
 * supervision policy (as in tini and catatonit): which signals init takes and how, how a child
 * is started (clean signal state, its own session, exit 126/127 when exec fails), and reaping
 * every child, including orphans re-parented to init. It knows nothing about services.
 */
#include "init/init.h"
#include <fcntl.h>
#include <grp.h>
#include <sys/wait.h>
#include <unistd.h>

/* Signals init handles through the loop's signalfd. Everything else keeps its default:
 * the kernel drops default-action signals sent to a PID 1 anyway, and a subreaper in a test
 * may well die of SIGKILL/SIGQUIT. SIGPIPE, SIGTTIN and SIGTTOU are ignored. */
static const int core_sigs[] = {SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2, SIGPWR};

int core_signals(struct loop *l, loop_signal_cb cb, void *ctx)
{
	signal(SIGPIPE, SIG_IGN);
	signal(SIGTTIN, SIG_IGN);
	signal(SIGTTOU, SIG_IGN);
	return loop_signals(l, core_sigs, ARRAY_SIZE(core_sigs), cb, ctx);
}

/* In the child: undo everything init changed for itself, then exec. Only async-signal-safe
 * calls between fork and exec. */
static _Noreturn void child_exec(const struct spawn_req *r)
{
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGPIPE, SIG_DFL);
	signal(SIGTTIN, SIG_DFL);
	signal(SIGTTOU, SIG_DFL);
	setsid();
	if (r->notify_wfd >= 0) {
		if (r->notify_wfd == r->notify_fd)
			fcntl(r->notify_fd, F_SETFD, 0);
		else if (dup2(r->notify_wfd, r->notify_fd) < 0)
			_exit(126);
	}
	int nul = open("/dev/null", O_RDONLY);
	if (nul >= 0 && nul != 0) {
		dup2(nul, 0);
		close(nul);
	}
	if (r->dir && chdir(r->dir) < 0) {
		dprintf(2, "%s: chdir %s: %s\n", r->argv[0], r->dir, strerror(errno));
		_exit(126);
	}
	if (r->set_user && (setgroups(0, NULL) < 0 || setgid(r->gid) < 0 || setuid(r->uid) < 0)) {
		dprintf(2, "%s: switching to uid %u: %s\n", r->argv[0], (unsigned)r->uid, strerror(errno));
		_exit(126);
	}
	execvpe(r->argv[0], r->argv, r->envp);
	int e = errno;
	dprintf(2, "%s: exec: %s\n", r->argv[0], strerror(e));
	_exit(e == ENOENT ? 127 : 126);
}

pid_t spawn(const struct spawn_req *r)
{
	pid_t pid = fork();
	if (pid == 0)
		child_exec(r);
	return pid < 0 ? -errno : pid;
}

int reap_all(void (*on_exit)(pid_t, int, void *), void *ctx)
{
	int n = 0, status;
	pid_t pid;
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		n++;
		on_exit(pid, status, ctx);
	}
	return n;
}

const char *exit_str(int status, char *buf, size_t n)
{
	if (WIFEXITED(status))
		snprintf(buf, n, "exit %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, n, "signal %d", WTERMSIG(status));
	else
		snprintf(buf, n, "status %d", status);
	return buf;
}
