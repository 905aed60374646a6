/* supervise.c - the supervision policy (the StrataOS model): services start in dependency
 * order, a service that exits is restarted after an exponential backoff with jitter (reset after
 * a stable run), and one that crashes crash_limit times within crash_window is quarantined until
 * released (SIGHUP reload or a control command). Stopping runs in reverse dependency order.
 *
 * Every change of state goes through set_state(), and super_tick() (called before each loop
 * wait) is the one place that decides what may start or be signalled next. Processes are
 * started by common/proc.c and reaped by reap.c; this file only decides.
 */
#include "init/init.h"
#include <fcntl.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

struct super {
	struct loop *l;
	const struct init_opts *o;
	struct svc *svcs;             /* SVC_MAX entries; entries are never moved or freed */
	struct svc_def *defs;         /* SVC_MAX entries: super_load's scratch, allocated once */
	int n;
	bool stopping;
	bool dirty;
	uint64_t rng;
};

static const char *const state_names[] = {
	[SVC_DECLARED] = "declared", [SVC_STARTING] = "starting", [SVC_RUNNING] = "running",
	[SVC_READY] = "ready", [SVC_CRASHED] = "crashed", [SVC_RESTARTING] = "restarting",
	[SVC_QUARANTINED] = "quarantined", [SVC_STOPPING] = "stopping", [SVC_STOPPED] = "stopped",
};

const char *svc_state_name(enum svc_state st) { return state_names[st]; }

static void set_state(struct super *s, struct svc *sv, enum svc_state st)
{
	if (sv->state != st)
		log_debug("service state", "name=%s from=%s to=%s", sv->def.name,
			  state_names[sv->state], state_names[st]);
	sv->state = st;
	s->dirty = true;
}

bool super_dirty(struct super *s)
{
	bool d = s->dirty;
	s->dirty = false;
	return d;
}

int super_count(const struct super *s) { return s->n; }
const struct svc *super_svc(const struct super *s, int i) { return &s->svcs[i]; }

/* Everything supervision needs is allocated here, once: after this, reloading and starting
 * services never depend on malloc succeeding (PID 1 must not exit). NULL when out of memory. */
struct super *super_new(struct loop *l, const struct init_opts *o)
{
	struct super *s = calloc(1, sizeof *s);
	if (!s)
		return NULL;
	s->svcs = calloc(SVC_MAX, sizeof *s->svcs);
	s->defs = calloc(SVC_MAX, sizeof *s->defs);
	if (!s->svcs || !s->defs) {
		super_free(s);
		return NULL;
	}
	s->l = l;
	s->o = o;
	if (getrandom(&s->rng, sizeof s->rng, GRND_NONBLOCK) != sizeof s->rng)
		s->rng = (uint64_t)now_ms() * 6364136223846793005ULL + getpid();
	s->rng |= 1;
	return s;
}

static void cancel_timer(struct super *s, struct svc *sv)
{
	if (sv->timer)
		loop_timer_cancel(s->l, sv->timer);
	sv->timer = 0;
}

static void close_ready(struct super *s, struct svc *sv)
{
	if (sv->ready_fd >= 0) {
		loop_del(s->l, sv->ready_fd);
		close(sv->ready_fd);
	}
	sv->ready_fd = -1;
}

void super_free(struct super *s)
{
	if (!s)
		return;
	for (int i = 0; i < s->n; i++) {
		cancel_timer(s, &s->svcs[i]);
		close_ready(s, &s->svcs[i]);
	}
	free(s->svcs);
	free(s->defs);
	free(s);
}

static struct svc *find(struct super *s, const char *name)
{
	for (int i = 0; i < s->n; i++)
		if (!s->svcs[i].removed && !strcmp(s->svcs[i].def.name, name))
			return &s->svcs[i];
	return NULL;
}

static bool alive(const struct svc *sv) { return sv->pid > 0; }

/* ---- configuration ------------------------------------------------------------------- */

static void report_conf(const char *msg, void *ctx)
{
	log_error("bad service file", "error=\"%s\"", msg);
}

/* The built-in service when there is no services directory: stereod, listening on vsock when
 * the VM has one and on TCP otherwise, and telling init it is ready on fd 3 (s6 style). */
