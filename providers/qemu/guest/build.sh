#!/usr/bin/env bash
# Builds the test guest from Debian packages only, into OUT (a fresh dir):
#   OUT/vmlinuz      the kernel of linux-image-cloud-amd64
#   OUT/initrd.img   busybox + the virtio modules; mounts /dev/vda, switch_roots
#   OUT/root.qcow2   ext4 root: busybox, qemu-ga, sqlite3 (+ the libraries
#                    ldd lists), an init that starts the guest agent on
#                    /dev/ttyS1 and the SQLite writer on /dev/vdb (if present)
#   OUT/inputs       what went in (package versions), for the cache key
# Usage: build.sh OUT. Needs root only for nothing; needs mke2fs, qemu-img,
# cpio, gzip. The Rust helper (standby_provider_qemu::guest) caches OUT under
# a hash of this script and the package versions, under a lock.
set -euo pipefail
out=${1:?usage: build.sh OUT}
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

kernel=$(ls /boot/vmlinuz-*-cloud-amd64 2>/dev/null | sort -V | tail -n1)
[ -n "$kernel" ] || { echo "build.sh: no /boot/vmlinuz-*-cloud-amd64: install linux-image-cloud-amd64 (.ci/run does)" >&2; exit 2; }
kver=${kernel#/boot/vmlinuz-}
mods=/lib/modules/$kver
busybox=/bin/busybox
for tool in "$busybox" /usr/sbin/qemu-ga /usr/bin/sqlite3; do
    [ -x "$tool" ] || { echo "build.sh: $tool missing: run .ci/run to install the guest packages" >&2; exit 2; }
done
file -b "$busybox" 2>/dev/null | grep -q 'statically linked' || true

# --- initramfs ---------------------------------------------------------------
ird=$work/initrd
mkdir -p "$ird"/{bin,dev,proc,sys,newroot,lib/modules}
cp "$busybox" "$ird/bin/busybox"
ln -s busybox "$ird/bin/sh"
# virtio modules in dependency order (modinfo -F depends, checked on 6.1);
# virtio_net for VMs started with forwarded ports (else they have no NIC).
order="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk failover net_failover virtio_net"
for m in $order; do
    f=$(find "$mods" -name "$m.ko*" | head -n1)
    [ -n "$f" ] || { echo "build.sh: module $m not found under $mods" >&2; exit 2; }
    case "$f" in
        *.ko.xz) xz -dc "$f" >"$ird/lib/modules/$m.ko" ;;
        *.ko.zst) zstd -qdc "$f" >"$ird/lib/modules/$m.ko" ;;
        *) cp "$f" "$ird/lib/modules/$m.ko" ;;
    esac
done
cat >"$ird/init" <<INIT
#!/bin/sh
/bin/busybox --install -s /bin
mount -t devtmpfs dev /dev
mount -t proc proc /proc
mount -t sysfs sys /sys
for m in $order; do insmod /lib/modules/\$m.ko || echo "initrd: insmod \$m failed"; done
i=0
while [ ! -b /dev/vda ] && [ \$i -lt 200 ]; do usleep 20000; i=\$((i+1)); done
mount -t ext4 -o rw /dev/vda /newroot || { echo "initrd: cannot mount /dev/vda"; exec sh; }
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
INIT
chmod +x "$ird/init"
(cd "$ird" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initrd.img"

# --- root file system ----------------------------------------------------------
root=$work/root
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc/qemu,dev,proc,sys,run,tmp,data,var}
ln -s ../run "$root/var/run"
cp "$busybox" "$root/bin/busybox"
for a in $("$busybox" --list); do
    [ -e "$root/bin/$a" ] || ln -s busybox "$root/bin/$a"
done
cp /usr/sbin/qemu-ga "$root/usr/sbin/"
cp /usr/bin/sqlite3 "$root/usr/bin/"
# Shared libraries exactly as ldd lists them (paths kept, symlinks resolved).
for lib in $(ldd /usr/sbin/qemu-ga /usr/bin/sqlite3 | awk '/=> \//{print $3} /^\s*\/lib/{print $1}' | sort -u); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
# /lib64 is a symlink on Debian only in usrmerge layouts; ldd names /lib64/ld-linux.
[ -e "$root/lib64/ld-linux-x86-64.so.2" ] || { mkdir -p "$root/lib64"; cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/"; }

# qemu-ga's guest-shutdown runs /sbin/shutdown; busybox has poweroff.
cat >"$root/sbin/shutdown" <<'SH'
#!/bin/sh
sync
case " $* " in *" -r "*) exec reboot -f ;; esac
exec poweroff -f
SH
chmod +x "$root/sbin/shutdown"

