//! JSON errors for requests the router never sees.
//!
//! hyper answers a request it cannot parse by itself, before any service
//! runs: 400 for a malformed request line, method, URI, version or header,
//! 414 for a URI over 65,534 bytes, 431 for a request head over its read
//! buffer (~408 KiB) or with more than 100 headers. Those answers are a bare
//! status line with `content-length: 0` and no way to give them a body
//! (hyper has no hook for it), so no layer or fallback can reach them.
//!
//! [`JsonErrorsListener`] wraps the listener's connections in
//! [`JsonErrorsIo`], which recognizes exactly that automatic answer on its
//! way out — one write holding a whole response head with status 400, 414
//! or 431, `content-length: 0`, no `Content-Type` and nothing after it —
//! and writes in its place the same status with the API's error body
//! (`{"error", "code", "details"}`, codes `bad_request`, `uri_too_long`,
//! `headers_too_large`) and `connection: close` (hyper closes the connection
//! after it). Every answer of the router has a JSON body, so none matches.
//!
//! What stays without a body: a connection that opens with the HTTP/2
//! preface (hyper closes it without an answer: the server speaks HTTP/1.1
//! only), and a client that stops sending mid-head (nothing is answered).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::http::StatusCode;
use axum::serve::Listener;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::error::ApiError;

/// hyper's longest request target (`MAX_URI_LEN`).
const MAX_URI_BYTES: usize = 65_534;
/// hyper's default read buffer for a request head (`DEFAULT_MAX_BUFFER_SIZE`).
const MAX_HEAD_BYTES: usize = 8192 + 4096 * 100;
/// hyper's default number of headers (`DEFAULT_MAX_HEADERS`).
const MAX_HEADERS: usize = 100;

/// A [`Listener`] whose connections answer hyper's own parse errors in the
/// API's JSON error shape. Serve with it in place of the bare listener:
///
/// ```no_run
/// # async fn run(state: aiopslab_http::server::ApiState) -> std::io::Result<()> {
/// use aiopslab_http::server::{router, JsonErrorsListener};
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
/// axum::serve(JsonErrorsListener::new(listener), router(state)).await
/// # }
/// ```
#[derive(Debug)]
pub struct JsonErrorsListener<L> {
    inner: L,
}

impl<L> JsonErrorsListener<L> {
    /// Wraps `inner`.
    pub fn new(inner: L) -> Self {
        Self { inner }
    }
}

impl<L: Listener> Listener for JsonErrorsListener<L> {
    type Io = JsonErrorsIo<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = self.inner.accept().await;
        (JsonErrorsIo::new(io), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection that rewrites hyper's automatic parse-error answers (see
/// the [module documentation](self)); everything else passes unchanged.
#[derive(Debug)]
pub struct JsonErrorsIo<IO> {
    inner: IO,
    /// A rewritten answer still being written, and how much of it is out.
    pending: Vec<u8>,
    written: usize,
}

impl<IO> JsonErrorsIo<IO> {
    /// Wraps a connection.
    pub fn new(inner: IO) -> Self {
        Self {
            inner,
            pending: Vec::new(),
            written: 0,
        }
    }
}

impl<IO: AsyncWrite + Unpin> JsonErrorsIo<IO> {
    /// Writes out the rest of a rewritten answer.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    /// Takes `buf` as written, sending `replacement` in its place.
    fn replace(&mut self, cx: &mut Context<'_>, buf_len: usize, replacement: Vec<u8>) -> Poll<io::Result<usize>> {
        self.pending = replacement;
        self.written = 0;
        // What is not out yet goes with the next write, flush or shutdown.
        if let Poll::Ready(Err(error)) = self.poll_drain(cx) {
            return Poll::Ready(Err(error));
        }
        Poll::Ready(Ok(buf_len))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for JsonErrorsIo<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for JsonErrorsIo<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        ready!(self.poll_drain(cx))?;
        if let Some(replacement) = rewrite(buf) {
            return self.replace(cx, buf.len(), replacement);
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_drain(cx))?;
        let mut filled = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (filled.next(), filled.next()) {
            if let Some(replacement) = rewrite(only) {
                return self.replace(cx, only.len(), replacement);
            }
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The JSON answer in place of `buf`, when `buf` is hyper's automatic
/// answer to a request it could not parse.
fn rewrite(buf: &[u8]) -> Option<Vec<u8>> {
    // One whole head and nothing after it.
    let head = buf.strip_suffix(b"\r\n\r\n")?;
    if head.len() > 1024 || head.windows(4).any(|w| w == b"\r\n\r\n") {
        return None;
    }
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let (version, rest) = status_line.split_once(' ')?;
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return None;
    }
    let status = StatusCode::from_bytes(rest.get(..3)?.as_bytes()).ok()?;
    let mut empty = false;
    let mut date = None;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" if value.trim() == "0" => empty = true,
            "content-length" | "content-type" | "transfer-encoding" => return None,
            "date" => date = Some(value.trim()),
            _ => {}
        }
    }
    if !empty {
        return None;
    }
    let error = match status {
        StatusCode::BAD_REQUEST => ApiError::new(
            status,
            "bad_request",
            "the request is not valid HTTP/1.1: its request line, method, URI, version or a header could not be parsed",
            json!({}),
        ),
        StatusCode::URI_TOO_LONG => ApiError::new(
            status,
            "uri_too_long",
            format!("the request URI is longer than {MAX_URI_BYTES} bytes"),
            json!({ "field": "uri", "limit_bytes": MAX_URI_BYTES }),
        ),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => ApiError::new(
            status,
            "headers_too_large",
            format!(
                "the request head is too large: the request line and headers must fit in {MAX_HEAD_BYTES} bytes, \
                 with at most {MAX_HEADERS} headers"
            ),
            json!({ "field": "headers", "limit_bytes": MAX_HEAD_BYTES, "max_headers": MAX_HEADERS }),
        ),
        _ => return None,
    };
    let body = serde_json::to_vec(&error.body).ok()?;
    let mut out = format!(
        "{version} {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or_default(),
        body.len()
    );
    if let Some(date) = date {
        out.push_str("date: ");
        out.push_str(date);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(&body);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_bare_parse_error_answers_are_rewritten() {
        let bare = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Thu, 01 Jan 2026 00:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(rewrite(bare).unwrap()).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{head}"
        );
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())), "{head}");
        assert!(head.contains("date: Thu, 01 Jan 2026 00:00:00 GMT"), "{head}");
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["code"], "headers_too_large");

        for status in ["400 Bad Request", "414 URI Too Long"] {
            let bare = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
            assert!(rewrite(bare.as_bytes()).is_some(), "{status}");
        }
        for other in [
            // Another status, a body, a content type, a head with a body after it, not a head.
            &b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nHTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\n\r\n",
            b"{\"error\": \"x\"}\r\n\r\n",
            b"event: log\r\ndata: HTTP/1.1 400\r\n\r\n",
        ] {
            assert!(rewrite(other).is_none(), "{}", String::from_utf8_lossy(other));
        }
    }
}
