//! Strategies for what travels with a task: canvases, chord records, bodies, result records, the
//! envelope and dead letters.

use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;

use celerity_proto::{
    CanvasNode, ChordCompletion, ChordDefinition, ChordMember, ChordPolicy, ChordResults,
    DeadLetter, DeadLetterReason, Envelope, ResultRecord, SignatureRecord, TaskBody, header,
};

use super::{
    content_type, error_record, json_object, json_value, non_null_value, priority, queue_name,
    task_id, task_name, task_state, text,
};

/// A chord policy, with any quorum (the decoder does not check it; `ChordDefinition::check` does).
pub(crate) fn chord_policy() -> impl Strategy<Value = ChordPolicy> {
    prop_oneof![
        Just(ChordPolicy::FailFast),
        Just(ChordPolicy::Collect),
        any::<u32>().prop_map(|successes| ChordPolicy::AtLeast { successes }),
    ]
}

/// A signature whose `link` and `link_error` come from `links`.
fn signature_with(links: BoxedStrategy<Vec<CanvasNode>>) -> impl Strategy<Value = SignatureRecord> {
    (
        (
            task_id(),
            task_name(),
            vec(json_value(), 0..3),
            json_object(),
        ),
        (
            any::<bool>(),
            of(queue_name()),
            of(priority()),
            of(any::<u64>()),
        ),
        (links.clone(), links),
    )
        .prop_map(
            |((id, task, args, kwargs), (immutable, queue, priority, countdown_ms), links)| {
                let mut signature = SignatureRecord::new(id, task, args);
                signature.kwargs = kwargs;
                signature.immutable = immutable;
                signature.queue = queue;
                signature.priority = priority;
                signature.countdown_ms = countdown_ms;
                (signature.link, signature.link_error) = links;
                signature
            },
        )
}

/// Any canvas a few levels deep: the decoder reads empty chains and reused ids too
/// (`CanvasNode::validate` refuses them later), so these may have them.
pub(crate) fn canvas_node() -> impl Strategy<Value = CanvasNode> {
    let leaf = signature_with(Just(Vec::new()).boxed()).prop_map(CanvasNode::Signature);
    leaf.prop_recursive(3, 12, 3, |inner| {
        let nodes = vec(inner.clone(), 0..3).boxed();
        prop_oneof![
            signature_with(nodes.clone()).prop_map(CanvasNode::Signature),
            nodes.clone().prop_map(|tasks| CanvasNode::Chain { tasks }),
            (task_id(), nodes.clone()).prop_map(|(id, tasks)| CanvasNode::Group { id, tasks }),
            (task_id(), nodes, inner, chord_policy()).prop_map(|(id, header, body, policy)| {
                CanvasNode::Chord {
                    id,
                    header,
                    body: Box::new(body),
                    policy,
                }
            }),
        ]
    })
}

/// A signature with links.
pub(crate) fn signature_record() -> impl Strategy<Value = SignatureRecord> {
    signature_with(vec(canvas_node(), 0..2).boxed())
}

/// A chord header member's place.
pub(crate) fn chord_member() -> impl Strategy<Value = ChordMember> {
    (task_id(), any::<u32>(), any::<u32>(), chord_policy()).prop_map(|(id, index, size, policy)| {
        let mut member = ChordMember::new(id, index, size);
        member.policy = policy;
        member
    })
}

/// A chord body's reference to its header results.
pub(crate) fn chord_results() -> impl Strategy<Value = ChordResults> {
    (
        task_id(),
        any::<u32>(),
        any::<bool>(),
        of(vec(any::<u32>(), 0..4)),
    )
        .prop_map(|(id, size, collect, indices)| {
            let mut results = ChordResults::new(id, size);
            results.collect = collect;
            results.indices = indices;
            results
        })
}

/// A stored chord definition.
pub(crate) fn chord_definition() -> impl Strategy<Value = ChordDefinition> {
    (
        (any::<u32>(), task_id(), any::<u32>(), canvas_node()),
        (
            of(text()),
            content_type(),
            of(task_id()),
            of(chord_member()),
        ),
        (chord_policy(), of(any::<u64>()), of(text())),
    )
        .prop_map(
            |(
                (v, id, size, body),
                (reply_to, content_type, root_id, member),
                (policy, expires_ms, traceparent),
            )| {
                let mut definition = ChordDefinition::new(id, size, body);
                definition.v = v;
                definition.reply_to = reply_to;
                definition.content_type = content_type;
                definition.root_id = root_id;
                definition.member = member;
                definition.policy = policy;
                definition.expires_ms = expires_ms;
                definition.traceparent = traceparent;
                definition
            },
        )
}

