//! `email`: the SMTP server account e-mails go through, the sender, the base URL of the links
//! they carry, and template overrides (read here, at load time, so a bad file is a config error
//! that names it).
//!
//! `smtp://host:port` is opportunistic: plain, upgraded with STARTTLS when the server offers it.
//! With credentials it requires STARTTLS (unless the host is loopback), so a password never goes
//! out in the clear. `smtps://host:port` is TLS from the start.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use super::{Ctx, secret_bytes};
use crate::config::raw::{RawEmail, Sp};
use crate::config::{
    ConfigError, EMAIL_TEMPLATE_PARTS, EMAIL_TEMPLATES, EmailSettings, SmtpServer, SmtpTls,
};
use crate::secret::Secret;

pub(super) fn validate_email(cx: &Ctx, raw: &RawEmail) -> Result<EmailSettings, ConfigError> {
    let username = match &raw.username {
        Some(u) => {
            let name = cx.secret(u, "email.username")?;
            if name.is_empty() || name.chars().any(char::is_control) {
                return Err(cx.err(
                    u,
                    "email.username",
                    "must not be empty or hold control characters",
                ));
            }
            Some(name)
        }
        None => None,
    };
    let password = match secret_bytes(
        cx,
        (&raw.password, "email.password"),
        (&raw.password_file, "email.password_file"),
    )? {
        Some((at, bytes)) => {
            Some(Secret::new(String::from_utf8(bytes).map_err(|_| {
                cx.err(at, "email.password", "the password is not valid UTF-8")
            })?))
        }
        None => None,
    };
    let credentials = username.is_some() || password.is_some();
    let smtp = smtp_url(cx, &raw.smtp_url, credentials)?;

    let from = lettre::message::Mailbox::from_str(raw.from.value.trim()).map_err(|e| {
        cx.err(
            &raw.from,
            "email.from",
            format!(
                "invalid mailbox {:?} ({e}; write e.g. `Gateway <no-reply@example.com>`)",
                raw.from.value
            ),
        )
    })?;
    let public_url = public_url(cx, &raw.public_url)?;
    let templates = match &raw.templates_dir {
        Some(dir) => templates(cx, dir)?,
        None => BTreeMap::new(),
    };
    let queue_size = cx.number(&raw.queue_size, "email.queue_size", 1000, (1, 1_000_000))?;
    let send_timeout = cx.duration(
        &raw.send_timeout,
        "email.send_timeout",
        Duration::from_secs(10),
        (Duration::from_secs(1), Duration::from_secs(600)),
    )?;
    let max_attempts = cx.number(&raw.max_attempts, "email.max_attempts", 5, (1, 20))?;
    let reset_ttl = cx.duration(
        &raw.reset_ttl,
        "email.reset_ttl",
        Duration::from_secs(30 * 60),
        (Duration::from_secs(60), Duration::from_secs(24 * 3600)),
    )?;
    let verify_ttl = cx.duration(
        &raw.verify_ttl,
        "email.verify_ttl",
        Duration::from_secs(24 * 3600),
        (Duration::from_secs(60), Duration::from_secs(30 * 24 * 3600)),
    )?;
    Ok(EmailSettings {
        smtp,
        username,
        password,
        from,
        public_url,
        templates,
        queue_size,
        send_timeout,
        max_attempts,
        reset_ttl,
        verify_ttl,
    })
}

