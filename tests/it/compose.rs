//! `docker-compose.yml` stays valid: it parses, and has the services and ports users rely on.
//! (No Docker engine runs here; the same topology runs as local processes in the other tests.)

use serde_yaml_ng::Value;

fn compose() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docker-compose.yml");
    let text =
        std::fs::read_to_string(path).expect("docker-compose.yml exists at the workspace root");
    serde_yaml_ng::from_str(&text).expect("docker-compose.yml is valid YAML")
}

#[test]
fn compose_file_has_a_jetstream_server_and_a_worker_pointed_at_it() {
    let compose = compose();
    let services = &compose["services"];
    let nats = &services["nats"];
    assert!(
        nats["image"]
            .as_str()
            .is_some_and(|image| image.starts_with("nats:2.")),
        "nats image: {:?}",
        nats["image"]
    );
    let command: Vec<&str> = nats["command"]
        .as_sequence()
        .expect("nats command")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        command.contains(&"-js"),
        "JetStream is enabled: {command:?}"
    );
    let ports: Vec<&str> = nats["ports"]
        .as_sequence()
        .expect("nats ports")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        ports.contains(&"4222:4222"),
        "client port published: {ports:?}"
    );

    let worker = &services["worker"];
    assert_eq!(
        worker["environment"]["CELERITY_NATS_URL"].as_str(),
        Some("nats://nats:4222")
    );
    let depends: Vec<&str> = worker["depends_on"]
        .as_sequence()
        .expect("worker depends_on")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(depends, vec!["nats"]);
    let dockerfile = worker["build"]["dockerfile"]
        .as_str()
        .expect("worker dockerfile");
    let path = format!("{}/../{dockerfile}", env!("CARGO_MANIFEST_DIR"));
    assert!(std::path::Path::new(&path).exists(), "{dockerfile} exists");
}
