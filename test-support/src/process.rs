//! Child processes of a test: a port for them, where their log goes, and a handle that kills
//! them when the test ends (even by a panic).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::time::Instant;

/// A port nothing listens on now (for a child process told its port in advance).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where a child's log goes: `$SVS_TEST_LOGS/<name>.log` when set (to read after a failure),
/// else nowhere.
pub fn log_file(name: &str) -> Stdio {
    match std::env::var_os("SVS_TEST_LOGS") {
        Some(dir) => {
            let path = Path::new(&dir).join(format!("{name}.log"));
            std::fs::File::create(path).map_or_else(|_| Stdio::null(), Stdio::from)
        }
        None => Stdio::null(),
    }
}

/// Waits until 127.0.0.1:`port` takes connections. False if `child` exited first or `within`
/// passed (the child is then killed).
pub async fn wait_for_port(child: &mut Child, port: u16, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

/// A service run as a child process (the real binary), killed when dropped.
#[derive(Debug)]
pub struct ChildService {
    child: Child,
    /// The port it serves on.
    pub port: u16,
}

/// CPU time (user + system) process `pid` has used so far, in seconds (0 once it is gone).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat: 11 and 12 after the name and state.
    (ticks(11) + ticks(12)) / 100.0
}

/// Resident memory of process `pid` in KiB, now (`VmRSS`), if it still runs.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// Peak resident memory of process `pid` so far in KiB (`VmHWM`), if it still runs.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

impl ChildService {
    /// Spawns `command`, which will serve on `port`; the caller waits for it as it needs (a
    /// health check over TLS, say).
    pub fn spawn(mut command: Command, port: u16) -> Self {
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("{command:?} does not run: {e}"));
        Self { child, port }
    }

    /// Spawns `command` and waits (up to 60 s) until it takes connections on `port`.
    pub async fn start(command: Command, port: u16) -> Self {
        let mut service = Self::spawn(command, port);
        assert!(
            wait_for_port(&mut service.child, port, Duration::from_secs(60)).await,
            "the service did not take connections on port {port} (set SVS_TEST_LOGS to keep its log)"
        );
        service
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time (user + system) it has used so far, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.child.id())
    }

    /// Kills it now (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether it has exited, and how.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }
}

impl Drop for ChildService {
    fn drop(&mut self) {
        self.kill();
    }
}
