//! The operator's command line, run as the real binaries.

use std::process::Command;

fn ctl(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_simulcastctl")).args(args).output().expect("run simulcastctl");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn a_config_with_three_mistakes_yields_three_messages_each_naming_its_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"
[event]
title = "Silk Way Star - Grand Final"

[[channels]]
id = "kz-jibek-joly"
name = "Jibek Joly"
country = "KZ"
timezone = "Asia/Almati"
ingest = { type = "srt", uri = "srt://127.0.0.1:9000" }

[[channels]]
id = "kr-kbs"
name = "KBS"
country = "KR"
timezone = "Asia/Seoul"
ingest = { type = "udp", uri = "udp//127.0.0.1:5000" }

[[channels]]
id = "mn-mnb"
name = "MNB"
country = "MN"
timezone = "Asia/Ulaanbaatar"
air_policy = { type = "local_time", at = "25:00" }
ingest = { type = "rist", uri = "rist://127.0.0.1:6000" }
"#,
    )
    .expect("write config");
    let (code, out) = ctl(&["check", "--config", path.to_str().expect("utf-8 path")]);
    assert_eq!(code, 1, "{out}");
    let problems: Vec<&str> = out.lines().filter(|l| l.starts_with("  channels[")).collect();
    assert_eq!(problems.len(), 3, "{out}");
    assert!(problems[0].starts_with("  channels[0].timezone: `Asia/Almati`"), "{out}");
    assert!(problems[1].starts_with("  channels[1].ingest.uri: `udp//127.0.0.1:5000` is not a URI"), "{out}");
    assert!(problems[2].starts_with("  channels[2].air_policy.at: `25:00`"), "{out}");
    assert!(out.contains("3 problem(s)"), "{out}");
}

#[test]
fn the_embedded_default_checks_clean_with_every_template() {
    let (code, out) = ctl(&["check"]);
    assert_eq!(code, 0, "{out}");
    for t in ["ingest/test", "legs/srt", "legs/rtmp", "legs/udp", "legs/rist", "legs/file"] {
        assert!(out.contains(&format!("ok     {t}")), "{t} not reported ok:\n{out}");
    }
    assert_eq!(out.lines().filter(|l| l.contains("Asia/")).count(), 12, "{out}");
}

#[test]
fn json_output_parses_and_never_carries_a_secret() {
    let (code, out) = ctl(&["check", "--json"]);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
    assert_eq!(v["ok"], true);
    assert_eq!(v["channels"].as_array().map(Vec::len), Some(12));
    // The embedded default carries demo secrets; none may be printed.
    for secret in ["demo-passphrase-kz", "am-1tv-demo", "kg-ktrk-demo"] {
        assert!(!out.contains(secret), "{secret} printed:\n{out}");
    }
}

#[test]
fn version_is_printed() {
    let (code, out) = ctl(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("simulcastctl "), "{out}");
}
