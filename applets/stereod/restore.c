/* restore.c - the one recovery pipeline after a VM restore, host-announced (`restored`) or
 * detected (snapshot.c): step the wall clock, add host entropy and reseed the CRNG, thaw
 * (the thaw hooks then see the right time and a fresh RNG), write the new generation, set
 * hostname and machine-id, reconfigure the network over rtnetlink, then let stereod close
 * stale connections and push lifecycle.
 *
 * Every step runs even when an earlier one failed, and each is reported in the reply's
 * "steps" array. The network step talks rtnetlink directly (a few messages, no libnl) so
 * stereod does not depend on init's build options.
 */
#include "applets/stereod/snapshot.h"
#include "common/peer.h"
#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <linux/random.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CLOCK_SKEW_NS 100000000LL       /* step the wall clock beyond 100 ms of skew */
#define MAX_ENTROPY 4096                 /* decoded bytes */
#define MAX_ADDRS 16
#define MAX_ROUTES 32

/* ---- input ---------------------------------------------------------------------------------- */
static bool valid_hostname(const char *h)
{
	size_t n = strlen(h);
	if (n == 0 || n > 64 || h[0] == '-' || h[0] == '.' || h[n - 1] == '.' || h[n - 1] == '-')
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = h[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			  c == '-' || (c == '.' && h[i + 1] != '.' && h[i + 1] != '-');
		if (!ok)
			return false;
	}
	return true;
}

/* Lower-case 32 hex digits, not all zero (systemd's machine-id(5) rules). */
static int machine_id_norm(const char *in, char *out)
{
	bool nonzero = false;
	if (strlen(in) != 32)
		return -1;
	for (int i = 0; i < 32; i++) {
		char c = in[i];
		if (c >= 'A' && c <= 'F')
			c += 'a' - 'A';
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			return -1;
		nonzero |= c != '0';
		out[i] = c;
	}
	out[32] = 0;
	return nonzero ? 0 : -1;
}

/* Copy a string field into out (size outsz); -1 with err naming the field. */
static int get_str(const struct json *j, int obj, const char *key, char *out, size_t outsz,
		   bool *present, char *err)
{
	int t = json_get(j, obj, key);
	struct buf b = {0};
	char why[ERRBUF];
	*present = t >= 0;
	if (t < 0)
		return 0;
	if (json_str(j, t, &b, JSON_STR_NO_NUL, why) || b.len >= outsz) {
		buf_free(&b);
		return errf(err, "%s must be a string of at most %zu bytes", key, outsz - 1);
	}
	memcpy(out, buf_cstr(&b), b.len + 1);
	buf_free(&b);
	return 0;
}

enum snap_rc restore_parse(const struct json *j, int payload, struct restore_req *r, char *err)
{
	int t;
	bool have;
	char tmp[65], berr[ERRBUF] = "";
	memset(r, 0, sizeof *r);
	r->network = -1;
	r->j = j;
	if (payload < 0 || json_kind(j, payload) != JSON_OBJECT)
		return errf(err, "payload {wall_clock_ns, entropy_b64, ...} is required"), SNAP_INVALID;
	if ((t = json_get(j, payload, "wall_clock_ns")) < 0 || json_i64(j, t, &r->wall_clock_ns) ||
	    r->wall_clock_ns <= 0)
		return errf(err, "wall_clock_ns must be a positive integer (ns since the epoch)"),
		       SNAP_INVALID;
	r->have_clock = true;
	if ((t = json_get(j, payload, "entropy_b64")) < 0 || json_kind(j, t) != JSON_STRING ||
	    j->tok[t].end - j->tok[t].start > MAX_ENTROPY * 4 / 3 + 4 ||
	    base64_decode(j->s + j->tok[t].start, j->tok[t].end - j->tok[t].start, &r->entropy, berr))
		return buf_wipe(&r->entropy),
		       errf(err, "entropy_b64 must be padded base64 of at most %d bytes%s%s", MAX_ENTROPY,
			    berr[0] ? ": " : "", berr),
		       SNAP_INVALID;
	if ((t = json_get(j, payload, "generation")) >= 0) {
		if (json_u64(j, t, &r->generation))
			goto bad_generation;
		r->have_generation = true;
	}
	if (get_str(j, payload, "hostname", r->hostname, sizeof r->hostname, &have, err))
		goto invalid;
	if (have && !valid_hostname(r->hostname)) {
		errf(err, "hostname: letters, digits, '-' and '.' only, 1-64 bytes");
		goto invalid;
	}
	if (get_str(j, payload, "machine_id", tmp, sizeof tmp, &have, err))
		goto invalid;
	if (have && machine_id_norm(tmp, r->machine_id)) {
		errf(err, "machine_id must be 32 hex digits, not all zero");
		goto invalid;
	}
	if ((t = json_get(j, payload, "network")) >= 0) {
		if (net_validate(j, t, err))
			goto invalid;
		r->network = t;
	}
	return SNAP_OK;
bad_generation:
	errf(err, "generation must be a non-negative integer");
invalid:
	buf_wipe(&r->entropy);
	return SNAP_INVALID;
}

