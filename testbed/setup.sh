#!/usr/bin/env bash
# Prepares this machine for rc-libvirt's integration tests (Debian 12, as root):
#   1. installs QEMU, libvirt and the tools the tests use (apt);
#   2. prepares libvirtd to be run by hand as root, without systemd;
#   3. builds the test guest (a Debian cloud kernel and a busybox initramfs
#      running testbed/guest/init) into .cache/testguest/.
# Safe to run again: every step checks first and skips what is already done.
# Usage: bash testbed/setup.sh
# Environment: RCL_TESTGUEST_DIR overrides where the guest is built.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive LC_ALL=C

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GUEST_DIR=${RCL_TESTGUEST_DIR:-$REPO_ROOT/.cache/testguest}
GUEST_INIT=$REPO_ROOT/testbed/guest/init
KERNEL_META=linux-image-cloud-amd64
PACKAGES=(qemu-system-x86 qemu-utils libvirt-daemon libvirt-daemon-driver-qemu
  libvirt-clients busybox-static cpio groff-base man-db kmod procps util-linux time)
BACKUP_SUFFIX=.rcl-testbed.orig

say() { printf '==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
die() { printf 'testbed/setup.sh: error: %s\n' "$*" >&2; exit 1; }

[[ $EUID -eq 0 ]] || die "run me as root (I install packages and write /etc/libvirt)"

# One setup at a time on this host (apt and a shared .cache would clash).
exec 9>/run/rc-libvirt-testbed-setup.lock
if ! flock -n 9; then
  say "waiting for another testbed/setup.sh to finish"
  flock -w 1800 9 || die "another testbed/setup.sh has run for 30 minutes"
fi

APT_UPDATED=0
apt_update_once() {
  ((APT_UPDATED)) && return 0
  say "apt-get update"
  apt-get update -q
  APT_UPDATED=1
}

is_installed() {
  [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

install_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    is_installed "$p" || missing+=("$p")
  done
  if ((${#missing[@]} == 0)); then
    say "packages: all ${#PACKAGES[@]} present, nothing to install"
    return 0
  fi
  say "packages: installing ${missing[*]}"
  apt_update_once
  apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"
}

# Files this run created or already backed up: no (further) backup needed.
declare -A TOUCHED=()

# Keeps one copy of FILE as it was before this script first changed it.
backup_once() {
  local file=$1
  [[ -n ${TOUCHED[$file]:-} ]] && return 0
  TOUCHED[$file]=1
  if [[ -s $file && ! -e $file$BACKUP_SUFFIX ]]; then
    cp -p -- "$file" "$file$BACKUP_SUFFIX"
    note "backup: $file$BACKUP_SUFFIX"
  fi
}

# Sets KEY = VALUE in a libvirt-style config FILE: changes an active setting,
# else appends one. Leaves the file alone when it already says so.
set_conf() {
  local file=$1 key=$2 value=$3 current
  current=$(sed -n -E "s/^[[:space:]]*$key[[:space:]]*=[[:space:]]*(.*[^[:space:]])[[:space:]]*$/\1/p" "$file" | tail -n 1)
  if [[ $current == "$value" ]]; then
    note "$file: $key = $value (already)"
    return 0
  fi
  backup_once "$file"
  if [[ -n $current ]]; then
    sed -i -E "s/^[[:space:]]*$key[[:space:]]*=.*/$key = $value/" "$file"
    note "$file: $key = $value (was $current)"
  else
    printf '%s = %s\n' "$key" "$value" >>"$file"
    note "$file: $key = $value (added)"
  fi
}

prepare_libvirt() {
  say "libvirt: preparing to run libvirtd by hand as root"
  if id -u libvirt-qemu >/dev/null 2>&1; then
    note "user libvirt-qemu exists"
  else
    useradd -r -M -s /usr/sbin/nologin libvirt-qemu
    note "user libvirt-qemu created (libvirtd's QEMU driver needs it)"
  fi

  mkdir -p /etc/libvirt
  local conf
  for conf in libvirtd virtlogd virtlockd qemu; do
    if [[ ! -e /etc/libvirt/$conf.conf ]]; then
      : >"/etc/libvirt/$conf.conf"
      TOUCHED[/etc/libvirt/$conf.conf]=1
      note "/etc/libvirt/$conf.conf created (empty; the daemons die without it)"
    fi
  done
  # rc.libvirt runs `libvirtd -l`: without certificates TLS must be off.
  set_conf /etc/libvirt/libvirtd.conf listen_tls 0
  # Guests run as root (no libvirt-qemu-owned storage here).
  set_conf /etc/libvirt/qemu.conf user '"root"'
  set_conf /etc/libvirt/qemu.conf group '"root"'

  mkdir -p /var/log/libvirt /var/lib/libvirt/qemu/save /run/libvirt
  note "directories: /var/log/libvirt /var/lib/libvirt/qemu/save /run/libvirt"

  # Debian's libvirt-daemon-config-network autostarts the 'default' network,
  # which needs dnsmasq. Without it libvirtd only logs an error and starts
  # anyway, so this is left as it is.
  local autostart=/etc/libvirt/qemu/networks/autostart/default.xml
  if [[ -e $autostart ]]; then
    if command -v dnsmasq >/dev/null; then
      note "network 'default' autostarts (dnsmasq present)"
    else
      note "network 'default' autostarts without dnsmasq: libvirtd logs an error, harmless"
    fi
  fi
}

# Prints the exact kernel package behind the meta package, e.g.
# linux-image-6.1.0-56-cloud-amd64.
kernel_package() {
  apt-cache depends "$KERNEL_META" 2>/dev/null |
    sed -n -E 's/^[[:space:]]*Depends: (linux-image-[0-9][^[:space:]]*)$/\1/p' | head -n 1
}

# Copies the module NAME (path under kernel/, without .ko) and, first, its
# dependencies into the initramfs, appending each to the load order once.
add_module() {
  local modroot=$1 rel=$2 initrd_root=$3 file base deps dep depfile
  file=$(find "$modroot/kernel" -path "$modroot/kernel/$rel.ko*" -print -quit)
  if [[ -z $file ]]; then
    base=${rel##*/}
    if grep -qE "/${base//[-_]/[-_]}\.ko\$" "$modroot/modules.builtin" 2>/dev/null; then
      note "module $rel: built into the kernel"
      return 0
    fi
    die "module $rel: neither a module nor built in (kernel tree $modroot)"
  fi
  base=$(basename "$file")
  base=${base%%.ko*}
  if grep -qx "$base.ko" "$initrd_root/lib/modules/load-order" 2>/dev/null; then
    return 0
  fi
  deps=$(modinfo -F depends "$file" | tr ',' ' ')
  for dep in $deps; do
    depfile=$(find "$modroot/kernel" -regextype posix-extended \
      -regex ".*/${dep//[-_]/[-_]}\.ko(\.(xz|zst|gz))?" -print -quit)
    [[ -n $depfile ]] || die "module $rel needs $dep, which is not in $modroot"
    depfile=${depfile#"$modroot/kernel/"}
    add_module "$modroot" "${depfile%%.ko*}" "$initrd_root"
  done
  case $file in
    *.ko) cp "$file" "$initrd_root/lib/modules/$base.ko" ;;
    *.ko.xz) xz -dc "$file" >"$initrd_root/lib/modules/$base.ko" ;;
    *.ko.zst) zstd -dcq "$file" >"$initrd_root/lib/modules/$base.ko" ;;
    *.ko.gz) gzip -dc "$file" >"$initrd_root/lib/modules/$base.ko" ;;
    *) die "module $file: unknown compression" ;;
  esac
  echo "$base.ko" >>"$initrd_root/lib/modules/load-order"
  note "module $rel: $(basename "$file")${deps:+ (needs$(printf ' %s' $deps))}"
}

build_guest() {
  say "test guest: $GUEST_DIR"
  [[ -r $GUEST_INIT ]] || die "missing $GUEST_INIT"
  local kpkg
  kpkg=$(kernel_package)
  if [[ -z $kpkg ]]; then
    apt_update_once
    kpkg=$(kernel_package)
  fi
  [[ -n $kpkg ]] || die "apt-cache depends $KERNEL_META names no kernel package"
  local kver=${kpkg#linux-image-}
  note "kernel package: $kpkg"

  local stamp_want
  stamp_want=$(printf '%s\n' "kernel=$kpkg" \
    "busybox=$(dpkg-query -W -f='${Version}' busybox-static)" \
    "init=$(sha256sum <"$GUEST_INIT" | cut -d' ' -f1)" \
    "setup=$(sha256sum <"${BASH_SOURCE[0]}" | cut -d' ' -f1)")
  if [[ -s $GUEST_DIR/vmlinuz && -s $GUEST_DIR/initrd.gz && -e $GUEST_DIR/stamp &&
    $(cat "$GUEST_DIR/stamp") == "$stamp_want" ]]; then
    note "up to date (stamp matches), not rebuilding"
    return 0
  fi

  mkdir -p "$GUEST_DIR/debs"
  local deb
  deb=$(find "$GUEST_DIR/debs" -name "${kpkg}_*.deb" -print -quit)
  if [[ -z $deb ]]; then
    note "downloading $kpkg (not installing it)"
    if ! (cd "$GUEST_DIR/debs" && apt-get download -q -o APT::Sandbox::User=root "$kpkg"); then
      # The lists may name a version the mirror no longer has.
      apt_update_once
      kpkg=$(kernel_package)
      kver=${kpkg#linux-image-}
      (cd "$GUEST_DIR/debs" && apt-get download -q -o APT::Sandbox::User=root "$kpkg")
    fi
    deb=$(find "$GUEST_DIR/debs" -name "${kpkg}_*.deb" -print -quit)
    [[ -n $deb ]] || die "apt-get download $kpkg left no .deb"
  else
    note "using cached $(basename "$deb")"
  fi
  # Older kernel packages are of no use any more.
  find "$GUEST_DIR/debs" -name 'linux-image-*.deb' ! -name "${kpkg}_*.deb" -delete

  local work=$GUEST_DIR/work
  rm -rf "$work"
  mkdir -p "$work"
  note "extracting with dpkg-deb -x"
  dpkg-deb -x "$deb" "$work/kernel"
  local modroot=$work/kernel/lib/modules/$kver
  [[ -d $modroot ]] || die "no $modroot in $deb"

  local root=$work/initramfs
  mkdir -p "$root"/{bin,dev,proc,sys,tmp,fill,lib/modules}
  : >"$root/lib/modules/load-order"
  cp /bin/busybox "$root/bin/busybox"
  ln -s busybox "$root/bin/sh"
  install -m 0755 "$GUEST_INIT" "$root/init"
  # The kernel opens /dev/console for /init before devtmpfs is mounted; /init
  # redirects again after mounting it, so this node is only a nicety.
  mknod -m 0600 "$root/dev/console" c 5 1 2>/dev/null || note "mknod refused: /init will redirect itself"
  add_module "$modroot" drivers/input/evdev "$root"
  add_module "$modroot" drivers/acpi/button "$root"

  note "packing initrd.gz (cpio -H newc, gzip)"
  (cd "$root" && find . -print0 | LC_ALL=C sort -z |
    cpio --quiet --null -o -H newc -R 0:0) | gzip -9 >"$work/initrd.gz"
  cp "$work/kernel/boot/vmlinuz-$kver" "$work/vmlinuz"
  mv -f "$work/vmlinuz" "$GUEST_DIR/vmlinuz"
  mv -f "$work/initrd.gz" "$GUEST_DIR/initrd.gz"
  rm -rf "$work"
  printf '%s\n' "$stamp_want" >"$GUEST_DIR/stamp"
  note "built $GUEST_DIR/vmlinuz ($(du -h "$GUEST_DIR/vmlinuz" | cut -f1))" \
    "and $GUEST_DIR/initrd.gz ($(du -h "$GUEST_DIR/initrd.gz" | cut -f1))"
}

install_packages
prepare_libvirt
build_guest
say "done: the integration tests can run (npx vitest run --project integration)"
