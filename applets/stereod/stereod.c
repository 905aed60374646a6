/* stereod.c - the guest control-plane daemon: command line, start sequence, signals.
 *
 * The subsystems live beside this file (ndjson_api.c, ipc_api.c, lifecycle.c, secrets.c,
 * sshkeys.c, mounts.c, agentd.c, config.c, shutdown.c, users.c); this file wires them to one
 * event loop in the order of the spec's start sequence.
 * Spec: docs/protocol.md, docs/stereod.md
 */
/*
APPLET(stereod)

config STEREOD
	bool "stereod: guest control-plane daemon (stereosd compatible)"
	default y
	help
	  usage: stereod [--listen-mode auto|vsock|tcp] [--listen HOST:PORT] [--vsock-port N]
	                 [--metadata-listen-mode auto|vsock|tcp|off]
	                 [--metadata-listen HOST:PORT] [--metadata-vsock-port N]
	                 [--metadata-env-file F] [--metadata-secrets-dir D]
	                 [--allow-cid N,...] [--allow-local-peers] [--allow-from CIDR,...]
	                 [--line-timeout DUR] [--kernel-cmdline FILE]
	                 [--root DIR] [--socket PATH] [--agentd-socket PATH] [--run-dir DIR]
	                 [--secrets-dir DIR] [--config-dir DIR] [--passwd FILE] [--group FILE]
	                 [--poll-interval DUR] [--allow-disk-secrets]
	                 [--poweroff auto|init|systemd|cmd|none] [--poweroff-cmd CMD]
	                 [--mount-helper CMD] [--mount-stand-in FSTYPE] [--ready-fd N]
	                 [--verbose]

	  Serves the stereosd NDJSON protocol on AF_VSOCK port 1024 or TCP, and the
	  IPC HTTP API on a unix socket; polls agentd; manages secrets, SSH keys,
	  shared-directory mounts, config and shutdown.

	  --listen-mode M    auto, vsock or tcp (default auto). auto: what the
	                     kernel command line asks for (stereod.listen=tcp or
	                     stereod.listen=vsock), else vsock when a vsock
	                     transport is attached, else exit 1: never TCP unasked
	  --listen ADDR      TCP bind address (default 0.0.0.0:1024; port 0 = any)
	  --vsock-port N     vsock port (default 1024)
	  --allow-cid LIST   vsock peers allowed besides the host (CID 2)
	  --allow-local-peers  TCP: accept peers with this machine's own addresses
	                     (loopback included; refused by default)
	  --allow-from LIST  TCP: accept only peers in these CIDR ranges
	  --line-timeout D   close a connection whose request stays unfinished
	                     this long, after an error reply (default 10s)
	  --kernel-cmdline F read stereod.listen= from F (default /proc/cmdline)
	  --root DIR         prefix of every default path below (default /)
	  --run-dir DIR      default ROOT/run/stereos
	  --secrets-dir DIR  default ROOT/run/stereos/secrets (must be a tmpfs)
	  --config-dir DIR   default ROOT/etc/stereos (jcard.toml)
	  --socket PATH      IPC socket, default ROOT/run/stereos/stereosd.sock
	  --agentd-socket P  default ROOT/run/stereos/agentd.sock
	  --passwd FILE      user database, default ROOT/etc/passwd
	  --group FILE       group database, default ROOT/etc/group
	  --poll-interval D  agentd poll interval (default 5s)
	  --allow-disk-secrets  accept a secrets dir that is not a tmpfs (and do
	                     not mount one)
	  --poweroff KIND    auto: cmd if --poweroff-cmd, init (SIGUSR2 to PID 1)
	                     when STEREO_INIT=1, systemd when /run/systemd/system
	                     exists, else none (log only)
	  --poweroff-cmd CMD run "/bin/sh -c CMD" to power off
	  --mount-helper CMD test hook: run CMD TYPE TAG PATH ro|rw to mount and
	                     CMD umount PATH to unmount instead of mount(2)
	  --mount-stand-in T test hook: call mount(2) with fs type T and no
	                     options instead of virtiofs/9p
	  --ready-fd N       once serving, write "HOST:PORT" (or "vsock:PORT")
	                     and a newline to fd N, then close it
	  --verbose          debug logs too

	  Guest metadata (microvm-runtime's set_env/set_secret/ping, when built in):
	  --metadata-listen-mode M  auto (vsock when the control plane is on vsock,
	                            else off), vsock, tcp or off (default auto)
	  --metadata-listen ADDR    TCP bind address (default 0.0.0.0:5555)
	  --metadata-vsock-port N   vsock port (default 5555)
	  --metadata-env-file F     default ROOT/var/run/microvm-guest/env
	  --metadata-secrets-dir D  default ROOT/var/run/microvm-guest/secrets

	  Exit codes: 0 stopped by SIGTERM/SIGINT, 1 start-up failed, 2 usage.

config STEREOD_METADATA
	bool "stereod: microvm-runtime guest metadata listener (vsock 5555)"
	default y
	depends on STEREOD
	help
	  A second NDJSON listener for microvm-runtime's guest metadata protocol:
	  set_env (merged into an env file for init's env-file=), set_secret
	  (base64, written 0600), ping.
*/
#include "stereod.h"
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

