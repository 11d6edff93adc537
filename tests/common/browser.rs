//! Debian's chromium, headless, driven over WebDriver (chromedriver) with
//! a few plain HTTP/1.1 requests: the real browser a master-control room
//! would open the page in.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A chromium session; the browser and its driver go when it is dropped.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
}

impl Browser {
    /// Starts chromedriver and a headless chromium, 1600x1000.
    pub fn start() -> Browser {
        super::require("chromium", "chromium");
        super::require("chromedriver", "chromium-driver");
        let port = super::peer_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut b = Browser { driver, port, session: String::new() };
        // The TLS test's certificate is its own, self-signed.
        let caps = json!({ "capabilities": { "alwaysMatch": { "acceptInsecureCerts": true, "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1600,1000", "--no-first-run", "--disable-extensions",
                     // Exact heap figures, and gc() for the long-run test.
                     "--enable-precise-memory-info", "--js-flags=--expose-gc"],
        }}}});
        let created = b.call("POST", "/session", Some(caps));
        b.session = created["sessionId"].as_str().expect("a WebDriver session").to_owned();
        b
    }

    /// One WebDriver command; its `value`.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to chromedriver");
        s.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        )
        .expect("send to chromedriver");
        // chromedriver keeps the connection open: read the headers, then
        // exactly Content-Length bytes.
        let mut reply = Vec::new();
        let mut chunk = [0u8; 65536];
        let (head_end, length) = loop {
            let n = s.read(&mut chunk).expect("chromedriver's reply");
            assert!(n > 0, "chromedriver closed without a reply");
            reply.extend_from_slice(&chunk[..n]);
            if let Some(at) = reply.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&reply[..at]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().expect("a length"))
                    })
                    .expect("chromedriver's reply has a Content-Length");
                break (at + 4, length);
            }
        };
        while reply.len() < head_end + length {
            let n = s.read(&mut chunk).expect("chromedriver's reply");
            assert!(n > 0, "chromedriver closed mid-reply");
            reply.extend_from_slice(&chunk[..n]);
        }
        let json_text = String::from_utf8_lossy(&reply[head_end..head_end + length]);
        let v: Value = serde_json::from_str(&json_text).unwrap_or_else(|e| panic!("{e}: {json_text}"));
        assert!(v["value"].get("error").is_none(), "WebDriver {method} {path}: {}", v["value"]);
        v["value"].clone()
    }

    fn at(&self, what: &str) -> String {
        format!("/session/{}/{what}", self.session)
    }

    /// Opens `url`.
    pub fn open(&self, url: &str) {
        self.call("POST", &self.at("url"), Some(json!({ "url": url })));
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) in the page.
    pub fn eval(&self, script: &str, args: Value) -> Value {
        self.call("POST", &self.at("execute/sync"), Some(json!({ "script": script, "args": args })))
    }

    /// Opens a new tab and switches to it (the page then opens there).
    pub fn new_tab(&self) {
        let v = self.call("POST", &self.at("window/new"), Some(json!({ "type": "tab" })));
        let handle = v["handle"].as_str().expect("a window handle").to_owned();
        self.call("POST", &self.at("window"), Some(json!({ "handle": handle })));
    }

    /// The handles of every open tab.
    pub fn tabs(&self) -> Vec<String> {
        let v = self.call("GET", &self.at("window/handles"), None);
        v.as_array().expect("window handles").iter().map(|h| h.as_str().expect("a handle").to_owned()).collect()
    }

    /// Switches to the tab `handle`.
    pub fn switch_to(&self, handle: &str) {
        self.call("POST", &self.at("window"), Some(json!({ "handle": handle })));
    }

    /// Runs `script` asynchronously: it ends by calling its last argument
    /// with the result.
    pub fn call_async(&self, script: &str, args: Value) -> Value {
        self.call("POST", &self.at("execute/async"), Some(json!({ "script": script, "args": args })))
    }

    /// Saves a PNG of the window to `path`; returns its bytes.
    pub fn screenshot(&self, path: &Path) -> Vec<u8> {
        let v = self.call("GET", &self.at("screenshot"), None);
        let png = super::cues::base64_decode(v.as_str().expect("base64")).expect("a PNG in base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("artefact dir");
        }
        std::fs::write(path, &png).expect("write the screenshot");
        png
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.call("DELETE", &format!("/session/{}", self.session), None)
            }));
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
