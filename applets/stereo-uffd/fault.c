/* fault.c - one clone's fault path: its per-page state (installed/removed bitmaps), page
 * faults with fault-around, REMOVE events, the kernel's answers (partial, EEXIST, EAGAIN,
 * ESRCH, ENOENT, EFAULT), deferred faults and one clone's turn of the serve loop.
 *
 * Layer bytes come only through layer_get/layer_read (snap.c): a range that is "not available
 * yet" defers the fault exactly like EAGAIN does; deferred faults are retried on the clone's
 * timer and whenever the server is woken. Nothing here allocates: the bitmaps, the deferred
 * array and the trace are the clone's, sized at its handshake.
 */
#include "serve.h"
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define DEFER_RETRY_MS 1
#define DEFER_GIVE_UP_MS 10000
#define LAYER_RETRY_MS 50          /* a backstop: a layer source wakes the server itself */
#define LAYER_GIVE_UP_MS 60000
#define MSG_BATCH 64               /* messages per clone per loop turn */

bool page_bit(const uint64_t *bm, uint64_t p)
{
	return bm[p >> 6] >> (p & 63) & 1;
}

static void bits_set(uint64_t *bm, uint64_t p, uint64_t n)
{
	for (; n && (p & 63); p++, n--)
		bm[p >> 6] |= 1ULL << (p & 63);
	for (; n >= 64; p += 64, n -= 64)
		bm[p >> 6] = ~0ULL;
	for (; n; p++, n--)
		bm[p >> 6] |= 1ULL << (p & 63);
}

static void bits_clear(uint64_t *bm, uint64_t p, uint64_t n)
{
	for (; n; p++, n--)
		bm[p >> 6] &= ~(1ULL << (p & 63));
}

enum serve_rc clone_fail(struct clone *C, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(C->err, sizeof C->err, fmt, ap);
	va_end(ap);
	return SERVE_FATAL;
}

static void wake(struct clone *C, struct region *r, uint64_t p, uint64_t n)
{
	struct uffdio_range rg = {.start = r->base + p * C->page, .len = n * C->page};
	ioctl(C->uffd, UFFDIO_WAKE, &rg);
	C->c.wakes++;
}

/* The kernel's answer to a COPY/ZEROPAGE that did not complete: pages done (> 0), or
 * an error. Shared by both ioctls since their result fields mean the same thing. */
static enum serve_rc ioctl_result(struct clone *C, struct region *r, uint64_t *p, uint64_t *n,
				  int64_t done, int e, const char *what, const char *src)
{
	if (done > 0) {   /* partial: it stopped at a present page or a mapping change */
		uint64_t k = (uint64_t)done / C->page;
		bits_set(r->installed, *p, k);
		*p += k;
		*n -= k;
		return SERVE_OK;
	}
	if (e == EEXIST) {   /* someone else installed it: wake whoever waits on it */
		bits_set(r->installed, *p, 1);
		wake(C, r, *p, 1);
		C->c.eexist++;
		*p += 1;
		*n -= 1;
		return SERVE_OK;
	}
	if (e == EAGAIN) {   /* a REMOVE (or other mapping change) is in flight */
		C->c.eagain++;
		C->layer_wait = false;
		return SERVE_DEFER;
	}
	if (e == ESRCH)
		return SERVE_GONE;
	if (e == ENOENT) {   /* no longer registered (unmapped): nobody can wait on it */
		bits_set(r->installed, *p, *n);
		*n = 0;
		return SERVE_OK;
	}
	if (e == EFAULT && src)
		return clone_fail(C, "%s at 0x%llx: layer %s is unreadable (truncated?)", what,
				  (unsigned long long)(r->base + *p * C->page), src);
	return clone_fail(C, "%s at 0x%llx (%llu bytes): %s", what,
			  (unsigned long long)(r->base + *p * C->page),
			  (unsigned long long)(*n * C->page), strerror(e));
}

