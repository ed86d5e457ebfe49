//! Parsing of the arguments of `#[celerity::task(...)]` into [`TaskAttributes`].
//!
//! This module checks option names, value types, duplicates and the queue-name rule.
//! It knows nothing about the function the attribute sits on; `signature` handles that.

use proc_macro2::TokenStream;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, Ident, Lit, LitBool, LitStr, Meta, Path, Token};

use crate::push_error;

/// The option names `#[celerity::task]` accepts, in the order error messages list them.
const VALID_OPTIONS: &[&str] = &[
    "name",
    "queue",
    "ignore_result",
    "acks_late",
    "track_started",
    "soft_time_limit",
    "time_limit",
    "max_retries",
    "max_deliveries",
    "retry_backoff",
    "retry_backoff_max",
    "retry_jitter",
    "default_retry_delay",
    "autoretry_for",
    "base",
    "preset",
    "rate_limit",
    "global_rate_limit",
];

/// The longest queue name the attribute accepts, in characters.
const MAX_QUEUE_NAME_LEN: usize = 64;

/// The options given to `#[celerity::task(...)]`.
///
/// `None` means the option was not given, so the generated `Task::options` leaves the runtime's default.
/// Values keep their literal so generated code and errors point at what the user wrote.
#[derive(Default)]
pub(crate) struct TaskAttributes {
    /// `name = "..."`: the registered task name.
    pub(crate) name: Option<LitStr>,
    /// `queue = "..."`: the default queue, already checked against the queue-name rule.
    pub(crate) queue: Option<LitStr>,
    /// `ignore_result` or `ignore_result = <bool>`.
    pub(crate) ignore_result: Option<LitBool>,
    /// `acks_late = <bool>`.
    pub(crate) acks_late: Option<LitBool>,
    /// `track_started` or `track_started = <bool>`.
    pub(crate) track_started: Option<LitBool>,
    /// `soft_time_limit = <seconds>`, in milliseconds.
    pub(crate) soft_time_limit_ms: Option<u64>,
    /// `time_limit = <seconds>`, in milliseconds.
    pub(crate) time_limit_ms: Option<u64>,
    /// `max_retries = <n>`.
    pub(crate) max_retries: Option<u32>,
    /// `max_deliveries = <n>`.
    pub(crate) max_deliveries: Option<u32>,
    /// `retry_backoff = <seconds>` (the first backoff), in milliseconds.
    pub(crate) retry_backoff_ms: Option<u64>,
    /// `retry_backoff_max = <seconds>`, in milliseconds.
    pub(crate) retry_backoff_max_ms: Option<u64>,
    /// `retry_jitter` or `retry_jitter = <bool>`.
    pub(crate) retry_jitter: Option<LitBool>,
    /// `default_retry_delay = <seconds>`, in milliseconds.
    pub(crate) default_retry_delay_ms: Option<u64>,
    /// `autoretry_for = [ErrorType, ...]`.
    pub(crate) autoretry_for: Vec<syn::Type>,
    /// `base = Hooks`: a constant (usually a unit struct) implementing `celerity::TaskHooks`.
    pub(crate) base: Option<syn::Path>,
    /// `preset = PRESET`: a `celerity::TaskOptions` expression whose options the task starts from.
    pub(crate) preset: Option<Expr>,
    /// `rate_limit = "100/m"`: per worker, as (count, period in seconds).
    pub(crate) rate_limit: Option<(u32, u64)>,
    /// `global_rate_limit = "100/m"`: for the whole cluster, as (count, period in seconds).
    pub(crate) global_rate_limit: Option<(u32, u64)>,
}

impl TaskAttributes {
    /// Parses the tokens between the attribute's parentheses (empty for a bare `#[task]`).
    ///
    /// Every bad option is reported, not only the first, as one combined error.
    pub(crate) fn parse(attr: TokenStream) -> syn::Result<Self> {
        let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(attr)?;
        let mut attributes = Self::default();
        let mut errors: Option<syn::Error> = None;
        // Keys are tracked apart from the values so a repeat is caught even when the first value was invalid.
        let mut seen_keys: Vec<Ident> = Vec::new();
        for meta in metas {
            if let Some(key) = meta.path().get_ident() {
                if seen_keys.contains(key) {
                    push_error(
                        &mut errors,
                        syn::Error::new(
                            key.span(),
                            format!("duplicate option `{key}`; give each option at most once"),
                        ),
                    );
                    continue;
                }
                seen_keys.push(key.clone());
            }
            if let Err(error) = attributes.apply(&meta) {
                push_error(&mut errors, error);
            }
        }
        match errors {
            Some(error) => Err(error),
            None => match (attributes.soft_time_limit_ms, attributes.time_limit_ms) {
                (Some(soft), Some(hard)) if soft >= hard => Err(syn::Error::new(
                    proc_macro2::Span::call_site(),
                    "`soft_time_limit` must be shorter than `time_limit`: the soft limit warns the task before the hard one stops it",
                )),
                _ => Ok(attributes),
            },
        }
    }

