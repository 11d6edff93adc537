//! The files a configuration names, checked where they are: the slate's
//! image and a file source's (or backup's) recording must be files this
//! process can read. Kept out of the pure validation ([`super::validate`])
//! so that it stays a function of the text alone; run on the raw table
//! beside it, so a file problem is reported in the same pass as the rest.

use std::path::Path;

use toml::{Table, Value};

use super::FieldError;

/// The problems with the files `doc` names, by key.
pub fn check(doc: &Table) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let text = |t: &Table, key: &str| t.get(key).and_then(Value::as_str).map(str::to_owned);
    let table = |key: &str| doc.get(key).and_then(Value::as_table);
    if let Some(image) = table("slate").and_then(|t| text(t, "image")) {
        // Not a `.png` name is the validation's to say.
        if image.to_ascii_lowercase().ends_with(".png")
            && let Err(why) = readable(Path::new(&image), "is not a PNG file")
        {
            errors.push(FieldError { key: "slate.image".into(), message: why });
        }
    }
    for at in ["source", "backup"] {
        let Some(t) = table(at).filter(|t| text(t, "type").as_deref() == Some("file")) else { continue };
        if let Some(path) = text(t, "path")
            && let Err(why) = readable(Path::new(&path), "is not a file")
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
        let doc = |text: String| text.parse::<Table>().unwrap();
        let ok = doc(format!(
            "[slate]\nimage = \"{}\"\n[source]\ntype = \"file\"\npath = \"{}\"\n",
            png.display(),
            png.display()
        ));
        assert_eq!(check(&ok), []);
        let missing = dir.path().join("gone.png");
        let bad = doc(format!(
            "[slate]\nimage = \"{}\"\n[source]\ntype = \"udp\"\npath = \"x\"\n[backup]\ntype = \"file\"\npath = \"{}\"\n",
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
