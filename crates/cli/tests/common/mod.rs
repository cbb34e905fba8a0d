//! What the command-line tests share: the binary, a plain upstream on loopback and free ports.
#![allow(dead_code, reason = "each test binary uses its own part of this")]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

/// A plain HTTP/1.1 upstream answering `hello` to every request, keep-alive; with `reached`, it
/// records the target of every request that arrives, whether or not its answer gets back.
pub fn upstream(reached: Option<Arc<Mutex<BTreeSet<String>>>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let reached = reached.clone();
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
                    if let (Some(reached), Some(target)) = (&reached, head.split_whitespace().nth(1)) {
                        reached.lock().unwrap().insert(target.to_owned());
                    }
                    if stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello").is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
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
