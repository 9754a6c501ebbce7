#!/bin/sh
# build.sh -- the second half of `make deb`: B/farm_VERSION_ARCH.deb from what
# `make install PREFIX=/usr DESTDIR=B/deb/debian/farm` put in the staging tree (the
# Makefile runs that first: one list of installed files, the install rule's).
#
# What this adds to make install, as debhelper would (dh_install, dh_strip,
# dh_makeshlibs, dh_shlibdeps, dh_installdocs, dh_installchangelogs, dh_gencontrol,
# dh_md5sums, dh_builddeb), with dpkg's own tools and no debian/ at the top of the
# tree (the tree's top level is fixed; B/deb is the debian/ dpkg-* want):
# - the libraries, farm.pc and the Lua module move from /usr/lib to
#   /usr/lib/MULTIARCH (lua5.4 looks in /usr/lib/MULTIARCH/lua/5.4); farm.pc's libdir
#   follows; the static libraries stay with make install (no -dev package here);
# - the man page is gzipped, copyright and changelog.gz go to /usr/share/doc/farm
#   (and lintian-overrides, with the reasons, to /usr/share/lintian/overrides/farm),
#   and farm-node.service to /lib/systemd/system, made from nodes/farm-node.service
#   with ExecStart at /usr/bin/farm;
# - ELF files are stripped as dh_strip does (--strip-unneeded for the libraries);
# - DEBIAN/shlibs names libfarm.so.SOMAJOR, DEBIAN/triggers runs ldconfig;
# - Depends: dpkg-shlibdeps over the ELF files, and over a stub linked to the
#   sonames farm loads with dlopen (the *_SONAME defines in core/: libssh2 for
#   ssh:// hosts, libedit for farm repl), which the binaries do not record;
# - DEBIAN/control by dpkg-gencontrol (version from scripts/deb/changelog, which
#   must match the Makefile's VERSION), DEBIAN/md5sums, then dpkg-deb
#   --root-owner-group: every file root's.
#
# Environment (from the Makefile): B, VERSION, SOVER, SOMAJOR; CC.
set -eu
umask 022
cd "$(dirname "$0")/../.."
: "${B:?}" "${VERSION:?}" "${SOVER:?}" "${SOMAJOR:?}"
CC=${CC:-cc}

die() { echo "make deb: $*" >&2; exit 1; }

for t in dpkg-deb dpkg-shlibdeps dpkg-gencontrol dpkg-parsechangelog dpkg-architecture strip gzip; do
  command -v "$t" >/dev/null 2>&1 || die "$t is missing: run scripts/deps.sh as root (it installs dpkg-dev)"
done
said=$(dpkg-parsechangelog -l scripts/deb/changelog -SVersion)
[ "$said" = "$VERSION" ] ||
  die "scripts/deb/changelog's latest entry is $said but the Makefile's VERSION is $VERSION: add an entry for $VERSION at its top"

ARCH=$(dpkg --print-architecture)
MA=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
stage=$B/deb
root=$stage/debian/farm
[ -x "$root/usr/bin/farm" ] || die "$root/usr/bin/farm is missing: run make deb, not this script"
lib=$root/usr/lib/$MA

