# Run by installpkg/upgradepkg from the root it installs into: paths have no
# leading slash. New configuration arrives as *.new and never overwrites a
# file the administrator has; look for leftover .new files afterwards
# (slackpkg new-config lists them).

# Keep the installed file if it exists (the .new waits beside it unless the
# two are the same); otherwise the .new becomes the file.
config() {
  NEW="$1"
  OLD="$(dirname $NEW)/$(basename $NEW .new)"
  if [ ! -r $OLD ]; then
    mv $NEW $OLD
  elif [ "$(cat $OLD | md5sum)" = "$(cat $NEW | md5sum)" ]; then
    rm $NEW
  fi
}

# As config(), but the .new first takes the mode of the installed file, so an
# rc script the administrator turned off (chmod -x) stays off, and on stays on.
preserve_perms() {
  NEW="$1"
  OLD="$(dirname $NEW)/$(basename $NEW .new)"
  if [ -e $OLD ]; then
    cp -a $OLD ${NEW}.incoming
    cat $NEW > ${NEW}.incoming
    mv ${NEW}.incoming $NEW
  fi
  config $NEW
}

# This package replaces the shell rc.libvirt that libvirt's package installs.
# If that script is the one in place, it is set aside (its contents kept as
# rc.libvirt.shell, not executable) and ours takes its place with its mode.
if [ -e etc/rc.d/rc.libvirt ] && [ -e etc/rc.d/rc.libvirt.new ] \
   && ! grep -q '^# rc-libvirt shim' etc/rc.d/rc.libvirt; then
  SHELL_COPY=etc/rc.d/rc.libvirt.shell
  N=1
  while [ -e $SHELL_COPY ]; do
    SHELL_COPY=etc/rc.d/rc.libvirt.shell.$N
    N=$((N + 1))
  done
  cp -a etc/rc.d/rc.libvirt $SHELL_COPY
  chmod a-x $SHELL_COPY
  cat etc/rc.d/rc.libvirt.new > etc/rc.d/rc.libvirt
  rm etc/rc.d/rc.libvirt.new
  echo "rc-libvirt: /etc/rc.d/rc.libvirt replaced; the previous script is in /$SHELL_COPY."
  echo "rc-libvirt: settings you made in it (TIMEOUT...) now go in /etc/default/libvirt."
fi

if [ -e etc/rc.d/rc.libvirt.new ]; then
  preserve_perms etc/rc.d/rc.libvirt.new
fi
config etc/default/libvirt.new
