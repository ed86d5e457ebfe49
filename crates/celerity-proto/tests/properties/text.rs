//! The text parsers: names and priorities (`new`, `FromStr` and `Deserialize`), rates, task
//! states, event kinds, dead-letter reasons, content types and the subjects and streams `Layout`
//! splits back into queues and priorities.

use std::fmt::Debug;
use std::str::FromStr;

use proptest::prelude::*;
use serde::de::DeserializeOwned;

use celerity_proto::{
    ContentType, DeadLetterReason, InvalidName, Layout, Namespace, Priority, QueueName, Rate,
    TaskEventKind, TaskId, TaskName, TaskState,
};

use crate::strategies::*;

/// Checks that `text` parses as a `T` exactly when its JSON string deserializes as one, and that
/// a refusal names the text.
fn check_name<T>(text: &str) -> Result<(), TestCaseError>
where
    T: FromStr<Err = InvalidName> + DeserializeOwned + PartialEq + Debug + ToString,
{
    let parsed = text.parse::<T>();
    let json = serde_json::to_vec(text).map_err(|error| TestCaseError::fail(error.to_string()))?;
    let deserialized = ContentType::Json.decode::<T>(&json).ok();
    match parsed {
        Ok(name) => {
            prop_assert_eq!(name.to_string(), text);
            prop_assert_eq!(deserialized, Some(name));
        }
        Err(error) => {
            prop_assert_eq!(&error.value, text);
            prop_assert_eq!(deserialized, None);
        }
    }
    Ok(())
}

/// Any text, or a name-like one (the strategies' own alphabets, now and then too long).
fn name_like_text() -> impl Strategy<Value = String> {
    prop_oneof![
        text(),
        "[A-Za-z0-9_=.:-]{0,140}",
        "[a-z0-9-]{0,40}",
        "[ -~]{0,8}"
    ]
}

