/* loop.h - the epoll event loop every daemon uses: fd callbacks, one-shot timers on
 * absolute monotonic deadlines, signals through a signalfd, and a before-wait hook.
 * Callbacks may add or delete any fd or timer, including their own. */
#ifndef STEREO_LOOP_H
#define STEREO_LOOP_H
#include <stdint.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>

struct loop;
typedef void (*loop_fd_cb)(struct loop *l, int fd, uint32_t events, void *ctx);
typedef void (*loop_timer_cb)(struct loop *l, void *ctx);
typedef void (*loop_signal_cb)(struct loop *l, const struct signalfd_siginfo *si, void *ctx);

int64_t now_ms(void);           /* CLOCK_MONOTONIC in milliseconds */
struct loop *loop_new(void);
void loop_free(struct loop *l);
int loop_add(struct loop *l, int fd, uint32_t events, loop_fd_cb cb, void *ctx);
int loop_mod(struct loop *l, int fd, uint32_t events);
int loop_del(struct loop *l, int fd);            /* does not close fd */
/* A timer firing at now + ms; returns its id, or 0 when out of memory (never, while fewer
 * than the reserved number are pending). */
uint64_t loop_timer(struct loop *l, int64_t ms, loop_timer_cb cb, void *ctx);
int loop_timer_reserve(struct loop *l, size_t n);   /* room for n pending timers; 0 or -ENOMEM */
void loop_timer_cancel(struct loop *l, uint64_t id);
/* Block sigs and deliver them to cb through a signalfd. */
int loop_signals(struct loop *l, const int *sigs, int n, loop_signal_cb cb, void *ctx);
void loop_before_wait(struct loop *l, void (*fn)(struct loop *l, void *ctx), void *ctx);
int loop_run(struct loop *l);    /* until loop_stop; returns 0 or -errno */
void loop_stop(struct loop *l);
#endif