/* ---- steps ------------------------------------------------------------------------------------ */
static void step_clock(struct snapshot *s, int64_t target, struct steps *st)
{
	char why[ERRBUF] = "";
	int64_t skew = target - snap_clock_ns(s, CLOCK_REALTIME);
	bool step = llabs(skew) > CLOCK_SKEW_NS;
	step_begin(st, "clock");
	jw_kint(st->w, "skew_ms", (long long)(skew / 1000000));
	if (step && snap_clock_step(s, target, why))
		step = false;
	jw_kbool(st->w, "stepped", step);
	snap_detect_rebase(s);    /* our own step is not a restore */
	step_end(st, "clock", why[0] ? -1 : 0, why);
}

/* RNDADDENTROPY credits the host's bytes, RNDRESEEDCRNG makes the CRNG use them now (both
 * need CAP_SYS_ADMIN). A detected restore has no host bytes and only reseeds. */
static void step_entropy(struct snapshot *s, struct buf *e, struct steps *st)
{
	char path[768], why[ERRBUF] = "";
	step_begin(st, "entropy");
	jw_kint(st->w, "bytes", (long long)e->len);
	int fd = -1;
	if (snap_path(s, "/dev/random", path, sizeof path))
		snprintf(why, sizeof why, "path too long");
	else if ((fd = open(path, O_WRONLY | O_CLOEXEC)) < 0)
		snprintf(why, sizeof why, "open /dev/random: %s", strerror(errno));
	if (fd >= 0 && e->len) {
		struct rand_pool_info *p = calloc(1, sizeof *p + e->len + 4);
		if (!p) {
			snprintf(why, sizeof why, "out of memory");
		} else {
			p->entropy_count = (int)e->len * 8;
			p->buf_size = (int)e->len;
			memcpy(p->buf, e->p, e->len);
			if (ioctl(fd, RNDADDENTROPY, p))
				snprintf(why, sizeof why, "RNDADDENTROPY: %s", strerror(errno));
			explicit_bzero(p->buf, e->len);
			free(p);
		}
	}
	bool reseeded = fd >= 0 && ioctl(fd, RNDRESEEDCRNG) == 0;
	if (fd >= 0 && !reseeded && !why[0])
		snprintf(why, sizeof why, "RNDRESEEDCRNG: %s", strerror(errno));
	jw_kbool(st->w, "reseeded", reseeded);
	struct buf avail = {0};
	if (read_file("/proc/sys/kernel/random/entropy_avail", &avail, 32) == 0)
		jw_kint(st->w, "entropy_avail", atoll(buf_cstr(&avail)));
	buf_free(&avail);
	if (fd >= 0)
		close(fd);
	step_end(st, "entropy", why[0] ? -1 : 0, why);
}

