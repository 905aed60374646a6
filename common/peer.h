/* peer.h - who may connect to a listener: the host's vsock CID (plus allowed ones), and over
 * TCP only peers that are not this machine itself (unless allowed), optionally narrowed to
 * CIDR ranges. The checks are pure functions (unit-tested: vsock cannot be exercised on a
 * machine that is itself a guest); peer_allowed applies them and logs each refusal. */
#ifndef STEREO_PEER_H
#define STEREO_PEER_H
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#define PEER_RULES_MAX 16
#define PEER_HOST_CID 2   /* VMADDR_CID_HOST: the hypervisor side */

struct peer_rules {
	unsigned cids[PEER_RULES_MAX];   /* vsock: allowed besides the host (--allow-cid) */
	size_t ncids;
	bool allow_local;                /* TCP: accept this machine's own addresses */
	struct peer_cidr {
		int family;                  /* AF_INET or AF_INET6 */
		unsigned char addr[16];
		unsigned bits;
	} from[PEER_RULES_MAX];          /* TCP: --allow-from; none = any address */
	size_t nfrom;
};

/* "3,4,7" / "10.0.2.0/24,fd00::/8,192.168.1.5": appended to p; -1 with err when malformed. */
int peer_parse_cids(struct peer_rules *p, const char *list, char *err);
int peer_parse_cidrs(struct peer_rules *p, const char *list, char *err);
/* One "ADDRESS" or "ADDRESS/BITS" of n bytes (bits = full length when absent): 0 or -1. */
int peer_parse_cidr(const char *s, size_t n, struct peer_cidr *c);
bool peer_cid_allowed(const struct peer_rules *p, unsigned cid);
bool peer_in_cidrs(const struct peer_rules *p, const struct sockaddr *sa);
bool peer_is_local(const struct sockaddr *sa);   /* loopback, or an address of a local interface */
/* The accept-time check: vsock by CID, TCP by locality and CIDR, unix sockets always. */
bool peer_allowed(const struct peer_rules *p, const char *server, const struct sockaddr *sa,
		  socklen_t len);
/* "vsock:CID:PORT", "1.2.3.4:PORT", "[v6]:PORT" for logs. */
void peer_name(const struct sockaddr *sa, char *out, size_t n);
#endif
