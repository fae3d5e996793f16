//! What a trusted proxy says about the request besides the client's
//! address (`X-Forwarded-Proto`, `X-Forwarded-Host`), and the prefix the
//! application is mounted under (`root_path`).

use std::str::FromStr;

use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Uri, header};

/// The first item of a comma-separated forwarding header: the value the
/// proxy nearest the client saw.
fn first_item(headers: &HeaderMap, name: &str) -> Option<String> {
    let value = headers.get(name)?.to_str().ok()?;
    let first = value.split(',').next()?.trim();
    (!first.is_empty()).then(|| first.to_owned())
}

/// Applies a trusted proxy's `X-Forwarded-Host` (it becomes the `Host`
/// the allowed-hosts and origin checks read) and reads its
/// `X-Forwarded-Proto`: true when the client's connection to the proxy is
/// encrypted (`https` or `wss`). Call it only for a trusted peer: from any
/// other, both headers are the client's own words.
pub(crate) fn apply_trusted(headers: &mut HeaderMap) -> bool {
    if let Some(host) = first_item(headers, "x-forwarded-host")
        && let Ok(host) = HeaderValue::from_str(&host)
    {
        headers.insert(header::HOST, host);
    }
    first_item(headers, "x-forwarded-proto")
        .is_some_and(|proto| proto.eq_ignore_ascii_case("https") || proto.eq_ignore_ascii_case("wss"))
}

/// A root path as the configuration gives it (`/realtime`, `/realtime/`,
/// `realtime`) in the form it is matched in: a leading `/`, no trailing
/// one; `None` for no prefix (empty or `/`).
///
/// ```
/// use estuary_server::normalize_root_path;
///
/// assert_eq!(normalize_root_path("/realtime/").as_deref(), Some("/realtime"));
/// assert_eq!(normalize_root_path("realtime").as_deref(), Some("/realtime"));
/// assert_eq!(normalize_root_path("/"), None);
/// assert_eq!(normalize_root_path(""), None);
/// ```
pub fn normalize_root_path(root: &str) -> Option<String> {
    let trimmed = root.trim().trim_matches('/');
    (!trimmed.is_empty()).then(|| format!("/{trimmed}"))
}

/// `uri` without the prefix `root` (normalized, see
/// [`normalize_root_path`]) when its path is under it, on a segment
/// boundary (`/realtime/ws/` and `/realtime`, not `/realtimes/`); `None`
/// when it is not (the request then routes as it came: a proxy may have
/// taken the prefix off already).
pub(crate) fn strip_root_path(uri: &Uri, root: &str) -> Option<Uri> {
    let rest = uri.path().strip_prefix(root)?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    let rest = if rest.is_empty() { "/" } else { rest };
    let path_and_query = match uri.query() {
        Some(query) => format!("{rest}?{query}"),
        None => rest.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::from_str(&path_and_query).ok()?);
    Uri::from_parts(parts).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_comes_off_on_a_segment_boundary() {
        let strip = |uri: &str| strip_root_path(&uri.parse().unwrap(), "/rt").map(|u| u.to_string());
        assert_eq!(strip("/rt/ws/chat/x/?a=1").as_deref(), Some("/ws/chat/x/?a=1"));
        assert_eq!(strip("/rt").as_deref(), Some("/"));
        assert_eq!(strip("/rt/").as_deref(), Some("/"));
        assert_eq!(strip("/rts/ws/"), None);
        assert_eq!(strip("/ws/chat/x/"), None);
    }

    #[test]
    fn forwarded_host_and_proto() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8000"));
        headers.insert(
            "x-forwarded-host",
            HeaderValue::from_static("chat.example.com, inner"),
        );
        headers.insert("x-forwarded-proto", HeaderValue::from_static("HTTPS"));
        assert!(apply_trusted(&mut headers));
        assert_eq!(headers[header::HOST], "chat.example.com");

        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8000"));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
        assert!(!apply_trusted(&mut headers));
        assert_eq!(
            headers[header::HOST],
            "127.0.0.1:8000",
            "no X-Forwarded-Host: unchanged"
        );
    }
}
