//! The fuzz's mutations: a seeded PRNG, the kinds of bad message and the bytes of each.

use super::*;

/// A small seeded PRNG (xorshift64*), so every run sends the same messages.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n`.
    pub(super) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub(super) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub(super) fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// The kinds of mutation; [`Kind::mutate`] gives each variant the reason protocol.md section 7
/// gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    TruncatedJson,
    GarbledJson,
    NotATaskBody,
    GarbledMsgpack,
    WrongEncoding,
    UnknownContentType,
    UnknownVersion,
    MissingVersion,
    MissingId,
    MissingTask,
    InvalidId,
    InvalidTaskName,
    BadOptionalHeader,
    UnknownTask,
    BadArguments,
    DeepJson,
    DeepMsgpack,
    NonUtf8Header,
    HugeBody,
    DuplicateHeaders,
    ManyHeaders,
}

/// The kinds of the mixed run, each with its weight: huge bodies are rare, so the letters of about
/// 50 of them fit the dead-letter stream's 256 MiB with room to spare; non-UTF-8 headers are sent
/// apart (see [`non_utf8_headers_are_not_dead_lettered_today`]).
pub(super) const KINDS: [(Kind, usize); 20] = [
    (Kind::TruncatedJson, 10),
    (Kind::GarbledJson, 10),
    (Kind::NotATaskBody, 10),
    (Kind::GarbledMsgpack, 10),
    (Kind::WrongEncoding, 10),
    (Kind::UnknownContentType, 10),
    (Kind::UnknownVersion, 10),
    (Kind::MissingVersion, 10),
    (Kind::MissingId, 10),
    (Kind::MissingTask, 10),
    (Kind::InvalidId, 10),
    (Kind::InvalidTaskName, 10),
    (Kind::BadOptionalHeader, 10),
    (Kind::UnknownTask, 10),
    (Kind::BadArguments, 10),
    (Kind::DeepJson, 10),
    (Kind::DeepMsgpack, 10),
    (Kind::HugeBody, 1),
    (Kind::DuplicateHeaders, 10),
    (Kind::ManyHeaders, 3),
];

/// The most header bytes JetStream stores in one message (nats-server's `maxHeaderSize`).
pub(super) const MAX_HEADER_BYTES: usize = 64 * 1024;

/// What becomes of a bad message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    /// It is dead-lettered with its expected reason.
    Letter,
    /// Its letter cannot be stored even without its body, so the worker gives up (protocol.md
    /// 7.1): its FAILURE record names the expected reason, and no letter is kept.
    GivenUp,
    /// The server refuses the publish (`err_code` 10097, headers over 64 KiB).
    Refused,
}

/// A header name and value, as raw bytes.
pub(super) type Header = (Vec<u8>, Vec<u8>);

/// One bad message: its headers (in order; `None` for a message without a header block), its
/// body, the reason its letter must carry and what becomes of it.
pub(super) struct Mutation {
    pub(super) kind: Kind,
    pub(super) variant: &'static str,
    pub(super) expected: DeadLetterReason,
    pub(super) fate: Fate,
    pub(super) headers: Option<Vec<Header>>,
    pub(super) body: Vec<u8>,
}

impl Mutation {
    /// Bad message `n` before its mutation: a valid `it.ledger` task under id `fz-<n>`.
    pub(super) fn valid(kind: Kind, n: usize) -> Mutation {
        let headers = [
            ("Celerity-Version", "1".to_owned()),
            ("Celerity-Task", "it.ledger".to_owned()),
            ("Celerity-Id", format!("fz-{n}")),
        ];
        Mutation {
            kind,
            variant: "",
            expected: DeadLetterReason::BadEnvelope,
            fate: Fate::Letter,
            headers: Some(
                headers
                    .iter()
                    .map(|(name, value)| header(name, value))
                    .collect(),
            ),
            body: valid_json(n),
        }
    }

    /// Names the variant and the reason its letter must carry.
    pub(super) fn is(&mut self, variant: &'static str, expected: DeadLetterReason) {
        self.variant = variant;
        self.expected = expected;
    }

    pub(super) fn headers(&mut self) -> &mut Vec<Header> {
        self.headers.get_or_insert_with(Vec::new)
    }

