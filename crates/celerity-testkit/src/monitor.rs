//! Reading a server's HTTP monitoring endpoint (`/jsz`) to learn who leads JetStream.
//!
//! It holds a minimal HTTP/1.0 GET over a loopback `TcpStream` and plain functions that pick
//! leaders out of the JSON; it is not a general HTTP client and knows no other endpoint.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

/// The `/jsz` query for the meta group only.
pub(crate) const JSZ_META: &str = "/jsz";

/// The `/jsz` query that also lists every account's streams with their cluster info.
///
/// nats-server 2.9.10 and 2.15.1 both answer `streams=true` alone with `account_details`;
/// `accounts=true` is sent too so that servers which need it answer the same.
pub(crate) const JSZ_STREAMS: &str = "/jsz?accounts=true&streams=true";

/// The most bytes one answer may have; `/jsz` of a test server is a few kilobytes.
const MAX_RESPONSE_BYTES: u64 = 16 * 1024 * 1024;

/// Sends `GET <path>` to the monitoring port and parses the body of a `200` answer as JSON.
///
/// `timeout` bounds the connect and each read and write, so a paused server costs at most a few
/// timeouts. The error says what happened instead, for a caller's "answers" summary.
pub(crate) fn get_json(port: u16, path: &str, timeout: Duration) -> Result<Value, String> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&address, timeout)
        .map_err(|error| format!("connect to monitoring port {port} failed: {error}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|error| format!("setting socket timeouts failed: {error}"))?;
    // HTTP/1.0: the server closes the connection after the body, so reading to the end is enough.
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes())
        .map_err(|error| format!("sending GET {path} failed: {error}"))?;
    let mut response = Vec::new();
    stream
        .take(MAX_RESPONSE_BYTES)
        .read_to_end(&mut response)
        .map_err(|error| format!("reading the answer to GET {path} failed: {error}"))?;
    parse_response(&response).map_err(|reason| format!("GET {path}: {reason}"))
}

/// The body of an HTTP answer as JSON, if the status is 200.
fn parse_response(response: &[u8]) -> Result<Value, String> {
    let text = String::from_utf8_lossy(response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {} bytes", response.len()))?;
    let status_line = head.lines().next().unwrap_or_default();
    if status_line.split_whitespace().nth(1) != Some("200") {
        return Err(format!("status {status_line:?}"));
    }
    serde_json::from_str(body).map_err(|error| format!("body is not JSON: {error}"))
}

/// The meta leader's server name that a `/jsz` answer reports, if one is elected.
pub(crate) fn meta_leader(jsz: &Value) -> Result<&str, String> {
    let meta_cluster = jsz
        .get("meta_cluster")
        .ok_or("no meta_cluster (JetStream is not clustered)")?;
    non_empty_str(meta_cluster.get("leader")).ok_or_else(|| "no meta leader".to_owned())
}

/// How many servers a `/jsz` answer counts in the meta group, including offline ones.
pub(crate) fn meta_cluster_size(jsz: &Value) -> Option<u64> {
    jsz.get("meta_cluster")?.get("cluster_size")?.as_u64()
}

/// The server name that a `/jsz?accounts=true&streams=true` answer reports as leader of `stream`
/// in any account; the first account holding a stream of that name wins.
pub(crate) fn stream_leader<'a>(jsz: &'a Value, stream: &str) -> Result<&'a str, String> {
    let leader = stream_detail(jsz, stream)?
        .get("cluster")
        .and_then(|cluster| cluster.get("leader"));
    non_empty_str(leader).ok_or_else(|| format!("stream {stream:?} has no leader"))
}

/// The `(last sequence, messages)` of `stream` in a `/jsz?accounts=true&streams=true` answer:
/// the node's own copy.
pub(crate) fn stream_state(jsz: &Value, stream: &str) -> Result<(u64, u64), String> {
    let state = stream_detail(jsz, stream)?
        .get("state")
        .ok_or_else(|| format!("stream {stream:?} has no state"))?;
    let number = |field: &str| state.get(field).and_then(Value::as_u64).unwrap_or(0);
    Ok((number("last_seq"), number("messages")))
}

/// The detail of `stream` in the first account that holds a stream of that name.
fn stream_detail<'a>(jsz: &'a Value, stream: &str) -> Result<&'a Value, String> {
    jsz.get("account_details")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|account| account.get("stream_detail").and_then(Value::as_array))
        .flatten()
        .find(|detail| detail.get("name").and_then(Value::as_str) == Some(stream))
        .ok_or_else(|| format!("no stream {stream:?} on this node"))
}

fn non_empty_str(value: Option<&Value>) -> Option<&str> {
    value
        .and_then(Value::as_str)
        .filter(|text| !text.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trimmed from a real nats-server 2.9.10 answer to `/jsz?streams=true` on a follower.
    const JSZ_2_9: &str = r#"{
      "server_id": "NDLM",
      "config": {"store_dir": "/tmp/s0/jetstream", "domain": "hub"},
      "account_details": [{
        "name": "$G", "id": "$G",
        "stream_detail": [{
          "name": "ORDERS",
          "cluster": {"name": "testkit", "leader": "n2", "replicas": [{"name": "n1"}, {"name": "n2"}]}
        }]
      }],
      "meta_cluster": {"name": "testkit", "leader": "n2", "peer": "44jzkV9D", "cluster_size": 3}
    }"#;

    #[test]
    fn leaders_are_read_from_a_jsz_answer() {
        let jsz: Value = serde_json::from_str(JSZ_2_9).unwrap();
        assert_eq!(meta_leader(&jsz), Ok("n2"));
        assert_eq!(meta_cluster_size(&jsz), Some(3));
        assert_eq!(stream_leader(&jsz, "ORDERS"), Ok("n2"));
        assert_eq!(
            stream_leader(&jsz, "KV_missing"),
            Err("no stream \"KV_missing\" on this node".to_owned())
        );
    }

    #[test]
    fn an_empty_leader_is_no_leader() {
        let jsz: Value = serde_json::from_str(
            r#"{"meta_cluster": {"leader": "", "cluster_size": 3},
                "account_details": [{"stream_detail": [{"name": "S", "cluster": {"leader": ""}}]}]}"#,
        )
        .unwrap();
        assert!(meta_leader(&jsz).is_err());
        assert_eq!(
            stream_leader(&jsz, "S"),
            Err("stream \"S\" has no leader".to_owned())
        );
        let standalone: Value = serde_json::from_str(r#"{"config": {}}"#).unwrap();
        assert!(
            meta_leader(&standalone)
                .unwrap_err()
                .contains("not clustered")
        );
    }

    #[test]
    fn only_a_200_answer_is_parsed() {
        let ok = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"now\": 1}";
        assert_eq!(parse_response(ok).unwrap()["now"], 1);
        let missing = b"HTTP/1.0 404 Not Found\r\n\r\n404 page not found\n";
        assert!(parse_response(missing).unwrap_err().contains("404"));
        assert!(parse_response(b"HTTP/1.0 200 OK\r\n").is_err());
    }
}
