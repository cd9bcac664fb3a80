//! The account e-mails' texts: a subject, a plain-text body and an HTML body per [`Template`],
//! built in (`src/mail/templates/`) and overridable file by file through `email.templates_dir`
//! (read by the config checks at load time).
//!
//! Placeholders are `{{link}}`, `{{email}}`, `{{app}}` and `{{expires_in}}`, replaced in one pass
//! (a value that itself holds `{{...}}` is not expanded again). In the HTML body values are
//! HTML-escaped; in the subject and the text body they are not. An unknown `{{name}}` is left as
//! written.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// One kind of account e-mail. To add one: a variant here, its name in
/// [`crate::config::EMAIL_TEMPLATES`], and its three files under `src/mail/templates/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Template {
    /// "Confirm your address": sent after sign-up or an address change.
    VerifyEmail,
    /// "Choose a new password": sent on a password-reset request.
    ResetPassword,
}

impl Template {
    /// Every template.
    pub const ALL: [Template; 2] = [Template::VerifyEmail, Template::ResetPassword];

    /// The file-name stem in `email.templates_dir` (`verify-email`).
    pub fn name(self) -> &'static str {
        match self {
            Template::VerifyEmail => "verify-email",
            Template::ResetPassword => "reset-password",
        }
    }

    /// The built-in subject, text body and HTML body.
    fn builtin(self) -> [&'static str; 3] {
        match self {
            Template::VerifyEmail => [
                include_str!("templates/verify-email.subject.txt"),
                include_str!("templates/verify-email.txt"),
                include_str!("templates/verify-email.html"),
            ],
            Template::ResetPassword => [
                include_str!("templates/reset-password.subject.txt"),
                include_str!("templates/reset-password.txt"),
                include_str!("templates/reset-password.html"),
            ],
        }
    }
}

/// The values of one message's placeholders (`{{app}}` comes from the [`Templates`]).
#[derive(Clone, Copy)]
pub struct Vars<'a> {
    /// The link the message is about (build it with [`crate::mail::Mailer::link`]).
    pub link: &'a str,
    /// The recipient's address.
    pub email: &'a str,
    /// How long the link stays valid, in words ([`expires_in_words`]).
    pub expires_in: &'a str,
}

impl fmt::Debug for Vars<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The link carries a token.
        f.debug_struct("Vars")
            .field("link", &"***")
            .field("email", &self.email)
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// A rendered message: subject line, plain-text body, HTML body.
#[derive(Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl fmt::Debug for Rendered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The bodies carry the link and its token.
        f.debug_struct("Rendered")
            .field("subject", &self.subject)
            .field("text", &"***")
            .field("html", &"***")
            .finish()
    }
}

/// The templates in force: the built-in ones with the overrides of `email.templates_dir`.
#[derive(Debug, Clone)]
pub struct Templates {
    app: String,
    overrides: BTreeMap<String, String>,
}

impl Templates {
    /// `app` fills `{{app}}`; `overrides` maps file names (`verify-email.html`) to their text,
    /// as [`crate::config::EmailSettings::templates`] holds them.
    pub fn new(app: &str, overrides: &BTreeMap<String, String>) -> Templates {
        Templates {
            app: app.to_owned(),
            overrides: overrides.clone(),
        }
    }

    /// The built-in templates with `{{app}}` = `Gateway`.
    pub fn builtin() -> Templates {
        Templates::new("Gateway", &BTreeMap::new())
    }

    /// Fills in `template`.
    pub fn render(&self, template: Template, vars: &Vars<'_>) -> Rendered {
        let [subject, text, html] = template.builtin();
        let part = |suffix: &str, builtin: &'static str| -> &str {
            self.overrides
                .get(&format!("{}.{suffix}", template.name()))
                .map_or(builtin, String::as_str)
        };
        let values = [
            ("link", vars.link),
            ("email", vars.email),
            ("app", self.app.as_str()),
            ("expires_in", vars.expires_in),
        ];
        // One line, so no value can add a header.
        let subject = fill(part("subject.txt", subject), &values, false);
        let subject = subject
            .trim()
            .replace(|c: char| c.is_control(), " ")
            .to_string();
        Rendered {
            subject,
            text: fill(part("txt", text), &values, false),
            html: fill(part("html", html), &values, true),
        }
    }
}

/// Replaces every `{{name}}` with its value in one pass.
fn fill(template: &str, values: &[(&str, &str)], html: bool) -> String {
    let mut out = String::with_capacity(template.len() + 128);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let name = after[..end].trim();
        match values.iter().find(|(n, _)| *n == name) {
            Some((_, value)) if html => escape_html(value, &mut out),
            Some((_, value)) => out.push_str(value),
            None => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

fn escape_html(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// A validity period in words for `{{expires_in}}`: `24 hours`, `3 days`, `30 minutes`, `1 hour`.
pub fn expires_in_words(d: Duration) -> String {
    let secs = d.as_secs();
    let (n, unit) = if secs >= 3 * 86_400 && secs.is_multiple_of(86_400) {
        (secs / 86_400, "day")
    } else if secs >= 3_600 && secs.is_multiple_of(3_600) {
        (secs / 3_600, "hour")
    } else if secs >= 60 {
        (secs.div_ceil(60), "minute")
    } else {
        (secs, "second")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars<'static> {
        Vars {
            link: "https://x.example/verify?token=a%2Bb&x=<1>",
            email: "ann+tag@example.com",
            expires_in: "24 hours",
        }
    }

    #[test]
    fn every_template_has_a_config_name() {
        let names: Vec<&str> = Template::ALL.iter().map(|t| t.name()).collect();
        assert_eq!(names, crate::config::EMAIL_TEMPLATES);
    }

    #[test]
    fn builtins_fill_every_placeholder_and_escape_html_only() {
        for t in Template::ALL {
            let r = Templates::builtin().render(t, &vars());
            assert!(r.subject.contains("Gateway") && !r.subject.contains('\n'));
            assert!(r.text.contains(vars().link), "{t:?}");
            assert!(r.text.contains("ann+tag@example.com") && r.text.contains("24 hours"));
            assert!(
                r.html
                    .contains("https://x.example/verify?token=a%2Bb&amp;x=&lt;1&gt;"),
                "{t:?}"
            );
            for part in [&r.subject, &r.text, &r.html] {
                assert!(!part.contains("{{"), "{t:?}: {part}");
            }
        }
    }

    #[test]
    fn overrides_replace_one_file_and_values_are_not_expanded_twice() {
        let mut o = BTreeMap::new();
        o.insert(
            "reset-password.subject.txt".to_owned(),
            "{{app}} reset for {{email}} {{unknown}}\n".to_owned(),
        );
        let t = Templates::new("Acme", &o);
        let v = Vars {
            email: "{{link}}\r\nBcc: x@y",
            ..vars()
        };
        let r = t.render(Template::ResetPassword, &v);
        assert_eq!(r.subject, "Acme reset for {{link}}  Bcc: x@y {{unknown}}");
        assert!(r.text.contains("Acme"), "the built-in text is kept");
        assert!(!format!("{r:?}").contains("token"));
        assert_eq!(fill("a {{link", &[("link", "x")], false), "a {{link");
    }

    #[test]
    fn durations_in_words() {
        for (secs, words) in [
            (86_400, "24 hours"),
            (3_600, "1 hour"),
            (3 * 86_400, "3 days"),
            (1_800, "30 minutes"),
            (90, "2 minutes"),
            (1, "1 second"),
        ] {
            assert_eq!(expires_in_words(Duration::from_secs(secs)), words);
        }
    }
}