static int write_under_root(struct snapshot *s, const char *path, const char *data, mode_t mode,
			    char *why)
{
	char full[768];
	if (snap_path(s, path, full, sizeof full))
		return errf(why, "path too long");
	char dir[768];
	snprintf(dir, sizeof dir, "%s", full);
	*strrchr(dir, '/') = 0;
	int rc = mkdir_p(dir, 0755);
	if (!rc)
		rc = atomic_write(full, data, strlen(data), mode, (uid_t)-1, (gid_t)-1);
	return rc ? errf(why, "writing %s: %s", path, strerror(-rc)) : 0;
}

static void step_generation(struct snapshot *s, const struct restore_req *r, struct steps *st)
{
	char why[ERRBUF] = "", line[32];
	uint64_t prev = s->generation;
	s->generation = r->have_generation ? r->generation : prev + 1;
	step_begin(st, "generation");
	jw_kint(st->w, "generation", (long long)s->generation);
	jw_kint(st->w, "previous", (long long)prev);
	snprintf(line, sizeof line, "%llu\n", (unsigned long long)s->generation);
	int rc = write_under_root(s, "/run/stereos/generation", line, 0644, why);
	step_end(st, "generation", rc, why);
}

static void step_hostname(struct snapshot *s, const char *name, struct steps *st)
{
	char why[ERRBUF] = "", line[80];
	step_begin(st, "hostname");
	jw_kstr(st->w, "hostname", name);
	snprintf(line, sizeof line, "%s\n", name);
	int rc = write_under_root(s, "/etc/hostname", line, 0644, why);
	if (sethostname(name, strlen(name))) {
		int n = strlen(why);
		snprintf(why + n, sizeof why - n, "%ssethostname: %s", n ? "; " : "", strerror(errno));
		rc = -1;
	}
	step_end(st, "hostname", rc, why);
}

static void step_machine_id(struct snapshot *s, const char *id, struct steps *st)
{
	char why[ERRBUF] = "", line[40];
	step_begin(st, "machine_id");
	snprintf(line, sizeof line, "%s\n", id);
	int rc = write_under_root(s, "/etc/machine-id", line, 0444, why);
	step_end(st, "machine_id", rc, why);
}

void restore_steps(struct snapshot *s, struct restore_req *r, const char *source, struct steps *st)
{
	struct jw *w = st->w;
	jw_kstr(w, "source", source);
	jw_key(w, "steps");
	jw_arr(w);
	/* the clock and the RNG first: the thaw hooks of a restored clone must see the host's
	 * time and entropy no other clone has (neither step writes to a filesystem, so a frozen
	 * one cannot block them) */
	if (r->have_clock)
		step_clock(s, r->wall_clock_ns, st);
	step_entropy(s, &r->entropy, st);
	buf_wipe(&r->entropy);
	snapshot_thaw_all(s, st);
	step_generation(s, r, st);
	if (r->hostname[0])
		step_hostname(s, r->hostname, st);
	if (r->machine_id[0])
		step_machine_id(s, r->machine_id, st);
	if (r->network >= 0)
		net_apply(r->j, r->network, st);
}

enum snap_rc restore_finish(struct snapshot *s, const char *source, void *keep, struct steps *st,
			    char *err)
{
	struct jw *w = st->w;
	if (s->restored) {
		step_begin(st, "connections");
		int closed = s->restored(s->ctx, source, s->generation, keep);
		jw_kint(w, "closed", closed < 0 ? 0 : closed);
		step_end(st, "connections", closed < 0 ? -1 : 0, "closing stale connections failed");
	}
	jw_arr_end(w);
	jw_kint(w, "generation", (long long)s->generation);
	s->restores++;
	s->last_restore_ms = now_ms();
	snap_detect_rebase(s);
	enum snap_rc rc = steps_result(st, err);
	log_info("restored", "source=%s generation=%llu failed=%s", source,
		 (unsigned long long)s->generation, rc == SNAP_OK ? "none" : err);
	return rc;
}

