//! Pipeline templates: the protocol-specific parts, in gst-launch syntax,
//! kept in `pipelines/` and compiled into the binary. A template may hold
//! numeric placeholders (`{width}`) filled from typed config; every string
//! (URIs, hosts, paths, titles, secrets) is set afterwards as a property on a
//! named element, so no operator text is ever pasted into a description.

use gstreamer as gst;
use gstreamer::prelude::*;

use super::MediaError;

/// A named template.
#[derive(Debug, Clone, Copy)]
pub struct Template {
    /// `ingest/<kind>` or `legs/<kind>`.
    pub name: &'static str,
    /// gst-launch text, with `#` comment lines.
    pub text: &'static str,
}

macro_rules! template {
    ($name:literal) => {
        Template { name: $name, text: include_str!(concat!("../../pipelines/", $name, ".gst")) }
    };
}

/// Every template, in the order `simulcastctl check` reports them.
pub const ALL: &[Template] = &[
    template!("ingest/test"),
    template!("ingest/srt"),
    template!("ingest/udp"),
    template!("ingest/file"),
    template!("program/slate-card"),
    template!("program/slate-image"),
    template!("legs/srt"),
    template!("legs/rtmp"),
    template!("legs/udp"),
    template!("legs/rist"),
    template!("legs/file"),
];

/// The template called `name`.
pub fn get(name: &str) -> Result<Template, MediaError> {
    ALL.iter()
        .copied()
        .find(|t| t.name == name)
        .ok_or_else(|| MediaError::Template { template: name.to_owned(), message: "no such template".into() })
}

impl Template {
    /// The description with comments dropped and placeholders filled.
    /// Every `{name}` must be given, and every value given must be used.
    pub fn render(&self, params: &[(&str, u64)]) -> Result<String, MediaError> {
        let mut out: String =
            self.text.lines().filter(|l| !l.trim_start().starts_with('#')).collect::<Vec<_>>().join("\n");
        for (key, value) in params {
            let needle = format!("{{{key}}}");
            if !out.contains(&needle) {
                return Err(self.error(format!("has no placeholder {needle}")));
            }
            out = out.replace(&needle, &value.to_string());
        }
        if let Some(start) = out.find('{') {
            let end = out[start..].find('}').map_or(out.len(), |e| start + e + 1);
            return Err(self.error(format!("placeholder {} was not filled", &out[start..end])));
        }
        Ok(out)
    }

    /// The ghost pads a template's bin gets: `(element, pad, ghost name)`.
    /// A leg has a `sink` pad on the element named `in` (else `sink`); a
    /// TS ingest a `src` pad on `out` (else `src`); the test ingest and the
    /// slates raw `video` (and `audio`) pads on the elements of those names. Explicit
    /// on purpose: ghosting every unlinked pad would also ghost pads such as
    /// textoverlay's `text_sink`, which then waits for text forever.
    fn pads(&self) -> &'static [(&'static [&'static str], &'static str, &'static str)] {
        match self.name {
            n if n.starts_with("legs/") => &[(&["in", "sink"], "sink", "sink")],
            "ingest/test" => &[(&["video"], "src", "video"), (&["audio"], "src", "audio")],
            "program/slate-card" | "program/slate-image" => &[(&["video"], "src", "video")],
            _ => &[(&["out", "src"], "src", "src")],
        }
    }

    /// Parses the rendered description into a bin with the ghost pads of
    /// its family (see `Template::pads`). A missing element is reported
    /// by name.
    pub fn instantiate(&self, params: &[(&str, u64)]) -> Result<gst::Bin, MediaError> {
        let desc = self.render(params)?;
        let mut ctx = gst::ParseContext::new();
        let parsed = gst::parse::bin_from_description_full(&desc, false, Some(&mut ctx), gst::ParseFlags::FATAL_ERRORS);
        let missing = ctx.missing_elements();
        if !missing.is_empty() {
            return Err(MediaError::MissingElements {
                template: self.name.to_owned(),
                elements: missing.iter().map(|s| s.to_string()).collect(),
            });
        }
        let element = parsed.map_err(|e| self.error(e.to_string()))?;
        let bin = element.downcast::<gst::Bin>().map_err(|_| self.error("did not produce a bin".into()))?;
        for (names, pad, ghost_name) in self.pads() {
            let end = names.iter().find_map(|n| bin.by_name(n)).ok_or_else(|| {
                self.error(format!(
                    "has no element named {}",
                    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(" or ")
                ))
            })?;
            let target = end
                .static_pad(pad)
                .ok_or_else(|| self.error(format!("element `{}` has no static {pad} pad", end.name())))?;
            let ghost = gst::GhostPad::builder_with_target(&target)
                .map_err(|e| self.error(e.to_string()))?
                .name(*ghost_name)
                .build();
            bin.add_pad(&ghost).map_err(|e| self.error(e.to_string()))?;
        }
        Ok(bin)
    }

    /// Instantiates the template and checks its contract: an element named
    /// `required` exists. Used at start-up and by `simulcastctl check`.
    pub fn check(&self, params: &[(&str, u64)], required: &str) -> Result<(), MediaError> {
        let bin = self.instantiate(params)?;
        if bin.by_name(required).is_none() {
            return Err(self.error(format!("has no element named `{required}`")));
        }
        Ok(())
    }

    fn error(&self, message: String) -> MediaError {
        MediaError::Template { template: self.name.to_owned(), message }
    }
}

/// Sample parameters for checking templates without a config.
pub fn sample_params(name: &str) -> Vec<(&'static str, u64)> {
    match name {
        "ingest/test" => vec![("width", 640), ("height", 360), ("framerate", 25), ("tone_hz", 1000)],
        "program/slate-card" | "program/slate-image" => vec![("width", 640), ("height", 360), ("framerate", 25)],
        _ => vec![],
    }
}

/// The element each template must contain.
pub fn required_element(name: &str) -> &'static str {
    if name.starts_with("legs/") {
        "sink"
    } else if name == "ingest/test" {
        "title"
    } else if name == "program/slate-card" {
        "text"
    } else {
        "src"
    }
}

/// Parses every template; returns one result per template.
pub fn check_all() -> Vec<(&'static str, Result<(), MediaError>)> {
    ALL.iter().map(|t| (t.name, t.check(&sample_params(t.name), required_element(t.name)))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_fills_and_refuses_leftovers() {
        let t = get("ingest/test").unwrap();
        let full = t.render(&sample_params("ingest/test")).unwrap();
        assert!(full.contains("width=640") && !full.contains('{'), "{full}");
        let err = t.render(&[("width", 1)]).unwrap_err().to_string();
        assert!(err.contains("was not filled"), "{err}");
        let err = get("legs/udp").unwrap().render(&[("nope", 1)]).unwrap_err().to_string();
        assert!(err.contains("no placeholder {nope}"), "{err}");
    }

    #[test]
    fn every_template_parses_with_its_named_element() {
        crate::media::init().unwrap();
        for (name, result) in check_all() {
            assert!(result.is_ok(), "{name}: {result:?}");
        }
    }

    #[test]
    fn a_missing_element_is_named() {
        crate::media::init().unwrap();
        let t = Template { name: "legs/bogus", text: "queue ! no-such-sink-element name=sink" };
        let err = t.instantiate(&[]).unwrap_err();
        assert!(
            matches!(&err, MediaError::MissingElements { elements, .. } if elements == &["no-such-sink-element"]),
            "{err:?}"
        );
        assert!(err.is_permanent());
    }
}
