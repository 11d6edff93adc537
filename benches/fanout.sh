#!/usr/bin/env bash
# Relay cost: CPU seconds and peak memory of simulcast taking a live MPEG-TS
# contribution to N legs on loopback, beside peers doing the same work in
# the same run on the same input, as ratios. Only the relay process is
# measured (user + system CPU from /proc after a warm-up, peak RSS).
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
# MODE=transcode: a 960x540 H.264 High 4:2:0 + AAC contribution at about
#   7.7 Mbit/s;
#   simulcast in transcode against ffmpeg and gst-launch doing the same
#   work: decode, x264 ultrafast/zerolatency at the input's size and
#   bitrate, AAC, one MPEG-TS multiplex, then their tee (UDP legs).
#   TRACKS=3: the contribution carries three AAC commentaries (kaz, rus,
#   eng), simulcast plans all three ([program] audio, one lane each) and
#   the peers decode and encode all three too.
#
# The input is live: ffmpeg sends the file paced in real time (-re) to the
# relay's UDP input port, as a relay gets it on air.
#
#   benches/fanout.sh                            # passthrough, UDP, N = 12 50, 20 s each
#   PROTO=srt benches/fanout.sh                  # passthrough, SRT, N = 12
#   MODE=transcode NS="12 50" benches/fanout.sh  # transcode
#   MODE=transcode TRACKS=3 NS=12 benches/fanout.sh  # three audio tracks
#   DURATION=10 NS=12 benches/fanout.sh
#   SIMULCASTD=/tmp/simulcastd-old PROTO=srt benches/fanout.sh  # another build
#                                                  # (alternate two builds in one hour)
#   THREADS=1 PROTO=srt benches/fanout.sh          # also each relay's CPU by kind of
#                                                  # thread (libsrt's send and receive
#                                                  # threads, the fan-out, ...)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
cargo build --release --locked --bin simulcastd >&2

