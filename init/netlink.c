/* netlink.c - applies a parsed network configuration (netcfg.h) over one NETLINK_ROUTE socket
 * with libnl-route-3, with no `ip` and no shell: lo up, each interface up with its MTU, its
 * addresses, default routes; then /etc/resolv.conf (atomically) and the hostname.
 */
#include "init/netcfg.h"
#include <unistd.h>

#ifdef CONFIG_INIT_NET
#include <arpa/inet.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/route.h>

static int link_setup(struct nl_sock *sk, const char *name, int mtu, int *ifindex, char *err)
{
	struct rtnl_link *link = NULL, *chg = NULL;
	int rc = rtnl_link_get_kernel(sk, 0, name, &link);
	if (rc < 0)
		return errf(err, "interface %s: %s", name, nl_geterror(rc));
	*ifindex = rtnl_link_get_ifindex(link);
	chg = rtnl_link_alloc();
	if (!chg) {
		rtnl_link_put(link);
		return errf(err, "out of memory");
	}
	rtnl_link_set_flags(chg, IFF_UP);
	if (mtu)
		rtnl_link_set_mtu(chg, mtu);
	rc = rtnl_link_change(sk, link, chg, 0);
	rtnl_link_put(chg);
	rtnl_link_put(link);
	if (rc < 0)
		return errf(err, "interface %s: setting %s: %s", name, mtu ? "mtu and up" : "up",
			    nl_geterror(rc));
	return 0;
}

static int addr_add(struct nl_sock *sk, int ifindex, const char *name, const char *cidr, char *err)
{
	struct nl_addr *local = NULL;
	int rc = nl_addr_parse(cidr, AF_UNSPEC, &local);
	if (rc < 0)
		return errf(err, "address %s: %s", cidr, nl_geterror(rc));
	struct rtnl_addr *a = rtnl_addr_alloc();
	if (!a) {
		nl_addr_put(local);
		return errf(err, "out of memory");
	}
	rtnl_addr_set_ifindex(a, ifindex);
	rtnl_addr_set_local(a, local);
	int plen = nl_addr_get_prefixlen(local);
	if (nl_addr_get_family(local) == AF_INET && plen < 31) {
		/* `ip addr add ... brd +`: the kernel does not derive the broadcast address */
		uint32_t v;
		memcpy(&v, nl_addr_get_binary_addr(local), 4);
		v = htonl(ntohl(v) | (plen ? 0xffffffffu >> plen : 0xffffffffu));
		struct nl_addr *bc = nl_addr_build(AF_INET, &v, 4);
		if (bc) {
			rtnl_addr_set_broadcast(a, bc);
			nl_addr_put(bc);
		}
	}
	rc = rtnl_addr_add(sk, a, 0);
	rtnl_addr_put(a);
	nl_addr_put(local);
	if (rc < 0 && rc != -NLE_EXIST)
		return errf(err, "adding %s to %s: %s", cidr, name, nl_geterror(rc));
	return 0;
}

static int default_route(struct nl_sock *sk, int ifindex, const char *gw, char *err)
{
	int fam = addr_family(gw);
	struct nl_addr *dst = NULL, *via = NULL;
	struct rtnl_route *r = NULL;
	struct rtnl_nexthop *nh = NULL;
	int rc = nl_addr_parse(gw, fam, &via);
	if (rc >= 0)
		rc = nl_addr_parse("default", fam, &dst);
	if (rc < 0)
		goto out;
	r = rtnl_route_alloc();
	nh = rtnl_route_nh_alloc();
	if (!r || !nh) {
		rc = -NLE_NOMEM;
		goto out;
	}
	rtnl_route_set_family(r, fam);
	rtnl_route_set_dst(r, dst);
	rtnl_route_set_table(r, RT_TABLE_MAIN);
	rtnl_route_set_scope(r, RT_SCOPE_UNIVERSE);
	rtnl_route_set_protocol(r, RTPROT_BOOT);
	rtnl_route_nh_set_gateway(nh, via);
	rtnl_route_nh_set_ifindex(nh, ifindex);
	rtnl_route_add_nexthop(r, nh);
	nh = NULL;   /* owned by the route now */
	rc = rtnl_route_add(sk, r, NLM_F_REPLACE);
out:
	if (nh)
		rtnl_route_nh_free(nh);
	if (r)
		rtnl_route_put(r);
	nl_addr_put(dst);
	nl_addr_put(via);
	if (rc < 0)
		return errf(err, "default route via %s: %s", gw, nl_geterror(rc));
	return 0;
}

