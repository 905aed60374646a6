/* snapshot.h - the snapshot-aware guest: quiesce before a VM snapshot (snapshot.c), recover
 * after a restore (restore.c), notice restores nobody announced (snapshot.c) and report system
 * metrics (metrics.c).
 *
 * stereod owns the wire. These functions take a parsed request payload and write their reply
 * fields into a JSON object the caller has opened (the ack payload, or an HTTP body), so the
 * NDJSON and HTTP front ends share one implementation. Nothing here knows about connections:
 * stereod learns about a restore through the restored callback.
 *
 * Spec: docs/snapshot.md; docs/protocol.md (ack shape, lifecycle pushes).
 */
#ifndef STEREOD_SNAPSHOT_H
#define STEREOD_SNAPSHOT_H
#include "common/stereo.h"

/* Result of a request handler: what the front end should answer. */
enum snap_rc {
	SNAP_OK = 0,        /* ack ok:true / HTTP 200 */
	SNAP_INVALID = -1,  /* the payload was rejected, nothing was done: ok:false / HTTP 400 */
	SNAP_FAILED = -2,   /* ran, but a step failed (the steps say which): ok:false / HTTP 500 */
};

/* Called after every restore pipeline (host-announced or detected), before the reply is
 * written: stereod closes stale client connections (all but keep, the connection that
 * carried the request, NULL for none) and pushes lifecycle {state, message:"restored"} to its
 * subscribers. Returns the number of connections closed. */
typedef int (*snap_restored_fn)(void *ctx, const char *source, uint64_t generation, void *keep);

/* Runs work(arg) off the loop thread, then done(arg) on it, one operation at a time in
 * submission order (stereod: jobs_run); 0, or an error and then both run at once on the loop. */
typedef int (*snap_offload_fn)(void *ctx, void (*work)(void *), void (*done)(void *), void *arg);

struct snap_opts {
	const char *root;             /* prefix of every path touched ("/" in production) */
	snap_restored_fn restored;
	snap_offload_fn offload;      /* NULL: everything on the loop thread */
	void *ctx;                    /* for restored and offload */
};

struct snapshot;

/* Reads STEREO_FAKE_CLOCK (tests only; see docs/snapshot.md) and the saved generation, starts
 * the restore detectors (the kernel log, clock jumps, vmgenid uevents) on l. NULL with err on
 * failure. */
struct snapshot *snapshot_new(struct loop *l, const struct snap_opts *o, char *err);
/* Thaws anything still frozen, stops the detectors. */
void snapshot_free(struct snapshot *s);

/* The requests. The payload is checked at once (a bad one is answered at once with
 * SNAP_INVALID, nothing done); the work then runs through the offload hook and reply runs on
 * the loop thread when it is done. fields: the reply object's members without the braces
 * ("\"steps\":[...],..."), err a one-line summary when rc is not SNAP_OK. payload: the
 * payload token, -1 when absent (its text is copied: j may go once this returns). keep: the
 * requester's connection (opaque), passed to the restored callback. */
enum snap_kind { SNAP_PREPARE, SNAP_ABORT, SNAP_RESTORED };
typedef void (*snap_reply_fn)(void *ctx, enum snap_rc rc, const char *fields, size_t len,
			      const char *err);
void snapshot_request(struct snapshot *s, enum snap_kind kind, const struct json *j, int payload,
		      void *keep, snap_reply_fn reply, void *ctx);
/* The metrics object's fields (envd's names where envd has the value). */
void snapshot_metrics(struct snapshot *s, struct jw *w);
uint64_t snapshot_generation(const struct snapshot *s);

/* ---- snapshot_api.c: stereod's front ends (rows of its dispatch and route tables) ------- */
struct stereod;
struct req;
struct http_conn;
int snapshot_setup(struct stereod *d, char *err);
void snapshot_teardown(struct stereod *d);
void msg_snapshot_prepare(struct req *r);
void msg_snapshot_abort(struct req *r);
void msg_restored(struct req *r);
void msg_get_metrics(struct req *r);
void ipc_snapshot_prepare(struct stereod *d, struct http_conn *c, const char *body, size_t len);
void ipc_snapshot_abort(struct stereod *d, struct http_conn *c, const char *body, size_t len);
void ipc_restored(struct stereod *d, struct http_conn *c, const char *body, size_t len);
void ipc_metrics(struct stereod *d, struct http_conn *c, const char *body, size_t len);

