/* jobs.c - work that may block, run off the event loop: mount(2) and the mount helper, freeze
 * and thaw hooks, sync(2), FIFREEZE, restore steps.
 *
 * One worker thread, started with the first job, runs the jobs one at a time in the order
 * they were submitted; when one finishes, the worker queues it and writes an eventfd the loop
 * watches, and the job's done callback runs on the loop thread. So the loop keeps answering
 * everyone while a job blocks, the jobs never run concurrently with each other (a mount and
 * a snapshot_prepare are serialised, as they were on the loop), and the state a job reads or
 * writes is only shared with the loop thread by the hand-off: whatever the work needs is
 * prepared before jobs_run and consumed in done. The worker blocks every signal (the loop
 * takes them through its signalfd).
 */
#include "stereod.h"
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct job {
	job_fn work, done;
	void *ctx;
	struct job *next;
};

struct jobs {
	struct loop *l;
	int efd;
	pthread_t thread;
	bool started, stop;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct job *todo, **todo_tail;     /* submitted, not run yet */
	struct job *done, **done_tail;     /* run, done callback not called yet */
};

static void *worker(void *arg)
{
	struct jobs *j = arg;
	sigset_t all;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	pthread_mutex_lock(&j->mu);
	for (;;) {
		while (!j->todo && !j->stop)
			pthread_cond_wait(&j->cv, &j->mu);
		struct job *job = j->todo;
		if (!job)
			break;                     /* stopping, and nothing left to run */
		j->todo = job->next;
		if (!j->todo)
			j->todo_tail = &j->todo;
		pthread_mutex_unlock(&j->mu);
		job->work(job->ctx);
		pthread_mutex_lock(&j->mu);
		job->next = NULL;
		*j->done_tail = job;
		j->done_tail = &job->next;
		uint64_t one = 1;
		if (write(j->efd, &one, sizeof one) < 0) {
			/* the counter cannot overflow at one write per job; nothing to do */
		}
	}
	pthread_mutex_unlock(&j->mu);
	return NULL;
}

/* Loop thread: call the done callbacks of the finished jobs, in order. */
static void run_done(struct jobs *j)
{
	pthread_mutex_lock(&j->mu);
	struct job *list = j->done;
	j->done = NULL;
	j->done_tail = &j->done;
	pthread_mutex_unlock(&j->mu);
	while (list) {
		struct job *job = list;
		list = job->next;
		if (job->done)
			job->done(job->ctx);
		free(job);
	}
}

static void on_event(struct loop *l, int fd, uint32_t events, void *ctx)
{
	uint64_t n;
	if (read(fd, &n, sizeof n) < 0 && errno != EAGAIN)
		log_warn("reading the jobs eventfd", "err=\"%s\"", strerror(errno));
	run_done(ctx);
}

struct jobs *jobs_new(struct loop *l)
{
	struct jobs *j = calloc(1, sizeof *j);
	if (!j)
		return NULL;
	j->l = l;
	j->todo_tail = &j->todo;
	j->done_tail = &j->done;
	j->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (j->efd < 0 || pthread_mutex_init(&j->mu, NULL) || pthread_cond_init(&j->cv, NULL)) {
		if (j->efd >= 0)
			close(j->efd);
		free(j);
		return NULL;
	}
	if (loop_add(l, j->efd, EPOLLIN, on_event, j)) {
		close(j->efd);
		free(j);
		return NULL;
	}
	return j;
}

int jobs_run(struct jobs *j, job_fn work, job_fn done, void *ctx)
{
	if (!j || j->stop)
		return -ECANCELED;
	struct job *job = calloc(1, sizeof *job);
	if (!job)
		return -ENOMEM;
	*job = (struct job){.work = work, .done = done, .ctx = ctx};
	if (!j->started) {
		int e = pthread_create(&j->thread, NULL, worker, j);
		if (e) {
			free(job);
			return -e;
		}
		j->started = true;
	}
	pthread_mutex_lock(&j->mu);
	*j->todo_tail = job;
	j->todo_tail = &job->next;
	pthread_cond_signal(&j->cv);
	pthread_mutex_unlock(&j->mu);
	return 0;
}

void jobs_free(struct jobs *j)
{
	if (!j)
		return;
	if (j->started) {
		pthread_mutex_lock(&j->mu);
		j->stop = true;               /* the worker finishes what was submitted, then exits */
		pthread_cond_signal(&j->cv);
		pthread_mutex_unlock(&j->mu);
		pthread_join(j->thread, NULL);
	}
	j->stop = true;
	run_done(j);                          /* done callbacks now only release their state */
	loop_del(j->l, j->efd);
	close(j->efd);
	pthread_cond_destroy(&j->cv);
	pthread_mutex_destroy(&j->mu);
	free(j);
}
