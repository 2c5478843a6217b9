#!/usr/bin/env bash
# Build the local base images that submissions start FROM (no registry is needed):
#   proctor/busybox:latest  Debian's busybox-static, imported (seconds)
#   proctor/python:3.11     a minimal Debian bookworm with python3 and numpy (about a minute)
# Usage: base-images.sh [--force] [--only busybox|python]
set -euo pipefail

say() { echo "proctor: $*" >&2; }
force=0
only=""
while [ $# -gt 0 ]; do
    case "$1" in
        --force) force=1 ;;
        --only) only="$2"; shift ;;
        *) say "unknown argument: $1"; exit 2 ;;
    esac
    shift
done

busybox_image=proctor/busybox:latest
python_image=proctor/python:3.11
mirror="${PROCTOR_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

have() { [ "$force" = 0 ] && docker image inspect "$1" >/dev/null 2>&1; }
apt_install() {
    say "installing $*"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
}

build_busybox() {
    if have "$busybox_image"; then return; fi
    dpkg -s busybox-static >/dev/null 2>&1 || apt_install busybox-static
    say "building $busybox_image"
    local root="$work/busybox"
    mkdir -p "$root/bin" "$root/etc" "$root/tmp"
    chmod 1777 "$root/tmp"
    cp /bin/busybox "$root/bin/busybox"
    for applet in $("$root/bin/busybox" --list); do
        [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
    tar -C "$root" -c . | docker import \
        --change 'ENV PATH=/bin' \
        --change 'CMD ["/bin/sh"]' \
        --change 'LABEL org.proctor.base=1' \
        - "$busybox_image" >/dev/null
    say "$busybox_image: $(docker image inspect --format '{{.Id}}' "$busybox_image")"
}

build_python() {
    if have "$python_image"; then return; fi
    command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
    say "building $python_image with debootstrap (about a minute)"
    local root="$work/python"
    debootstrap --variant=minbase --include=python3,python3-numpy bookworm "$root" "$mirror" \
        >"$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
        "$root"/usr/share/doc "$root"/usr/share/man "$root"/usr/share/locale
    tar -C "$root" --numeric-owner -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        --change 'LABEL org.proctor.base=1' \
        - "$python_image" >/dev/null
    say "$python_image: $(docker image inspect --format '{{.Id}}' "$python_image")"
}

case "$only" in
    "") build_busybox; build_python ;;
    busybox) build_busybox ;;
    python) build_python ;;
    *) say "--only takes busybox or python"; exit 2 ;;
esac
