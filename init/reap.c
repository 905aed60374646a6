/* reap.c - the small core of init that must be obviously correct, kept apart from the
 * supervision policy (as in tini and catatonit): which signals init takes and how, and reaping
 * every child, including orphans re-parented to init. Children start through common/proc.c,
 * which gives them back the default of every signal init ignores here. It knows nothing about
 * services.
 */
#include "init/init.h"
#include <sys/wait.h>

/* Signals init handles through the loop's signalfd. Everything else keeps its default:
 * the kernel drops default-action signals sent to a PID 1 anyway, and a subreaper in a test
 * may well die of SIGKILL/SIGQUIT. SIGPIPE, SIGTTIN and SIGTTOU are ignored (and restored in
 * every child by proc_spawn). */
static const int core_sigs[] = {SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2, SIGPWR};

int core_signals(struct loop *l, loop_signal_cb cb, void *ctx)
{
	proc_sig_ignore(SIGPIPE);
	proc_sig_ignore(SIGTTIN);
	proc_sig_ignore(SIGTTOU);
	return loop_signals(l, core_sigs, ARRAY_SIZE(core_sigs), cb, ctx);
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
