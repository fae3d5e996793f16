//! What an authenticator sees of a WebSocket handshake.

use std::net::SocketAddr;

use http::{HeaderMap, Uri, header};

/// What an [`Authenticator`](super::Authenticator) sees of a WebSocket handshake.
#[derive(Debug, Clone, Copy)]
pub struct Handshake<'a> {
    /// The request's URI (path and query string).
    pub uri: &'a Uri,
    /// The request's headers (`Cookie`, `Authorization`, `Origin`, ...).
    pub headers: &'a HeaderMap,
    /// The client's address, after trusted-proxy resolution.
    pub client: Option<SocketAddr>,
}

impl Handshake<'_> {
    /// The value of the query-string parameter `name`, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let query = self.uri.query()?;
        serde_urlencoded::from_str::<Vec<(String, String)>>(query)
            .ok()?
            .into_iter()
            .find_map(|(k, v)| (k == name).then_some(v))
    }

    /// The value of the cookie `name` (the last one, if sent twice), if it
    /// is UTF-8. Other cookies may hold any bytes (browsers send what
    /// `document.cookie` set): they do not hide this one.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(header::COOKIE)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
            .filter_map(|pair| {
                let at = pair.iter().position(|&b| b == b'=')?;
                Some((&pair[..at], &pair[at + 1..]))
            })
            .filter(|(k, _)| k.trim_ascii() == name.as_bytes())
            .filter_map(|(_, v)| std::str::from_utf8(v.trim_ascii()).ok())
            .map(|v| v.trim_matches('"').to_owned())
            .next_back()
    }

    /// The token of an `Authorization: Bearer <token>` header.
    pub fn bearer_token(&self) -> Option<&str> {
        self.headers
            .get(header::AUTHORIZATION)?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")
            .map(str::trim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn handshake<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> Handshake<'a> {
        Handshake {
            uri,
            headers,
            client: None,
        }
    }

    #[test]
    fn credentials_are_read_from_query_cookie_and_header() {
        let uri: Uri = "/ws/chat/a/?token=a%20b&x=1".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "a=1; sessionid=\"abc\"; sessionid=def".parse().unwrap(),
        );
        headers.insert(header::AUTHORIZATION, "Bearer t0k".parse().unwrap());
        let h = handshake(&uri, &headers);
        assert_eq!(h.query_param("token").as_deref(), Some("a b"));
        assert_eq!(h.query_param("missing"), None);
        assert_eq!(h.cookie("sessionid").as_deref(), Some("def"), "the last one wins");
        assert_eq!(h.bearer_token(), Some("t0k"));
        let mut odd = HeaderMap::new();
        odd.insert(
            header::COOKIE,
            HeaderValue::from_bytes(b"theme=caf\xc3\xa9; sessionid=abc; raw=\xff\xfe").unwrap(),
        );
        let h = handshake(&uri, &odd);
        assert_eq!(
            h.cookie("sessionid").as_deref(),
            Some("abc"),
            "odd bytes elsewhere"
        );
        assert_eq!(h.cookie("theme").as_deref(), Some("café"));
        assert_eq!(h.cookie("raw"), None, "not UTF-8");
        let bare = HeaderMap::new();
        assert_eq!(handshake(&uri, &bare).cookie("sessionid"), None);
        assert_eq!(handshake(&uri, &bare).bearer_token(), None);
    }
}
