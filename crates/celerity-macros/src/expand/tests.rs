//! Tests of [`expand`](super::expand): happy paths parse back as Rust items with the expected shape,
//! and each rejected form gives its error.
//!
//! These tests cannot type-check the expansion against `celerity`; they check its structure and text.

use proc_macro2::TokenStream;
use quote::{ToTokens, quote};
use syn::{Attribute, ImplItem, ImplItemFn, Item, ItemImpl, ItemStruct};

use super::expand;

/// The parsed output of a successful expansion.
struct Expansion {
    items: Vec<Item>,
}

impl Expansion {
    fn task_struct(&self) -> &ItemStruct {
        self.items
            .iter()
            .find_map(|item| match item {
                Item::Struct(item_struct) => Some(item_struct),
                _ => None,
            })
            .expect("expansion has a struct")
    }

    fn impl_block(&self, is_trait_impl: bool) -> &ItemImpl {
        self.items
            .iter()
            .find_map(|item| match item {
                Item::Impl(item_impl) if item_impl.trait_.is_some() == is_trait_impl => {
                    Some(item_impl)
                }
                _ => None,
            })
            .expect("expansion has the impl block")
    }

    fn inherent_fn(&self, name: &str) -> &ImplItemFn {
        impl_fn(self.impl_block(false), name)
    }

    fn task_fn(&self, name: &str) -> &ImplItemFn {
        impl_fn(self.impl_block(true), name)
    }

    /// The tokens of `type <name> = ...;` in the `Task` impl.
    fn task_type(&self, name: &str) -> String {
        self.impl_block(true)
            .items
            .iter()
            .find_map(|item| match item {
                ImplItem::Type(item_type) if item_type.ident == name => Some(tokens(&item_type.ty)),
                _ => None,
            })
            .expect("task impl has the associated type")
    }

    /// The tokens of the value of `const <name>: ... = ...;` in the `Task` impl.
    fn task_const(&self, name: &str) -> String {
        self.impl_block(true)
            .items
            .iter()
            .find_map(|item| match item {
                ImplItem::Const(item_const) if item_const.ident == name => {
                    Some(tokens(&item_const.expr))
                }
                _ => None,
            })
            .expect("task impl has the associated constant")
    }
}

fn impl_fn<'a>(item_impl: &'a ItemImpl, name: &str) -> &'a ImplItemFn {
    item_impl
        .items
        .iter()
        .find_map(|item| match item {
            ImplItem::Fn(function) if function.sig.ident == name => Some(function),
            _ => None,
        })
        .unwrap_or_else(|| panic!("impl has fn `{name}`"))
}

fn tokens(tokens: impl ToTokens) -> String {
    tokens.into_token_stream().to_string()
}

fn expand_ok(attr: TokenStream, item: TokenStream) -> Expansion {
    let output = match expand(attr, item) {
        Ok(output) => output,
        Err(error) => panic!("expansion failed: {error}"),
    };
    let file: syn::File = syn::parse2(output).expect("expansion parses as Rust items");
    assert_eq!(file.items.len(), 3, "struct, inherent impl and Task impl");
    Expansion { items: file.items }
}

fn expand_err(attr: TokenStream, item: TokenStream) -> String {
    let error = expand(attr, item).expect_err("expansion should be rejected");
    error
        .into_iter()
        .map(|error| error.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

fn doc_texts(attrs: &[Attribute]) -> Vec<String> {
    attrs
        .iter()
        .filter(|attr| attr.path().is_ident("doc"))
        .map(|attr| {
            let value = &attr
                .meta
                .require_name_value()
                .expect("doc is name-value")
                .value;
            match value {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(text),
                    ..
                }) => text.value(),
                other => panic!("doc is not a string: {}", tokens(other)),
            }
        })
        .collect()
}

fn has_attr(attrs: &[Attribute], text: &str) -> bool {
    attrs.iter().any(|attr| tokens(attr) == text)
}

fn add_task() -> Expansion {
    expand_ok(
        quote!(name = "tasks.add"),
        quote! {
            /// Adds two numbers.
            pub async fn add(ctx: &TaskContext, x: i64, y: i64) -> Result<i64, MyError> {
                Ok(x + y)
            }
        },
    )
}

