#!/usr/bin/env bash
# Relay cost: CPU seconds and peak memory of simulcast taking an ~8 Mbit/s
# MPEG-TS contribution to N UDP legs on loopback, beside ffmpeg's tee muxer
# and gst-launch's tee ! queue ! udpsink, measured in the same run on the
# same input, as ratios. Only the relay process is measured.
#
# simulcast decodes the contribution and encodes the program once (slate and
# programme share one encoder: see src/media/program.rs), so the peers do the
# same work: decode, x264 ultrafast/zerolatency at the input's size and
# bitrate, AAC, one MPEG-TS multiplex, then their tee. (Until the slate came,
# simulcast relayed the bytes as they came; that cost is in the history of
# docs/benchmarks.md.)
#
# INPUT=udp (default): a live contribution, as a relay gets on air: ffmpeg
#   sends the file paced in real time (-re) to the relay's UDP input port.
# INPUT=file: each relay reads the file itself, paced by its own means
#   (simulcast and gst: tsparse ! clocksync; ffmpeg: -re).
#
#   benches/fanout.sh                 # N = 1 12 50, 20 s each
#   NS="12" DURATION=10 benches/fanout.sh
#   BATCH_WAIT=5ms benches/fanout.sh  # simulcast's relay.batch_wait
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
[ -x /usr/bin/time ] || apt-get install -y -qq --no-install-recommends time >/dev/null   # GNU time: CPU and peak RSS
cargo build --release --locked --bin simulcastd >&2

D=${DURATION:-20}
NS=${NS:-"1 12 50"}
BATCH_WAIT=${BATCH_WAIT:-2ms}
INPUT=${INPUT:-udp}
in_port=23999
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
base_port=24000   # below the ephemeral range; nothing listens there (same for all three)

echo "Making the input: $((D + 5)) s of 960x540 noise at ~7.7 Mbit/s H.264 + AAC in MPEG-TS..." >&2
frames=$(( (D + 5) * 25 ))
gst-launch-1.0 -q videotestsrc num-buffers=$frames pattern=snow ! video/x-raw,width=960,height=540,framerate=25/1 \
  ! x264enc speed-preset=ultrafast bitrate=7700 key-int-max=50 ! h264parse ! mpegtsmux name=m alignment=7 \
  ! filesink location="$work/in.ts" \
  audiotestsrc num-buffers=$(( (D + 5) * 47 )) ! audioconvert ! avenc_aac ! aacparse ! m.
rate=$(ffprobe -v error -show_entries format=bit_rate -of default=nw=1:nk=1 "$work/in.ts")

measure() {  # name N command... -> "cpu_s rss_kb"
  local out="$work/time.$1.$2" sender=""
  if [ "$INPUT" = udp ]; then
    ( sleep 0.5; exec timeout -s INT "$D" ffmpeg -hide_banner -loglevel error -re -i "$work/in.ts" -map 0 -c copy \
        -f mpegts "udp://127.0.0.1:$in_port?pkt_size=1316" ) & sender=$!
  fi
  /usr/bin/time -f "%U %S %M" -o "$out" timeout -s INT "$D" "${@:3}" >/dev/null 2>"$work/err.$1.$2" || true
  [ -n "$sender" ] && { kill "$sender" 2>/dev/null; wait "$sender" 2>/dev/null || true; }
  tail -n 1 "$out" | awk '{printf "%.2f %d\n", $1 + $2, $3}'
}

echo
echo "Input: $(( rate / 1000 )) kbit/s MPEG-TS ($INPUT), $D s per run, simulcast batch_wait=$BATCH_WAIT, $(nproc) cores."
echo
echo "| N | relay | CPU s | CPU % of a core | peak RSS MB | CPU vs ffmpeg tee | CPU vs gst tee | RSS vs ffmpeg |"
echo "|---|---|---|---|---|---|---|---|"
for n in $NS; do
  # simulcast
  cfg="$work/sim.$n.toml"
  if [ "$INPUT" = udp ]; then
    src_toml="type = \"udp\"\nuri = \"udp://127.0.0.1:$in_port\""
    ff_in=(-i "udp://127.0.0.1:$in_port?fifo_size=1000000&overrun_nonfatal=1")
    gst_in=(udpsrc address=127.0.0.1 port=$in_port buffer-size=4194304 caps=video/mpegts,systemstream=true)
  else
    src_toml="type = \"file\"\npath = \"$work/in.ts\""
    ff_in=(-re -i "$work/in.ts")
    gst_in=(filesrc location="$work/in.ts" ! tsparse set-timestamps=true alignment=7 ! clocksync)
  fi
  printf "[event]\ntitle = \"bench\"\n[source]\n$src_toml\n[program]\nwidth = 960\nheight = 540\nframerate = 25\nvideo_kbps = 7700\ngop = 50\n[relay]\nbatch_wait = \"%s\"\n" "$BATCH_WAIT" > "$cfg"
  tee_args=()
  gst_args=()
  for i in $(seq 1 "$n"); do
    port=$((base_port + i))
    printf '[[channels]]\nid = "leg-%d"\nname = "l"\ncountry = "KZ"\ntimezone = "Asia/Almaty"\ningest = { type = "udp", uri = "udp://127.0.0.1:%d" }\n' "$i" "$port" >> "$cfg"
    tee_args+=("[f=mpegts]udp://127.0.0.1:$port?pkt_size=1316")
    gst_args+=(t. ! queue ! udpsink host=127.0.0.1 port=$port sync=false async=false enable-last-sample=false)
  done
  tee_spec=$(IFS='|'; echo "${tee_args[*]}")
  read -r s_cpu s_rss < <(measure simulcast "$n" ./target/release/simulcastd run --config "$cfg" --status-every 1h)
  read -r f_cpu f_rss < <(measure ffmpeg "$n" ffmpeg -hide_banner -loglevel error "${ff_in[@]}" -map 0 \
    -c:v libx264 -preset ultrafast -tune zerolatency -b:v 7700k -g 50 -bf 0 -c:a aac -b:a 128k -f tee "$tee_spec")
  read -r g_cpu g_rss < <(measure gst "$n" gst-launch-1.0 -q "${gst_in[@]}" ! tsdemux name=d \
    d. ! queue ! h264parse ! avdec_h264 ! videoconvert \
    ! x264enc tune=zerolatency speed-preset=ultrafast bitrate=7700 key-int-max=50 bframes=0 ! h264parse \
    ! mpegtsmux name=m alignment=7 ! tee name=t "${gst_args[@]}" \
    d. ! queue ! aacparse ! avdec_aac ! audioconvert ! avenc_aac ! aacparse ! m.)
  row() {  # name cpu rss
    awk -v n="$n" -v name="$1" -v c="$2" -v r="$3" -v d="$D" -v fc="$f_cpu" -v gc="$g_cpu" -v fr="$f_rss" \
      'BEGIN { printf "| %d | %s | %.2f | %.1f | %.0f | %.2f | %.2f | %.2f |\n", n, name, c, 100*c/d, r/1024, (fc>0?c/fc:0), (gc>0?c/gc:0), (fr>0?r/fr:0) }'
  }
  row simulcast "$s_cpu" "$s_rss"
  row "ffmpeg tee" "$f_cpu" "$f_rss"
  row "gst-launch tee" "$g_cpu" "$g_rss"
done