# the libraries, farm.pc and the Lua module: /usr/lib -> /usr/lib/MULTIARCH
mkdir -p "$lib"
for f in "$root"/usr/lib/*; do
  [ "$f" = "$lib" ] || mv "$f" "$lib/"
done
rm -f "$lib"/*.a
pc=$lib/pkgconfig/farm.pc
sed -i "s|^libdir=\${exec_prefix}/lib\$|libdir=\${exec_prefix}/lib/$MA|" "$pc"
grep -qx "libdir=\${exec_prefix}/lib/$MA" "$pc" ||
  die "scripts/farm.pc.in has no line libdir=\${exec_prefix}/lib to point at /usr/lib/$MA"
[ -e "$lib/lua/5.4/farm.so" ] || die "make install put no Lua module in /usr/lib/lua/5.4"

# docs, the man page, the systemd unit
doc=$root/usr/share/doc/farm
mkdir -p "$doc"
install -m 644 scripts/deb/copyright "$doc/copyright"
install -D -m 644 scripts/deb/lintian-overrides "$root/usr/share/lintian/overrides/farm"
gzip -9n < scripts/deb/changelog > "$doc/changelog.gz"
gzip -9n "$root/usr/share/man/man1/farm.1"
unit=$root/lib/systemd/system/farm-node.service
mkdir -p "$(dirname "$unit")"
sed -e 's|^ExecStart=/usr/local/bin/farm |ExecStart=/usr/bin/farm |' \
    -e 's|^#   install -m 644 nodes/farm-node.service /etc/systemd/system/$|#   adduser --system --group farm       # the user it runs as; let it read the key|' \
    -e '/^# (make deb ships this unit/,/build\.sh)$/d' \
    nodes/farm-node.service > "$unit"
grep -q '^ExecStart=/usr/bin/farm ' "$unit" ||
  die "nodes/farm-node.service has no line ExecStart=/usr/local/bin/farm ... to point at /usr/bin/farm"

# strip as dh_strip does; libraries (the Lua module too) are not executable
find "$root" -type f | while read -r f; do
  [ "$(head -c 4 "$f" | od -An -c | tr -d ' ')" = '177ELF' ] || continue
  case $f in
    *.so|*.so.*) strip --remove-section=.comment --remove-section=.note --strip-unneeded "$f"
                 chmod 644 "$f" ;;
    *)           strip --remove-section=.comment --remove-section=.note "$f" ;;
  esac
done

# the control area
mkdir -p "$root/DEBIAN"
echo "libfarm $SOMAJOR farm (>= $VERSION)" > "$root/DEBIAN/shlibs"
echo "activate-noawait ldconfig" > "$root/DEBIAN/triggers"
cp scripts/deb/control "$stage/debian/control"
cp scripts/deb/changelog "$stage/debian/changelog"

# Depends. The stub records the sonames core/ dlopens (NEEDED), so that
# dpkg-shlibdeps finds their packages as it finds the linked ones'.
sonames=$(sed -n 's/^#define [A-Z0-9_]*_SONAME "\([^"]*\)".*/\1/p' core/*.c | sort -u)
[ -n "$sonames" ] || die "no *_SONAME define found in core/*.c"
libs=""
for s in $sonames; do libs="$libs -l:$s"; done
mkdir -p "$stage/dlopen"
echo 'int main(void) { return 0; }' > "$stage/dlopen/stub.c"
# shellcheck disable=SC2086   # (one -l: per soname)
$CC -o "$stage/dlopen/stub" "$stage/dlopen/stub.c" -Wl,--no-as-needed $libs ||
  die "cannot link a stub against$libs: are their runtime packages installed?"
(
  cd "$stage"
  # (the Lua module's lua_* symbols come from the interpreter that loads it:
  # dpkg-shlibdeps' word about each is left out)
  elves=$(find debian/farm -type f \( -name '*.so*' -o -path '*/bin/*' \) | LC_ALL=C sort)
  # shellcheck disable=SC2086   # (one word per file: the paths have no spaces)
  dpkg-shlibdeps -Tdebian/farm.substvars -l"debian/farm/usr/lib/$MA" $elves \
    2>shlibdeps.log || { cat shlibdeps.log >&2; exit 1; }
  grep -v 'used by .* found in none of the libraries' shlibdeps.log >&2 || true
  # (the stub is not in the package: dpkg-shlibdeps' word about that is left out)
  dpkg-shlibdeps -Tdebian/farm.substvars -pdlopen --warnings=0 dlopen/stub 2>shlibdeps.log ||
    { cat shlibdeps.log >&2; exit 1; }
  grep -v "should already be installed in their package's directory" shlibdeps.log >&2 || true
  dpkg-gencontrol -pfarm -Pdebian/farm -Tdebian/farm.substvars -fdebian/files
) || die "dpkg-shlibdeps or dpkg-gencontrol failed (above)"
grep -q '^Depends: .*libc6' "$root/DEBIAN/control" || die "dpkg-shlibdeps found no Depends"

# md5sums, then the package
( cd "$root" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | LC_ALL=C sort -z |
    xargs -0 md5sum ) > "$root/DEBIAN/md5sums"
deb=$B/farm_${VERSION}_$ARCH.deb
rm -f "$deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
