/* fuzz_init_conf.c - libFuzzer target for init's three text parsers: the service file
 * (svconf.c), the network file and the kernel command line's ip= (netcfg.c). The first byte
 * picks the parser. Checks: a parsed service has an exec and argv/env inside its own string
 * storage (also after svconf_copy), and a parsed network prints as valid JSON. */
#include "init/svconf.c"
#include "init/netcfg.c"
#include "init/kvfile.c"

static bool inside(const struct svc_def *d, const char *p)
{
	return p >= d->str && p < d->str + sizeof d->str;
}

static void check_def(const struct svc_def *d)
{
	if (d->nargv < 1 || d->argv[d->nargv] || !*d->name)
		__builtin_trap();
	for (int i = 0; i < d->nargv; i++)
		if (!inside(d, d->argv[i]))
			__builtin_trap();
	for (int i = 0; i < d->nenv; i++)
		if (!inside(d, d->env[i]) || !strchr(d->env[i], '='))
			__builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	char err[ERRBUF];
	const char *text = (const char *)data + 1;
	size_t len = size - 1;
	switch (data[0] % 3) {
	case 0: {
		static struct svc_def d, copy;
		if (!svconf_parse(&d, "fuzz", text, len, "fuzz.conf", "/nonexistent/passwd", err)) {
			check_def(&d);
			svconf_copy(&copy, &d);
			check_def(&copy);
		}
		break;
	}
	case 1:
	case 2: {
		struct netcfg *c = netcfg_new();
		int rc;
		if (data[0] % 3 == 1) {
			rc = netcfg_parse_file(c, text, len, "network", err);
		} else {
			char *s = strndup(text, len);
			rc = netcfg_parse_cmdline(c, s, err);
			free(s);
		}
		struct buf b = {0};
		netcfg_json(c, &b);
		if (json_validate(b.p, b.len - 1, err))
			__builtin_trap();
		(void)rc;
		buf_free(&b);
		netcfg_free(c);
		break;
	}
	}
	return 0;
}