static int default_service(const struct init_opts *o, struct svc_def *d)
{
	if (!*o->default_exec)
		return 0;
	char text[PATH_MAX + 128];
	snprintf(text, sizeof text, "exec=\"%s\" --listen-mode auto --ready-fd 3\nnotify-fd=3\n",
		 o->default_exec);
	char err[ERRBUF];
	if (svconf_parse(d, "stereod", text, strlen(text), "(built-in)", o->passwd_file, err)) {
		log_error("built-in service", "error=\"%s\"", err);
		return 0;
	}
	return 1;
}

/* Mark services whose dependencies are unknown or form a cycle: they never start. */
static void check_deps(struct super *s)
{
	enum { WHITE, GREY, BLACK };
	int color[SVC_MAX] = {0}, stack[SVC_MAX], depi[SVC_MAX];
	for (int i = 0; i < s->n; i++) {
		struct svc *sv = &s->svcs[i];
		sv->broken = false;
		for (int k = 0; k < sv->def.ndeps && !sv->removed; k++)
			if (!find(s, sv->def.deps[k])) {
				log_error("unknown dependency", "name=%s after=%s", sv->def.name,
					  sv->def.deps[k]);
				sv->broken = true;
			}
	}
	/* iterative DFS; a GREY node met again closes a cycle */
	for (int r = 0; r < s->n; r++) {
		if (color[r] != WHITE || s->svcs[r].removed)
			continue;
		int sp = 0;
		stack[sp] = r;
		depi[sp] = 0;
		color[r] = GREY;
		while (sp >= 0) {
			struct svc *sv = &s->svcs[stack[sp]];
			if (depi[sp] == sv->def.ndeps) {
				color[stack[sp--]] = BLACK;
				continue;
			}
			struct svc *d = find(s, sv->def.deps[depi[sp]++]);
			if (!d)
				continue;
			int j = d - s->svcs;
			if (color[j] == GREY) {
				log_error("dependency cycle", "name=%s after=%s", sv->def.name, d->def.name);
				for (int k = 0; k <= sp; k++)
					s->svcs[stack[k]].broken = true;
			} else if (color[j] == WHITE) {
				color[j] = GREY;
				stack[++sp] = j;
				depi[sp] = 0;
			}
		}
	}
	/* a service after a broken one cannot start either */
	for (bool changed = true; changed;) {
		changed = false;
		for (int i = 0; i < s->n; i++) {
			struct svc *sv = &s->svcs[i];
			for (int k = 0; k < sv->def.ndeps && !sv->broken && !sv->removed; k++) {
				struct svc *d = find(s, sv->def.deps[k]);
				if (d && d->broken) {
					sv->broken = changed = true;
					log_error("dependency cannot start", "name=%s after=%s", sv->def.name,
						  d->def.name);
				}
			}
		}
	}
	s->dirty = true;
}

static void release(struct super *s, struct svc *sv)
{
	sv->ncrashes = 0;
	sv->fails = 0;
	sv->want_down = false;
	cancel_timer(s, sv);
	if (!alive(sv))
		set_state(s, sv, SVC_DECLARED);
}

static void stop_svc(struct super *s, struct svc *sv);

