#!/usr/bin/env bash
# Decide which base image the service images build FROM, building one locally when no
# registry can supply it, and print its reference on stdout (progress goes to stderr).
#
#   docker/base-image.sh [auto|airgap|registry]     # default: auto
#
#   registry  use $REGISTRY_BASE (official slim Python 3.11), pulling it if absent.
#   airgap    use $AIRGAP_BASE, building it first if absent: a minimal Debian root
#             filesystem with python3 made by debootstrap from the host's apt sources
#             (docker/apt-mirror.sh), trimmed and imported with `docker import`.
#   auto      $REGISTRY_BASE if it is present or can be pulled, else $AIRGAP_BASE
#             if it is present, else build $AIRGAP_BASE.
#
# An image that already exists is never rebuilt: remove it (docker rmi) to force that.
# Needs root (or sudo) for debootstrap; installs debootstrap with apt-get if missing.
set -euo pipefail

mode="${1:-auto}"
REGISTRY_BASE="${REGISTRY_BASE:-python:3.11-slim-bookworm}"
AIRGAP_BASE="${AIRGAP_BASE:-lab/python-base:3.11-bookworm}"
SUITE="${SUITE:-bookworm}"
# python3-venv brings ensurepip (hence pip inside a venv); ca-certificates lets the
# image talk TLS should a user add network steps. Nothing else: keep the image small.
PACKAGES="python3,python3-venv,ca-certificates"
# Seconds a pull may take before we call the registry unreachable: a reachable one
# answers the manifest request in well under this; DNS failures fail at once.
PULL_TIMEOUT_S="${PULL_TIMEOUT_S:-120}"

say() { echo "base-image: $*" >&2; }
have_image() { docker image inspect "$1" >/dev/null 2>&1; }

as_root() {
  if [[ "$(id -u)" == 0 ]]; then "$@"; else sudo "$@"; fi
}

build_airgap() {
  local image="$1" mirror rootfs start
  start=$SECONDS
  mirror="${MIRROR:-$("$(dirname "$0")/apt-mirror.sh" "$SUITE")}"
  if ! command -v debootstrap >/dev/null; then
    say "installing debootstrap with apt-get"
    as_root apt-get install -y -qq debootstrap >&2 || {
      as_root apt-get update -qq >&2 && as_root apt-get install -y -qq debootstrap >&2
    }
  fi
  # Not /tmp: it may be a tmpfs mounted nodev, where debootstrap cannot make /dev nodes.
  rootfs="$(mktemp -d "${ROOTFS_TMPDIR:-/var/tmp}/lab-rootfs.XXXXXX")"
  # shellcheck disable=SC2064  # expand now: the trap must remove this very directory
  trap "as_root rm -rf '$rootfs'" EXIT
  say "debootstrap --variant=minbase $SUITE from $mirror (about a minute)"
  as_root debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$mirror" \
    >"$rootfs.log" 2>&1 || { tail -n 30 "$rootfs.log" >&2; rm -f "$rootfs.log"; exit 1; }
  rm -f "$rootfs.log"

  # debootstrap takes one mirror; security and point-update fixes (python3.11 gets
  # them) live in other suites, often on another host. Add whichever the host uses.
  local extra="" suite uri
  for suite in "$SUITE-updates" "$SUITE-security"; do
    uri="$("$(dirname "$0")/apt-mirror.sh" "$suite" 2>/dev/null)" || continue
    extra+="deb $uri $suite main"$'\n'
  done
  if [[ -n "$extra" && "${SECURITY_UPDATES:-1}" == 1 ]]; then
    say "apt-get upgrade from: $(echo "$extra" | awk 'NF {printf "%s %s; ", $2, $3}')"
    printf 'deb %s %s main\n%s' "$mirror" "$SUITE" "$extra" | as_root tee "$rootfs/etc/apt/sources.list" >/dev/null
    as_root chroot "$rootfs" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get upgrade -y -qq' \
      >"$rootfs.log" 2>&1 || { tail -n 30 "$rootfs.log" >&2; rm -f "$rootfs.log"; exit 1; }
    rm -f "$rootfs.log"
  fi

  say "trimming docs, man pages, locales, apt lists and caches"
  as_root sh -c "
    cd '$rootfs'
    find usr/share/doc -mindepth 1 -not -name copyright -not -type d -delete
    find usr/share/doc -mindepth 1 -type d -empty -delete
    rm -rf usr/share/man/* usr/share/info/* usr/share/lintian/* usr/share/linda/*
    find usr/share/locale -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
    rm -rf var/lib/apt/lists/* var/cache/apt/*.bin var/cache/apt/archives/*.deb var/cache/debconf/*-old var/log/* tmp/*
    # debootstrap copies the host's resolver config and name; Docker provides both at
    # run time, so the image must not carry the build host's. (etc/apt/sources.list
    # keeps the host's mirror on purpose: an image extended on this network can use it.)
    rm -f etc/resolv.conf etc/hostname
    # Keep later apt installs (users extending the image) as lean as this one.
    printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
      'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' \
      'path-exclude /usr/share/locale/*' > etc/dpkg/dpkg.cfg.d/01-lab-nodoc
  "

  say "docker import as $image"
  as_root tar -C "$rootfs" --numeric-owner -c . | docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' \
    --message "debootstrap --variant=minbase --include=$PACKAGES $SUITE ($mirror)" \
    - "$image" >/dev/null
  say "built $image in $((SECONDS - start)) s ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'))"
}

case "$mode" in
  registry)
    have_image "$REGISTRY_BASE" || docker pull "$REGISTRY_BASE" >&2
    echo "$REGISTRY_BASE"
    ;;
  airgap)
    have_image "$AIRGAP_BASE" || build_airgap "$AIRGAP_BASE"
    echo "$AIRGAP_BASE"
    ;;
  auto)
    if have_image "$REGISTRY_BASE"; then
      echo "$REGISTRY_BASE"
    elif have_image "$AIRGAP_BASE"; then
      say "using the locally built $AIRGAP_BASE (docker rmi it to try the registry again)"
      echo "$AIRGAP_BASE"
    elif timeout "$PULL_TIMEOUT_S" docker pull -q "$REGISTRY_BASE" >/dev/null 2>&1; then
      echo "$REGISTRY_BASE"
    else
      say "cannot pull $REGISTRY_BASE (no registry reachable): building $AIRGAP_BASE locally"
      build_airgap "$AIRGAP_BASE"
      echo "$AIRGAP_BASE"
    fi
    ;;
  *)
    echo "usage: $0 [auto|airgap|registry]" >&2
    exit 2
    ;;
esac