    /// Sets the first value of `name`, adding the header when it is missing.
    pub(super) fn set(&mut self, name: &str, value: impl AsRef<[u8]>) {
        let headers = self.headers();
        match headers.iter_mut().find(|(key, _)| key == name.as_bytes()) {
            Some(entry) => entry.1 = value.as_ref().to_vec(),
            None => headers.push(header(name, value)),
        }
    }

    pub(super) fn remove(&mut self, name: &str) {
        self.headers().retain(|(key, _)| key != name.as_bytes());
    }

    pub(super) fn append(&mut self, name: &str, value: impl AsRef<[u8]>) {
        self.headers().push(header(name, value));
    }

    /// Makes the body `body`, declared as MessagePack.
    pub(super) fn msgpack(&mut self, body: Vec<u8>) {
        self.set("Content-Type", "application/msgpack");
        self.body = body;
    }

    /// The length of the header block, its `NATS/1.0` line and final blank line included.
    pub(super) fn header_block_len(&self) -> usize {
        let headers = self.headers.iter().flatten();
        12 + headers
            .map(|(name, value)| name.len() + 2 + value.len() + 2)
            .sum::<usize>()
    }

    /// Adds `X-Fuzz-Fill-<i>` headers until the header block is `target` bytes long.
    pub(super) fn fill_headers(&mut self, target: usize) {
        let mut i = 0;
        while self.header_block_len() + 100 < target {
            self.append(&format!("X-Fuzz-Fill-{i}"), "f".repeat(64));
            i += 1;
        }
        let room = target - self.header_block_len();
        self.append("X-Fuzz-Last", "f".repeat(room - "X-Fuzz-Last".len() - 4));
        assert_eq!(
            self.header_block_len(),
            target,
            "the header block is filled exactly"
        );
    }

    /// Variant `variant` (0 to 3) of non-UTF-8 header bytes in bad message `n`.
    pub(super) fn non_utf8(&mut self, variant: usize, n: usize) {
        use DeadLetterReason::*;
        match variant {
            0 => {
                self.is("id", BadEnvelope);
                self.set(
                    "Celerity-Id",
                    [b"fz-\xff\xfe", n.to_string().as_bytes()].concat(),
                );
            }
            1 => {
                self.is("task", BadEnvelope);
                self.set("Celerity-Task", b"it.led\xc3\x28ger");
            }
            2 => {
                self.is("version", UnsupportedVersion);
                self.set("Celerity-Version", b"\xff");
            }
            _ => {
                self.is("user header", UnknownTask);
                self.set("Celerity-Task", format!("it.fuzz-{n}"));
                self.append("X-Fuzz", b"\x80\xff\xfe");
            }
        }
    }
}

pub(super) fn header(name: &str, value: impl AsRef<[u8]>) -> Header {
    (name.as_bytes().to_vec(), value.as_ref().to_vec())
}

