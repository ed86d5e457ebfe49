//! Analysis of a task function's signature into [`TaskSignature`].
//!
//! This module decides which parameter is the task context, which are task arguments, and what the task's output is,
//! and rejects signatures a worker cannot call (generics, `self`, `impl Trait`, patterns, references, ...).
//! It does not generate code; `expand` does.

use syn::ext::IdentExt;
use syn::{FnArg, GenericArgument, Ident, Pat, PathArguments, ReturnType, Signature, Type};

use crate::push_error;

/// The name of the context type, matched on the last path segment so any import style works.
const CONTEXT_TYPE_NAME: &str = "TaskContext";

/// What a task function's signature means for the generated code.
pub(crate) struct TaskSignature {
    /// Whether the first parameter is `&TaskContext`.
    pub(crate) has_context: bool,
    /// The task arguments, in order, without the context parameter.
    pub(crate) params: Vec<TaskParam>,
    /// The task's output and how the function's return value becomes it.
    pub(crate) output: TaskOutput,
    /// Whether the function is `async`; a sync function runs on the blocking pool.
    pub(crate) is_async: bool,
}

/// One task argument: a plain identifier and an owned type.
pub(crate) struct TaskParam {
    /// The parameter's identifier as written, without `mut`.
    pub(crate) ident: Ident,
    /// The keyword-argument name: the identifier as written, without `r#`.
    pub(crate) name: String,
    /// The parameter's type.
    pub(crate) ty: Type,
}

/// What the task function returns.
pub(crate) enum TaskOutput {
    /// No return type, or `-> ()`: the output is `()`.
    Unit,
    /// A plain type `T`: the output is `T`.
    Value(Type),
    /// A `Result`-like type: the output is its first generic type argument.
    Result(Type),
}

impl TaskSignature {
    /// Analyses `signature`, reporting every problem found as one combined error.
    pub(crate) fn analyze(signature: &Signature) -> syn::Result<Self> {
        let mut errors: Option<syn::Error> = None;
        for error in check_function_kind(signature) {
            push_error(&mut errors, error);
        }

        let mut has_context = false;
        let mut params = Vec::new();
        for (index, input) in signature.inputs.iter().enumerate() {
            let pat_type = match input {
                FnArg::Receiver(receiver) => {
                    push_error(
                        &mut errors,
                        syn::Error::new_spanned(
                            receiver,
                            "task functions cannot take `self`: put `#[celerity::task]` on a free function, not a method",
                        ),
                    );
                    continue;
                }
                FnArg::Typed(pat_type) => pat_type,
            };
            let ident = match param_ident(&pat_type.pat) {
                Ok(ident) => Some(ident),
                Err(error) => {
                    push_error(&mut errors, error);
                    None
                }
            };
            if index == 0 && is_context_reference(&pat_type.ty) {
                has_context = true;
                continue;
            }
            match check_argument_type(&pat_type.ty, index) {
                Ok(()) => {
                    if let Some(ident) = ident {
                        params.push(TaskParam {
                            name: ident.unraw().to_string(),
                            ident,
                            ty: (*pat_type.ty).clone(),
                        });
                    }
                }
                Err(error) => push_error(&mut errors, error),
            }
        }

        let output = task_output(&signature.output).unwrap_or_else(|error| {
            push_error(&mut errors, error);
            TaskOutput::Unit
        });

        match errors {
            Some(error) => Err(error),
            None => Ok(Self {
                has_context,
                params,
                output,
                is_async: signature.asyncness.is_some(),
            }),
        }
    }
}

