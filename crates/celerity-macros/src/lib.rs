//! The `#[celerity::task]` attribute macro, which turns a function into a Celerity task.
//!
//! Use it through the `celerity` crate (`#[celerity::task]`), not by depending on this crate:
//! the generated code names `::celerity::…` paths and reaches runtime internals through `celerity::__private`.
//! This crate only parses and generates code; it depends on no Celerity crate but `celerity-proto`
//! (to check rate limits with the runtime's own parser), and on `celerity` only as a
//! dev-dependency, so that the examples of the reference compile as doc tests.
//!
//! The complete reference (options, what it generates, automatic retries, presets, hooks, the
//! rules for parameters and return types) is the documentation of [`task`], which `celerity`
//! re-exports as `celerity::task`.

mod expand;
mod options;
mod signature;

use proc_macro::TokenStream;

#[doc = include_str!("task.md")]
// NOTE: On an error, the function is emitted unchanged next to the error, so the rest of the crate
// still resolves it.
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
