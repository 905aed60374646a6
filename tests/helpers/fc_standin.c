/* fc_standin.c - a Firecracker stand-in for stereo-uffd tests and benchmarks: maps guest
 * memory (anonymous private, or hugetlb), creates a userfaultfd the way Firecracker does
 * (O_CLOEXEC|O_NONBLOCK, UFFD_FEATURE_EVENT_REMOVE per version, MISSING registration),
 * connects and sends the region JSON + fd in one sendmsg in a chosen version's format (or a
 * broken variant), then touches pages from N threads and checks every byte against the
 * source image. It can MADV_DONTNEED ranges (as a balloon does) and check they read zero.
 *
 * usage: fc_standin --socket PATH --image FILE [--version 1.6|1.10|1.12] [--balloon]
 *        [--variant normal|extra|nofd|twofds|notuffd|garbage|unaligned] [--regions N] [--hole]
 *        [--huge] [--touch seq|random|none] [--threads N] [--no-verify]
 *        [--dontneed OFF:LEN ...] [--churn OFF:LEN:ITERS] [--outside] [--timeout SEC]
 *        [--hold FILE] [--lat]
 * Prints "touch_ns=N pages=N" and "ok ..." on success; exit 1 with a reason otherwise. With
 * --lat also "lat_p50_ns=N lat_p99_ns=N": the time of each first touch (a fault, when the
 * page was not there yet), as the guest would see it.
 */
#include "common/stereo.h"
#include <fcntl.h>
#include <getopt.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef MAP_HUGE_2MB
#define MAP_HUGE_2MB (21 << 26)
#endif
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif

struct reg {
	uint8_t *addr;
	uint64_t size, offset;
};

static struct reg regs[16];
static int nregs = 1;
static uint64_t page = 4096, memsize;
static uint64_t *order;           /* page numbers (memory-file) in touch order */
static uint64_t npages;
static int nthreads = 1;
static uint64_t *lat;             /* --lat: ns per touch, by touch index */

static uint8_t *addr_of(uint64_t off)
{
	for (int i = 0; i < nregs; i++)
		if (off >= regs[i].offset && off - regs[i].offset < regs[i].size)
			return regs[i].addr + (off - regs[i].offset);
	return NULL;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static void *toucher(void *arg)
{
	long t = (long)arg;
	volatile uint8_t sink = 0;
	for (uint64_t i = (uint64_t)t; i < npages; i += (uint64_t)nthreads) {
		uint64_t t0 = lat ? now_ns() : 0;
		sink ^= *(volatile uint8_t *)addr_of(order[i] * page);
		if (lat)
			lat[i] = now_ns() - t0;
	}
	(void)sink;
	return NULL;
}

/* --churn: readers race MADV_DONTNEED on one range; once a drop has finished, no read may
 * see snapshot data again (the server must serve removed pages as zeros) */
static uint8_t *churn_at;
static uint64_t churn_len;
static volatile int churn_stop, churn_dropped, churn_bad;

static void *churn_reader(void *arg)
{
	uint64_t i = (uint64_t)(long)arg * page;
	while (!churn_stop) {
		int after = __atomic_load_n(&churn_dropped, __ATOMIC_ACQUIRE);
		uint8_t v = *(volatile uint8_t *)(churn_at + i);
		if (after && v)
			churn_bad = 1;
		i = (i + 7 * page) % churn_len;
	}
	return NULL;
}

static int make_uffd(void)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
		if (dev < 0)
			die_sys(EXIT_FAIL, "userfaultfd");
		fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
		close(dev);
		if (fd < 0)
			die_sys(EXIT_FAIL, "USERFAULTFD_IOC_NEW");
	}
	return fd;
}

static void reg_uffd(int uffd, void *addr, uint64_t len)
{
	struct uffdio_register r = {.range = {(uintptr_t)addr, len}, .mode = UFFDIO_REGISTER_MODE_MISSING};
	if (ioctl(uffd, UFFDIO_REGISTER, &r))
		die_sys(EXIT_FAIL, "UFFDIO_REGISTER");
}

/* ranges dropped with MADV_DONTNEED so far: they must read zero from then on */
static uint64_t dropped[16][2];
static int ndropped;

