/* control.c - how the outside sees and steers init: the status file (JSON, replaced
 * atomically after every change of state) and the control socket (one line "CMD [NAME]" in,
 * one JSON line out), plus their client sides for `stereo init --status` and `--ctl`.
 */
#include "init/init.h"
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define CTL_LINE 512
#define CTL_IDLE_MS 2000
#define STATUS_MAX (1 << 20)

static void status_json(const struct super *s, const char *phase, struct buf *b)
{
	struct jw w;
	jw_init(&w, b);
	jw_obj(&w);
	jw_kint(&w, "pid", getpid());
	jw_kstr(&w, "phase", phase);
	jw_key(&w, "services");
	jw_arr(&w);
	for (int i = 0; i < super_count(s); i++) {
		const struct svc *sv = super_svc(s, i);
		if (sv->removed && sv->state == SVC_STOPPED)
			continue;
		char how[32];
		jw_obj(&w);
		jw_kstr(&w, "name", sv->def.name);
		jw_kstr(&w, "state", svc_state_name(sv->state));
		jw_kint(&w, "pid", sv->pid);
		jw_kint(&w, "restarts", sv->restarts);
		jw_key(&w, "last_exit");
		if (sv->exited)
			jw_str(&w, proc_status_str(sv->last_status, how, sizeof how));
		else
			jw_null(&w);
		jw_kstr(&w, "restart", restart_name(sv->def.restart));
		jw_key(&w, "after");
		jw_arr(&w);
		for (int k = 0; k < sv->def.ndeps; k++)
			jw_str(&w, sv->def.deps[k]);
		jw_arr_end(&w);
		if (sv->broken)
			jw_kbool(&w, "broken", true);
		jw_obj_end(&w);
	}
	jw_arr_end(&w);
	jw_obj_end(&w);
	buf_putc(b, '\n');
}

void status_write(const struct init_opts *o, const struct super *s, const char *phase)
{
	struct buf b = {0};
	status_json(s, phase, &b);
	char dir[PATH_MAX];
	snprintf(dir, sizeof dir, "%s", o->status_file);
	char *slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = 0;
		mkdir_p(dir, 0755);
	}
	int rc = atomic_write(o->status_file, b.p, b.len, 0644, (uid_t)-1, (gid_t)-1);
	if (rc)
		log_warn("writing status file", "path=%s error=\"%s\"", o->status_file, strerror(-rc));
	buf_free(&b);
}

/* ---- control socket ---------------------------------------------------------------------- */

struct ctl_conn {
	int fd;
	size_t len;
	uint64_t timer;
	char line[CTL_LINE];
};

static struct {
	int fd;
	struct super *s;
	const struct init_opts *o;
	void (*action)(const char *cmd, void *ctx);
	void *ctx;
	struct ctl_conn *conns[CTL_CONNS];
} ctl = {.fd = -1};

static void conn_close(struct loop *l, struct ctl_conn *c)
{
	for (int i = 0; i < CTL_CONNS; i++)
		if (ctl.conns[i] == c)
			ctl.conns[i] = NULL;
	if (c->timer)
		loop_timer_cancel(l, c->timer);
	loop_del(l, c->fd);
	close(c->fd);
	free(c);
}

