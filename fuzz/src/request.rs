//! A lenient reader of HTTP/1.1 request heads, so that the `credentials` and `handshake`
//! inputs (and their seeds) are readable text that libFuzzer mutates well.
//!
//! Every byte string is a valid input: the first line is `METHOD TARGET [VERSION]`, each
//! following line up to an empty one is `Name: value` (one space after the colon is dropped,
//! any other whitespace is kept, so the core's own trimming is exercised), `\r\n` or `\n` end
//! lines. Pieces `http` refuses are replaced (method → `GET`, target → `/`) or skipped
//! (headers), so the head still reaches the core; the raw target is kept for routing.

use http::header::{HeaderName, HeaderValue};
use http::{Method, Uri, Version};

/// A request head read from fuzz input.
#[derive(Debug)]
pub struct Head {
    /// What the core sees.
    pub parts: http::request::Parts,
    /// The request target as written (lossy UTF-8), even when it is not a valid URI.
    pub raw_target: String,
    /// Whether the target parsed as a URI (otherwise `parts.uri` is `/`).
    pub target_parsed: bool,
}

/// Reads a request head from `data`.
pub fn parse(data: &[u8]) -> Head {
    let mut lines = data
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line));
    let request_line = lines.next().unwrap_or_default();
    let mut words = request_line.split(|&b| b == b' ');
    let method = words.next().unwrap_or_default();
    let target = words.next().unwrap_or_default();
    let version = words.next().unwrap_or_default();

    let mut builder = http::Request::builder()
        .method(Method::from_bytes(method).unwrap_or(Method::GET))
        .version(match version {
            b"HTTP/2" | b"HTTP/2.0" => Version::HTTP_2,
            b"HTTP/1.0" => Version::HTTP_10,
            _ => Version::HTTP_11,
        });
    let uri = Uri::try_from(target).ok();
    let target_parsed = uri.is_some();
    builder = builder.uri(uri.unwrap_or_else(|| Uri::from_static("/")));

    for line in lines {
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let value = value.strip_prefix(b" ").unwrap_or(value);
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            builder = builder.header(name, value);
        }
    }
    let parts = match builder.body(()) {
        Ok(request) => request.into_parts().0,
        // Every piece was validated above; keep going with an empty head if `http` disagrees.
        Err(_) => http::Request::new(()).into_parts().0,
    };
    Head {
        parts,
        raw_target: String::from_utf8_lossy(target).into_owned(),
        target_parsed,
    }
}
