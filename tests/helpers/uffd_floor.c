/* uffd_floor.c - the benchmark's floors for stereo-uffd (docs/stereo-uffd.md, "Measured"): the
 * smallest correct page servers, speaking the same Firecracker handshake as stereo-uffd so
 * the same stand-in drives both. They serve from the raw full image file (mapped).
 *
 * usage: uffd_floor MODE --socket PATH --image FILE
 *   raw       one 4 KiB UFFDIO_COPY per fault (the raw round trip)
 *   raw64k    one aligned 64 KiB UFFDIO_COPY per fault (raw fault-around)
 *   bulk2m    after the handshake, UFFDIO_COPY everything in 2 MiB steps (the ceiling)
 *   bulkzero  as bulk2m, but zero runs (found before the clock starts) by UFFDIO_ZEROPAGE
 *   pagewise  after the handshake, pread + UFFDIO_COPY page by page (Wrenn-style prefetch)
 * Bulk modes print "prefetch_ns=N bytes=N"; every mode exits when the peer goes away.
 *        uffd_floor mkimg FILE MIB [PERCENT]   a benchmark image: ~PERCENT% (30) non-zero
 *                                              pages in runs of 1-64
 */
#include "common/stereo.h"
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PG 4096ULL
#define STEP (2ULL << 20)

struct region {
	uint64_t base, size, offset;
};
static struct region reg[64];
static int nreg;
static const uint8_t *img;
static uint64_t imgsize;
static int uffd, peer = -1;

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static int mkimg(const char *path, long mib, long percent)
{
	uint64_t pages = (uint64_t)mib * 256, x = 0x9E3779B97F4A7C15ULL;
	uint8_t *page = xmalloc(PG), *zero = xcalloc(1, PG);
	FILE *f = fopen(path, "wb");
	if (!f)
		die_sys(EXIT_FAIL, "creating %s", path);
	for (uint64_t i = 0; i < pages;) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		uint64_t run = 1 + x % 64;
		bool data = (long)((x >> 32) % 100) < percent;
		for (uint64_t k = 0; k < run && i < pages; k++, i++) {
			if (data) {
				for (size_t j = 0; j < PG; j += 8) {
					x ^= x << 13, x ^= x >> 7, x ^= x << 17;
					memcpy(page + j, &x, 8);
				}
				page[0] |= 1;
			}
			fwrite(data ? page : zero, 1, PG, f);
		}
	}
	if (fclose(f))
		die_sys(EXIT_FAIL, "writing %s", path);
	return 0;
}

static void handshake(const char *path)
{
	char err[ERRBUF];
	int l = sock_listen_unix(path, 0600, (gid_t)-1, err);
	if (l < 0)
		die(EXIT_FAIL, "%s", err);
	printf("listening\n");
	fflush(stdout);
	if (fd_wait(l, POLLIN, 30000) <= 0)
		die(EXIT_CONN, "no connection");
	int s = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	if (s < 0)
		die_sys(EXIT_FAIL, "accept");
	close(l);
	unlink(path);
	static char msg[65536];
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int))];
	} cb;
	struct iovec iov = {msg, sizeof msg - 1};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cb.b, .msg_controllen = sizeof cb.b};
	ssize_t n = recvmsg(s, &mh, MSG_CMSG_CLOEXEC);
	struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
	if (n <= 0 || !c || c->cmsg_type != SCM_RIGHTS)
		die(EXIT_FAIL, "bad handshake");
	memcpy(&uffd, CMSG_DATA(c), sizeof uffd);
	struct json j;
	if (json_parse(&j, msg, (size_t)n, false, err))
		die(EXIT_FAIL, "bad JSON: %s", err);
	for (int i = 0; i < 64; i++) {
		int o = json_array_item(&j, 0, i);
		if (o < 0)
			break;
		json_u64(&j, json_get(&j, o, "base_host_virt_addr"), &reg[i].base);
		json_u64(&j, json_get(&j, o, "size"), &reg[i].size);
		json_u64(&j, json_get(&j, o, "offset"), &reg[i].offset);
		nreg = i + 1;
	}
	json_free(&j);
	peer = s;   /* a 1.12 peer holds its end until it exits: our end-of-run signal */
}

static bool copy(uint64_t dst, const void *src, uint64_t len)
{
	uint64_t done = 0;
	while (done < len) {
		struct uffdio_copy c = {.dst = dst + done, .src = (uintptr_t)src + done, .len = len - done};
		if (!ioctl(uffd, UFFDIO_COPY, &c))
			return true;
		if (c.copy > 0)
			done += (uint64_t)c.copy;
		else if (errno == EEXIST)
			done += PG;
		else if (errno == EAGAIN)
			continue;
		else if (errno == ESRCH)
			return false;
		else
			die_sys(EXIT_FAIL, "UFFDIO_COPY");
	}
	return true;
}

