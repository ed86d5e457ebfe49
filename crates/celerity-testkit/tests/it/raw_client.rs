//! A tiny NATS protocol client over plain TCP, just enough to check what a server accepts.
//!
//! It exists because the testkit has no NATS client dependency; it is not a general client
//! (no TLS, no reconnects, one request at a time).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::Duration;

/// How long any single read from the server may take.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the first line a server sends on a fresh connection and returns its `INFO` JSON.
pub(crate) fn read_info(port: u16) -> serde_json::Value {
    let stream =
        TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("server accepts a TCP connection");
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .expect("read timeout can be set");
    let mut reader = BufReader::new(stream);
    read_info_line(&mut reader)
}

/// A connected, authenticated plaintext client.
pub(crate) struct RawClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    n_requests: u32,
}

impl RawClient {
    /// Connects and sends `CONNECT` with `options` (a JSON object, e.g. `{"user":"a","pass":"b"}`)
    /// plus `"verbose": false`, so the server sends no `+OK` lines.
    ///
    /// Returns the server's `-ERR` line when it rejects the connection.
    pub(crate) fn connect(port: u16, options: &str) -> Result<RawClient, String> {
        let mut options: serde_json::Value =
            serde_json::from_str(options).expect("CONNECT options are JSON");
        options["verbose"] = false.into();
        let writer = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .expect("server accepts a TCP connection");
        writer
            .set_read_timeout(Some(READ_TIMEOUT))
            .expect("read timeout can be set");
        let mut client = RawClient {
            reader: BufReader::new(writer.try_clone().expect("socket can be cloned")),
            writer,
            n_requests: 0,
        };
        read_info_line(&mut client.reader);
        client.send(&format!("CONNECT {options}\r\nPING\r\n"));
        match client.read_line().as_str() {
            "PONG" => Ok(client),
            other => Err(other.to_owned()),
        }
    }

    /// Publishes `payload` to `subject` and returns the first reply's payload.
    pub(crate) fn request(&mut self, subject: &str, payload: &str) -> String {
        self.n_requests += 1;
        let inbox = format!("_INBOX.raw.{}", self.n_requests);
        let sid = self.n_requests;
        self.send(&format!(
            "SUB {inbox} {sid}\r\nPUB {subject} {inbox} {}\r\n{payload}\r\n",
            payload.len()
        ));
        loop {
            let line = self.read_line();
            if line == "PING" {
                self.send("PONG\r\n");
                continue;
            }
            let Some(header) = line.strip_prefix("MSG ") else {
                assert!(
                    !line.starts_with("-ERR"),
                    "server rejected request to {subject}: {line}"
                );
                continue;
            };
            let length: usize = header
                .rsplit(' ')
                .next()
                .and_then(|field| field.parse().ok())
                .expect("MSG line ends with the payload length");
            let mut body = vec![0; length + 2];
            self.reader
                .read_exact(&mut body)
                .expect("server sends the whole reply payload");
            self.send(&format!("UNSUB {sid}\r\n"));
            body.truncate(length);
            return String::from_utf8(body).expect("reply payload is UTF-8");
        }
    }

    /// Sends a request to a JetStream API subject and parses the JSON reply.
    pub(crate) fn jetstream_api(&mut self, subject: &str, payload: &str) -> serde_json::Value {
        let reply = self.request(subject, payload);
        serde_json::from_str(&reply).expect("JetStream API replies with JSON")
    }

    fn send(&mut self, text: &str) {
        self.writer
            .write_all(text.as_bytes())
            .expect("server accepts our bytes");
    }

    fn read_line(&mut self) -> String {
        let mut line = String::new();
        self.reader
            .read_line(&mut line)
            .expect("server sends a line");
        line.trim_end().to_owned()
    }
}

fn read_info_line(reader: &mut BufReader<TcpStream>) -> serde_json::Value {
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .expect("server sends INFO first");
    let json = line
        .trim_end()
        .strip_prefix("INFO ")
        .expect("first line is INFO");
    serde_json::from_str(json).expect("INFO carries JSON")
}
