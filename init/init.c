/* init.c - the guest's PID 1: declaration, options, and the boot sequence that ties the parts
 * together (early mounts, modules, network, supervision, ordered stop). See init.h for which
 * file owns what, and docs/init.md for the formats.
 *
 * Spec: docs/init.md
 */
/*
APPLET(init)

config INIT
	bool "init: PID 1 for the microVM guest"
	default y
	help
	  usage: init [--root DIR] [--services DIR] [--status-file FILE] [--control PATH]
	              [--network FILE] [--cmdline FILE] [--modules FILE] [--halt poweroff|reboot]
	              [--backoff-min D] [--backoff-max D] [--stable D] [--quarantine N/WINDOW]
	              [--stop-timeout D] [--ready-timeout D] [-v]
	         init --net-only [--dry-run] [--root DIR] [--network FILE] [--cmdline FILE]
	         init --check [--root DIR] [--services DIR] [--network FILE] [--cmdline FILE]
	         init --status [--json] [--root DIR | --status-file FILE]
	         init --ctl CMD [NAME] [--root DIR | --control PATH]

	  As PID 1: mounts /proc /sys /dev /dev/pts /dev/shm /run and cgroup2, loads
	  the modules in /etc/stereos/modules, configures the network over netlink
	  (kernel ip= and /etc/stereos/network), then supervises the services in
	  /etc/stereos/services/NAME.conf (or the built-in stereod service): dependency
	  order, restart with exponential backoff, quarantine after N crashes within
	  WINDOW (default 5/60s). Not PID 1: the same, as a subreaper, without mounts.
	  With --root other than /, every path is under DIR and init never mounts,
	  unmounts or calls reboot(2): it exits instead (a test run).

	  Signals: TERM, USR1, USR2, PWR power off; INT reboots; HUP reloads the
	  services and releases quarantined ones. The stop is ordered: services in
	  reverse dependency order (TERM, KILL after --stop-timeout), then every
	  other process, unmount, sync, reboot(2) (--halt reboot for Firecracker).

	  --status prints each service's state, pid, restarts and last exit (--json:
	  the status file). --ctl sends release|start|stop NAME, reload, poweroff or
	  reboot. --net-only configures the network and exits (--dry-run prints the
	  parsed configuration as JSON). --check validates the configuration.
	  Durations: 500ms, 2s, 1m. Exit codes: 0 ok, 1 failed, 2 usage, 3 cannot
	  reach init; a stopped init exits 0 (poweroff) or 129 (reboot).

config INIT_NET
	bool "init: network set-up over netlink (libnl-route-3)"
	default y
	depends on INIT
	help
	  Bring interfaces up and configure addresses, MTU, default routes,
	  resolv.conf and the hostname from the kernel ip= and
	  /etc/stereos/network with libnl-route-3 (about 180 KiB of the static
	  binary). Without it init still brings lo up and parses the
	  configuration (--net-only --dry-run), but refuses to apply it.
*/
#include "init/init.h"
#include <getopt.h>
#include <sys/prctl.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <unistd.h>

enum mode { M_RUN, M_NET, M_CHECK, M_STATUS, M_CTL };

struct ctx {
	struct loop *l;
	struct init_opts *o;
	struct super *s;
};

/* dst = root + path, both bounded by PATH_MAX (root by the option parser, path a constant) */
static void under_root(char *dst, const struct init_opts *o, const char *path)
{
	size_t a = strlen(o->root), b = strlen(path);
	if (a + b >= PATH_MAX)
		die(EXIT_USAGE, "--root too long");
	memmove(dst, o->root, a);
	memcpy(dst + a, path, b + 1);
}

static int set_path(char *dst, const char *v)
{
	if (strlen(v) >= PATH_MAX)
		return usage_error("path too long: %s", v);
	snprintf(dst, PATH_MAX, "%s", v);
	return 0;
}

static int duration(const char *name, const char *v, long long *out)
{
	if (parse_duration_ms(v, out))
		return usage_error("--%s: bad duration '%s' (e.g. 500ms, 2s, 1m)", name, v);
	return 0;
}

/* ---- the running init ------------------------------------------------------------------- */

static void on_child(pid_t pid, int status, void *c)
{
	super_child_exited(c, pid, status);
}

