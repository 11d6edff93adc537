//! Local stand-in ingests for `simulcastd demo`: one receiver per leg on
//! loopback, so the grand final can be relayed on one machine. SRT, UDP and
//! RIST stand-ins are GStreamer receivers counting what arrives; RTMP ones
//! are one nginx with libnginx-mod-rtmp (Debian's), started for the demo.
//! Tests do not use these: they receive with srt-live-transmit, nginx and
//! plain sockets, peers nobody here wrote.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use gstreamer as gst;
use gstreamer::prelude::*;

use crate::config::{Config, Host, Ingest, SrtMode};
use crate::media;

/// Where Debian installs the RTMP module.
pub const NGINX_RTMP_MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";

struct Receiver {
    pipeline: gst::Pipeline,
    bytes: Arc<AtomicU64>,
}

/// The running stand-ins.
pub struct StandIns {
    receivers: BTreeMap<String, Receiver>,
    nginx: Vec<Child>,
    dir: PathBuf,
    /// What could not be started, one line each.
    pub notes: Vec<String>,
}

impl StandIns {
    /// Starts a stand-in for every enabled channel whose ingest is on this
    /// machine. Best effort: what fails is listed in `notes`.
    pub fn start(config: &Config) -> Result<Self, media::MediaError> {
        media::init()?;
        let dir = std::env::temp_dir().join(format!("simulcast-demo-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let mut me = Self { receivers: BTreeMap::new(), nginx: Vec::new(), dir, notes: Vec::new() };
        let mut rtmp_ports: BTreeMap<u16, Vec<String>> = BTreeMap::new();
        for ch in config.enabled_channels() {
            let desc = match &ch.ingest {
                Ingest::Srt(s) if is_local(&s.host) => {
                    // The partner's side: the opposite mode, same settings.
                    let mut peer = s.clone();
                    peer.mode = match s.mode {
                        SrtMode::Caller => SrtMode::Listener,
                        SrtMode::Listener => SrtMode::Caller,
                    };
                    let src = gst::ElementFactory::make("srtsrc").build().ok();
                    src.filter(|src| media::configure_srt(src, &peer).is_ok())
                }
                Ingest::Udp(u) if is_local(&u.host) => gst::ElementFactory::make("udpsrc")
                    .property("address", u.host.bare())
                    .property("port", i32::from(u.port))
                    .build()
                    .ok(),
                Ingest::Rist(r) if is_local(&r.host) => gst::ElementFactory::make("ristsrc")
                    .property("address", r.host.bare())
                    .property("port", u32::from(r.port))
                    .build()
                    .ok(),
                Ingest::Rtmp(r) => {
                    if let Some((port, app)) = local_rtmp(&r.url) {
                        rtmp_ports.entry(port).or_default().push(app);
                    }
                    continue;
                }
                _ => continue,
            };
            let Some(src) = desc else {
                me.notes.push(format!("{}: cannot create its stand-in receiver", ch.id));
                continue;
            };
            match receiver(src) {
                Ok(r) => {
                    me.receivers.insert(ch.id.to_string(), r);
                }
                Err(e) => me.notes.push(format!("{}: stand-in receiver: {e}", ch.id)),
            }
        }
        for (port, apps) in rtmp_ports {
            if let Err(e) = me.start_nginx(port, &apps) {
                me.notes.push(format!("RTMP stand-in on port {port}: {e}"));
            }
        }
        Ok(me)
    }

    /// Bytes a stand-in has received for `channel_id` (None: no stand-in,
    /// or an RTMP one, which does not count).
    pub fn received(&self, channel_id: &str) -> Option<u64> {
        self.receivers.get(channel_id).map(|r| r.bytes.load(Ordering::Relaxed))
    }

    fn start_nginx(&mut self, port: u16, apps: &[String]) -> Result<(), String> {
        if !Path::new(NGINX_RTMP_MODULE).exists() {
            return Err(format!("{NGINX_RTMP_MODULE} is missing (apt-get install nginx libnginx-mod-rtmp)"));
        }
        let dir = self.dir.join(format!("nginx-{port}"));
        std::fs::create_dir_all(dir.join("logs")).map_err(|e| e.to_string())?;
        let mut unique: Vec<&String> = apps.iter().collect();
        unique.sort();
        unique.dedup();
        let apps: String = unique.iter().map(|a| format!("    application {a} {{ live on; }}\n")).collect();
        let conf = format!(
            "load_module {NGINX_RTMP_MODULE};\ndaemon off;\nmaster_process off;\nworker_processes 1;\n\
             error_log {d}/logs/error.log warn;\npid {d}/nginx.pid;\nevents {{ worker_connections 256; }}\n\
             rtmp {{\n  server {{\n    listen 127.0.0.1:{port};\n{apps}  }}\n}}\n",
            d = dir.display()
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).map_err(|e| e.to_string())?;
        let child = Command::new("nginx")
            .arg("-c")
            .arg(&path)
            .arg("-p")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run nginx: {e} (apt-get install nginx libnginx-mod-rtmp)"))?;
        self.nginx.push(child);
        Ok(())
    }

    /// Stops every stand-in.
    pub fn stop(mut self) {
        for r in self.receivers.values() {
            let _ = r.pipeline.set_state(gst::State::Null);
        }
        for mut c in self.nginx.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_local(host: &Host) -> bool {
    match host {
        Host::Ip(ip) => ip.is_loopback(),
        Host::Name(n) => n == "localhost",
    }
}

/// `rtmp://127.0.0.1:1935/live` → (1935, "live") when on loopback.
fn local_rtmp(url: &str) -> Option<(u16, String)> {
    let (_, u) = crate::config::uri::parse_uri(url, &["rtmp"]).ok()?;
    is_local(&u.host).then(|| (u.port.unwrap_or(1935), u.path.split('/').next().unwrap_or("live").to_owned()))
}

fn receiver(src: gst::Element) -> Result<Receiver, String> {
    let sink = gst::ElementFactory::make("fakesink")
        .property("sync", false)
        .property("enable-last-sample", false)
        .build()
        .map_err(|e| e.to_string())?;
    let pipeline = gst::Pipeline::new();
    pipeline.add_many([&src, &sink]).map_err(|e| e.to_string())?;
    src.link(&sink).map_err(|e| e.to_string())?;
    let bytes = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&bytes);
    if let Some(pad) = sink.static_pad("sink") {
        media::count_bytes(&pad, move |n| {
            counter.fetch_add(n as u64, Ordering::Relaxed);
        });
    }
    pipeline.set_state(gst::State::Playing).map_err(|e| e.to_string())?;
    if let Some(bus) = pipeline.bus()
        && let Some(msg) = bus.timed_pop_filtered(gst::ClockTime::from_mseconds(200), &[gst::MessageType::Error])
        && let gst::MessageView::Error(e) = msg.view()
    {
        let _ = pipeline.set_state(gst::State::Null);
        return Err(e.error().to_string());
    }
    Ok(Receiver { pipeline, bytes })
}