/// A valid JSON body of `it.ledger` returning `n` at once.
pub(super) fn valid_json(n: usize) -> Vec<u8> {
    format!(r#"{{"args":[{n},0],"kwargs":{{}}}}"#).into_bytes()
}

/// The same body in MessagePack.
pub(super) fn valid_msgpack(n: usize) -> Vec<u8> {
    let mut body = vec![0x82];
    msgpack_str(&mut body, "args");
    body.push(0x92);
    msgpack_uint(&mut body, n as u64);
    body.push(0x00);
    msgpack_str(&mut body, "kwargs");
    body.push(0x80);
    body
}

/// A MessagePack body `{"args": [<args>...]}`, the argument bytes written by hand.
pub(super) fn msgpack_args(n_args: u8, args: &[u8]) -> Vec<u8> {
    let mut body = vec![0x81];
    msgpack_str(&mut body, "args");
    body.push(0x90 | n_args);
    body.extend_from_slice(args);
    body
}

pub(super) fn msgpack_str(out: &mut Vec<u8>, text: &str) {
    assert!(text.len() < 32, "a fixstr");
    out.push(0xa0 | text.len() as u8);
    out.extend_from_slice(text.as_bytes());
}

pub(super) fn msgpack_uint(out: &mut Vec<u8>, value: u64) {
    match value {
        0..=0x7f => out.push(value as u8),
        0x80..=0xff => out.extend_from_slice(&[0xcc, value as u8]),
        0x100..=0xffff => {
            out.push(0xcd);
            out.extend_from_slice(&(value as u16).to_be_bytes());
        }
        _ => {
            out.push(0xcf);
            out.extend_from_slice(&value.to_be_bytes());
        }
    }
}

impl Kind {
    pub(super) fn pick(rng: &mut Rng) -> Kind {
        let total: usize = KINDS.iter().map(|(_, weight)| weight).sum();
        let mut roll = rng.below(total);
        for (kind, weight) in KINDS {
            if roll < weight {
                return kind;
            }
            roll -= weight;
        }
        unreachable!("the roll is below the total weight")
    }

    /// Bad message `n` of this kind; where its task id is valid, it is `fz-<n>`.
    pub(super) fn mutate(self, n: usize, rng: &mut Rng) -> Mutation {
        use DeadLetterReason::*;
        let mut m = Mutation::valid(self, n);
        match self {
            Kind::TruncatedJson => {
                m.is("prefix", UndecodableBody);
                m.body.truncate(rng.below(m.body.len()));
            }
            Kind::GarbledJson => match rng.below(3) {
                0 => {
                    m.is("invalid utf-8", UndecodableBody);
                    for _ in 0..=rng.below(4) {
                        let at = rng.below(m.body.len());
                        m.body[at] = rng.byte();
                    }
                    // A byte that is never valid UTF-8, so the body is never valid JSON.
                    let at = rng.below(m.body.len() + 1);
                    m.body.insert(at, *rng.pick(&[0xff, 0xfe, 0xc0, 0x80]));
                }
                1 => {
                    m.is("trailing bytes", UndecodableBody);
                    let trailer = *rng.pick(&["}", "x", ",{}", "[]"]);
                    m.body.extend_from_slice(trailer.as_bytes());
                }
                _ => {
                    m.is("no colon", UndecodableBody);
                    let colon = m.body.iter().position(|byte| *byte == b':');
                    m.body[colon.expect("a JSON map has a colon")] = b'=';
                }
            },
            Kind::NotATaskBody => {
                m.is("json value", UndecodableBody);
                let body = *rng.pick(&[
                    "[1,0]",
                    "\"it.ledger\"",
                    "42",
                    "null",
                    "true",
                    r#"{"args":5}"#,
                    r#"{"args":{"n":1,"sleep_ms":0}}"#,
                    r#"{"kwargs":[1,0]}"#,
                    r#"{"args":[1,0],"kwargs":"x"}"#,
                ]);
                m.body = body.into();
            }
            Kind::GarbledMsgpack => match rng.below(5) {
                0 => {
                    m.is("prefix", UndecodableBody);
                    let mut body = valid_msgpack(n);
                    body.truncate(rng.below(body.len()));
                    m.msgpack(body);
                }
                1 => {
                    // 0xc1 is never used by MessagePack.
                    m.is("0xc1", UndecodableBody);
                    let garbage = (0..rng.below(16)).map(|_| rng.byte());
                    m.msgpack([0xc1].into_iter().chain(garbage).collect());
                }
                2 => {
                    // A map of 15 entries with at most 20 bytes to hold its 30 values.
                    m.is("short map", UndecodableBody);
                    let garbage = (0..rng.below(21)).map(|_| rng.byte());
                    m.msgpack([0x8f].into_iter().chain(garbage).collect());
                }
                // Binary and extension values, which the protocol does not allow.
                3 => {
                    m.is("binary", UndecodableBody);
                    m.msgpack(msgpack_args(2, &[0xc4, 0x03, b'a', b'b', b'c', 0x00]));
                }
                _ => {
                    m.is("extension", UndecodableBody);
                    m.msgpack(msgpack_args(2, &[0xd4, 0x01, 0x00, 0x00]));
                }
            },
            Kind::WrongEncoding => match rng.below(4) {
                0 => {
                    m.is("json as msgpack", UndecodableBody);
                    m.set("Content-Type", "application/msgpack");
                }
                1 => {
                    m.is("msgpack as default", UndecodableBody);
                    m.body = valid_msgpack(n);
                }
                2 => {
                    m.is("msgpack as json", UndecodableBody);
                    m.set("Content-Type", "application/json");
                    m.body = valid_msgpack(n);
                }
                _ => {
                    // Not the protocol's header name: readers ignore an unknown `Celerity-*`
                    // header, so the body is read as JSON.
                    m.is("msgpack under Celerity-Content-Type", UndecodableBody);
                    m.set("Celerity-Content-Type", "application/msgpack");
                    m.body = valid_msgpack(n);
                }
            },
            Kind::UnknownContentType => {
                m.is("mime", BadEnvelope);
                let content_type = *rng.pick(&[
                    "text/plain",
                    "application/xml",
                    "application/cbor",
                    "application/json5",
                    "application/msgpack+zstd",
                    "json",
                    "",
                ]);
                m.set("Content-Type", content_type);
            }
            Kind::UnknownVersion => {
                m.is("number", UnsupportedVersion);
                let version = *rng.pick(&["0", "2", "99", "100", "4294967296"]);
                m.set("Celerity-Version", version);
            }
            Kind::MissingVersion => match rng.below(3) {
                0 => {
                    m.is("no version", BadEnvelope);
                    m.remove("Celerity-Version");
                }
                1 => {
                    m.is("no headers", BadEnvelope);
                    m.headers = None;
                }
                _ => {
                    m.is("empty header block", BadEnvelope);
                    m.headers = Some(Vec::new());
                }
            },
            Kind::MissingId => {
                m.is("no id", BadEnvelope);
                m.remove("Celerity-Id");
            }
            Kind::MissingTask => {
                m.is("no task", BadEnvelope);
                m.remove("Celerity-Task");
            }
            Kind::InvalidId => {
                m.is("id", BadEnvelope);
                let id = match rng.below(7) {
                    0 => format!("fz {n}"),
                    1 => "a".repeat(300),
                    2 => "b".repeat(129),
                    3 => format!("fz.{n}"),
                    4 => format!("fz*{n}>"),
                    5 => format!("fz-ü-{n}"),
                    _ => String::new(),
                };
                m.set("Celerity-Id", id);
            }
            Kind::InvalidTaskName => {
                m.is("name", BadEnvelope);
                let name = match rng.below(5) {
                    0 => "it ledger".to_owned(),
                    1 => "t".repeat(300),
                    2 => "it.led\tger".to_owned(),
                    3 => "it.\u{7f}ledger".to_owned(),
                    _ => String::new(),
                };
                m.set("Celerity-Task", name);
            }
            Kind::BadOptionalHeader => {
                let (name, value) = *rng.pick(&[
                    ("Celerity-Retries", "once"),
                    ("Celerity-Retries", "-1"),
                    ("Celerity-Priority", "10"),
                    ("Celerity-Priority", "high"),
                    ("Celerity-Eta", "soon"),
                    ("Celerity-Expires", "1e12"),
                    ("Celerity-Sent-At", "yesterday"),
                    ("Celerity-Requeued", "x"),
                    ("Celerity-Parent-Id", "has space"),
                    ("Celerity-Root-Id", "a.b"),
                    ("Celerity-Group-Id", ""),
                    ("Celerity-Chord-Id", "*"),
                ]);
                m.is(name, BadEnvelope);
                m.set(name, value);
            }
            Kind::UnknownTask => {
                m.is("name", UnknownTask);
                let name = match rng.below(4) {
                    0 => format!("it.fuzz-{n}"),
                    1 => "it.ledger.v2".to_owned(),
                    2 => "IT.LEDGER".to_owned(),
                    _ => "t".repeat(256),
                };
                m.set("Celerity-Task", name);
            }
            Kind::BadArguments => {
                if rng.below(5) == 0 {
                    m.is("msgpack string", BadArguments);
                    m.msgpack(msgpack_args(2, &[0xa1, b'a', 0x00]));
                } else {
                    m.is("json", BadArguments);
                    let args = *rng.pick(&[
                        r#""args":["a",0]"#,
                        r#""args":[7]"#,
                        r#""args":[7,0,1]"#,
                        r#""args":[-1,0]"#,
                        r#""args":[1.5,0]"#,
                        r#""args":[18446744073709551616,0]"#,
                        r#""args":[null,0]"#,
                        r#""args":[[1],0]"#,
                        r#""args":[7,0],"kwargs":{"bogus":1}"#,
                        r#""args":[7,0],"kwargs":{"n":1}"#,
                        r#""kwargs":{"n":1}"#,
                        "",
                    ]);
                    m.body = format!("{{{args}}}").into_bytes();
                }
            }
            Kind::DeepJson => {
                let (open, close) = ("[".repeat(DEEP), "]".repeat(DEEP));
                let (variant, body) = match rng.below(4) {
                    0 => ("in args", format!(r#"{{"args":[{open}{close},0]}}"#)),
                    1 => ("top level", format!("{open}{close}")),
                    2 => {
                        let (open, close) = (r#"{"a":"#.repeat(DEEP), "}".repeat(DEEP));
                        (
                            "maps in kwargs",
                            format!(r#"{{"args":[{n},0],"kwargs":{open}1{close}}}"#),
                        )
                    }
                    _ => ("unclosed", format!(r#"{{"args":{open}"#)),
                };
                m.is(variant, UndecodableBody);
                m.body = body.into_bytes();
            }
            Kind::DeepMsgpack => {
                let (variant, body) = match rng.below(3) {
                    0 => {
                        let mut args = vec![0x91; DEEP];
                        args.extend_from_slice(&[0xc0, 0x00]);
                        ("in args", msgpack_args(2, &args))
                    }
                    1 => {
                        let mut body = vec![0x91; DEEP];
                        body.push(0xc0);
                        ("top level", body)
                    }
                    _ => {
                        let mut args: Vec<u8> = [0x81, 0xa1, b'a'].repeat(DEEP);
                        args.extend_from_slice(&[0xc0, 0x00]);
                        ("maps in args", msgpack_args(2, &args))
                    }
                };
                m.is(variant, UndecodableBody);
                m.msgpack(body);
            }
            Kind::NonUtf8Header => m.non_utf8(rng.below(4), n),
            Kind::HugeBody => {
                if rng.below(2) == 0 {
                    m.is("1 MiB string argument", BadArguments);
                    let (prefix, suffix) = (r#"{"args":[""#, r#"",0]}"#);
                    let filler = "x".repeat(HUGE_BODY - prefix.len() - suffix.len());
                    m.body = format!("{prefix}{filler}{suffix}").into_bytes();
                } else {
                    m.is("1 MiB unclosed", UndecodableBody);
                    m.body = br#"{"args":["#.to_vec();
                    m.body.resize(HUGE_BODY, b'7');
                }
            }
            Kind::DuplicateHeaders => {
                // A producer must not repeat a protocol header; readers use the first value.
                m.is("first value wins", BadEnvelope);
                let (name, first, second) = match rng.below(5) {
                    0 => {
                        m.expected = UnsupportedVersion;
                        ("Celerity-Version", "99".to_owned(), "1".to_owned())
                    }
                    1 => {
                        m.expected = UnknownTask;
                        (
                            "Celerity-Task",
                            format!("it.fuzz-{n}"),
                            "it.ledger".to_owned(),
                        )
                    }
                    2 => ("Celerity-Id", format!("fz {n}"), format!("fz-{n}")),
                    3 => {
                        // The second id is the bad one: the first is read, and names a task
                        // that is not registered.
                        m.expected = UnknownTask;
                        m.set("Celerity-Task", format!("it.fuzz-{n}"));
                        ("Celerity-Id", format!("fz-{n}"), format!("fz {n}"))
                    }
                    _ => (
                        "Content-Type",
                        "text/plain".to_owned(),
                        "application/json".to_owned(),
                    ),
                };
                m.remove(name);
                m.append(name, first);
                m.append(name, second);
            }
            Kind::ManyHeaders => {
                m.set("Celerity-Task", format!("it.fuzz-{n}"));
                match rng.below(4) {
                    0 => {
                        m.is("distinct names", UnknownTask);
                        for i in 0..500 + rng.below(2_000) {
                            m.append(&format!("X-Fuzz-{i}"), format!("v{i}"));
                        }
                    }
                    1 => {
                        m.is("one name repeated", UnknownTask);
                        for i in 0..500 + rng.below(2_000) {
                            m.append("X-Fuzz", format!("v{i}"));
                        }
                    }
                    2 => {
                        // Just under the server's 64 KiB of headers: the letter, with its own
                        // headers added, is over it even without the body (7.1).
                        m.is("just under 64 KiB", UnknownTask);
                        m.fill_headers(MAX_HEADER_BYTES - 128);
                        m.fate = Fate::GivenUp;
                    }
                    _ => {
                        m.is("over 64 KiB", UnknownTask);
                        m.fill_headers(MAX_HEADER_BYTES + 1024);
                        m.fate = Fate::Refused;
                    }
                }
            }
        }
        m
    }
}

/// A write-only NATS connection over plain TCP that publishes raw bytes; it answers the server's
/// `PING`s and keeps any `-ERR` it reads.
pub(super) struct RawPublisher {
    pub(super) writer: Arc<tokio::sync::Mutex<OwnedWriteHalf>>,
    pub(super) errors: Arc<Mutex<Vec<String>>>,
    pub(super) reader: tokio::task::JoinHandle<()>,
}

impl RawPublisher {
    pub(super) async fn connect(port: u16) -> RawPublisher {
        let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .await
            .expect("the server accepts a TCP connection");
        let (read, mut write) = stream.into_split();
        let mut reader = BufReader::new(read);
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .await
            .expect("the server's INFO");
        assert!(line.starts_with("INFO "), "{line}");
        write
            .write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,\"protocol\":1}\r\nPING\r\n")
            .await
            .expect("CONNECT is sent");
        line.clear();
        reader
            .read_line(&mut line)
            .await
            .expect("the server's PONG");
        assert_eq!(line.trim_end(), "PONG", "the server accepts the connection");
        let writer = Arc::new(tokio::sync::Mutex::new(write));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let reader = tokio::spawn({
            let writer = writer.clone();
            let errors = errors.clone();
            async move {
                let mut line = String::new();
                loop {
                    line.clear();
                    match reader.read_line(&mut line).await {
                        Ok(0) | Err(_) => {
                            errors
                                .lock()
                                .expect("errors")
                                .push("connection closed".into());
                            return;
                        }
                        Ok(_) => {}
                    }
                    if line.starts_with("PING") {
                        let _ = writer.lock().await.write_all(b"PONG\r\n").await;
                    } else if line.starts_with("-ERR") {
                        errors
                            .lock()
                            .expect("errors")
                            .push(line.trim_end().to_owned());
                    }
                }
            }
        });
        RawPublisher {
            writer,
            errors,
            reader,
        }
    }

    /// Publishes `mutation` to the task subject with `reply` as the reply subject: an `HPUB`, or
    /// a `PUB` for a message without a header block.
    pub(super) async fn publish(&self, reply: &str, mutation: &Mutation) {
        let mut frame = Vec::with_capacity(mutation.body.len() + 256);
        match &mutation.headers {
            None => {
                frame.extend_from_slice(
                    format!("PUB {TASK_SUBJECT} {reply} {}\r\n", mutation.body.len()).as_bytes(),
                );
            }
            Some(headers) => {
                let mut block = b"NATS/1.0\r\n".to_vec();
                for (name, value) in headers {
                    block.extend_from_slice(name);
                    block.extend_from_slice(b": ");
                    block.extend_from_slice(value);
                    block.extend_from_slice(b"\r\n");
                }
                block.extend_from_slice(b"\r\n");
                frame.extend_from_slice(
                    format!(
                        "HPUB {TASK_SUBJECT} {reply} {} {}\r\n",
                        block.len(),
                        block.len() + mutation.body.len()
                    )
                    .as_bytes(),
                );
                frame.extend_from_slice(&block);
            }
        }
        frame.extend_from_slice(&mutation.body);
        frame.extend_from_slice(b"\r\n");
        self.writer
            .lock()
            .await
            .write_all(&frame)
            .await
            .expect("the server takes the message");
    }

    pub(super) async fn flush(&self) {
        self.writer
            .lock()
            .await
            .flush()
            .await
            .expect("the server takes the messages");
    }

    pub(super) fn errors(&self) -> Vec<String> {
        self.errors.lock().expect("errors").clone()
    }
}

impl Drop for RawPublisher {
    fn drop(&mut self) {
        self.reader.abort();
    }
}
