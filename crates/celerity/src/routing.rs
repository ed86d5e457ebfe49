//! Routing: which queue, and at which priority, a task is sent to.
//!
//! Resolution follows Celery's order: a queue named at the call wins, then router functions (in
//! the order they were added; the first that answers wins), then routes by exact task name or glob
//! (`"tasks.bulk_*"`, first match wins), then the task's own `queue` attribute, then the default
//! queue. A priority comes from the call, else from the router or route that chose the queue, else 0.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use celerity_proto::{Priority, QueueName};
use serde_json::{Map, Value};

/// What a router function decides for a task.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Route {
    /// The queue, if the router picks one.
    pub queue: Option<QueueName>,
    /// The priority, if the router picks one.
    pub priority: Option<Priority>,
}

impl Route {
    /// A route to `queue`; an invalid queue name makes a route that picks no queue (use
    /// [`Route::try_to`] to see why).
    pub fn to(queue: &str) -> Self {
        Self::try_to(queue).unwrap_or_default()
    }

    /// A route to `queue`, checked.
    ///
    /// # Errors
    /// The queue name's rule.
    pub fn try_to(queue: &str) -> Result<Self, celerity_proto::InvalidName> {
        Ok(Self {
            queue: Some(QueueName::new(queue)?),
            priority: None,
        })
    }

    /// Also sets the priority (0 to 9; out of range leaves it unset).
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = Priority::new(priority).ok();
        self
    }
}

/// A router function: sees the task name, positional and named arguments, and may pick a route.
pub type RouterFn = dyn Fn(&str, &[Value], &Map<String, Value>) -> Option<Route> + Send + Sync;

/// A route by task name: an exact name, or a glob where `*` matches any run of characters.
#[derive(Debug, Clone)]
pub(crate) struct NameRule {
    pattern: String,
    queue: QueueName,
    priority: Option<Priority>,
}

impl NameRule {
    pub(crate) fn new(pattern: String, queue: QueueName, priority: Option<Priority>) -> Self {
        Self {
            pattern,
            queue,
            priority,
        }
    }

    pub(crate) fn pattern(&self) -> &str {
        &self.pattern
    }

    pub(crate) fn queue(&self) -> &QueueName {
        &self.queue
    }

    fn matches(&self, name: &str) -> bool {
        glob_match(&self.pattern, name)
    }
}

/// Everything that routes tasks, shared by producers and workers of one app.
#[derive(Clone, Default)]
pub(crate) struct Routes {
    routers: Vec<Arc<RouterFn>>,
    rules: Vec<NameRule>,
    /// The `queue` attribute of each registered task.
    task_queues: HashMap<String, QueueName>,
    default_queue: QueueName,
    /// The priority levels in use, lowest first; empty means all.
    steps: Vec<Priority>,
}

impl fmt::Debug for Routes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Routes")
            .field("routers", &self.routers.len())
            .field("rules", &self.rules)
            .field("task_queues", &self.task_queues)
            .field("default_queue", &self.default_queue)
            .finish()
    }
}

impl Routes {
    pub(crate) fn new(
        routers: Vec<Arc<RouterFn>>,
        rules: Vec<NameRule>,
        task_queues: HashMap<String, QueueName>,
        default_queue: QueueName,
    ) -> Self {
        Self {
            routers,
            rules,
            task_queues,
            default_queue,
            steps: Vec::new(),
        }
    }

    /// Rounds priorities to `steps` (lowest first).
    pub(crate) fn with_steps(mut self, steps: Vec<Priority>) -> Self {
        self.steps = steps;
        self
    }

    /// `priority` rounded down to the nearest step (up to the lowest step when below it).
    pub(crate) fn to_step(&self, priority: Priority) -> Priority {
        match self.steps.iter().rev().find(|step| **step <= priority) {
            Some(step) => *step,
            None => self.steps.first().copied().unwrap_or(priority),
        }
    }

    /// Routes with only a default queue.
    pub(crate) fn default_only(default_queue: QueueName) -> Self {
        Self {
            default_queue,
            ..Self::default()
        }
    }

    /// The queue and priority of a task: `explicit` ones from the call win; `task_queue` is the
    /// task's own attribute when the caller knows it (else the registered one is used).
    pub(crate) fn resolve(
        &self,
        name: &str,
        args: &[Value],
        kwargs: &Map<String, Value>,
        explicit_queue: Option<QueueName>,
        explicit_priority: Option<Priority>,
        task_queue: Option<QueueName>,
    ) -> (QueueName, Priority) {
        let routed = || -> Option<(QueueName, Option<Priority>)> {
            for router in &self.routers {
                if let Some(Route {
                    queue: Some(queue),
                    priority,
                }) = router(name, args, kwargs)
                {
                    return Some((queue, priority));
                }
            }
            self.rules
                .iter()
                .find(|rule| rule.matches(name))
                .map(|rule| (rule.queue.clone(), rule.priority))
        };
        let (queue, routed_priority) = match explicit_queue {
            Some(queue) => (queue, None),
            None => match routed() {
                Some(found) => found,
                None => {
                    let queue = task_queue
                        .or_else(|| self.task_queues.get(name).cloned())
                        .unwrap_or_else(|| self.default_queue.clone());
                    (queue, None)
                }
            },
        };
        // A router may set only a priority (no queue) for a task: honour it too.
        let router_priority = || {
            self.routers
                .iter()
                .find_map(|router| router(name, args, kwargs).and_then(|route| route.priority))
        };
        let priority = explicit_priority
            .or(routed_priority)
            .or_else(router_priority)
            .unwrap_or_default();
        (queue, self.to_step(priority))
    }
}

