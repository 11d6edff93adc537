#!/usr/bin/env bash
# Installs the Debian 12 packages simulcast needs, only those missing.
# Used by scripts/demo.sh and scripts/test.sh; safe to run again.
set -euo pipefail

packages=(
  pkg-config                          # gstreamer-sys finds GStreamer with it
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
  gstreamer1.0-plugins-base           # appsrc/appsink, videotestsrc, audiotestsrc
  gstreamer1.0-plugins-good           # udpsink/udpsrc, flvmux, rtpmp2tpay
  gstreamer1.0-plugins-bad            # srtsink/srtsrc, rtmp2sink, ristsink, tsparse; x265enc, mpeg2enc (slates)
  gstreamer1.0-plugins-ugly           # x264enc
  gstreamer1.0-libav                  # avenc_aac
  gstreamer1.0-x fonts-dejavu-core    # textoverlay (title and UTC clock) and its font
  gstreamer1.0-tools                  # gst-launch-1.0: test encoders and the benchmark peer
  srt-tools                           # srt-live-transmit: the SRT partner in tests
  nginx libnginx-mod-rtmp             # the RTMP partner in tests and the demo
  ffmpeg                              # ffprobe in tests, ffmpeg's tee in the benchmark
  openssl                             # a throwaway TLS certificate in the TLS test
  prometheus                          # promtool: checks the /metrics exposition in tests
  python3                             # its XML parser reads the rehearsal JUnit reports in tests
  systemd                             # systemd-analyze verify checks the shipped unit in tests
  man-db                              # ... and asks man for the man pages its Documentation= names
  chromium chromium-driver            # a real browser, driven over WebDriver, opens the multiviewer page in tests
  etcd-server                         # cluster mode's coordination engine, run on loopback in tests
  protobuf-compiler libprotobuf-dev   # protoc and its well-known types: the etcd-client crate compiles etcd's protos
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "Installing missing packages: ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# policy-rc.d keeps the nginx package from starting a system nginx on port 80.
if [ -d /usr/sbin ] && [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
  $sudo chmod +x /usr/sbin/policy-rc.d
  trap '$sudo rm -f /usr/sbin/policy-rc.d' EXIT
fi
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