/* ---- network over rtnetlink ---------------------------------------------------------------- */
struct cidr {
	int family;
	unsigned char addr[16];
	int prefix;
};

/* "10.0.0.2/24", "fd00::2/64", a bare address (prefix = full length; common/peer.c parses
 * these) or "default". */
static int parse_cidr(const char *s, struct cidr *c)
{
	memset(c, 0, sizeof *c);
	if (!strcmp(s, "default")) {
		c->family = AF_UNSPEC;
		return 0;
	}
	struct peer_cidr p;
	if (peer_parse_cidr(s, strlen(s), &p))
		return -1;
	c->family = p.family;
	memcpy(c->addr, p.addr, sizeof c->addr);
	c->prefix = (int)p.bits;
	return 0;
}

static int parse_mac(const char *s, unsigned char mac[6])
{
	unsigned v[6];
	char tail;
	if (sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
		   &tail) != 6 || strlen(s) != 17)
		return -1;
	for (int i = 0; i < 6; i++)
		mac[i] = (unsigned char)v[i];
	return mac[0] & 1 ? -1 : 0;      /* a multicast address cannot be a NIC's */
}

/* The string at obj[key] or NULL; out owns it. */
static const char *jstr(const struct json *j, int obj, const char *key, struct buf *out)
{
	int t = json_get(j, obj, key);
	char why[ERRBUF];
	out->len = 0;
	if (t < 0 || json_str(j, t, out, JSON_STR_NO_NUL, why))
		return NULL;
	return buf_cstr(out);
}

int net_validate(const struct json *j, int net, char *err)
{
	struct buf b = {0};
	struct cidr c;
	unsigned char mac[6];
	uint64_t mtu;
	int t, rc = -1;
	if (json_kind(j, net) != JSON_OBJECT)
		return errf(err, "network must be an object");
	const char *ifname = jstr(j, net, "interface", &b);
	if (!ifname || !*ifname || strlen(ifname) >= IFNAMSIZ || strchr(ifname, '/')) {
		errf(err, "network.interface must be an interface name");
		goto out;
	}
	if ((t = json_get(j, net, "mac")) >= 0 &&
	    (!jstr(j, net, "mac", &b) || parse_mac(buf_cstr(&b), mac))) {
		errf(err, "network.mac must be a unicast MAC like 02:fc:00:00:00:05");
		goto out;
	}
	if ((t = json_get(j, net, "mtu")) >= 0 && (json_u64(j, t, &mtu) || mtu < 68 || mtu > 65535)) {
		errf(err, "network.mtu must be an integer 68..65535");
		goto out;
	}
	if ((t = json_get(j, net, "gateway")) >= 0 &&
	    (!jstr(j, net, "gateway", &b) || parse_cidr(buf_cstr(&b), &c) || c.family == AF_UNSPEC ||
	     strchr(buf_cstr(&b), '/'))) {
		errf(err, "network.gateway must be an IP address");
		goto out;
	}
	if ((t = json_get(j, net, "addresses")) >= 0) {
		if (json_kind(j, t) != JSON_ARRAY || j->tok[t].size > MAX_ADDRS) {
			errf(err, "network.addresses must be an array of at most %d CIDRs", MAX_ADDRS);
			goto out;
		}
		for (int i = 0; i < j->tok[t].size; i++) {
			char why[ERRBUF];
			b.len = 0;
			if (json_str(j, json_array_item(j, t, i), &b, JSON_STR_NO_NUL, why) ||
			    parse_cidr(buf_cstr(&b), &c) || c.family == AF_UNSPEC) {
				errf(err, "network.addresses[%d] must be an address/prefix", i);
				goto out;
			}
		}
	}
	if ((t = json_get(j, net, "routes")) >= 0) {
		if (json_kind(j, t) != JSON_ARRAY || j->tok[t].size > MAX_ROUTES) {
			errf(err, "network.routes must be an array of at most %d routes", MAX_ROUTES);
			goto out;
		}
		for (int i = 0; i < j->tok[t].size; i++) {
			int r = json_array_item(j, t, i);
			struct cidr via;
			if (json_kind(j, r) != JSON_OBJECT || !jstr(j, r, "dst", &b) ||
			    parse_cidr(buf_cstr(&b), &c) ||
			    (json_get(j, r, "via") >= 0 &&
			     (!jstr(j, r, "via", &b) || parse_cidr(buf_cstr(&b), &via) ||
			      via.family == AF_UNSPEC))) {
				errf(err, "network.routes[%d] must be {dst: CIDR or \"default\", "
				     "via?: IP}", i);
				goto out;
			}
		}
	}
	rc = 0;
out:
	buf_free(&b);
	return rc;
}

