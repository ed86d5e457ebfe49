//! `docker-compose.yml` stays valid: it parses, and has the services and ports users rely on.
//! (No Docker engine runs here; the same topology runs as local processes in the other tests.)

use serde_yaml_ng::Value;

fn compose() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docker-compose.yml");
    let text =
        std::fs::read_to_string(path).expect("docker-compose.yml exists at the workspace root");
    serde_yaml_ng::from_str(&text).expect("docker-compose.yml is valid YAML")
}

/// The strings of the sequence `value` (a command, ports, `depends_on`); `what` names it.
fn strings<'a>(value: &'a Value, what: &str) -> Vec<&'a str> {
    value
        .as_sequence()
        .unwrap_or_else(|| panic!("{what} is a sequence: {value:?}"))
        .iter()
        .filter_map(Value::as_str)
        .collect()
}

/// The services that run a Celerity worker: their command starts with `worker`.
fn worker_services(compose: &Value) -> Vec<(&str, &Value)> {
    compose["services"]
        .as_mapping()
        .expect("services is a mapping")
        .iter()
        .filter(|(_, service)| {
            service["command"]
                .as_sequence()
                .and_then(|command| command.first())
                .and_then(Value::as_str)
                == Some("worker")
        })
        .map(|(name, service)| (name.as_str().expect("service names are strings"), service))
        .collect()
}

/// Asserts that `service`'s image starts with `prefix`.
fn assert_image(service: &Value, prefix: &str) {
    assert!(
        service["image"]
            .as_str()
            .is_some_and(|image| image.starts_with(prefix)),
        "image {:?} is {prefix}*",
        service["image"]
    );
}

#[test]
fn compose_file_has_a_jetstream_server_and_a_worker_pointed_at_it() {
    let compose = compose();
    let services = &compose["services"];
    let nats = &services["nats"];
    assert_image(nats, "nats:2.");
    let command = strings(&nats["command"], "nats command");
    assert!(
        command.contains(&"-js"),
        "JetStream is enabled: {command:?}"
    );
    let ports = strings(&nats["ports"], "nats ports");
    assert!(
        ports.contains(&"4222:4222"),
        "client port published: {ports:?}"
    );

    let worker = &services["worker"];
    assert_eq!(
        worker["environment"]["CELERITY_NATS_URL"].as_str(),
        Some("nats://nats:4222")
    );
    let depends = strings(&worker["depends_on"], "worker depends_on");
    assert!(
        depends.contains(&"nats"),
        "worker depends on nats: {depends:?}"
    );
    let dockerfile = worker["build"]["dockerfile"]
        .as_str()
        .expect("worker dockerfile");
    let path = format!("{}/../{dockerfile}", env!("CARGO_MANIFEST_DIR"));
    assert!(std::path::Path::new(&path).exists(), "{dockerfile} exists");
}

#[test]
fn compose_file_has_jaeger_and_every_worker_exports_its_traces_to_it() {
    let compose = compose();
    let jaeger = &compose["services"]["jaeger"];
    assert_image(jaeger, "jaegertracing/jaeger:2.");
    let ports = strings(&jaeger["ports"], "jaeger ports");
    for port in ["4317:4317", "4318:4318", "16686:16686"] {
        assert!(ports.contains(&port), "jaeger publishes {port}: {ports:?}");
    }

    let workers = worker_services(&compose);
    assert!(!workers.is_empty(), "the compose file runs a worker");
    for (name, worker) in workers {
        let environment = &worker["environment"];
        assert_eq!(
            environment["OTEL_EXPORTER_OTLP_ENDPOINT"].as_str(),
            Some("http://jaeger:4318"),
            "{name} exports to Jaeger's OTLP/HTTP port"
        );
        assert!(
            environment["OTEL_SERVICE_NAME"]
                .as_str()
                .is_some_and(|service| !service.is_empty()),
            "{name} names its service: {:?}",
            environment["OTEL_SERVICE_NAME"]
        );
        let depends = strings(&worker["depends_on"], "worker depends_on");
        assert!(
            depends.contains(&"jaeger"),
            "{name} depends on jaeger: {depends:?}"
        );
    }
}

#[test]
fn compose_file_serves_the_dashboard_on_the_hosts_loopback_unless_it_has_a_login() {
    let compose = compose();
    let dashboard = &compose["services"]["dashboard"];
    let dockerfile = dashboard["build"]["dockerfile"]
        .as_str()
        .expect("the dashboard's dockerfile");
    let path = format!("{}/../{dockerfile}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("the dashboard's dockerfile exists");
    assert!(
        text.contains("-p celerity-cli"),
        "{dockerfile} builds the celerity command"
    );

    let command = strings(&dashboard["command"], "dashboard command");
    assert_eq!(command.first(), Some(&"dashboard"));
    assert_eq!(
        dashboard["environment"]["CELERITY_NATS_URL"].as_str(),
        Some("nats://nats:4222")
    );
    let depends = strings(&dashboard["depends_on"], "dashboard depends_on");
    assert!(depends.contains(&"nats"), "{depends:?}");
    let ports = strings(&dashboard["ports"], "dashboard ports");
    assert!(
        ports.iter().any(|port| port.ends_with(":5555")),
        "{ports:?}"
    );
    // Open without a login only where nobody but the host's users can reach it.
    if command.contains(&"--no-auth") {
        assert!(
            ports.iter().all(|port| port.starts_with("127.0.0.1:")),
            "a dashboard without a login is published on loopback only: {ports:?}"
        );
    }
}
