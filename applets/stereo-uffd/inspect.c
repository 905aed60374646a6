/* inspect.c - the read-only tools: `inspect [--json] SNAPDIR` (summary of a snapshot),
 * `verify SNAPDIR` (every mapping valid, every layer present and long enough) and
 * `cat SNAPDIR OUTFILE` (the full memory image, written atomically; "-" for stdout). Each
 * takes `--layer UUID=FILE` (repeatable) for layers stored outside SNAPDIR, and with remote
 * layers compiled in, URLs and the remote options (--cache, --chunk, ...: snap.c).
 */
#include "uffd.h"
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <sys/stat.h>
#include <unistd.h>

struct ro_args {
	bool json;
	char *layers[64];
	int nlayers;
	const char *dir;
};

/* [--json] [--layer UUID=FILE ...] SNAPDIR ARGS...: returns optind, or -1 after a usage error */
static int ro_parse(int argc, char **argv, bool allow_json, struct ro_args *a)
{
	static const struct option opts[] = {{"json", no_argument, NULL, 'j'},
					     {"layer", required_argument, NULL, 'l'}, SNAP_REMOTE_OPTIONS, {0}};
	int c;
	memset(a, 0, sizeof *a);
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 'j' && allow_json) {
			a->json = true;
		} else if (c == 'l' && a->nlayers < (int)ARRAY_SIZE(a->layers)) {
			a->layers[a->nlayers++] = optarg;
		} else if (snap_remote_opt(c, optarg) != 0) {
			return -1;
		}
	}
	return optind;
}

static int open_snapdir(struct snap *s, const struct ro_args *a, char *err)
{
	return snap_open(s, NULL, a->dir, (char **)a->layers, a->nlayers, err);
}

int cmd_inspect(int argc, char **argv)
{
	struct ro_args a;
	char err[ERRBUF];
	int i = ro_parse(argc, argv, true, &a);
	if (i < 0 || argc - i != 1)
		return usage_cmd("inspect");
	bool json = a.json;
	a.dir = argv[i];
	char *shown = snap_shown(a.dir);   /* a URL's query string may be a signature */
	const char *dir = shown;
	struct snap s;
	if (open_snapdir(&s, &a, err))
		die(EXIT_FAIL, "inspect: %s", err);
	uint64_t zero = 0;
	for (size_t i = 0; i < s.h.n; i++)
		if (s.src[i] < 0)
			zero += s.h.m[i].len;
	char b[37], base[37];
	uuid_format(s.h.build, b);
	uuid_format(s.h.base, base);
	if (json) {
		struct buf out = {0};
		struct jw w;
		jw_init(&w, &out);
		jw_obj(&w);
		jw_kstr(&w, "dir", dir);
		jw_kint(&w, "version", (long long)(s.h.version & 0xffff));
		jw_kint(&w, "block_size", (long long)s.h.block);
		jw_kint(&w, "size", (long long)s.h.size);
		jw_kint(&w, "generation", (long long)s.h.gen);
		jw_kstr(&w, "build_id", b);
		jw_kstr(&w, "base_build_id", base);
		jw_kint(&w, "mappings", (long long)s.h.n);
		jw_kint(&w, "zero_bytes", (long long)zero);
		jw_key(&w, "layers");
		jw_arr(&w);
		for (size_t k = 0; k < s.nl; k++) {
			char u[37];
			uuid_format(s.l[k].id, u);
			jw_obj(&w);
			jw_kstr(&w, "build_id", u);
			jw_kstr(&w, "file", s.l[k].path);
			jw_kint(&w, "served_bytes", (long long)s.l[k].served);
			jw_kint(&w, "file_bytes", (long long)s.l[k].size);
			jw_obj_end(&w);
		}
		jw_arr_end(&w);
		jw_obj_end(&w);
		printf("%s\n", buf_cstr(&out));
		buf_free(&out);
	} else {
		printf("snapshot %s\n", dir);
		printf("version %llu, block %llu, size %llu (%.1f MiB), generation %llu\n",
		       (unsigned long long)(s.h.version & 0xffff), (unsigned long long)s.h.block,
		       (unsigned long long)s.h.size, s.h.size / 1048576.0, (unsigned long long)s.h.gen);
		printf("build %s\nbase  %s\n", b, base);
		printf("mappings %zu, zero %llu bytes (%.1f%%)\n", s.h.n, (unsigned long long)zero,
		       100.0 * (double)zero / (double)s.h.size);
		for (size_t k = 0; k < s.nl; k++) {
			char u[37];
			uuid_format(s.l[k].id, u);
			printf("layer %s %s: serves %llu bytes, file %llu bytes\n", u, s.l[k].path,
			       (unsigned long long)s.l[k].served, (unsigned long long)s.l[k].size);
		}
	}
	snap_close(&s);
	free(shown);
	return EXIT_OK;
}