int super_load(struct super *s)
{
	struct svc_def *defs = s->defs;
	memset(defs, 0, SVC_MAX * sizeof *defs);
	int n = svconf_load_dir(s->o->services_dir, s->o->passwd_file, defs, SVC_MAX, report_conf, s);
	if (n == -ENOENT) {
		log_info("no services directory, using the built-in stereod service", "dir=%s",
			 s->o->services_dir);
		n = default_service(s->o, defs);
	} else if (n < 0) {
		log_error("reading services", "dir=%s error=\"%s\"", s->o->services_dir, strerror(-n));
		n = 0;
	}
	for (int i = 0; i < s->n; i++) {
		struct svc *sv = &s->svcs[i];
		bool keep = false;
		for (int j = 0; j < n && !keep; j++)
			keep = !strcmp(defs[j].name, sv->def.name);
		if (!keep && !sv->removed) {
			log_info("service removed", "name=%s", sv->def.name);
			sv->removed = true;
			stop_svc(s, sv);
		}
	}
	for (int j = 0; j < n; j++) {
		struct svc *sv = find(s, defs[j].name);
		if (sv) {
			/* the new definition applies from the next start */
			svconf_copy(&sv->def, &defs[j]);
			if (sv->state == SVC_QUARANTINED) {
				log_info("service released", "name=%s by=reload", sv->def.name);
				release(s, sv);
			}
			continue;
		}
		/* a new service: reuse the slot of one removed earlier once it is down */
		for (int i = 0; i < s->n && !sv; i++)
			if (s->svcs[i].removed && !alive(&s->svcs[i]))
				sv = &s->svcs[i];
		if (!sv && s->n == SVC_MAX) {
			log_error("too many services", "name=%s max=%d", defs[j].name, SVC_MAX);
			continue;
		}
		if (sv) {
			cancel_timer(s, sv);
			close_ready(s, sv);
		} else {
			sv = &s->svcs[s->n++];
		}
		memset(sv, 0, sizeof *sv);
		svconf_copy(&sv->def, &defs[j]);
		sv->ready_fd = -1;
		sv->super = s;
		sv->state = SVC_DECLARED;
		s->dirty = true;
		log_info("service declared", "name=%s restart=%s", sv->def.name,
			 restart_name(sv->def.restart));
	}
	check_deps(s);
	return n;
}

/* ---- starting ------------------------------------------------------------------------- */

/* Append the KEY=VALUE lines of path to extra (pointers into file, which the caller frees):
 * read at each start, so a service restarted after the file changed sees the new values. A
 * missing file is no error; blank lines, '#' comments and lines without a KEY= are skipped.
 * -ENOMEM when out of memory (extra is then still valid and owned by the caller). */
static int env_file_read(const char *path, const char *name, struct buf *file, const char ***extra,
			 size_t *nx)
{
	int r = read_file(path, file, 1 << 20);
	if (r == -ENOMEM)
		return r;
	if (r) {
		if (r != -ENOENT)
			log_warn("cannot read env-file", "name=%s path=%s err=\"%s\"", name, path, strerror(-r));
		return 0;
	}
	if (buf_putc(file, 0))   /* the last line without its newline ends too */
		return -ENOMEM;
	for (char *p = file->p, *end = file->p + file->len - 1; p < end;) {
		char *nl = memchr(p, '\n', end - p);
		if (nl)
			*nl = 0;
		size_t kl = strcspn(p, "=");
		if (kl && p[kl] == '=' && p[0] != '#' && !memchr(p, ' ', kl)) {
			const char **n = realloc(*extra, (*nx + 1) * sizeof **extra);
			if (!n)
				return -ENOMEM;
			*extra = n;
			(*extra)[(*nx)++] = p;
		}
		p = nl ? nl + 1 : end;
	}
	return 0;
}

/* init's environment (which carries STEREO_INIT=1), then HOME/USER for user=, then env=, then
 * the env-file's lines (read now; they win over env=, as EnvironmentFile= does in systemd).
 * NULL when out of memory. */
static char **build_env(const struct svc_def *d, char *tmp, size_t tmpsz, struct buf *file)
{
	size_t ne = 0;
	while (environ[ne])
		ne++;
	const char **extra = calloc(SVC_ENV_MAX + 3, sizeof *extra);
	if (!extra)
		return NULL;
	size_t nx = 0;
	size_t off = 0;
	if (d->has_user && d->user) {
		int k = snprintf(tmp, tmpsz, "USER=%s", d->user);
		extra[nx++] = tmp;
		off = k + 1;
		if (d->home && off < tmpsz) {
			snprintf(tmp + off, tmpsz - off, "HOME=%s", d->home);
			extra[nx++] = tmp + off;
		}
	}
	for (int i = 0; i < d->nenv; i++)
		extra[nx++] = d->env[i];
	if (d->env_file && env_file_read(d->env_file, d->name, file, &extra, &nx)) {
		free(extra);
		return NULL;
	}
	char **envp = calloc(ne + nx + 1, sizeof *envp);
	if (!envp) {
		free(extra);
		return NULL;
	}
	size_t k = 0;
	for (size_t i = 0; i < ne; i++) {
		size_t kl = strcspn(environ[i], "=");
		bool over = false;
		for (size_t x = 0; x < nx && !over; x++)
			over = !strncmp(extra[x], environ[i], kl) && extra[x][kl] == '=';
		if (!over)
			envp[k++] = environ[i];
	}
	for (size_t x = 0; x < nx; x++) {
		bool later = false;   /* the last entry for a key wins */
		size_t kl = strcspn(extra[x], "=");
		for (size_t y = x + 1; y < nx && !later; y++)
			later = !strncmp(extra[y], extra[x], kl) && extra[y][kl] == '=';
		if (!later)
			envp[k++] = (char *)extra[x];
	}
	envp[k] = NULL;
	free(extra);
	return envp;
}