struct nlreq {
	struct nlmsghdr h;
	char body[512];
};

static void nl_attr(struct nlreq *r, int type, const void *data, size_t len)
{
	struct rtattr *a = (struct rtattr *)((char *)&r->h + NLMSG_ALIGN(r->h.nlmsg_len));
	a->rta_type = type;
	a->rta_len = RTA_LENGTH(len);
	memcpy(RTA_DATA(a), data, len);
	r->h.nlmsg_len = NLMSG_ALIGN(r->h.nlmsg_len) + RTA_ALIGN(a->rta_len);
}

static int nl_open(void)
{
	int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	struct timeval tv = {.tv_sec = 2};
	if (fd >= 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	return fd < 0 ? -errno : fd;
}

/* Send one request with NLM_F_ACK; 0 or the kernel's -errno. */
static int nl_talk(int fd, struct nlreq *r)
{
	static unsigned seq;
	r->h.nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
	r->h.nlmsg_seq = ++seq;
	if (send(fd, r, r->h.nlmsg_len, 0) < 0)
		return -errno;
	char buf[8192];
	for (;;) {
		ssize_t n = recv(fd, buf, sizeof buf, 0);
		if (n < 0)
			return errno == EAGAIN ? -ETIMEDOUT : -errno;
		for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)n);
		     h = NLMSG_NEXT(h, n)) {
			if (h->nlmsg_seq != r->h.nlmsg_seq || h->nlmsg_type != NLMSG_ERROR)
				continue;
			return ((struct nlmsgerr *)NLMSG_DATA(h))->error;
		}
	}
}

static int link_set(int fd, int idx, unsigned flags, unsigned change, const unsigned char *mac,
		    uint32_t mtu)
{
	struct nlreq r = {0};
	r.h.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifinfomsg));
	r.h.nlmsg_type = RTM_NEWLINK;
	struct ifinfomsg *ifi = NLMSG_DATA(&r.h);
	ifi->ifi_family = AF_UNSPEC;
	ifi->ifi_index = idx;
	ifi->ifi_flags = flags;
	ifi->ifi_change = change;
	if (mac)
		nl_attr(&r, IFLA_ADDRESS, mac, 6);
	if (mtu)
		nl_attr(&r, IFLA_MTU, &mtu, sizeof mtu);
	return nl_talk(fd, &r);
}

static int addr_change(int fd, int type, int idx, const struct cidr *c, unsigned char scope)
{
	struct nlreq r = {0};
	r.h.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifaddrmsg));
	r.h.nlmsg_type = type;
	if (type == RTM_NEWADDR)
		r.h.nlmsg_flags = NLM_F_CREATE | NLM_F_REPLACE;
	struct ifaddrmsg *ifa = NLMSG_DATA(&r.h);
	ifa->ifa_family = c->family;
	ifa->ifa_prefixlen = c->prefix;
	ifa->ifa_index = idx;
	ifa->ifa_scope = scope;
	size_t alen = c->family == AF_INET ? 4 : 16;
	nl_attr(&r, IFA_LOCAL, c->addr, alen);
	if (c->family == AF_INET || type == RTM_DELADDR)
		nl_attr(&r, IFA_ADDRESS, c->addr, alen);
	return nl_talk(fd, &r);
}