/// A header member's completion.
pub(crate) fn chord_completion() -> impl Strategy<Value = ChordCompletion> {
    (
        (any::<u32>(), any::<u32>(), any::<u32>(), task_state()),
        (
            of(error_record()),
            of(task_name()),
            chord_policy(),
            of(text()),
        ),
    )
        .prop_map(
            |((v, index, size, state), (error, task, policy, traceparent))| {
                let mut completion = ChordCompletion::new(index, size, state);
                completion.v = v;
                completion.error = error;
                completion.task = task;
                completion.policy = policy;
                completion.traceparent = traceparent;
                completion
            },
        )
}

/// A task body with continuations.
pub(crate) fn task_body() -> impl Strategy<Value = TaskBody> {
    let nodes = || vec(canvas_node(), 0..2);
    (
        (vec(json_value(), 0..4), json_object()),
        (nodes(), nodes(), nodes()),
        (of(chord_member()), of(chord_results())),
    )
        .prop_map(
            |((args, kwargs), (chain, link, link_error), (chord, chord_results))| {
                let mut body = TaskBody::new(args, kwargs);
                body.chain = chain;
                body.link = link;
                body.link_error = link_error;
                body.chord = chord;
                body.chord_results = chord_results;
                body
            },
        )
}

/// A result record in any state, with any fields set.
pub(crate) fn result_record() -> impl Strategy<Value = ResultRecord> {
    (
        (any::<u32>(), task_id(), task_state(), any::<u64>()),
        (of(task_name()), of(non_null_value()), of(error_record())),
        (of(non_null_value()), any::<u32>(), of(text())),
        (of(any::<u64>()), of("[0-9a-f]{32}")),
    )
        .prop_map(
            |(
                (v, id, state, updated_at_ms),
                (task, result, error),
                (meta, retries, worker),
                (started_at_ms, trace_id),
            )| {
                let mut record = ResultRecord::new(id, state, updated_at_ms);
                record.v = v;
                record.task = task;
                record.result = result;
                record.error = error;
                record.meta = meta;
                record.retries = retries;
                record.worker = worker;
                record.started_at_ms = started_at_ms;
                record.trace_id = trace_id;
                record
            },
        )
}

/// The name of a user header: anything the protocol does not reserve.
pub(crate) fn user_header_name() -> impl Strategy<Value = String> {
    "[A-Za-z][A-Za-z0-9_-]{0,15}".prop_filter("a user header", |name| !header::is_reserved(name))
}

/// An envelope with any optional header set, and user headers.
pub(crate) fn envelope() -> impl Strategy<Value = Envelope> {
    let ids = || (of(task_id()), of(task_id()), of(task_id()), of(task_id()));
    let times = || (of(any::<u64>()), of(any::<u64>()), of(any::<u64>()));
    (
        (
            task_id(),
            task_name(),
            content_type(),
            any::<u32>(),
            priority(),
        ),
        ids(),
        (times(), of(any::<u64>())),
        (of(text()), of(text()), of(text())),
        vec((user_header_name(), text()), 0..4),
    )
        .prop_map(
            |(
                (id, task, content_type, retries, priority),
                (parent_id, root_id, group_id, chord_id),
                ((eta_ms, expires_ms, sent_at_ms), requeued_from),
                (reply_to, traceparent, tracestate),
                extra,
            )| {
                let mut envelope = Envelope::new(id, task);
                envelope.content_type = content_type;
                envelope.retries = retries;
                envelope.priority = priority;
                envelope.reply_to = reply_to;
                envelope.parent_id = parent_id;
                envelope.root_id = root_id;
                envelope.group_id = group_id;
                envelope.chord_id = chord_id;
                envelope.eta_ms = eta_ms;
                envelope.expires_ms = expires_ms;
                envelope.sent_at_ms = sent_at_ms;
                envelope.requeued_from = requeued_from;
                envelope.traceparent = traceparent;
                envelope.tracestate = tracestate;
                envelope.extra = extra;
                envelope
            },
        )
}

/// Every dead-letter reason.
pub(crate) const DEAD_LETTER_REASONS: [DeadLetterReason; 9] = DeadLetterReason::ALL;

/// A dead letter whose texts are given by `texts`.
pub(crate) fn dead_letter_with(texts: BoxedStrategy<String>) -> impl Strategy<Value = DeadLetter> {
    (
        prop::sample::select(DEAD_LETTER_REASONS.to_vec()),
        (texts.clone(), texts.clone(), texts),
        (any::<u64>(), any::<u64>(), any::<u64>()),
    )
        .prop_map(
            |(reason, (error, worker, subject), (deliveries, stream_sequence, time_ms))| {
                DeadLetter {
                    reason,
                    error,
                    worker,
                    deliveries,
                    subject,
                    stream_sequence,
                    time_ms,
                }
            },
        )
}
