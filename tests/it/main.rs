//! Cross-process behaviour of Celerity against real nats-server processes.

mod auth;
mod beat;
mod bells;
mod canvas;
mod celery_user;
mod chords;
mod compose;
mod control;
mod dead_letters;
mod delays;
mod events;
mod examples;
mod hardening;
mod http;
mod limits;
mod priority;
mod protocol;
mod rate_limits;
mod resilience;
mod retries;
mod roundtrip;
mod routing;
mod signals;
mod states;
mod support;
mod workers;
