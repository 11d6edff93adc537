//! The operator's command line, run as the real binaries.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a panic is how a test fails

mod common;

use std::ffi::OsStr;
use std::process::{Command, Stdio};

use common::{Daemon, self_signed};

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
    // Each with the line and column of its value, as an editor counts them.
    assert!(problems[0].starts_with("  channels[0].timezone (line 9, column 12): `Asia/Almati`"), "{out}");
    assert!(
        problems[1].starts_with("  channels[1].ingest.uri (line 17, column 32): `udp//127.0.0.1:5000` is not a URI"),
        "{out}"
    );
    assert!(problems[2].starts_with("  channels[2].air_policy.at (line 24, column 42): `25:00`"), "{out}");
    assert!(out.contains("3 problem(s)"), "{out}");
    // And for scripts, by key and place.
    let (code, out) = ctl(&["check", "--json", "--config", path.to_str().expect("utf-8 path")]);
    assert_eq!(code, 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let problems = v["problems"].as_array().expect("problems");
    let places: Vec<(&str, i64, i64)> = problems
        .iter()
        .map(|p| (p["key"].as_str().unwrap(), p["line"].as_i64().unwrap(), p["column"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        places,
        [("channels[0].timezone", 9, 12), ("channels[1].ingest.uri", 17, 32), ("channels[2].air_policy.at", 24, 42)]
    );
}

#[test]
fn check_names_the_programme_and_refuses_an_rtmp_leg_for_hevc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("hevc.toml");
    let base = "[event]\ntitle = \"Final\"\n[source]\ntype = \"udp\"\nuri = \"udp://127.0.0.1:5000\"\n\
                [program]\nvideo_codec = \"hevc\"\naudio = [\"aac:kaz\", \"ac3:eng\"]\n\
                [[channels]]\nid = \"kg-ktrk\"\nname = \"KTRK\"\ncountry = \"KG\"\ntimezone = \"Asia/Bishkek\"\n";
    std::fs::write(&path, format!("{base}ingest = {{ type = \"rtmp\", url = \"rtmp://127.0.0.1/live\" }}\n")).unwrap();
    let (code, out) = ctl(&["check", "--config", path.to_str().expect("utf-8 path")]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("channels[0].ingest (line 14, column 10): channel `kg-ktrk` is an RTMP leg")
            && out.contains("HEVC"),
        "{out}"
    );
    std::fs::write(&path, format!("{base}ingest = {{ type = \"udp\", uri = \"udp://127.0.0.1:5002\" }}\n")).unwrap();
    let (code, out) = ctl(&["check", "--config", path.to_str().expect("utf-8 path")]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Programme: passthrough") && out.contains("HEVC") && out.contains("AC-3 eng"), "{out}");
    let (_, json) = ctl(&["check", "--json", "--config", path.to_str().expect("utf-8 path")]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    assert_eq!(v["program"]["mode"], "passthrough", "{json}");
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

fn ctl_env(args: &[&str], addr: &str, token: Option<&str>) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_simulcastctl"));
    cmd.args(args).env("SIMULCAST_ADDR", addr).env_remove("SIMULCAST_TOKEN");
    if let Some(t) = token {
        cmd.env("SIMULCAST_TOKEN", t);
    }
    let out = cmd.output().expect("run simulcastctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn operators_manage_channels_through_the_real_daemon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("simulcast.db");
    let db_arg = db.to_str().expect("utf-8");
    let grpc = common::tcp_listener();
    let port = grpc.local_addr().unwrap().port();
    let addr = format!("http://127.0.0.1:{port}");

    // No token yet: the daemon refuses to start, and says how to make one.
    let out = Command::new(env!("CARGO_BIN_EXE_simulcastd"))
        .args(["serve", "--db", db_arg, "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("simulcastctl token create"));
    // Nor will it listen beyond loopback without TLS.
    let out = Command::new(env!("CARGO_BIN_EXE_simulcastd"))
        .args(["serve", "--db", db_arg, "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.contains("without TLS") && err.contains("--tls-cert"), "{err}");
    // Nor serve the page (it carries tokens) beyond loopback without TLS.
    let out = Command::new(env!("CARGO_BIN_EXE_simulcastd"))
        .args(["serve", "--db", db_arg, "--listen", "127.0.0.1:0", "--web-listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.contains("refusing to serve the page on 0.0.0.0:0") && err.contains("--tls-cert"), "{err}");

    let token_of = |role: &str, name: &str| {
        let (code, out, err) =
            ctl_env(&["--json", "token", "create", "--role", role, "--name", name, "--db", db_arg], &addr, None);
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        v["token"].as_str().expect("token").to_owned()
    };
    let admin = token_of("admin", "night-admin");
    let observer = token_of("observer", "noc");
    let stored = std::fs::read(&db).unwrap();
    assert!(!String::from_utf8_lossy(&stored).contains(&admin), "a token was stored in clear");

    let config = dir.path().join("final.toml");
    std::fs::write(&config, simulcast::config::DEFAULT_CONFIG).unwrap();
    let _daemon = Daemon::serve(
        &grpc,
        &[OsStr::new("--db"), db.as_os_str(), OsStr::new("--config"), config.as_os_str()],
        Stdio::null(),
    );

    // The imported grand final, as a table and as JSON.
    let (code, out, err) = ctl_env(&["channels", "list"], &addr, Some(&observer));
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("ID ") && out.contains("kz-jibek-joly") && out.contains("Asia/Almaty"), "{out}");
    let (_, out, _) = ctl_env(&["--json", "channels", "list"], &addr, Some(&observer));
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v.as_array().map(Vec::len), Some(12));
    assert!(!out.contains("demo-passphrase-kz") && !out.contains("am-1tv-demo"), "secret printed: {out}");

    let file = dir.path().join("imedi.toml");
    std::fs::write(
        &file,
        "id = \"ge-imedi\"\nname = \"Imedi\"\ncountry = \"GE\"\ntimezone = \"Asia/Tbilisi\"\n\
         ingest = { type = \"rtmp\", url = \"rtmp://127.0.0.1:21935/live\", stream_key = \"imedi-key-5512\" }\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    // Clear one-line errors: the code and the server's message.
    let (code, _, err) = ctl_env(&["channels", "create", "-f", f], &addr, Some(&observer));
    assert_eq!((code, err.trim()), (1, "simulcastctl: PERMISSION_DENIED: `noc` has role observer; this needs admin"));
    let (code, _, err) = ctl_env(&["channels", "create", "-f", f], &addr, None);
    assert_eq!(code, 1);
    assert!(err.starts_with("simulcastctl: UNAUTHENTICATED: "), "{err}");
    let (code, out, err) = ctl_env(&["channels", "create", "-f", f], &addr, Some(&admin));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ge-imedi") && out.contains("set") && !out.contains("imedi-key-5512"), "{out}");
    let (code, _, err) = ctl_env(&["channels", "get", "nope"], &addr, Some(&admin));
    assert_eq!((code, err.trim()), (1, "simulcastctl: NOT_FOUND: no channel `nope`"));
    let (code, out, _) = ctl_env(&["channels", "delete", "ge-imedi"], &addr, Some(&admin));
    assert_eq!((code, out.trim()), (0, "Deleted channel ge-imedi."));

    // A daemon that is not there: one line, no debug dump.
    let (code, _, err) = ctl_env(&["channels", "list"], "http://127.0.0.1:1", Some(&admin));
    assert_eq!(code, 1);
    assert!(err.starts_with("simulcastctl: cannot reach simulcastd at http://127.0.0.1:1"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// TLS on the control port: a client that trusts the certificate works, one
/// that does not is refused in one line, and plain HTTP/2 gets nowhere.
#[test]
fn the_control_port_speaks_tls_when_given_a_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    self_signed(&cert, &key, "simulcastd-test");
    let db = dir.path().join("simulcast.db");
    let db_arg = db.to_str().unwrap();
    let (code, out, err) =
        ctl_env(&["--json", "token", "create", "--role", "observer", "--name", "noc", "--db", db_arg], "", None);
    assert_eq!(code, 0, "{err}");
    let token = serde_json::from_str::<serde_json::Value>(&out).unwrap()["token"].as_str().unwrap().to_owned();
    let grpc = common::tcp_listener();
    let port = grpc.local_addr().unwrap().port();
    let args = [
        OsStr::new("--db"),
        db.as_os_str(),
        OsStr::new("--tls-cert"),
        cert.as_os_str(),
        OsStr::new("--tls-key"),
        key.as_os_str(),
    ];
    let _daemon = Daemon::serve(&grpc, &args, Stdio::null());
    let https = format!("https://127.0.0.1:{port}");
    let ca = cert.to_str().unwrap();
    let (code, out, err) = ctl_env(&["--ca-cert", ca, "events", "list"], &https, Some(&token));
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("ID "), "{out}");
    // Without the CA: refused, one line.
    let (code, _, err) = ctl_env(&["events", "list"], &https, Some(&token));
    assert_eq!((code, err.trim()), (1, "simulcastctl: an https:// address needs --ca-cert (or SIMULCAST_CA_CERT)"));
    // Trusting another certificate: the handshake fails, one line.
    let (other_cert, other_key) = (dir.path().join("other.pem"), dir.path().join("other-key.pem"));
    self_signed(&other_cert, &other_key, "somebody-else");
    let (code, _, err) = ctl_env(&["--ca-cert", other_cert.to_str().unwrap(), "events", "list"], &https, Some(&token));
    assert_eq!(code, 1);
    assert!(err.starts_with("simulcastctl: ") && err.lines().count() == 1, "{err}");
    // Plain HTTP/2 to a TLS port gets no answer.
    let (code, _, err) = ctl_env(&["events", "list"], &format!("http://127.0.0.1:{port}"), Some(&token));
    assert_eq!(code, 1, "{err}");
}

/// Issue 15, defect 13: a file source that does not exist is refused by
/// `check`, naming it; a missing config file is reported once.
#[test]
fn a_missing_file_source_and_a_missing_config_are_each_named_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("file-source.toml");
    let missing = dir.path().join("nope.ts");
    std::fs::write(
        &path,
        format!("[event]\ntitle = \"t\"\n[source]\ntype = \"file\"\npath = \"{}\"\n", missing.display()),
    )
    .unwrap();
    let (code, out) = ctl(&["check", "--config", path.to_str().expect("utf-8 path")]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("source.path (line 5, column 8): cannot read") && out.contains("nope.ts"), "{out}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_simulcastd"))
        .args(["run", "--config"])
        .arg(dir.path().join("missing.toml"))
        .output()
        .expect("simulcastd");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.matches("No such file or directory").count(), 1, "the OS error once: {err}");
}

#[test]
fn a_reader_that_quits_ends_simulcastctl_quietly() {
    // `simulcastctl check | head -0`: the pipe's read end is closed before
    // simulcastctl writes its first line.
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_simulcastctl"))
        .arg("check")
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("simulcastctl");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked") && !err.contains("failed printing"), "{err}");
    assert!(out.status.success(), "{:?}: {err}", out.status);
}