static void reload(struct ctx *c)
{
	if (power_active())
		return;
	log_info("reloading services", "dir=%s", c->o->services_dir);
	super_load(c->s);
}

static void on_signal(struct loop *l, const struct signalfd_siginfo *si, void *ctx)
{
	struct ctx *c = ctx;
	if (si->ssi_signo != SIGCHLD)
		log_info("signal", "name=SIG%s from_pid=%u", sigabbrev_np(si->ssi_signo), si->ssi_pid);
	switch (si->ssi_signo) {
	case SIGCHLD:
		reap_all(on_child, c->s);
		break;
	case SIGHUP:
		reload(c);
		break;
	case SIGINT:
		power_begin(HALT_REBOOT);
		break;
	default:   /* TERM, USR1, USR2, PWR */
		power_begin(HALT_POWEROFF);
		break;
	}
}

static void on_control(const char *cmd, void *ctx)
{
	if (!strcmp(cmd, "reload"))
		reload(ctx);
	else
		power_begin(!strcmp(cmd, "reboot") ? HALT_REBOOT : HALT_POWEROFF);
}

/* Before every wait: start what can start, move the stop along, publish the state. */
static void tick(struct loop *l, void *ctx)
{
	struct ctx *c = ctx;
	super_tick(c->s);
	power_tick();
	if (super_dirty(c->s))
		status_write(c->o, c->s, power_active() ? "stopping" : "running");
}

static int load_net(const struct init_opts *o, struct netcfg *nc, bool need_file, char *err)
{
	struct buf b = {0};
	int rc = 0;
	if (*o->cmdline_file) {
		rc = read_file(o->cmdline_file, &b, 65536);
		if (rc) {
			buf_free(&b);
			return errf(err, "reading %s: %s", o->cmdline_file, strerror(-rc));
		}
		if (netcfg_parse_cmdline(nc, buf_cstr(&b), err)) {
			buf_free(&b);
			return -1;
		}
	}
	rc = read_file(o->network_file, &b, 65536);
	if (rc == -ENOENT && !need_file)
		rc = 0;
	else if (rc)
		rc = errf(err, "reading %s: %s", o->network_file, strerror(-rc));
	else
		rc = netcfg_parse_file(nc, b.p ? b.p : "", b.len, o->network_file, err);
	buf_free(&b);
	return rc;
}

static void boot_network(const struct init_opts *o)
{
	struct stat st;
	/* a subreaper or a test run touches the network only when told to */
	if (!o->system && !*o->cmdline_file && stat(o->network_file, &st))
		return;
	char err[ERRBUF];
	struct netcfg *nc = netcfg_new();
	if (!nc) {
		log_error("network setup skipped", "error=\"%s\"", strerror(ENOMEM));
		return;
	}
	if (load_net(o, nc, false, err))
		log_error("network configuration", "error=\"%s\"", err);
	if (netcfg_apply(nc, o->resolv_file, o->system, err))
		log_error("network setup incomplete", "error=\"%s\"", err);
	netcfg_free(nc);
}

/* PID 1 cannot go on and must not exit (the kernel would panic): power off. */
static _Noreturn void emergency(const char *what)
{
	log_error("cannot run, powering off", "failed=\"%s\" error=\"%s\"", what, strerror(errno));
	sync();
	reboot(RB_POWER_OFF);
	for (;;)
		pause();
}

