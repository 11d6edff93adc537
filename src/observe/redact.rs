//! The last line of defence for secrets: every [`Secret`] the process
//! creates is remembered here, and every log line is scrubbed of them on its
//! way out (GStreamer's own messages included, since they are routed through
//! the same writer). Responses, status, metrics and the as-run log are built
//! without secrets in the first place; this catches what a library prints by
//! itself, such as an element repeating its `location`.
//!
//! [`Secret`]: crate::config::Secret

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::sync::RwLock;

/// What replaces a secret.
pub const MASK: &str = "***";

/// Secrets shorter than this are not scrubbed (they would mask ordinary
/// words); validation refuses such short SRT passphrases anyway.
pub const MIN_LEN: usize = 4;

static SECRETS: RwLock<BTreeSet<String>> = RwLock::new(BTreeSet::new());

/// Remembers `value` so that log lines never show it.
pub fn remember(value: &str) {
    if value.len() < MIN_LEN {
        return;
    }
    let known = SECRETS.read().map(|s| s.contains(value)).unwrap_or(false);
    if !known && let Ok(mut s) = SECRETS.write() {
        s.insert(value.to_owned());
    }
}

/// `text` with every remembered secret replaced by [`MASK`]; borrowed when
/// there is none in it.
pub fn scrub(text: &str) -> std::borrow::Cow<'_, str> {
    let Ok(secrets) = SECRETS.read() else { return text.into() };
    // Longest first, so a secret containing another is masked whole.
    let mut found: Vec<&String> = secrets.iter().filter(|s| text.contains(s.as_str())).collect();
    if found.is_empty() {
        return text.into();
    }
    found.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = text.to_owned();
    for s in found {
        out = out.replace(s.as_str(), MASK);
    }
    out.into()
}

/// A writer that scrubs what goes through it. The `tracing` formatter
/// writes each line with one `write_all`, so a secret never straddles two
/// calls.
#[derive(Debug)]
pub struct Scrubbed<W>(pub W);

impl<W: Write> Write for Scrubbed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match std::str::from_utf8(buf) {
            Ok(text) => match scrub(text) {
                std::borrow::Cow::Borrowed(_) => self.0.write_all(buf)?,
                std::borrow::Cow::Owned(clean) => self.0.write_all(clean.as_bytes())?,
            },
            Err(_) => {
                let text = String::from_utf8_lossy(buf);
                self.0.write_all(scrub(&text).as_bytes())?;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_secrets_are_masked_in_what_is_written() {
        remember("sk-redact-test-1234");
        remember("sk-redact-test-1234-longer");
        remember("abc"); // too short to mask
        assert_eq!(scrub("rtmp://h/live/sk-redact-test-1234 failed"), "rtmp://h/live/*** failed");
        assert_eq!(scrub("key sk-redact-test-1234-longer."), "key ***.");
        assert_eq!(scrub("abc stays"), "abc stays");
        let mut out = Scrubbed(Vec::new());
        out.write_all(b"location=rtmp://x/sk-redact-test-1234\n").unwrap();
        assert_eq!(String::from_utf8(out.0).unwrap(), "location=rtmp://x/***\n");
    }
}
