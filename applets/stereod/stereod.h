/* stereod.h - the daemon's shared state and the interfaces between its subsystems.
 *
 * One struct stereod holds the configuration (paths, flags) and the running state; it is
 * created in stereod.c and passed to every subsystem. Nothing here is global.
 * Spec: docs/protocol.md, docs/stereod.md
 */
#ifndef STEREOD_H
#define STEREOD_H
#include "common/stereo.h"
#include "common/conn.h"
#include "common/peer.h"
#include "snapshot.h"

enum lc_state { ST_BOOTING, ST_READY, ST_HEALTHY, ST_DEGRADED, ST_SHUTDOWN };
enum lc_event { EV_STARTED, EV_AGENT_RUNNING, EV_AGENT_ERROR, EV_AGENTD_LOST, EV_SHUTDOWN };
enum poweroff_kind { POWEROFF_AUTO, POWEROFF_INIT, POWEROFF_SYSTEMD, POWEROFF_CMD, POWEROFF_NONE };

/* Connections (docs/stereod.md "Timeouts and budgets"). */
#define NDJSON_MAX_CONNS 1024
#define NDJSON_OUT_HIGH (256 * 1024)            /* stop answering above this much unsent output */
#define IPC_MAX_CONNS 1024
#define IPC_IDLE_MS 60000                       /* an idle IPC keep-alive connection closes */
#define CONN_IN_BUDGET (32 * 1024 * 1024)       /* unfinished input across all connections */
#define CONN_OUT_BUDGET (16 * 1024 * 1024)      /* unsent output across all connections */
#define CONN_STALL_MS 30000                     /* output that does not move for this long */
#define CONN_DRAIN_MS 2000                      /* after a last reply: wait for the peer's EOF */
#define LINE_TIMEOUT_MS 10000                   /* --line-timeout default */

struct stereod {
	struct loop *loop;
	/* configuration */
	const char *listen_mode, *listen_addr, *root;   /* listen_mode: "tcp"/"vsock" once started */
	const char *cmdline_file;     /* the kernel command line (stereod.listen=) */
	unsigned vsock_port;
	char *run_dir, *secrets_dir, *config_dir, *socket_path, *agentd_socket;
	char *passwd_path, *group_path;
	long long poll_ms;
	bool allow_disk_secrets;
	enum poweroff_kind poweroff;
	const char *poweroff_cmd, *mount_helper, *mount_stand_in;
	int ready_fd;
	/* running state */
	int64_t started_ms;
	enum lc_state state;
	bool ever_healthy;           /* reached healthy once (upstream then stays healthy) */
	char degraded_reason[256];   /* the message of the last move to degraded */
	int secrets_fd;              /* the secrets directory, opened once it is set up */
	bool secrets_on_tmpfs, secrets_mounted;
	mode_t umask;                /* the process umask at start: applied to secret modes */
	struct mounts *mounts;        /* mounts.c */
	struct jobs *jobs;            /* jobs.c: the worker thread for blocking work */
	bool shutting_down;
	char shutdown_reason[256];
	pid_t poweroff_pid;
	struct conn_pool *pool;       /* budgets shared by every connection (common/conn.c) */
	int64_t line_timeout_ms;      /* --line-timeout */
	struct peer_rules peers;      /* who may connect (common/peer.c) */
	struct ndjson_server *ndjson;
	/* the guest-metadata listener (metadata.c): --metadata-* flags, then its state */
	const char *md_mode, *md_addr, *md_env_file, *md_secrets_dir;
	unsigned md_vsock_port;
	struct metadata *metadata;
	struct snapshot *snap;        /* snapshot_api.c */
	struct http_server *ipc;
	struct agentd *agentd;        /* agentd.c */
	/* lifecycle.c reports every transition here (stereod.c pushes it to subscribers) */
	void (*lc_notify)(void *ctx, enum lc_state to, const char *message);
	void *lc_ctx;
};

