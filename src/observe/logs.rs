//! Logging: `tracing` everywhere, text by default and JSON lines with
//! `--log-json`, always through the secret scrubber. GStreamer's own
//! messages join the same stream (target `gst`), each carrying the leg's id
//! when it comes from a leg's pipeline (named `leg-<channel>`).

use std::io::IsTerminal;

use gstreamer as gst;

use super::redact::Scrubbed;

/// Installs the global subscriber: `RUST_LOG` if set, else `default_level`;
/// stderr; JSON lines when `json` (each with its span fields).
pub fn init(json: bool, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| Scrubbed(std::io::stderr()))
        .with_ansi(!json && std::io::stderr().is_terminal());
    if json {
        builder.json().with_current_span(true).init();
    } else {
        builder.init();
    }
}

/// Routes GStreamer's debug log into `tracing` instead of its own stderr
/// printer. Without `GST_DEBUG`, warnings and errors are routed; with it,
/// its thresholds hold. Call after GStreamer is initialised.
pub fn route_gstreamer() {
    if std::env::var_os("GST_DEBUG").is_none() {
        gst::log::set_default_threshold(gst::DebugLevel::Warning);
    }
    gst::log::remove_default_log_function();
    gst::log::add_log_function(|category, level, file, function, line, object, message| {
        let Some(text) = message.get() else { return };
        let object_name = object.map(ToString::to_string).unwrap_or_default();
        let leg = object.and_then(leg_of).unwrap_or_default();
        let category = category.name();
        let at = format!("{file}:{line} {function}");
        macro_rules! emit {
            ($lvl:ident) => {
                if leg.is_empty() {
                    tracing::$lvl!(target: "gst", category, object = %object_name, at = %at, "{}", text.as_str());
                } else {
                    tracing::$lvl!(target: "gst", leg = %leg, category, object = %object_name, at = %at, "{}", text.as_str());
                }
            };
        }
        match level {
            gst::DebugLevel::Error => emit!(error),
            gst::DebugLevel::Warning => emit!(warn),
            gst::DebugLevel::Fixme | gst::DebugLevel::Info => emit!(info),
            gst::DebugLevel::Debug => emit!(debug),
            _ => emit!(trace),
        }
    });
}

/// The channel id of the leg pipeline (`leg-<id>`) an object belongs to.
fn leg_of(object: &gst::log::LoggedObject) -> Option<String> {
    top_name(object.as_ptr()).and_then(|n| n.strip_prefix("leg-").map(str::to_owned))
}

/// The name of the outermost parent of a `GstObject` (a pad's element's
/// pipeline), read the way GStreamer's own printer reads names: without
/// taking references, since the object may be being disposed.
#[allow(unsafe_code)]
fn top_name(ptr: *mut gst::glib::gobject_ffi::GObject) -> Option<String> {
    use gst::glib::gobject_ffi;
    // SAFETY: GStreamer hands the log function a valid object for the
    // duration of the call; we only read names and parent pointers of
    // GstObjects (checked by type), as gst_debug_print_object does.
    unsafe {
        if ptr.is_null() {
            return None;
        }
        let instance = &mut (*ptr).g_type_instance;
        if gobject_ffi::g_type_check_instance_is_a(instance, gst::ffi::gst_object_get_type()) == 0 {
            return None;
        }
        let mut obj = ptr as *mut gst::ffi::GstObject;
        for _ in 0..32 {
            let parent = (*obj).parent;
            if parent.is_null() {
                break;
            }
            obj = parent;
        }
        let name = (*obj).name;
        if name.is_null() {
            return None;
        }
        Some(std::ffi::CStr::from_ptr(name).to_string_lossy().into_owned())
    }
}
