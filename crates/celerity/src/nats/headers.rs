//! The one conversion between protocol header pairs and `async_nats::HeaderMap`.

use async_nats::HeaderMap;
use async_nats::header::{HeaderName, HeaderValue};
use celerity_proto::{Envelope, HeaderSource, header};

/// A read view of a NATS header map for the protocol decoders.
pub(crate) struct HeaderView<'a>(pub(crate) Option<&'a HeaderMap>);

impl HeaderSource for HeaderView<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0?.get(name).map(|value| value.as_str())
    }

    fn visit(&self, visitor: &mut dyn FnMut(&str, &str)) {
        if let Some(map) = self.0 {
            for (name, values) in map.iter() {
                for value in values {
                    visitor(AsRef::<str>::as_ref(name), value.as_str());
                }
            }
        }
    }
}

/// The headers of a task message: the envelope's, then its user headers.
///
/// User headers were checked with [`check_user_header`] when they were set; one that still does not
/// fit (it came from another producer) is left out with a warning rather than panicking.
pub(crate) fn envelope_headers(envelope: &Envelope) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in envelope.to_headers() {
        // Static names and owned values: no copy of either (this runs once per task sent).
        map.insert(HeaderName::from_static(name), HeaderValue::from(value));
    }
    for (name, value) in envelope.extra_headers() {
        match HeaderName::try_from(name) {
            Ok(header_name) if !value.contains(['\r', '\n']) => map.append(header_name, value),
            _ => tracing::warn!(
                header = name,
                "left out a user header that NATS cannot carry"
            ),
        }
    }
    map
}

/// Checks that a user header can travel in NATS headers and is not reserved by the protocol.
pub(crate) fn check_user_header(name: &str, value: &str) -> Result<(), &'static str> {
    if celerity_proto::header::is_reserved(name) {
        return Err("the name is reserved by the Celerity protocol");
    }
    if HeaderName::try_from(name).is_err() {
        return Err("header names are printable ASCII without ':' or whitespace");
    }
    if value.contains(['\r', '\n']) {
        return Err("header values cannot contain line breaks");
    }
    Ok(())
}

/// Appends protocol pairs (dead-letter headers) to an existing map.
/// A message's headers without those the server acts on ([`header::is_server_header`]), for a
/// message a worker publishes again elsewhere: the producer's `Nats-Expected-Stream` named the
/// stream it published to, not the one the message moves to.
pub(crate) fn republished_headers(original: Option<&HeaderMap>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, values) in original.into_iter().flat_map(HeaderMap::iter) {
        let name: &str = name.as_ref();
        if header::is_server_header(name) {
            continue;
        }
        for value in values {
            headers.append(name, value.as_str());
        }
    }
    headers
}

pub(crate) fn append_pairs(map: &mut HeaderMap, pairs: Vec<(&'static str, String)>) {
    for (name, value) in pairs {
        map.insert(name, value.as_str());
    }
}