static int write_resolv(const struct netcfg *c, const char *path, char *err)
{
	struct buf b = {0};
	buf_puts(&b, "# written by stereo init\n");
	if (*c->search)
		buf_printf(&b, "search %s\n", c->search);
	for (int i = 0; i < c->ndns; i++)
		buf_printf(&b, "nameserver %s\n", c->dns[i]);
	char dir[PATH_MAX];
	snprintf(dir, sizeof dir, "%s", path);
	char *slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = 0;
		mkdir_p(dir, 0755);
	}
	int rc = atomic_write(path, b.p, b.len, 0644, (uid_t)-1, (gid_t)-1);
	buf_free(&b);
	return rc ? errf(err, "writing %s: %s", path, strerror(-rc)) : 0;
}

/* Applies everything it can; returns -1 with the last error in err when something failed. */
int netcfg_apply(const struct netcfg *c, const char *resolv_file, bool set_host, char *err)
{
	char e[ERRBUF];
	int rc = 0, idx;
	struct nl_sock *sk = nl_socket_alloc();
	if (!sk)
		return errf(err, "netlink: out of memory");
	int r = nl_connect(sk, NETLINK_ROUTE);
	if (r < 0) {
		nl_socket_free(sk);
		return errf(err, "netlink: %s", nl_geterror(r));
	}
#define STEP(call)                                                        \
	do {                                                              \
		if (call) {                                               \
			log_error("network", "error=\"%s\"", e);         \
			rc = errf(err, "%s", e);                          \
		}                                                         \
	} while (0)
	STEP(link_setup(sk, "lo", 0, &idx, e));
	for (int i = 0; i < c->nifs; i++) {
		const struct nc_if *f = &c->ifs[i];
		if (link_setup(sk, f->name, f->mtu, &idx, e)) {
			log_error("network", "error=\"%s\"", e);
			rc = errf(err, "%s", e);
			continue;
		}
		for (int k = 0; k < f->naddrs; k++)
			STEP(addr_add(sk, idx, f->name, f->addrs[k], e));
		if (*f->gw4)
			STEP(default_route(sk, idx, f->gw4, e));
		if (*f->gw6)
			STEP(default_route(sk, idx, f->gw6, e));
		log_info("interface configured", "name=%s addresses=%d mtu=%d", f->name, f->naddrs,
			 f->mtu);
	}
	nl_socket_free(sk);
	if (c->ndns || *c->search)
		STEP(write_resolv(c, resolv_file, e));
	if (set_host && *c->hostname && sethostname(c->hostname, strlen(c->hostname)))
		STEP(errf(e, "sethostname %s: %s", c->hostname, strerror(errno)));
#undef STEP
	return rc;
}

#else /* !CONFIG_INIT_NET: no libnl in the binary */
#include <sys/ioctl.h>
#include <sys/socket.h>

int netcfg_apply(const struct netcfg *c, const char *resolv_file, bool set_host, char *err)
{
	struct ifreq ifr = {0};
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "lo");
	if (fd >= 0 && !ioctl(fd, SIOCGIFFLAGS, &ifr)) {
		ifr.ifr_flags |= IFF_UP;
		ioctl(fd, SIOCSIFFLAGS, &ifr);
	}
	if (fd >= 0)
		close(fd);
	if (!netcfg_empty(c))
		return errf(err, "this stereo is built without CONFIG_INIT_NET: network configuration ignored");
	return 0;
}
#endif