static enum serve_rc do_copy(struct clone *C, struct region *r, uint64_t p, uint64_t n,
			     const uint8_t *src, const char *srcname)
{
	const uint8_t *base_src = src;
	uint64_t p0 = p;
	while (n) {
		struct uffdio_copy c = {.dst = r->base + p * C->page,
					.src = (uintptr_t)(base_src + (p - p0) * C->page),
					.len = n * C->page};
		if (!ioctl(C->uffd, UFFDIO_COPY, &c)) {
			bits_set(r->installed, p, n);
			C->c.pages_copied += n;
			C->c.bytes_copied += n * C->page;
			return SERVE_OK;
		}
		int e = errno;
		uint64_t before = n;
		enum serve_rc rc = ioctl_result(C, r, &p, &n, c.copy, e, "UFFDIO_COPY", srcname);
		if (c.copy > 0) {
			C->c.pages_copied += before - n;
			C->c.bytes_copied += (before - n) * C->page;
		}
		if (rc != SERVE_OK)
			return rc;
	}
	return SERVE_OK;
}

static enum serve_rc do_zero(struct clone *C, struct region *r, uint64_t p, uint64_t n)
{
	if (C->page == PAGE_2M) {
		/* hugetlb has no ZEROPAGE: copy a zero huge page */
		for (uint64_t i = 0; i < n; i++) {
			uint64_t before = C->c.pages_copied;
			enum serve_rc rc = do_copy(C, r, p + i, 1, C->S->zero2m, NULL);
			uint64_t k = C->c.pages_copied - before;   /* 0 when it met EEXIST */
			C->c.pages_copied -= k;
			C->c.bytes_copied -= k * C->page;
			C->c.pages_zeroed += k;
			if (rc != SERVE_OK)
				return rc;
		}
		return SERVE_OK;
	}
	while (n) {
		struct uffdio_zeropage z = {.range = {.start = r->base + p * C->page, .len = n * C->page}};
		if (!ioctl(C->uffd, UFFDIO_ZEROPAGE, &z)) {
			bits_set(r->installed, p, n);
			C->c.pages_zeroed += n;
			return SERVE_OK;
		}
		int e = errno;
		uint64_t before = n;
		enum serve_rc rc = ioctl_result(C, r, &p, &n, z.zeropage, e, "UFFDIO_ZEROPAGE", NULL);
		if (z.zeropage > 0)
			C->c.pages_zeroed += before - n;
		if (rc != SERVE_OK)
			return rc;
	}
	return SERVE_OK;
}

static enum serve_rc layer_rc(struct clone *C, enum layer_avail a, const char *err)
{
	if (a == LAYER_WAIT) {
		C->c.layer_waits++;
		C->layer_wait = true;
		return SERVE_DEFER;
	}
	return clone_fail(C, "%s", err);
}

/* A huge page whose bytes come from more than one mapping: assemble it, then one COPY. */
static enum serve_rc copy_assembled(struct clone *C, struct region *r, uint64_t p)
{
	struct snap *s = C->S->s;
	uint8_t *bounce = C->W->bounce;
	uint64_t off = r->offset + p * C->page, done = 0;
	char err[ERRBUF];
	while (done < C->page) {
		size_t i = hdr_find(&s->h, off + done);
		const struct mapping *m = &s->h.m[i];
		uint64_t take = m->off + m->len - (off + done);
		if (take > C->page - done)
			take = C->page - done;
		if (s->src[i] < 0) {
			memset(bounce + done, 0, take);
		} else {
			enum layer_avail a = layer_read(s, (size_t)s->src[i], bounce + done,
							m->store + (off + done - m->off), take, err);
			if (a != LAYER_READY)
				return layer_rc(C, a, err);
		}
		done += take;
	}
	return do_copy(C, r, p, 1, bounce, NULL);
}

