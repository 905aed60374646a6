/* nonss.c - keep glibc's name-service and DNS stack out of the static binary.
 *
 * stereo resolves no names: every address it parses is numeric (sock.c uses inet_pton), and
 * users and groups come from the passwd/group files directly (fgetpwent), never through NSS.
 * libnl-3 still references getaddrinfo/getnameinfo/getprotoby* for name forms of addresses
 * and protocols that we never pass it; linking glibc's versions statically costs ~160 KB and,
 * at run time, a dlopen of NSS modules from the build machine's glibc (the link warnings say
 * so). These definitions take their place and answer "no such name", which is exactly what
 * those calls would answer inside a guest initramfs with no NSS configuration.
 */
#include <errno.h>
#include <netdb.h>
#include <stddef.h>

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
		struct addrinfo **res)
{
	(void)node, (void)service, (void)hints;
	*res = NULL;
	return EAI_NONAME;
}

void freeaddrinfo(struct addrinfo *ai) { (void)ai; }

int getnameinfo(const struct sockaddr *sa, socklen_t salen, char *host, socklen_t hostlen,
		char *serv, socklen_t servlen, int flags)
{
	(void)sa, (void)salen, (void)host, (void)hostlen, (void)serv, (void)servlen, (void)flags;
	return EAI_NONAME;
}

struct protoent *getprotobyname(const char *name) { (void)name; return NULL; }
struct protoent *getprotobynumber(int proto) { (void)proto; return NULL; }

int getprotobyname_r(const char *name, struct protoent *pe, char *buf, size_t len,
		     struct protoent **res)
{
	(void)name, (void)pe, (void)buf, (void)len;
	*res = NULL;
	return ENOENT;
}

int getprotobynumber_r(int proto, struct protoent *pe, char *buf, size_t len,
		       struct protoent **res)
{
	(void)proto, (void)pe, (void)buf, (void)len;
	*res = NULL;
	return ENOENT;
}