static uint64_t rnd(struct super *s)
{
	s->rng ^= s->rng << 13;
	s->rng ^= s->rng >> 7;
	s->rng ^= s->rng << 17;
	return s->rng;
}

/* min * 2^(fails-1), capped at max, plus up to a quarter of it as jitter (still capped). */
static long long backoff_ms(struct super *s, unsigned fails)
{
	long long d = s->o->backoff_min_ms, max = s->o->backoff_max_ms;
	for (unsigned i = 1; i < fails && d < max; i++)
		d *= 2;
	if (d > max)
		d = max;
	d += (long long)(rnd(s) % (uint64_t)(d / 4 + 1));
	return d > max ? max : d;
}

static void on_ready(struct loop *l, int fd, uint32_t ev, void *ctx);
static void ready_timeout(struct loop *l, void *ctx);
static void crashed(struct super *s, struct svc *sv);

static void start_svc(struct super *s, struct svc *sv)
{
	const struct svc_def *d = &sv->def;
	int pfd[2] = {-1, -1};
	if (d->notify_fd >= 0 && pipe2(pfd, O_CLOEXEC)) {
		log_error("notification pipe", "name=%s error=\"%s\"", d->name, strerror(errno));
		crashed(s, sv);
		return;
	}
	char tmp[512];
	struct buf envfile = {0};
	char **envp = build_env(d, tmp, sizeof tmp, &envfile);
	if (!envp) {
		/* this start fails like a crash (backoff, quarantine); init keeps running */
		log_error("cannot start service", "name=%s error=\"%s\"", d->name, strerror(ENOMEM));
		buf_wipe(&envfile);
		if (pfd[0] >= 0) {
			close(pfd[0]);
			close(pfd[1]);
		}
		crashed(s, sv);
		return;
	}
	struct proc_req r = {
		.argv = d->argv, .envp = envp, .dir = d->dir ? d->dir : "/", .in = PROC_NULL,
		.setsid = true, .set_user = d->has_user, .uid = d->uid, .gid = d->gid,
	};
	if (pfd[1] >= 0) {
		r.fds[0].from = pfd[1];
		r.fds[0].to = d->notify_fd;
		r.nfds = 1;
	}
	pid_t pid = proc_spawn(&r);
	free(envp);
	buf_wipe(&envfile);   /* it may hold secrets pushed by the host */
	if (pfd[1] >= 0)
		close(pfd[1]);
	sv->started_ms = now_ms();
	sv->exited = false;
	if (pid < 0) {
		log_error("fork failed", "name=%s error=\"%s\"", d->name, strerror(-pid));
		if (pfd[0] >= 0)
			close(pfd[0]);
		crashed(s, sv);
		return;
	}
	sv->pid = pid;
	log_info("service started", "name=%s pid=%d", d->name, (int)pid);
	if (pfd[0] < 0) {
		set_state(s, sv, SVC_RUNNING);
		return;
	}
	sv->ready_fd = pfd[0];
	fd_set_nonblock(pfd[0], 1);
	loop_add(s->l, pfd[0], EPOLLIN, on_ready, sv);
	long long t = d->ready_timeout_ms >= 0 ? d->ready_timeout_ms : s->o->ready_timeout_ms;
	if (t > 0)
		sv->timer = loop_timer(s->l, t, ready_timeout, sv);
	set_state(s, sv, SVC_STARTING);
}

