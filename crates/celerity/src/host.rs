//! The machine this process runs on, for the names workers and producers go by.

/// The machine's hostname (`localhost` when it has none that is text).
pub(crate) fn machine_name() -> String {
    gethostname::gethostname()
        .into_string()
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The name a producer's events go by: `celerity-client@<host>.<pid>`.
pub(crate) fn producer_name() -> String {
    format!("celerity-client@{}.{}", machine_name(), std::process::id())
}