/// `smtp://host[:port]` (port 25 by default) or `smtps://host[:port]` (465).
fn smtp_url(cx: &Ctx, v: &Sp<String>, credentials: bool) -> Result<SmtpServer, ConfigError> {
    let key = "email.smtp_url";
    let text = v.value.trim();
    let bad = |why: &str| {
        cx.err(
            v,
            key,
            format!("{why} in {text:?} (write smtp://host:port or smtps://host:port)"),
        )
    };
    let uri = http::Uri::from_str(text).map_err(|_| bad("not a URL"))?;
    let (tls, default_port) = match uri.scheme_str() {
        Some("smtp") => (SmtpTls::Opportunistic, 25),
        Some("smtps") => (SmtpTls::Implicit, 465),
        Some(other) => return Err(bad(&format!("unsupported scheme {other:?}"))),
        None => return Err(bad("no scheme")),
    };
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.as_str().contains('@') {
        return Err(cx.err(
            v,
            key,
            "credentials do not belong in the URL: use email.username and email.password",
        ));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() || text.contains('#') {
        return Err(bad("a path, query or fragment"));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port = authority.port_u16().unwrap_or(default_port);
    let tls = if tls == SmtpTls::Opportunistic && credentials && !is_loopback(host) {
        SmtpTls::StartTls
    } else {
        tls
    };
    Ok(SmtpServer {
        host: host.to_owned(),
        port,
        tls,
    })
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The base of every link: `http(s)://authority[/path]`, no query or fragment, no trailing `/`.
fn public_url(cx: &Ctx, v: &Sp<String>) -> Result<String, ConfigError> {
    let key = "email.public_url";
    let text = v.value.trim();
    let bad = |why: &str| {
        cx.err(
            v,
            key,
            format!(
                "{why} in {text:?} (write the external base URL, e.g. https://login.example.com)"
            ),
        )
    };
    let uri = http::Uri::from_str(text).map_err(|_| bad("not a URL"))?;
    match uri.scheme_str() {
        Some("https" | "http") => {}
        _ => return Err(bad("the scheme must be https or http")),
    }
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.host().is_empty() || authority.as_str().contains('@') {
        return Err(bad("no host, or credentials"));
    }
    if uri.query().is_some() || text.contains('#') {
        return Err(bad("a query or fragment"));
    }
    let path = uri.path().trim_end_matches('/');
    if !path.is_empty() && !super::is_clean_path(path) {
        return Err(bad("an unclean path"));
    }
    Ok(format!(
        "{}://{}{path}",
        uri.scheme_str().unwrap_or("https"),
        authority.as_str()
    ))
}

/// Reads the overrides in `email.templates_dir`. A template file that is not there keeps the
/// built-in one; one that cannot be read, a subject of more than one line, or a `.txt`/`.html`
/// file that is no template (a misspelt name) is an error naming the file.
fn templates(cx: &Ctx, dir: &Sp<String>) -> Result<BTreeMap<String, String>, ConfigError> {
    let key = "email.templates_dir";
    let path = cx.path(&dir.value);
    let entries = std::fs::read_dir(&path)
        .map_err(|e| cx.err(dir, key, format!("cannot read {}: {e}", path.display())))?;
    let known: Vec<String> = EMAIL_TEMPLATES
        .iter()
        .flat_map(|t| EMAIL_TEMPLATE_PARTS.iter().map(move |p| format!("{t}.{p}")))
        .collect();
    for entry in entries {
        let entry =
            entry.map_err(|e| cx.err(dir, key, format!("cannot read {}: {e}", path.display())))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let looks_like_template = name.ends_with(".txt") || name.ends_with(".html");
        if looks_like_template && !known.contains(&name) {
            return Err(cx.err(
                dir,
                key,
                format!(
                    "{} is not a template (the names are {})",
                    entry.path().display(),
                    known.join(", ")
                ),
            ));
        }
    }
    let mut out = BTreeMap::new();
    for name in known {
        let file = path.join(&name);
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(cx.err(dir, key, format!("cannot read {}: {e}", file.display())));
            }
        };
        if name.ends_with(".subject.txt") && text.trim().lines().count() != 1 {
            return Err(cx.err(
                dir,
                key,
                format!("{}: a subject is one non-empty line", file.display()),
            ));
        }
        out.insert(name, text);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::config::validate::tests::load;
    use crate::config::{Config, ConfigError, SmtpTls};

    const BASE: &str = "version: 1\nemail:\n  smtp_url: smtps://mail.example.com\n  from: Gateway <no-reply@example.com>\n  public_url: https://login.example.com/\n";

    fn with(extra: &str) -> Result<Config, ConfigError> {
        load(&format!("{BASE}{extra}"))
    }

    #[test]
    fn email_is_off_unless_configured() {
        assert!(load("version: 1\n").unwrap().email.is_none());
        assert!(load("version: 1\nemail:\n").unwrap().email.is_none());
    }

    #[test]
    fn a_good_section_has_defaults() {
        let e = with("").unwrap().email.unwrap();
        assert_eq!(e.smtp.host, "mail.example.com");
        assert_eq!(e.smtp.port, 465);
        assert_eq!(e.smtp.tls, SmtpTls::Implicit);
        assert_eq!(e.from.email.to_string(), "no-reply@example.com");
        assert_eq!(e.from.name.as_deref(), Some("Gateway"));
        assert_eq!(e.public_url, "https://login.example.com");
        assert_eq!(e.queue_size, 1000);
        assert_eq!(e.send_timeout, std::time::Duration::from_secs(10));
        assert_eq!(e.max_attempts, 5);
        assert!(e.templates.is_empty() && e.password.is_none());
        assert_eq!(
            e.describe(),
            "smtps://mail.example.com:465, from Gateway <no-reply@example.com>, links under https://login.example.com"
        );
    }

    #[test]
    fn smtp_is_opportunistic_and_required_with_credentials() {
        let yaml = "version: 1\nemail:\n  smtp_url: smtp://mail.example.com:587\n  from: a@example.com\n  public_url: http://localhost:8080/app/\n";
        let e = load(yaml).unwrap().email.unwrap();
        assert_eq!((e.smtp.port, e.smtp.tls), (587, SmtpTls::Opportunistic));
        assert_eq!(e.public_url, "http://localhost:8080/app");
        let e = load(&format!("{yaml}  username: gw\n  password: ${{JWT}}\n"))
            .unwrap()
            .email
            .unwrap();
        assert_eq!(e.smtp.tls, SmtpTls::StartTls);
        assert_eq!(e.password.as_ref().unwrap().expose().len(), 40);
        assert!(!format!("{e:?}").contains("xxxx"), "the password shows");
        let local = yaml.replace("mail.example.com", "127.0.0.1");
        let e = load(&format!("{local}  username: gw\n"))
            .unwrap()
            .email
            .unwrap();
        assert_eq!((e.smtp.port, e.smtp.tls), (587, SmtpTls::Opportunistic));
    }

    #[test]
    fn bad_values_name_the_key_and_line() {
        for (extra, key, line) in [
            ("  queue_size: 0\n", "email.queue_size", 6),
            ("  send_timeout: 1h\n", "email.send_timeout", 6),
            ("  max_attempts: 0\n", "email.max_attempts", 6),
            ("  password: x\n  password_file: /p\n", "email.password", 6),
            ("  password: ${NOPE}\n", "email.password", 6),
            ("  password_file: /nonexistent\n", "email.password_file", 6),
            ("  templates_dir: /nonexistent\n", "email.templates_dir", 6),
        ] {
            let e = with(extra).expect_err(extra).to_string();
            assert!(
                e.contains(&format!("test.yaml:{line}: {key}: ")),
                "{extra:?} gave {e}"
            );
        }
        for (url, needle) in [
            ("http://mail.example.com", "unsupported scheme"),
            ("mail.example.com:25", "smtp://host:port"),
            ("smtp://user:pw@mail.example.com", "credentials"),
            ("smtp://mail.example.com/x", "path"),
            ("smtp://mail.example.com?tls=none", "query"),
        ] {
            let yaml = BASE.replace("smtps://mail.example.com", url);
            let e = load(&yaml).expect_err(url).to_string();
            assert!(e.contains("test.yaml:3: email.smtp_url: "), "{url}: {e}");
            assert!(e.contains(needle), "{url}: {e}");
            assert!(!e.contains(":pw@"), "the password shows: {e}");
        }
        for from in ["nobody", "<a@b", "Gateway no-reply@example.com>"] {
            let yaml = BASE.replace("Gateway <no-reply@example.com>", from);
            let e = load(&yaml).expect_err(from).to_string();
            assert!(e.contains("test.yaml:4: email.from: "), "{from}: {e}");
        }
        for url in [
            "ftp://x.example",
            "/reset",
            "https://x.example/?a=b",
            "https://x.example/#top",
            "https://u:p@x.example",
        ] {
            let yaml = BASE.replace("https://login.example.com/", url);
            let e = load(&yaml).expect_err(url).to_string();
            assert!(e.contains("test.yaml:5: email.public_url: "), "{url}: {e}");
        }
    }

    #[test]
    fn missing_and_unknown_keys_are_refused() {
        let e =
            load("version: 1\nemail:\n  from: a@example.com\n  public_url: https://x.example\n")
                .unwrap_err()
                .to_string();
        assert!(e.contains("email") && e.contains("smtp_url"), "{e}");
        let e = with("  smtp_host: x\n").unwrap_err().to_string();
        assert!(e.contains("email.smtp_host"), "{e}");
    }

    #[test]
    fn templates_dir_overrides_and_refuses_strangers() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("verify-email.subject.txt"), "Hi {{app}}\n").unwrap();
        std::fs::write(dir.path().join("reset-password.html"), "<p>{{link}}</p>").unwrap();
        std::fs::write(dir.path().join("notes.md"), "not a template").unwrap();
        let yaml = format!("  templates_dir: {}\n", dir.path().display());
        let e = with(&yaml).unwrap().email.unwrap();
        let names: Vec<&str> = e.templates.keys().map(String::as_str).collect();
        assert_eq!(names, ["reset-password.html", "verify-email.subject.txt"]);

        std::fs::write(dir.path().join("verify_email.txt"), "typo").unwrap();
        let e = with(&yaml).unwrap_err().to_string();
        assert!(
            e.contains("test.yaml:6: email.templates_dir: ") && e.contains("verify_email.txt"),
            "{e}"
        );
        std::fs::remove_file(dir.path().join("verify_email.txt")).unwrap();

        std::fs::write(dir.path().join("reset-password.subject.txt"), "a\nb\n").unwrap();
        let e = with(&yaml).unwrap_err().to_string();
        assert!(e.contains("reset-password.subject.txt"), "{e}");
        std::fs::remove_file(dir.path().join("reset-password.subject.txt")).unwrap();

        std::fs::write(dir.path().join("verify-email.txt"), [0xff, 0xfe]).unwrap();
        let e = with(&yaml).unwrap_err().to_string();
        assert!(e.contains("verify-email.txt"), "{e}");
    }
}
