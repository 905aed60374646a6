/* loop.c - epoll + timers + signalfd (see loop.h). Handlers are freed after the dispatch pass
 * that deleted them, never during it, so a callback may delete any fd safely. */
#include "common/stereo.h"
#include <time.h>
#include <unistd.h>

struct handler {
	int fd;
	bool dead;
	loop_fd_cb cb;
	void *ctx;
	struct handler *next_dead;
};

struct timer {
	uint64_t id;
	int64_t due;
	loop_timer_cb cb;
	void *ctx;
};

struct loop {
	int epfd;
	bool stop;
	struct handler **byfd;   /* index by fd */
	int nbyfd;
	struct handler *dead;
	struct timer *timers;
	size_t ntimers, captimers;
	uint64_t next_id;
	int sigfd;
	loop_signal_cb sigcb;
	void *sigctx;
	void (*before)(struct loop *, void *);
	void *beforectx;
};

int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct loop *loop_new(void)
{
	struct loop *l = calloc(1, sizeof *l);
	if (!l)
		return NULL;
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	l->sigfd = -1;
	if (l->epfd < 0) {
		free(l);
		return NULL;
	}
	return l;
}

static void reap_dead(struct loop *l)
{
	while (l->dead) {
		struct handler *h = l->dead;
		l->dead = h->next_dead;
		free(h);
	}
}

void loop_free(struct loop *l)
{
	if (!l)
		return;
	for (int i = 0; i < l->nbyfd; i++)
		free(l->byfd[i]);
	reap_dead(l);
	free(l->byfd);
	free(l->timers);
	if (l->sigfd >= 0)
		close(l->sigfd);
	close(l->epfd);
	free(l);
}

int loop_add(struct loop *l, int fd, uint32_t events, loop_fd_cb cb, void *ctx)
{
	if (fd < 0)
		return -EBADF;
	if (fd >= l->nbyfd) {
		int n = fd + 64;
		struct handler **p = realloc(l->byfd, n * sizeof *p);
		if (!p)
			return -ENOMEM;
		memset(p + l->nbyfd, 0, (n - l->nbyfd) * sizeof *p);
		l->byfd = p;
		l->nbyfd = n;
	}
	if (l->byfd[fd])
		return -EEXIST;
	struct handler *h = calloc(1, sizeof *h);
	if (!h)
		return -ENOMEM;
	*h = (struct handler){.fd = fd, .cb = cb, .ctx = ctx};
	struct epoll_event ev = {.events = events, .data.ptr = h};
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev)) {
		int e = errno;
		free(h);
		return -e;
	}
	l->byfd[fd] = h;
	return 0;
}

int loop_mod(struct loop *l, int fd, uint32_t events)
{
	if (fd < 0 || fd >= l->nbyfd || !l->byfd[fd])
		return -ENOENT;
	struct epoll_event ev = {.events = events, .data.ptr = l->byfd[fd]};
	return epoll_ctl(l->epfd, EPOLL_CTL_MOD, fd, &ev) ? -errno : 0;
}

int loop_del(struct loop *l, int fd)
{
	if (fd < 0 || fd >= l->nbyfd || !l->byfd[fd])
		return -ENOENT;
	struct handler *h = l->byfd[fd];
	epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL);
	l->byfd[fd] = NULL;
	h->dead = true;
	h->next_dead = l->dead;
	l->dead = h;
	return 0;
}

int loop_timer_reserve(struct loop *l, size_t n)
{
	if (l->captimers >= n)
		return 0;
	struct timer *t = realloc(l->timers, n * sizeof *t);
	if (!t)
		return -ENOMEM;
	l->timers = t;
	l->captimers = n;
	return 0;
}

uint64_t loop_timer(struct loop *l, int64_t ms, loop_timer_cb cb, void *ctx)
{
	if (l->ntimers == l->captimers) {
		size_t n = l->captimers ? l->captimers * 2 : 16;
		struct timer *t = realloc(l->timers, n * sizeof *t);
		if (!t)
			return 0;
		l->timers = t;
		l->captimers = n;
	}
	uint64_t id = ++l->next_id;
	l->timers[l->ntimers++] = (struct timer){id, now_ms() + (ms < 0 ? 0 : ms), cb, ctx};
	return id;
}

void loop_timer_cancel(struct loop *l, uint64_t id)
{
	for (size_t i = 0; i < l->ntimers; i++)
		if (l->timers[i].id == id) {
			l->timers[i] = l->timers[--l->ntimers];
			return;
		}
}

static void on_signal(struct loop *l, int fd, uint32_t ev, void *ctx)
{
	struct signalfd_siginfo si;
	while (read(fd, &si, sizeof si) == sizeof si)
		if (l->sigcb)
			l->sigcb(l, &si, l->sigctx);
}

int loop_signals(struct loop *l, const int *sigs, int n, loop_signal_cb cb, void *ctx)
{
	sigset_t set;
	sigemptyset(&set);
	for (int i = 0; i < n; i++)
		sigaddset(&set, sigs[i]);
	if (sigprocmask(SIG_BLOCK, &set, NULL))
		return -errno;
	int fd = signalfd(l->sigfd, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (fd < 0)
		return -errno;
	l->sigcb = cb;
	l->sigctx = ctx;
	if (l->sigfd < 0) {
		l->sigfd = fd;
		return loop_add(l, fd, EPOLLIN, on_signal, NULL);
	}
	return 0;
}

void loop_before_wait(struct loop *l, void (*fn)(struct loop *, void *), void *ctx)
{
	l->before = fn;
	l->beforectx = ctx;
}

void loop_stop(struct loop *l) { l->stop = true; }

static void run_timers(struct loop *l)
{
	int64_t now = now_ms();
	uint64_t limit = l->next_id;   /* timers added by callbacks wait for the next pass */
	for (size_t i = 0; i < l->ntimers;) {
		if (l->timers[i].due <= now && l->timers[i].id <= limit) {
			struct timer t = l->timers[i];
			l->timers[i] = l->timers[--l->ntimers];
			t.cb(l, t.ctx);   /* may add or cancel timers: rescan from the start */
			i = 0;
			continue;
		}
		i++;
	}
}

int loop_run(struct loop *l)
{
	struct epoll_event evs[64];
	l->stop = false;
	while (!l->stop) {
		if (l->before)
			l->before(l, l->beforectx);
		if (l->stop)
			break;
		int timeout = -1;
		if (l->ntimers) {
			int64_t due = l->timers[0].due;
			for (size_t i = 1; i < l->ntimers; i++)
				if (l->timers[i].due < due)
					due = l->timers[i].due;
			int64_t d = due - now_ms();
			timeout = d < 0 ? 0 : d > 3600000 ? 3600000 : (int)d;
		}
		int n = epoll_wait(l->epfd, evs, ARRAY_SIZE(evs), timeout);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		for (int i = 0; i < n; i++) {
			struct handler *h = evs[i].data.ptr;
			if (!h->dead)
				h->cb(l, h->fd, evs[i].events, h->ctx);
		}
		reap_dead(l);
		run_timers(l);
	}
	return 0;
}
