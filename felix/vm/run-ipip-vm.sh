#!/bin/bash
# IPIP datapath test for felix in a qemu guest. The host kernel has no ipip module, so this boots
# Debian's own kernel (software emulation: KVM here cannot boot a stock kernel) with a small
# initramfs holding busybox, iproute2, tcpdump and tabby-felix, and runs guest-ipip.sh in it:
# three node namespaces (two on 192.0.2.0/24, one behind a router on 198.51.100.0/24), felix in
# each, pods pinging, IPIP Always then IPIP CrossSubnet, IP-in-IP (protocol 4) seen on the wire.
#
# Usage: run-ipip-vm.sh PATH/TO/tabby-felix
# Needs (root, Debian 12): busybox-static cpio tcpdump zstd xz-utils, and qemu-system-x86 from
# bookworm-backports (the bookworm one conflicts with the image's qemu-utils).
# Env: TABBY_VM_CACHE (kernel cache, default /var/tmp/tabby-vm), QEMU_TIMEOUT (s, default 240).
# Exit status 0 iff the guest printed "FELIX-IPIP-RESULT: PASS".
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
FELIX_BIN=$(realpath "${1:?usage: $0 PATH/TO/tabby-felix}")
CACHE=${TABBY_VM_CACHE:-/var/tmp/tabby-vm}
WORK=$(mktemp -d /tmp/tabby-ipip-vm.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$CACHE"

# 1. Debian's kernel and the few modules the test loads, taken from the package without
#    installing it.
if [ ! -d "$CACHE/kroot/boot" ]; then
  PKG=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  (cd "$CACHE" && apt-get download "$PKG" >/dev/null)
  mkdir -p "$CACHE/kroot"
  dpkg-deb --fsys-tarfile "$CACHE/${PKG}"_*.deb | tar -x -C "$CACHE/kroot" --wildcards \
    './boot/vmlinuz-*' '*/kernel/net/ipv4/ipip.ko*' '*/kernel/net/ipv4/tunnel4.ko*' \
    '*/kernel/net/ipv4/ip_tunnel.ko*' '*/kernel/drivers/net/veth.ko*' \
    '*/kernel/net/bridge/bridge.ko*' '*/kernel/net/802/stp.ko*' '*/kernel/net/llc/llc.ko*'
  rm -f "$CACHE/${PKG}"_*.deb
fi
KVER=$(ls "$CACHE/kroot/boot" | sed -n 's/^vmlinuz-//p' | head -1)
MODDIR=$(ls -d "$CACHE"/kroot/*lib/modules/"$KVER"/kernel | head -1)

# 2. The initramfs.
R="$WORK/root"
mkdir -p "$R"/{bin,lib/modules,etc,proc,sys,dev,run,tmp}
cp /bin/busybox "$R/bin/busybox"
for m in net/llc/llc net/802/stp net/bridge/bridge net/ipv4/tunnel4 net/ipv4/ip_tunnel \
         net/ipv4/ipip drivers/net/veth; do
  f=$(ls "$MODDIR/$m.ko"* | head -1)
  case "$f" in
    *.xz) xz -dc "$f" > "$R/lib/modules/$(basename "$m").ko" ;;
    *.zst) zstd -qdc "$f" > "$R/lib/modules/$(basename "$m").ko" ;;
    *) cp "$f" "$R/lib/modules/" ;;
  esac
done
add_binary() { # a dynamically linked program and the libraries it loads
  cp -L "$1" "$R/bin/$(basename "$1")"
  ldd "$1" | grep -o '/[^ ]*' | while read -r lib; do
    mkdir -p "$R$(dirname "$lib")"; cp -L "$lib" "$R$lib"
  done
}
add_binary /bin/ip
add_binary "$(command -v tcpdump)"
add_binary "$FELIX_BIN"
strip "$R/bin/$(basename "$FELIX_BIN")" 2>/dev/null || true
echo 'root:x:0:0:root:/:/bin/sh' > "$R/etc/passwd"
echo 'root:x:0:' > "$R/etc/group"
cat > "$R/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /run /tmp /var
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev 2>/dev/null
/bin/busybox mount -t tmpfs tmp /run
/bin/busybox ln -sf /run /var/run
/bin/busybox --install -s /bin
export PATH=/bin
echo "GUEST-UP: kernel $(uname -r)"
sh /guest-ipip.sh 2>&1
/bin/busybox sync
/bin/busybox poweroff -f
INIT
chmod +x "$R/init"
cp "$HERE/guest-ipip.sh" "$R/guest-ipip.sh"
(cd "$R" && find . | cpio -o -H newc --quiet | gzip -1) > "$WORK/initramfs.gz"

# 3. Boot (TCG) and collect the verdict from the serial console.
timeout "${QEMU_TIMEOUT:-240}" qemu-system-x86_64 -accel tcg -cpu max -m 768 -smp 1 -nic none \
  -kernel "$CACHE/kroot/boot/vmlinuz-$KVER" -initrd "$WORK/initramfs.gz" \
  -append "console=ttyS0 quiet panic=-1 rdinit=/init" \
  -display none -monitor none -serial stdio -no-reboot </dev/null | tee "$WORK/console.log"
grep -q 'FELIX-IPIP-RESULT: PASS' "$WORK/console.log"