enum serve_rc serve_run(struct clone *C, struct region *r, uint64_t p, uint64_t lo, uint64_t hi)
{
	if (page_bit(r->installed, p)) {
		/* installed meanwhile (fault-around or prefetch): the waiter may still sleep */
		wake(C, r, p, 1);
		C->c.spurious++;
		return SERVE_OK;
	}
	if (page_bit(r->removed, p)) {
		uint64_t a = p, b = p + 1;
		while (a > lo && page_bit(r->removed, a - 1) && !page_bit(r->installed, a - 1))
			a--;
		while (b < hi && page_bit(r->removed, b) && !page_bit(r->installed, b))
			b++;
		return do_zero(C, r, a, b - a);
	}
	struct snap *s = C->S->s;
	uint64_t off = r->offset + p * C->page;
	size_t i = hdr_find(&s->h, off);
	const struct mapping *m = &s->h.m[i];
	if (off + C->page > m->off + m->len)
		return copy_assembled(C, r, p);
	/* clip the window to the pages wholly inside this mapping */
	uint64_t first = m->off > r->offset ? (m->off - r->offset + C->page - 1) / C->page : 0;
	uint64_t last = (m->off + m->len - r->offset) / C->page;
	if (lo < first)
		lo = first;
	if (hi > last)
		hi = last;
	uint64_t a = p, b = p + 1;
	while (a > lo && !page_bit(r->installed, a - 1) && !page_bit(r->removed, a - 1))
		a--;
	while (b < hi && !page_bit(r->installed, b) && !page_bit(r->removed, b))
		b++;
	if (s->src[i] < 0)
		return do_zero(C, r, a, b - a);
	uint64_t aoff = r->offset + a * C->page;
	const uint8_t *src;
	char err[ERRBUF];
	enum layer_avail av = layer_get(s, (size_t)s->src[i], m->store + (aoff - m->off),
					(b - a) * C->page, &src, err);
	if (av != LAYER_READY)
		return layer_rc(C, av, err);
	return do_copy(C, r, a, b - a, src, s->l[s->src[i]].path);
}

static struct region *find_region(struct clone *C, uint64_t addr)
{
	for (size_t i = 0; i < C->nreg; i++)
		if (addr >= C->reg[i].base && addr - C->reg[i].base < C->reg[i].size)
			return &C->reg[i];
	return NULL;
}

static enum serve_rc handle_fault(struct clone *C, uint64_t addr, bool first)
{
	struct region *r = find_region(C, addr);
	if (!r)
		return clone_fail(C, "page fault at 0x%llx outside every region Firecracker sent",
				  (unsigned long long)addr);
	uint64_t p = (addr - r->base) / C->page;
	/* each page enters the trace once: a removed page is never "first touched" again */
	if (first && C->record && C->ntrace < C->captrace && !page_bit(r->installed, p) &&
	    !page_bit(r->removed, p))
		C->trace[C->ntrace++] = r->offset + p * C->page;
	uint64_t lo = p / C->fa_pages * C->fa_pages, hi = lo + C->fa_pages;
	if (hi > r->npages)
		hi = r->npages;
	uint64_t before = C->c.pages_copied + C->c.pages_zeroed;
	enum serve_rc rc = serve_run(C, r, p, lo, hi);
	/* The faulting run is in and its waiter woken. The rest of the window may come from
	 * other sources (zero-fill next to data): an ioctl each costs far less than the
	 * fault that would otherwise follow. Removed pages stay missing until touched. */
	for (uint64_t q = lo; q < hi && rc == SERVE_OK; q++)
		if (!page_bit(r->installed, q) && !page_bit(r->removed, q))
			rc = serve_run(C, r, q, q, hi);
	if (rc == SERVE_DEFER && page_bit(r->installed, p))
		rc = SERVE_OK;   /* only the extra pages met a mapping change */
	C->c.fault_pages += C->c.pages_copied + C->c.pages_zeroed - before;
	return rc;
}

static void on_remove(struct clone *C, uint64_t start, uint64_t end)
{
	C->c.removes++;
	for (size_t i = 0; i < C->nreg; i++) {
		struct region *r = &C->reg[i];
		uint64_t a = start > r->base ? start : r->base;
		uint64_t b = end < r->base + r->size ? end : r->base + r->size;
		if (a >= b)
			continue;
		uint64_t p = (a - r->base) / C->page, q = (b - r->base + C->page - 1) / C->page;
		bits_set(r->removed, p, q - p);
		bits_clear(r->installed, p, q - p);
		C->c.removed_pages += q - p;
	}
}

