//! Headless Chromium driven over WebDriver: a `chromedriver` child (Debian's `chromium-driver`,
//! installed by `scripts/install-deps.sh`) and browser sessions on it, each its own profile, with
//! the waits a test needs (until an element shows some text, until a script says true); and a
//! running `svs web` (`SvsWeb`) for them to open.

use crate::TestDirectory;
use fantoccini::{ClientBuilder, Locator};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::time::Instant;

/// The chromedriver of this machine, killed with every browser it started when dropped.
#[derive(Debug)]
pub struct Chromedriver {
    child: std::process::Child,
    url: String,
}

impl Chromedriver {
    /// Starts `chromedriver` on a free port and waits until it answers.
    pub async fn start() -> Self {
        let port = crate::free_port();
        let mut command = Command::new("chromedriver");
        command
            .arg(format!("--port={port}"))
            .stdout(crate::log_file("chromedriver"))
            .stderr(crate::log_file("chromedriver-stderr"));
        // Its own process group: dropping it takes the browsers with it.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "chromedriver does not run ({e}): scripts/install-deps.sh installs chromium-driver"
            )
        });
        assert!(
            crate::wait_for_port(&mut child, port, Duration::from_secs(30)).await,
            "chromedriver did not take connections on port {port}"
        );
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// A new headless browser with a profile of its own.
    pub async fn browser(&self) -> Browser {
        let mut options = serde_json::json!({
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1280,800",
                "--autoplay-policy=no-user-gesture-required",
            ]
        });
        if std::path::Path::new("/usr/bin/chromium").exists() {
            options["binary"] = "/usr/bin/chromium".into();
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("goog:chromeOptions".into(), options);
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("chromedriver did not start a browser: {e}"));
        Browser { client }
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser session.
#[derive(Debug)]
pub struct Browser {
    pub client: fantoccini::Client,
}

impl Browser {
    pub async fn open(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("the browser did not open {url}: {e}"));
    }

    /// The text of the first element matching `css` ("" while there is none).
    pub async fn text(&self, css: &str) -> String {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Waits until the element matching `css` shows text containing `wanted`; returns its text.
    pub async fn wait_text(&self, css: &str, wanted: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let text = self.text(css).await;
            if text.contains(wanted) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "the page never showed {wanted:?} in {css} within {within:?}; it shows {text:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs `script` (a function body that returns a value) in the page.
    pub async fn eval(&self, script: &str) -> serde_json::Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("the page did not run {script:?}: {e}"))
    }

    /// Waits until `script` returns true in the page; `what` says what that means.
    pub async fn wait_until(&self, what: &str, script: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while self.eval(script).await != serde_json::Value::Bool(true) {
            assert!(
                Instant::now() < deadline,
                "{what} did not happen within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Types `text` into the element matching `css`.
    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} on the page: {e}"));
        element
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("cannot type into {css}: {e}"));
    }

    /// Clicks the element matching `css`. The page redraws lists as news arrives: an element
    /// replaced between finding and clicking it is found again.
    pub async fn click(&self, css: &str) {
        let mut attempts = 0;
        loop {
            let element = self
                .client
                .find(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("no {css} on the page: {e}"));
            match element.click().await {
                Ok(()) => return,
                Err(e) if e.to_string().contains("stale element") && attempts < 20 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot click {css}: {e}"),
            }
        }
    }

    /// Ends the session (the browser quits).
    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}

/// How long `svs web` may take to print its address, and a page to connect.
const WEB_LIMIT: Duration = Duration::from_secs(30);

/// A running `svs web` (the binary at `svs`) and the address it printed; killed when dropped.
#[derive(Debug)]
pub struct SvsWeb {
    child: Child,
    pub url: String,
    pub port: u16,
}

impl SvsWeb {
    /// Starts `svs web` as `name` with `home` against `dir` (and the stream service at
    /// `stream_url`, if given).
    pub fn start(
        svs: &str,
        dir: &TestDirectory,
        stream_url: Option<&str>,
        name: &str,
        home: &Path,
    ) -> Self {
        Self::start_with(svs, dir, stream_url, name, home, &[])
    }

    /// As `start`, with more `svs web` flags.
    pub fn start_with(
        svs: &str,
        dir: &TestDirectory,
        stream_url: Option<&str>,
        name: &str,
        home: &Path,
        flags: &[&str],
    ) -> Self {
        let port = crate::free_port();
        let mut command = Command::new(svs);
        if let Some(url) = stream_url {
            command.env("SVS_STREAM", url);
        }
        let mut child = command
            .args(["web", "--listen", &format!("127.0.0.1:{port}")])
            .args(flags)
            .env("SVS_DIRECTORY", &dir.url)
            .env("SVS_CA", &dir.ca)
            .env("SVS_HOME", home)
            .env("SVS_NAME", name)
            .env("SVS_KEY_BITS", "2048")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(crate::log_file(&format!("web-{name}")))
            .spawn()
            .expect("svs web runs");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some((_, url)) = line.split_once(" at http://") {
                    let _ = tx.send(format!("http://{url}"));
                }
            }
        });
        let url = rx
            .recv_timeout(WEB_LIMIT)
            .expect("svs web printed the address of its page");
        Self { child, url, port }
    }

    /// The process id (for its memory).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Opens the page in `browser` and waits until it is connected.
    pub async fn open_in(&self, browser: &Browser) {
        browser.open(&self.url).await;
        browser.wait_text("#link", "connected", WEB_LIMIT).await;
    }

    /// Sends raw HTTP to the page server; returns what it answered.
    pub fn raw(&self, request: &str) -> String {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connects");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream.write_all(request.as_bytes()).expect("writes");
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    }
}

impl Drop for SvsWeb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