    /// Records one `key`, `key = value` or `key(...)` item.
    fn apply(&mut self, meta: &Meta) -> syn::Result<()> {
        let Some(key) = meta.path().get_ident() else {
            return Err(unknown_option(meta.path()));
        };
        match key.to_string().as_str() {
            "name" => self.name = Some(name_value(meta, key)?),
            "queue" => self.queue = Some(queue_value(meta, key)?),
            "ignore_result" => {
                self.ignore_result = Some(bool_value(meta, key)?);
            }
            "acks_late" => {
                self.acks_late = Some(bool_value(meta, key)?);
            }
            "track_started" => {
                self.track_started = Some(bool_value(meta, key)?);
            }
            "soft_time_limit" => {
                self.soft_time_limit_ms = Some(seconds_value(meta, key)?);
            }
            "time_limit" => {
                self.time_limit_ms = Some(seconds_value(meta, key)?);
            }
            "max_retries" => {
                self.max_retries = Some(count_value(meta, key)?);
            }
            "max_deliveries" => {
                self.max_deliveries = Some(count_value(meta, key)?);
            }
            "retry_backoff" => {
                self.retry_backoff_ms = Some(seconds_value(meta, key)?);
            }
            "retry_backoff_max" => {
                self.retry_backoff_max_ms = Some(seconds_value(meta, key)?);
            }
            "retry_jitter" => {
                self.retry_jitter = Some(bool_value(meta, key)?);
            }
            "default_retry_delay" => {
                self.default_retry_delay_ms = Some(seconds_value(meta, key)?);
            }
            "autoretry_for" => {
                self.autoretry_for = types_value(meta, key)?;
            }
            "rate_limit" => {
                self.rate_limit = Some(rate_value(meta, key)?);
            }
            "global_rate_limit" => {
                self.global_rate_limit = Some(rate_value(meta, key)?);
            }
            "base" => self.base = Some(base_value(meta, key)?),
            "preset" => self.preset = Some(preset_value(meta, key)?),
            _ => return Err(unknown_option(meta.path())),
        }
        Ok(())
    }
}

/// The value of `name = "..."`: a task name, not empty.
fn name_value(meta: &Meta, key: &Ident) -> syn::Result<LitStr> {
    let name = string_value(meta, key, "tasks.add")?;
    if name.value().is_empty() {
        return Err(syn::Error::new(
            name.span(),
            "task name must not be empty; leave out `name` to use the function's path",
        ));
    }
    Ok(name)
}

/// The value of `queue = "..."`: a valid queue name.
fn queue_value(meta: &Meta, key: &Ident) -> syn::Result<LitStr> {
    let queue = string_value(meta, key, "default")?;
    if !is_valid_queue_name(&queue.value()) {
        return Err(syn::Error::new(
            queue.span(),
            format!(
                "invalid queue name {:?}: a queue name is 1 to {MAX_QUEUE_NAME_LEN} characters, \
                 each one of `A-Z`, `a-z`, `0-9`, `-` or `_`",
                queue.value()
            ),
        ));
    }
    Ok(queue)
}

/// The value of `base = MyHooks`: the path of a hooks value.
fn base_value(meta: &Meta, key: &Ident) -> syn::Result<syn::Path> {
    let expected = "`base` takes the name of a hooks value: expected `base = MyHooks`";
    match meta {
        Meta::NameValue(syn::MetaNameValue {
            value: Expr::Path(path),
            ..
        }) => Ok(path.path.clone()),
        Meta::NameValue(name_value) => Err(syn::Error::new_spanned(&name_value.value, expected)),
        _ => Err(syn::Error::new(key.span(), expected)),
    }
}

