/* netcfg.h - the parsed network configuration, shared by netcfg.c (parsing) and netlink.c
 * (applying it). Fixed sizes: nothing here grows with the input. */
#ifndef STEREO_INIT_NETCFG_H
#define STEREO_INIT_NETCFG_H
#include "init/init.h"
#include <net/if.h>

#define NC_IFS 8
#define NC_ADDRS 8
#define NC_DNS 3        /* glibc's MAXNS */
#define NC_TEXT 64      /* an address with its prefix */

struct nc_if {
	char name[IFNAMSIZ];
	char addrs[NC_ADDRS][NC_TEXT];
	int naddrs;
	int mtu;
	char gw4[NC_TEXT], gw6[NC_TEXT];
};

struct netcfg {
	struct nc_if ifs[NC_IFS];
	int nifs;
	char dns[NC_DNS][NC_TEXT];
	int ndns;
	char search[256];
	char hostname[65];
};

/* AF_INET / AF_INET6 for a plain address, 0 when it is not one. */
int addr_family(const char *s);
#endif
