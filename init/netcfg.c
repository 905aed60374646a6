/* netcfg.c - what the guest's network should be, parsed from the kernel command line
 * (ip=CLIENT:SERVER:GW:NETMASK:HOSTNAME:DEV:AUTOCONF[:DNS0[:DNS1]], static only) and from
 * /etc/stereos/network (key=value, docs/init.md). No syscalls here: netlink.c applies the
 * result, and `stereo init --net-only --dry-run` prints it as JSON.
 */
#include "init/kvfile.h"
#include "init/netcfg.h"
#include <arpa/inet.h>
#include <ctype.h>

struct netcfg *netcfg_new(void) { return calloc(1, sizeof(struct netcfg)); }   /* NULL: ENOMEM */
void netcfg_free(struct netcfg *c) { free(c); }

bool netcfg_empty(const struct netcfg *c)
{
	return !c->nifs && !c->ndns && !*c->search && !*c->hostname;
}

static struct nc_if *get_if(struct netcfg *c, const char *name, char *err)
{
	for (int i = 0; i < c->nifs; i++)
		if (!strcmp(c->ifs[i].name, name))
			return &c->ifs[i];
	size_t n = strlen(name);
	if (!n || n >= IFNAMSIZ || strchr(name, '/') || strpbrk(name, " \t:"))
		return errf(err, "bad interface name '%s'", name), NULL;
	if (c->nifs == NC_IFS)
		return errf(err, "more than %d interfaces", NC_IFS), NULL;
	struct nc_if *f = &c->ifs[c->nifs++];
	memset(f, 0, sizeof *f);
	snprintf(f->name, sizeof f->name, "%s", name);
	return f;
}

/* AF_INET / AF_INET6 for a plain address, 0 when it is not one. */
int addr_family(const char *s)
{
	unsigned char b[16];
	if (inet_pton(AF_INET, s, b) == 1)
		return AF_INET;
	if (inet_pton(AF_INET6, s, b) == 1)
		return AF_INET6;
	return 0;
}

/* "ADDR/PREFIX" with the prefix in range for the family. */
static int check_cidr(const char *s, char *err)
{
	char a[NC_TEXT];
	const char *slash = strchr(s, '/');
	if (!slash || (size_t)(slash - s) >= sizeof a)
		return errf(err, "address '%s' needs a /PREFIX", s);
	snprintf(a, sizeof a, "%.*s", (int)(slash - s), s);
	int fam = addr_family(a);
	char *end;
	long p = strtol(slash + 1, &end, 10);
	if (!fam || *end || end == slash + 1 || p < 0 || p > (fam == AF_INET ? 32 : 128))
		return errf(err, "bad address '%s'", s);
	return 0;
}

static int add_addr(struct nc_if *f, const char *cidr, char *err)
{
	if (check_cidr(cidr, err))
		return -1;
	if (strlen(cidr) >= NC_TEXT)
		return errf(err, "address '%s' too long", cidr);
	for (int i = 0; i < f->naddrs; i++)
		if (!strcmp(f->addrs[i], cidr))
			return 0;
	if (f->naddrs == NC_ADDRS)
		return errf(err, "more than %d addresses on %s", NC_ADDRS, f->name);
	snprintf(f->addrs[f->naddrs++], NC_TEXT, "%s", cidr);
	return 0;
}

static int set_gateway(struct nc_if *f, const char *gw, char *err)
{
	int fam = addr_family(gw);
	if (!fam)
		return errf(err, "bad gateway '%s'", gw);
	snprintf(fam == AF_INET ? f->gw4 : f->gw6, NC_TEXT, "%s", gw);
	return 0;
}

static int add_dns(struct netcfg *c, const char *ip, char *err)
{
	if (!addr_family(ip))
		return errf(err, "bad dns server '%s'", ip);
	for (int i = 0; i < c->ndns; i++)
		if (!strcmp(c->dns[i], ip))
			return 0;
	if (c->ndns == NC_DNS)
		return errf(err, "more than %d dns servers", NC_DNS);
	snprintf(c->dns[c->ndns++], NC_TEXT, "%s", ip);
	return 0;
}

static int set_hostname(struct netcfg *c, const char *h, char *err)
{
	size_t n = strlen(h);
	if (!n || n > 64 || h[0] == '-' || h[0] == '.')
		return errf(err, "bad hostname '%s'", h);
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)h[i]) && h[i] != '-' && h[i] != '.')
			return errf(err, "bad hostname '%s'", h);
	snprintf(c->hostname, sizeof c->hostname, "%s", h);
	return 0;
}

/* Dotted netmask to a prefix length; -1 when not contiguous. */
static int mask_prefix(const char *m)
{
	struct in_addr a;
	if (inet_pton(AF_INET, m, &a) != 1)
		return -1;
	uint32_t v = ntohl(a.s_addr);
	int p = 0;
	while (p < 32 && (v & (0x80000000u >> p)))
		p++;
	return (p == 32 ? 0 : (v << p)) ? -1 : p;
}