/* Delete every global-scope address of idx; returns how many failed (-errno on a dump error). */
static int addr_flush(int fd, int idx)
{
	struct nlreq r = {0};
	struct cidr old[64];
	int nold = 0, failed = 0;
	r.h.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifaddrmsg));
	r.h.nlmsg_type = RTM_GETADDR;
	r.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
	r.h.nlmsg_seq = 0x5a5a;
	if (send(fd, &r, r.h.nlmsg_len, 0) < 0)
		return -errno;
	char buf[16384];
	bool done = false;
	while (!done) {
		ssize_t n = recv(fd, buf, sizeof buf, 0);
		if (n < 0)
			return -errno;
		for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)n);
		     h = NLMSG_NEXT(h, n)) {
			if (h->nlmsg_type == NLMSG_DONE || h->nlmsg_type == NLMSG_ERROR) {
				done = true;
				break;
			}
			struct ifaddrmsg *ifa = NLMSG_DATA(h);
			if (h->nlmsg_type != RTM_NEWADDR || (int)ifa->ifa_index != idx ||
			    ifa->ifa_scope != RT_SCOPE_UNIVERSE || nold == (int)ARRAY_SIZE(old))
				continue;
			int len = IFA_PAYLOAD(h);
			for (struct rtattr *a = IFA_RTA(ifa); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
				if (a->rta_type != IFA_LOCAL && !(a->rta_type == IFA_ADDRESS &&
								  ifa->ifa_family == AF_INET6))
					continue;
				struct cidr *c = &old[nold++];
				c->family = ifa->ifa_family;
				c->prefix = ifa->ifa_prefixlen;
				memcpy(c->addr, RTA_DATA(a), ifa->ifa_family == AF_INET ? 4 : 16);
				break;
			}
		}
	}
	for (int i = 0; i < nold; i++)
		if (addr_change(fd, RTM_DELADDR, idx, &old[i], RT_SCOPE_UNIVERSE))
			failed++;
	return failed;
}

static int route_add(int fd, int idx, const struct cidr *dst, const struct cidr *via)
{
	struct nlreq r = {0};
	int family = dst->family != AF_UNSPEC ? dst->family : via ? via->family : AF_INET;
	size_t alen = family == AF_INET ? 4 : 16;
	r.h.nlmsg_len = NLMSG_LENGTH(sizeof(struct rtmsg));
	r.h.nlmsg_type = RTM_NEWROUTE;
	r.h.nlmsg_flags = NLM_F_CREATE | NLM_F_REPLACE;
	struct rtmsg *rt = NLMSG_DATA(&r.h);
	rt->rtm_family = family;
	rt->rtm_dst_len = dst->family == AF_UNSPEC ? 0 : dst->prefix;
	rt->rtm_table = RT_TABLE_MAIN;
	rt->rtm_protocol = RTPROT_STATIC;
	rt->rtm_scope = via ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK;
	rt->rtm_type = RTN_UNICAST;
	if (dst->family != AF_UNSPEC)
		nl_attr(&r, RTA_DST, dst->addr, alen);
	if (via)
		nl_attr(&r, RTA_GATEWAY, via->addr, alen);
	uint32_t oif = idx;
	nl_attr(&r, RTA_OIF, &oif, sizeof oif);
	return nl_talk(fd, &r);
}

