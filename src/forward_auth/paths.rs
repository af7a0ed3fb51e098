//! Strict paths: the checks an original URI's path passes before it is matched.
//!
//! gatehouse decides on the path; the backend serves the raw URI the client sent. Any spelling
//! that backends may read differently from gatehouse is refused ([`normalize`] returns
//! [`PathError::Refused`], the endpoint answers 400 and the proxy refuses), never resolved and
//! decided. Where backends disagree, the stricter reading is taken. Refused:
//!
//! - dot segments `.` and `..`, raw or with an encoded dot; any encoded dot (`%2E`) at all
//!   (`.%2e`, `%2E%2E`, `s%2e1`: nobody needs to encode an unreserved character);
//! - `;` anywhere in the path, raw or `%3B` (Tomcat and Spring strip `;params`, and `..;/`
//!   is a dot segment to them);
//! - backslashes, raw or `%5C` (some servers read them as `/`); encoded slashes `%2F`;
//! - `%25` (an encoded `%`: a second decoding by any hop turns `%252e` into a dot), encoded
//!   `?` and `#` (`%3F`, `%23`), and a malformed escape (`%`, `%4`, `%zz`);
//! - empty segments (`//`, anywhere, including a leading `//`): some servers merge them, some
//!   route them as empty values; one trailing slash is allowed and dropped;
//! - a segment ending in a dot or a space (`sessions.`, `s2%20`): Windows servers drop them;
//! - NUL and control characters, raw or encoded (C0, DEL and C1); invalid UTF-8 once decoded;
//! - raw bytes outside RFC 3986 paths (space, `"`, `<`, `>`, `^`, `` ` ``, `{`, `|`, `}`,
//!   `[`, `]`, a raw `#`, raw non-ASCII);
//! - non-ASCII characters that case-map to ASCII (`ſ` upper-cases to `S`, the Kelvin sign
//!   lower-cases to `k`, `ı`, `İ`), and the halfwidth/fullwidth forms (U+FF00-U+FFEF), which
//!   case-insensitive or compatibility-normalising routers match to ASCII.
//!
//! What remains is decoded once (`%73%32` is `s2`) and matched; the query string is ignored.

use percent_encoding::percent_decode_str;

/// Why a path cannot be matched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path is not absolute.
    #[error("the original URI must be an absolute path")]
    NotAbsolute,
    /// The path holds something with no agreed meaning.
    #[error("the original URI contains {0}, which is refused")]
    Refused(&'static str),
}

/// Checks the path of an original URI (its query is ignored) against the strict rules of
/// the [module docs](self) and returns it decoded, without its trailing slash, ready for
/// [`RouteTable::find`]. Refuses, never resolves.
pub fn normalize(uri: &str) -> Result<String, PathError> {
    let path = uri.split('?').next().unwrap_or("");
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    check_raw(path)?;
    let decoded = percent_decode_str(path)
        .decode_utf8()
        .map_err(|_| PathError::Refused("invalid UTF-8"))?;
    for c in decoded.chars() {
        if c.is_control() {
            return Err(PathError::Refused("a control character"));
        }
        if folds_to_ascii(c) {
            return Err(PathError::Refused(
                "a non-ASCII character that routers may read as ASCII",
            ));
        }
    }
    let rest = &decoded[1..];
    if rest.is_empty() {
        return Ok("/".to_owned());
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    for segment in rest.split('/') {
        match segment {
            "" => return Err(PathError::Refused("an empty segment (//)")),
            "." | ".." => return Err(PathError::Refused("a dot segment")),
            // Windows servers drop trailing dots and spaces (`sessions.` is `sessions`).
            s if s.ends_with(['.', ' ']) => {
                return Err(PathError::Refused("a segment ending in a dot or a space"));
            }
            _ => {}
        }
    }
    Ok(format!("/{rest}"))
}

/// The checks on the raw bytes and escapes, before decoding.
fn check_raw(path: &str) -> Result<(), PathError> {
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b';' => return Err(PathError::Refused("`;` (a path parameter)")),
            b'\\' => return Err(PathError::Refused("a backslash")),
            0..=0x1f | 0x7f => return Err(PathError::Refused("a control character")),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or(PathError::Refused("a malformed percent-escape"))?;
                check_escaped(hex)?;
                i += 3;
                continue;
            }
            b if is_path_byte(b) => {}
            _ => {
                return Err(PathError::Refused(
                    "a character that is not allowed in a URI path (RFC 3986)",
                ));
            }
        }
        i += 1;
    }
    Ok(())
}