static void reply(struct ctl_conn *c, const char *err, const struct buf *body)
{
	struct buf b = {0};
	if (body) {
		buf_append(&b, body->p, body->len);
	} else {
		struct jw w;
		jw_init(&w, &b);
		jw_obj(&w);
		jw_kbool(&w, "ok", !err);
		if (err)
			jw_kstr(&w, "error", err);
		jw_obj_end(&w);
		buf_putc(&b, '\n');
	}
	/* replies are small and the socket buffer is empty: a short write means a broken client */
	if (send(c->fd, b.p, b.len, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
		log_debug("control reply", "error=\"%s\"", strerror(errno));
	buf_free(&b);
}

static void handle_line(struct ctl_conn *c, char *line)
{
	char err[ERRBUF];
	char *cmd = strtok(line, " \t\r"), *arg = strtok(NULL, " \t\r");
	if (!cmd) {
		reply(c, "empty command", NULL);
	} else if (!strcmp(cmd, "status")) {
		struct buf b = {0};
		buf_puts(&b, "{\"ok\":true,\"status\":");
		status_json(ctl.s, power_active() ? "stopping" : "running", &b);
		b.len--;   /* the newline */
		buf_puts(&b, "}\n");
		reply(c, NULL, &b);
		buf_free(&b);
	} else if (!strcmp(cmd, "poweroff") || !strcmp(cmd, "reboot") || !strcmp(cmd, "reload")) {
		reply(c, NULL, NULL);
		ctl.action(cmd, ctl.ctx);
	} else if (super_command(ctl.s, cmd, arg, err)) {
		reply(c, err, NULL);
	} else {
		reply(c, NULL, NULL);
	}
}

static void conn_timeout(struct loop *l, void *ctx)
{
	struct ctl_conn *c = ctx;
	c->timer = 0;
	conn_close(l, c);
}

static void on_conn(struct loop *l, int fd, uint32_t ev, void *ctx)
{
	struct ctl_conn *c = ctx;
	ssize_t n = read(fd, c->line + c->len, sizeof c->line - 1 - c->len);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		conn_close(l, c);
		return;
	}
	c->len += n;
	c->line[c->len] = 0;
	char *nl = memchr(c->line, '\n', c->len);
	if (nl) {
		*nl = 0;
		handle_line(c, c->line);
	} else if (c->len == sizeof c->line - 1) {
		reply(c, "command line too long", NULL);
	} else {
		return;
	}
	conn_close(l, c);
}

static void on_accept(struct loop *l, int fd, uint32_t ev, void *ctx)
{
	for (;;) {
		int cfd = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (cfd < 0)
			return;
		int slot = -1;
		for (int i = 0; i < CTL_CONNS && slot < 0; i++)
			if (!ctl.conns[i])
				slot = i;
		struct ctl_conn *c = slot < 0 ? NULL : calloc(1, sizeof *c);
		if (!c) {
			close(cfd);   /* too many clients: refuse the new one */
			continue;
		}
		c->fd = cfd;
		if (loop_add(l, cfd, EPOLLIN, on_conn, c)) {
			close(cfd);
			free(c);
			continue;
		}
		ctl.conns[slot] = c;
		c->timer = loop_timer(l, CTL_IDLE_MS, conn_timeout, c);
	}
}

int control_listen(struct loop *l, const char *path, struct super *s,
		   void (*action)(const char *cmd, void *ctx), void *ctx, char *err)
{
	char dir[PATH_MAX];
	snprintf(dir, sizeof dir, "%s", path);
	char *slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = 0;
		mkdir_p(dir, 0755);
	}
	int fd = sock_listen_unix(path, 0600, (gid_t)-1, err);
	if (fd < 0)
		return -1;
	ctl.fd = fd;
	ctl.s = s;
	ctl.action = action;
	ctl.ctx = ctx;
	return loop_add(l, fd, EPOLLIN, on_accept, NULL) ? errf(err, "adding the control socket") : 0;
}

void control_close(struct loop *l)
{
	for (int i = 0; i < CTL_CONNS; i++)
		if (ctl.conns[i])
			conn_close(l, ctl.conns[i]);
	if (ctl.fd >= 0) {
		loop_del(l, ctl.fd);
		close(ctl.fd);
	}
	ctl.fd = -1;
}

/* ---- clients ----------------------------------------------------------------------------- */

