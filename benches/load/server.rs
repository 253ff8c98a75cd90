//! The release `bouncer serve` binary in its own process, as an operator
//! runs it, with the TEST-ONLY certificate pinned; what it costs is read
//! from /proc (CPU time, resident memory), over the process and its
//! children. Or, as a peer on the same messages, django-ses's SNS webhook
//! behind gunicorn (`benches/peer/`).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::signing::{TEST_CERT_FILE, TEST_CERT_URL, TOPIC};

pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    /// bouncer's admin listener (its `/metrics`); a peer has none.
    pub admin: Option<SocketAddr>,
    /// How to reach the admin listener when it serves HTTPS (bouncer
    /// started with `TLS_CERT_FILE`): trusting the TEST-ONLY CA.
    admin_tls: Option<Arc<ClientConfig>>,
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
        // BENCH_BIN=/path/to/another/bouncer: a copy of another build, run
        // in turn with this one for a side-by-side comparison.
        let bin = match std::env::var("BENCH_BIN") {
            Ok(other) => {
                eprintln!("BENCH_BIN: running {other}, not this build");
                other
            }
            Err(_) => env!("CARGO_BIN_EXE_bouncer").into(),
        };
        let mut cmd = Command::new(bin);
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
        let admin_tls = extra
            .iter()
            .any(|(key, _)| *key == "TLS_CERT_FILE")
            .then(|| {
                let mut roots = RootCertStore::empty();
                let ca = format!("{root}/fixtures/test-only/TEST-ONLY-ca-cert.pem");
                for cert in CertificateDer::pem_file_iter(ca).expect("the CA file") {
                    roots.add(cert.expect("a CA certificate")).expect("a root");
                }
                Arc::new(
                    ClientConfig::builder()
                        .with_root_certificates(roots)
                        .with_no_client_auth(),
                )
            });
        Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            admin: Some(SocketAddr::from(([127, 0, 0, 1], admin))),
            admin_tls,
        }
        .answering()
    }

    /// Starts django-ses's SNS event webhook behind gunicorn on
    /// `database_url` (its tables made first by Django's `migrate`), from
    /// the virtualenv `BENCH_PEER_VENV` (default `target/peer-venv`, made
    /// from `benches/peer/requirements.txt`). gunicorn runs
    /// `BENCH_PEER_WORKERS` sync workers, by default its documented
    /// starting point for a server, 2 × cores + 1.
    pub fn start_peer(database_url: &str) -> Server {
        let root = env!("CARGO_MANIFEST_DIR");
        let venv = peer_venv();
        let bin = |name: &str| std::path::Path::new(&venv).join("bin").join(name);
        let project = |cmd: &mut Command| {
            cmd.env_clear()
                .current_dir(format!("{root}/benches/peer"))
                .env("PATH", "/usr/bin:/bin")
                .env("DJANGO_SETTINGS_MODULE", "django_ses_peer.settings")
                .env("PEER_DATABASE_URL", database_url)
                .env("PEER_CERT_URL", TEST_CERT_URL)
                .env("PEER_CERT_FILE", format!("{root}/{TEST_CERT_FILE}"));
        };
        let mut migrate = Command::new(bin("python"));
        project(&mut migrate);
        let migrated = migrate
            .args(["-m", "django", "migrate", "--verbosity", "0"])
            .status()
            .expect("the peer's migrate runs");
        assert!(migrated.success(), "the peer's migrate failed");
        let port = free_port();
        let workers = std::env::var("BENCH_PEER_WORKERS")
            .ok()
            .and_then(|w| w.parse::<usize>().ok())
            .unwrap_or_else(|| 2 * std::thread::available_parallelism().map_or(1, |n| n.get()) + 1);
        let mut cmd = Command::new(bin("gunicorn"));
        project(&mut cmd);
        let child = cmd
            .args(["--workers", &workers.to_string()])
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .args(["--backlog", "2048", "--log-level", "warning"])
            .arg("django_ses_peer.wsgi")
            .stdout(Stdio::null())
            .spawn()
            .expect("gunicorn starts");
        let mut server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            admin: None,
            admin_tls: None,
        }
        .answering();
        // Every worker imported the project (the master answers before they
        // all have); a project that cannot load stops the master.
        std::thread::sleep(Duration::from_secs(2));
        assert!(
            matches!(server.child.try_wait(), Ok(None)),
            "gunicorn stopped: its workers could not load the project (see above)"
        );
        server
    }

    fn answering(self) -> Server {
        for _ in 0..300 {
            if std::net::TcpStream::connect(self.addr).is_ok() {
                return self;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the server did not start");
    }

    /// The server's process and its children (gunicorn's workers).
    fn pids(&self) -> Vec<u32> {
        let root = self.child.id();
        assert!(
            std::path::Path::new(&format!("/proc/{root}/task/{root}/children")).exists(),
            "this kernel does not list a process's children in /proc: the peer's CPU cannot be counted"
        );
        let mut pids = vec![root];
        let mut i = 0;
        while i < pids.len() {
            let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", pids[i]))
                .unwrap_or_default();
            pids.extend(
                children
                    .split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
            i += 1;
        }
        pids
    }

    /// The server's proportional set size now, in MiB, summed over its
    /// processes: pages they share counted once in all, where
    /// [`Server::memory_mib`] counts them in each.
    pub fn proportional_mib(&self) -> f64 {
        self.sum_mib("smaps_rollup", "Pss:")
    }

    /// A `kB` line (`field`) of /proc/PID/`file`, in MiB, summed over the
    /// server's processes.
    fn sum_mib(&self, file: &str, field: &str) -> f64 {
        self.pids()
            .iter()
            .map(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/{file}"))
                    .unwrap_or_default()
                    .lines()
                    .find(|l| l.starts_with(field))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<f64>().ok())
                    .map_or(0.0, |kib| kib / 1024.0)
            })
            .sum()
    }

    /// utime + stime, in seconds, of the server's processes, plus those
    /// of the children it has reaped (a gunicorn worker that restarted).
    pub fn cpu_seconds(&self) -> f64 {
        let reaped = stat_seconds(&format!("/proc/{}/stat", self.child.id()));
        self.pids()
            .iter()
            .map(|pid| cpu_seconds(&format!("/proc/{pid}/stat")))
            .sum::<f64>()
            + reaped.get(13).unwrap_or(&0.0)
            + reaped.get(14).unwrap_or(&0.0)
    }

    /// A `VmRSS`/`VmHWM`-style line of /proc/PID/status, in MiB, summed
    /// over the server's processes (for a peak, an upper bound).
    pub fn memory_mib(&self, field: &str) -> f64 {
        self.sum_mib("status", field)
    }
}

