/* sock.h - listening and connecting over TCP, unix and AF_VSOCK sockets, with timeouts.
 * Address strings: "HOST:PORT", "[v6]:PORT", ":PORT" (all interfaces). All fds CLOEXEC.
 * Errors: -1 with a message in err (ERRBUF); connect timeouts say "timed out". */
#ifndef STEREO_SOCK_H
#define STEREO_SOCK_H
#include <stdbool.h>
#include <sys/types.h>

#define VSOCK_DEFAULT_PORT 1024
#define VSOCK_GUEST_CID 3

int sock_listen_tcp(const char *addr, int backlog, char *err);
int sock_listen_unix(const char *path, mode_t mode, gid_t gid, char *err);
int sock_listen_vsock(unsigned cid, unsigned port, char *err);
/* Connects; returns a blocking fd or -1 (err) with *timed_out set when the deadline passed. */
int sock_connect_tcp(const char *addr, int timeout_ms, bool *timed_out, char *err);
int sock_connect_unix(const char *path, int timeout_ms, bool *timed_out, char *err);
int sock_connect_vsock(unsigned cid, unsigned port, int timeout_ms, bool *timed_out, char *err);
int sock_local_port(int fd);
/* A vsock transport is really attached (a /dev/vsock and a bindable AF_VSOCK socket). */
bool vsock_available(void);
/* poll one fd: 1 ready, 0 timed out, -errno. */
int fd_wait(int fd, short events, int timeout_ms);
#endif