SIMULCASTD=${SIMULCASTD:-./target/release/simulcastd}
D=${DURATION:-20}
WARM=${WARM:-5}
MODE=${MODE:-passthrough}
PROTO=${PROTO:-udp}
if [ "$PROTO" = srt ]; then NS=${NS:-"12"}; else NS=${NS:-"12 50"}; fi
BATCH_WAIT=${BATCH_WAIT:-2ms}
TRACKS=${TRACKS:-1}
case "$TRACKS" in 1|3) ;; *) echo "TRACKS is 1 or 3" >&2; exit 2 ;; esac
in_port=23999
base_port=24000   # below the ephemeral range; nothing listens there (same for every relay)
work=$(mktemp -d)
receivers=()
cleanup() { for p in "${receivers[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

if [ "$MODE" = passthrough ]; then
  echo "Making the input: $((D + WARM + 5)) s of 1920x1080p50 H.264 High at ~12 Mbit/s + AAC in MPEG-TS..." >&2
  ffmpeg -hide_banner -loglevel error -y -f lavfi -i "testsrc2=size=1920x1080:rate=50,noise=alls=12:allf=t" \
    -f lavfi -i "sine=f=440:r=48000" -t "$((D + WARM + 5))" -map 0:v -map 1:a \
    -c:v libx264 -profile:v high -preset ultrafast -x264-params cabac=1:8x8dct=1 -b:v 12M -maxrate 12M -bufsize 6M -g 50 \
    -c:a aac -b:a 128k -metadata:s:a:0 language=kaz -f mpegts "$work/in.ts"
  w=1920; h=1080; fps=50; kbps=12000; gop=50
else
  echo "Making the input: $((D + WARM + 5)) s of 960x540 noise at ~7.7 Mbit/s H.264 High 4:2:0 + $TRACKS AAC in MPEG-TS..." >&2
  more=()
  if [ "$TRACKS" = 3 ]; then
    for t in rus:660 eng:880; do
      more+=(audiotestsrc freq="${t#*:}" num-buffers=$(( (D + WARM + 5) * 47 )) ! audioconvert ! avenc_aac ! aacparse
        ! taginject tags="language-code=${t%%:*}" ! m.)
    done
  fi
  # A venue's encoder: H.264 High 4:2:0 with B-frames. (Without the
  # format, x264enc took videotestsrc's first, 4:4:4, a picture twice the
  # size of any contribution's.)
  gst-launch-1.0 -q videotestsrc num-buffers=$(( (D + WARM + 5) * 25 )) pattern=snow \
    ! video/x-raw,format=I420,width=960,height=540,framerate=25/1 \
    ! x264enc speed-preset=superfast bitrate=7700 key-int-max=50 ! video/x-h264,profile=high \
    ! h264parse ! mpegtsmux name=m alignment=7 \
    ! filesink location="$work/in.ts" \
    audiotestsrc num-buffers=$(( (D + WARM + 5) * 47 )) ! audioconvert ! avenc_aac ! aacparse \
    ! taginject tags="language-code=kaz" ! m. "${more[@]}"
  w=960; h=540; fps=25; kbps=7700; gop=50
fi
rate=$(ffprobe -v error -show_entries format=bit_rate -of default=nw=1:nk=1 "$work/in.ts")

# SRT legs: one srt-live-transmit listener per leg, started afresh before
# each relay (a listener takes one caller).
start_receivers() {  # N; in the main shell, before each measure
  stop_receivers
  if [ "$PROTO" = udp ]; then
    # Ports that are open but never read: the kernel drops what overflows
    # their buffers, and no ICMP "port unreachable" comes back to the relay.
    python3 -c "import socket, sys, time
s = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range($1)]
for i, x in enumerate(s): x.bind(('127.0.0.1', $base_port + 1 + i))
time.sleep(1e6)" </dev/null >/dev/null 2>&1 & receivers+=($!)
    sleep 0.3
    return 0
  fi
  for i in $(seq 1 "$1"); do
    srt-live-transmit -q -a:no "srt://:$((base_port + i))?mode=listener" file://con \
      </dev/null >"$work/rx.$i.ts" 2>/dev/null & receivers+=($!)
  done
  sleep 0.5
}
stop_receivers() {
  for p in "${receivers[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${receivers[@]}"; do wait "$p" 2>/dev/null || true; done
  receivers=()
  rm -f "$work"/rx.*.ts
}

# Datagrams that reached a UDP socket, system-wide: read (InDatagrams: the
# relay's input) or dropped at a full receive buffer (InErrors: the legs'
# ports, open and never read). Counted where they arrive, not where they
# leave: OutDatagrams counts a segmented send (UDP GSO) once, whatever the
# number of datagrams the kernel cut it into.
udp_out() { awk '/^Udp: [0-9]/ { print $2 + $4 }' /proc/net/snmp; }

cpu_of() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }   # clock ticks, all threads
# THREADS=1: each thread's CPU time in ms (the scheduler's own count,
# /proc/<pid>/task/<tid>/schedstat; a thread's ticks in .../stat are
# sampled at the timer tick and charge threads that wake for a few
# microseconds at a time wrongly, libsrt's among them) and its voluntary
# context switches, "tid ms switches name", for a breakdown after the table.
threads_of() {
  [ "${THREADS:-0}" = 1 ] || return 0
  for t in /proc/"$1"/task/*; do
    printf '%s %s %s %s\n' "${t##*/}" "$(awk '{ printf "%d", $1 / 1e6 }' "$t/schedstat" 2>/dev/null || echo 0)" \
      "$(awk '/^voluntary_ctxt_switches/ { print $2 }' "$t/status" 2>/dev/null || echo 0)" "$(tr ' ' _ < "$t/comm" 2>/dev/null)"
  done | sort
}
# The breakdown of one relay's threads over the measured window, by kind
# (libsrt's per-connection threads together, digits dropped from names).
thread_kinds() {  # name N
  join "$work/th0.$1.$2" "$work/th1.$1.$2" | awk '{
      k = $4; sub(/^SRT:SndQ.*/, "libsrt send", k); sub(/^SRT:RcvQ.*/, "libsrt receive", k); gsub(/[0-9]+/, "", k)
      ms[k] += $5 - $2; sw[k] += $6 - $3; n[k]++; all += $5 - $2 }
    END { for (k in ms) printf "|   %s (%d) | %d | %d |\n", k, n[k], ms[k], sw[k]; printf "|   all threads | %d | |\n", all }' \
    | sort -t'|' -k3 -nr
}