trait ReadWrite: std::io::Read + std::io::Write {}
impl<T: std::io::Read + std::io::Write> ReadWrite for T {}

impl Server {
    /// The `_sum` and `_count` of a histogram in the server's `/metrics`.
    pub fn histogram(&self, name: &str) -> (f64, f64) {
        use std::io::{Read, Write};
        let mut text = String::new();
        if let Some(admin) = self.admin
            && let Ok(stream) = std::net::TcpStream::connect(admin)
        {
            let request =
                format!("GET /metrics HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
            let mut stream: Box<dyn ReadWrite> = match &self.admin_tls {
                None => Box::new(stream),
                Some(config) => {
                    let name = ServerName::try_from("localhost").expect("a name");
                    let tls = ClientConnection::new(config.clone(), name).expect("a TLS client");
                    Box::new(StreamOwned::new(tls, stream))
                }
            };
            let _ = stream.write_all(request.as_bytes());
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

/// The peer's virtualenv, `BENCH_PEER_VENV` (default `target/peer-venv`),
/// made absolute (gunicorn and python run from benches/peer); exits with
/// the commands that make it when it is missing.
pub fn peer_venv() -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let venv =
        std::env::var("BENCH_PEER_VENV").unwrap_or_else(|_| format!("{root}/target/peer-venv"));
    let venv = std::path::absolute(&venv)
        .map(|p| p.display().to_string())
        .unwrap_or(venv);
    if !std::path::Path::new(&venv).join("bin/gunicorn").exists() {
        eprintln!(
            "no peer at {venv}; make it with:\n  python3 -m venv {venv} && {venv}/bin/pip install -r {root}/benches/peer/requirements.txt"
        );
        std::process::exit(2);
    }
    venv
}

/// utime + stime of a process, in seconds.
pub fn cpu_seconds(stat_path: &str) -> f64 {
    let fields = stat_seconds(stat_path);
    fields.get(11).unwrap_or(&0.0) + fields.get(12).unwrap_or(&0.0)
}

/// The fields of /proc/PID/stat after the command name (which is in
/// parentheses), read once, each as if a count of clock ticks of 1/100 s,
/// in seconds (what is not a number reads 0).
fn stat_seconds(stat_path: &str) -> Vec<f64> {
    let stat = std::fs::read_to_string(stat_path).unwrap_or_default();
    stat.rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .map(|v| v.parse::<f64>().map_or(0.0, |ticks| ticks / 100.0))
                .collect()
        })
        .unwrap_or_default()
}
