//! The `#[celerity::task]` attribute macro, which turns a function into a Celerity task.
//!
//! Use it through the `celerity` crate (`#[celerity::task]`), not by depending on this crate:
//! the generated code names `::celerity::…` paths and reaches runtime internals through `celerity::__private`.
//! This crate only parses and generates code; it depends on no other Celerity crate.
//!
//! # Example
//!
//! ```ignore
//! use celerity::TaskContext;
//!
//! /// Adds two numbers.
//! #[celerity::task(name = "tasks.add", queue = "math")]
//! pub async fn add(ctx: &TaskContext, x: i64, y: i64) -> Result<i64, std::num::TryFromIntError> {
//!     Ok(x + y)
//! }
//!
//! # async fn demo(client: &celerity::Client, ctx: &TaskContext) -> Result<(), Box<dyn std::error::Error>> {
//! // Send it to a worker and wait for the result...
//! let result = add.delay(client, 2, 3).await?;
//! // ...or with options...
//! let result = add.apply_async(client, (2, 3), celerity::ApplyOptions::default()).await?;
//! // ...or run the body in this process, for unit tests.
//! assert_eq!(add::call(ctx, 2, 3).await?, 5);
//! # Ok(()) }
//! ```
//!
//! # What it generates
//!
//! For a function `add`, the macro generates, with the function's visibility:
//!
//! - a unit struct `add` carrying the function's doc comments, deriving `Debug`, `Clone`, `Copy` and `Default`;
//! - `add::call(...)`: the function itself, unchanged (same signature, body, `async`-ness and attributes);
//! - `add.delay(&client, x, y)`: sends the task with default options;
//! - `add.apply_async(&client, (x, y), options)`: sends the task with [`ApplyOptions`];
//! - `impl celerity::Task for add`, with `Args` (a tuple of the argument types), `Output`, `NAME`, `PARAMS`
//!   (the parameter names, which are the keyword-argument names), `options()`, `encode_args()` and `run()`.
//!
//! An `async fn` runs on the worker's async runtime; a plain `fn` runs on the blocking thread pool.
//!
//! # Options
//!
//! | Option | Meaning | Default |
//! |---|---|---|
//! | `name = "tasks.add"` | the registered task name | `concat!(module_path!(), "::", "add")` |
//! | `queue = "math"` | the default queue: 1 to 64 characters of `A-Z a-z 0-9 - _`, checked at compile time | the app's default queue |
//! | `ignore_result` or `ignore_result = <bool>` | do not store the result | `false` |
//! | `acks_late = <bool>` | acknowledge the message after the task finishes, not before it starts | `true` |
//! | `track_started` or `track_started = <bool>` | record a `STARTED` state | `false` |
//!
//! Unknown or repeated options are compile errors.
//!
//! # Parameters and return type
//!
//! - The first parameter may be the task context, `&TaskContext` (any path ending in `TaskContext`).
//!   It is not a task argument. The context anywhere else, or not behind a shared reference, is an error.
//! - Every other parameter is a task argument: a plain identifier (optionally `mut`) with an owned type
//!   that the runtime can encode and decode. Patterns, `_`, references and `impl Trait` are errors.
//! - The return type may be absent or `()` (the output is `()`), a type `T` (the output is `T`), or a
//!   `Result`-like type, meaning one whose last path segment is `Result` with generic arguments, such as
//!   `Result<T, E>`, `anyhow::Result<T>` or `std::io::Result<T>` (the output is `T`, and an `Err` is a task failure).
//! - Generic, `const`, `unsafe`, `extern` and variadic functions, methods taking `self`, and
//!   `impl Trait` return types are errors.
//!
//! # Attributes on the function
//!
//! Doc comments move to the struct.
//! `#[cfg(...)]` applies to every generated item.
//! `allow`, `warn`, `deny` and `forbid` go on both the struct and `call`.
//! Every other attribute (including `expect`) stays on `call`.
//!
//! [`ApplyOptions`]: https://docs.rs/celerity/latest/celerity/struct.ApplyOptions.html
//!
//! # Naming
//!
//! The function becomes a unit struct of the same name (so `add.delay(..)` reads like Celery).
//! A unit struct is a value: in the same module, a parameter or `let` binding with the task's name
//! (`fn load(total: i64)` next to a task `total`) is read as that struct and does not compile.
//! Name tasks as verbs (`sum_all`, `send_email`) or keep them in their own module.

mod expand;
mod options;
mod signature;

use proc_macro::TokenStream;

/// Turns a free function into a Celerity task; see the [crate docs](crate) for options and rules.
///
/// On an error, the function is emitted unchanged next to the error, so the rest of the crate still resolves it.
#[proc_macro_attribute]
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    match expand::expand(attr.into(), item.clone().into()) {
        Ok(tokens) => tokens.into(),
        Err(error) => {
            let mut tokens = proc_macro2::TokenStream::from(item);
            tokens.extend(error.to_compile_error());
            tokens.into()
        }
    }
}

/// Adds `error` to the errors collected so far, so that all of them are reported together.
fn push_error(errors: &mut Option<syn::Error>, error: syn::Error) {
    match errors {
        Some(existing) => existing.combine(error),
        None => *errors = Some(error),
    }
}