/* ---- shared between snapshot.c, restore.c and metrics.c ---------------------------------- */
#define SNAP_MAX_FREEZE 16

struct snap_frozen {
	int fd;                        /* open on the mount point; FITHAW goes through it */
	char path[256];                /* as the request named it (without the root prefix) */
};

struct cpu_sample {
	unsigned long long busy, total;
};

struct snapshot {
	struct loop *loop;
	char root[512];                /* "" for "/" so root + "/etc/x" is always right */
	snap_restored_fn restored;
	snap_offload_fn offload;
	void *ctx;

	/* operations (snapshot.c): while busy, one is under way off the loop thread and owns the
	 * state below; the loop thread reads the *_pub copies, made when each one is done */
	int busy;
	const char *detect_pending;    /* a detector fired while busy: run it afterwards */
	bool prepared_pub;
	uint64_t generation_pub;

	/* prepare state */
	bool prepared;
	struct snap_frozen frozen[SNAP_MAX_FREEZE];
	int nfrozen;
	uint64_t watchdog;             /* loop timer id, 0 when none (loop thread only) */
	int64_t watchdog_ms;           /* the prepare's timeout: armed when the prepare is done */
	int backstop;                  /* pidfd of the child that thaws if stereod cannot, or -1 */

	/* restore state */
	uint64_t generation;
	unsigned restores;             /* since the daemon started */
	int64_t last_restore_ms;       /* monotonic, for coalescing detectors */

	/* detection */
	char fake_clock[512];          /* tests: offsets file, "" = the real clocks */
	int64_t base_boot_ns;          /* BOOTTIME - MONOTONIC at the last tick */
	int64_t base_real_ns;          /* REALTIME - MONOTONIC at the last tick */
	uint64_t tick;
	int uevent_fd;
	uint64_t detect_timer;         /* a detected restore waiting for the host's, 0 when none */
	const char *detect_source;     /* its detector's name (a string literal) */
	int kmsg_fd;                   /* /dev/kmsg, for the kernel's "virtual machine fork" line */

	/* metrics: /proc/stat samples of the last two ticks */
	struct cpu_sample cpu_prev, cpu_last;
};

/* One reported step: {"step":name,"ok":bool,"error"?:why} plus fields the caller adds before
 * step_end. A failed step also appends "name: why" to the summary in fails. */
struct steps {
	struct jw *w;
	struct buf fails;
	int nfail;
};
void step_begin(struct steps *st, const char *name);
void step_end(struct steps *st, const char *name, int rc, const char *why);
/* SNAP_FAILED with the failures in err when any step failed, else SNAP_OK; frees fails. */
enum snap_rc steps_result(struct steps *st, char *err);
/* root + path into out (path absolute); -ENAMETOOLONG when it does not fit. */
int snap_path(const struct snapshot *s, const char *path, char *out, size_t outsz);

/* snapshot.c */
int snapshot_thaw_all(struct snapshot *s, struct steps *st);
/* The clocks as the pipeline sees them: real, or shifted by the fake-clock offsets. */
int64_t snap_clock_ns(const struct snapshot *s, int clock_id);
int snap_clock_step(struct snapshot *s, int64_t target_ns, char *err);
void snap_detect_rebase(struct snapshot *s);

/* restore.c: the pipeline. host_* are NULL/absent for a detected restore. */
struct restore_req {
	bool have_clock;
	int64_t wall_clock_ns;
	struct buf entropy;            /* decoded bytes; wiped after use */
	bool have_generation;
	uint64_t generation;
	char hostname[65];
	char machine_id[33];
	int network;                   /* token of the network object, -1 when absent */
	const struct json *j;
};
enum snap_rc restore_parse(const struct json *j, int payload, struct restore_req *r, char *err);
/* The pipeline in two halves: restore_steps (off the loop: thaw, clock, entropy, generation,
 * hostname, machine-id, network; st->w sits in the reply's open object and is left inside the
 * open steps array) and restore_finish (loop thread: the restored callback, the rest of the
 * reply). r->entropy is wiped. */
void restore_steps(struct snapshot *s, struct restore_req *r, const char *source, struct steps *st);
enum snap_rc restore_finish(struct snapshot *s, const char *source, void *keep, struct steps *st,
			    char *err);
/* restore.c: the network object {interface, mac?, mtu?, addresses?, gateway?, routes?} */
int net_validate(const struct json *j, int net, char *err);
void net_apply(const struct json *j, int net, struct steps *st);

/* metrics.c */
int cpu_sample_read(struct cpu_sample *c);
#endif
