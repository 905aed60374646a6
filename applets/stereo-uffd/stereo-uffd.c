/* stereo-uffd.c - Firecracker snapshot page server and snapshot memory tools: the applet
 * declaration and the subcommand table. One file per concern beside it: header.c (format),
 * snap.c (opening a snapshot, layer access), pack.c / layer.c / merge.c / inspect.c (tools),
 * handshake.c, serve.c, fault.c, prefetch.c and stats.c (the page server).
 *
 * Design, formats and measured figures: docs/stereo-uffd.md
 */
/*
APPLET(stereo-uffd)

config STEREO_UFFD
	bool "stereo-uffd: snapshot page server (userfaultfd) and snapshot memory tools"
	default y
	help
	  usage: stereo-uffd COMMAND [ARGS...]

	  serve --socket PATH --header FILE [--layer UUID=FILE ...|--dir SNAPDIR]
	        [--clones N] [--threads N] [--prefetch none|all|trace:FILE] [--fault-around 64K]
	        [--record-trace FILE] [--stats FILE] [--accept-timeout 60s] [--ready-fd N]
	        [--socket-mode 600] [--socket-group GID]
	      Listen on PATH for Firecracker's Uffd memory backend and serve every page
	      fault of each Firecracker that connects (up to --clones N in all, default 1,
	      0 = unlimited) from the snapshot, opened once (--header alone takes the layers
	      from the header's directory), on up to --threads loops (default 64: a loop
	      per clone).
	      A clone's fatal error kills that Firecracker
	      only; a peer past --clones is killed. Exits when the last clone has gone and
	      no more may come: 0 if none had to be killed, else 1. SIGTERM kills the
	      clones still served. SIGUSR1 prints the counters (per clone and in total).
	  pack [--block-size 4K|2M] MEMFILE OUTDIR
	      A full memory file to a generation-0 snapshot with zero blocks elided.
	  layer PARENT_DIR DIFF_MEMFILE OUTDIR
	      A diff memory file (dirty pages non-zero) on top of a snapshot: generation N+1.
	  merge SNAPDIR OUTDIR    A chain of layers to one generation-0 layer.
	  inspect [--json] [--layer UUID=FILE ...] SNAPDIR
	      Size, generation, layers and the bytes each serves.
	  verify [--layer UUID=FILE ...] SNAPDIR
	      Every mapping valid, every layer present, regular and long enough.
	  cat [--layer UUID=FILE ...] SNAPDIR OUTFILE
	      The full memory image ("-" for stdout).

	  Snapshot directory: memfile.header (e2b/Wrenn header, version 3 written, 1-3 read)
	  and memfile.<uuid> per layer, opened inside the directory only (no symlinks);
	  --layer names a file anywhere. Outputs are written to temporary names, fsynced and
	  renamed. Exit codes: 0 ok, 1 failed, 2 usage, 3 Firecracker did not connect in time.
*/
#include "uffd.h"

static const struct {
	const char *name;
	int (*fn)(int argc, char **argv);
} commands[] = {
	{"serve", cmd_serve},
	{"pack", cmd_pack},
	{"layer", cmd_layer},
	{"merge", cmd_merge},
	{"inspect", cmd_inspect},
	{"verify", cmd_verify},
	{"cat", cmd_cat},
};

int stereo_uffd_main(int argc, char **argv)
{
	if (argc < 2)
		return usage_error("missing command (serve, pack, layer, merge, inspect, verify, cat)");
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++) {
		if (strcmp(argv[1], commands[i].name))
			continue;
		if (argc > 2 && (!strcmp(argv[2], "--help") || !strcmp(argv[2], "-h"))) {
			fputs(applet_help("stereo-uffd"), stdout);
			return EXIT_OK;
		}
		return commands[i].fn(argc - 1, argv + 1);
	}
	return usage_error("unknown command '%s'", argv[1]);
}
