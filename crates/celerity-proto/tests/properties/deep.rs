//! Values nested 10,000 deep, in JSON and in MessagePack, are refused by every record decoder with
//! a `DecodeError`, not a stack overflow, wherever they sit in the record; and the deepest records
//! the protocol allows (4.2: 127 levels, the outermost value counting) decode on a stack the size
//! of a worker's.

use celerity_proto::{CanvasNode, ChordDefinition, ContentType, TaskBody};

use crate::robustness::WORDS;
use crate::{CONTENT_TYPES, DECODERS};

/// Deep enough to overflow any recursive decoder's stack.
const DEEP: usize = 10_000;

/// The deepest nesting the protocol allows.
const MAX_LEVELS: usize = 127;

/// The stack of a tokio worker thread, where workers decode bodies.
const WORKER_STACK: usize = 2 << 20;

/// What nests.
#[derive(Debug, Clone, Copy)]
enum Shape {
    Arrays,
    Maps,
}

/// `levels` arrays or maps, one inside the other, around `0`, written byte by byte (building the
/// value would recurse as deep as the decoder).
fn nested(content_type: ContentType, shape: Shape, levels: usize) -> Vec<u8> {
    let (open, zero, close): (&[u8], &[u8], &[u8]) = match (content_type, shape) {
        (ContentType::Json, Shape::Arrays) => (b"[", b"0", b"]"),
        (ContentType::Json, Shape::Maps) => (br#"{"a":"#, b"0", b"}"),
        (_, Shape::Arrays) => (&[0x91], &[0x00], b""),
        (_, Shape::Maps) => (&[0x81, 0xa1, b'a'], &[0x00], b""),
    };
    [open.repeat(levels), zero.to_vec(), close.repeat(levels)].concat()
}

/// `text` as a MessagePack string.
fn msgpack_str(text: &str) -> Vec<u8> {
    let length = u8::try_from(text.len()).expect("the test's strings are short");
    [vec![0xd9, length], text.as_bytes().to_vec()].concat()
}

/// A one-field object whose field `name` holds the encoded value `inner`.
fn in_field(content_type: ContentType, name: &str, inner: &[u8]) -> Vec<u8> {
    match content_type {
        ContentType::Json => {
            let name = serde_json::to_string(name).expect("a string is JSON");
            [
                format!("{{{name}:").into_bytes(),
                inner.to_vec(),
                b"}".to_vec(),
            ]
            .concat()
        }
        _ => [vec![0x81], msgpack_str(name), inner.to_vec()].concat(),
    }
}

/// A canvas of `levels` chains, one inside the other, around one signature: two nesting levels
/// per chain (its map and its `tasks`) and one for the signature.
fn nested_canvas(content_type: ContentType, levels: usize) -> Vec<u8> {
    match content_type {
        ContentType::Json => [
            br#"{"kind":"chain","tasks":["#.repeat(levels),
            br#"{"kind":"signature","id":"a","task":"t"}"#.to_vec(),
            b"]}".repeat(levels),
        ]
        .concat(),
        _ => {
            let chain = [
                vec![0x82],
                msgpack_str("kind"),
                msgpack_str("chain"),
                msgpack_str("tasks"),
                vec![0x91],
            ]
            .concat();
            let signature = ["kind", "signature", "id", "a", "task", "t"].map(msgpack_str);
            [chain.repeat(levels), vec![0x83], signature.concat()].concat()
        }
    }
}

/// Runs `check` on a thread with a worker's stack, so a decoder that recursed too deep would
/// crash this test instead of passing on a larger stack.
fn on_a_worker_stack(check: impl FnOnce() + Send + 'static) {
    let thread = std::thread::Builder::new()
        .stack_size(WORKER_STACK)
        .spawn(check)
        .expect("a thread starts");
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

/// Asserts that every decoder refuses `bytes`, in `content_type`.
fn assert_every_decoder_refuses(content_type: ContentType, bytes: &[u8], what: &str) {
    for (record, decode) in DECODERS {
        assert!(
            decode(content_type, bytes).is_err(),
            "{record} read {what} in {content_type}"
        );
    }
}

#[test]
fn every_decoder_refuses_values_nested_10000_deep() {
    on_a_worker_stack(|| {
        for content_type in CONTENT_TYPES {
            for shape in [Shape::Arrays, Shape::Maps] {
                let bytes = nested(content_type, shape, DEEP);
                assert_every_decoder_refuses(content_type, &bytes, &format!("{shape:?}"));
            }
        }
    });
}

#[test]
fn every_decoder_refuses_a_field_nested_10000_deep_known_or_not() {
    on_a_worker_stack(|| {
        for content_type in CONTENT_TYPES {
            for shape in [Shape::Arrays, Shape::Maps] {
                let deep = nested(content_type, shape, DEEP);
                for field in WORDS.iter().chain(&["future"]) {
                    let bytes = in_field(content_type, field, &deep);
                    let what = format!("{shape:?} in {field:?}");
                    assert_every_decoder_refuses(content_type, &bytes, &what);
                }
            }
        }
    });
}

#[test]
fn every_decoder_refuses_a_canvas_nested_10000_deep() {
    on_a_worker_stack(|| {
        for content_type in CONTENT_TYPES {
            let canvas = nested_canvas(content_type, DEEP);
            assert_every_decoder_refuses(content_type, &canvas, "a canvas");
            let in_array = [
                match content_type {
                    ContentType::Json => b"[".to_vec(),
                    _ => vec![0x91],
                },
                canvas.clone(),
                match content_type {
                    ContentType::Json => b"]".to_vec(),
                    _ => Vec::new(),
                },
            ]
            .concat();
            for (field, inner) in [
                ("chain", &in_array),
                ("link", &in_array),
                ("tasks", &in_array),
                ("header", &in_array),
                ("body", &canvas),
            ] {
                let bytes = in_field(content_type, field, inner);
                assert_every_decoder_refuses(content_type, &bytes, &format!("a canvas in {field}"));
            }
        }
    });
}

#[test]
fn the_deepest_fields_the_protocol_allows_are_read_and_one_more_level_is_refused() {
    on_a_worker_stack(|| {
        for content_type in CONTENT_TYPES {
            for (shape, known) in [(Shape::Arrays, "args"), (Shape::Maps, "kwargs")] {
                for field in [known, "future"] {
                    let body = |levels| {
                        in_field(content_type, field, &nested(content_type, shape, levels))
                    };
                    let what = format!("{shape:?} in {field} in {content_type}");
                    // The body's own map is the first level.
                    let deepest = body(MAX_LEVELS - 1);
                    assert!(content_type.decode::<TaskBody>(&deepest).is_ok(), "{what}");
                    let too_deep = body(MAX_LEVELS);
                    assert!(
                        content_type.decode::<TaskBody>(&too_deep).is_err(),
                        "{what}"
                    );
                }
            }
        }
    });
}

#[test]
fn the_deepest_canvases_the_protocol_allows_decode_on_a_worker_stack() {
    on_a_worker_stack(|| {
        for content_type in CONTENT_TYPES {
            // A canvas of n chains nests 2n + 1 levels; in a body's `chain`, 2n + 3.
            let deepest = (MAX_LEVELS - 1) / 2;
            let canvas = |levels| nested_canvas(content_type, levels);
            assert!(content_type.decode::<CanvasNode>(&canvas(deepest)).is_ok());
            assert!(
                content_type
                    .decode::<CanvasNode>(&canvas(deepest + 1))
                    .is_err()
            );
            let chain = |levels| {
                let canvas = canvas(levels);
                match content_type {
                    ContentType::Json => {
                        [br#"{"chain":["#.to_vec(), canvas, b"]}".to_vec()].concat()
                    }
                    _ => [vec![0x81], msgpack_str("chain"), vec![0x91], canvas].concat(),
                }
            };
            assert!(content_type.decode::<TaskBody>(&chain(deepest - 1)).is_ok());
            assert!(content_type.decode::<TaskBody>(&chain(deepest)).is_err());
            let definition = |levels| {
                let canvas = canvas(levels);
                match content_type {
                    ContentType::Json => [
                        br#"{"v":1,"id":"c","size":1,"body":"#.to_vec(),
                        canvas,
                        b"}".to_vec(),
                    ]
                    .concat(),
                    _ => [
                        vec![0x84],
                        msgpack_str("v"),
                        vec![0x01],
                        msgpack_str("id"),
                        msgpack_str("c"),
                        msgpack_str("size"),
                        vec![0x01],
                        msgpack_str("body"),
                        canvas,
                    ]
                    .concat(),
                }
            };
            let read = content_type.decode::<ChordDefinition>(&definition(deepest - 1));
            assert!(read.is_ok(), "{read:?}");
            assert!(
                content_type
                    .decode::<ChordDefinition>(&definition(deepest))
                    .is_err()
            );
        }
    });
}
