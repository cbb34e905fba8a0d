//! What the command-line tests share: the binary, a plain upstream on loopback and free ports.
#![allow(dead_code, reason = "each test binary uses its own part of this")]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};

/// A plain HTTP/1.1 upstream answering `hello` to every request, keep-alive; with `reached`, it
/// records the target of every request that arrives, whether or not its answer gets back.
pub fn upstream(reached: Option<Arc<Mutex<BTreeSet<String>>>>) -> u16 {
    answering_upstream(move |_, head| {
        if let (Some(reached), Some(target)) = (&reached, head.split_whitespace().nth(1)) {
            reached.lock().unwrap().insert(target.to_owned());
        }
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello".to_vec()
    })
}

/// An HTTP/1.1 upstream on loopback, keep-alive, that answers each request head with what
/// `answer` returns for it and the number of the connection it came on (from 0).
pub fn answering_upstream(answer: impl Fn(usize, &str) -> Vec<u8> + Send + Sync + 'static) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let answer = Arc::new(answer);
    std::thread::spawn(move || {
        for (connection, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let answer = Arc::clone(&answer);
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end);
                    if stream.write_all(&answer(connection, &head)).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// Kills the child when the test ends, however it ends.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `zerogate gateway` on `data` and `config`, its log in `log`, once it says where it listens.
pub fn start_gateway(data: &Path, config: &Path, log: &Path) -> Running {
    use std::io::BufRead;
    let mut gateway = zerogate()
        .arg("gateway")
        .arg("--data-dir")
        .arg(data)
        .arg("--config")
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(gateway.stdout.take().unwrap()).lines();
    while !lines.next().expect("the gateway says where it listens").unwrap().starts_with("zerogate gateway") {}
    std::thread::spawn(move || for _ in lines {});
    Running(gateway)
}

/// The serial number of the certificate in `identity` (`zerogate enroll`'s or `ca issue`'s
/// directory), as `zerogate ca revoke --serial` takes it.
pub fn serial(identity: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(identity.join("svid.pem"))
        .output()
        .unwrap();
    ok(out).trim().trim_start_matches("serial=").to_ascii_lowercase()
}

/// A port nothing listens on (as of now).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The binary under test, with no data directory or token from the environment.
pub fn zerogate() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_zerogate"));
    c.env_remove("ZEROGATE_DATA_DIR").env_remove("ZEROGATE_TOKEN");
    c
}

/// The standard output of a command that must have succeeded (else its standard error).
pub fn ok(out: Output) -> String {
    assert!(out.status.success(), "exit {:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Runs openssl in `dir`; its standard output (it must succeed).
pub fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl").args(args).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A server certificate for `name` from the test's own "public" CA in `dir` (ca.pem, ca.key),
/// valid 30 days: `{stem}.pem` and `{stem}.key`.
pub fn public_leaf(dir: &Path, stem: &str, name: &str) {
    let (key, csr, ext, pem) =
        (format!("{stem}.key"), format!("{stem}.csr"), format!("{stem}.ext"), format!("{stem}.pem"));
    std::fs::write(
        dir.join(&ext),
        format!("subjectAltName=DNS:{name}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"),
    )
    .unwrap();
    let subject = format!("/CN={name}");
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            &subject,
            "-keyout",
            &key,
            "-out",
            &csr,
        ],
    );
    openssl(
        dir,
        &[
            "x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key", "-days", "30", "-extfile", &ext, "-out",
            &pem,
        ],
    );
}

/// A CA of the test's own (a public one, or a company's, in production) in `dir`: ca.pem, ca.key.
pub fn public_ca(dir: &Path, name: &str) {
    let subject = format!("/CN={name}");
    openssl(
        dir,
        &["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "30"]
            .into_iter()
            .chain(["-subj", &subject, "-keyout", "ca.key", "-out", "ca.pem"])
            .collect::<Vec<_>>(),
    );
}
