//! `builtin:whoami`: a demo upstream that answers with exactly what it received.
//!
//! It is handed the request after the gateway rewrote it for the upstream (identity headers,
//! `X-Forwarded-*`, hop-by-hop removal), so a newcomer sees precisely what their app would get.
//! Browsers get a readable page, everything else JSON.

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt;

use crate::body::{self, Body};
use crate::error::{escape_html, html_headers, json_response};

/// Answers like an echo server. The request body is read (and counted) but not kept.
pub async fn respond(req: Request<Body>, html: bool) -> Response<Body> {
    let (parts, mut body) = req.into_parts();
    let mut body_bytes: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(data) = f.data_ref() {
                    body_bytes += data.len() as u64;
                }
            }
            Err(_) => break,
        }
    }
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let path = parts.uri.path();
    let query = parts.uri.query().unwrap_or("");

    if html {
        let mut rows = String::new();
        for (k, v) in &headers {
            let class = if k.starts_with(super::headers::IDENTITY_PREFIX) {
                " class=\"id\""
            } else {
                ""
            };
            rows.push_str(&format!(
                "<tr{class}><th scope=\"row\">{}</th><td>{}</td></tr>",
                escape_html(k),
                escape_html(v)
            ));
        }
        let page = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>whoami</title>\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}}\
             table{{border-collapse:collapse;width:100%}}th,td{{text-align:left;padding:.3rem .6rem;border-bottom:1px solid #ddd;font-family:ui-monospace,monospace;font-size:.9rem;word-break:break-all}}\
             tr.id{{background:#eef7ee}}code{{background:#f3f3f3;padding:.1rem .3rem}}</style></head><body>\
             <h1>whoami</h1><p>This is the built-in demo upstream. It shows exactly what an app behind the gateway receives.\
             Rows in green are identity headers set by the gateway.</p>\
             <p><code>{method} {path}{q}{query}</code> ({body_bytes} body bytes)</p>\
             <table><tbody>{rows}</tbody></table></body></html>",
            method = escape_html(parts.method.as_str()),
            path = escape_html(path),
            q = if query.is_empty() { "" } else { "?" },
            query = escape_html(query),
        );
        let mut resp = Response::new(body::full(Bytes::from(page)));
        html_headers(resp.headers_mut());
        return resp;
    }

    let value = serde_json::json!({
        "method": parts.method.as_str(),
        "path": path,
        "query": query,
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_bytes": body_bytes,
    });
    let mut resp = json_response(StatusCode::OK, &value);
    resp.headers_mut()
        .insert(header::SERVER, HeaderValue::from_static("gateway-whoami"));
    resp
}
