# Run by removepkg (Slackware 15.0 and later) from the root it removes from,
# after the package's files are gone: paths have no leading slash.
#
# /etc/rc.d/rc.libvirt is rc-libvirt's small script, which runs the program
# this package just took away: without this, libvirt would no longer start
# at boot. libvirt's own script goes back in its place, with the mode our
# script had (turned off with chmod -x, it stays off): the newest of the one
# a libvirt upgrade left beside ours (rc.libvirt.new) and the copies doinst.sh
# kept (rc.libvirt.shell, rc.libvirt.shell.N).
#
# upgradepkg runs this script too, when it removes the old package of an
# rc-libvirt upgrade or reinstall: the new package is then already in place
# (its program, its entry in the package database) and nothing is done here;
# the new package's doinst.sh looks after rc.libvirt.

RC=etc/rc.d/rc.libvirt
PROGRAM=usr/libexec/rc-libvirt/rc.libvirt

is_ours() {
  grep -q '^# rc-libvirt shim' "$1" 2>/dev/null
}

# Another rc-libvirt package is installed: the one an upgrade brings.
still_installed() {
  [ -e $PROGRAM ] && return 0
  for entry in var/lib/pkgtools/packages/rc-libvirt-*; do
    [ -e "$entry" ] || continue
    base=${entry##*/}
    base=${base%-*}
    base=${base%-*}
    base=${base%-*}
    [ "$base" = rc-libvirt ] && return 0
  done
  return 1
}

if ! still_installed; then
  # A newer script of ours that waited beside the one in place: it goes too,
  # or "slackpkg new-config" would offer it over libvirt's.
  if [ -f $RC.new ] && is_ours $RC.new; then
    rm -f $RC.new
  fi
  if [ -f $RC ] && is_ours $RC; then
    NEWEST=
    for f in $RC.new $RC.shell $RC.shell.*; do
      [ -f "$f" ] || continue
      is_ours "$f" && continue
      if [ -z "$NEWEST" ] || [ "$f" -nt "$NEWEST" ]; then
        NEWEST=$f
      fi
    done
    if [ -n "$NEWEST" ]; then
      # The mode and owner of ours, the contents of libvirt's.
      cp -p $RC $RC.incoming
      cat "$NEWEST" > $RC.incoming
      mv $RC.incoming $RC
      rm -f "$NEWEST"
      echo "rc-libvirt: /$RC is libvirt's script again (it was /$NEWEST), with the mode rc-libvirt's had."
      for f in $RC.new $RC.shell $RC.shell.*; do
        [ -f "$f" ] || continue
        echo "rc-libvirt: /$f is an older copy of an rc.libvirt: delete it when you no longer need it."
      done
    else
      echo "rc-libvirt: WARNING: /$RC is still rc-libvirt's script and its program is gone:"
      echo "rc-libvirt: libvirt will not start at boot. No copy of libvirt's script was found"
      echo "rc-libvirt: (/$RC.new, /$RC.shell). To get it back, reinstall libvirt's package"
      echo "rc-libvirt: (upgradepkg --reinstall libvirt-*.t?z), then move /$RC.new over /$RC."
    fi
  fi
fi
