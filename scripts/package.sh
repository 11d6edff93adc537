#!/usr/bin/env bash
# Builds the Debian package of simulcast with Debian's own dpkg-deb: both
# binaries, their man pages and shell completions (made by the binaries
# themselves from their command-line definitions), the systemd unit, the
# sysusers entry for the `simulcast` system user, the README and the
# shipped monitoring (deploy/).
#
#   scripts/package.sh                                  # release build -> target/debian/
#   BIN_DIR=target/debug OUT=/tmp/pkg COMPRESS=none scripts/package.sh   # binaries already built (the tests)
#
# Prints the package's path.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN_DIR=${BIN_DIR:-}
OUT=${OUT:-target/debian}
COMPRESS=${COMPRESS:-xz}
if [ -z "$BIN_DIR" ]; then
  ./scripts/deps.sh
  cargo build --release --locked --bins >&2
  BIN_DIR=target/release
fi
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root="$stage/simulcast_${version}_${arch}"
doc="$root/usr/share/doc/simulcast"
install -d "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" "$root/usr/lib/sysusers.d" \
  "$root/usr/share/man/man1" "$root/usr/share/bash-completion/completions" \
  "$root/usr/share/zsh/vendor-completions" "$root/usr/share/fish/vendor_completions.d" "$doc/examples"
install -m 0755 "$BIN_DIR/simulcastd" "$BIN_DIR/simulcastctl" "$root/usr/bin/"
for b in simulcastd simulcastctl; do
  "$BIN_DIR/$b" generate "$stage/gen/$b"
  for page in "$stage/gen/$b"/man1/*.1; do
    gzip -9n < "$page" > "$root/usr/share/man/man1/$(basename "$page").gz"
  done
  install -m 0644 "$stage/gen/$b/completions/$b.bash" "$root/usr/share/bash-completion/completions/$b"
  install -m 0644 "$stage/gen/$b/completions/_$b" "$root/usr/share/zsh/vendor-completions/_$b"
  install -m 0644 "$stage/gen/$b/completions/$b.fish" "$root/usr/share/fish/vendor_completions.d/$b.fish"
done
install -m 0644 deploy/systemd/simulcastd.service "$root/lib/systemd/system/"
install -m 0644 deploy/systemd/simulcastd.socket "$root/lib/systemd/system/"
install -m 0644 deploy/systemd/simulcast.sysusers "$root/usr/lib/sysusers.d/simulcast.conf"
install -m 0644 README.md "$doc/"
install -m 0644 deploy/prometheus/simulcast.rules.yml deploy/grafana/simulcast.json "$doc/examples/"
cat > "$doc/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: simulcast
Files: *
License: MIT or Apache-2.0
COPYRIGHT
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: simulcast
Version: $version
Architecture: $arch
Maintainer: simulcast developers <simulcast@localhost>
Installed-Size: $size
Depends: libc6, libgstreamer1.0-0, libgstreamer-plugins-base1.0-0, gstreamer1.0-plugins-base, gstreamer1.0-plugins-good, gstreamer1.0-plugins-bad, gstreamer1.0-plugins-ugly, gstreamer1.0-libav, systemd
Section: video
Priority: optional
Description: broadcast playout and simultaneous-transmission coordinator
 One live contribution relayed to every partner's ingest (SRT, RTMP, UDP
 MPEG-TS, RIST), each leg aligned to the partner's time zone, with slate,
 T0 switch, failover, delayed legs, rehearsals and a gRPC control plane.
CONTROL
# The system user and the unit, on a real install only (not into a
# scratch root: \$DPKG_ROOT is set there).
cat > "$root/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ] && [ -z "${DPKG_ROOT:-}" ]; then
  systemd-sysusers simulcast.conf
  systemctl daemon-reload >/dev/null 2>&1 || true
fi
POSTINST
cat > "$root/DEBIAN/postrm" <<'POSTRM'
#!/bin/sh
set -e
if [ -z "${DPKG_ROOT:-}" ]; then
  systemctl daemon-reload >/dev/null 2>&1 || true
fi
POSTRM
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/postrm"
mkdir -p "$OUT"
dpkg-deb --root-owner-group -Z"$COMPRESS" --build "$root" "$OUT/" >&2
echo "$OUT/simulcast_${version}_${arch}.deb"
