//! Code generation for `#[celerity::task]`: a unit struct, its inherent methods and its `Task` impl.
//!
//! [`expand`] is the whole macro on `proc_macro2` tokens, so it can be unit-tested without a compiler.
//! Generated code names only `::celerity::…` paths and reaches runtime internals through `::celerity::__private`.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Attribute, Ident, Item, ItemFn, Visibility};

use crate::options::TaskAttributes;
use crate::signature::{TaskOutput, TaskSignature};

/// Expands `#[celerity::task(<attr>)] <item>` into the task's struct and impls.
///
/// # Errors
///
/// Returns every problem with the options and the function signature as one combined error.
pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let attributes = TaskAttributes::parse(attr);
    let function = match parse_function(item) {
        Ok(function) => function,
        Err(item_error) => {
            return Err(match attributes {
                Ok(_) => item_error,
                Err(mut attr_error) => {
                    attr_error.combine(item_error);
                    attr_error
                }
            });
        }
    };
    let signature = TaskSignature::analyze(&function.sig);
    match (attributes, signature) {
        (Ok(attributes), Ok(signature)) => Ok(generate(&attributes, &function, &signature)),
        (Err(mut attr_error), Err(signature_error)) => {
            attr_error.combine(signature_error);
            Err(attr_error)
        }
        (Err(error), Ok(_)) | (Ok(_), Err(error)) => Err(error),
    }
}

/// Parses the annotated item, which must be a function with a body.
fn parse_function(item: TokenStream) -> syn::Result<ItemFn> {
    match syn::parse2::<Item>(item)? {
        Item::Fn(function) => Ok(function),
        other => Err(syn::Error::new_spanned(
            other,
            "`#[celerity::task]` can only be applied to a free function with a body",
        )),
    }
}

/// The function's attributes, sorted by the generated item they belong on.
struct SortedAttributes<'item> {
    /// `#[cfg(...)]`: on every generated item, so the whole task comes and goes together.
    cfg: Vec<&'item Attribute>,
    /// Doc comments: on the struct, which is what users see in rustdoc.
    docs: Vec<&'item Attribute>,
    /// `allow`, `warn`, `deny` and `forbid`: on both the struct and `call`.
    lints: Vec<&'item Attribute>,
    /// Everything else (including `expect`, which must not be duplicated): on `call` only.
    call: Vec<&'item Attribute>,
}

impl<'item> SortedAttributes<'item> {
    fn new(attrs: &'item [Attribute]) -> Self {
        let mut sorted = Self {
            cfg: Vec::new(),
            docs: Vec::new(),
            lints: Vec::new(),
            call: Vec::new(),
        };
        for attr in attrs {
            let path = attr.path();
            if path.is_ident("cfg") {
                sorted.cfg.push(attr);
            } else if path.is_ident("doc") {
                sorted.docs.push(attr);
            } else if ["allow", "warn", "deny", "forbid"]
                .iter()
                .any(|lint_level| path.is_ident(lint_level))
            {
                sorted.lints.push(attr);
            } else {
                sorted.call.push(attr);
            }
        }
        sorted
    }
}

/// Generates the struct, the inherent impl and the `Task` impl.
fn generate(
    attributes: &TaskAttributes,
    function: &ItemFn,
    signature: &TaskSignature,
) -> TokenStream {
    let sorted = SortedAttributes::new(&function.attrs);
    let cfg = &sorted.cfg;
    let lints = &sorted.lints;
    let task_ident = &function.sig.ident;
    let vis = &function.vis;

    let struct_docs = if sorted.docs.is_empty() {
        let doc = format!("Task `{}`.", task_ident.unraw());
        quote!(#[doc = #doc])
    } else {
        let docs = &sorted.docs;
        quote!(#(#docs)*)
    };

    let inherent_impl = generate_inherent_impl(function, signature, &sorted);
    let task_impl = generate_task_impl(attributes, function, signature);

    quote! {
        #(#cfg)*
        #struct_docs
        #(#lints)*
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, Default)]
        #vis struct #task_ident;

        #(#cfg)*
        #inherent_impl

        #(#cfg)*
        #task_impl
    }
}