/// The value of `preset = RETRYING`: an expression of a `celerity::TaskOptions`, not a literal.
fn preset_value(meta: &Meta, key: &Ident) -> syn::Result<Expr> {
    let expected = "`preset` takes a `celerity::TaskOptions` value: expected `preset = RETRYING`";
    match meta {
        Meta::NameValue(syn::MetaNameValue {
            value: Expr::Lit(literal),
            ..
        }) => Err(syn::Error::new_spanned(literal, expected)),
        Meta::NameValue(name_value) => Ok(name_value.value.clone()),
        _ => Err(syn::Error::new(key.span(), expected)),
    }
}

/// Whether `queue` follows the queue-name rule: 1 to 64 characters of `A-Z a-z 0-9 - _`.
///
/// The rule keeps queue names usable as NATS subject tokens and stream names.
fn is_valid_queue_name(queue: &str) -> bool {
    !queue.is_empty()
        && queue.len() <= MAX_QUEUE_NAME_LEN
        && queue
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

/// The string literal of `key = "..."`; `example` shows a valid value in the error.
fn string_value(meta: &Meta, key: &Ident, example: &str) -> syn::Result<LitStr> {
    let expected = format!("expected `{key} = \"{example}\"`");
    match meta {
        Meta::NameValue(name_value) => match &name_value.value {
            Expr::Lit(ExprLit {
                lit: Lit::Str(lit), ..
            }) => Ok(lit.clone()),
            other => Err(syn::Error::new_spanned(
                other,
                format!("`{key}` takes a string literal: {expected}"),
            )),
        },
        Meta::Path(_) => Err(syn::Error::new(
            key.span(),
            format!("`{key}` needs a value: {expected}"),
        )),
        Meta::List(list) => Err(syn::Error::new_spanned(list, expected)),
    }
}

/// The value of `key = <seconds>` (an integer or a decimal, above 0), in milliseconds.
fn seconds_value(meta: &Meta, key: &Ident) -> syn::Result<u64> {
    let expected = format!(
        "`{key}` takes a number of seconds above 0: expected `{key} = 30` or `{key} = 2.5`"
    );
    let Meta::NameValue(name_value) = meta else {
        return Err(syn::Error::new(key.span(), expected));
    };
    let seconds = match &name_value.value {
        Expr::Lit(ExprLit {
            lit: Lit::Int(lit), ..
        }) => lit.base10_parse::<f64>().ok(),
        Expr::Lit(ExprLit {
            lit: Lit::Float(lit),
            ..
        }) => lit.base10_parse::<f64>().ok(),
        _ => None,
    };
    match seconds {
        Some(seconds) if seconds > 0.0 && seconds.is_finite() => {
            Ok((seconds * 1000.0).round().max(1.0) as u64)
        }
        _ => Err(syn::Error::new_spanned(&name_value.value, expected)),
    }
}

/// The value of `key = <n>`, a non-negative integer.
fn count_value(meta: &Meta, key: &Ident) -> syn::Result<u32> {
    let expected = format!("`{key}` takes a whole number: expected `{key} = 5`");
    match meta {
        Meta::NameValue(name_value) => match &name_value.value {
            Expr::Lit(ExprLit {
                lit: Lit::Int(lit), ..
            }) => lit
                .base10_parse::<u32>()
                .map_err(|_| syn::Error::new_spanned(lit, expected)),
            other => Err(syn::Error::new_spanned(other, expected)),
        },
        _ => Err(syn::Error::new(key.span(), expected)),
    }
}

/// The value of `key = "100/m"`, checked with the runtime's own parser, as (count, period in
/// seconds).
fn rate_value(meta: &Meta, key: &Ident) -> syn::Result<(u32, u64)> {
    let literal = string_value(meta, key, "100/m")?;
    let rate: celerity_proto::Rate = literal
        .value()
        .parse()
        .map_err(|error: celerity_proto::InvalidRate| syn::Error::new(literal.span(), error))?;
    Ok((rate.count(), rate.period().as_secs()))
}

/// The value of `key = [Type, ...]`: the error types a task retries on.
fn types_value(meta: &Meta, key: &Ident) -> syn::Result<Vec<syn::Type>> {
    let expected = format!(
        "`{key}` takes a list of error types: expected `{key} = [std::io::Error, MyError]`"
    );
    let Meta::NameValue(name_value) = meta else {
        return Err(syn::Error::new(key.span(), expected));
    };
    let Expr::Array(array) = &name_value.value else {
        return Err(syn::Error::new_spanned(&name_value.value, expected));
    };
    array
        .elems
        .iter()
        .map(|element| match element {
            Expr::Path(path) => Ok(syn::Type::Path(syn::TypePath {
                qself: None,
                path: path.path.clone(),
            })),
            other => Err(syn::Error::new_spanned(other, expected.clone())),
        })
        .collect()
}

/// The value of a boolean option: a bare `key` means `true`, otherwise `key = true|false`.
fn bool_value(meta: &Meta, key: &Ident) -> syn::Result<LitBool> {
    match meta {
        Meta::Path(_) => Ok(LitBool::new(true, key.span())),
        Meta::NameValue(name_value) => match &name_value.value {
            Expr::Lit(ExprLit {
                lit: Lit::Bool(lit),
                ..
            }) => Ok(lit.clone()),
            other => Err(syn::Error::new_spanned(
                other,
                format!("`{key}` takes `true` or `false`: expected `{key}` or `{key} = false`"),
            )),
        },
        Meta::List(list) => Err(syn::Error::new_spanned(
            list,
            format!("expected `{key}` or `{key} = false`"),
        )),
    }
}

/// The error for an option name that is not in [`VALID_OPTIONS`].
fn unknown_option(path: &Path) -> syn::Error {
    let key = path
        .segments
        .iter()
        .map(|segment| segment.ident.to_string())
        .collect::<Vec<_>>()
        .join("::");
    let valid = VALID_OPTIONS
        .iter()
        .map(|option| format!("`{option}`"))
        .collect::<Vec<_>>()
        .join(", ");
    syn::Error::new_spanned(
        path,
        format!("unknown option `{key}`; valid options are {valid}"),
    )
}

#[cfg(test)]
mod tests {
    use quote::{ToTokens, quote};

    use super::*;

    fn error_message(attr: TokenStream) -> String {
        let error = TaskAttributes::parse(attr)
            .err()
            .expect("attribute should be rejected");
        error
            .into_iter()
            .map(|error| error.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn empty_attribute_gives_no_options() {
        let attributes = TaskAttributes::parse(TokenStream::new()).unwrap();
        assert!(attributes.name.is_none());
        assert!(attributes.queue.is_none());
        assert!(attributes.ignore_result.is_none());
        assert!(attributes.acks_late.is_none());
        assert!(attributes.track_started.is_none());
    }

    #[test]
    fn all_options_are_parsed() {
        let attributes = TaskAttributes::parse(quote!(
            name = "tasks.add",
            queue = "math",
            ignore_result,
            acks_late = false,
            track_started = true,
        ))
        .unwrap();
        assert_eq!(attributes.name.unwrap().value(), "tasks.add");
        assert_eq!(attributes.queue.unwrap().value(), "math");
        assert!(attributes.ignore_result.unwrap().value);
        assert!(!attributes.acks_late.unwrap().value);
        assert!(attributes.track_started.unwrap().value);
    }

    #[test]
    fn bare_flags_mean_true_and_explicit_false_is_kept() {
        let attributes =
            TaskAttributes::parse(quote!(track_started, ignore_result = false)).unwrap();
        assert!(attributes.track_started.unwrap().value);
        assert!(!attributes.ignore_result.unwrap().value);
    }

    #[test]
    fn queue_name_rule_accepts_edges_and_rejects_the_rest() {
        assert!(is_valid_queue_name("a"));
        assert!(is_valid_queue_name("Math-queue_2"));
        assert!(is_valid_queue_name(&"q".repeat(64)));
        assert!(!is_valid_queue_name(""));
        assert!(!is_valid_queue_name(&"q".repeat(65)));
        assert!(!is_valid_queue_name("math.fast"));
        assert!(!is_valid_queue_name("math queue"));
        assert!(!is_valid_queue_name("mäth"));
        assert!(!is_valid_queue_name("math*"));
    }

    #[test]
    fn invalid_queue_name_is_an_error_naming_the_rule() {
        let message = error_message(quote!(queue = "math.fast"));
        assert!(
            message.contains("invalid queue name \"math.fast\""),
            "{message}"
        );
        assert!(message.contains("1 to 64 characters"), "{message}");
    }

    #[test]
    fn empty_and_too_long_queue_names_are_errors() {
        assert!(error_message(quote!(queue = "")).contains("invalid queue name"));
        let long = "q".repeat(65);
        assert!(error_message(quote!(queue = #long)).contains("invalid queue name"));
    }

    #[test]
    fn unknown_option_is_an_error_listing_valid_options() {
        let message = error_message(quote!(retries = 3));
        assert!(message.contains("unknown option `retries`"), "{message}");
        assert!(
            message.contains("`name`, `queue`, `ignore_result`, `acks_late`, `track_started`"),
            "{message}"
        );
    }

    #[test]
    fn unknown_path_option_is_an_error() {
        let message = error_message(quote!(celerity::queue = "math"));
        assert!(
            message.contains("unknown option `celerity::queue`"),
            "{message}"
        );
    }

    #[test]
    fn duplicate_option_is_an_error() {
        let message = error_message(quote!(queue = "a", queue = "b"));
        assert!(message.contains("duplicate option `queue`"), "{message}");
        let message = error_message(quote!(ignore_result, ignore_result = false));
        assert!(
            message.contains("duplicate option `ignore_result`"),
            "{message}"
        );
        let message = error_message(quote!(queue = "a.b", queue = "c"));
        assert!(message.contains("duplicate option `queue`"), "{message}");
    }

    #[test]
    fn every_bad_option_is_reported() {
        let message = error_message(quote!(retries = 3, queue = "a b", acks_late = "no"));
        assert_eq!(message.lines().count(), 3, "{message}");
    }

    #[test]
    fn wrong_value_types_are_errors() {
        assert!(error_message(quote!(name = tasks)).contains("`name` takes a string literal"));
        assert!(error_message(quote!(name)).contains("`name` needs a value"));
        assert!(error_message(quote!(queue("math"))).contains("expected `queue = \"default\"`"));
        assert!(
            error_message(quote!(acks_late = 1)).contains("`acks_late` takes `true` or `false`")
        );
        assert!(error_message(quote!(track_started(true))).contains("expected `track_started`"));
    }

    #[test]
    fn empty_name_is_an_error() {
        assert!(error_message(quote!(name = "")).contains("task name must not be empty"));
    }

    #[test]
    fn malformed_attribute_is_a_parse_error() {
        assert!(TaskAttributes::parse(quote!(name = "a" queue = "b")).is_err());
    }

    #[test]
    fn time_limits_take_seconds_and_the_soft_one_must_be_shorter() {
        let attributes =
            TaskAttributes::parse(quote!(soft_time_limit = 2.5, time_limit = 30)).unwrap();
        assert_eq!(attributes.soft_time_limit_ms, Some(2500));
        assert_eq!(attributes.time_limit_ms, Some(30_000));
        assert!(error_message(quote!(time_limit = 0)).contains("above 0"));
        assert!(error_message(quote!(time_limit = "30")).contains("number of seconds"));
        assert!(error_message(quote!(soft_time_limit)).contains("number of seconds"));
        assert!(
            error_message(quote!(soft_time_limit = 5, time_limit = 5))
                .contains("shorter than `time_limit`")
        );
    }

    #[test]
    fn a_preset_takes_an_expression_but_no_literal() {
        let attributes = TaskAttributes::parse(quote!(preset = RETRYING)).unwrap();
        assert_eq!(
            attributes
                .preset
                .map(|preset| preset.to_token_stream().to_string()),
            Some("RETRYING".to_owned())
        );
        let attributes = TaskAttributes::parse(quote!(preset = presets::retrying())).unwrap();
        assert!(attributes.preset.is_some());
        assert!(
            error_message(quote!(preset = "RETRYING"))
                .contains("`preset` takes a `celerity::TaskOptions` value")
        );
        assert!(error_message(quote!(preset)).contains("expected `preset = RETRYING`"));
    }

    #[test]
    fn autoretry_types_are_paths() {
        let attributes =
            TaskAttributes::parse(quote!(autoretry_for = [std::io::Error, MyError])).unwrap();
        assert_eq!(attributes.autoretry_for.len(), 2);
        assert!(
            error_message(quote!(autoretry_for = std::io::Error))
                .contains("takes a list of error types")
        );
    }

    #[test]
    fn rate_limits_are_checked_at_compile_time() {
        let attributes =
            TaskAttributes::parse(quote!(rate_limit = "100/m", global_rate_limit = "2/s")).unwrap();
        assert_eq!(attributes.rate_limit, Some((100, 60)));
        assert_eq!(attributes.global_rate_limit, Some((2, 1)));
        assert!(
            error_message(quote!(rate_limit = "100/d")).contains("invalid rate limit \"100/d\"")
        );
        assert!(
            error_message(quote!(rate_limit = 100)).contains("expected `rate_limit = \"100/m\"`")
        );
        assert!(error_message(quote!(global_rate_limit = "0/s")).contains("\"0/s\""));
    }
}
