//! Arbitrary bytes as `gateway.yaml`: loading must return `Ok` or a `ConfigError`, never panic.
//!
//! `${VAR}` references resolve against a fixed fake environment, and relative paths against a
//! directory that does not exist, so nothing on the machine is read or created.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fn env(name: &str) -> Option<String> {
    match name {
        "GATEWAY_JWT_SECRET" => Some("0123456789abcdef0123456789abcdef-fuzz".to_owned()),
        "SHORT" => Some("x".to_owned()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // `jwt_secret_file: /dev/zero` would read forever: an operator's own file, not input the
    // fuzzer should spend its time on.
    if text.contains("/dev/") || text.contains("/proc/") || text.contains("/sys/") {
        return;
    }
    if let Ok(config) = gateway::config::from_str(
        text,
        "fuzz.yaml",
        Path::new("/nonexistent/gateway-fuzz"),
        &env,
    ) {
        // Whatever loads must also build a route table (as `check` and `serve` do).
        let _ = gateway::proxy::route::RouteTable::new(&config.routes);
    }
});
