//! The proxy half: routing, forwarding, header rewriting, errors, upgrades, TLS.

use crate::util::*;

fn routes(upstream: &str) -> String {
    format!(
        "routes:\n  - {{path: /public, upstream: '{upstream}', auth: public}}\n  - {{path: /who, upstream: 'builtin:whoami', auth: public}}\n  - {{path: /, upstream: '{upstream}', auth: required}}\n"
    )
}

#[tokio::test]
async fn public_route_is_forwarded_with_query() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&routes(&up.url())).await;
    let r = get(&gw.url("/public/a/b?x=1&y=%20")).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last().uri, "/public/a/b?x=1&y=%20");
}
