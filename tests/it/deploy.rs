//! The Kubernetes example checked against the gateway itself: `examples/kubernetes/` parses, the
//! config in its ConfigMap passes the gateway's own loading (with the environment the image and
//! the Deployment give it), and its probes, ports, mounts, user and shutdown timing agree with
//! that config, the gateway's defaults and the `Dockerfile`.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// What the final stage of the Dockerfile sets: `ENV` pairs, `EXPOSE`d ports, the `USER`.
struct Image {
    env: Vec<(String, String)>,
    expose: Vec<u16>,
    user: String,
    base: String,
    entrypoint: String,
}

fn image() -> Image {
    let text = repo_file("Dockerfile");
    // Instructions with their continuation lines joined.
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(start) => current.push_str(start),
            None => {
                current.push_str(line);
                instructions.push(std::mem::take(&mut current));
            }
        }
    }
    let last_from = instructions
        .iter()
        .rposition(|i| i.starts_with("FROM "))
        .unwrap();
    let mut image = Image {
        env: Vec::new(),
        expose: Vec::new(),
        user: String::new(),
        base: instructions[last_from]["FROM ".len()..].trim().to_owned(),
        entrypoint: String::new(),
    };
    for i in &instructions[last_from..] {
        let (word, rest) = i.split_once(' ').unwrap();
        match word {
            "ENV" => {
                for pair in rest.split_whitespace() {
                    let (k, v) = pair.split_once('=').unwrap();
                    image.env.push((k.to_owned(), v.to_owned()));
                }
            }
            "EXPOSE" => image
                .expose
                .extend(rest.split_whitespace().map(|p| p.parse::<u16>().unwrap())),
            "USER" => image.user = rest.trim().to_owned(),
            "ENTRYPOINT" => image.entrypoint = rest.trim().to_owned(),
            _ => {}
        }
    }
    image
}

fn docs() -> Vec<Value> {
    serde_saphyr::from_multiple(&repo_file("examples/kubernetes/deployment.yaml"))
        .unwrap_or_else(|e| panic!("examples/kubernetes/deployment.yaml: {e}"))
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let all: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(all.len(), 1, "one {kind}");
    all[0]
}

fn container<'a>(deployment: &'a Value, name: &str) -> &'a Value {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn env_of(c: &Value, name: &str) -> Option<String> {
    c["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
        .map(str::to_owned)
}

fn port_named(c: &Value, name: &str) -> u16 {
    c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no port {name}")) as u16
}

fn mount_path<'a>(c: &'a Value, volume: &str) -> &'a str {
    c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume)
        .and_then(|m| m["mountPath"].as_str())
        .unwrap_or_else(|| panic!("no mount of {volume}"))
}

fn seconds(v: &Value) -> Duration {
    Duration::from_secs(v.as_u64().unwrap())
}

