//! Writing heads: the request and status lines and header lines, appended to a buffer.

use http::uri::Authority;
use http::{Method, Request, StatusCode, header};

/// Appends `name: value` and its CRLF.
pub(crate) fn header_line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends `name: ` and the `items` joined by `, ` (one list header, RFC 9110 section 5.6.1),
/// and its CRLF.
pub(crate) fn list_line<'a>(
    out: &mut Vec<u8>,
    name: &[u8],
    items: impl IntoIterator<Item = &'a [u8]>,
) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(item);
    }
    out.extend_from_slice(b"\r\n");
}

/// Ends a head: the empty line after its last header.
pub(crate) fn end_head(out: &mut Vec<u8>) {
    out.extend_from_slice(b"\r\n");
}

/// Appends an HTTP/1.1 request line with an origin-form `target`.
pub(crate) fn request_line(out: &mut Vec<u8>, method: &Method, target: &[u8]) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1\r\n");
}

/// Appends an HTTP/1.1 status line with the status's canonical reason.
pub(crate) fn status_line(out: &mut Vec<u8>, status: StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The request line and headers of a request without a body as sent upstream: origin-form
/// target, HTTP/1.1, a Host header (from `authority` when the request has none).
pub(crate) fn request_head<B>(req: &Request<B>, authority: &Authority) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    request_line(&mut out, req.method(), target.as_bytes());
    if !req.headers().contains_key(header::HOST) {
        header_line(&mut out, b"host", authority.as_str().as_bytes());
    }
    for (name, value) in req.headers() {
        header_line(&mut out, name.as_str().as_bytes(), value.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads_are_origin_form_with_host() {
        let req = Request::builder()
            .method(Method::GET)
            .uri("http://app.internal:8080/a/b?c=d")
            .header("x-auth-user-id", "u1")
            .body(())
            .unwrap();
        let authority: Authority = "app.internal:8080".parse().unwrap();
        let head = String::from_utf8(request_head(&req, &authority)).unwrap();
        assert_eq!(
            head,
            "GET /a/b?c=d HTTP/1.1\r\nhost: app.internal:8080\r\nx-auth-user-id: u1\r\n\r\n"
        );
    }
}