char *path_under_root(const struct stereod *d, const char *path)
{
	char *p = path_join_root(d->root, path);   /* start-up only: running out here is fatal */
	if (!p)
		die(EXIT_FAIL, "out of memory");
	return p;
}

/* "/bin/sh -c CMD sh ARGS...": at most 11 ARGS (the rest are dropped). */
static void sh_argv(const char **argv, const char *cmd, const char *const *args)
{
	int n = 0;
	argv[n++] = "/bin/sh";
	argv[n++] = "-c";
	argv[n++] = cmd;
	argv[n++] = "sh";
	for (int i = 0; args && args[i] && n < 15; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
}

pid_t spawn_sh(const char *cmd, const char *const *args)
{
	const char *argv[16];
	sh_argv(argv, cmd, args);
	struct proc_req r = {.argv = (char *const *)argv, .in = PROC_NULL};
	return proc_spawn(&r);
}

int run_sh(const char *cmd, const char *const *args, int timeout_ms, char *err)
{
	const char *argv[16];
	sh_argv(argv, cmd, args);
	struct proc_req r = {.argv = (char *const *)argv, .in = PROC_NULL};
	int st = 0, rc = proc_run(&r, now_ms() + timeout_ms, &st);
	if (rc == -ETIMEDOUT)
		return errf(err, "'%s' timed out after %d ms", cmd, timeout_ms);
	if (rc)
		return errf(err, "starting '%s': %s", cmd, strerror(-rc));
	if (WIFSIGNALED(st))
		return errf(err, "'%s' killed by signal %d", cmd, WTERMSIG(st));
	return WEXITSTATUS(st);
}

/* ---- start-up -------------------------------------------------------------------------- */

static int make_dir(const char *path, mode_t mode, gid_t gid, char *err)
{
	int r = mkdir_p(path, mode);
	if (r)
		return errf(err, "creating %s: %s", path, strerror(-r));
	if (chmod(path, mode))
		return errf(err, "setting mode of %s: %s", path, strerror(errno));
	if (geteuid() == 0 && chown(path, 0, gid == (gid_t)-1 ? 0 : gid))
		return errf(err, "setting owner of %s: %s", path, strerror(errno));
	log_info("created runtime dir", "path=%s mode=%04o", path, (unsigned)mode);
	return 0;
}

int stereod_listen(struct stereod *d, unsigned vsock_port, const char *tcp_addr, char *where,
		   size_t wsz, char *err)
{
	bool vsock = !strcmp(d->listen_mode, "vsock");   /* resolved by resolve_mode */
	int fd;
	if (vsock) {
		fd = sock_listen_vsock(-1U /* VMADDR_CID_ANY */, vsock_port, err);
		if (fd >= 0)
			snprintf(where, wsz, "vsock:%d", sock_local_port(fd));
		return fd;
	}
	fd = sock_listen_tcp(tcp_addr, 1024, err);
	if (fd < 0)
		return -1;
	/* Report the address really bound (port 0 picks one). */
	const char *colon = strrchr(tcp_addr, ':');
	snprintf(where, wsz, "%.*s:%d", (int)(colon - tcp_addr), tcp_addr, sock_local_port(fd));
	if (where[0] == ':')
		snprintf(where, wsz, "0.0.0.0:%d", sock_local_port(fd));
	return fd;
}

/* --listen-mode auto: the kernel command line, else vsock when a transport is attached, else
 * a start-up error; TCP is never chosen silently (docs/stereod.md "Who may connect"). */
static int resolve_mode(struct stereod *d, char *err)
{
	if (strcmp(d->listen_mode, "auto"))
		return 0;
	struct buf b = {0};
	const char *asked = NULL;
	if (!read_file(d->cmdline_file, &b, 65536)) {
		for (char *tok = strtok(b.p ? b.p : (char *)"", " \t\n"); tok; tok = strtok(NULL, " \t\n"))
			if (!strncmp(tok, "stereod.listen=", 15))
				asked = !strcmp(tok + 15, "tcp") ? "tcp" : !strcmp(tok + 15, "vsock") ? "vsock" : "?";
	}
	buf_free(&b);
	if (asked && *asked == '?')
		return errf(err, "bad stereod.listen= on the kernel command line (%s): tcp or vsock",
			    d->cmdline_file);
	if (asked) {
		log_info("listen mode from the kernel command line", "mode=%s", asked);
		d->listen_mode = asked;
		return 0;
	}
	if (vsock_available()) {
		d->listen_mode = "vsock";
		return 0;
	}
	return errf(err, "--listen-mode auto: no vsock transport is attached (no /dev/vsock with a "
		    "guest CID), and stereod never falls back to TCP on its own; to serve over TCP "
		    "pass --listen-mode tcp, or boot with stereod.listen=tcp on the kernel command line");
}

static void on_signal(struct loop *l, const struct signalfd_siginfo *si, void *ctx)
{
	struct stereod *d = ctx;
	if (si->ssi_signo == SIGCHLD) {
		/* Only the poweroff command is reaped here: every other child is waited for by
		 * the code that started it, possibly on the jobs worker thread, and a waitpid(-1)
		 * here would steal its status. */
		int st;
		if (d->poweroff_pid > 0 && waitpid(d->poweroff_pid, &st, WNOHANG) == d->poweroff_pid)
			shutdown_child_exited(d, d->poweroff_pid, st);
		return;
	}
	log_info("stopping", "signal=%s", strsignal(si->ssi_signo));
	if (!agentd_stop(d->agentd))   /* else the poll in flight stops the loop when it ends */
		loop_stop(l);
}

static void notify_ready(struct stereod *d, const char *where)
{
	if (d->ready_fd < 0)
		return;
	char line[128];
	int n = snprintf(line, sizeof line, "%s\n", where);
	if (write_all(d->ready_fd, line, n))
		log_warn("cannot write the readiness line", "fd=%d err=\"%s\"", d->ready_fd,
			 strerror(errno));
	close(d->ready_fd);
	d->ready_fd = -1;
}

/* The hub's wiring: lifecycle transitions go to the subscribers, agentd's findings to the
 * lifecycle, and polling ends with the shutdown state. */
static void push_transition(void *ctx, enum lc_state to, const char *message)
{
	struct stereod *d = ctx;
	if (d->ndjson)
		ndjson_push_lifecycle(d->ndjson, lc_state_name(to), message);
}

static void agentd_event(void *ctx, enum lc_event ev, const char *message) { lc_event(ctx, ev, message); }

static bool agentd_paused(void *ctx) { return ((struct stereod *)ctx)->state == ST_SHUTDOWN; }

static int start(struct stereod *d)
{
	char err[ERRBUF], where[128];
	gid_t admin = (gid_t)-1;
	if (group_lookup(d->group_path, "admin", &admin))
		admin = (gid_t)-1;
	if (make_dir(d->run_dir, 0755, admin, err) || make_dir(d->secrets_dir, 0700, 0, err) ||
	    make_dir(d->config_dir, 0755, 0, err))
		goto fail;
	d->state = ST_BOOTING;
	d->lc_notify = push_transition;
	d->lc_ctx = d;
	log_info("state booting", "state=booting");
	if (secrets_setup(d, err))
		goto fail;
	d->jobs = jobs_new(d->loop);
	struct mounts_conf mc = {.root = d->root, .passwd = d->passwd_path, .group = d->group_path,
				 .helper = d->mount_helper, .stand_in = d->mount_stand_in, .jobs = d->jobs};
	d->mounts = d->jobs ? mounts_new(&mc) : NULL;
	if (!d->mounts) {
		errf(err, "out of memory");
		goto fail;
	}
	d->pool = conn_pool_new(d->loop, CONN_IN_BUDGET, CONN_OUT_BUDGET);
	if (!d->pool) {
		errf(err, "out of memory");
		goto fail;
	}
	if (resolve_mode(d, err))
		goto fail;
	int lfd = stereod_listen(d, d->vsock_port, d->listen_addr, where, sizeof where, err);
	if (lfd < 0)
		goto fail;
	log_info("control plane listening", "addr=%s", where);
	d->ndjson = ndjson_server_new(d, lfd, &control_proto, NULL);
	if (!d->ndjson) {
		close(lfd);
		errf(err, "starting the NDJSON server: out of memory");
		goto fail;
	}
	log_info("NDJSON server started", "addr=%s", where);
	int ufd = sock_listen_unix(d->socket_path, 0660, admin, err);
	if (ufd < 0)
		goto fail;
	d->ipc = ipc_server_new(d, ufd);
	if (!d->ipc) {
		close(ufd);
		errf(err, "starting the IPC server: out of memory");
		goto fail;
	}
	log_info("IPC server listening", "socket=%s", d->socket_path);
#ifdef CONFIG_STEREOD_METADATA
	if (metadata_start(d, err))
		goto fail;
#endif
	if (snapshot_setup(d, err))
		goto fail;
	struct agentd_conf ac = {.loop = d->loop, .socket = d->agentd_socket, .poll_ms = d->poll_ms,
				 .event = agentd_event, .paused = agentd_paused, .ctx = d};
	d->agentd = agentd_new(&ac);
	if (!d->agentd) {
		errf(err, "starting the agentd poller: out of memory");
		goto fail;
	}
	log_info("agentd poller started", "socket=%s interval_ms=%lld", d->agentd_socket, d->poll_ms);
	lc_event(d, EV_STARTED, "stereod is ready");
	notify_ready(d, where);
	return 0;
fail:
	fprintf(stderr, "stereod: starting: %s\n", err);
	return -1;
}

/* ---- command line ---------------------------------------------------------------------- */

enum {
	OPT_LISTEN_MODE = 256, OPT_LISTEN, OPT_VSOCK_PORT, OPT_ROOT, OPT_RUN_DIR, OPT_SECRETS_DIR,
	OPT_CONFIG_DIR, OPT_SOCKET, OPT_AGENTD_SOCKET, OPT_PASSWD, OPT_GROUP, OPT_POLL,
	OPT_MD_MODE, OPT_MD_LISTEN, OPT_MD_VSOCK_PORT, OPT_MD_ENV_FILE, OPT_MD_SECRETS_DIR,
	OPT_DISK_SECRETS, OPT_POWEROFF, OPT_POWEROFF_CMD, OPT_MOUNT_HELPER, OPT_STAND_IN,
	OPT_READY_FD, OPT_VERBOSE, OPT_ALLOW_CID, OPT_ALLOW_LOCAL, OPT_ALLOW_FROM, OPT_LINE_TIMEOUT,
	OPT_CMDLINE,
};

static const struct option options[] = {
	{"listen-mode", required_argument, 0, OPT_LISTEN_MODE},
	{"listen", required_argument, 0, OPT_LISTEN},
	{"vsock-port", required_argument, 0, OPT_VSOCK_PORT},
	{"root", required_argument, 0, OPT_ROOT},
	{"run-dir", required_argument, 0, OPT_RUN_DIR},
	{"secrets-dir", required_argument, 0, OPT_SECRETS_DIR},
	{"config-dir", required_argument, 0, OPT_CONFIG_DIR},
	{"socket", required_argument, 0, OPT_SOCKET},
	{"agentd-socket", required_argument, 0, OPT_AGENTD_SOCKET},
	{"passwd", required_argument, 0, OPT_PASSWD},
	{"group", required_argument, 0, OPT_GROUP},
	{"poll-interval", required_argument, 0, OPT_POLL},
	{"allow-disk-secrets", no_argument, 0, OPT_DISK_SECRETS},
	{"poweroff", required_argument, 0, OPT_POWEROFF},
	{"poweroff-cmd", required_argument, 0, OPT_POWEROFF_CMD},
	{"mount-helper", required_argument, 0, OPT_MOUNT_HELPER},
	{"mount-stand-in", required_argument, 0, OPT_STAND_IN},
	{"ready-fd", required_argument, 0, OPT_READY_FD},
	{"verbose", no_argument, 0, OPT_VERBOSE},
	{"metadata-listen-mode", required_argument, 0, OPT_MD_MODE},
	{"metadata-listen", required_argument, 0, OPT_MD_LISTEN},
	{"metadata-vsock-port", required_argument, 0, OPT_MD_VSOCK_PORT},
	{"metadata-env-file", required_argument, 0, OPT_MD_ENV_FILE},
	{"metadata-secrets-dir", required_argument, 0, OPT_MD_SECRETS_DIR},
	{"allow-cid", required_argument, 0, OPT_ALLOW_CID},
	{"allow-local-peers", no_argument, 0, OPT_ALLOW_LOCAL},
	{"allow-from", required_argument, 0, OPT_ALLOW_FROM},
	{"line-timeout", required_argument, 0, OPT_LINE_TIMEOUT},
	{"kernel-cmdline", required_argument, 0, OPT_CMDLINE},
	{0, 0, 0, 0},
};

static int parse_uint(const char *s, unsigned long max, unsigned long *out)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (!*s || *end || errno || v > max || *s == '-')
		return -1;
	*out = v;
	return 0;
}