/// Matches `name` against `pattern`, where `*` matches any run of characters (also none).
pub(crate) fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first)
        || !name[first.len()..].ends_with(last)
        || name.len() < first.len() + last.len()
    {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn q(name: &str) -> QueueName {
        QueueName::new(name).unwrap()
    }

    fn routes() -> Routes {
        let urgent: Arc<RouterFn> = Arc::new(|_name, _args, kwargs| {
            kwargs
                .get("urgent")
                .and_then(Value::as_bool)
                .filter(|urgent| *urgent)
                .map(|_| Route::to("high").priority(9))
        });
        let big_orders: Arc<RouterFn> = Arc::new(|name, args, _kwargs| {
            let total = args
                .first()
                .and_then(|order| order.get("total"))
                .and_then(Value::as_f64)?;
            (name == "orders.process" && total > 1000.0).then(|| Route::to("premium").priority(8))
        });
        let rules = vec![
            NameRule::new("tasks.critical".into(), q("high"), None),
            NameRule::new(
                "tasks.bulk_*".into(),
                q("low"),
                Some(Priority::new(1).unwrap()),
            ),
        ];
        let task_queues = HashMap::from([
            ("tasks.mailer".to_owned(), q("email")),
            ("tasks.bulk_mail".to_owned(), q("email")),
        ]);
        Routes::new(vec![urgent, big_orders], rules, task_queues, q("default"))
    }

    fn resolve(name: &str, args: Value, kwargs: Value, explicit: Option<&str>) -> (String, u8) {
        let args = args.as_array().cloned().unwrap_or_default();
        let kwargs = kwargs.as_object().cloned().unwrap_or_default();
        let (queue, priority) = routes().resolve(name, &args, &kwargs, explicit.map(q), None, None);
        (queue.to_string(), priority.get())
    }

    #[test]
    fn resolution_follows_celerys_order() {
        // Call time beats everything.
        assert_eq!(
            resolve(
                "tasks.bulk_x",
                json!([]),
                json!({"urgent": true}),
                Some("adhoc")
            ),
            ("adhoc".into(), 9)
        );
        // Router functions beat name routes and attributes, with content-based decisions.
        assert_eq!(
            resolve("tasks.bulk_x", json!([]), json!({"urgent": true}), None),
            ("high".into(), 9)
        );
        assert_eq!(
            resolve("orders.process", json!([{"total": 1500}]), json!({}), None),
            ("premium".into(), 8)
        );
        assert_eq!(
            resolve("orders.process", json!([{"total": 10}]), json!({}), None),
            ("default".into(), 0)
        );
        // Exact and glob routes beat the task's own queue.
        assert_eq!(
            resolve("tasks.critical", json!([]), json!({}), None),
            ("high".into(), 0)
        );
        assert_eq!(
            resolve("tasks.bulk_mail", json!([]), json!({}), None),
            ("low".into(), 1)
        );
        // The task's own queue beats the default.
        assert_eq!(
            resolve("tasks.mailer", json!([]), json!({}), None),
            ("email".into(), 0)
        );
        assert_eq!(
            resolve("tasks.other", json!([]), json!({}), None),
            ("default".into(), 0)
        );
    }

    #[test]
    fn globs_match_like_shell_stars() {
        assert!(glob_match("tasks.bulk_*", "tasks.bulk_"));
        assert!(glob_match("tasks.bulk_*", "tasks.bulk_email"));
        assert!(glob_match("*.report", "daily.report"));
        assert!(glob_match("a*b*c", "aXbYc"));
        assert!(!glob_match("a*b*c", "aXcYb"));
        assert!(!glob_match("tasks.bulk_*", "tasks.bulk"));
        assert!(glob_match("exact", "exact") && !glob_match("exact", "exactly"));
    }
}

#[cfg(test)]
mod step_tests {
    use super::*;

    #[test]
    fn priorities_round_down_to_steps() {
        let steps = [0, 3, 6, 9].map(|p| Priority::new(p).unwrap()).to_vec();
        let routes = Routes::default_only(QueueName::default()).with_steps(steps);
        let rounded: Vec<u8> = (0..=9)
            .map(|p| routes.to_step(Priority::new(p).unwrap()).get())
            .collect();
        assert_eq!(rounded, vec![0, 0, 0, 3, 3, 3, 6, 6, 6, 9]);
        let high_only =
            Routes::default_only(QueueName::default()).with_steps(vec![Priority::new(5).unwrap()]);
        assert_eq!(
            high_only.to_step(Priority::new(1).unwrap()).get(),
            5,
            "below the lowest step rounds up to it"
        );
    }
}