/// Rejects function kinds a worker cannot call: `const`, `unsafe`, `extern`, generic and variadic functions.
fn check_function_kind(signature: &Signature) -> Vec<syn::Error> {
    let mut errors = Vec::new();
    if let Some(constness) = &signature.constness {
        errors.push(syn::Error::new_spanned(
            constness,
            "task functions cannot be `const fn`; remove `const`",
        ));
    }
    if let Some(unsafety) = &signature.unsafety {
        errors.push(syn::Error::new_spanned(
            unsafety,
            "task functions cannot be `unsafe`: a worker calls them with decoded arguments and cannot uphold a safety contract",
        ));
    }
    if let Some(abi) = &signature.abi {
        errors.push(syn::Error::new_spanned(
            abi,
            "task functions cannot have an `extern` ABI; remove it",
        ));
    }
    if !signature.generics.params.is_empty() {
        errors.push(syn::Error::new_spanned(
            &signature.generics,
            "task functions cannot be generic: a worker must know the concrete argument and output types; \
             write one task per concrete type",
        ));
    } else if let Some(where_clause) = &signature.generics.where_clause {
        errors.push(syn::Error::new_spanned(
            where_clause,
            "task functions cannot have a `where` clause; remove it",
        ));
    }
    if let Some(variadic) = &signature.variadic {
        errors.push(syn::Error::new_spanned(
            variadic,
            "task functions cannot be variadic",
        ));
    }
    errors
}

/// The identifier of a parameter pattern, which must be a plain (possibly `mut`) identifier.
///
/// The identifier is the argument's keyword name, so patterns and `_` are rejected.
fn param_ident(pat: &Pat) -> syn::Result<Ident> {
    match pat {
        Pat::Ident(pat_ident) if pat_ident.by_ref.is_none() && pat_ident.subpat.is_none() => {
            Ok(pat_ident.ident.clone())
        }
        Pat::Wild(wild) => Err(syn::Error::new_spanned(
            wild,
            "task parameters need a name, because the name is the keyword-argument name; \
             write e.g. `_unused: i32` instead of `_: i32`",
        )),
        other => Err(syn::Error::new_spanned(
            other,
            "task parameters must be plain identifiers such as `x: i32`, not patterns; \
             destructure inside the body instead",
        )),
    }
}

/// Whether `ty` is the task context behind a shared reference: `&TaskContext`, `&celerity::TaskContext`, ...
fn is_context_reference(ty: &Type) -> bool {
    match peel(ty) {
        Type::Reference(reference) if reference.mutability.is_none() => {
            is_context_path(peel(&reference.elem))
        }
        _ => false,
    }
}

/// Whether `ty` is a path whose last segment is `TaskContext` without generic arguments.
fn is_context_path(ty: &Type) -> bool {
    match ty {
        Type::Path(type_path) if type_path.qself.is_none() => {
            type_path.path.segments.last().is_some_and(|segment| {
                segment.ident == CONTEXT_TYPE_NAME && segment.arguments.is_none()
            })
        }
        _ => false,
    }
}

/// Rejects argument types a worker cannot decode; `index` is the parameter's position.
fn check_argument_type(ty: &Type, index: usize) -> syn::Result<()> {
    if let Some(context) = find_type(ty, &mut |inner| is_context_path(inner)) {
        let message = if index == 0 {
            "take the task context by shared reference: `ctx: &TaskContext`"
        } else {
            "the task context must be the first parameter: `ctx: &TaskContext`"
        };
        return Err(syn::Error::new_spanned(context, message));
    }
    if let Some(impl_trait) = find_type(ty, &mut |inner| matches!(inner, Type::ImplTrait(_))) {
        return Err(syn::Error::new_spanned(
            impl_trait,
            "task arguments cannot use `impl Trait`: a worker must know the concrete type to decode the argument",
        ));
    }
    if let Type::Reference(reference) = peel(ty) {
        return Err(syn::Error::new_spanned(
            reference,
            "task arguments must be owned types, because they are decoded from the message; \
             use e.g. `String` instead of `&str` or `Vec<T>` instead of `&[T]`",
        ));
    }
    Ok(())
}