static int run_init(struct init_opts *o)
{
	setenv("STEREO_INIT", "1", 1);
	if (o->system)
		early_boot(o);
	else if (!o->pid1 && prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0))
		log_warn("cannot become a subreaper; orphans will not be reaped", "error=\"%s\"",
			 strerror(errno));
	struct ctx c = {.o = o};
	c.l = loop_new();
	if (!c.l) {
		if (o->system)
			emergency("creating the event loop");
		die_sys(EXIT_FAIL, "creating the event loop");
	}
	c.s = super_new(c.l, o);
	/* one timer per service at a time, per control connection and for the power sequence:
	 * reserved now, so a backoff or a stop never goes missing for want of memory */
	if (!c.s || loop_timer_reserve(c.l, SVC_MAX + CTL_CONNS + 1)) {
		if (o->system)
			emergency("allocating the service table");
		die(EXIT_FAIL, "allocating the service table: out of memory");
	}
	int rc = core_signals(c.l, on_signal, &c);
	if (rc)
		log_error("signal setup", "error=\"%s\"", strerror(-rc));
	log_info("starting", "pid=%d system=%d root=%s", (int)getpid(), o->system,
		 *o->root ? o->root : "/");
	struct buf cmdline = {0};
	if (*o->cmdline_file && read_file(o->cmdline_file, &cmdline, 65536))
		buf_free(&cmdline);   /* load_net reports the error */
	modules_load(o->modules_file, o->root, cmdline.p ? buf_cstr(&cmdline) : NULL);
	buf_free(&cmdline);
	boot_network(o);
	power_init(c.l, o, c.s);
	super_load(c.s);
	status_write(o, c.s, "running");
	char err[ERRBUF];
	if (control_listen(c.l, o->control_path, c.s, on_control, &c, err))
		log_error("control socket", "error=\"%s\"", err);
	loop_before_wait(c.l, tick, &c);
	while (!power_done()) {
		rc = loop_run(c.l);
		if (rc < 0 && !power_done()) {
			/* the loop itself broke: nothing can be supervised any more, so stop cleanly */
			log_error("event loop failed", "error=\"%s\"", strerror(-rc));
			if (o->system)
				emergency("the event loop");
			break;
		}
	}
	status_write(o, c.s, "stopped");
	control_close(c.l);
	unlink(o->control_path);
	rc = power_finish();
	super_free(c.s);
	loop_free(c.l);
	return rc;
}

/* ---- one-shot modes ------------------------------------------------------------------- */

static int net_only(const struct init_opts *o, bool dry_run)
{
	char err[ERRBUF];
	struct netcfg *nc = netcfg_new();
	if (!nc)
		die(EXIT_FAIL, "out of memory");
	if (load_net(o, nc, false, err)) {
		netcfg_free(nc);
		warnx("%s", err);
		return EXIT_FAIL;
	}
	int rc = EXIT_OK;
	if (dry_run) {
		struct buf b = {0};
		netcfg_json(nc, &b);
		fwrite(b.p, 1, b.len, stdout);
		buf_free(&b);
	} else if (netcfg_apply(nc, o->resolv_file, true, err)) {
		warnx("configuring the network: %s", err);
		rc = EXIT_FAIL;
	}
	netcfg_free(nc);
	return rc;
}

static void report_check(const char *msg, void *ctx)
{
	fprintf(stderr, "%s: %s\n", prog, msg);
	++*(int *)ctx;
}

static int check(const struct init_opts *o)
{
	int bad = 0;
	struct svc_def *defs = xcalloc(SVC_MAX, sizeof *defs);
	int n = svconf_load_dir(o->services_dir, o->passwd_file, defs, SVC_MAX, report_check, &bad);
	if (n == -ENOENT) {
		printf("no %s: the built-in stereod service would run\n", o->services_dir);
		n = 0;
	} else if (n < 0) {
		report_check(strerror(-n), &bad);
		n = 0;
	}
	for (int i = 0; i < n; i++) {
		for (int k = 0; k < defs[i].ndeps; k++) {
			bool found = false;
			for (int j = 0; j < n && !found; j++)
				found = !strcmp(defs[j].name, defs[i].deps[k]);
			if (!found) {
				char m[ERRBUF];
				snprintf(m, sizeof m, "service '%s': unknown dependency '%s'", defs[i].name,
					 defs[i].deps[k]);
				report_check(m, &bad);
			}
		}
		printf("service %s: %s (restart=%s)\n", defs[i].name, defs[i].argv[0],
		       restart_name(defs[i].restart));
	}
	free(defs);
	char err[ERRBUF];
	struct netcfg *nc = netcfg_new();
	if (!nc)
		die(EXIT_FAIL, "out of memory");
	if (load_net(o, nc, false, err))
		report_check(err, &bad);
	netcfg_free(nc);
	return bad ? EXIT_FAIL : EXIT_OK;
}

/* ---- options ------------------------------------------------------------------------- */

