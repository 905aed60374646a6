# e2e-image.sh - sourced by build.sh --test: adds the end-to-end probe (rootfs/e2e-probe.c,
# static) and the service files that run it next to stereod. Only test images get this.
probe=$top/build/rootfs/e2e-probe
if [ ! -x "$probe" ] || [ "$top/rootfs/e2e-probe.c" -nt "$probe" ]; then
	${CC:-cc} -static -O2 -std=gnu11 -Wall -Wextra -Werror -D_GNU_SOURCE -s \
		-o "$probe.$$" "$top/rootfs/e2e-probe.c" || fail "building the e2e probe failed"
	mv "$probe.$$" "$probe"
fi
cp "$probe" "$stage/bin/e2e-probe"
# the probe is also a freeze hook: it logs what a snapshot's freeze and thaw see
mkdir -p "$stage/etc/stereos/hooks/freeze.d"
ln -sf /bin/e2e-probe "$stage/etc/stereos/hooks/freeze.d/50-e2e"
mkdir -p "$stage/mnt/e2e" "$stage/etc/stereos/services"
cat > "$stage/etc/stereos/services/stereod.conf" <<'CONF'
# init's built-in default, written out because a services directory replaces it, plus the
# guest-metadata listener on TCP (QEMU forwards it; its peer is QEMU's gateway 10.0.2.2)
exec=/bin/stereod --listen-mode auto --metadata-listen-mode tcp
restart=always
CONF
cat > "$stage/etc/stereos/services/e2e-probe.conf" <<'CONF'
# test image only: copies secrets, keys and config into the 9p share mounted at /mnt/e2e
exec=/bin/e2e-probe /mnt/e2e
restart=always
CONF
chmod 0644 "$stage"/etc/stereos/services/*.conf