/// `impl add { fn call; fn delay; fn apply_async; fn s; fn si }`.
fn generate_inherent_impl(
    function: &ItemFn,
    signature: &TaskSignature,
    sorted: &SortedAttributes<'_>,
) -> TokenStream {
    let task_ident = &function.sig.ident;
    let vis = &function.vis;
    let lints = &sorted.lints;
    let call_attrs = &sorted.call;
    let block = &function.block;
    let mut call_signature = function.sig.clone();
    call_signature.ident = Ident::new("call", task_ident.span());

    let client = mixed_site("client");
    let args = mixed_site("args");
    let options = mixed_site("options");
    let param_idents: Vec<_> = signature.params.iter().map(|param| &param.ident).collect();
    let param_types: Vec<_> = signature.params.iter().map(|param| &param.ty).collect();
    let output_type = output_type(&signature.output);
    let signature_methods = generate_signature_methods(vis, &args, &output_type);

    quote! {
        impl #task_ident {
            /// Runs the task's body directly, in this process, without a broker (for unit tests).
            // NOTE: The `allow` comes before the user's attributes so that a user's own
            // `#[expect(clippy::too_many_arguments)]` overrides it and is still fulfilled.
            #[allow(clippy::too_many_arguments)]
            #(#lints)*
            #(#call_attrs)*
            #vis #call_signature #block

            /// Sends the task with default options; see [`apply_async`](Self::apply_async).
            ///
            /// # Errors
            ///
            /// Returns an error when the arguments cannot be encoded or the broker does not accept the task.
            #[allow(clippy::too_many_arguments, clippy::used_underscore_binding, dead_code)]
            #vis async fn delay(
                &self,
                #client: &::celerity::Client,
                #(#param_idents: #param_types),*
            ) -> ::core::result::Result<::celerity::AsyncResult<#output_type>, ::celerity::EnqueueError> {
                #client
                    .apply(self, (#(#param_idents,)*), ::celerity::ApplyOptions::default())
                    .await
            }

            /// Sends the task with options.
            ///
            /// # Errors
            ///
            /// Returns an error when the arguments cannot be encoded or the broker does not accept the task.
            #[allow(clippy::too_many_arguments, dead_code)]
            #vis async fn apply_async(
                &self,
                #client: &::celerity::Client,
                #args: (#(#param_types,)*),
                #options: ::celerity::ApplyOptions,
            ) -> ::core::result::Result<::celerity::AsyncResult<#output_type>, ::celerity::EnqueueError> {
                #client.apply(self, #args, #options).await
            }

            #signature_methods
        }
    }
}

/// The methods of `impl add` that build signatures and groups: `s`, `map`, `starmap`, `chunks`, `si`.
fn generate_signature_methods(
    vis: &Visibility,
    args: &Ident,
    output_type: &TokenStream,
) -> TokenStream {
    quote! {
        /// A signature of this task with leading arguments (a tuple: `(a, b)`, `(a,)` or `()`);
        /// in a chain, the previous step's result is put in front of them.
        #[allow(dead_code)]
        #vis fn s<A: ::celerity::canvas::ArgsTuple>(&self, #args: A) -> ::celerity::canvas::Signature<#output_type> {
            ::celerity::canvas::Signature::partial(self, #args)
        }

        /// Runs this task once per item (each item is its only argument) in one worker, as
        /// Celery's `task.map`; the result is the list of results.
        #[allow(dead_code)]
        #vis fn map<A: ::celerity::__private::Serialize>(&self, items: impl ::core::iter::IntoIterator<Item = A>) -> ::celerity::canvas::Signature<::std::vec::Vec<#output_type>> {
            ::celerity::canvas::map_signature(self, items)
        }

        /// Runs this task once per argument tuple in one worker, as Celery's `task.starmap`.
        #[allow(dead_code)]
        #vis fn starmap<A: ::celerity::canvas::ArgsTuple>(&self, items: impl ::core::iter::IntoIterator<Item = A>) -> ::celerity::canvas::Signature<::std::vec::Vec<#output_type>> {
            ::celerity::canvas::starmap_signature(self, items)
        }

        /// Splits argument tuples into batches of `chunk_size`, as a group of `starmap` tasks
        /// (Celery's `task.chunks`); the result is one list of results per batch.
        #[allow(dead_code)]
        #vis fn chunks<A: ::celerity::canvas::ArgsTuple>(&self, items: impl ::core::iter::IntoIterator<Item = A>, chunk_size: usize) -> ::celerity::canvas::Group<::std::vec::Vec<#output_type>> {
            ::celerity::canvas::chunks_group(self, items, chunk_size)
        }

        /// An immutable signature: in a chain it ignores the previous step's result.
        #[allow(dead_code)]
        #vis fn si<A: ::celerity::canvas::ArgsTuple>(&self, #args: A) -> ::celerity::canvas::Signature<#output_type> {
            ::celerity::canvas::Signature::immutable(self, #args)
        }
    }
}

