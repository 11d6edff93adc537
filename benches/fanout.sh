#!/usr/bin/env bash
# Relay cost: CPU seconds and peak memory of simulcast taking a live MPEG-TS
# contribution to N legs on loopback, beside peers doing the same work in
# the same run on the same input, as ratios. Only the relay process is
# measured (GNU time: user + system CPU, peak RSS).
#
# MODE=passthrough (default): a 1080p50 H.264 High + AAC contribution at
#   about 12 Mbit/s. simulcast in passthrough (its own demux, splicer and
#   multiplexer, the slate ready) against
#     ffmpeg -c copy -f tee                        (remux, no decode)
#     gst-launch udpsrc ! tsparse ! tee ! queue ! udpsink per leg
#     gst-launch udpsrc ! multiudpsink             (the floor: bytes copied
#                                                   to N sockets, UDP only)
#   PROTO=udp legs (N = 12 50 by default) or PROTO=srt legs (N = 12), each
#   SRT leg received by srt-live-transmit (listener; not measured).
# MODE=transcode: a 960x540 H.264 + AAC contribution at about 7.7 Mbit/s;
#   simulcast in transcode against ffmpeg and gst-launch doing the same
#   work: decode, x264 ultrafast/zerolatency at the input's size and
#   bitrate, AAC, one MPEG-TS multiplex, then their tee (UDP legs).
#
# The input is live: ffmpeg sends the file paced in real time (-re) to the
# relay's UDP input port, as a relay gets it on air.
#
#   benches/fanout.sh                            # passthrough, UDP, N = 12 50, 20 s each
#   PROTO=srt benches/fanout.sh                  # passthrough, SRT, N = 12
#   MODE=transcode NS="12 50" benches/fanout.sh  # transcode
#   DURATION=10 NS=12 benches/fanout.sh
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
[ -x /usr/bin/time ] || apt-get install -y -qq --no-install-recommends time >/dev/null   # GNU time: CPU and peak RSS
cargo build --release --locked --bin simulcastd >&2

