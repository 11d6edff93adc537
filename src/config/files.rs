//! The files a configuration names, checked where they are: the slate's
//! image and a file source's (or backup's) recording must be files this
//! process can read. Kept out of the pure compile step
//! ([`super::compile`]) so that it stays a function of the text alone;
//! run on the raw configuration beside it, so a file problem is reported
//! in the same pass as the rest.

use std::path::Path;

use super::FieldError;
use super::raw::{Part, RawConfig, RawSource};

/// The problems with the files `raw` names, by key.
pub fn check(raw: &RawConfig) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if let Some(Part::Read(slate)) = &raw.slate
        && let Some(image) = &slate.image
        // Not a `.png` name is the compile step's to say.
        && image.to_ascii_lowercase().ends_with(".png")
        && let Err(why) = readable(Path::new(image), "is not a PNG file")
    {
        errors.push(FieldError { key: "slate.image".into(), message: why });
    }
    for (at, source) in [("source", &raw.source), ("backup", &raw.backup)] {
        if let Some(Part::Read(RawSource::File(f))) = source
            && let Err(why) = readable(Path::new(&f.path), "is not a file")
        {
            errors.push(FieldError { key: format!("{at}.path"), message: why });
        }
    }
    errors
}

/// Whether `path` is a file that can be read; `not_file` says what it is
/// not when it is there but something else.
fn readable(path: &Path, not_file: &str) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => {
            std::fs::File::open(path).map(drop).map_err(|e| format!("cannot read `{}`: {e}", path.display()))
        }
        Ok(_) => Err(format!("`{}` {not_file}", path.display())),
        Err(e) => Err(format!("cannot read `{}`: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_files_a_config_names_are_checked_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("card.png");
        std::fs::write(&png, b"\x89PNG").unwrap();
        let doc = |text: String| RawConfig::from_table(text.parse().unwrap()).unwrap();
        let ok = doc(format!(
            "[slate]\nimage = \"{}\"\n[source]\ntype = \"file\"\npath = \"{}\"\n",
            png.display(),
            png.display()
        ));
        assert_eq!(check(&ok), []);
        let missing = dir.path().join("gone.png");
        let bad = doc(format!(
            "[slate]\nimage = \"{}\"\n[source]\ntype = \"udp\"\nuri = \"udp://127.0.0.1:5000\"\n[backup]\ntype = \"file\"\npath = \"{}\"\n",
            missing.display(),
            dir.path().display()
        ));
        let errs = check(&bad);
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["slate.image", "backup.path"], "{errs:?}");
        assert!(errs[0].message.starts_with("cannot read `") && errs[0].message.contains("gone.png"), "{errs:?}");
        assert!(errs[1].message.ends_with("` is not a file"), "{errs:?}");
    }
}
