/* peer.c - who may connect (see peer.h; the rules are explained in docs/stereod.md
 * "Who may connect"). */
#include "common/stereo.h"
#include "common/peer.h"
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <linux/vm_sockets.h>
#include <netinet/in.h>

int peer_parse_cids(struct peer_rules *p, const char *list, char *err)
{
	const char *s = list;
	do {
		char *end;
		errno = 0;
		unsigned long v = strtoul(s, &end, 10);
		if (end == s || (*end && *end != ',') || errno || v > 0xffffffffUL || *s == '-')
			return errf(err, "bad CID list '%s' (numbers separated by commas)", list);
		if (p->ncids == PEER_RULES_MAX)
			return errf(err, "too many CIDs (at most %d)", PEER_RULES_MAX);
		p->cids[p->ncids++] = (unsigned)v;
		s = *end ? end + 1 : end;
	} while (*s);
	return 0;
}

int peer_parse_cidr(const char *s, size_t n, struct peer_cidr *c)
{
	char tmp[INET6_ADDRSTRLEN + 8];
	if (!n || n >= sizeof tmp)
		return -1;
	memcpy(tmp, s, n);
	tmp[n] = 0;
	char *slash = strchr(tmp, '/');
	if (slash)
		*slash = 0;
	if (inet_pton(AF_INET, tmp, c->addr) == 1)
		c->family = AF_INET;
	else if (inet_pton(AF_INET6, tmp, c->addr) == 1)
		c->family = AF_INET6;
	else
		return -1;
	unsigned max = c->family == AF_INET ? 32 : 128;
	c->bits = max;
	if (slash) {
		char *end;
		unsigned long b = strtoul(slash + 1, &end, 10);
		if (!slash[1] || *end || b > max)
			return -1;
		c->bits = (unsigned)b;
	}
	return 0;
}

int peer_parse_cidrs(struct peer_rules *p, const char *list, char *err)
{
	const char *s = list;
	for (;;) {
		const char *comma = strchr(s, ',');
		size_t n = comma ? (size_t)(comma - s) : strlen(s);
		if (p->nfrom == PEER_RULES_MAX)
			return errf(err, "too many CIDR ranges (at most %d)", PEER_RULES_MAX);
		if (peer_parse_cidr(s, n, &p->from[p->nfrom]))
			return errf(err, "bad CIDR '%.*s' in '%s' (ADDRESS or ADDRESS/BITS)", (int)n, s, list);
		p->nfrom++;
		if (!comma)
			return 0;
		s = comma + 1;
	}
}

bool peer_cid_allowed(const struct peer_rules *p, unsigned cid)
{
	if (cid == PEER_HOST_CID)
		return true;
	for (size_t i = 0; i < p->ncids; i++)
		if (p->cids[i] == cid)
			return true;
	return false;
}

/* The peer's address as family + bytes; an IPv4-mapped IPv6 address counts as IPv4. */
static int addr_of(const struct sockaddr *sa, const unsigned char **a)
{
	if (sa->sa_family == AF_INET) {
		*a = (const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr;
		return AF_INET;
	}
	if (sa->sa_family == AF_INET6) {
		const struct in6_addr *v6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
		if (IN6_IS_ADDR_V4MAPPED(v6)) {
			*a = v6->s6_addr + 12;
			return AF_INET;
		}
		*a = v6->s6_addr;
		return AF_INET6;
	}
	return -1;
}

static bool prefix_eq(const unsigned char *a, const unsigned char *b, unsigned bits)
{
	unsigned whole = bits / 8, rest = bits % 8;
	if (memcmp(a, b, whole))
		return false;
	if (!rest)
		return true;
	unsigned char mask = (unsigned char)(0xff << (8 - rest));
	return (a[whole] & mask) == (b[whole] & mask);
}

bool peer_in_cidrs(const struct peer_rules *p, const struct sockaddr *sa)
{
	if (!p->nfrom)
		return true;
	const unsigned char *a = NULL;
	int fam = addr_of(sa, &a);
	for (size_t i = 0; i < p->nfrom; i++)
		if (p->from[i].family == fam && prefix_eq(a, p->from[i].addr, p->from[i].bits))
			return true;
	return false;
}

bool peer_is_local(const struct sockaddr *sa)
{
	const unsigned char *a = NULL;
	int fam = addr_of(sa, &a);
	if (fam == AF_INET && a[0] == 127)
		return true;
	if (fam == AF_INET6 && IN6_IS_ADDR_LOOPBACK((const struct in6_addr *)a))
		return true;
	if (fam < 0)
		return false;
	struct ifaddrs *ifs;
	if (getifaddrs(&ifs))
		return true;   /* cannot tell: treat as local, the safe side */
	bool local = false;
	for (struct ifaddrs *i = ifs; i && !local; i = i->ifa_next) {
		const unsigned char *b = NULL;
		if (!i->ifa_addr || addr_of(i->ifa_addr, &b) != fam)
			continue;
		local = !memcmp(a, b, fam == AF_INET ? 4 : 16);
	}
	freeifaddrs(ifs);
	return local;
}

void peer_name(const struct sockaddr *sa, char *out, size_t n)
{
	char ip[INET6_ADDRSTRLEN];
	if (sa->sa_family == AF_VSOCK) {
		const struct sockaddr_vm *vm = (const struct sockaddr_vm *)sa;
		snprintf(out, n, "vsock:%u:%u", vm->svm_cid, vm->svm_port);
	} else if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof ip);
		snprintf(out, n, "%s:%u", ip, ntohs(s4->sin_port));
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof ip);
		snprintf(out, n, "[%s]:%u", ip, ntohs(s6->sin6_port));
	} else {
		snprintf(out, n, "family-%d", sa->sa_family);
	}
}

bool peer_allowed(const struct peer_rules *p, const char *server, const struct sockaddr *sa,
		  socklen_t len)
{
	const char *why = NULL;
	if (len < sizeof(sa_family_t))
		why = "unknown peer address";
	else if (sa->sa_family == AF_UNIX)
		return true;
	else if (sa->sa_family == AF_VSOCK)
		why = len >= sizeof(struct sockaddr_vm) &&
		      peer_cid_allowed(p, ((const struct sockaddr_vm *)sa)->svm_cid)
			      ? NULL : "CID not allowed (the host is CID 2; see --allow-cid)";
	else if (sa->sa_family == AF_INET || sa->sa_family == AF_INET6)
		why = !p->allow_local && peer_is_local(sa) ? "local peer (see --allow-local-peers)"
		      : !peer_in_cidrs(p, sa) ? "address not in --allow-from"
		      : NULL;
	else
		why = "unsupported address family";
	if (!why)
		return true;
	char name[96];
	peer_name(sa, name, sizeof name);
	log_warn("refused a connection", "server=%s peer=%s reason=\"%s\"", server, name, why);
	return false;
}