D=${DURATION:-20}
MODE=${MODE:-passthrough}
PROTO=${PROTO:-udp}
if [ "$PROTO" = srt ]; then NS=${NS:-"12"}; else NS=${NS:-"12 50"}; fi
BATCH_WAIT=${BATCH_WAIT:-2ms}
in_port=23999
base_port=24000   # below the ephemeral range; nothing listens there (same for every relay)
work=$(mktemp -d)
receivers=()
cleanup() { for p in "${receivers[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

frames=$(( (D + 5) * 50 ))
if [ "$MODE" = passthrough ]; then
  echo "Making the input: $((D + 5)) s of 1920x1080p50 H.264 High at ~12 Mbit/s + AAC in MPEG-TS..." >&2
  ffmpeg -hide_banner -loglevel error -y -f lavfi -i "testsrc2=size=1920x1080:rate=50,noise=alls=12:allf=t" \
    -f lavfi -i "sine=f=440:r=48000" -t "$((D + 5))" -map 0:v -map 1:a \
    -c:v libx264 -profile:v high -preset ultrafast -b:v 12M -maxrate 12M -bufsize 6M -g 50 \
    -c:a aac -b:a 128k -metadata:s:a:0 language=kaz -f mpegts "$work/in.ts"
  w=1920; h=1080; fps=50; kbps=12000; gop=50
else
  echo "Making the input: $((D + 5)) s of 960x540 noise at ~7.7 Mbit/s H.264 + AAC in MPEG-TS..." >&2
  gst-launch-1.0 -q videotestsrc num-buffers=$(( (D + 5) * 25 )) pattern=snow ! video/x-raw,width=960,height=540,framerate=25/1 \
    ! x264enc speed-preset=ultrafast bitrate=7700 key-int-max=50 ! h264parse ! mpegtsmux name=m alignment=7 \
    ! filesink location="$work/in.ts" \
    audiotestsrc num-buffers=$(( (D + 5) * 47 )) ! audioconvert ! avenc_aac ! aacparse ! m.
  w=960; h=540; fps=25; kbps=7700; gop=50
fi
rate=$(ffprobe -v error -show_entries format=bit_rate -of default=nw=1:nk=1 "$work/in.ts")

# SRT legs: one srt-live-transmit listener per leg, started afresh before
# each relay (a listener takes one caller).
start_receivers() {  # N
  for p in "${receivers[@]}"; do kill "$p" 2>/dev/null || true; done
  receivers=()
  [ "$PROTO" = srt ] || return 0
  for i in $(seq 1 "$1"); do
    srt-live-transmit -q -a:no "srt://:$((base_port + i))?mode=listener" file://con >/dev/null 2>&1 & receivers+=($!)
  done
  sleep 0.5
}

measure() {  # name N command... -> "cpu_s rss_kb"
  local out="$work/time.$1.$2" sender=""
  start_receivers "$2"
  ( sleep 0.5; exec timeout -s INT "$D" ffmpeg -hide_banner -loglevel error -re -i "$work/in.ts" -map 0 -c copy \
      -f mpegts "udp://127.0.0.1:$in_port?pkt_size=1316" ) & sender=$!
  /usr/bin/time -f "%U %S %M" -o "$out" timeout -s INT "$D" "${@:3}" >/dev/null 2>"$work/err.$1.$2" || true
  kill "$sender" 2>/dev/null || true; wait "$sender" 2>/dev/null || true
  tail -n 1 "$out" | awk '{printf "%.2f %d\n", $1 + $2, $3}'
}

echo
echo "Input: $(( rate / 1000 )) kbit/s MPEG-TS ${w}x${h}p${fps} (live over UDP), $MODE, $PROTO legs, $D s per run, batch_wait=$BATCH_WAIT, $(nproc) cores."
echo
if [ "$MODE" = passthrough ]; then
  echo "| N | relay | CPU s | CPU % of a core | peak RSS MB | CPU vs ffmpeg copy tee | CPU vs floor | RSS vs ffmpeg |"
else
  echo "| N | relay | CPU s | CPU % of a core | peak RSS MB | CPU vs ffmpeg tee | CPU vs gst tee | RSS vs ffmpeg |"
fi
echo "|---|---|---|---|---|---|---|---|"
ff_in=(-i "udp://127.0.0.1:$in_port?fifo_size=1000000&overrun_nonfatal=1")
gst_in=(udpsrc address=127.0.0.1 port=$in_port buffer-size=4194304 caps=video/mpegts,systemstream=true)
for n in $NS; do
  cfg="$work/sim.$n.toml"
  printf "[event]\ntitle = \"bench\"\n[source]\ntype = \"udp\"\nuri = \"udp://127.0.0.1:%d\"\n[program]\nmode = \"%s\"\nwidth = %d\nheight = %d\nframerate = %d\nvideo_kbps = %d\ngop = %d\n[relay]\nbatch_wait = \"%s\"\n" \
    "$in_port" "$MODE" "$w" "$h" "$fps" "$kbps" "$gop" "$BATCH_WAIT" > "$cfg"
  tee_args=(); gst_args=(); clients=()
  for i in $(seq 1 "$n"); do
    port=$((base_port + i))
    if [ "$PROTO" = srt ]; then
      ingest="{ type = \"srt\", uri = \"srt://127.0.0.1:$port\" }"
      tee_args+=("[f=mpegts]srt://127.0.0.1:$port?pkt_size=1316")
      gst_args+=(t. ! queue ! srtsink uri="srt://127.0.0.1:$port" sync=false async=false wait-for-connection=false)
    else
      ingest="{ type = \"udp\", uri = \"udp://127.0.0.1:$port\" }"
      tee_args+=("[f=mpegts]udp://127.0.0.1:$port?pkt_size=1316")
      gst_args+=(t. ! queue ! udpsink host=127.0.0.1 port=$port sync=false async=false enable-last-sample=false)
    fi
    clients+=("127.0.0.1:$port")
    printf '[[channels]]\nid = "leg-%d"\nname = "l"\ncountry = "KZ"\ntimezone = "Asia/Almaty"\ningest = %s\n' "$i" "$ingest" >> "$cfg"
  done
  if [ "$MODE" = passthrough ]; then
    # The plan of the contribution's tracks goes in [program], before the channels.
    sed -i "s/^gop = $gop\$/gop = $gop\naudio = [\"aac:kaz\"]/" "$cfg"
  fi
  tee_spec=$(IFS='|'; echo "${tee_args[*]}")
  read -r s_cpu s_rss < <(measure simulcast "$n" ./target/release/simulcastd run --config "$cfg" --status-every 1h)
  if [ "$MODE" = passthrough ]; then
    read -r f_cpu f_rss < <(measure ffmpeg "$n" ffmpeg -hide_banner -loglevel error "${ff_in[@]}" -map 0 -c copy -f tee "$tee_spec")
    read -r g_cpu g_rss < <(measure gst "$n" gst-launch-1.0 -q "${gst_in[@]}" ! tsparse ! tee name=t "${gst_args[@]}")
    if [ "$PROTO" = udp ]; then
      read -r m_cpu m_rss < <(measure floor "$n" gst-launch-1.0 -q "${gst_in[@]}" \
        ! multiudpsink clients="$(IFS=,; echo "${clients[*]}")" sync=false async=false enable-last-sample=false)
    else
      m_cpu=0; m_rss=0
    fi
    base=$m_cpu
  else
    read -r f_cpu f_rss < <(measure ffmpeg "$n" ffmpeg -hide_banner -loglevel error "${ff_in[@]}" -map 0 \
      -c:v libx264 -preset ultrafast -tune zerolatency -b:v 7700k -g 50 -bf 0 -c:a aac -b:a 128k -f tee "$tee_spec")
    read -r g_cpu g_rss < <(measure gst "$n" gst-launch-1.0 -q "${gst_in[@]}" ! tsdemux name=d \
      d. ! queue ! h264parse ! avdec_h264 ! videoconvert \
      ! x264enc tune=zerolatency speed-preset=ultrafast bitrate=7700 key-int-max=50 bframes=0 ! h264parse \
      ! mpegtsmux name=m alignment=7 ! tee name=t "${gst_args[@]}" \
      d. ! queue ! aacparse ! avdec_aac ! audioconvert ! avenc_aac ! aacparse ! m.)
    base=$g_cpu
  fi
  row() {  # name cpu rss
    awk -v n="$n" -v name="$1" -v c="$2" -v r="$3" -v d="$D" -v fc="$f_cpu" -v bc="$base" -v fr="$f_rss" \
      'BEGIN { printf "| %d | %s | %.2f | %.1f | %.0f | %.2f | %s | %.2f |\n", n, name, c, 100*c/d, r/1024, (fc>0?c/fc:0), (bc>0?sprintf("%.2f", c/bc):"-"), (fr>0?r/fr:0) }'
  }
  row simulcast "$s_cpu" "$s_rss"
  if [ "$MODE" = passthrough ]; then
    row "ffmpeg -c copy tee" "$f_cpu" "$f_rss"
    row "gst-launch tsparse tee" "$g_cpu" "$g_rss"
    [ "$PROTO" = udp ] && row "multiudpsink (floor)" "$m_cpu" "$m_rss"
  else
    row "ffmpeg tee" "$f_cpu" "$f_rss"
    row "gst-launch tee" "$g_cpu" "$g_rss"
  fi
  # The relay must have relayed: simulcast's stderr names any failure.
  if grep -qi "error" "$work/err.simulcast.$n"; then
    echo "(simulcast reported errors at N = $n:)" >&2; grep -i "error" "$work/err.simulcast.$n" | head -5 >&2
  fi
done
