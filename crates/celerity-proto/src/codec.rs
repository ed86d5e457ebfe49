//! Body codecs: JSON (the default, for interop) and MessagePack (compact, chosen per message with
//! `Content-Type`).
//!
//! MessagePack records are maps with field names (`rmp_serde::to_vec_named`), so any MessagePack
//! library reads them as the same objects as the JSON form.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// How deeply arrays and maps may nest in a body or record: serde_json's own limit, so both
/// encodings refuse the same values (rmp-serde's default, 1,024, lets a small hostile body
/// recurse that deep on a worker's stack).
const MAX_DEPTH: usize = 128;

/// How a body or record is encoded.
///
/// ```
/// # use celerity_proto::ContentType;
/// assert_eq!(ContentType::parse("application/msgpack"), Some(ContentType::MsgPack));
/// let bytes = ContentType::MsgPack.encode(&vec![1, 2])?;
/// assert_eq!(ContentType::MsgPack.decode::<Vec<i32>>(&bytes)?, vec![1, 2]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ContentType {
    /// `application/json`, UTF-8.
    #[default]
    Json,
    /// `application/msgpack`.
    MsgPack,
}

/// A value that could not be encoded.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode as {content_type}")]
pub struct EncodeError {
    /// The encoding that was asked for.
    pub content_type: &'static str,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

/// Bytes that are not a valid encoding of the expected record.
#[derive(Debug, thiserror::Error)]
#[error("body is not valid {content_type}: {source}")]
pub struct DecodeError {
    /// The encoding that was expected.
    pub content_type: &'static str,
    /// What the decoder reported.
    #[source]
    pub source: DecodeFailure,
}

/// The decoder's own error behind a [`DecodeError`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeFailure {
    /// serde_json's error, for a JSON body or record.
    #[error(transparent)]
    Json(serde_json::Error),
    /// rmp-serde's error, for a MessagePack body or record (including nesting deeper than the
    /// limit).
    #[error(transparent)]
    MessagePack(rmp_serde::decode::Error),
}

impl ContentType {
    /// The MIME type as it appears in the `Content-Type` header.
    pub fn as_str(self) -> &'static str {
        match self {
            ContentType::Json => "application/json",
            ContentType::MsgPack => "application/msgpack",
        }
    }

    /// Parses a `Content-Type` value; parameters such as `; charset=utf-8` are ignored and
    /// `application/x-msgpack` is accepted as an alias.
    pub fn parse(value: &str) -> Option<Self> {
        let mime = value.split(';').next().unwrap_or_default().trim();
        match mime.to_ascii_lowercase().as_str() {
            "application/json" => Some(ContentType::Json),
            "application/msgpack" | "application/x-msgpack" | "application/vnd.msgpack" => {
                Some(ContentType::MsgPack)
            }
            _ => None,
        }
    }

    /// Tells a stored record's encoding from its first byte: `{` is JSON, a MessagePack map marker
    /// (`0x80..=0x8f`, `0xde`, `0xdf`) is MessagePack.
    ///
    /// Result records in the KV bucket carry no headers, so readers use this.
    pub fn sniff(bytes: &[u8]) -> Option<Self> {
        match bytes.first()? {
            b'{' | b' ' | b'\n' | b'\t' | b'\r' => Some(ContentType::Json),
            0x80..=0x8f | 0xde | 0xdf => Some(ContentType::MsgPack),
            _ => None,
        }
    }

    /// Encodes `value`.
    ///
    /// # Errors
    /// [`EncodeError`] when the value cannot be represented (a map with non-string keys in JSON, a
    /// failing `Serialize` implementation).
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Vec<u8>, EncodeError> {
        let result: Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> = match self {
            ContentType::Json => serde_json::to_vec(value).map_err(Into::into),
            ContentType::MsgPack => rmp_serde::to_vec_named(value).map_err(Into::into),
        };
        result.map_err(|source| EncodeError {
            content_type: self.as_str(),
            source,
        })
    }

    /// Decodes `bytes` as a `T`.
    ///
    /// # Errors
    /// [`DecodeError`] when the bytes are not valid in this encoding, nest arrays and maps 128
    /// levels deep or more, or do not match `T`.
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, DecodeError> {
        let result = match self {
            ContentType::Json if json_too_deep(bytes) => Err(DecodeFailure::Json(
                serde_json::from_slice::<serde_json::Value>(bytes)
                    .err()
                    .unwrap_or_else(|| {
                        serde::de::Error::custom("arrays and maps nest 128 levels deep or more")
                    }),
            )),
            ContentType::Json => serde_json::from_slice(bytes).map_err(DecodeFailure::Json),
            ContentType::MsgPack => {
                let mut decoder = rmp_serde::Deserializer::from_read_ref(bytes);
                decoder.set_max_depth(MAX_DEPTH);
                T::deserialize(&mut decoder).map_err(DecodeFailure::MessagePack)
            }
        };
        result.map_err(|source| DecodeError {
            content_type: self.as_str(),
            source,
        })
    }
}