/* s6 readiness: the service writes a line to its notification fd once it is ready. */
static void on_ready(struct loop *l, int fd, uint32_t ev, void *ctx)
{
	struct svc *sv = ctx;
	struct super *s = sv->super;
	char b[128];
	ssize_t n = read(fd, b, sizeof b);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n > 0 && !memchr(b, '\n', n))
		return;
	close_ready(s, sv);
	if (n <= 0) {
		log_warn("notification fd closed before readiness", "name=%s", sv->def.name);
		return;
	}
	if (sv->state == SVC_STARTING) {
		cancel_timer(s, sv);   /* the ready timeout; never a stop's kill timer */
		log_info("service ready", "name=%s pid=%d", sv->def.name, (int)sv->pid);
		set_state(s, sv, SVC_READY);
	}
}

static void kill_svc(struct svc *sv, int sig)
{
	if (sv->pid > 0) {
		kill(-sv->pid, sig);   /* its session/process group (started with setsid) */
		kill(sv->pid, sig);
	}
}

static void ready_timeout(struct loop *l, void *ctx)
{
	struct svc *sv = ctx;
	sv->timer = 0;
	log_error("service not ready in time, killing it", "name=%s pid=%d", sv->def.name,
		  (int)sv->pid);
	kill_svc(sv, SIGKILL);
}

static void restart_due(struct loop *l, void *ctx)
{
	struct svc *sv = ctx;
	sv->timer = 0;
	if (sv->state == SVC_RESTARTING) {
		sv->restarts++;
		set_state(sv->super, sv, SVC_DECLARED);
	}
}

static void stop_timeout(struct loop *l, void *ctx)
{
	struct svc *sv = ctx;
	sv->timer = 0;
	log_warn("service ignored SIGTERM, sending SIGKILL", "name=%s pid=%d", sv->def.name,
		 (int)sv->pid);
	kill_svc(sv, SIGKILL);
}

static void stop_svc(struct super *s, struct svc *sv)
{
	sv->want_down = true;
	if (!alive(sv)) {
		cancel_timer(s, sv);
		set_state(s, sv, SVC_STOPPED);
		return;
	}
	if (sv->state == SVC_STOPPING)
		return;
	cancel_timer(s, sv);
	close_ready(s, sv);
	log_info("stopping service", "name=%s pid=%d", sv->def.name, (int)sv->pid);
	kill_svc(sv, SIGTERM);
	long long t = sv->def.stop_timeout_ms > 0 ? sv->def.stop_timeout_ms : s->o->stop_timeout_ms;
	sv->timer = loop_timer(s->l, t, stop_timeout, sv);
	set_state(s, sv, SVC_STOPPING);
}

/* An exit that the restart policy says to restart: backoff, or quarantine. */
static void crashed(struct super *s, struct svc *sv)
{
	int64_t now = now_ms();
	set_state(s, sv, SVC_CRASHED);
	if (sv->exited && now - sv->started_ms >= s->o->stable_ms)
		sv->fails = 0;   /* it ran long enough: this is a fresh failure */
	sv->crashes[sv->ncrashes++ % CRASH_HIST] = now;
	unsigned kept = sv->ncrashes < CRASH_HIST ? sv->ncrashes : CRASH_HIST, recent = 0;
	for (unsigned i = 0; i < kept; i++)
		recent += now - sv->crashes[i] <= s->o->crash_window_ms;
	if ((int)recent >= s->o->crash_limit) {
		log_error("service quarantined", "name=%s crashes=%u window_ms=%lld", sv->def.name,
			  recent, s->o->crash_window_ms);
		set_state(s, sv, SVC_QUARANTINED);
		return;
	}
	sv->fails++;
	long long d = backoff_ms(s, sv->fails);
	log_info("service restarting", "name=%s in_ms=%lld failures=%u", sv->def.name, d, sv->fails);
	sv->timer = loop_timer(s->l, d, restart_due, sv);
	set_state(s, sv, SVC_RESTARTING);
}

void super_child_exited(struct super *s, pid_t pid, int status)
{
	struct svc *sv = NULL;
	for (int i = 0; i < s->n && !sv; i++)
		if (s->svcs[i].pid == pid)
			sv = &s->svcs[i];
	if (!sv) {
		log_debug("reaped", "pid=%d", (int)pid);
		return;
	}
	char how[32];
	proc_status_str(status, how, sizeof how);
	sv->pid = 0;
	sv->exited = true;
	sv->last_status = status;
	close_ready(s, sv);
	cancel_timer(s, sv);
	bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
	log_info("service exited", "name=%s pid=%d status=\"%s\"", sv->def.name, (int)pid, how);
	if (s->stopping || sv->want_down || sv->removed || sv->def.restart == RESTART_NEVER ||
	    (sv->def.restart == RESTART_ON_FAILURE && clean))
		set_state(s, sv, SVC_STOPPED);
	else
		crashed(s, sv);
}

