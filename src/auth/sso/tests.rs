//! The provider rules ([`super::admit`], [`super::apply_roles`]) and reading claims.

use super::*;

fn provider() -> SsoProvider {
    SsoProvider {
        id: "corp".into(),
        display_name: "Corp".into(),
        issuer: "https://idp.example.com".into(),
        client_id: "gw".into(),
        client_secret: crate::secret::Secret::new("s".into()),
        scopes: vec!["openid".into()],
        email_claim: "email".into(),
        name_claim: "name".into(),
        groups_claim: Some("groups".into()),
        create_users: false,
        allowed_email_domains: vec![],
        allowed_groups: vec![],
        role_mappings: vec![
            ("admins".into(), vec!["admin".into()]),
            ("eng".into(), vec!["dev".into(), "user".into()]),
        ],
        recheck_interval: Duration::from_secs(60),
        logout_at_provider: false,
        timeout: Duration::from_secs(1),
        auth_params: vec![],
        id_token_algorithms: vec!["RS256".into()],
    }
}

fn who(email: &str, verified: bool, groups: &[&str]) -> ProviderIdentity {
    ProviderIdentity {
        provider: "corp".into(),
        subject: "s1".into(),
        email: Some(email.into()),
        email_verified: verified,
        name: None,
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        amr: vec![],
        refresh_token: Some(SecretString::new("rt-secret".into())),
    }
}

#[test]
fn domains_need_a_verified_address_at_one_of_them() {
    let mut p = provider();
    p.allowed_email_domains = vec!["example.com".into()];
    assert!(admit(&p, &who("a@example.com", true, &[])).is_ok());
    assert!(admit(&p, &who("a@EXAMPLE.com", true, &[])).is_ok());
    assert_eq!(
        admit(&p, &who("a@example.com", false, &[])),
        Err(Refused::Domain)
    );
    assert_eq!(
        admit(&p, &who("a@example.com.evil", true, &[])),
        Err(Refused::Domain)
    );
    assert_eq!(
        admit(&p, &who("a@sub.example.com", true, &[])),
        Err(Refused::Domain)
    );
    let mut none = who("x", true, &[]);
    none.email = None;
    assert_eq!(admit(&p, &none), Err(Refused::NoEmail));
}

#[test]
fn groups_gate_and_map_roles() {
    let mut p = provider();
    p.allowed_groups = vec!["eng".into()];
    assert_eq!(
        admit(&p, &who("a@x.io", false, &["sales"])),
        Err(Refused::Group)
    );
    assert_eq!(admit(&p, &who("a@x.io", false, &[])), Err(Refused::Group));
    let mapped = admit(&p, &who("a@x.io", false, &["eng", "admins"])).expect("admitted");
    assert_eq!(mapped, ["admin", "dev", "user"]);
}

#[test]
fn managed_roles_follow_the_provider_and_others_stay() {
    let p = provider();
    let current = vec!["user".to_owned(), "admin".to_owned(), "billing".to_owned()];
    // Out of `admins`, still in `eng`: admin goes, dev comes, billing (not managed) stays.
    assert_eq!(
        apply_roles(&p, &current, &["dev", "user"]),
        ["user", "billing", "dev"]
    );
    assert_eq!(apply_roles(&p, &current, &[]), ["billing"]);
}

#[test]
fn debug_hides_the_refresh_token() {
    let text = format!("{:?}", who("a@x.io", true, &[]));
    assert!(!text.contains("rt-secret"), "{text}");
}