#[test]
fn the_kubernetes_example_matches_the_gateway_and_the_image() {
    let docs = docs();
    let image = image();
    let config_map = of_kind(&docs, "ConfigMap");
    let deployment = of_kind(&docs, "Deployment");
    let service = of_kind(&docs, "Service");
    let pod = &deployment["spec"]["template"]["spec"];
    let gw = container(deployment, "gateway");

    // The config file is mounted where the image (and the container) says it is read from.
    let config_path = env_of(gw, "GATEWAY_CONFIG").unwrap();
    let image_config = image
        .env
        .iter()
        .find(|(k, _)| k == "GATEWAY_CONFIG")
        .map(|(_, v)| v.clone())
        .unwrap();
    assert_eq!(config_path, image_config);
    let config_path = Path::new(&config_path);
    assert_eq!(
        Path::new(mount_path(gw, "config")),
        config_path.parent().unwrap()
    );
    let volumes = pod["volumes"].as_array().unwrap();
    let volume = |name: &str| volumes.iter().find(|v| v["name"] == name).unwrap();
    assert_eq!(
        volume("config")["configMap"]["name"],
        config_map["metadata"]["name"]
    );
    let file_name = config_path.file_name().unwrap().to_str().unwrap();
    let yaml = config_map["data"][file_name]
        .as_str()
        .unwrap_or_else(|| panic!("the ConfigMap has no {file_name}"));

    // The secret file the config names is where the secret volume is mounted.
    let raw: Value = serde_saphyr::from_str(yaml).unwrap();
    let secret_file = Path::new(raw["auth"]["jwt_secret_file"].as_str().unwrap());
    assert_eq!(
        Path::new(mount_path(gw, "secrets")),
        secret_file.parent().unwrap()
    );
    let items = volume("secrets")["secret"]["items"].as_array().unwrap();
    assert!(
        items
            .iter()
            .any(|i| i["path"] == secret_file.file_name().unwrap().to_str().unwrap()),
        "the secret volume does not provide {}",
        secret_file.display()
    );
    // Kubernetes mounts secrets 0644 unless told otherwise, which the gateway refuses for a key
    // file: the volume must keep it from other users (0440 or 0400; YAML 1.1 reads 0440 as
    // octal, 288, and some parsers keep the digits, 440).
    let mode = &volume("secrets")["secret"]["defaultMode"];
    let mode = mode
        .as_f64()
        .unwrap_or_else(|| panic!("the secret volume sets defaultMode: {mode:?}"));
    assert!(
        [f64::from(0o440), f64::from(0o400), 440.0, 400.0].contains(&mode),
        "defaultMode {mode} lets other users read the key"
    );
    assert!(
        pod["securityContext"]["fsGroup"].as_f64().is_some(),
        "fsGroup lets the gateway read a 0440 secret"
    );

    // The config passes the gateway's own loading, with the image's environment, the
    // container's, and the secret file present (at a temporary path).
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("jwt_secret");
    std::fs::write(&secret, "k".repeat(48)).unwrap();
    // Key files must be private (`private_file`): in the pod the secret volume makes it
    // root-owned 0440 with the pod's fsGroup, which the key-file rule accepts; here the test's
    // own user owns it, so owner-only.
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut vars = image.env.clone();
    for e in gw["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap().to_owned();
        let value = match e["value"].as_str() {
            Some(v) => v.to_owned(),
            // From a Kubernetes Secret.
            None if name == "GATEWAY_DATABASE_URL" => "postgres://gw:pw@postgres:5432/gw".into(),
            None => panic!("{name}: no value"),
        };
        vars.retain(|(k, _)| *k != name);
        vars.push((name, value));
    }
    vars.push((
        "GATEWAY_AUTH__JWT_SECRET_FILE".into(),
        secret.display().to_string(),
    ));
    let config = gateway::config::from_str_with_env(
        yaml,
        "gateway.yaml",
        config_path.parent().unwrap(),
        &vars,
    )
    .unwrap_or_else(|e| panic!("the ConfigMap's gateway.yaml: {e}"));

    // Ports: the container's match the listeners, the image exposes the HTTP one, the Service
    // targets it. Nothing is written to the read-only root: no HTTPS certificate, no redb file.
    let http = config.listen.http.expect("an HTTP listener");
    assert_eq!(port_named(gw, "http"), http.port());
    assert!(
        http.ip().is_unspecified(),
        "{http} is not reachable by probes"
    );
    assert!(image.expose.contains(&http.port()));
    assert_eq!(
        port_named(gw, "metrics"),
        config.listen.admin.expect("an admin listener").port()
    );
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
    assert_eq!(gw["securityContext"]["readOnlyRootFilesystem"], true);
    assert!(config.listen.https.is_none());
    assert!(matches!(
        config.store,
        gateway::config::StoreSettings::Postgres(_)
    ));

    // Probes: the gateway's own endpoints, on its HTTP port.
    for (probe, path) in [
        ("readinessProbe", &config.health.ready),
        ("livenessProbe", &config.health.live),
        ("startupProbe", &config.health.live),
    ] {
        assert_eq!(gw[probe]["httpGet"]["path"], path.as_str(), "{probe}");
        assert_eq!(gw[probe]["httpGet"]["port"], "http", "{probe}");
    }

    // Shutdown: readiness notices within the delay; the app outlives delay + grace; the pod's
    // grace period covers both with a margin.
    let readiness = &gw["readinessProbe"];
    let failures = u32::try_from(readiness["failureThreshold"].as_u64().unwrap()).unwrap();
    assert!(
        seconds(&readiness["periodSeconds"]) * failures < config.shutdown_delay,
        "readiness cannot notice within shutdown_delay"
    );
    let drain = config.shutdown_delay + config.shutdown_grace;
    let app = container(deployment, "app");
    assert_eq!(
        seconds(&app["lifecycle"]["preStop"]["sleep"]["seconds"]),
        drain
    );
    assert!(seconds(&pod["terminationGracePeriodSeconds"]) > drain);

    // The user: distroless's nonroot (65532), as the Dockerfile picks it and chowns /data to.
    assert!(image.base.starts_with("gcr.io/distroless/") && image.base.ends_with(":nonroot"));
    assert_eq!(image.user, "nonroot");
    assert!(repo_file("Dockerfile").contains("--chown=65532:65532"));
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    for c in pod["containers"].as_array().unwrap() {
        assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
        assert!(c["resources"]["requests"]["memory"].is_string());
        assert!(c["resources"]["limits"]["memory"].is_string());
    }
    assert_eq!(gw["args"], serde_json::json!(["serve"]));
    assert!(image.entrypoint.contains("/usr/local/bin/gateway"));
}

/// The image's config is the demo file with the store in /data and a 5 s shutdown delay.
#[test]
fn the_image_config_gets_a_shutdown_delay() {
    let dockerfile = repo_file("Dockerfile");
    assert!(dockerfile.contains("-e 's#^shutdown_delay: 0s #shutdown_delay: 5s #'"));
    let demo = repo_file("gateway.yaml");
    let imaged: String = demo
        .lines()
        .map(|l| match l.strip_prefix("shutdown_delay: 0s ") {
            Some(rest) => format!("shutdown_delay: 5s {rest}\n"),
            None => format!("{l}\n"),
        })
        .collect();
    assert!(
        imaged.contains("\nshutdown_delay: 5s "),
        "the sed finds no line to change"
    );
    let config = gateway::config::from_str_with_env(&imaged, "gateway.yaml", Path::new("/"), &[])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.shutdown_delay, Duration::from_secs(5));
    let demo = gateway::config::from_str_with_env(&demo, "gateway.yaml", Path::new("/"), &[])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(demo.shutdown_delay, Duration::ZERO);
}