/* stereod.c */
/* Open a listening socket the way --listen-mode says: vsock port vsock_port (any CID), or
 * TCP tcp_addr. where gets "vsock:PORT" or "HOST:PORT" as really bound. -1 with err, e.g.
 * when auto finds no vsock transport. Every NDJSON server built on it applies the same peer
 * checks at accept time. */
int stereod_listen(struct stereod *d, unsigned vsock_port, const char *tcp_addr, char *where,
		   size_t wsz, char *err);
/* Run "/bin/sh -c CMD" (with argv[] as $1...) in a child with the default signal mask.
 * Returns the pid or -errno. */
pid_t spawn_sh(const char *cmd, const char *const *args);
/* Run spawn_sh and wait for it up to timeout_ms: exit status (0..255), or -1 with err. */
int run_sh(const char *cmd, const char *const *args, int timeout_ms, char *err);
/* ROOT + path (xmalloc'd). */
char *path_under_root(const struct stereod *d, const char *path);

/* lifecycle.c */
const char *lc_state_name(enum lc_state s);
void lc_event(struct stereod *d, enum lc_event ev, const char *message);
/* Writes the health object; upstream_view: the state an old (no-hello) client is shown. */
void lc_health_payload(struct stereod *d, struct jw *w, bool upstream_view);

/* ndjson_api.c: the control-plane server (vsock or TCP).
 * A request being answered: handlers (one line each in the dispatch table of ndjson_api.c)
 * read the payload through j/payload and append exactly one reply with the reply_* helpers. */
struct nconn;
struct req {
	struct stereod *d;
	struct nconn *conn;
	const struct json *j;
	int payload;               /* the payload object's token, -1 when absent or not an object */
	int payload_tok;           /* the payload's token whatever its kind, -1 when absent */
	const char *type;          /* the request's type (borrowed), type_len bytes */
	size_t type_len;
	const char *id;            /* the raw JSON of "id", NULL when absent */
	size_t id_len;
	struct buf *out;           /* the connection's output buffer */
};
void reply_ack(struct req *r, bool ok, const char *error);
void reply_ack_n(struct req *r, bool ok, const char *error, size_t len);   /* error may hold NULs */
/* reply_begin writes {"type":TYPE[,"id":ID]; add "payload" with jw_key, then reply_end. */
void reply_begin(struct req *r, struct jw *w, const char *type);
void reply_end(struct req *r, struct jw *w);

/* Deferred replies, for work that must not run on the loop thread (mount(2), hooks, sync):
 * inside a handler, call reply_defer(r) instead of replying and return without writing. The
 * request's id and type are copied; r, its line and its payload are gone after the return
 * (copy what the work needs). The connection answers no further line (it stops reading;
 * what it already buffered waits) until the reply is given, on the loop thread, with exactly
 * one defer_ack or defer_reply, which writes it with the request's id (and reply_to), frees
 * d and resumes the buffered lines in order. Other connections are served meanwhile. If the
 * connection was closed meanwhile (client gone, evicted, restore), the call only frees d.
 * reply_defer returns NULL when out of memory: then reply at once (reply_ack). */
struct defer;
struct defer *reply_defer(struct req *r);
void defer_ack(struct defer *d, bool ok, const char *error);
/* {"type":TYPE[,"id":ID][,"payload":...]}: payload (NULL for none) writes one JSON value. */
void defer_reply(struct defer *d, const char *type, void (*payload)(struct jw *w, void *ctx), void *ctx);
/* IPC side: http_defer / http_defer_json / http_defer_error in common/http.h. */

/* NDJSON servers (the listener API, ndjson_server.c). One server per listening socket; each
 * takes its line protocol as a struct ndjson_proto, so a second protocol (the guest-metadata
 * listener) gets the same framing (lines up to NDJSON_MAX_LINE, replies in order, output
 * high-water mark, input and output budgets, line timeout, eviction, deferred replies) and the
 * same trust rules (who may connect: peer_allowed with d->peers, docs/stereod.md) on the same loop:
 *   int fd = stereod_listen(d, 5555, d->metadata_addr, where, sizeof where, err);
 *   s = ndjson_server_new(d, fd, &metadata_proto, md);
 * line(): answer one complete non-empty line (NUL-terminated, writable, wiped afterwards) by
 *   appending exactly one reply line (JSON and a newline) to ndjson_out(c), or by deferring
 *   it: d = ndjson_defer(c), later (on the loop thread) defer_line(d, json, len), which adds
 *   the newline and frees d.
 * error(): append the reply for a line that is never dispatched (too long, over the input
 *   budget, unfinished for too long, evicted); the connection is closed after it. */
