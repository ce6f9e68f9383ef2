#!/bin/sh
# Builds the image the Docker provider tests run, without any registry:
# Debian's statically linked busybox, imported as a one-layer image.
#
#   tests/support/build-test-image.sh [image] [cache-dir]
#
# Idempotent (nothing happens when the image exists) and safe to run from
# several test binaries at once (one flock around the whole build).
set -eu

IMAGE="${1:-iarnet-test/busybox:1}"
CACHE="${2:-${IARNET_TEST_IMAGE_CACHE:-/tmp/iarnet-test-image}}"

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
deb=$(ls busybox-static_*.deb 2>/dev/null | head -n 1 || true)
if [ -z "$deb" ]; then
    apt-get download busybox-static >&2 || {
        echo "build-test-image: 'apt-get download busybox-static' failed; an apt mirror must be reachable (or put busybox-static_*.deb in $CACHE)" >&2
        exit 1
    }
    deb=$(ls busybox-static_*.deb | head -n 1)
fi

rm -rf rootfs
mkdir rootfs
dpkg-deb -x "$deb" rootfs
bb=rootfs/bin/busybox
if [ ! -x "$bb" ]; then
    echo "build-test-image: $deb has no bin/busybox" >&2
    exit 1
fi

# One symlink per applet, under bin/ (busybox finds the applet by argv[0]).
for applet in $("$bb" --list); do
    [ "$applet" = busybox ] && continue
    [ -e "rootfs/bin/$applet" ] || ln -s busybox "rootfs/bin/$applet"
done
mkdir -p rootfs/tmp rootfs/etc rootfs/proc rootfs/sys rootfs/dev
chmod 1777 rootfs/tmp
[ -e rootfs/etc/passwd ] || echo 'root:x:0:0:root:/root:/bin/sh' >rootfs/etc/passwd
[ -e rootfs/etc/group ] || echo 'root:x:0:' >rootfs/etc/group

tar -C rootfs -c . | docker import \
    --change 'CMD ["/bin/sh"]' \
    --change 'ENV PATH=/bin:/sbin:/usr/bin:/usr/sbin' \
    - "$IMAGE" >/dev/null
rm -rf rootfs
have_image