/// `impl ::celerity::Task for add { ... }`.
fn generate_task_impl(
    attributes: &TaskAttributes,
    function: &ItemFn,
    signature: &TaskSignature,
) -> TokenStream {
    let task_ident = &function.sig.ident;
    let param_types: Vec<_> = signature.params.iter().map(|param| &param.ty).collect();
    let param_names: Vec<_> = signature.params.iter().map(|param| &param.name).collect();
    // Locals are positional rather than the user's names: `_x` would trip `clippy::used_underscore_binding`.
    let locals = argument_locals(signature);
    let output_type = output_type(&signature.output);

    let name = match &attributes.name {
        Some(name) => quote!(#name),
        None => {
            let fn_name = task_ident.unraw().to_string();
            quote!(::core::concat!(::core::module_path!(), "::", #fn_name))
        }
    };

    let options = generate_options(attributes);

    let args = mixed_site("celerity_args");
    let kwargs = mixed_site("celerity_kwargs");
    // The context is used when the function takes it or may fail (an automatic retry is asked for
    // on it); an underscore keeps `unused_variables` quiet otherwise.
    let uses_context = signature.has_context || matches!(signature.output, TaskOutput::Result(_));
    let ctx = mixed_site(if uses_context {
        "celerity_ctx"
    } else {
        "_celerity_ctx"
    });

    let (encode_args_param, encode_args_body) = generate_encode_args(signature, &args, &locals);
    let bind_and_decode = generate_bind_and_decode(signature, &args, &kwargs, &locals);

    let body = generate_body(signature, &ctx, &locals);

    quote! {
        impl ::celerity::Task for #task_ident {
            type Args = (#(#param_types,)*);
            type Output = #output_type;
            const NAME: &'static str = #name;
            const PARAMS: &'static [&'static str] = &[#(#param_names),*];

            fn options() -> ::celerity::TaskOptions {
                #options
            }

            fn encode_args(
                #encode_args_param: Self::Args,
            ) -> ::core::result::Result<
                ::std::vec::Vec<::celerity::__private::Value>,
                ::celerity::__private::ArgumentsError,
            > {
                #encode_args_body
            }

            fn run(
                #ctx: ::celerity::TaskContext,
                #args: ::std::vec::Vec<::celerity::__private::Value>,
                #kwargs: ::celerity::__private::Map,
            ) -> ::core::result::Result<
                ::celerity::__private::TaskFuture,
                ::celerity::__private::ArgumentsError,
            > {
                #bind_and_decode
                ::core::result::Result::Ok(#body)
            }
        }
    }
}

/// The option chain of `Task::options`: the preset's or the default options, then each option
/// the attribute sets.
fn generate_options(attributes: &TaskAttributes) -> TokenStream {
    let queue = attributes.queue.iter();
    let ignore_result = attributes.ignore_result.iter();
    let acks_late = attributes.acks_late.iter();
    let track_started = attributes.track_started.iter();
    let soft_time_limit = attributes.soft_time_limit_ms.iter();
    let time_limit = attributes.time_limit_ms.iter();
    let max_retries = attributes.max_retries.iter();
    let max_deliveries = attributes.max_deliveries.iter();
    let retry_backoff = attributes.retry_backoff_ms.iter();
    let retry_backoff_max = attributes.retry_backoff_max_ms.iter();
    let retry_jitter = attributes.retry_jitter.iter();
    let default_retry_delay = attributes.default_retry_delay_ms.iter();
    let rate_limit = attributes
        .rate_limit
        .map(|(count, secs)| quote!(.rate_limit(::celerity::__private::rate(#count, #secs))));
    let global_rate_limit = attributes.global_rate_limit.map(
        |(count, secs)| quote!(.global_rate_limit(::celerity::__private::rate(#count, #secs))),
    );
    let base = attributes.base.as_ref().map(|base| {
        quote! {
            .hooks({
                const BASE: &dyn ::celerity::TaskHooks = &#base;
                BASE
            })
        }
    });
    let autoretry = (!attributes.autoretry_for.is_empty()).then(|| {
        // Spanned, so that a type that is no error is reported where the user wrote it.
        let error_types = attributes.autoretry_for.iter().map(|error_type| {
            quote_spanned!(error_type.span()=> ::celerity::ErrorType::of::<#error_type>())
        });
        quote! {
            .autoretry_for({
                const AUTORETRY_FOR: &[::celerity::ErrorType] = &[#(#error_types),*];
                AUTORETRY_FOR
            })
        }
    });
    let defaults = match &attributes.preset {
        Some(preset) => quote!(::celerity::__private::preset(#preset, Self::NAME)),
        None => quote!(::celerity::TaskOptions::new(Self::NAME)),
    };

    quote! {
        #defaults
            #(.queue(#queue))*
            #(.ignore_result(#ignore_result))*
            #(.acks_late(#acks_late))*
            #(.track_started(#track_started))*
            #(.soft_time_limit_ms(#soft_time_limit))*
            #(.time_limit_ms(#time_limit))*
            #(.max_retries(#max_retries))*
            #(.max_deliveries(#max_deliveries))*
            #(.retry_backoff_ms(#retry_backoff))*
            #(.retry_backoff_max_ms(#retry_backoff_max))*
            #(.retry_jitter(#retry_jitter))*
            #(.default_retry_delay_ms(#default_retry_delay))*
            #autoretry
            #base
            #rate_limit
            #global_rate_limit
    }
}

/// The parameter and the body of `Task::encode_args`.
fn generate_encode_args(
    signature: &TaskSignature,
    args: &Ident,
    locals: &[Ident],
) -> (Ident, TokenStream) {
    let param_names: Vec<_> = signature.params.iter().map(|param| &param.name).collect();
    if signature.params.is_empty() {
        (
            mixed_site("_celerity_args"),
            quote!(::core::result::Result::Ok(::std::vec::Vec::new())),
        )
    } else {
        (
            args.clone(),
            quote! {
                let (#(#locals,)*) = #args;
                ::core::result::Result::Ok(::std::vec![
                    #(::celerity::__private::encode_arg(#param_names, &#locals)?,)*
                ])
            },
        )
    }
}

/// The start of `Task::run`: binds the arguments to the parameters and decodes each into its
/// local.
fn generate_bind_and_decode(
    signature: &TaskSignature,
    args: &Ident,
    kwargs: &Ident,
    locals: &[Ident],
) -> TokenStream {
    let param_types: Vec<_> = signature.params.iter().map(|param| &param.ty).collect();
    let param_names: Vec<_> = signature.params.iter().map(|param| &param.name).collect();
    let bound = mixed_site("celerity_bound");
    if signature.params.is_empty() {
        // Binding still runs so that unexpected arguments are rejected.
        let unused_bound = mixed_site("_celerity_bound");
        quote! {
            let #unused_bound = ::celerity::__private::bind_args(Self::PARAMS, #args, #kwargs)?;
        }
    } else {
        quote! {
            let mut #bound = ::celerity::__private::bind_args(Self::PARAMS, #args, #kwargs)?;
            #(
                let #locals: #param_types =
                    ::celerity::__private::decode_arg(&mut #bound, #param_names)?;
            )*
        }
    }
}

/// The future or closure that calls `Self::call` and converts its return value into a task outcome.
fn generate_body(signature: &TaskSignature, ctx: &Ident, locals: &[Ident]) -> TokenStream {
    let context_arg = signature.has_context.then(|| quote!(&#ctx,));
    let await_call = signature.is_async.then(|| quote!(.await));
    let call = quote!(Self::call(#context_arg #(#locals),*) #await_call);

    let output = mixed_site("celerity_output");
    let convert = match &signature.output {
        // Binding a `()` would trip `clippy::let_unit_value`, so a unit call is a statement.
        TaskOutput::Unit => quote! {
            #call;
            ::celerity::__private::from_value(())
        },
        TaskOutput::Value(_) => quote! {
            let #output = #call;
            ::celerity::__private::from_value(#output)
        },
        TaskOutput::Result(_) => {
            let error = mixed_site("celerity_error");
            quote! {
                let #output = #call;
                if let ::core::result::Result::Err(#error) = &#output {
                    // The first of these traits that applies to the error's type finds the
                    // `std::error::Error` that `autoretry_for` types are matched against.
                    #[allow(unused_imports)]
                    use ::celerity::__private::{
                        IsStdError as _, HoldsStdError as _, NoStdError as _,
                    };
                    ::celerity::__private::note_failure(
                        &#ctx,
                        &<Self as ::celerity::Task>::options(),
                        (&&::celerity::__private::ErrorView(#error)).std_error(),
                    );
                }
                ::celerity::__private::from_result(#output)
            }
        }
    };

    if signature.is_async {
        quote!(::celerity::__private::async_body(async move { #convert }))
    } else {
        quote!(::celerity::__private::blocking_body(move || { #convert }))
    }
}

/// The task's `Output` type.
fn output_type(output: &TaskOutput) -> TokenStream {
    match output {
        TaskOutput::Unit => quote!(()),
        TaskOutput::Value(ty) | TaskOutput::Result(ty) => quote!(#ty),
    }
}

/// One generated local per task argument, in order: `arg_0`, `arg_1`, ...
fn argument_locals(signature: &TaskSignature) -> Vec<Ident> {
    (0..signature.params.len())
        .map(|index| mixed_site(&format!("celerity_arg_{index}")))
        .collect()
}

/// An identifier for a generated local or parameter that user parameter names cannot clash with.
///
/// Mixed-site hygiene makes `bound` here a different variable from a user parameter also called
/// `bound`, but not from a unit struct in scope: a task called `output` would be matched as a
/// pattern where `let output` binds. So the bodies of `encode_args` and `run` name their locals and
/// parameters `celerity_*`, which no task is expected to be called; the parameters of the
/// documented methods (`client`, `args`, `options`) keep their plain names.
fn mixed_site(name: &str) -> Ident {
    format_ident!("{}", name, span = Span::mixed_site())
}

#[cfg(test)]
mod tests;
