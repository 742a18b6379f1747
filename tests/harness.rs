//! The test harness's own promises: a server whose picked port is taken before it binds is
//! started again on another port, and a port some other process listens on is never taken for
//! the server's.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Listens on a free port, and makes the next server this thread starts try that port first.
fn take_a_port() -> (TcpListener, u16) {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    try_port_first(port);
    (taken, port)
}

/// The started server moved off the taken port, and it (not the test) holds its own.
fn assert_moved(server: &Proc, taken: u16) {
    assert_ne!(server.port, taken, "{}", server.logs());
    assert!(listens(server.child.id(), server.port));
    assert!(!listens(server.child.id(), taken));
    assert!(listens(std::process::id(), taken));
}

#[test]
fn the_mock_on_a_taken_port_moves_to_another() {
    let (_taken, port) = take_a_port();
    let mock = start_mock();
    assert_moved(&mock, port);
    let r = request(mock.port, "GET", "/__mock/requests", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn redis_on_a_taken_port_moves_to_another() {
    let (_taken, port) = take_a_port();
    let redis = start_redis_on(None);
    assert_moved(&redis, port);
    let mut conn = TcpStream::connect(redis.addr()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(b"PING\r\n").unwrap();
    let mut reply = [0u8; 7];
    conn.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"+PONG\r\n");
}

#[test]
fn nginx_on_a_taken_port_moves_to_another() {
    let mock = start_mock();
    let (_taken, port) = take_a_port();
    let nginx = start_nginx(&[mock.port]);
    assert_moved(&nginx, port);
    let r = request(nginx.port, "GET", "/__mock/requests", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
#[should_panic(expected = "exited early with exit status: 3:\nno such model file")]
fn any_other_early_exit_fails_with_the_childs_output() {
    start_listening("failing server", |_port| {
        Command::new("sh")
            .args(["-c", "echo 'no such model file' >&2; exit 3"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    });
}