measure() {  # name N command... -> "cpu_s rss_kb delivered_percent" (receivers started by the caller)
  # CPU is counted from WARM s after the start to the end (steady state:
  # simulcast encodes its slate at start, once per event; benches/slate.rs
  # measures that), peak RSS over the whole run.
  local sender="" before after got pid c0 c1 hwm
  ( sleep 0.5; exec timeout -s INT "$((D + WARM))" ffmpeg -hide_banner -loglevel error -re -i "$work/in.ts" -map 0 -c copy \
      -f mpegts "udp://127.0.0.1:$in_port?pkt_size=1316" ) & sender=$!
  "${@:3}" </dev/null >/dev/null 2>"$work/err.$1.$2" & pid=$!
  sleep "$WARM"
  threads_of "$pid" > "$work/th0.$1.$2"
  c0=$(cpu_of "$pid"); before=$(udp_out); [ "$PROTO" = srt ] && got0=$(cat "$work"/rx.*.ts 2>/dev/null | wc -c)
  sleep "$D"
  threads_of "$pid" > "$work/th1.$1.$2"
  c1=$(cpu_of "$pid"); after=$(udp_out); [ "$PROTO" = srt ] && got1=$(cat "$work"/rx.*.ts 2>/dev/null | wc -c)
  hwm=$(awk '/VmHWM/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)
  kill -INT "$pid" 2>/dev/null || true
  for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
  kill "$sender" 2>/dev/null || true; wait "$sender" 2>/dev/null || true
  # What reached the legs over the window, against the input's bytes
  # times N: UDP from the kernel's count of datagrams received (less the
  # relay's input), SRT from what the receivers wrote.
  if [ "$PROTO" = srt ]; then
    got=$(( got1 - got0 ))
  else
    got=$(( (after - before) * 1316 * $2 / ($2 + 1) ))
  fi
  awk -v c="$(( c1 - c0 ))" -v hz="$(getconf CLK_TCK)" -v r="$hwm" -v got="$got" -v want="$(( rate / 8 * D * $2 ))" \
    'BEGIN { printf "%.2f %d %.0f\n", c / hz, r, 100 * got / want }'
}

echo
echo "Input: $(( rate / 1000 )) kbit/s MPEG-TS ${w}x${h}p${fps} (live over UDP, $TRACKS audio track(s)), $MODE, $PROTO legs, $D s measured per run after $WARM s, batch_wait=$BATCH_WAIT, $(nproc) cores."
echo
if [ "$MODE" = passthrough ]; then
  echo "| N | relay | CPU s | CPU % of a core | peak RSS MB | CPU vs ffmpeg copy tee | CPU vs floor | RSS vs ffmpeg | delivered |"
else
  echo "| N | relay | CPU s | CPU % of a core | peak RSS MB | CPU vs ffmpeg tee | CPU vs gst tee | RSS vs ffmpeg | delivered |"
fi
echo "|---|---|---|---|---|---|---|---|---|"
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
  elif [ "$TRACKS" = 3 ]; then
    sed -i "s/^gop = $gop\$/gop = $gop\naudio = [\"aac:kaz\", \"aac:rus\", \"aac:eng\"]/" "$cfg"
  fi
  gst_audio=(d. ! queue ! aacparse ! avdec_aac ! audioconvert ! avenc_aac ! aacparse ! m.)
  [ "$TRACKS" = 3 ] && gst_audio+=("${gst_audio[@]}" "${gst_audio[@]}")
  tee_spec=$(IFS='|'; echo "${tee_args[*]}")
  start_receivers "$n"
  read -r s_cpu s_rss s_del < <(measure simulcast "$n" "$SIMULCASTD" run --config "$cfg" --status-every 1h)
  if [ "$MODE" = passthrough ]; then
    start_receivers "$n"
    read -r f_cpu f_rss f_del < <(measure ffmpeg "$n" ffmpeg -hide_banner -loglevel error "${ff_in[@]}" -map 0 -c copy -f tee "$tee_spec")
    start_receivers "$n"
    read -r g_cpu g_rss g_del < <(measure gst "$n" gst-launch-1.0 -q "${gst_in[@]}" ! tsparse ! tee name=t "${gst_args[@]}")
    if [ "$PROTO" = udp ]; then
      start_receivers "$n"
      read -r m_cpu m_rss m_del < <(measure floor "$n" gst-launch-1.0 -q "${gst_in[@]}" \
        ! multiudpsink clients="$(IFS=,; echo "${clients[*]}")" sync=false async=false enable-last-sample=false)
    else
      m_cpu=0; m_rss=0; m_del=0
    fi
    base=$m_cpu
  else
    start_receivers "$n"
    read -r f_cpu f_rss f_del < <(measure ffmpeg "$n" ffmpeg -hide_banner -loglevel error "${ff_in[@]}" -map 0 \
      -c:v libx264 -preset ultrafast -tune zerolatency -b:v 7700k -g 50 -bf 0 -c:a aac -b:a 128k -f tee "$tee_spec")
    start_receivers "$n"
    read -r g_cpu g_rss g_del < <(measure gst "$n" gst-launch-1.0 -q "${gst_in[@]}" ! tsdemux name=d \
      d. ! queue ! h264parse ! avdec_h264 ! videoconvert \
      ! x264enc tune=zerolatency speed-preset=ultrafast bitrate=7700 key-int-max=50 bframes=0 ! h264parse \
      ! mpegtsmux name=m alignment=7 ! tee name=t "${gst_args[@]}" \
      "${gst_audio[@]}")
    base=$g_cpu
  fi
  row() {  # name cpu rss delivered%
    awk -v n="$n" -v name="$1" -v c="$2" -v r="$3" -v del="$4" -v d="$D" -v fc="$f_cpu" -v bc="$base" -v fr="$f_rss" \
      'BEGIN { printf "| %d | %s | %.2f | %.1f | %.0f | %.2f | %s | %.2f | %d %% |\n", n, name, c, 100*c/d, r/1024, (fc>0?c/fc:0), (bc>0?sprintf("%.2f", c/bc):"-"), (fr>0?r/fr:0), del }'
  }
  row simulcast "$s_cpu" "$s_rss" "$s_del"
  if [ "$MODE" = passthrough ]; then
    row "ffmpeg -c copy tee" "$f_cpu" "$f_rss" "$f_del"
    row "gst-launch tsparse tee" "$g_cpu" "$g_rss" "$g_del"
    [ "$PROTO" = udp ] && row "multiudpsink (floor)" "$m_cpu" "$m_rss" "$m_del"
  else
    row "ffmpeg tee" "$f_cpu" "$f_rss" "$f_del"
    row "gst-launch tee" "$g_cpu" "$g_rss" "$g_del"
  fi
  if [ "${THREADS:-0}" = 1 ]; then
    echo
    echo "CPU time and voluntary context switches over the measured $D s, by kind of thread (N = $n):"
    echo
    echo "| relay / thread (how many) | CPU ms | switches |"
    echo "|---|---|---|"
    for r in simulcast ffmpeg gst floor; do
      [ -s "$work/th0.$r.$n" ] || continue
      echo "| $r | | |"
      thread_kinds "$r" "$n"
    done
    echo
  fi
  # The relay must have relayed: simulcast's warnings and errors, if any.
  if grep -qE " (ERROR|WARN) " "$work/err.simulcast.$n"; then
    echo "(simulcast warned at N = $n:)" >&2; grep -E " (ERROR|WARN) " "$work/err.simulcast.$n" | head -5 >&2
  fi
done