static bool dep_ok(const struct svc *d)
{
	if (d->state == SVC_RUNNING || d->state == SVC_READY)
		return true;
	/* a one-shot (restart=never or on-failure) that finished well counts as done */
	return d->state == SVC_STOPPED && d->exited && !d->want_down && WIFEXITED(d->last_status) &&
	       WEXITSTATUS(d->last_status) == 0 && d->def.restart != RESTART_ALWAYS;
}

/* Does an alive service still depend on sv? (then sv stops after it) */
static bool needed(struct super *s, const struct svc *sv)
{
	for (int i = 0; i < s->n; i++) {
		const struct svc *o = &s->svcs[i];
		if (o == sv || !alive(o))
			continue;
		for (int k = 0; k < o->def.ndeps; k++)
			if (!strcmp(o->def.deps[k], sv->def.name))
				return true;
	}
	return false;
}

void super_tick(struct super *s)
{
	if (s->stopping) {
		bool any = false, progress = false;
		for (int i = 0; i < s->n; i++) {
			struct svc *sv = &s->svcs[i];
			if (!alive(sv))
				continue;
			any = true;
			if (sv->state == SVC_STOPPING)
				progress = true;
			else if (!needed(s, sv)) {
				stop_svc(s, sv);
				progress = true;
			}
		}
		/* a cycle among running services (possible after a reload): stop them all */
		for (int i = 0; any && !progress && i < s->n; i++)
			if (alive(&s->svcs[i]))
				stop_svc(s, &s->svcs[i]);
		return;
	}
	for (bool changed = true; changed;) {
		changed = false;
		for (int i = 0; i < s->n; i++) {
			struct svc *sv = &s->svcs[i];
			if (sv->state != SVC_DECLARED || sv->broken || sv->removed || alive(sv))
				continue;
			bool ok = true;
			for (int k = 0; k < sv->def.ndeps && ok; k++) {
				struct svc *d = find(s, sv->def.deps[k]);
				ok = d && dep_ok(d);
			}
			if (ok) {
				start_svc(s, sv);
				changed = true;
			}
		}
	}
}

void super_shutdown(struct super *s)
{
	s->stopping = true;
	for (int i = 0; i < s->n; i++) {
		struct svc *sv = &s->svcs[i];
		sv->want_down = true;
		if (!alive(sv)) {
			cancel_timer(s, sv);
			set_state(s, sv, SVC_STOPPED);
		}
	}
	super_tick(s);
}

bool super_all_down(const struct super *s)
{
	for (int i = 0; i < s->n; i++)
		if (alive(&s->svcs[i]))
			return false;
	return true;
}

int super_command(struct super *s, const char *cmd, const char *arg, char *err)
{
	if (s->stopping)
		return errf(err, "shutting down");
	struct svc *sv = arg && *arg ? find(s, arg) : NULL;
	if (!sv)
		return errf(err, arg && *arg ? "no service '%s'" : "%s needs a service name",
			    arg && *arg ? arg : cmd);
	if (!strcmp(cmd, "release")) {
		if (sv->state != SVC_QUARANTINED)
			return errf(err, "service '%s' is %s, not quarantined", arg,
				    state_names[sv->state]);
		log_info("service released", "name=%s by=control", arg);
		release(s, sv);
	} else if (!strcmp(cmd, "start")) {
		if (sv->state == SVC_STOPPING)
			return errf(err, "service '%s' is still stopping", arg);
		if (alive(sv))
			return 0;
		if (sv->broken)
			return errf(err, "service '%s' has a missing or cyclic dependency", arg);
		release(s, sv);
	} else if (!strcmp(cmd, "stop")) {
		stop_svc(s, sv);
	} else {
		return errf(err, "unknown command '%s'", cmd);
	}
	return 0;
}
