/* main.c - the multiplexer: picks the applet from basename(argv[0]) or from argv[1], and
 * implements --list, --install [-s] DIR, --help [APPLET] and --version.
 * The applet table comes from generated/applets.h (scripts/gen-applets.sh). */
#include "common/stereo.h"
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include "applet_protos.h"
#include "help.h"

struct applet {
	const char *name;
	int (*main)(int argc, char **argv);
	const char *help;
};

static const struct applet applets[] = {
#define APPLET(n, fn, h) {n, fn, h},
#include "applets.h"
#undef APPLET
	{NULL, NULL, NULL},
};

static const struct applet *find_applet(const char *name)
{
	for (size_t i = 0; applets[i].name; i++)
		if (!strcmp(applets[i].name, name))
			return &applets[i];
	return NULL;
}

const char *applet_help(const char *name)
{
	const struct applet *a = find_applet(name);
	return a ? a->help : "";
}

/* The text of one help line from s up to its end or to a gap of two spaces (where the
 * description starts), appended to out. */
static const char *usage_part(const char *s, struct buf *out)
{
	const char *eol = strchrnul(s, '\n'), *gap = memmem(s, (size_t)(eol - s), "  ", 2);
	buf_append(out, s, (size_t)((gap ? gap : eol) - s));
	return *eol ? eol + 1 : eol;
}

int usage_cmd(const char *cmd)
{
	size_t cl = strlen(cmd);
	for (const char *p = applet_help(prog); *p;) {
		const char *s = p + strspn(p, " ");
		size_t indent = (size_t)(s - p);
		if (strncmp(s, cmd, cl) || (s[cl] != ' ' && s[cl] != '\n' && s[cl])) {
			p = strchrnul(p, '\n');
			p += *p == '\n';
			continue;
		}
		struct buf u = {0};
		p = usage_part(s, &u);
		for (;;) {   /* options wrapped onto deeper-indented lines */
			const char *t = p + strspn(p, " ");
			if ((size_t)(t - p) <= indent || (*t != '[' && *t != '-'))
				break;
			buf_putc(&u, ' ');
			p = usage_part(t, &u);
		}
		int rc = usage_error("usage: %s %s", prog, buf_cstr(&u));
		buf_free(&u);
		return rc;
	}
	return usage_error("usage: %s %s ...", prog, cmd);
}

static void list_applets(FILE *f, const char *sep)
{
	for (size_t i = 0; applets[i].name; i++)
		fprintf(f, "%s%s", applets[i].name, sep);
}

static int stereo_usage(FILE *f, int code)
{
	fprintf(f, "stereo %s - the microVM sandbox toolbox in one binary\n\n"
		   "usage: stereo APPLET [ARGS...]   (or call it through a link named APPLET)\n"
		   "       stereo --list | --version | --help [APPLET]\n"
		   "       stereo --install [-s] DIR\n\n"
		   "Applets: ", STEREO_VERSION);
	list_applets(f, " ");
	fprintf(f, "\n\nExit codes: 0 ok, 1 failed, 2 usage, 3 cannot connect or timed out.\n");
	return code;
}

/* busybox --install: a hard link (or with -s a symlink) per applet in DIR. Links we own
 * (pointing at this binary) are replaced; a foreign file is left alone and reported. */
static int install_links(int argc, char **argv)
{
	bool sym = false;
	int i = 2;
	if (i < argc && !strcmp(argv[i], "-s")) {
		sym = true;
		i++;
	}
	if (i != argc - 1)
		return usage_error("--install needs exactly one DIR");
	const char *dir = argv[i];
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
	if (n <= 0)
		die_sys(EXIT_FAIL, "--install: reading /proc/self/exe");
	self[n] = 0;
	if (mkdir(dir, 0755) && errno != EEXIST)
		die_sys(EXIT_FAIL, "--install: creating %s", dir);
	struct stat me;
	if (stat(self, &me))
		die_sys(EXIT_FAIL, "--install: stat %s", self);
	int rc = EXIT_OK;
	for (size_t k = 0; applets[k].name; k++) {
		char path[PATH_MAX];
		snprintf(path, sizeof path, "%s/%s", dir, applets[k].name);
		struct stat st;
		if (!lstat(path, &st)) {
			struct stat tgt;
			bool ours = !stat(path, &tgt) && tgt.st_ino == me.st_ino && tgt.st_dev == me.st_dev;
			char l[PATH_MAX];
			ssize_t ln = S_ISLNK(st.st_mode) ? readlink(path, l, sizeof l - 1) : -1;
			if (ln > 0) {
				l[ln] = 0;
				ours = ours || !strcmp(basename(l), "stereo");
			}
			if (!ours) {
				warnx("--install: %s exists and is not a stereo link; left alone", path);
				rc = EXIT_FAIL;
				continue;
			}
			unlink(path);
		}
		if (sym ? symlink(self, path) : link(self, path)) {
			warn_sys("--install: linking %s", path);
			rc = EXIT_FAIL;
		}
	}
	return rc;
}

static int run(const struct applet *a, int argc, char **argv)
{
	prog = a->name;
	if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		fputs(a->help, stdout);
		return EXIT_OK;
	}
	return a->main(argc, argv);
}

/* Write errors on stdout are checked once, here, after the applet returns (toybox's xexit):
 * applets print with stdio and need not check every printf. A failed flush turns success
 * into exit 1 with a message; a broken pipe (the reader went away) fails silently. */
static int finish_stdout(int rc)
{
	errno = 0;
	if (!fflush(stdout) && !ferror(stdout))
		return rc;
	if (errno != EPIPE)
		warnx("writing to stdout: %s", errno ? strerror(errno) : "I/O error");
	return rc ? rc : EXIT_FAIL;
}

static int dispatch(int argc, char **argv)
{
	char *base = strrchr(argv[0], '/');
	base = base ? base + 1 : argv[0];
	if (*base == '-')
		base++;
	const struct applet *a = find_applet(base);
	if (a)
		return run(a, argc, argv);
	if (getpid() == 1 && (a = find_applet("init")))
		return run(a, argc, argv);
	if (argc < 2)
		return stereo_usage(stderr, EXIT_USAGE);
	const char *cmd = argv[1];
	if (!strcmp(cmd, "--list")) {
		list_applets(stdout, "\n");
		return EXIT_OK;
	}
	if (!strcmp(cmd, "--version")) {
		printf("stereo %s\napplets: ", STEREO_VERSION);
		list_applets(stdout, " ");
		printf("\n");
		return EXIT_OK;
	}
	if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
		if (argc > 2) {
			if (!(a = find_applet(cmd = argv[2])))
				goto unknown;
			fputs(a->help, stdout);
			return EXIT_OK;
		}
		return stereo_usage(stdout, EXIT_OK);
	}
	if (!strcmp(cmd, "--install"))
		return install_links(argc, argv);
	if ((a = find_applet(cmd)))
		return run(a, argc - 1, argv + 1);
unknown:
	fprintf(stderr, "stereo: unknown applet '%s'; applets: ", cmd);
	list_applets(stderr, " ");
	fputc('\n', stderr);
	return EXIT_USAGE;
}

int main(int argc, char **argv)
{
	return finish_stdout(dispatch(argc, argv));
}