/// The task output for a return type; `impl Trait` anywhere in it is an error.
fn task_output(return_type: &ReturnType) -> syn::Result<TaskOutput> {
    let ty = match return_type {
        ReturnType::Default => return Ok(TaskOutput::Unit),
        ReturnType::Type(_, ty) => ty,
    };
    if let Some(impl_trait) = find_type(ty, &mut |inner| matches!(inner, Type::ImplTrait(_))) {
        return Err(syn::Error::new_spanned(
            impl_trait,
            "task functions cannot return `impl Trait`: a worker must know the concrete type to encode the result",
        ));
    }
    let ty = peel(ty);
    match ty {
        Type::Tuple(tuple) if tuple.elems.is_empty() => Ok(TaskOutput::Unit),
        Type::Path(type_path) if type_path.qself.is_none() => {
            let success_type = type_path
                .path
                .segments
                .last()
                .filter(|segment| segment.ident == "Result")
                .and_then(|segment| match &segment.arguments {
                    PathArguments::AngleBracketed(arguments) => {
                        arguments.args.iter().find_map(|argument| match argument {
                            GenericArgument::Type(success_type) => Some(success_type.clone()),
                            _ => None,
                        })
                    }
                    _ => None,
                });
            Ok(match success_type {
                Some(success_type) => TaskOutput::Result(success_type),
                None => TaskOutput::Value(ty.clone()),
            })
        }
        _ => Ok(TaskOutput::Value(ty.clone())),
    }
}

/// Removes invisible groups and parentheses around a type.
fn peel(ty: &Type) -> &Type {
    match ty {
        Type::Group(group) => peel(&group.elem),
        Type::Paren(paren) => peel(&paren.elem),
        other => other,
    }
}

/// The first type inside `ty` (including `ty` itself) that matches `predicate`, searching depth-first.
///
/// The search enters references, pointers, tuples, slices, arrays, generic arguments and function-pointer
/// signatures; it does not enter trait bounds or macros.
fn find_type<'ty>(ty: &'ty Type, predicate: &mut dyn FnMut(&Type) -> bool) -> Option<&'ty Type> {
    if predicate(ty) {
        return Some(ty);
    }
    match ty {
        Type::Array(array) => find_type(&array.elem, predicate),
        Type::Group(group) => find_type(&group.elem, predicate),
        Type::Paren(paren) => find_type(&paren.elem, predicate),
        Type::Ptr(pointer) => find_type(&pointer.elem, predicate),
        Type::Reference(reference) => find_type(&reference.elem, predicate),
        Type::Slice(slice) => find_type(&slice.elem, predicate),
        Type::Tuple(tuple) => tuple
            .elems
            .iter()
            .find_map(|elem| find_type(elem, predicate)),
        Type::BareFn(bare_fn) => bare_fn
            .inputs
            .iter()
            .find_map(|input| find_type(&input.ty, predicate))
            .or_else(|| match &bare_fn.output {
                ReturnType::Type(_, output) => find_type(output, predicate),
                ReturnType::Default => None,
            }),
        Type::Path(type_path) => {
            let in_qself = type_path
                .qself
                .as_ref()
                .and_then(|qself| find_type(&qself.ty, predicate));
            in_qself.or_else(|| {
                type_path
                    .path
                    .segments
                    .iter()
                    .find_map(|segment| find_in_arguments(&segment.arguments, predicate))
            })
        }
        _ => None,
    }
}

/// [`find_type`] over the generic arguments of one path segment.
fn find_in_arguments<'ty>(
    arguments: &'ty PathArguments,
    predicate: &mut dyn FnMut(&Type) -> bool,
) -> Option<&'ty Type> {
    match arguments {
        PathArguments::None => None,
        PathArguments::AngleBracketed(angle) => {
            angle.args.iter().find_map(|argument| match argument {
                GenericArgument::Type(ty) => find_type(ty, predicate),
                GenericArgument::AssocType(assoc) => find_type(&assoc.ty, predicate),
                _ => None,
            })
        }
        PathArguments::Parenthesized(parenthesized) => parenthesized
            .inputs
            .iter()
            .find_map(|input| find_type(input, predicate))
            .or_else(|| match &parenthesized.output {
                ReturnType::Type(_, output) => find_type(output, predicate),
                ReturnType::Default => None,
            }),
    }
}

#[cfg(test)]
mod tests {
    use quote::ToTokens;
    use syn::parse_quote;