/* One ip= value, the kernel's nfsroot.txt form. Only static configuration is supported. */
static int parse_ip_arg(struct netcfg *c, const char *v, char *err)
{
	if (!strcmp(v, "off") || !strcmp(v, "none"))
		return 0;
	char tmp[512], *f[10] = {0};
	if (strlen(v) >= sizeof tmp)
		return errf(err, "ip= too long");
	snprintf(tmp, sizeof tmp, "%s", v);
	char *p = tmp;
	int n = 0;
	while (p && n < 10) {
		f[n++] = p;
		p = strchr(p, ':');
		if (p)
			*p++ = 0;
	}
	for (int i = n; i < 10; i++)
		f[i] = "";
	const char *client = f[0], *gw = f[2], *mask = f[3], *host = f[4], *dev = f[5],
		   *autoconf = f[6];
	if (*autoconf && strcmp(autoconf, "off") && strcmp(autoconf, "none"))
		return errf(err, "ip=: autoconfiguration '%s' is not supported (static only)", autoconf);
	if (n == 1 || !*client)
		return errf(err, "ip=%s: a static CLIENT address is required (no DHCP)", v);
	struct in_addr ca;
	if (inet_pton(AF_INET, client, &ca) != 1)
		return errf(err, "ip=: bad client address '%s'", client);
	int prefix;
	if (*mask) {
		if ((prefix = mask_prefix(mask)) < 0)
			return errf(err, "ip=: bad netmask '%s'", mask);
	} else {
		/* the kernel's default: the address class */
		uint32_t a = ntohl(ca.s_addr);
		prefix = a < 0x80000000u ? 8 : a < 0xC0000000u ? 16 : 24;
	}
	struct nc_if *i = get_if(c, *dev ? dev : "eth0", err);
	if (!i)
		return -1;
	char cidr[NC_TEXT];
	snprintf(cidr, sizeof cidr, "%s/%d", client, prefix);
	if (add_addr(i, cidr, err))
		return -1;
	if (*gw && (addr_family(gw) != AF_INET || set_gateway(i, gw, err)))
		return errf(err, "ip=: bad gateway '%s'", gw);
	if (*host && set_hostname(c, host, err))
		return -1;
	for (int k = 7; k <= 8; k++)
		if (*f[k] && add_dns(c, f[k], err))
			return -1;
	return 0;
}

int netcfg_parse_cmdline(struct netcfg *c, const char *cmdline, char *err)
{
	/* the last ip= wins, as in the kernel */
	const char *last = NULL;
	size_t lastn = 0;
	for (const char *p = cmdline; *p;) {
		while (isspace((unsigned char)*p))
			p++;
		size_t n = strcspn(p, " \t\r\n");
		if (n > 3 && !strncmp(p, "ip=", 3)) {
			last = p + 3;
			lastn = n - 3;
		}
		p += n;
	}
	if (!last)
		return 0;
	char v[512];
	if (lastn >= sizeof v)
		return errf(err, "ip= too long");
	snprintf(v, sizeof v, "%.*s", (int)lastn, last);
	return parse_ip_arg(c, v, err);
}

int netcfg_parse_file(struct netcfg *c, const char *text, size_t len, const char *path, char *err)
{
	struct nc_if *cur = NULL;
	char msg[ERRBUF];
	struct kv_iter it;
	char *s, *v;
	int r;
	kv_init(&it, text, len, path);
	while ((r = kv_next(&it, &s, &v, err)) == 1) {
		int lineno = it.lineno;
		int rc = 0;
		if (!strcmp(s, "interface")) {
			rc = (cur = get_if(c, v, msg)) ? 0 : -1;
		} else if (!strcmp(s, "address") || !strcmp(s, "mtu") || !strcmp(s, "gateway")) {
			if (!cur)
				return errf(err, "%s:%d: %s before any interface=", path, lineno, s);
			if (*s == 'a') {
				rc = add_addr(cur, v, msg);
			} else if (*s == 'g') {
				rc = set_gateway(cur, v, msg);
			} else {
				char *end2;
				long m = strtol(v, &end2, 10);
				if (*end2 || end2 == v || m < 68 || m > 65535)
					rc = errf(msg, "bad mtu '%s' (68..65535)", v);
				else
					cur->mtu = m;
			}
		} else if (!strcmp(s, "dns")) {
			rc = add_dns(c, v, msg);
		} else if (!strcmp(s, "search")) {
			if (strlen(v) >= sizeof c->search || strpbrk(v, "\"\\"))
				rc = errf(msg, "bad search '%s'", v);
			else
				snprintf(c->search, sizeof c->search, "%s", v);
		} else if (!strcmp(s, "hostname")) {
			rc = set_hostname(c, v, msg);
		} else {
			rc = errf(msg, "unknown key '%s'", s);
		}
		if (rc)
			return errf(err, "%s:%d: %s", path, lineno, msg);
	}
	return r;
}

void netcfg_json(const struct netcfg *c, struct buf *out)
{
	struct jw w;
	jw_init(&w, out);
	jw_obj(&w);
	jw_key(&w, "interfaces");
	jw_arr(&w);
	for (int i = 0; i < c->nifs; i++) {
		const struct nc_if *f = &c->ifs[i];
		jw_obj(&w);
		jw_kstr(&w, "name", f->name);
		jw_key(&w, "addresses");
		jw_arr(&w);
		for (int k = 0; k < f->naddrs; k++)
			jw_str(&w, f->addrs[k]);
		jw_arr_end(&w);
		if (f->mtu)
			jw_kint(&w, "mtu", f->mtu);
		if (*f->gw4)
			jw_kstr(&w, "gateway", f->gw4);
		if (*f->gw6)
			jw_kstr(&w, "gateway6", f->gw6);
		jw_obj_end(&w);
	}
	jw_arr_end(&w);
	jw_key(&w, "dns");
	jw_arr(&w);
	for (int i = 0; i < c->ndns; i++)
		jw_str(&w, c->dns[i]);
	jw_arr_end(&w);
	if (*c->search)
		jw_kstr(&w, "search", c->search);
	if (*c->hostname)
		jw_kstr(&w, "hostname", c->hostname);
	jw_obj_end(&w);
	buf_putc(out, '\n');
}

