//! Config errors as a user sees them, through the library's loading code.

use std::path::Path;

use gateway::config::{self, ConfigError};

fn load(yaml: &str) -> Result<config::Config, ConfigError> {
    config::from_str(yaml, "gateway.yaml", Path::new("/srv/gw"), &|_| None)
}

#[test]
fn a_misspelt_key_is_named_with_its_path_and_line() {
    let e = load(
        "version: 1\nroutes:\n  - path: /a\n    upstream: builtin:whoami\n    auth: public\n  - path: /b\n    upstrem: http://127.0.0.1:3000\n",
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, ConfigError::Syntax { .. }), "{e:?}");
    assert!(msg.starts_with("gateway.yaml"), "{msg}");
    assert!(msg.contains("routes[1].upstrem"), "{msg}");
    assert!(msg.contains("line 7"), "{msg}");

    let msg = load("version: 1\nlimits:\n  max_body_byte: 1MiB\n")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("limits.max_body_byte"), "{msg}");
    assert!(msg.contains("line 3"), "{msg}");
}

#[test]
fn an_unsupported_upstream_scheme_names_the_route_and_line() {
    let e = load(
        "version: 1\nroutes:\n  - path: /a\n    upstream: builtin:whoami\n  - path: /b\n    upstream: http://127.0.0.1:3000\n  - path: /c\n    upstream: ftp://files.example.com\n",
    )
    .unwrap_err();
    assert!(matches!(e, ConfigError::Invalid { line: 8, .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "gateway.yaml:8: routes[2].upstream: unsupported scheme \"ftp\" (use http or https)"
    );
}

#[test]
fn a_section_with_only_comments_is_accepted() {
    let c = load(
        "version: 1\ntls:\n  # cert: /etc/gateway/cert.pem\n  # key: /etc/gateway/key.pem\nlimits:\n  # max_body_bytes: 1MiB\nroutes:\n  # none yet\n",
    )
    .unwrap();
    assert!(c.tls.self_signed);
    assert_eq!(c.tls.cert, Path::new("/srv/gw/certs/localhost.pem"));
    assert_eq!(c.limits.max_body_bytes, 64 * 1024 * 1024);
    assert!(c.routes.is_empty());
}

#[test]
fn load_reads_a_file_and_resolves_paths_next_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    std::fs::write(
        &path,
        "version: 1\nroutes:\n  - {path: /, upstream: 'builtin:whoami', auth: public}\n",
    )
    .unwrap();
    let c = config::load(&path).unwrap();
    assert_eq!(c.tls.cert, dir.path().join("certs/localhost.pem"));
    assert_eq!(c.routes.len(), 1);

    let e = config::load(&dir.path().join("missing.yaml")).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }), "{e:?}");
    assert!(e.to_string().contains("missing.yaml"), "{e}");
}

#[test]
fn a_value_of_the_wrong_kind_names_the_key_as_written() {
    let msg = load("version: 1\nlimits:\n  max_headers: lots\n")
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with("gateway.yaml: limits.max_headers: "),
        "{msg}"
    );
    assert!(msg.contains("line 3"), "{msg}");
}

#[test]
fn the_shipped_gateway_yaml_is_valid_and_documents_every_section() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway.yaml");
    let config = gateway::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.routes.len(), 3);
    let text = std::fs::read_to_string(&path).unwrap();
    for section in [
        "listen:",
        "tls:",
        "trusted_proxies:",
        "limits:",
        "upstream:",
        "shutdown_grace:",
        "shutdown_delay:",
        "admin:",
        "health:",
        "log:",
        "store:",
        "auth:",
        "rate_limits:",
        "regulation:",
        "cors:",
        "routes:",
    ] {
        assert!(
            text.contains(section),
            "gateway.yaml does not show {section}"
        );
    }
}
