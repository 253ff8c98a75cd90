//! The release `bouncer serve` binary in its own process, as an operator
//! runs it, with the TEST-ONLY certificate pinned; what it costs is read
//! from /proc (CPU time, resident memory).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::signing::{TEST_CERT_FILE, TEST_CERT_URL, TOPIC};

pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Server {
    /// Starts `serve` on `database_url` with the spool in `dir`, plus
    /// `extra` settings, and waits until it answers `/healthz`.
    pub fn start(database_url: &str, dir: &std::path::Path, extra: &[(&str, &str)]) -> Server {
        let port = free_port();
        let admin = free_port();
        let root = env!("CARGO_MANIFEST_DIR");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bouncer"));
        cmd.env_clear()
            .current_dir(dir)
            .env("DATABASE_URL", database_url)
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("ADMIN_LISTEN_ADDR", format!("127.0.0.1:{admin}"))
            .env("SPOOL_PATH", dir.join("bench.spool"))
            .env("SNS_TOPIC_ARNS", TOPIC)
            .env(
                "SNS_CERT_PINS",
                format!("{TEST_CERT_URL}={root}/{TEST_CERT_FILE}"),
            )
            .env("SNS_CONFIRM_MODE", "off")
            .env("LOG_LEVEL", "error")
            .env("AWS_EC2_METADATA_DISABLED", "true");
        for (key, value) in extra {
            cmd.env(key, value);
        }
        // BENCH_SERVER_ENV="HTTP_WORKERS=1,WRITE_BATCH_MAX=256": settings to
        // compare side by side.
        for pair in std::env::var("BENCH_SERVER_ENV")
            .unwrap_or_default()
            .split(',')
        {
            if let Some((key, value)) = pair.split_once('=') {
                cmd.env(key.trim(), value.trim());
            }
        }
        let child = cmd
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the server starts");
        let server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin)),
        };
        for _ in 0..300 {
            if std::net::TcpStream::connect(server.addr).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the server did not start");
    }

    /// utime + stime, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(&format!("/proc/{}/stat", self.child.id()))
    }

    /// A `VmRSS`/`VmHWM`-style line of /proc/PID/status, in MiB.
    pub fn memory_mib(&self, field: &str) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    }
}

impl Server {
    /// The `_sum` and `_count` of a histogram in the server's `/metrics`.
    pub fn histogram(&self, name: &str) -> (f64, f64) {
        use std::io::{Read, Write};
        let mut text = String::new();
        if let Ok(mut stream) = std::net::TcpStream::connect(self.admin) {
            let _ = write!(
                stream,
                "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                self.admin
            );
            let _ = stream.read_to_string(&mut text);
        }
        let value = |suffix: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}_{suffix} ")))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0.0)
        };
        (value("sum"), value("count"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// utime + stime of a process, in seconds (clock ticks of 1/100 s).
pub fn cpu_seconds(stat_path: &str) -> f64 {
    let stat = std::fs::read_to_string(stat_path).unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}