proptest! {
    #[test]
    fn any_text_is_a_name_or_an_invalid_name_that_names_it(text in name_like_text()) {
        check_name::<TaskId>(&text)?;
        check_name::<TaskName>(&text)?;
        check_name::<QueueName>(&text)?;
        check_name::<Namespace>(&text)?;
        if let Err(error) = text.parse::<Priority>() {
            prop_assert_eq!(&error.value, &text);
        }
    }

    #[test]
    fn a_priority_is_a_level_from_0_to_9_and_any_other_number_an_invalid_name(
        level in any::<u8>()
    ) {
        match Priority::new(level) {
            Ok(priority) => prop_assert_eq!(priority.get(), level),
            Err(error) => prop_assert_eq!((level > 9, error.value), (true, level.to_string())),
        }
    }

    #[test]
    fn names_and_priorities_read_back_from_their_text(
        names in (task_id(), task_name(), queue_name(), namespace(), priority())
    ) {
        let (id, name, queue, namespace, priority) = names;
        prop_assert_eq!(id.to_string().parse::<TaskId>(), Ok(id));
        prop_assert_eq!(name.to_string().parse::<TaskName>(), Ok(name));
        prop_assert_eq!(queue.to_string().parse::<QueueName>(), Ok(queue));
        prop_assert_eq!(namespace.to_string().parse::<Namespace>(), Ok(namespace));
        prop_assert_eq!(priority.to_string().parse::<Priority>(), Ok(priority));
    }

    #[test]
    fn any_text_is_a_rate_or_an_invalid_rate_that_names_it(
        text in prop_oneof![text(), "[ 0-9]{0,12}/[ a-z]{0,8}", "[0-9]{1,12}/(s|m|h|sec|min|hour)"]
    ) {
        match text.parse::<Rate>() {
            Ok(rate) => prop_assert_eq!(rate.to_string().parse::<Rate>(), Ok(rate)),
            Err(error) => prop_assert_eq!(error.value, text),
        }
    }

    #[test]
    fn a_rate_reads_back_from_its_text_and_its_aliases(
        rate in rate(),
        unit in prop::sample::select(vec![0usize, 1, 2]),
        padding in " {0,2}",
    ) {
        prop_assert_eq!(rate.to_string().parse::<Rate>(), Ok(rate));
        let aliases = match rate.period().as_secs() {
            1 => ["s", "sec", "second"],
            60 => ["m", "min", "minute"],
            _ => ["h", "hour", "h"],
        };
        let (count, alias) = (rate.count(), aliases[unit]);
        let spelled = format!("{padding}{count}{padding}/{padding}{alias}{padding}");
        prop_assert_eq!(spelled.parse::<Rate>(), Ok(rate));
    }

    #[test]
    fn any_text_is_a_state_that_spells_it(text in text()) {
        let state = TaskState::parse(&text);
        prop_assert_eq!(state.as_str(), text.as_str());
    }

    #[test]
    fn a_state_reads_back_from_its_spelling(state in task_state()) {
        prop_assert_eq!(TaskState::parse(state.as_str()), state);
    }

    #[test]
    fn kinds_and_reasons_read_back_from_their_names_and_nothing_else_panics(
        kind in task_event_kind(),
        reason in prop::sample::select(DEAD_LETTER_REASONS.to_vec()),
        text in text(),
    ) {
        prop_assert_eq!(TaskEventKind::parse(kind.name()), Some(kind));
        prop_assert_eq!(TaskEventKind::parse(&format!("task-{}", kind.name())), Some(kind));
        prop_assert_eq!(DeadLetterReason::parse(reason.code()), Some(reason));
        if let Some(kind) = TaskEventKind::parse(&text) {
            prop_assert!(text.ends_with(kind.name()));
        }
        if let Some(reason) = DeadLetterReason::parse(&text) {
            prop_assert_eq!(reason.code(), text);
        }
    }

    #[test]
    fn a_content_type_reads_back_in_any_case_with_parameters(
        content_type in content_type(),
        upper in prop::collection::vec(any::<bool>(), 20),
        parameters in "(; ?[a-z]{1,8}=[a-z0-9-]{1,8}){0,2}",
        text in text(),
    ) {
        let spelled: String = content_type
            .as_str()
            .chars()
            .zip(upper)
            .map(|(letter, upper)| if upper { letter.to_ascii_uppercase() } else { letter })
            .collect();
        prop_assert_eq!(ContentType::parse(&format!(" {spelled}{parameters}")), Some(content_type));
        let _ = ContentType::parse(&text);
    }

    #[test]
    fn subjects_and_streams_split_back_into_what_named_them(
        namespace in namespace(),
        queue in queue_name(),
        priority in priority(),
    ) {
        let layout = Layout::new(namespace);
        prop_assert_eq!(
            layout.parse_task_subject(&layout.task_subject(&queue, priority)),
            Some((queue.clone(), priority))
        );
        prop_assert_eq!(
            layout.parse_queue_stream(&layout.queue_stream(&queue)),
            Some(queue.clone())
        );
        prop_assert_eq!(
            layout.parse_dead_letter_subject(&layout.dead_letter_subject(&queue)),
            Some(queue.clone())
        );
        prop_assert_eq!(layout.parse_delayed_subject(&layout.delayed_subject(&queue)), Some(queue));
    }

    #[test]
    fn any_subject_splits_into_what_names_it_or_into_nothing(
        namespace in namespace(),
        subject in prop_oneof![
            text(),
            "[a-z0-9-]{1,6}\\.(q|dlq|delayed|reply)\\.[A-Za-z0-9_.+-]{0,12}(\\.[+0-9]{0,4})?",
            "[A-Z0-9-]{1,6}_Q_[A-Za-z0-9_.]{0,12}",
        ],
    ) {
        let layout = Layout::new(namespace);
        if let Some((queue, _)) = layout.parse_task_subject(&subject) {
            // NOTE(protocol): the priority token may be spelled `03` or `+3` here; queue streams
            // bind only the subjects `.0` to `.9`, so no such message is ever delivered.
            let prefix = format!("{}.q.{queue}.", layout.namespace());
            prop_assert!(subject.starts_with(&prefix), "{}", subject);
        }
        if let Some(queue) = layout.parse_queue_stream(&subject) {
            prop_assert_eq!(layout.queue_stream(&queue), subject.as_str());
        }
        if let Some(queue) = layout.parse_dead_letter_subject(&subject) {
            prop_assert_eq!(layout.dead_letter_subject(&queue), subject.as_str());
        }
        if let Some(queue) = layout.parse_delayed_subject(&subject) {
            prop_assert_eq!(layout.delayed_subject(&queue), subject.as_str());
        }
        let _ = layout.is_reply_subject(&subject);
    }
}