static bool was_dropped(uint64_t off)
{
	for (int i = 0; i < ndropped; i++)
		if (off >= dropped[i][0] && off - dropped[i][0] < dropped[i][1])
			return true;
	return false;
}

static int verify_range(int imgfd, uint64_t off, uint64_t len)
{
	uint8_t *buf = xmalloc(1 << 20);
	for (uint64_t done = 0; done < len;) {
		size_t n = len - done < (1 << 20) ? (size_t)(len - done) : (1 << 20);
		if (pread(imgfd, buf, n, (off_t)(off + done)) != (ssize_t)n)
			die_sys(EXIT_FAIL, "reading the image");
		for (uint64_t k = 0; k < n; k += page) {
			uint64_t o = off + done + k;
			size_t m = n - k < page ? n - k : page;
			if (was_dropped(o))
				memset(buf + k, 0, m);
			if (memcmp(addr_of(o), buf + k, m)) {
				fprintf(stderr, "fc_standin: mismatch in the page at memory offset %llu\n",
					(unsigned long long)o);
				free(buf);
				return -1;
			}
		}
		done += n;
	}
	free(buf);
	return 0;
}

int main(int argc, char **argv)
{
	prog = "fc_standin";
	static const struct option opts[] = {
		{"socket", required_argument, NULL, 's'}, {"image", required_argument, NULL, 'i'},
		{"version", required_argument, NULL, 'v'}, {"balloon", no_argument, NULL, 'b'},
		{"variant", required_argument, NULL, 'V'}, {"regions", required_argument, NULL, 'r'},
		{"hole", no_argument, NULL, 'h'}, {"huge", no_argument, NULL, 'H'},
		{"touch", required_argument, NULL, 't'}, {"threads", required_argument, NULL, 'T'},
		{"no-verify", no_argument, NULL, 'n'}, {"dontneed", required_argument, NULL, 'd'},
		{"outside", no_argument, NULL, 'o'}, {"timeout", required_argument, NULL, 'w'},
		{"hold", required_argument, NULL, 'W'}, {"churn", required_argument, NULL, 'c'},
		{"lat", no_argument, NULL, 'L'},
		{0},
	};
	const char *churn = NULL, *hold = NULL, *sock = NULL, *image = NULL, *version = "1.12", *variant = "normal", *touch = "seq";
	bool balloon = false, hole = false, huge = false, verify = true, outside = false, want_lat = false;
	char *dontneed[16];
	int ndontneed = 0, timeout = 30, c;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 's': sock = optarg; break;
		case 'i': image = optarg; break;
		case 'v': version = optarg; break;
		case 'b': balloon = true; break;
		case 'V': variant = optarg; break;
		case 'r': nregs = atoi(optarg); break;
		case 'h': hole = true; break;
		case 'H': huge = true; break;
		case 't': touch = optarg; break;
		case 'T': nthreads = atoi(optarg); break;
		case 'n': verify = false; break;
		case 'd': if (ndontneed < 16) dontneed[ndontneed++] = optarg; break;
		case 'o': outside = true; break;
		case 'w': timeout = atoi(optarg); break;
		case 'W': hold = optarg; break;
		case 'c': churn = optarg; break;
		case 'L': want_lat = true; break;
		default: return EXIT_USAGE;
		}
	}
	if (!sock || !image || nregs < 1 || nregs > 16 || nthreads < 1 || nthreads > 64)
		die(EXIT_USAGE, "need --socket and --image (1-16 regions, 1-64 threads)");
	alarm((unsigned)timeout);   /* never hang a test: SIGALRM ends us */
	if (huge)
		page = 2 << 20;
	int imgfd = open(image, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (imgfd < 0 || fstat(imgfd, &st))
		die_sys(EXIT_FAIL, "opening %s", image);
	memsize = (uint64_t)st.st_size;
	if (!memsize || memsize % page)
		die(EXIT_FAIL, "image size %llu is not a multiple of the page size", (unsigned long long)memsize);
	npages = memsize / page;
	if ((uint64_t)nregs > npages)
		die(EXIT_FAIL, "more regions than pages");

	/* guest memory: nregs regions, back to back in the memory file; with --hole an unmapped
	 * gap of one page between them in host memory */
	uint64_t gap = hole ? page : 0, extra = outside ? page + page : 0;
	uint64_t total = memsize + gap * (uint64_t)(nregs - 1) + extra;
	int mflags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | (huge ? MAP_HUGETLB | MAP_HUGE_2MB : 0);
	uint8_t *area = mmap(NULL, total + page, PROT_READ | PROT_WRITE, mflags, -1, 0);
	if (area == MAP_FAILED)
		die_sys(EXIT_FAIL, "mmap %llu bytes%s", (unsigned long long)total, huge ? " (hugetlb)" : "");
	uint64_t per = npages / (uint64_t)nregs * page, off = 0;
	uint8_t *at = area;
	for (int i = 0; i < nregs; i++) {
		regs[i].addr = at;
		regs[i].offset = off;
		regs[i].size = i == nregs - 1 ? memsize - off : per;
		off += regs[i].size;
		at += regs[i].size;
		if (gap && i < nregs - 1) {
			munmap(at, gap);
			at += gap;
		}
	}
	uint8_t *outside_page = outside ? at + page : NULL;

	int uffd = make_uffd();
	bool want_remove = !strcmp(version, "1.12") || balloon;
	struct uffdio_api api = {.api = UFFD_API, .features = want_remove ? UFFD_FEATURE_EVENT_REMOVE : 0};
	if (ioctl(uffd, UFFDIO_API, &api))
		die_sys(EXIT_FAIL, "UFFDIO_API");
	for (int i = 0; i < nregs; i++)
		reg_uffd(uffd, regs[i].addr, regs[i].size);
	if (outside_page)
		reg_uffd(uffd, outside_page, page);

	/* the one message */
	struct buf js = {0};
	if (!strcmp(variant, "garbage")) {
		buf_puts(&js, "[{\"base_host_virt_addr\": 4096,, \"size\": }");
	} else {
		buf_putc(&js, '[');
		for (int i = 0; i < nregs; i++) {
			uint64_t size = regs[i].size + (!strcmp(variant, "unaligned") && !i ? 100 : 0);
			buf_printf(&js, "%s{\"base_host_virt_addr\":%llu,\"size\":%llu,\"offset\":%llu", i ? "," : "",
				   (unsigned long long)(uintptr_t)regs[i].addr, (unsigned long long)size,
				   (unsigned long long)regs[i].offset);
			if (!strcmp(version, "1.10") || !strcmp(version, "1.12"))
				buf_printf(&js, ",\"page_size_kib\":%llu", (unsigned long long)page);
			if (!strcmp(version, "1.12"))
				buf_printf(&js, ",\"page_size\":%llu", (unsigned long long)page);
			if (!strcmp(variant, "extra"))
				buf_puts(&js, ",\"future_field\":{\"nested\":[1,2,3]},\"name\":\"x\"");
			buf_putc(&js, '}');
		}
		buf_putc(&js, ']');
	}
	bool timed_out;
	char err[ERRBUF];
	int s = sock_connect_unix(sock, 10000, &timed_out, err);
	if (s < 0)
		die(EXIT_CONN, "connecting to %s: %s", sock, err);
	int fds[2] = {uffd, open("/dev/null", O_RDONLY | O_CLOEXEC)};
	int nfds = !strcmp(variant, "nofd") ? 0 : !strcmp(variant, "twofds") ? 2 : 1;
	if (!strcmp(variant, "notuffd"))
		fds[0] = fds[1];   /* one fd, but /dev/null */
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof fds)];
	} cbuf;
	memset(&cbuf, 0, sizeof cbuf);
	struct iovec iov = {js.p, js.len};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
	if (nfds) {
		mh.msg_control = cbuf.b;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
		struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * (size_t)nfds);
	}
	if (sendmsg(s, &mh, 0) != (ssize_t)js.len)
		die_sys(EXIT_FAIL, "sendmsg");
	buf_free(&js);
	if (strcmp(version, "1.12"))
		close(s);   /* up to 1.11 Firecracker closes right after sending */

	if (outside_page) {
		volatile uint8_t v = *(volatile uint8_t *)outside_page;   /* the server must kill us */
		(void)v;
		die(EXIT_FAIL, "a fault outside every region was served");
	}

	order = xcalloc(npages, sizeof *order);
	for (uint64_t i = 0; i < npages; i++)
		order[i] = i;
	if (!strcmp(touch, "random")) {
		uint64_t x = 88172645463325252ULL;
		for (uint64_t i = npages - 1; i > 0; i--) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			uint64_t j = x % (i + 1), t = order[i];
			order[i] = order[j];
			order[j] = t;
		}
	}
	if (want_lat)
		lat = xcalloc(npages, sizeof *lat);
	if (strcmp(touch, "none")) {
		pthread_t th[64];
		uint64_t t0 = now_ns();
		for (long t = 0; t < nthreads; t++)
			pthread_create(&th[t], NULL, toucher, (void *)t);
		for (int t = 0; t < nthreads; t++)
			pthread_join(th[t], NULL);
		uint64_t dt = now_ns() - t0;
		printf("touch_ns=%llu pages=%llu page=%llu\n", (unsigned long long)dt,
		       (unsigned long long)npages, (unsigned long long)page);
		if (lat) {
			qsort(lat, npages, sizeof *lat, cmp_u64);
			printf("lat_p50_ns=%llu lat_p99_ns=%llu\n", (unsigned long long)lat[npages / 2],
			       (unsigned long long)lat[npages * 99 / 100]);
		}
	}
	if (verify && verify_range(imgfd, 0, memsize))
		return EXIT_FAIL;
	for (int i = 0; i < ndontneed; i++) {
		unsigned long long o, l;
		if (sscanf(dontneed[i], "%llu:%llu", &o, &l) != 2 || o % page || l % page || !l ||
		    o + l > memsize || !addr_of(o) || !addr_of(o + l - 1) ||
		    addr_of(o + l - 1) - addr_of(o) != (ptrdiff_t)(l - 1))
			die(EXIT_USAGE, "--dontneed %s: not a page-aligned range inside one region", dontneed[i]);
		if (madvise(addr_of(o), l, MADV_DONTNEED))
			die_sys(EXIT_FAIL, "madvise(MADV_DONTNEED)");
		dropped[ndropped][0] = o;
		dropped[ndropped++][1] = l;
		for (uint64_t k = 0; k < l; k++)
			if (addr_of(o)[k]) {
				fprintf(stderr, "fc_standin: byte %llu reads %u after MADV_DONTNEED, not zero\n",
					o + k, addr_of(o)[k]);
				return EXIT_FAIL;
			}
		/* everything else still holds the snapshot's bytes */
		if (verify && verify_range(imgfd, 0, memsize))
			return EXIT_FAIL;
		printf("dontneed %llu:%llu reads zero\n", o, l);
	}
	if (churn) {
		unsigned long long o, l, iters;
		if (sscanf(churn, "%llu:%llu:%llu", &o, &l, &iters) != 3 || o % page || l % page || !l ||
		    o + l > memsize || !addr_of(o) || addr_of(o + l - 1) - addr_of(o) != (ptrdiff_t)(l - 1))
			die(EXIT_USAGE, "--churn %s: OFF:LEN:ITERS inside one region", churn);
		churn_at = addr_of(o);
		churn_len = l;
		pthread_t th[64];
		for (long t = 0; t < nthreads; t++)
			pthread_create(&th[t], NULL, churn_reader, (void *)t);
		for (unsigned long long k = 0; k < iters; k++) {
			if (madvise(churn_at, l, MADV_DONTNEED))
				die_sys(EXIT_FAIL, "madvise(MADV_DONTNEED)");
			__atomic_store_n(&churn_dropped, 1, __ATOMIC_RELEASE);
		}
		churn_stop = 1;
		for (int t = 0; t < nthreads; t++)
			pthread_join(th[t], NULL);
		if (churn_bad)
			die(EXIT_FAIL, "a read after MADV_DONTNEED saw snapshot data");
		dropped[ndropped][0] = o;
		dropped[ndropped++][1] = l;
		if (verify && verify_range(imgfd, 0, memsize))
			return EXIT_FAIL;
		printf("churn %llu:%llu x%llu reads zero\n", o, l, iters);
	}
	printf("ok %llu pages verified=%d\n", (unsigned long long)npages, verify);
	fflush(stdout);
	/* --hold FILE: stay alive (the VM keeps running) until FILE exists */
	while (hold && access(hold, F_OK))
		usleep(10000);
	return EXIT_OK;
}
