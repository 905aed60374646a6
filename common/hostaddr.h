/* hostaddr.h - how a host program addresses a guest: AF_VSOCK (CID:PORT), TCP (HOST:PORT) or
 * hybrid vsock (a Unix socket a VMM such as Firecracker or Cloud Hypervisor exposes for the
 * guest's vsock device, plus the guest port). Parsing, printing and connecting, the hybrid
 * vsock "CONNECT <port>\n" / "OK <host_port>\n" exchange included, so that every host command
 * gets the same three transports. See docs/clis.md.
 */
#ifndef STEREO_HOSTADDR_H
#define STEREO_HOSTADDR_H
#include <stdbool.h>
#include <stddef.h>

enum hostaddr_kind { HOSTADDR_VSOCK, HOSTADDR_TCP, HOSTADDR_UDS };

struct hostaddr {
	enum hostaddr_kind kind;
	unsigned cid, port;   /* vsock: CID and port; uds: the guest's vsock port */
	bool port_given;      /* vsock, uds: the address named the port (else: the default) */
	char tcp[300];        /* HOST:PORT */
	char path[108];       /* uds: the VMM's socket (sun_path's size) */
};

/* The hybrid vsock answer must come within this (or the connect timeout, when shorter). */
#define HOSTADDR_OK_TIMEOUT_MS 2000

/* "CID" or "CID:PORT"; "HOST:PORT"; "PATH" or "PATH:PORT". PORT defaults to def_port. A
 * command that talks to another guest service keeps a named port and replaces a default one:
 * `if (a.kind != HOSTADDR_TCP && !a.port_given) a.port = 5555;`
 * Return 0, or -1 with a message in err (ERRBUF); *a is unchanged on error. */
int hostaddr_parse_vsock(struct hostaddr *a, const char *s, unsigned def_port, char *err);
int hostaddr_parse_tcp(struct hostaddr *a, const char *s, char *err);
int hostaddr_parse_uds(struct hostaddr *a, const char *s, unsigned def_port, char *err);
/* vsock://CID[:PORT], tcp://HOST:PORT or unix://PATH[:PORT] */
int hostaddr_parse_url(struct hostaddr *a, const char *s, unsigned def_port, char *err);
/* The URL form of a (what hostaddr_parse_url reads back). */
void hostaddr_str(const struct hostaddr *a, char *out, size_t n);

/* Why a connection failed. HOSTADDR_NOT_YET: the guest (or its VMM) is not there or not
 * listening yet (a missing socket, ECONNREFUSED, unreachable, a hybrid vsock answer other
 * than OK, EOF before the answer): worth retrying while a guest boots. HOSTADDR_TIMEOUT: connect or the
 * answer timed out. HOSTADDR_ERROR: anything else (permissions, not a socket...). */
enum hostaddr_fail { HOSTADDR_NOT_YET = 1, HOSTADDR_TIMEOUT, HOSTADDR_ERROR };

/* Connect within timeout_ms; for uds, do the exchange too. Returns a blocking fd ready for
 * the guest's byte stream, or -1 with err (a line the VMM sent is quoted, escaped) and *why. */
int hostaddr_connect(const struct hostaddr *a, int timeout_ms, enum hostaddr_fail *why,
		     char *err);
#endif