# The SQLite writer: one order per transaction. It pauses when the freeze
# hook asks (writing the request's token to /run/writer.paused), so the count
# the hook records is the count in the frozen file system.
cat >"$root/usr/bin/writer" <<'SH'
#!/bin/sh
db=/data/orders.db
sqlite3 -cmd '.timeout 10000' "$db" 'PRAGMA journal_mode=WAL; CREATE TABLE IF NOT EXISTS orders(id INTEGER PRIMARY KEY, at TEXT NOT NULL, body TEXT NOT NULL);' >/dev/null
[ "$1" = --schema ] && exit 0
echo "writer: started" >/dev/console
while true; do
    if [ -e /run/writer.pause ]; then
        cat /run/writer.pause >/run/writer.paused.tmp && mv /run/writer.paused.tmp /run/writer.paused
        usleep 20000
        continue
    fi
    rm -f /run/writer.paused
    sqlite3 -cmd '.timeout 10000' "$db" "INSERT INTO orders(at, body) VALUES (strftime('%Y-%m-%dT%H:%M:%f','now'), hex(randomblob(64)));" || usleep 100000
done
SH
chmod +x "$root/usr/bin/writer"

# The guest agent's fsfreeze hook: pause the writer, record its order count
# in /data/freezes.log (so the frozen image carries it) and on the console,
# then let qemu-ga freeze; on thaw, resume the writer.
cat >"$root/etc/qemu/fsfreeze-hook" <<'SH'
#!/bin/sh
case "$1" in
freeze)
    [ -e /run/writer.pid ] || exit 0
    token=$$-$(cat /proc/uptime | cut -d' ' -f1)
    echo "$token" >/run/writer.pause
    i=0
    while [ "$(cat /run/writer.paused 2>/dev/null)" != "$token" ]; do
        i=$((i+1)); [ $i -lt 500 ] || { echo "hook: writer did not pause" >/dev/console; exit 1; }
        usleep 10000
    done
    n=$(sqlite3 -cmd '.timeout 10000' /data/orders.db 'PRAGMA wal_checkpoint(TRUNCATE);' 'SELECT count(*) FROM orders;' | tail -n1)
    echo "$n" >>/data/freezes.log
    echo "$n" >/run/last-freeze-count
    sync
    echo "freeze: orders=$n" >/dev/console
    ;;
thaw)
    rm -f /run/writer.pause /run/writer.paused
    echo "thaw" >/dev/console
    ;;
esac
exit 0
SH
chmod +x "$root/etc/qemu/fsfreeze-hook"

cat >"$root/sbin/init" <<'SH'
#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs run /run
mount -t tmpfs tmp /tmp
[ -e /dev/ttyS1 ] || mdev -s
hostname standby-guest
if [ -b /dev/vdb ] && grep -q 'standby.writer=1' /proc/cmdline; then
    # The schema exists before the agent answers, so a client that sees
    # the agent can query the table at once.
    mount -t ext4 /dev/vdb /data && /usr/bin/writer --schema && { /usr/bin/writer & echo $! >/run/writer.pid; }
fi
# A NIC exists only when standby forwards ports to this VM (user-mode
# networking, restricted): the address QEMU's slirp hands out, and a page
# on port 80 for http/tcp checks through the forwarded port.
if [ -e /sys/class/net/eth0 ]; then
    ip link set lo up
    ip link set eth0 up
    ip addr add 10.0.2.15/24 dev eth0
    mkdir -p /run/www && echo "standby-guest $(hostname) up" >/run/www/index.html
    httpd -p 80 -h /run/www
fi
/usr/sbin/qemu-ga -m isa-serial -p /dev/ttyS1 -F -t /run -d -f /run/qemu-ga.pid
echo "standby-guest: up" >/dev/console
while true; do wait; sleep 60; done
SH
chmod +x "$root/sbin/init"

mke2fs -q -t ext4 -d "$root" -L root "$work/root.raw" 64M
qemu-img convert -q -f raw -O qcow2 "$work/root.raw" "$work/root.qcow2"

cp "$kernel" "$out/vmlinuz"
cp "$work/initrd.img" "$out/initrd.img"
cp "$work/root.qcow2" "$out/root.qcow2"
echo "kernel $kver" >"$out/inputs"
