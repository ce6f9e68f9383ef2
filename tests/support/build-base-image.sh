#!/bin/sh
# Builds a local stand-in for the node image's base (debian:bookworm-slim)
# without any registry: Debian's libc6 and libgcc-s1 (all the iarnet binary
# links against) plus busybox-static for a shell, imported as one layer.
#
#   tests/support/build-base-image.sh [image] [cache-dir]
#
# It serves as both build arguments of the Dockerfile when the build context
# carries prebuilt/iarnet (the build stage then only needs a shell):
#
#   docker build --build-arg RUST_IMAGE=iarnet-local/runtime-base:bookworm \
#       --build-arg RUNTIME_IMAGE=iarnet-local/runtime-base:bookworm ...
#
# The packages come from the host's apt sources, so the host should run the
# Debian release the binary is built on (bookworm). Idempotent (nothing
# happens when the image exists) and safe to run from several processes at
# once (one flock around the whole build).
set -eu

IMAGE="${1:-iarnet-local/runtime-base:bookworm}"
CACHE="${2:-${IARNET_BASE_IMAGE_CACHE:-/tmp/iarnet-base-image}}"
PACKAGES="libc6 libgcc-s1 busybox-static"

have_image() {
    docker image inspect "$IMAGE" >/dev/null 2>&1
}

if have_image; then
    exit 0
fi

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9

# Another process may have built it while this one waited for the lock.
if have_image; then
    exit 0
fi

cd "$CACHE"
for pkg in $PACKAGES; do
    if ! ls "${pkg}"_*.deb >/dev/null 2>&1; then
        apt-get download "$pkg" >&2 || {
            echo "build-base-image: 'apt-get download $pkg' failed; an apt mirror must be reachable (or put ${pkg}_*.deb in $CACHE)" >&2
            exit 1
        }
    fi
done

rm -rf rootfs
mkdir rootfs
for pkg in $PACKAGES; do
    dpkg-deb -x "$(ls "${pkg}"_*.deb | head -n 1)" rootfs
done
# What a slim base leaves out too: documentation and charset converters.
rm -rf rootfs/usr/share/doc rootfs/usr/share/man rootfs/usr/share/lintian \
    rootfs/usr/share/locale rootfs/usr/lib/x86_64-linux-gnu/gconv \
    rootfs/usr/lib/aarch64-linux-gnu/gconv

bb=rootfs/bin/busybox
if [ ! -x "$bb" ]; then
    echo "build-base-image: busybox-static has no bin/busybox" >&2
    exit 1
fi
# One symlink per applet (busybox finds the applet by argv[0]).
for applet in $("$bb" --list); do
    [ "$applet" = busybox ] && continue
    [ -e "rootfs/bin/$applet" ] || ln -s busybox "rootfs/bin/$applet"
done

mkdir -p rootfs/tmp rootfs/etc rootfs/proc rootfs/sys rootfs/dev rootfs/root \
    rootfs/usr/local/bin rootfs/var/lib
chmod 1777 rootfs/tmp
echo 'root:x:0:0:root:/root:/bin/sh' >rootfs/etc/passwd
echo 'root:x:0:' >rootfs/etc/group
# glibc resolves names through nsswitch; Docker supplies hosts and resolv.conf.
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >rootfs/etc/nsswitch.conf

tar -C rootfs -c . | docker import \
    --change 'CMD ["/bin/sh"]' \
    --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin' \
    - "$IMAGE" >/dev/null
rm -rf rootfs
have_image