/* Three steps: network_link (mac, mtu, up), network_addresses, network_routes. */
void net_apply(const struct json *j, int net, struct steps *st)
{
	struct buf b = {0}, v = {0};
	char ifname[IFNAMSIZ], why[ERRBUF] = "";
	unsigned char mac[6];
	uint64_t mtu = 0;
	int t, rc, idx = 0;
	snprintf(ifname, sizeof ifname, "%s", jstr(j, net, "interface", &b));
	int fd = nl_open();

	step_begin(st, "network_link");
	jw_kstr(st->w, "interface", ifname);
	bool want_mac = jstr(j, net, "mac", &b) && !parse_mac(buf_cstr(&b), mac);
	if ((t = json_get(j, net, "mtu")) >= 0)
		json_u64(j, t, &mtu);
	if (fd < 0)
		snprintf(why, sizeof why, "netlink: %s", strerror(-fd));
	else if (!(idx = (int)if_nametoindex(ifname)))
		snprintf(why, sizeof why, "no interface %s", ifname);
	else if ((rc = link_set(fd, idx, IFF_UP, IFF_UP, want_mac ? mac : NULL, (uint32_t)mtu))) {
		/* some drivers change the MAC only while the link is down */
		if (rc == -EBUSY && want_mac && !link_set(fd, idx, 0, IFF_UP, NULL, 0))
			rc = link_set(fd, idx, IFF_UP, IFF_UP, mac, (uint32_t)mtu);
		if (rc)
			snprintf(why, sizeof why, "setting link: %s", strerror(-rc));
	}
	step_end(st, "network_link", why[0] ? -1 : 0, why);

	if ((t = json_get(j, net, "addresses")) >= 0) {
		why[0] = 0;
		step_begin(st, "network_addresses");
		if (!idx) {
			snprintf(why, sizeof why, "no usable interface");
		} else if ((rc = addr_flush(fd, idx))) {
			snprintf(why, sizeof why, "removing old addresses: %s",
				 rc < 0 ? strerror(-rc) : "some failed");
		}
		for (int i = 0; idx && i < j->tok[t].size; i++) {
			struct cidr c;
			char e2[ERRBUF];
			v.len = 0;
			json_str(j, json_array_item(j, t, i), &v, JSON_STR_NO_NUL, e2);
			parse_cidr(buf_cstr(&v), &c);
			if ((rc = addr_change(fd, RTM_NEWADDR, idx, &c, RT_SCOPE_UNIVERSE))) {
				int n = strlen(why);
				snprintf(why + n, sizeof why - n, "%sadding %s: %s", n ? "; " : "",
					 buf_cstr(&v), strerror(-rc));
			}
		}
		step_end(st, "network_addresses", why[0] ? -1 : 0, why);
	}

	int routes = json_get(j, net, "routes");
	bool gw = json_get(j, net, "gateway") >= 0;
	if (routes >= 0 || gw) {
		why[0] = 0;
		step_begin(st, "network_routes");
		int n = routes >= 0 ? j->tok[routes].size : 0;
		for (int i = -1; idx && i < n; i++) {
			struct cidr dst, via;
			bool has_via;
			if (i < 0) {            /* "gateway": the default route */
				if (!gw)
					continue;
				parse_cidr("default", &dst);
				parse_cidr(jstr(j, net, "gateway", &v), &via);
				has_via = true;
			} else {
				int r = json_array_item(j, routes, i);
				parse_cidr(jstr(j, r, "dst", &v), &dst);
				has_via = jstr(j, r, "via", &v) && !parse_cidr(buf_cstr(&v), &via);
			}
			if ((rc = route_add(fd, idx, &dst, has_via ? &via : NULL))) {
				int k = strlen(why);
				if (i < 0)
					snprintf(why + k, sizeof why - k, "%sgateway: %s",
						 k ? "; " : "", strerror(-rc));
				else
					snprintf(why + k, sizeof why - k, "%sroutes[%d]: %s",
						 k ? "; " : "", i, strerror(-rc));
			}
		}
		if (!idx)
			snprintf(why, sizeof why, "no usable interface");
		step_end(st, "network_routes", why[0] ? -1 : 0, why);
	}
	if (fd >= 0)
		close(fd);
	buf_free(&b);
	buf_free(&v);
}