#[test]
fn async_task_with_context_becomes_a_unit_struct_with_the_fn_docs() {
    let expansion = add_task();
    let task_struct = expansion.task_struct();
    assert_eq!(task_struct.ident, "add");
    assert_eq!(tokens(&task_struct.vis), "pub");
    assert!(matches!(task_struct.fields, syn::Fields::Unit));
    assert_eq!(doc_texts(&task_struct.attrs), [" Adds two numbers."]);
    assert!(has_attr(
        &task_struct.attrs,
        "# [allow (non_camel_case_types)]"
    ));
    assert!(has_attr(
        &task_struct.attrs,
        "# [derive (Debug , Clone , Copy , Default)]"
    ));
}

#[test]
fn call_keeps_the_signature_and_body_as_written() {
    let expansion = add_task();
    let call = expansion.inherent_fn("call");
    assert_eq!(
        tokens(&call.sig),
        tokens(quote!(async fn call(ctx: &TaskContext, x: i64, y: i64) -> Result<i64, MyError>))
    );
    assert_eq!(tokens(&call.block), tokens(quote!({ Ok(x + y) })));
    assert_eq!(tokens(&call.vis), "pub");
    assert!(has_attr(
        &call.attrs,
        "# [allow (clippy :: too_many_arguments)]"
    ));
    assert!(!doc_texts(&call.attrs).is_empty());
}

#[test]
fn delay_and_apply_async_send_through_the_client() {
    let expansion = add_task();
    let delay = expansion.inherent_fn("delay");
    assert_eq!(tokens(&delay.vis), "pub");
    assert!(delay.sig.asyncness.is_some());
    let delay_params: Vec<_> = delay.sig.inputs.iter().map(tokens).collect();
    assert_eq!(
        delay_params,
        [
            "& self",
            "client : & :: celerity :: Client",
            "x : i64",
            "y : i64"
        ]
    );
    assert_eq!(
        tokens(&delay.sig.output),
        tokens(
            quote!(-> ::core::result::Result<::celerity::AsyncResult<i64>, ::celerity::EnqueueError>)
        )
    );
    assert!(tokens(&delay.block).contains(
        "client . apply (self , (x , y ,) , :: celerity :: ApplyOptions :: default ()) . await"
    ));

    let apply_async = expansion.inherent_fn("apply_async");
    let apply_params: Vec<_> = apply_async.sig.inputs.iter().map(tokens).collect();
    assert_eq!(
        apply_params,
        [
            "& self",
            "client : & :: celerity :: Client",
            "args : (i64 , i64 ,)",
            "options : :: celerity :: ApplyOptions"
        ]
    );
    assert_eq!(
        tokens(&apply_async.block),
        "{ client . apply (self , args , options) . await }"
    );
}

