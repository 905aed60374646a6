/* init.h - what the parts of init share: the options (paths and timings), the service table,
 * and the entry points of each file. Only init/ includes it.
 *
 *   init.c      declaration, option parsing, main (boot sequence, CLI modes)
 *   reap.c      the small core: signal mask, reaping every child (children start in
 *               common/proc.c)
 *   early.c     mounts, hostname, console, oom_score_adj when init is the real PID 1
 *   modules.c   kernel modules from /etc/stereos/modules (finit_module)
 *   netcfg.c    kernel ip= and /etc/stereos/network parsing (netcfg.h)
 *   netlink.c   applying the parsed network over netlink (libnl-route-3)
 *   svconf.c    the service file format (/etc/stereos/services/NAME.conf)
 *   supervise.c the supervision policy: dependency order, backoff, quarantine, readiness
 *   control.c   the status file and the control socket
 *   power.c     ordered stop, kill everything, unmount, sync, reboot(2) or exit
 */
#ifndef STEREO_INIT_H
#define STEREO_INIT_H
#include "common/stereo.h"
#include <limits.h>
#include <signal.h>

#define SVC_MAX 64          /* services in one configuration */
#define SVC_NAME_MAX 64
#define SVC_ARGV_MAX 64
#define SVC_ENV_MAX 32
#define SVC_DEPS_MAX 16
#define SVC_STRBUF 4096     /* argv, env, user and dir strings of one service */
#define CRASH_HIST 32       /* crash timestamps kept for the quarantine window */
#define CTL_CONNS 16        /* control socket connections at a time */

struct init_opts {
	char root[PATH_MAX];          /* "" means "/" */
	char services_dir[PATH_MAX];
	char status_file[PATH_MAX];
	char control_path[PATH_MAX];
	char network_file[PATH_MAX];
	char cmdline_file[PATH_MAX];  /* "" when not read */
	char modules_file[PATH_MAX];
	char resolv_file[PATH_MAX];
	char hostname_file[PATH_MAX];
	char passwd_file[PATH_MAX];
	char default_exec[PATH_MAX];  /* stereod for the built-in default service */
	long long backoff_min_ms, backoff_max_ms, stable_ms, stop_timeout_ms, ready_timeout_ms;
	int crash_limit;
	long long crash_window_ms;
	int halt_cmd;                 /* RB_POWER_OFF or RB_AUTOBOOT */
	bool pid1;                    /* getpid() == 1 (also inside a PID namespace) */
	bool system;                  /* pid1 and root is "/": mount, unmount, reboot(2) */
};

enum restart_policy { RESTART_ALWAYS, RESTART_ON_FAILURE, RESTART_NEVER };

/* One service definition, as read from its file. Strings point into str. */
struct svc_def {
	char name[SVC_NAME_MAX];
	char *argv[SVC_ARGV_MAX + 1];
	char *env[SVC_ENV_MAX + 1];
	char deps[SVC_DEPS_MAX][SVC_NAME_MAX];
	int nargv, nenv, ndeps;
	enum restart_policy restart;
	int notify_fd;                /* -1: no readiness notification */
	long long ready_timeout_ms;   /* -1: the global default */
	long long stop_timeout_ms;    /* -1: the global default */
	bool has_user;
	uid_t uid;
	gid_t gid;
	char *user, *home, *dir;
	char *env_file;               /* KEY=VALUE lines read at each start; NULL: none */
	char str[SVC_STRBUF];
	size_t strlen;
};

enum svc_state {
	SVC_DECLARED, SVC_STARTING, SVC_RUNNING, SVC_READY, SVC_CRASHED, SVC_RESTARTING,
	SVC_QUARANTINED, SVC_STOPPING, SVC_STOPPED,
};