static void defaults(struct init_opts *o)
{
	o->backoff_min_ms = 1000;
	o->backoff_max_ms = 30000;
	o->stable_ms = 10000;
	o->stop_timeout_ms = 5000;
	o->ready_timeout_ms = 60000;
	o->crash_limit = 5;
	o->crash_window_ms = 60000;
	o->halt_cmd = RB_POWER_OFF;
	o->pid1 = getpid() == 1;
}

/* Paths not given by a flag: the production path under --root. */
static void default_paths(struct init_opts *o, bool cmdline_set)
{
	static const struct {
		size_t off;
		const char *path;
	} tab[] = {
		{offsetof(struct init_opts, services_dir), "/etc/stereos/services"},
		{offsetof(struct init_opts, status_file), "/run/stereos/init.status"},
		{offsetof(struct init_opts, control_path), "/run/stereos/init.sock"},
		{offsetof(struct init_opts, network_file), "/etc/stereos/network"},
		{offsetof(struct init_opts, modules_file), "/etc/stereos/modules"},
		{offsetof(struct init_opts, resolv_file), "/etc/resolv.conf"},
		{offsetof(struct init_opts, hostname_file), "/etc/hostname"},
		{offsetof(struct init_opts, passwd_file), "/etc/passwd"},
	};
	for (size_t i = 0; i < ARRAY_SIZE(tab); i++) {
		char *p = (char *)o + tab[i].off;
		if (!*p)
			under_root(p, o, tab[i].path);
	}
	/* the kernel command line is read by the real PID 1 only, unless --cmdline says so */
	if (!cmdline_set && o->system)
		snprintf(o->cmdline_file, PATH_MAX, "/proc/cmdline");
	/* the built-in service: ROOT/bin/stereod, else this binary's stereod applet */
	char p[PATH_MAX];
	under_root(p, o, "/bin/stereod");
	struct buf b = {0};
	if (!access(p, X_OK)) {
		buf_printf(&b, "\"%s\"", p);
	} else if (*applet_help("stereod")) {
		ssize_t n = readlink("/proc/self/exe", p, sizeof p - 1);
		if (n > 0)
			buf_printf(&b, "\"%.*s\" stereod", (int)n, p);
	}
	if (b.len < sizeof o->default_exec)
		memcpy(o->default_exec, buf_cstr(&b), b.len + 1);
	buf_free(&b);
}

