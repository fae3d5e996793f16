//! Reading one cookie from a `Cookie:` header the way Django's `parse_cookie` does.

/// The value of cookie `name` in a `Cookie:` header, as Django's
/// `django.http.cookie.parse_cookie` would read it: pairs split on `;`, names and values
/// trimmed, a chunk without `=` is a value with an empty name, the last duplicate wins,
/// and a value in double quotes is unquoted (`\"` and `\\` escapes, as `http.cookies`).
///
/// Pure and total: any input gives `Some` or `None`, never a panic.
///
/// ```
/// use estuary_django::cookie_value;
/// let header = "csrftoken=abc; sessionid=k3y; theme=dark";
/// assert_eq!(cookie_value(header, "sessionid").as_deref(), Some("k3y"));
/// assert_eq!(cookie_value(header, "missing"), None);
/// assert_eq!(cookie_value("a=1; a=2", "a").as_deref(), Some("2"));
/// assert_eq!(cookie_value("a=\"x y\"", "a").as_deref(), Some("x y"));
/// ```
pub fn cookie_value(header: &str, name: &str) -> Option<String> {
    let mut found = None;
    for chunk in header.split(';') {
        let (key, value) = match chunk.split_once('=') {
            Some((key, value)) => (key.trim(), value.trim()),
            None => ("", chunk.trim()),
        };
        if key == name && (!key.is_empty() || !value.is_empty()) {
            found = Some(value);
        }
    }
    found.map(unquote)
}

/// Python's `http.cookies._unquote`, for the escapes a session value could carry.
fn unquote(value: &str) -> String {
    let Some(inner) = value.strip_prefix('"').and_then(|rest| rest.strip_suffix('"')) else {
        return value.to_owned();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        // `\ooo` octal escapes and `\x` for any other character.
        let rest = chars.as_str();
        let octal: String = rest.chars().take(3).collect();
        if octal.len() == 3 && octal.chars().all(|d| ('0'..='7').contains(&d)) {
            if let Some(decoded) = u32::from_str_radix(&octal, 8).ok().and_then(char::from_u32) {
                out.push(decoded);
                chars.nth(2);
                continue;
            }
        }
        if let Some(next) = chars.next() {
            out.push(next);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_headers() {
        assert_eq!(cookie_value("", "sessionid"), None);
        assert_eq!(cookie_value(";;;", "sessionid"), None);
        assert_eq!(cookie_value("sessionid", "sessionid"), None);
        assert_eq!(cookie_value(" sessionid = v ", "sessionid").as_deref(), Some("v"));
        assert_eq!(cookie_value("sessionid=", "sessionid").as_deref(), Some(""));
        assert_eq!(cookie_value("sessionid=a=b", "sessionid").as_deref(), Some("a=b"));
        assert_eq!(cookie_value("a=\"\\\"\\101\"", "a").as_deref(), Some("\"A"));
        assert_eq!(cookie_value("a=\"", "a").as_deref(), Some("\""));
        assert_eq!(cookie_value("a=\"\\\"", "a").as_deref(), Some(""));
    }
}