static void arm_retry(struct clone *C, bool layer)
{
	int64_t due = now_ms() + (layer ? LAYER_RETRY_MS : DEFER_RETRY_MS);
	if (!C->retry_due_ms || due < C->retry_due_ms)
		C->retry_due_ms = due;
}

/* The array never overflows: the uffd is read only while a whole batch still fits. */
static enum serve_rc defer(struct clone *C, uint64_t addr, int64_t since)
{
	for (size_t i = 0; i < C->ndef; i++)
		if (C->def[i].addr == addr) {   /* the same page faulted again meanwhile */
			C->def[i].layer = C->layer_wait;
			arm_retry(C, C->layer_wait);
			return SERVE_OK;
		}
	if (C->ndef == DEFER_MAX)
		return clone_fail(C, "more than %d faults deferred", DEFER_MAX);
	C->def[C->ndef++] = (struct deferred){addr, since, C->layer_wait};
	arm_retry(C, C->layer_wait);
	return SERVE_OK;
}

static enum serve_rc retry_deferred(struct clone *C)
{
	size_t n = C->ndef, keep = 0;
	C->retry_due_ms = 0;
	for (size_t i = 0; i < n; i++) {
		struct deferred d = C->def[i];
		enum serve_rc rc = handle_fault(C, d.addr, false);
		if (rc == SERVE_DEFER) {
			int64_t limit = C->layer_wait ? LAYER_GIVE_UP_MS : DEFER_GIVE_UP_MS;
			if (now_ms() - d.since_ms > limit)
				return clone_fail(C, C->layer_wait ? "page at 0x%llx: its layer range is still not available after %lld ms"
								   : "page at 0x%llx still refused with EAGAIN after %lld ms",
						  (unsigned long long)d.addr, (long long)limit);
			d.layer = C->layer_wait;
			C->def[keep++] = d;
			arm_retry(C, d.layer);
		} else if (rc != SERVE_OK) {
			/* keep the rest; the clone ends anyway */
			memmove(&C->def[keep], &C->def[i + 1], (n - i - 1) * sizeof *C->def);
			C->ndef = keep + n - i - 1;
			return rc;
		}
	}
	C->ndef = keep;
	return SERVE_OK;
}

enum serve_rc clone_turn(struct clone *C, bool readable, bool woken)
{
	struct uffd_msg msg[MSG_BATCH];
	size_t k = 0;
	bool removed = false;
	if (readable && C->ndef + MSG_BATCH <= DEFER_MAX) {
		ssize_t n;
		do
			n = read(C->uffd, msg, sizeof msg);
		while (n < 0 && errno == EINTR);
		if (n < 0 && errno != EAGAIN)
			return clone_fail(C, "reading the uffd: %s", strerror(errno));
		if (!n)
			return clone_fail(C, "reading the uffd: end of file");
		k = n > 0 ? (size_t)n / sizeof msg[0] : 0;
		/* the batch's REMOVEs first: a fault after them must see the pages removed */
		for (size_t i = 0; i < k; i++)
			if (msg[i].event == UFFD_EVENT_REMOVE) {
				on_remove(C, msg[i].arg.remove.start, msg[i].arg.remove.end);
				removed = true;
			}
	}
	if (C->ndef && (removed || woken || now_ms() >= C->retry_due_ms)) {
		enum serve_rc rc = retry_deferred(C);
		if (rc != SERVE_OK)
			return rc;
	}
	for (size_t i = 0; i < k; i++) {
		if (msg[i].event != UFFD_EVENT_PAGEFAULT)
			continue;
		uint64_t t0 = mono_ns();
		uint64_t addr = msg[i].arg.pagefault.address & ~(C->page - 1);
		C->c.faults++;
		enum serve_rc rc = handle_fault(C, addr, true);
		if (rc == SERVE_DEFER)
			rc = defer(C, addr, now_ms());
		else if (rc == SERVE_OK)
			lat_record(C, mono_ns() - t0);
		if (rc != SERVE_OK)
			return rc;
	}
	return SERVE_OK;
}