struct ndjson_proto {
	const char *name;   /* for logs */
	void (*line)(struct nconn *c, char *line, size_t len, void *ctx);
	void (*error)(struct nconn *c, const char *msg, void *ctx);
};
extern const struct ndjson_proto control_proto;   /* the stereosd protocol; ctx unused */
struct ndjson_server *ndjson_server_new(struct stereod *d, int listen_fd,
					const struct ndjson_proto *proto, void *ctx);
void ndjson_server_free(struct ndjson_server *s);
struct buf *ndjson_out(struct nconn *c);
struct stereod *ndjson_daemon(struct nconn *c);
void ndjson_subscribe(struct nconn *c);                   /* lifecycle pushes from now on */
void ndjson_said_hello(struct nconn *c);
/* Neither hello nor subscribe: an upstream client, shown upstream's states (never degraded). */
bool ndjson_old_client(struct nconn *c);
struct defer *ndjson_defer(struct nconn *c);              /* NULL when out of memory */
void defer_line(struct defer *d, const char *json, size_t len);
/* The parts of a deferred reply (opaque to handlers): defer_out is the connection's output,
 * NULL once it is gone; defer_end frees d and resumes the connection. */
struct defer {                /* allocated by conn_defer (common/conn.c) */
	struct stereod *d;
	struct buf id, type;      /* the request's, for reply_defer */
};
struct buf *defer_out(struct defer *d);
void defer_end(struct defer *d);
/* Send a lifecycle push to every connection that sent "subscribe". */
void ndjson_push_lifecycle(struct ndjson_server *s, const char *state, const char *message);
/* After a VM restore: close every connection but keep and the subscribers; how many closed. */
int ndjson_close_stale(struct ndjson_server *s, struct nconn *keep);

/* metadata.c: microvm-runtime's guest metadata listener (off with --metadata-listen-mode off) */
int metadata_start(struct stereod *d, char *err);
void metadata_stop(struct stereod *d);

/* ipc_api.c: the HTTP API on the unix socket */
struct http_server *ipc_server_new(struct stereod *d, int listen_fd);

/* Payload decoding shared by both APIs. Decoders return 0, or -1 with err naming the field
 * when a field has the wrong type or a required one is missing (HTTP 400); the actions
 * return 0 or -1 with err when the request is refused (HTTP 422). */
struct secret_req {
	struct buf name, value;   /* value is wiped by secret_req_free */
	uint64_t mode;
};
int secret_decode(const struct json *j, int obj, struct secret_req *r, char *err);
void secret_req_free(struct secret_req *r);

struct sshkey_req {
	struct buf user, key;
	bool append;
};
int sshkey_decode(const struct json *j, int obj, struct sshkey_req *r, char *err);
void sshkey_req_free(struct sshkey_req *r);

struct mount_req {
	struct buf tag, guest_path, fs_type;
	bool read_only;
};
int mount_decode(const struct json *j, int obj, struct mount_req *r, char *err);
void mount_req_free(struct mount_req *r);

/* secrets.c */
int secrets_setup(struct stereod *d, char *err);
void secrets_teardown(struct stereod *d);
int secrets_inject(struct stereod *d, const struct secret_req *r, char *err);
/* The name rules with upstream's error texts (which may pass ERRBUF and hold a NUL). */
int secret_name_check(const struct stereod *d, const char *name, size_t len, struct buf *why);
int secrets_list(struct stereod *d, struct jw *w, char *err);   /* writes a JSON array */
int secrets_remove(struct stereod *d, const char *name, size_t len, char *err);

/* sshkeys.c */
int sshkey_inject(struct stereod *d, const struct sshkey_req *r, char *err);