    use super::*;

    fn analyze(signature: Signature) -> TaskSignature {
        TaskSignature::analyze(&signature).unwrap()
    }

    fn tokens(ty: &Type) -> String {
        ty.to_token_stream().to_string()
    }

    fn success_type(signature: Signature) -> String {
        match analyze(signature).output {
            TaskOutput::Result(ty) => tokens(&ty),
            _ => panic!("expected a Result-like output"),
        }
    }

    #[test]
    fn context_reference_is_recognised_through_any_path() {
        assert!(is_context_reference(&parse_quote!(&TaskContext)));
        assert!(is_context_reference(&parse_quote!(&celerity::TaskContext)));
        assert!(is_context_reference(&parse_quote!(
            &'_ ::celerity::TaskContext
        )));
        assert!(!is_context_reference(&parse_quote!(&mut TaskContext)));
        assert!(!is_context_reference(&parse_quote!(TaskContext)));
        assert!(!is_context_reference(&parse_quote!(&Context)));
    }

    #[test]
    fn first_context_parameter_is_not_an_argument() {
        let signature = analyze(parse_quote!(fn add(ctx: &TaskContext, x: i64, mut y: i64)));
        assert!(signature.has_context);
        let names: Vec<_> = signature
            .params
            .iter()
            .map(|param| param.name.as_str())
            .collect();
        assert_eq!(names, ["x", "y"]);
        assert_eq!(signature.params[1].ident, "y");
        assert!(!signature.is_async);
    }

    #[test]
    fn raw_identifier_parameter_is_named_without_prefix() {
        let signature = analyze(parse_quote!(async fn send(r#type: String)));
        assert_eq!(signature.params[0].name, "type");
        assert_eq!(signature.params[0].ident.to_string(), "r#type");
        assert!(signature.is_async);
    }

    #[test]
    fn unit_outputs_are_recognised() {
        assert!(matches!(
            analyze(parse_quote!(fn f())).output,
            TaskOutput::Unit
        ));
        assert!(matches!(
            analyze(parse_quote!(fn f() -> ())).output,
            TaskOutput::Unit
        ));
    }

    #[test]
    fn plain_output_is_the_return_type() {
        match analyze(parse_quote!(fn f() -> Vec<u8>)).output {
            TaskOutput::Value(ty) => assert_eq!(tokens(&ty), "Vec < u8 >"),
            _ => panic!("expected a plain output"),
        }
    }

    #[test]
    fn result_like_outputs_use_their_first_type_argument() {
        assert_eq!(
            success_type(parse_quote!(fn f() -> Result<i64, MyError>)),
            "i64"
        );
        assert_eq!(
            success_type(parse_quote!(fn f() -> anyhow::Result<String>)),
            "String"
        );
        assert_eq!(
            success_type(parse_quote!(fn f() -> std::io::Result<()>)),
            "()"
        );
        assert_eq!(
            success_type(parse_quote!(fn f() -> ::core::result::Result<Vec<u8>, E>)),
            "Vec < u8 >"
        );
    }

    #[test]
    fn result_without_type_arguments_is_a_plain_output() {
        assert!(matches!(
            analyze(parse_quote!(fn f() -> Result)).output,
            TaskOutput::Value(_)
        ));
    }

    #[test]
    fn nested_impl_trait_argument_is_found() {
        let ty: Type = parse_quote!(Vec<(u8, impl Display)>);
        assert!(find_type(&ty, &mut |inner| matches!(inner, Type::ImplTrait(_))).is_some());
        let ty: Type = parse_quote!(Vec<(u8, String)>);
        assert!(find_type(&ty, &mut |inner| matches!(inner, Type::ImplTrait(_))).is_none());
    }

    #[test]
    fn all_problems_are_reported_together() {
        let signature: Signature =
            parse_quote!(const fn f<T>((a, b): (T, T), y: &str) -> impl Display);
        let error = TaskSignature::analyze(&signature)
            .err()
            .expect("signature should be rejected");
        assert_eq!(error.into_iter().count(), 5);
    }
}
