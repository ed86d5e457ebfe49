//! How errors are written in logs and messages: an error and its causes on one line.
//!
//! It names no other module of the crate, so every module may use it. Panic payloads are read
//! here too ([`panic_message`]).

/// Formats an error and its causes on one line: `outer: inner: root`.
///
/// A cause whose text the previous message already ends with is left out (some errors, such as
/// async-nats's, repeat their source in their own message).
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut previous = text.clone();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !previous.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        previous = cause_text;
        source = cause.source();
    }
    text
}

/// What a panic's payload says: its text, when it is a string.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("outer: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[test]
    fn error_chain_does_not_repeat_a_cause() {
        let error = Repeats(std::io::Error::other("refused"));
        assert_eq!(super::error_chain(&error), "outer: refused");
        let wrapped = crate::result_store::StoreError::ReservedState("SUCCESS".into());
        assert!(super::error_chain(&wrapped).contains("SUCCESS"));
    }
}