static char *opt_path(char *given, const struct stereod *d, const char *dflt)
{
	return given ? xstrdup(given) : path_under_root(d, dflt);
}

static void stereod_free(struct stereod *d)
{
	agentd_free(d->agentd);
#ifdef CONFIG_STEREOD_METADATA
	metadata_stop(d);
#endif
	ndjson_server_free(d->ndjson);
	d->ndjson = NULL;
	http_server_free(d->ipc);
	d->ipc = NULL;
	jobs_free(d->jobs);   /* after the servers: late replies go nowhere; before what jobs use */
	conn_pool_free(d->pool);
	secrets_teardown(d);
	mounts_free(d->mounts);
	snapshot_teardown(d);
	free(d->run_dir);
	free(d->secrets_dir);
	free(d->config_dir);
	free(d->socket_path);
	free(d->agentd_socket);
	free(d->passwd_path);
	free(d->group_path);
	loop_free(d->loop);
}

int stereod_main(int argc, char **argv)
{
	struct stereod d = {
		.listen_mode = "auto", .listen_addr = "0.0.0.0:1024", .root = "/",
		.vsock_port = VSOCK_DEFAULT_PORT, .poll_ms = 5000, .ready_fd = -1,
		.secrets_fd = -1, .md_mode = "auto", .md_addr = "0.0.0.0:5555", .md_vsock_port = 5555,
		.line_timeout_ms = LINE_TIMEOUT_MS, .cmdline_file = "/proc/cmdline",
	};
	char err[ERRBUF];
	char *given[OPT_GROUP + 1] = {0};
	const char *poweroff = "auto";
	unsigned long v;
	int c;
	while ((c = getopt_long(argc, argv, "", options, NULL)) != -1) {
		switch (c) {
		case OPT_LISTEN_MODE:
			if (strcmp(optarg, "auto") && strcmp(optarg, "vsock") && strcmp(optarg, "tcp"))
				return usage_error("--listen-mode must be auto, vsock or tcp, not '%s'", optarg);
			d.listen_mode = optarg;
			break;
		case OPT_LISTEN:
			if (!strchr(optarg, ':'))
				return usage_error("--listen needs HOST:PORT, not '%s'", optarg);
			d.listen_addr = optarg;
			break;
		case OPT_VSOCK_PORT:
			if (parse_uint(optarg, 0xfffffffe, &v))
				return usage_error("bad --vsock-port '%s'", optarg);
			d.vsock_port = v;
			break;
		case OPT_ROOT:
			if (optarg[0] != '/')
				return usage_error("--root must be an absolute path, not '%s'", optarg);
			d.root = optarg;
			break;
		case OPT_RUN_DIR: case OPT_SECRETS_DIR: case OPT_CONFIG_DIR: case OPT_SOCKET:
		case OPT_AGENTD_SOCKET: case OPT_PASSWD: case OPT_GROUP:
			given[c] = optarg;
			break;
		case OPT_POLL:
			if (parse_duration_ms(optarg, &d.poll_ms) || d.poll_ms < 10)
				return usage_error("bad --poll-interval '%s' (a duration of at least 10ms)", optarg);
			break;
		case OPT_DISK_SECRETS:
			d.allow_disk_secrets = true;
			break;
		case OPT_POWEROFF:
			poweroff = optarg;
			break;
		case OPT_POWEROFF_CMD:
			d.poweroff_cmd = optarg;
			break;
		case OPT_MOUNT_HELPER:
			d.mount_helper = optarg;
			break;
		case OPT_STAND_IN:
			d.mount_stand_in = optarg;
			break;
		case OPT_READY_FD:
			if (parse_uint(optarg, 1 << 20, &v) || v < 3 || fcntl((int)v, F_GETFD) < 0)
				return usage_error("--ready-fd '%s' is not an open descriptor above 2", optarg);
			d.ready_fd = (int)v;
			break;
		case OPT_VERBOSE:
			log_set_level(LOG_DEBUG);
			break;
		case OPT_MD_MODE:
			if (strcmp(optarg, "auto") && strcmp(optarg, "vsock") && strcmp(optarg, "tcp") &&
			    strcmp(optarg, "off"))
				return usage_error("--metadata-listen-mode must be auto, vsock, tcp or off, not '%s'",
						   optarg);
			d.md_mode = optarg;
			break;
		case OPT_MD_LISTEN:
			if (!strchr(optarg, ':'))
				return usage_error("--metadata-listen needs HOST:PORT, not '%s'", optarg);
			d.md_addr = optarg;
			break;
		case OPT_MD_VSOCK_PORT:
			if (parse_uint(optarg, 0xfffffffe, &v))
				return usage_error("bad --metadata-vsock-port '%s'", optarg);
			d.md_vsock_port = v;
			break;
		case OPT_MD_ENV_FILE: case OPT_MD_SECRETS_DIR:
			if (optarg[0] != '/')
				return usage_error("--metadata-%s must be an absolute path, not '%s'",
						   c == OPT_MD_ENV_FILE ? "env-file" : "secrets-dir", optarg);
			*(c == OPT_MD_ENV_FILE ? &d.md_env_file : &d.md_secrets_dir) = optarg;
			break;
		case OPT_ALLOW_CID:
			if (peer_parse_cids(&d.peers, optarg, err))
				return usage_error("--allow-cid: %s", err);
			break;
		case OPT_ALLOW_LOCAL:
			d.peers.allow_local = true;
			break;
		case OPT_ALLOW_FROM:
			if (peer_parse_cidrs(&d.peers, optarg, err))
				return usage_error("--allow-from: %s", err);
			break;
		case OPT_LINE_TIMEOUT: {
			long long ms;
			if (parse_duration_ms(optarg, &ms) || ms < 10)
				return usage_error("bad --line-timeout '%s' (a duration of at least 10ms)", optarg);
			d.line_timeout_ms = ms;
			break;
		}
		case OPT_CMDLINE:
			d.cmdline_file = optarg;
			break;
		default:
			return usage_error("unknown option (see stereod --help)");
		}
	}
	if (optind != argc)
		return usage_error("unexpected argument '%s'", argv[optind]);
	if (!strcmp(poweroff, "auto"))
		d.poweroff = d.poweroff_cmd ? POWEROFF_CMD : POWEROFF_AUTO;
	else if (!strcmp(poweroff, "init"))
		d.poweroff = POWEROFF_INIT;
	else if (!strcmp(poweroff, "systemd"))
		d.poweroff = POWEROFF_SYSTEMD;
	else if (!strcmp(poweroff, "cmd"))
		d.poweroff = POWEROFF_CMD;
	else if (!strcmp(poweroff, "none"))
		d.poweroff = POWEROFF_NONE;
	else
		return usage_error("--poweroff must be auto, init, systemd, cmd or none");
	if (d.poweroff == POWEROFF_CMD && !d.poweroff_cmd)
		return usage_error("--poweroff cmd needs --poweroff-cmd CMD");
	if (d.ready_fd >= 0)
		fcntl(d.ready_fd, F_SETFD, FD_CLOEXEC);

	d.run_dir = opt_path(given[OPT_RUN_DIR], &d, "/run/stereos");
	d.secrets_dir = opt_path(given[OPT_SECRETS_DIR], &d, "/run/stereos/secrets");
	d.config_dir = opt_path(given[OPT_CONFIG_DIR], &d, "/etc/stereos");
	d.socket_path = opt_path(given[OPT_SOCKET], &d, "/run/stereos/stereosd.sock");
	d.agentd_socket = opt_path(given[OPT_AGENTD_SOCKET], &d, "/run/stereos/agentd.sock");
	d.passwd_path = opt_path(given[OPT_PASSWD], &d, "/etc/passwd");
	d.group_path = opt_path(given[OPT_GROUP], &d, "/etc/group");

	/* The daemon holds secrets: no core file, no ptrace or /proc/PID/mem by same-uid
	 * processes, from before the first secret is read. */
	struct rlimit nocore = {0, 0};
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) || setrlimit(RLIMIT_CORE, &nocore))
		die_sys(EXIT_FAIL, "starting: making the process non-dumpable");
	proc_sig_ignore(SIGPIPE);
	d.started_ms = now_ms();
	d.loop = loop_new();
	if (!d.loop)
		die_sys(EXIT_FAIL, "creating the event loop");
	static const int sigs[] = {SIGTERM, SIGINT, SIGCHLD};
	if (loop_signals(d.loop, sigs, ARRAY_SIZE(sigs), on_signal, &d))
		die_sys(EXIT_FAIL, "setting up signals");
	log_info("starting", "version=%s root=%s listen_mode=%s", STEREO_VERSION, d.root, d.listen_mode);
	int rc = EXIT_OK;
	if (start(&d))
		rc = EXIT_FAIL;
	else if (loop_run(d.loop))
		rc = EXIT_FAIL;
	stereod_free(&d);
	return rc;
}