/* users.c: passwd/group lookups in the configured files (fgetpwent, no NSS) */
int user_lookup(const char *passwd, const char *name, uid_t *uid, gid_t *gid, struct buf *home);
int group_lookup(const char *group, const char *name, gid_t *gid);

/* jobs.c: blocking work off the loop thread. work runs on the one worker thread, jobs one at
 * a time in submission order; done then runs on the loop thread. jobs_run: 0, or -errno (the
 * caller then runs the work itself). jobs_free finishes what was submitted, runs the pending
 * done callbacks, and stops the worker. */
typedef void (*job_fn)(void *ctx);
struct jobs *jobs_new(struct loop *l);
int jobs_run(struct jobs *j, job_fn work, job_fn done, void *ctx);
void jobs_free(struct jobs *j);

/* mounts.c: the mount table, its own state. The strings of the configuration are borrowed. */
struct mounts_conf {
	const char *root, *passwd, *group;   /* --root and the user database */
	const char *helper, *stand_in;       /* --mount-helper, --mount-stand-in (NULL: none) */
	struct jobs *jobs;                   /* where mounts_request runs the blocking part */
};
struct mounts *mounts_new(const struct mounts_conf *c);   /* NULL when out of memory */
void mounts_free(struct mounts *m);                       /* forgets the table, unmounts nothing */
/* A request in three steps, so the blocking middle can run off the loop thread:
 * mounts_begin checks it and reserves the path (loop thread; NULL with err when refused),
 * mount_op_run does the file system work (any thread, may block up to 10 s), and
 * mounts_end records the mount or releases the path and frees op (loop thread; 0 or -1
 * with err). mounts_add runs the three in a row. */
struct mount_op;
struct mount_op *mounts_begin(struct mounts *m, const struct mount_req *r, char *err);
void mount_op_run(struct mount_op *op);
int mounts_end(struct mounts *m, struct mount_op *op, char *err);
int mounts_add(struct mounts *m, const struct mount_req *r, char *err);
/* The same with the middle on the jobs worker: replied(ctx, rc, err) runs on the loop thread
 * once it is decided (at once when refused by the checks). */
typedef void (*mounts_reply_fn)(void *ctx, int rc, const char *err);
void mounts_request(struct mounts *m, const struct mount_req *r, mounts_reply_fn replied, void *ctx);
void mounts_list(const struct mounts *m, struct jw *w);   /* writes a JSON array */
void mounts_unmount_all(struct mounts *m);                /* LIFO */
/* The same in two steps, so unmounting can run off the loop thread: mounts_detach empties the
 * table into a list the mounts keep preallocated (loop thread), mount_list_unmount unmounts
 * LIFO and logs (any thread), before mounts_free. */
struct mount_list;
struct mount_list *mounts_detach(struct mounts *m);
void mount_list_unmount(struct mount_list *l);

/* config.c */
int config_set(struct stereod *d, const char *content, size_t len, char *err);

/* agentd.c: the agentd poller, its own state. Polling starts at once. */
struct agentd_conf {
	struct loop *loop;
	const char *socket;       /* borrowed */
	long long poll_ms;
	/* what a poll shows, as a lifecycle event (lc_event), and whether polling is over (shutdown) */
	void (*event)(void *ctx, enum lc_event ev, const char *message);
	bool (*paused)(void *ctx);
	void *ctx;
};
struct agentd *agentd_new(const struct agentd_conf *c);   /* NULL when out of memory */
void agentd_free(struct agentd *a);
/* The agents array of the last good poll as JSON ("[]" when none) and how many it holds. */
size_t agentd_agents(const struct agentd *a, const char **json, size_t *len);
/* Stop polling; true while a request is still in flight (its callback then stops the loop). */
bool agentd_stop(struct agentd *a);

/* shutdown.c */
/* Begin the shutdown sequence once the current replies are out (it runs from a timer). */
void shutdown_request(struct stereod *d, const char *reason);
void shutdown_child_exited(struct stereod *d, pid_t pid, int status);
#endif
