/* floor-init.c - the boot benchmark's floor (tests/bench/boot.sh): a PID 1 that powers the
 * machine off at once. QEMU start to QEMU exit with it is what firmware and kernel cost before
 * any rootfs work. Built static by boot.sh; not a tests/helpers program because it runs in
 * the guest. */
#include <sys/reboot.h>
#include <unistd.h>

int main(void)
{
	reboot(RB_POWER_OFF);
	return 1;
}
