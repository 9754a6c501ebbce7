#!/bin/sh
# deps.sh -- install the Debian packages farm needs to build and test, when any is missing.
set -eu
pkgs="build-essential pkg-config lua5.4 liblua5.4-dev libnanomsg-dev nanomsg-utils
      libsodium-dev lua-busted perl procps clang libclang-rt-14-dev tmux bsdutils
      libssh2-1-dev openssh-server openssh-client iproute2 util-linux slurm-wlm libedit-dev luajit luarocks man-db
      dpkg-dev lintian libmicrohttpd-dev chromium curl"
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "farm: missing Debian packages:$missing; run 'make deps' as root (or apt-get install them)" >&2
  exit 1
fi
echo "farm: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null || true
apt-get install -y -qq --no-install-recommends $missing >/dev/null