int cmd_verify(int argc, char **argv)
{
	char err[ERRBUF];
	struct ro_args a;
	int i = ro_parse(argc, argv, false, &a);
	if (i < 0 || argc - i != 1)
		return usage_cmd("verify");
	a.dir = argv[i];
	struct snap s;
	if (open_snapdir(&s, &a, err))
		die(EXIT_FAIL, "verify: %s", err);
	char *shown = snap_shown(a.dir);
	printf("ok: %s: %llu bytes, generation %llu, %zu mappings, %zu layers\n", shown,
	       (unsigned long long)s.h.size, (unsigned long long)s.h.gen, s.h.n, s.nl);
	free(shown);
	snap_close(&s);
	return EXIT_OK;
}

static int cat_to(int fd, const struct snap *s, bool sparse, char *err)
{
	static uint8_t zeros[65536];   /* .bss: a const one would take 64 KiB of the file */
	/* remote layers: every chunk a mapping needs, downloaded first (all queued at once) */
	for (size_t i = 0; i < s->h.n; i++)
		if (s->src[i] >= 0)
			snap_prefetch(&s->l[s->src[i]], s->h.m[i].store, s->h.m[i].len);
	for (size_t i = 0; i < s->h.n; i++)
		if (s->src[i] >= 0 && snap_fetch(&s->l[s->src[i]], s->h.m[i].store, s->h.m[i].len, err))
			return -1;
	for (size_t i = 0; i < s->h.n; i++) {
		const struct mapping *m = &s->h.m[i];
		int r = 0;
		if (s->src[i] >= 0) {
			r = write_all(fd, s->l[s->src[i]].map + m->store, m->len);
		} else if (sparse) {
			if (lseek(fd, (off_t)m->len, SEEK_CUR) < 0)
				r = -errno;
		} else {
			for (uint64_t done = 0; done < m->len && !r; done += sizeof zeros)
				r = write_all(fd, zeros, m->len - done < sizeof zeros ? m->len - done : sizeof zeros);
		}
		if (r)
			return errf(err, "writing: %s", strerror(-r));
	}
	if (sparse && ftruncate(fd, (off_t)s->h.size))
		return errf(err, "writing: %s", strerror(errno));
	return 0;
}

int cmd_cat(int argc, char **argv)
{
	char err[ERRBUF];
	struct ro_args a;
	int i = ro_parse(argc, argv, false, &a);
	if (i < 0 || argc - i != 2)
		return usage_cmd("cat");
	a.dir = argv[i];
	const char *out = argv[i + 1];
	struct snap s;
	if (open_snapdir(&s, &a, err))
		die(EXIT_FAIL, "cat: %s", err);
	if (!strcmp(out, "-")) {
		if (cat_to(STDOUT_FILENO, &s, false, err))
			die(EXIT_FAIL, "cat: stdout: %s", err);
		snap_close(&s);
		return EXIT_OK;
	}
	char *d1 = xstrdup(out), *d2 = xstrdup(out);
	const char *dir = dirname(d1), *base = basename(d2);
	struct buf tmp = {0};
	buf_printf(&tmp, "%s/.%s.tmp-%d", dir, base, (int)getpid());
	int fd = open(tmp.p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0)
		die_sys(EXIT_FAIL, "cat: creating %s", tmp.p);
	if (cat_to(fd, &s, true, err) || (fsync(fd) && errf(err, "fsync: %s", strerror(errno))) ||
	    (rename(tmp.p, out) && errf(err, "renaming to %s: %s", out, strerror(errno)))) {
		unlink(tmp.p);
		die(EXIT_FAIL, "cat: %s: %s", out, err);
	}
	close(fd);
	buf_free(&tmp);
	free(d1);
	free(d2);
	snap_close(&s);
	return EXIT_OK;
}