struct super;
struct svc {
	struct svc_def def;
	struct super *super;           /* back pointer for timer and fd callbacks */
	enum svc_state state;
	pid_t pid;                    /* 0 when not running */
	int ready_fd;                 /* read end of the notification pipe, -1 */
	uint64_t timer;               /* backoff, ready or kill timer (one at a time) */
	int64_t started_ms;
	unsigned restarts;            /* times started again after the first start */
	unsigned fails;               /* consecutive failures, drives the backoff */
	int64_t crashes[CRASH_HIST];  /* ring of crash times, for the quarantine window */
	unsigned ncrashes;
	bool exited;                  /* last_status is valid */
	int last_status;              /* wait status */
	bool want_down;               /* stopped on purpose: an exit is not a crash */
	bool removed;                 /* gone from the configuration (SIGHUP) */
	bool broken;                  /* unknown dependency or a cycle: never started */
};

/* reap.c */
int core_signals(struct loop *l, loop_signal_cb cb, void *ctx);
/* waitpid(-1, WNOHANG) until nothing is left; on_exit for every child. Returns the count. */
int reap_all(void (*on_exit)(pid_t pid, int status, void *ctx), void *ctx);

/* early.c */
void early_boot(const struct init_opts *o);
void set_hostname_from_file(const struct init_opts *o);

/* modules.c */
int modules_load(const char *file, const char *root, const char *cmdline);

/* netcfg.c */
struct netcfg;
struct netcfg *netcfg_new(void);
void netcfg_free(struct netcfg *c);
int netcfg_parse_cmdline(struct netcfg *c, const char *cmdline, char *err);
int netcfg_parse_file(struct netcfg *c, const char *text, size_t len, const char *path, char *err);
void netcfg_json(const struct netcfg *c, struct buf *out);
bool netcfg_empty(const struct netcfg *c);
/* lo up, then every configured interface; resolv.conf and hostname. 0 or -1 (err). */
int netcfg_apply(const struct netcfg *c, const char *resolv_file, bool set_host, char *err);

/* svconf.c */
int svconf_parse(struct svc_def *d, const char *name, const char *text, size_t len,
		 const char *path, const char *passwd_file, char *err);
/* Every *.conf in dir, sorted by name. Returns the count, -ENOENT when dir is missing;
 * bad files are reported through report and skipped. */
int svconf_load_dir(const char *dir, const char *passwd_file, struct svc_def *defs, int max,
		    void (*report)(const char *msg, void *ctx), void *ctx);
const char *restart_name(enum restart_policy p);
void svconf_copy(struct svc_def *dst, const struct svc_def *src);

/* supervise.c */
struct super;
struct super *super_new(struct loop *l, const struct init_opts *o);
void super_free(struct super *s);
int super_load(struct super *s);     /* read the services; again on SIGHUP (reload) */
void super_child_exited(struct super *s, pid_t pid, int status);
void super_tick(struct super *s);                  /* start what can start, advance a stop */
int super_command(struct super *s, const char *cmd, const char *arg, char *err);
void super_shutdown(struct super *s);              /* begin the ordered stop */
bool super_all_down(const struct super *s);
int super_count(const struct super *s);
const struct svc *super_svc(const struct super *s, int i);
const char *svc_state_name(enum svc_state st);
bool super_dirty(struct super *s);                 /* state changed since the last call */

/* control.c */
void status_write(const struct init_opts *o, const struct super *s, const char *phase);
int control_listen(struct loop *l, const char *path, struct super *s,
		   void (*action)(const char *cmd, void *ctx), void *ctx, char *err);
void control_close(struct loop *l);
int status_print(const char *status_file, bool json);
int control_send(const char *path, const char *cmd, const char *arg);

/* power.c */
enum halt_kind { HALT_NONE, HALT_POWEROFF, HALT_REBOOT };
void power_init(struct loop *l, const struct init_opts *o, struct super *s);
void power_begin(enum halt_kind k);
void power_tick(void);
bool power_active(void);
bool power_done(void);
int power_finish(void);

#endif