static void serve_faults(uint64_t window)
{
	struct pollfd p[2] = {{uffd, POLLIN, 0}, {peer, POLLRDHUP, 0}};
	for (;;) {
		if (poll(p, 2, -1) < 0 && errno != EINTR)
			die_sys(EXIT_FAIL, "poll");
		if ((p[0].revents & (POLLERR | POLLHUP)) || p[1].revents)
			return;
		if (!(p[0].revents & POLLIN))
			continue;
		struct uffd_msg m;
		ssize_t n = read(uffd, &m, sizeof m);   /* one message per read: the minimal loop */
		if (n < 0 && errno == EAGAIN)
			continue;
		if (n != sizeof m)
			return;
		if (m.event != UFFD_EVENT_PAGEFAULT)
			continue;
		uint64_t fa = m.arg.pagefault.address;
		for (int i = 0; i < nreg; i++) {
			if (fa < reg[i].base || fa >= reg[i].base + reg[i].size)
				continue;
			uint64_t a = reg[i].base + ((fa - reg[i].base) & ~(window - 1));
			uint64_t len = window;
			if (a + len > reg[i].base + reg[i].size)
				len = reg[i].base + reg[i].size - a;
			uint64_t off = reg[i].offset + (a - reg[i].base);
			struct uffdio_copy c = {.dst = a, .src = (uintptr_t)(img + off), .len = len};
			if (ioctl(uffd, UFFDIO_COPY, &c) && errno == EEXIST && window > PG) {
				/* part of the window is present: the faulting page alone */
				uint64_t pa = m.arg.pagefault.address & ~(PG - 1);
				copy(pa, img + reg[i].offset + (pa - reg[i].base), PG);
			} else if (errno == ESRCH) {
				return;
			}
		}
	}
}

static bool zero_page(const uint8_t *p)
{
	uint64_t acc = 0;
	for (size_t i = 0; i < PG; i += 8) {
		uint64_t v;
		memcpy(&v, p + i, 8);
		acc |= v;
	}
	return !acc;
}

int main(int argc, char **argv)
{
	prog = "uffd_floor";
	if ((argc == 4 || argc == 5) && !strcmp(argv[1], "mkimg"))
		return mkimg(argv[2], atol(argv[3]), argc == 5 ? atol(argv[4]) : 30);
	if (argc != 6 || strcmp(argv[2], "--socket") || strcmp(argv[4], "--image"))
		die(EXIT_USAGE, "usage: uffd_floor raw|raw64k|bulk2m|bulkzero|pagewise --socket PATH --image FILE");
	const char *mode = argv[1];
	int fd = open(argv[5], O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st))
		die_sys(EXIT_FAIL, "%s", argv[5]);
	imgsize = (uint64_t)st.st_size;
	img = mmap(NULL, imgsize, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0);
	if (img == MAP_FAILED)
		die_sys(EXIT_FAIL, "mmap");
	uint8_t *zmap = NULL;   /* bulkzero: per page, found before the clock starts */
	if (!strcmp(mode, "bulkzero")) {
		zmap = xmalloc(imgsize / PG);
		for (uint64_t p = 0; p < imgsize / PG; p++)
			zmap[p] = zero_page(img + p * PG);
	}
	handshake(argv[3]);
	if (!strcmp(mode, "raw") || !strcmp(mode, "raw64k")) {
		serve_faults(!strcmp(mode, "raw") ? PG : 65536);
		return 0;
	}
	uint8_t *buf = aligned_alloc(PG, PG);
	uint64_t t0 = now_ns(), bytes = 0;
	for (int i = 0; i < nreg; i++) {
		for (uint64_t a = 0; a < reg[i].size;) {
			uint64_t off = reg[i].offset + a, dst = reg[i].base + a;
			if (!strcmp(mode, "pagewise")) {
				if (pread(fd, buf, PG, (off_t)off) != (ssize_t)PG)
					die_sys(EXIT_FAIL, "pread");
				copy(dst, buf, PG);
				a += PG;
				continue;
			}
			uint64_t len = reg[i].size - a < STEP ? reg[i].size - a : STEP;
			if (zmap) {   /* one run of equal kind inside the step */
				uint64_t p = off / PG, k = 1;
				while (k < len / PG && zmap[p + k] == zmap[p])
					k++;
				len = k * PG;
				if (zmap[p]) {
					struct uffdio_zeropage z = {.range = {dst, len}};
					ioctl(uffd, UFFDIO_ZEROPAGE, &z);
					a += len;
					continue;
				}
			}
			copy(dst, img + off, len);
			a += len;
		}
		bytes += reg[i].size;
	}
	printf("prefetch_ns=%llu bytes=%llu\n", (unsigned long long)(now_ns() - t0), (unsigned long long)bytes);
	fflush(stdout);
	serve_faults(PG);   /* until the peer goes away */
	return 0;
}