#[test]
fn task_impl_declares_types_name_and_params() {
    let expansion = add_task();
    let task_impl = expansion.impl_block(true);
    let trait_path = &task_impl.trait_.as_ref().expect("trait impl").1;
    assert_eq!(tokens(trait_path), ":: celerity :: Task");
    assert_eq!(tokens(&task_impl.self_ty), "add");
    assert_eq!(expansion.task_type("Args"), "(i64 , i64 ,)");
    assert_eq!(expansion.task_type("Output"), "i64");
    assert_eq!(expansion.task_const("NAME"), r#""tasks.add""#);
    assert_eq!(expansion.task_const("PARAMS"), r#"& ["x" , "y"]"#);
}

#[test]
fn encode_args_encodes_each_argument_by_name() {
    let expansion = add_task();
    let encode_args = tokens(&expansion.task_fn("encode_args").block);
    assert!(
        encode_args.contains("let (celerity_arg_0 , celerity_arg_1 ,) = celerity_args ;"),
        "{encode_args}"
    );
    assert!(
        encode_args
            .contains(r#":: celerity :: __private :: encode_arg ("x" , & celerity_arg_0) ?"#),
        "{encode_args}"
    );
    assert!(
        encode_args
            .contains(r#":: celerity :: __private :: encode_arg ("y" , & celerity_arg_1) ?"#),
        "{encode_args}"
    );
}

#[test]
fn run_binds_decodes_and_awaits_call_with_the_context() {
    let expansion = add_task();
    let run = expansion.task_fn("run");
    let params: Vec<_> = run.sig.inputs.iter().map(tokens).collect();
    assert_eq!(
        params,
        [
            "celerity_ctx : :: celerity :: TaskContext",
            "celerity_args : :: std :: vec :: Vec < :: celerity :: __private :: Value >",
            "celerity_kwargs : :: celerity :: __private :: Map"
        ]
    );
    let body = tokens(&run.block);
    assert!(body.contains(
        "let mut celerity_bound = :: celerity :: __private :: bind_args (Self :: PARAMS , celerity_args , celerity_kwargs) ? ;"
    ));
    assert!(body.contains(
        r#"let celerity_arg_0 : i64 = :: celerity :: __private :: decode_arg (& mut celerity_bound , "x") ? ;"#
    ));
    assert!(body.contains(
        r#"let celerity_arg_1 : i64 = :: celerity :: __private :: decode_arg (& mut celerity_bound , "y") ? ;"#
    ));
    assert!(body.contains(":: celerity :: __private :: async_body (async move {"));
    assert!(body.contains("let celerity_output = Self :: call (& celerity_ctx , celerity_arg_0 , celerity_arg_1) . await ;"));
    assert!(body.contains(":: celerity :: __private :: from_result (celerity_output)"));
    assert!(!body.contains("blocking_body"));
}

#[test]
fn sync_task_without_context_runs_on_the_blocking_pool() {
    let expansion = expand_ok(
        TokenStream::new(),
        quote! {
            pub(crate) fn mul(x: i64, y: i64) -> i64 {
                x * y
            }
        },
    );
    let call = expansion.inherent_fn("call");
    assert!(call.sig.asyncness.is_none());
    assert_eq!(tokens(&call.vis), "pub (crate)");
    assert_eq!(tokens(&expansion.task_struct().vis), "pub (crate)");
    assert_eq!(tokens(&expansion.inherent_fn("delay").vis), "pub (crate)");
    assert_eq!(
        tokens(&expansion.inherent_fn("apply_async").vis),
        "pub (crate)"
    );
    assert_eq!(expansion.task_type("Output"), "i64");

    let run = expansion.task_fn("run");
    assert_eq!(
        tokens(&run.sig.inputs[0]),
        "_celerity_ctx : :: celerity :: TaskContext"
    );
    let body = tokens(&run.block);
    assert!(body.contains(":: celerity :: __private :: blocking_body (move | | {"));
    assert!(
        body.contains("let celerity_output = Self :: call (celerity_arg_0 , celerity_arg_1) ;")
    );
    assert!(body.contains(":: celerity :: __private :: from_value (celerity_output)"));
    assert!(!body.contains("await"));
}

#[test]
fn task_without_params_has_unit_args_and_still_binds() {
    let expansion = expand_ok(
        TokenStream::new(),
        quote!(
            async fn ping() {}
        ),
    );
    assert_eq!(expansion.task_type("Args"), "()");
    assert_eq!(expansion.task_type("Output"), "()");
    assert_eq!(expansion.task_const("PARAMS"), "& []");
    assert_eq!(tokens(&expansion.task_struct().vis), "");

    let encode_args = expansion.task_fn("encode_args");
    assert_eq!(
        tokens(&encode_args.sig.inputs[0]),
        "_celerity_args : Self :: Args"
    );
    assert_eq!(
        tokens(&encode_args.block),
        "{ :: core :: result :: Result :: Ok (:: std :: vec :: Vec :: new ()) }"
    );

    let run = tokens(&expansion.task_fn("run").block);
    assert!(run.contains(
        "let _celerity_bound = :: celerity :: __private :: bind_args (Self :: PARAMS , celerity_args , celerity_kwargs) ? ;"
    ));
    assert!(run.contains("Self :: call () . await ;"));
    assert!(run.contains(":: celerity :: __private :: from_value (())"));

    let delay_params: Vec<_> = expansion
        .inherent_fn("delay")
        .sig
        .inputs
        .iter()
        .map(tokens)
        .collect();
    assert_eq!(delay_params, ["& self", "client : & :: celerity :: Client"]);
    assert!(tokens(&expansion.inherent_fn("delay").block).contains("apply (self , () ,"));
    assert_eq!(
        tokens(&expansion.inherent_fn("apply_async").sig.inputs[2]),
        "args : ()"
    );
}

#[test]
fn task_with_one_param_uses_a_one_tuple() {
    let expansion = expand_ok(
        TokenStream::new(),
        quote!(
            fn shout(text: String) -> String {
                text
            }
        ),
    );
    assert_eq!(expansion.task_type("Args"), "(String ,)");
    assert_eq!(expansion.task_const("PARAMS"), r#"& ["text"]"#);
    assert!(
        tokens(&expansion.task_fn("encode_args").block)
            .contains("let (celerity_arg_0 ,) = celerity_args ;")
    );
    assert!(tokens(&expansion.inherent_fn("delay").block).contains("apply (self , (text ,) ,"));
}

#[test]
fn explicit_unit_return_calls_as_a_statement() {
    let expansion = expand_ok(
        TokenStream::new(),
        quote!(
            async fn log(ctx: &celerity::TaskContext, line: String) -> () {}
        ),
    );
    assert_eq!(expansion.task_type("Output"), "()");
    assert_eq!(expansion.task_type("Args"), "(String ,)");
    let run = tokens(&expansion.task_fn("run").block);
    assert!(
        run.contains("Self :: call (& celerity_ctx , celerity_arg_0) . await ;"),
        "{run}"
    );
    assert!(
        run.contains(":: celerity :: __private :: from_value (())"),
        "{run}"
    );
    assert!(!run.contains("let celerity_output"), "{run}");
    assert_eq!(
        tokens(&expansion.inherent_fn("call").sig.inputs[0]),
        "ctx : & celerity :: TaskContext"
    );
}

#[test]
fn result_like_returns_use_from_result_and_their_success_type() {
    for (return_type, output) in [
        (quote!(anyhow::Result<String>), "String"),
        (quote!(std::io::Result<()>), "()"),
        (quote!(Result<Vec<u8>, Error>), "Vec < u8 >"),
    ] {
        let expansion = expand_ok(
            TokenStream::new(),
            quote!(fn read() -> #return_type { read_value() }),
        );
        assert_eq!(expansion.task_type("Output"), output);
        let run = tokens(&expansion.task_fn("run").block);
        assert!(run.contains("from_result (celerity_output)"), "{run}");
        let delay = &expansion.inherent_fn("delay").sig.output;
        assert!(tokens(delay).contains(&format!("AsyncResult < {output} >")));
    }
}

#[test]
fn default_name_is_module_path_and_fn_name() {
    let expansion = expand_ok(
        TokenStream::new(),
        quote!(
            fn r#match() {}
        ),
    );
    assert_eq!(
        expansion.task_const("NAME"),
        r#":: core :: concat ! (:: core :: module_path ! () , "::" , "match")"#
    );
    assert_eq!(expansion.task_struct().ident, "r#match");
    assert_eq!(doc_texts(&expansion.task_struct().attrs), ["Task `match`."]);
}

#[test]
fn no_options_leave_task_options_at_their_defaults() {
    let expansion = expand_ok(
        TokenStream::new(),
        quote!(
            fn f() {}
        ),
    );
    assert_eq!(
        tokens(&expansion.task_fn("options").block),
        "{ :: celerity :: TaskOptions :: new (Self :: NAME) }"
    );
}

#[test]
fn given_options_become_task_options_setters() {
    let expansion = expand_ok(
        quote!(
            queue = "math",
            ignore_result,
            acks_late = false,
            track_started = true
        ),
        quote!(
            fn f() {}
        ),
    );
    assert_eq!(
        tokens(&expansion.task_fn("options").block),
        tokens(quote!({
            ::celerity::TaskOptions::new(Self::NAME)
                .queue("math")
                .ignore_result(true)
                .acks_late(false)
                .track_started(true)
        }))
    );
}

#[test]
fn a_preset_is_where_the_options_start_and_the_tasks_own_follow() {
    let expansion = expand_ok(
        quote!(preset = RETRYING, max_retries = 2, rate_limit = "10/s"),
        quote!(
            fn f() {}
        ),
    );
    assert_eq!(
        tokens(&expansion.task_fn("options").block),
        tokens(quote!({
            ::celerity::__private::preset(RETRYING, Self::NAME)
                .max_retries(2u32)
                .rate_limit(::celerity::__private::rate(10u32, 1u64))
        }))
    );
    let expansion = expand_ok(
        quote!(preset = presets::retrying(5)),
        quote!(
            fn f() {}
        ),
    );
    assert_eq!(
        tokens(&expansion.task_fn("options").block),
        "{ :: celerity :: __private :: preset (presets :: retrying (5) , Self :: NAME) }"
    );
}

#[test]
fn autoretry_types_become_error_types_in_a_constant() {
    let expansion = expand_ok(
        quote!(autoretry_for = [std::io::Error, MyError]),
        quote!(
            async fn f() -> anyhow::Result<()> {
                Ok(())
            }
        ),
    );
    let options = tokens(&expansion.task_fn("options").block);
    assert!(
        options.contains(
            "const AUTORETRY_FOR : & [:: celerity :: ErrorType] = & [:: celerity :: ErrorType :: of :: < std :: io :: Error > () , :: celerity :: ErrorType :: of :: < MyError > ()] ;"
        ),
        "{options}"
    );
}

#[test]
fn a_failing_task_is_checked_against_its_autoretry_types() {
    // Without a context parameter too: the retry is asked for on the context.
    let expansion = expand_ok(
        TokenStream::new(),
        quote!(
            async fn fetch(url: String) -> anyhow::Result<String> {
                Ok(url)
            }
        ),
    );
    let run = expansion.task_fn("run");
    assert_eq!(
        tokens(&run.sig.inputs[0]),
        "celerity_ctx : :: celerity :: TaskContext"
    );
    let body = tokens(&run.block);
    assert!(
        body.contains(
            "if let :: core :: result :: Result :: Err (celerity_error) = & celerity_output {"
        ),
        "{body}"
    );
    assert!(
        body.contains(
            "use :: celerity :: __private :: { IsStdError as _ , HoldsStdError as _ , NoStdError as _ , } ;"
        ),
        "{body}"
    );
    assert!(
        body.contains(
            ":: celerity :: __private :: note_failure (& celerity_ctx , & < Self as :: celerity :: Task > :: options () , (& & :: celerity :: __private :: ErrorView (celerity_error)) . std_error () ,) ;"
        ),
        "{body}"
    );
    // A task that cannot fail has nothing to check.
    let expansion = expand_ok(
        TokenStream::new(),
        quote!(
            async fn double(x: i64) -> i64 {
                x * 2
            }
        ),
    );
    assert!(!tokens(&expansion.task_fn("run").block).contains("note_failure"));
}

#[test]
fn parameter_names_are_kept_exactly_for_params() {
    let expansion = expand_ok(
        TokenStream::new(),
        quote!(
            fn f(_unused: u8, mut count: u32, r#type: String) {}
        ),
    );
    assert_eq!(
        expansion.task_const("PARAMS"),
        r#"& ["_unused" , "count" , "type"]"#
    );
    let call = expansion.inherent_fn("call");
    assert_eq!(tokens(&call.sig.inputs[1]), "mut count : u32");
    let delay_params: Vec<_> = expansion
        .inherent_fn("delay")
        .sig
        .inputs
        .iter()
        .map(tokens)
        .collect();
    assert_eq!(
        delay_params,
        [
            "& self",
            "client : & :: celerity :: Client",
            "_unused : u8",
            "count : u32",
            "r#type : String"
        ]
    );
}

#[test]
fn fn_attributes_are_split_between_struct_and_call() {
    let expansion = expand_ok(
        TokenStream::new(),
        quote! {
            /// Docs.
            #[inline]
            #[allow(clippy::needless_pass_by_value)]
            #[expect(unused_variables)]
            #[cfg(feature = "math")]
            pub fn f(x: String) {}
        },
    );
    let task_struct = expansion.task_struct();
    assert_eq!(doc_texts(&task_struct.attrs), [" Docs."]);
    assert!(has_attr(
        &task_struct.attrs,
        "# [allow (clippy :: needless_pass_by_value)]"
    ));
    assert!(!has_attr(&task_struct.attrs, "# [inline]"));
    assert!(!has_attr(
        &task_struct.attrs,
        "# [expect (unused_variables)]"
    ));

    let call = expansion.inherent_fn("call");
    assert!(has_attr(&call.attrs, "# [inline]"));
    assert!(has_attr(&call.attrs, "# [expect (unused_variables)]"));
    assert!(has_attr(
        &call.attrs,
        "# [allow (clippy :: needless_pass_by_value)]"
    ));
    assert!(
        !doc_texts(&call.attrs)
            .iter()
            .any(|doc| doc.contains("Docs."))
    );

    let cfg = r#"# [cfg (feature = "math")]"#;
    assert!(has_attr(&task_struct.attrs, cfg));
    assert!(has_attr(&expansion.impl_block(false).attrs, cfg));
    assert!(has_attr(&expansion.impl_block(true).attrs, cfg));
}

#[test]
fn user_lint_attributes_on_call_come_after_the_generated_allow() {
    let expansion = expand_ok(
        TokenStream::new(),
        quote! {
            #[expect(clippy::too_many_arguments)]
            fn f(a: u8) {}
        },
    );
    let call_attrs: Vec<_> = expansion
        .inherent_fn("call")
        .attrs
        .iter()
        .map(tokens)
        .collect();
    let allow = call_attrs
        .iter()
        .position(|attr| attr == "# [allow (clippy :: too_many_arguments)]")
        .expect("call allows too_many_arguments");
    let expect = call_attrs
        .iter()
        .position(|attr| attr == "# [expect (clippy :: too_many_arguments)]")
        .expect("call keeps the user's expect");
    assert!(allow < expect, "{call_attrs:?}");
}

#[test]
fn generated_code_names_only_absolute_celerity_paths() {
    let output = expand(
        quote!(queue = "math"),
        quote!(
            async fn add(ctx: &TaskContext, x: i64) -> Result<i64, E> {
                Ok(x)
            }
        ),
    )
    .expect("expansion succeeds")
    .to_string();
    let mut rest = output.as_str();
    while let Some(index) = rest.find("celerity ::") {
        assert!(
            rest[..index].ends_with(":: "),
            "relative `celerity` path in: {output}"
        );
        rest = &rest[index + 1..];
    }
    for std_path in ["Result ::", "vec !", "Vec <"] {
        for (index, _) in output.match_indices(std_path) {
            let before = &output[..index];
            assert!(
                before.ends_with(":: ") || before.ends_with("Result < ") || before.ends_with("-> "),
                "`{std_path}` at {index} is not an absolute path in: {output}"
            );
        }
    }
}

#[test]
fn generic_function_is_rejected() {
    let message = expand_err(
        TokenStream::new(),
        quote!(
            fn f<T: Clone>(x: T) {}
        ),
    );
    assert!(
        message.contains("task functions cannot be generic"),
        "{message}"
    );
    let message = expand_err(
        TokenStream::new(),
        quote!(
            fn f(x: u8)
            where
                u8: Copy,
            {
            }
        ),
    );
    assert!(
        message.contains("cannot have a `where` clause"),
        "{message}"
    );
    let message = expand_err(
        TokenStream::new(),
        quote!(
            fn f<'a>(x: u8) {}
        ),
    );
    assert!(
        message.contains("task functions cannot be generic"),
        "{message}"
    );
}

#[test]
fn self_receiver_is_rejected() {
    let message = expand_err(
        TokenStream::new(),
        quote!(
            fn f(&self, x: u8) {}
        ),
    );
    assert!(
        message.contains("task functions cannot take `self`"),
        "{message}"
    );
}

#[test]
fn impl_trait_argument_is_rejected() {
    let message = expand_err(
        TokenStream::new(),
        quote!(
            fn f(x: impl Into<String>) {}
        ),
    );
    assert!(
        message.contains("task arguments cannot use `impl Trait`"),
        "{message}"
    );
    let message = expand_err(
        TokenStream::new(),
        quote!(
            fn f(x: Vec<impl Clone>) {}
        ),
    );
    assert!(
        message.contains("task arguments cannot use `impl Trait`"),
        "{message}"
    );
}

#[test]
fn impl_trait_return_is_rejected() {
    let message = expand_err(
        TokenStream::new(),
        quote!(
            fn f() -> impl Clone {
                1
            }
        ),
    );
    assert!(message.contains("cannot return `impl Trait`"), "{message}");
    let message = expand_err(
        TokenStream::new(),
        quote!(
            fn f() -> Result<impl Clone, E> {
                Ok(1)
            }
        ),
    );
    assert!(message.contains("cannot return `impl Trait`"), "{message}");
}

#[test]
fn pattern_parameters_are_rejected() {
    let message = expand_err(
        TokenStream::new(),
        quote!(
            fn f((a, b): (i32, i32)) {}
        ),
    );
    assert!(
        message.contains("task parameters must be plain identifiers"),
        "{message}"
    );
    let message = expand_err(
        TokenStream::new(),
        quote!(
            fn f(Point { x }: Point) {}
        ),
    );
    assert!(
        message.contains("task parameters must be plain identifiers"),
        "{message}"
    );
    let message = expand_err(
        TokenStream::new(),
        quote!(
            fn f(ref x: u8) {}
        ),
    );
    assert!(
        message.contains("task parameters must be plain identifiers"),
        "{message}"
    );
    let message = expand_err(
        TokenStream::new(),
        quote!(
            fn f(x @ 1..=2: u8) {}
        ),
    );
    assert!(
        message.contains("task parameters must be plain identifiers"),
        "{message}"
    );
}

#[test]
fn wildcard_parameter_is_rejected_with_a_naming_hint() {
    let message = expand_err(
        TokenStream::new(),
        quote!(
            fn f(_: u8) {}
        ),
    );
    assert!(message.contains("task parameters need a name"), "{message}");
    assert!(message.contains("`_unused: i32`"), "{message}");
}

#[test]
fn variadic_function_is_rejected() {
    let message = expand_err(
        TokenStream::new(),
        quote!(
            unsafe extern "C" fn f(x: u8, ...) {}
        ),
    );
    assert!(
        message.contains("task functions cannot be variadic"),
        "{message}"
    );
}

#[test]
fn const_fn_is_rejected() {
    let message = expand_err(
        TokenStream::new(),
        quote!(
            const fn f() {}
        ),
    );
    assert!(
        message.contains("task functions cannot be `const fn`"),
        "{message}"
    );
}

#[test]
fn unsafe_and_extern_functions_are_rejected() {
    let message = expand_err(
        TokenStream::new(),
        quote!(
            unsafe fn f() {}
        ),
    );
    assert!(
        message.contains("task functions cannot be `unsafe`"),
        "{message}"
    );
    let message = expand_err(
        TokenStream::new(),
        quote!(
            extern "C" fn f() {}
        ),
    );
    assert!(message.contains("cannot have an `extern` ABI"), "{message}");
}

#[test]
fn context_after_the_first_parameter_is_rejected() {
    let message = expand_err(
        TokenStream::new(),
        quote!(
            fn f(x: u8, ctx: &TaskContext) {}
        ),
    );
    assert!(
        message.contains("the task context must be the first parameter"),
        "{message}"
    );
    let message = expand_err(
        TokenStream::new(),
        quote!(
            fn f(ctx: &TaskContext, other: &celerity::TaskContext) {}
        ),
    );
    assert!(
        message.contains("the task context must be the first parameter"),
        "{message}"
    );
    let message = expand_err(
        TokenStream::new(),
        quote!(
            fn f(x: u8, ctx: Option<TaskContext>) {}
        ),
    );
    assert!(
        message.contains("the task context must be the first parameter"),
        "{message}"
    );
}

#[test]
fn context_not_behind_a_shared_reference_is_rejected() {
    let message = expand_err(
        TokenStream::new(),
        quote!(
            fn f(ctx: TaskContext) {}
        ),
    );
    assert!(
        message.contains("take the task context by shared reference"),
        "{message}"
    );
    let message = expand_err(
        TokenStream::new(),
        quote!(
            fn f(ctx: &mut TaskContext) {}
        ),
    );
    assert!(
        message.contains("take the task context by shared reference"),
        "{message}"
    );
}

#[test]
fn reference_argument_is_rejected() {
    let message = expand_err(
        TokenStream::new(),
        quote!(
            fn f(name: &str) {}
        ),
    );
    assert!(
        message.contains("task arguments must be owned types"),
        "{message}"
    );
}

#[test]
fn non_function_item_is_rejected() {
    let message = expand_err(
        TokenStream::new(),
        quote!(
            struct Add;
        ),
    );
    assert!(
        message.contains("can only be applied to a free function"),
        "{message}"
    );
}

#[test]
fn option_errors_are_reported_through_expand() {
    let message = expand_err(
        quote!(retries = 3),
        quote!(
            fn f() {}
        ),
    );
    assert!(message.contains("unknown option `retries`"), "{message}");
    assert!(
        message.contains("valid options are `name`, `queue`"),
        "{message}"
    );
    let message = expand_err(
        quote!(queue = "a", queue = "b"),
        quote!(
            fn f() {}
        ),
    );
    assert!(message.contains("duplicate option `queue`"), "{message}");
    let message = expand_err(
        quote!(queue = "no spaces"),
        quote!(
            fn f() {}
        ),
    );
    assert!(
        message.contains("invalid queue name \"no spaces\""),
        "{message}"
    );
}

#[test]
fn option_and_signature_errors_are_reported_together() {
    let message = expand_err(
        quote!(retries = 3),
        quote!(
            const fn f(_: u8) {}
        ),
    );
    assert_eq!(message.lines().count(), 3, "{message}");
}