/// What a percent-escape may not encode.
fn check_escaped(byte: u8) -> Result<(), PathError> {
    Err(PathError::Refused(match byte {
        b'/' => "an encoded slash (%2F)",
        b'\\' => "an encoded backslash (%5C)",
        b'.' => "an encoded dot (%2E)",
        b';' => "an encoded `;` (%3B)",
        b'%' => "an encoded percent sign (%25, double encoding)",
        b'?' | b'#' => "an encoded `?` or `#`",
        0..=0x1f | 0x7f => "an encoded control character",
        _ => return Ok(()),
    }))
}

/// RFC 3986 `pchar` and `/`, as raw bytes (`%` handled by the caller, `;` refused before).
fn is_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@/".contains(&b)
}

/// Whether a case-insensitive or compatibility-normalising router may read `c` as ASCII.
fn folds_to_ascii(c: char) -> bool {
    !c.is_ascii()
        && (c.to_lowercase().any(|l| l.is_ascii())
            || c.to_uppercase().any(|u| u.is_ascii())
            || ('\u{FF00}'..='\u{FFEF}').contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_paths_are_decoded_once() {
        for (raw, expected) in [
            ("/api/chat/sessions/s1", "/api/chat/sessions/s1"),
            ("/api/chat/sessions/s1/", "/api/chat/sessions/s1"),
            ("/api/chat/sessions/%73%31?q=1#f", "/api/chat/sessions/s1"),
            (
                "/api/chat/sessions/s1?a=../..;x%2F",
                "/api/chat/sessions/s1",
            ),
            ("/a/b-c_d~e!$&'()*+,=:@", "/a/b-c_d~e!$&'()*+,=:@"),
            ("/docs/%C3%BCber", "/docs/über"),
            ("/api/chat/sessions/a.b...c", "/api/chat/sessions/a.b...c"),
            ("/docs/my%20file.txt", "/docs/my file.txt"),
            ("/", "/"),
        ] {
            assert_eq!(normalize(raw).as_deref(), Ok(expected), "{raw}");
        }
    }

    #[test]
    fn spellings_backends_read_differently_are_refused() {
        for raw in [
            // dot segments, raw and encoded, and any encoded dot
            "/api/chat/sessions/s2/../s1/messages",
            "/api/./chat/sessions/s1",
            "/api/chat/sessions/s1/..",
            "/api/chat/sessions/s1/.",
            "/api/chat/sessions/%2e%2e/s1",
            "/api/chat/sessions/.%2E/s1",
            "/api/chat/sessions/%2E./s1",
            "/api/chat/sessions/%2e/s1",
            "/api/chat/sessions/s%2e1",
            // ;params, raw and encoded
            "/api/chat/sessions;x/s2/messages",
            "/api/chat/sessions/s2;jsessionid=1/messages",
            "/api/chat/sessions/..;/s2/messages",
            "/api/chat/sessions/s2%3Bx/messages",
            "/api/chat/sessions/s2%3bx/messages",
            // backslashes and encoded slashes
            "/api/chat/sessions/s1\\..\\s2",
            "/a%5cb",
            "/a%5Cb",
            "/a%2Fb",
            "/a%2fb",
            // double encoding, encoded ? and #, malformed escapes
            "/api/chat/sessions/%252e%252e/s1",
            "/a%25",
            "/a%3Fb",
            "/a%23b",
            "/a%",
            "/a%4",
            "/a%zz",
            "/a%+1",
            // trailing dots and spaces (Windows servers drop them)
            "/api/chat/sessions./s2",
            "/api/chat/sessions/s2.",
            "/api/chat/sessions/.../s2",
            "/api/chat/sessions%20/s2",
            // empty segments
            "//api/chat/sessions/s1",
            "/api//chat/sessions/s1",
            "/api/chat/sessions/s1//",
            "//",
            // control characters, raw and encoded; invalid UTF-8
            "/a%00b",
            "/a\0b",
            "/a%0ab",
            "/a%0Db",
            "/a%09b",
            "/a%7Fb",
            "/a%C2%85b",
            "/a%ff",
            "/a%C3",
            // raw characters outside RFC 3986 paths
            "/a b",
            "/a\"b",
            "/a<b>",
            "/a^b",
            "/a`b",
            "/a{b}",
            "/a|b",
            "/a[b]",
            "/a#b",
            "/über",
            // non-ASCII that routers may read as ASCII
            "/api/chat/%C5%BFessions/s2/messages",
            "/api/chat/sessions/s2/messages%E2%84%AA",
            "/api/chat/sess%C4%B1ons/s2",
            "/api/chat/%C4%B0/s2",
            "/api/chat/sessions/%EF%BC%8Fs2",
            // not a path
            "api/x",
            "",
            "*",
        ] {
            assert!(normalize(raw).is_err(), "{raw:?} was accepted");
        }
    }
}