/// True when arrays and maps in the JSON `bytes` nest [`MAX_DEPTH`] levels deep or more, strings
/// aside.
///
/// serde_json counts levels only in the values it reads into `T`: it skips an unknown field's
/// value without a limit (without recursing, too), where rmp-serde counts every level.
/// NOTE(protocol): 4.2 refuses 128 levels anywhere in the body, so JSON is checked here first.
fn json_too_deep(bytes: &[u8]) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &byte in bytes {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth >= MAX_DEPTH {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

impl std::fmt::Display for ContentType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_ignores_parameters_and_case() {
        assert_eq!(
            ContentType::parse("Application/JSON; charset=utf-8"),
            Some(ContentType::Json)
        );
        assert_eq!(
            ContentType::parse("application/x-msgpack"),
            Some(ContentType::MsgPack)
        );
        assert_eq!(ContentType::parse("text/plain"), None);
    }

    #[test]
    fn sniff_tells_json_from_msgpack_maps() {
        let map = serde_json::json!({"state": "SUCCESS"});
        assert_eq!(
            ContentType::sniff(&ContentType::Json.encode(&map).unwrap()),
            Some(ContentType::Json)
        );
        assert_eq!(
            ContentType::sniff(&ContentType::MsgPack.encode(&map).unwrap()),
            Some(ContentType::MsgPack)
        );
        assert_eq!(ContentType::sniff(b""), None);
    }

    /// `depth` arrays, one inside the other, around `0`, in `content_type`, written byte by byte
    /// (building the value would recurse as deep as the decoder).
    fn nested(content_type: ContentType, depth: usize) -> Vec<u8> {
        match content_type {
            ContentType::Json => format!("{}0{}", "[".repeat(depth), "]".repeat(depth)).into(),
            ContentType::MsgPack => [vec![0x91; depth], vec![0x00]].concat(),
        }
    }

    #[test]
    fn msgpack_refuses_the_nesting_json_refuses_without_overflowing_the_stack() {
        let refused = |content_type: ContentType, depth: usize| {
            content_type
                .decode::<serde_json::Value>(&nested(content_type, depth))
                .is_err()
        };
        let json_limit = (1..400)
            .find(|depth| refused(ContentType::Json, *depth))
            .expect("serde_json has a nesting limit");
        // NOTE(protocol): docs/protocol.md 4.2 states this limit.
        assert_eq!(json_limit, MAX_DEPTH, "127 levels are read, 128 refused");
        assert!(!refused(ContentType::MsgPack, json_limit - 1));
        assert!(refused(ContentType::MsgPack, json_limit));
        // Deeper than rmp-serde's own limit too: refused, not a stack overflow.
        assert!(refused(ContentType::MsgPack, 100_000));
    }

    #[test]
    fn json_refuses_deep_nesting_in_a_field_it_skips_as_msgpack_does() {
        /// A record that knows no field, so the decoder skips every one.
        #[derive(Debug, serde::Deserialize)]
        struct Empty {}
        for content_type in [ContentType::Json, ContentType::MsgPack] {
            let read = |depth: usize| {
                let deep = nested(content_type, depth);
                let bytes = match content_type {
                    ContentType::Json => [br#"{"unknown":"#.to_vec(), deep, b"}".to_vec()].concat(),
                    ContentType::MsgPack => [b"\x81\xa7unknown".to_vec(), deep].concat(),
                };
                content_type.decode::<Empty>(&bytes)
            };
            // The record's own map is the first level.
            assert!(
                read(MAX_DEPTH - 2).is_ok(),
                "{content_type}: 127 levels are read"
            );
            for too_deep in [MAX_DEPTH - 1, 100_000] {
                assert!(
                    read(too_deep).is_err(),
                    "{content_type}: {too_deep} + 1 levels"
                );
            }
        }
        let in_a_string = format!(r#"{{"unknown":"{}\"[{{"}}"#, "[{".repeat(1_000));
        assert!(
            ContentType::Json
                .decode::<Empty>(in_a_string.as_bytes())
                .is_ok(),
            "brackets in a string do not nest"
        );
        let refused = ContentType::Json
            .decode::<Empty>(&nested(ContentType::Json, 10_000))
            .expect_err("10,000 levels are refused");
        assert!(
            refused.source.to_string().contains("recursion limit"),
            "serde_json's own error: {}",
            refused.source
        );
    }

    #[test]
    fn a_decode_error_keeps_the_decoder_error_as_its_source() {
        use std::error::Error as _;
        let json = ContentType::Json.decode::<Vec<i32>>(b"{").unwrap_err();
        assert!(matches!(json.source, DecodeFailure::Json(_)));
        let cause = json.source().expect("the decoder's error").to_string();
        assert_eq!(
            json.to_string(),
            format!("body is not valid application/json: {cause}")
        );
        let msgpack = ContentType::MsgPack
            .decode::<Vec<i32>>(&[0xc1])
            .unwrap_err();
        assert!(matches!(msgpack.source, DecodeFailure::MessagePack(_)));
        let cause = msgpack.source().expect("the decoder's error").to_string();
        assert_eq!(
            msgpack.to_string(),
            format!("body is not valid application/msgpack: {cause}")
        );
    }

    proptest::proptest! {
        #[test]
        fn decoding_garbage_is_an_error_not_a_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = ContentType::Json.decode::<serde_json::Value>(&bytes);
            let _ = ContentType::MsgPack.decode::<serde_json::Value>(&bytes);
        }
    }
}