int init_main(int argc, char **argv)
{
	enum { O_ROOT = 256, O_SERVICES, O_STATUS_FILE, O_CONTROL, O_NETWORK, O_CMDLINE, O_MODULES,
	       O_HALT, O_BMIN, O_BMAX, O_STABLE, O_QUAR, O_STOPT, O_READYT, O_NET, O_DRY, O_CHECK,
	       O_STATUS, O_JSON, O_CTL };
	static const struct option lo[] = {
		{"root", 1, 0, O_ROOT}, {"services", 1, 0, O_SERVICES},
		{"status-file", 1, 0, O_STATUS_FILE}, {"control", 1, 0, O_CONTROL},
		{"network", 1, 0, O_NETWORK}, {"config", 1, 0, O_NETWORK},
		{"cmdline", 1, 0, O_CMDLINE}, {"modules", 1, 0, O_MODULES}, {"halt", 1, 0, O_HALT},
		{"backoff-min", 1, 0, O_BMIN}, {"backoff-max", 1, 0, O_BMAX},
		{"stable", 1, 0, O_STABLE}, {"quarantine", 1, 0, O_QUAR},
		{"stop-timeout", 1, 0, O_STOPT}, {"ready-timeout", 1, 0, O_READYT},
		{"net-only", 0, 0, O_NET}, {"dry-run", 0, 0, O_DRY}, {"check", 0, 0, O_CHECK},
		{"status", 0, 0, O_STATUS}, {"json", 0, 0, O_JSON}, {"ctl", 1, 0, O_CTL},
		{"verbose", 0, 0, 'v'}, {0, 0, 0, 0},
	};
	static struct init_opts o;   /* static: the running init keeps pointers to it */
	memset(&o, 0, sizeof o);
	defaults(&o);
	enum mode mode = M_RUN;
	bool dry = false, json = false, cmdline_set = false;
	const char *ctl_cmd = NULL;
	int c;
	/* The kernel passes unknown boot parameters to init as arguments, and PID 1 must not exit:
	 * as PID 1 a bad option is reported and the default kept. */
	opterr = !o.pid1;
#define BAD(call)                                 \
	do {                                      \
		if ((call) && !o.pid1)            \
			return EXIT_USAGE;        \
	} while (0)
	while ((c = getopt_long(argc, argv, "v", lo, NULL)) != -1) {
		char *end;
		switch (c) {
		case O_ROOT:
			BAD(set_path(o.root, optarg));
			if (!strcmp(o.root, "/"))
				o.root[0] = 0;
			else if (o.root[0] != '/')
				BAD(usage_error("--root must be an absolute path"));
			break;
		case O_SERVICES: BAD(set_path(o.services_dir, optarg)); break;
		case O_STATUS_FILE: BAD(set_path(o.status_file, optarg)); break;
		case O_CONTROL: BAD(set_path(o.control_path, optarg)); break;
		case O_NETWORK: BAD(set_path(o.network_file, optarg)); break;
		case O_MODULES: BAD(set_path(o.modules_file, optarg)); break;
		case O_CMDLINE:
			BAD(set_path(o.cmdline_file, optarg));
			cmdline_set = true;
			break;
		case O_HALT:
			if (!strcmp(optarg, "poweroff"))
				o.halt_cmd = RB_POWER_OFF;
			else if (!strcmp(optarg, "reboot"))
				o.halt_cmd = RB_AUTOBOOT;
			else
				BAD(usage_error("--halt: poweroff or reboot, not '%s'", optarg));
			break;
		case O_BMIN: BAD(duration("backoff-min", optarg, &o.backoff_min_ms)); break;
		case O_BMAX: BAD(duration("backoff-max", optarg, &o.backoff_max_ms)); break;
		case O_STABLE: BAD(duration("stable", optarg, &o.stable_ms)); break;
		case O_STOPT: BAD(duration("stop-timeout", optarg, &o.stop_timeout_ms)); break;
		case O_READYT: BAD(duration("ready-timeout", optarg, &o.ready_timeout_ms)); break;
		case O_QUAR: {
			long n = strtol(optarg, &end, 10);
			long long w;
			if (end == optarg || *end != '/' || n < 1 || n > CRASH_HIST ||
			    parse_duration_ms(end + 1, &w))
				BAD(usage_error("--quarantine: N/WINDOW with N in 1..%d, e.g. 5/60s",
						CRASH_HIST));
			else
				o.crash_limit = n, o.crash_window_ms = w;
			break;
		}
		case O_NET: mode = M_NET; break;
		case O_DRY: dry = true; break;
		case O_CHECK: mode = M_CHECK; break;
		case O_STATUS: mode = M_STATUS; break;
		case O_JSON: json = true; break;
		case O_CTL: mode = M_CTL; ctl_cmd = optarg; break;
		case 'v': log_set_level(LOG_DEBUG); break;
		default:
			if (o.pid1)
				break;
			return usage_error("unknown option");
		}
	}
	const char *ctl_arg = NULL;
	if (mode == M_CTL && optind < argc)
		ctl_arg = argv[optind++];
	if (optind < argc && !o.pid1)
		return usage_error("unexpected argument '%s'", argv[optind]);
	if (o.backoff_min_ms < 1 || o.backoff_max_ms < o.backoff_min_ms) {
		BAD(usage_error("--backoff-min must be at least 1ms and at most --backoff-max"));
		o.backoff_min_ms = 1000, o.backoff_max_ms = 30000;
	}
	if (o.stop_timeout_ms < 1) {
		BAD(usage_error("--stop-timeout must be at least 1ms"));
		o.stop_timeout_ms = 5000;
	}
#undef BAD
	o.system = o.pid1 && !*o.root && mode == M_RUN;
	default_paths(&o, cmdline_set);
	switch (mode) {
	case M_NET: return net_only(&o, dry);
	case M_CHECK: return check(&o);
	case M_STATUS: return status_print(o.status_file, json);
	case M_CTL: return control_send(o.control_path, ctl_cmd, ctl_arg);
	default: return run_init(&o);
	}
}