static void print_table(const char *text, size_t len)
{
	struct json j;
	char err[ERRBUF];
	if (json_parse(&j, text, len, true, err)) {
		warnx("bad status file: %s", err);
		return;
	}
	printf("%-20s %-12s %7s %8s  %s\n", "NAME", "STATE", "PID", "RESTARTS", "LAST_EXIT");
	int arr = json_get(&j, 0, "services");
	struct buf name = {0}, state = {0}, last = {0};
	for (int k = 0, it; arr >= 0 && (it = json_array_item(&j, arr, k)) >= 0; k++) {
		uint64_t pid = 0, restarts = 0;
		json_str(&j, json_get(&j, it, "name"), &name, JSON_STR_NO_NUL, err);
		json_str(&j, json_get(&j, it, "state"), &state, JSON_STR_NO_NUL, err);
		json_u64(&j, json_get(&j, it, "pid"), &pid);
		json_u64(&j, json_get(&j, it, "restarts"), &restarts);
		int le = json_get(&j, it, "last_exit");
		last.len = 0;
		if (le < 0 || json_kind(&j, le) != JSON_STRING ||
		    json_str(&j, le, &last, JSON_STR_NO_NUL, err))
			buf_puts(&last, "-");
		char pids[24] = "-";
		if (pid)
			snprintf(pids, sizeof pids, "%llu", (unsigned long long)pid);
		printf("%-20s %-12s %7s %8llu  %s\n", buf_cstr(&name), buf_cstr(&state), pids,
		       (unsigned long long)restarts, buf_cstr(&last));
		name.len = state.len = 0;
	}
	buf_free(&name);
	buf_free(&state);
	buf_free(&last);
	json_free(&j);
}

int status_print(const char *status_file, bool json)
{
	struct buf b = {0};
	int rc = read_file(status_file, &b, STATUS_MAX);
	if (rc) {
		warnx("reading status file %s: %s", status_file, strerror(-rc));
		buf_free(&b);
		return EXIT_CONN;
	}
	if (json)
		fwrite(b.p, 1, b.len, stdout);
	else
		print_table(b.p, b.len);
	buf_free(&b);
	return EXIT_OK;
}

int control_send(const char *path, const char *cmd, const char *arg)
{
	char err[ERRBUF];
	bool timed_out = false;
	int fd = sock_connect_unix(path, 2000, &timed_out, err);
	if (fd < 0) {
		warnx("connecting to %s: %s", path, err);
		return EXIT_CONN;
	}
	char line[CTL_LINE];
	int n = snprintf(line, sizeof line, "%s%s%s\n", cmd, arg ? " " : "", arg ? arg : "");
	if (n >= (int)sizeof line || write_all(fd, line, n)) {
		warnx("sending '%s' to %s: %s", cmd, path, n >= (int)sizeof line ? "too long" : strerror(errno));
		close(fd);
		return EXIT_FAIL;
	}
	struct buf b = {0};
	int64_t deadline = now_ms() + 5000;
	int rc = EXIT_CONN;
	for (;;) {
		int64_t left = deadline - now_ms();
		if (left <= 0 || fd_wait(fd, POLLIN, (int)left) <= 0) {
			warnx("waiting for init's reply on %s: timed out", path);
			break;
		}
		if (buf_reserve(&b, 4096))
			break;
		ssize_t r = read(fd, b.p + b.len, 4096);
		if (r < 0 && errno == EINTR)
			continue;
		if (r > 0) {
			b.len += r;
			if (b.len <= STATUS_MAX && !memchr(b.p, '\n', b.len))
				continue;
		}
		struct json j;
		bool ok = false;
		if (b.len && !json_parse(&j, b.p, b.len, true, err)) {
			json_bool(&j, json_get(&j, 0, "ok"), &ok);
			struct buf e = {0};
			if (!ok && !json_str(&j, json_get(&j, 0, "error"), &e, JSON_STR_NO_NUL, err))
				warnx("%s: %s", cmd, buf_cstr(&e));
			buf_free(&e);
			json_free(&j);
			if (ok && !strcmp(cmd, "status"))
				fwrite(b.p, 1, b.len, stdout);
			rc = ok ? EXIT_OK : EXIT_FAIL;
		} else {
			warnx("%s: no valid reply from init", cmd);
		}
		break;
	}
	buf_free(&b);
	close(fd);
	return rc;
}
